//! Deciding, apart from doing: the inputs and the discovered units become a
//! [`Plan`] — plain data that `mode: plan` prints and unit tests compare.

use crate::inputs::{Inputs, Mode, StrategyKind, TargetKind};
use crate::strategy::{self, Phase};

/// What one deploy will do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub app: String,
    pub environment: String,
    pub target: TargetKind,
    pub strategy: StrategyKind,
    pub mode: Mode,
    /// Image per service, `None` while a rollback has not looked it up.
    pub image: Option<String>,
    pub units: Vec<String>,
    pub services: Vec<ServicePlan>,
    pub phases: Vec<Phase>,
    /// Where secrets come from (paths and names, never values).
    pub secret_sources: Vec<String>,
    /// `target: kubernetes`: the cluster rolls the pods itself, so the
    /// steps are the action's calls, not the hosts' phases.
    pub cluster_steps: Vec<String>,
    /// What the cluster's dry run says would change, one line per
    /// Deployment (filled in by `mode: plan` after contacting it).
    pub cluster_changes: Vec<String>,
    /// The analysis sources and when they are read, if any.
    pub analysis: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ServicePlan {
    pub name: String,
    pub image: String,
    pub containers: (String, String),
    pub ports: Option<(u16, u16)>,
    pub container_port: u16,
    pub health: Option<String>,
    pub upstream_file: Option<String>,
    /// Its own front door (`front-door` in a services file), as messages
    /// name it; `None`: the `proxy-url` input's.
    pub front_door: Option<String>,
}

/// Builds the plan for these units (host names, or the cluster).
pub fn build(inputs: &Inputs, units: &[String]) -> Plan {
    if inputs.target == TargetKind::Kubernetes {
        return cluster_plan(inputs, units);
    }
    let services = inputs
        .services
        .iter()
        .map(|s| ServicePlan {
            name: if s.name.is_empty() { inputs.app.clone() } else { s.name.clone() },
            image: if s.image.full() == crate::inputs::ROLLBACK_PENDING {
                "(the last good image)".into()
            } else {
                s.image.full()
            },
            containers: (s.container_name(&inputs.app, "blue"), s.container_name(&inputs.app, "green")),
            ports: s.behind_proxy.then_some((s.blue_port, s.green_port)),
            container_port: s.container_port,
            health: s.health_path.clone(),
            upstream_file: s.behind_proxy.then(|| s.upstream_file.clone()),
            front_door: (s.behind_proxy && s.front_door != Default::default())
                .then(|| s.front_door.describe(&inputs.ssh.proxy_url)),
        })
        .collect();
    let mut secret_sources: Vec<String> =
        inputs.ssm.paths.iter().map(|p| format!("ssm path {p} (recursive)")).collect();
    secret_sources
        .extend(inputs.ssm.parameters.iter().map(|(env, name)| format!("ssm parameter {name} as {env}")));
    Plan {
        services,
        phases: strategy::phases(
            inputs.strategy,
            &inputs.rollout,
            units.len(),
            inputs.migrate_command.is_some(),
        ),
        secret_sources,
        ..common(inputs, units)
    }
}

/// What every target's plan says: app, place, strategy, mode, image, units.
fn common(inputs: &Inputs, units: &[String]) -> Plan {
    Plan {
        app: inputs.app.clone(),
        environment: inputs.environment.clone(),
        target: inputs.target,
        strategy: inputs.strategy,
        mode: inputs.mode,
        image: inputs.image.as_ref().map(|i| i.full()),
        units: units.to_vec(),
        services: Vec::new(),
        phases: Vec::new(),
        secret_sources: Vec::new(),
        cluster_steps: Vec::new(),
        cluster_changes: Vec::new(),
        analysis: inputs.analysis.as_ref().map(analysis),
    }
}

/// `CloudWatch alarms 'a' (eu-west-1); query 'x' on http://p:9090/ (max 0.1); ...`.
fn analysis(spec: &crate::inputs::AnalysisSpec) -> String {
    use crate::analysis::prometheus::{shown, threshold};
    let mut sources = Vec::new();
    if !spec.alarms.is_empty() {
        let names: Vec<String> = spec.alarms.iter().map(|n| format!("'{n}'")).collect();
        sources.push(format!(
            "CloudWatch alarms {} ({})",
            names.join(", "),
            spec.region.as_deref().unwrap_or("no region")
        ));
    }
    if let Some(q) = &spec.query {
        sources.push(format!("query '{}' on {} ({})", shown(&q.query), q.url, threshold(q.min, q.max)));
    }
    format!(
        "{}; read before the deploy, then every {}s in each observe window",
        sources.join("; "),
        spec.interval.as_secs()
    )
}

fn cluster_plan(inputs: &Inputs, units: &[String]) -> Plan {
    let cluster_steps = match inputs.mode {
        Mode::Rollback => vec![
            "kubectl rollout undo of each (the previous revision's template; a paused Deployment is refused)"
                .into(),
            "watch each rollout to kubectl rollout status's verdict".into(),
        ],
        _ => vec![
            "read each Deployment (missing, paused or without the container: stop, nothing changed)".into(),
            "set the container's image by server-side apply (field manager deploy-action)".into(),
            "watch each rollout to kubectl rollout status's verdict; fail early on stuck new pods".into(),
            "on any failure or cancellation: kubectl rollout undo of every Deployment this run changed"
                .into(),
        ],
    };
    let base = common(inputs, units);
    Plan {
        image: match inputs.mode {
            Mode::Rollback => Some("(each Deployment's previous revision)".into()),
            _ => base.image.clone(),
        },
        cluster_steps,
        ..base
    }
}

/// The plan as lines a person reads in the log.
pub fn render(plan: &Plan) -> Vec<String> {
    let mut out = vec![
        format!(
            "app {} → environment {} (target {}, strategy {})",
            plan.app,
            plan.environment,
            plan.target.as_str(),
            plan.strategy.as_str()
        ),
        format!("image: {}", plan.image.as_deref().unwrap_or("(the last successful deployment's image)")),
        format!("{} unit(s): {}", plan.units.len(), plan.units.join(", ")),
    ];
    for s in &plan.services {
        let mut line = format!("service {}: {} as {} / {}", s.name, s.image, s.containers.0, s.containers.1);
        match s.ports {
            Some((b, g)) => line.push_str(&format!(
                ", container port {} on host ports {b} (blue) / {g} (green)",
                s.container_port
            )),
            None => line.push_str(" (worker: not behind the proxy)"),
        }
        if let Some(h) = &s.health {
            line.push_str(&format!(", health {h}"));
        }
        if let Some(u) = &s.upstream_file {
            line.push_str(&format!(", nginx upstream {u}"));
        }
        if let Some(d) = &s.front_door {
            line.push_str(&format!(", checked through {d}"));
        }
        out.push(line);
    }
    if plan.secret_sources.is_empty() {
        out.push("secrets: none".into());
    } else {
        out.push(format!("secrets: {}", plan.secret_sources.join("; ")));
    }
    if let Some(a) = &plan.analysis {
        out.push(format!("analysis: {a}"));
    }
    if !plan.cluster_changes.is_empty() {
        out.push("changes (server-side dry run):".into());
        out.extend(plan.cluster_changes.iter().map(|l| format!("  {l}")));
    }
    out.push("steps:".into());
    if !plan.cluster_steps.is_empty() {
        for (n, s) in plan.cluster_steps.iter().enumerate() {
            out.push(format!("  {}. {s}", n + 1));
        }
        return out;
    }
    let mut n = 1;
    for phase in &plan.phases {
        let units: Vec<&str> =
            phase.scope.indices(plan.units.len()).iter().map(|i| plan.units[*i].as_str()).collect();
        for step in &phase.steps {
            out.push(format!("  {n}. {step} on {}", units.join(", ")));
            n += 1;
        }
    }
    out.push("  on any failure before retire: every unit goes back to the previous version".into());
    out
}
