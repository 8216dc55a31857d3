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
    let cluster_steps = inputs
        .kubernetes
        .as_ref()
        .map(|k| crate::targets::kubernetes::steps::plan(inputs, k))
        .unwrap_or_default();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::{Env, load};

    /// The plan's step lines for this target and strategy.
    fn steps(target: &str, strategy: &str, extra: &[(&str, &str)]) -> Vec<String> {
        let mut env: Vec<(String, String)> = [
            ("INPUT_TARGET", target),
            ("INPUT_STRATEGY", strategy),
            ("INPUT_MODE", "plan"),
            ("INPUT_ENVIRONMENT", "production"),
            ("INPUT_IMAGE", "ghcr.io/acme/shop:2"),
            ("INPUT_GITHUB-DEPLOYMENTS", "false"),
            ("INPUT_AWS-REGION", "eu-west-1"),
            ("GITHUB_REPOSITORY", "acme/shop"),
            ("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let per_target: &[(&str, &str)] = match target {
            "hosts" => &[("INPUT_HOSTS", "web-1, web-2, web-3"), ("INPUT_MAX-PARALLEL", "2")],
            "ec2" => &[("INPUT_EC2-FILTERS", "Role=web"), ("INPUT_MAX-PARALLEL", "2")],
            _ => &[("INPUT_DEPLOYMENTS", "web"), ("INPUT_NAMESPACE", "shop")],
        };
        // Where the strategy uses them (a rolling cluster has neither, a
        // cluster's canary no observe window: they would be refused).
        let timing: &[(&str, &str)] = match (target, strategy) {
            ("kubernetes", "rolling") => &[],
            ("kubernetes", "canary") => &[("INPUT_DRAIN-TIME", "7s")],
            _ => &[("INPUT_OBSERVE-WINDOW", "45s"), ("INPUT_DRAIN-TIME", "7s")],
        };
        for (k, v) in per_target.iter().chain(timing).chain(extra) {
            env.retain(|(key, _)| key != k);
            env.push((k.to_string(), v.to_string()));
        }
        let inputs = load(&Env::from_pairs(env)).unwrap_or_else(|p| panic!("{target} {strategy}: {p:?}"));
        let units: Vec<String> = match target {
            "kubernetes" => vec!["shop".into()],
            _ => vec!["web-1".into(), "web-2".into(), "web-3".into()],
        };
        let lines = render(&build(&inputs, &units));
        let at = lines.iter().position(|l| l == "steps:").expect("a steps section");
        lines[at + 1..].to_vec()
    }

    fn has(lines: &[String], text: &str) -> bool {
        lines.iter().any(|l| l.contains(text))
    }

    /// A cluster's blue-green plan is the strategy's own list, in the order
    /// the run takes it (Prepare, Migrate, Launch, Verify, Shift, Observe,
    /// Retire), each step as the cluster does it.
    #[test]
    fn a_cluster_blue_green_plans_the_strategy_s_steps_in_order() {
        let bg = steps("kubernetes", "blue-green", &[("INPUT_MIGRATE-COMMAND", "db migrate")]);
        let at =
            |text: &str| bg.iter().position(|l| l.contains(text)).unwrap_or_else(|| panic!("{text}: {bg:?}"));
        let order = [
            at("check every permission"),
            at("read each of web"),
            at("run the migration Job"),
            at("apply the candidate colour"),
            at("watch each candidate to every replica available"),
            at("flip every live Service's selector"),
            at("observe the candidates for 45s"),
            at("drain 7s, then scale the old colour to zero"),
            at("on any failure or cancellation"),
        ];
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{bg:?}");
        assert_eq!(bg.len(), order.len(), "{bg:?}");
    }

    /// Every target × strategy prints its own steps, never another's.
    #[test]
    fn each_target_and_strategy_plans_its_own_steps() {
        for target in ["hosts", "ec2"] {
            let bg = steps(target, "blue-green", &[]);
            assert!(
                has(&bg, "switch traffic to the candidate on web-1") && has(&bg, "on web-2, web-3"),
                "{bg:?}"
            );
            assert!(has(&bg, "drain 7s, then remove the old version"), "{bg:?}");
            assert!(!has(&bg, "% of traffic"), "{bg:?}");
            let rolling = steps(target, "rolling", &[]);
            assert!(has(&rolling, "start the candidate colour on web-1, web-2"), "{rolling:?}");
            assert!(has(&rolling, "start the candidate colour on web-3"), "{rolling:?}");
            let canary = steps(target, "canary", &[("INPUT_CANARY-STEPS", "20, 100")]);
            assert!(
                has(&canary, "shift 20% of traffic to the candidate on web-1, web-2, web-3"),
                "{canary:?}"
            );
            assert!(has(&canary, "switch traffic to the candidate on web-1, web-2, web-3"), "{canary:?}");
        }
        let rolling = steps("kubernetes", "rolling", &[]);
        assert!(has(&rolling, "set each container's image by server-side apply"), "{rolling:?}");
        assert!(has(&rolling, "kubectl rollout undo"), "{rolling:?}");
        assert!(!has(&rolling, "colour") && !has(&rolling, "canary"), "{rolling:?}");

        let bg = steps("kubernetes", "blue-green", &[]);
        assert!(has(&bg, "flip every live Service's selector"), "{bg:?}");
        assert!(has(&bg, "observe the candidates for 45s"), "{bg:?}");
        assert!(has(&bg, "drain 7s, then scale the old colour to zero"), "{bg:?}");
        assert!(!has(&bg, "rollout undo") && !has(&bg, "set each container's image"), "{bg:?}");

        let canary = steps(
            "kubernetes",
            "canary",
            &[
                ("INPUT_CANARY-STEPS", "10, 50"),
                ("INPUT_CANARY-TRAFFIC", "ingress/shop"),
                ("INPUT_CANARY-INTERVAL", "2m"),
            ],
        );
        assert!(
            has(
                &canary,
                "send 10% of the traffic to the canary through the ingress-nginx canary Ingress shop-canary; observe for 120s"
            ),
            "{canary:?}"
        );
        assert!(has(&canary, "send 50% of the traffic"), "{canary:?}");
        assert!(has(&canary, "stop there: a later job decides with mode 'promote' or 'abort'"), "{canary:?}");
        assert!(!has(&canary, "rollout undo") && !has(&canary, "flip"), "{canary:?}");
    }
}
