//! Raw strings → typed [`Inputs`], collecting every problem.

use std::time::Duration;

use super::grammar::{self as g};
use super::raw::{RawContext, RawInputs};
use super::services::{self, Defaults, RestartPolicy, Service};
use super::*;

mod hosts;
mod kubernetes;
mod material;
mod rules;

use hosts::{ec2, hosts_and_ssh, services};
use kubernetes::kubernetes;
pub use material::webhook_url_problem;
use material::{github, notifications, registry_and_ssm};
use rules::target_rules;

/// Collects problems while converting; each conversion names its input.
struct Check {
    problems: Vec<Problem>,
    /// Inputs given by an old spelling: accepted, each with a warning.
    deprecated: Vec<Problem>,
}

impl Check {
    /// Whether the workflow set `input` to something other than the
    /// default the runner passes for it (see [`super::raw::declared_default`]).
    fn given(input: &str, value: &Option<String>) -> bool {
        value.as_deref().is_some_and(|v| Some(v.trim()) != super::raw::declared_default(input))
    }

    fn problem(&mut self, input: &str, message: impl Into<String>) {
        self.problems.push(Problem { input: input.into(), message: message.into() });
    }

    /// The value of the input spelled `new` now and `old` before: the old
    /// spelling is still read, with a warning naming the new one; both
    /// given is a problem (which one was meant is not ours to guess).
    /// Returns the name read and its value.
    fn spelled<'a>(
        &mut self,
        new: &'static str,
        new_value: &'a Option<String>,
        old: &'static str,
        old_value: &'a Option<String>,
    ) -> (&'static str, &'a Option<String>) {
        if old_value.is_none() {
            return (new, new_value);
        }
        if Self::given(new, new_value) {
            self.problem(old, format!("is the old spelling of '{new}', which is set too: set only '{new}'"));
            return (new, new_value);
        }
        self.deprecated.push(Problem {
            input: old.into(),
            message: format!("is deprecated: it is read as '{new}'; rename it to '{new}'"),
        });
        (old, old_value)
    }

    /// Parses an optional value, recording a problem and returning `None`
    /// when it does not parse.
    fn parse<T>(
        &mut self,
        input: &str,
        value: &Option<String>,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let v = value.as_deref()?.trim();
        match f(v) {
            Ok(t) => Some(t),
            Err(e) => {
                self.problem(input, e);
                None
            }
        }
    }

    fn or<T>(
        &mut self,
        input: &str,
        value: &Option<String>,
        default: T,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> T {
        self.parse(input, value, f).unwrap_or(default)
    }

    fn choice<T: Copy>(
        &mut self,
        input: &str,
        value: &Option<String>,
        default: T,
        options: &[(&str, T)],
    ) -> T {
        let Some(v) = value.as_deref().map(str::trim) else { return default };
        match options.iter().find(|(name, _)| *name == v) {
            Some((_, t)) => *t,
            None => {
                let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
                self.problem(input, format!("'{v}' is not allowed; use one of: {}", names.join(", ")));
                default
            }
        }
    }

    fn count(&mut self, input: &str, value: &Option<String>, default: u32, min: u32, max: u32) -> u32 {
        self.or(input, value, default, |s| match s.parse::<u32>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(format!("must be a whole number from {min} to {max}")),
        })
    }

    fn secret(
        &mut self,
        inline_name: &str,
        inline: &Option<String>,
        ssm_name: &str,
        ssm: &Option<String>,
    ) -> Option<SecretSource> {
        match (inline, ssm) {
            (Some(_), Some(_)) => {
                self.problem(ssm_name, format!("set either '{inline_name}' or '{ssm_name}', not both"));
                None
            }
            (Some(v), None) => Some(SecretSource::Inline(SecretValue::new(v.clone()))),
            (None, Some(_)) => self.parse(ssm_name, ssm, g::ssm_name).map(SecretSource::Ssm),
            (None, None) => None,
        }
    }
}

/// `KEY=VALUE` lines (or comma-separated) into pairs.
fn pairs(
    input: &str,
    text: &str,
    check: &mut Check,
    value: impl Fn(&str) -> Result<String, String>,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for item in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let Some((k, v)) = item.split_once('=') else {
            check.problem(input, format!("'{item}' must be NAME=VALUE"));
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        match (g::env_name(k), value(v)) {
            (Ok(k), Ok(v)) => {
                if out.iter().any(|(o, _)| *o == k) {
                    check.problem(input, format!("{k} is set twice"));
                }
                out.push((k, v));
            }
            (Err(e), _) | (_, Err(e)) => check.problem(input, e),
        }
    }
    out
}

/// The image of a service whose image `mode: rollback` looks up later.
pub const ROLLBACK_PENDING: &str = "deploy-action/rollback-pending";

/// What every target shares: what, where, how, and for how long.
struct Basics {
    target: TargetKind,
    mode: Mode,
    image: Option<ImageRef>,
    app: String,
    environment: String,
    environment_url: Option<url::Url>,
    strategy: StrategyKind,
    timeout: Duration,
}

/// Raw strings → typed [`Inputs`]. Each area has its own function below, so
/// each rule lives in one place; this one only puts them in order.
///
/// # Errors
/// Every problem found, each naming its input.
// long: the list of the areas' checks in order, then the one struct they fill.
pub fn validate(raw: &RawInputs, ctx: &RawContext, env: &Env) -> Result<Inputs, Vec<Problem>> {
    let mut c = Check { problems: Vec::new(), deprecated: Vec::new() };
    let b = basics(&mut c, raw, ctx);
    let (health, health_path, version_path) = health(&mut c, raw);
    let rollout = rollout(&mut c, raw, b.timeout);
    let traffic = traffic(&mut c, raw, &b);
    let smoke_tests = smoke_tests(&mut c, raw, &b);
    let pre_migrate_command = c.parse("pre-migrate-command", &raw.pre_migrate_command, g::command);
    let migrate_rollback_command =
        c.parse("migrate-rollback-command", &raw.migrate_rollback_command, g::command);
    if raw.migrate_command.is_none() {
        for (name, set) in [
            ("pre-migrate-command", &raw.pre_migrate_command),
            ("migrate-rollback-command", &raw.migrate_rollback_command),
        ] {
            if set.is_some() {
                c.problem(name, "goes with 'migrate-command', which is not set");
            }
        }
    }
    let (services, migrate_command) = services(&mut c, raw, ctx, &b, health_path, version_path);
    if !(services.is_empty() && raw.services_file.is_some()) {
        // (A services file that did not parse is named already.)
        smoke_services(&mut c, &smoke_tests, &services);
    }
    let (hosts, ssh) = hosts_and_ssh(&mut c, raw);
    if b.target != TargetKind::Kubernetes {
        services::one_answer_per_door(&services, &ssh.proxy_url, &mut c.problems);
    }
    let (ec2, finds_instances) = ec2(&mut c, raw, b.target);
    target_rules(&mut c, raw, &b, &hosts, finds_instances, &ssh, services.len());
    let kubernetes = kubernetes(&mut c, raw, env, ctx, &b);
    let notify = notifications(&mut c, raw);
    let (registry, ssm) = registry_and_ssm(&mut c, raw, env, b.target, &ssh, &notify);
    let (analysis, problems) = analysis::read(raw, ssm.region.as_deref(), b.target, b.strategy);
    for p in problems {
        // `aws-region` from the environment may be named once already.
        if !c.problems.contains(&p) {
            c.problems.push(p);
        }
    }
    let (github, context) = github(&mut c, raw, ctx, &b);
    if !c.problems.is_empty() {
        return Err(c.problems);
    }
    let Basics { target, mode, image, app, environment, environment_url, strategy, timeout } = b;
    // A services file whose entries name their own images, without the
    // `image` input: the first entry's is the deploy's (the record's).
    let image = image.or_else(|| {
        matches!(mode, Mode::Deploy | Mode::Plan).then_some(())?;
        match &kubernetes {
            Some(k) => k.deployments.first()?.image.as_deref().and_then(|i| g::image(i).ok()),
            None => services.first().map(|s| s.image.clone()),
        }
    });
    Ok(Inputs {
        target,
        mode,
        image,
        app,
        environment,
        environment_url,
        strategy,
        timeout,
        services,
        migrate_command,
        pre_migrate_command,
        migrate_rollback_command,
        health,
        rollout,
        traffic,
        analysis,
        smoke_tests,
        hosts,
        ssh,
        ec2,
        kubernetes,
        registry,
        ssm,
        github,
        notify,
        context,
        deprecated: c.deprecated,
    })
}

fn basics(c: &mut Check, raw: &RawInputs, ctx: &RawContext) -> Basics {
    let target = match raw.target.as_deref() {
        None => {
            c.problem("target", "is required; use one of: ec2, hosts, kubernetes");
            TargetKind::Hosts
        }
        Some(_) => c.choice(
            "target",
            &raw.target,
            TargetKind::Hosts,
            &[("ec2", TargetKind::Ec2), ("hosts", TargetKind::Hosts), ("kubernetes", TargetKind::Kubernetes)],
        ),
    };
    let mode = c.choice(
        "mode",
        &raw.mode,
        Mode::Deploy,
        &[
            ("deploy", Mode::Deploy),
            ("plan", Mode::Plan),
            ("rollback", Mode::Rollback),
            ("promote", Mode::Promote),
            ("abort", Mode::Abort),
        ],
    );
    let image = c.parse("image", &raw.image, g::image);
    if raw.image.is_none()
        && !matches!(mode, Mode::Rollback | Mode::Promote | Mode::Abort)
        && raw.services_file.is_none()
    {
        c.problem("image", "is required (an OCI image reference like registry.example.com/team/app:1.2.3); only mode 'rollback' may omit it");
    }
    let default_app = ctx
        .github_repository
        .as_deref()
        .and_then(|r| r.rsplit('/').next())
        .map(|r| r.to_ascii_lowercase().replace(['_', '.'], "-").trim_matches('-').to_string());
    let app = match (&raw.app, default_app) {
        (Some(_), _) => c.or("app", &raw.app, "app".into(), g::dns1123_label),
        (None, Some(d)) if g::dns1123_label(&d).is_ok() => d,
        (None, _) => {
            c.problem("app", "is required when the repository name is not a DNS-1123 label");
            "app".into()
        }
    };
    // No default: a staging job that forgot it would record to production
    // and mark production's earlier deployments inactive.
    let environment = raw.environment.as_deref().map(str::trim).unwrap_or_default().to_string();
    if environment.is_empty() {
        c.problem(
            "environment",
            "is required: name the GitHub environment this deploy goes to (e.g. staging, production); it is where the deployment is recorded",
        );
    }
    if environment.len() > 255 || environment.chars().any(|ch| ch.is_control()) {
        c.problem("environment", "must be at most 255 printable characters");
    }
    let environment_url = c.parse("environment-url", &raw.environment_url, g::http_url);
    // Kubernetes rolls with the Deployment's own strategy: rolling is its
    // default, and the only one this version has there.
    let default_strategy =
        if target == TargetKind::Kubernetes { StrategyKind::Rolling } else { StrategyKind::BlueGreen };
    let strategy = c.choice(
        "strategy",
        &raw.strategy,
        default_strategy,
        &[
            ("blue-green", StrategyKind::BlueGreen),
            ("rolling", StrategyKind::Rolling),
            ("canary", StrategyKind::Canary),
        ],
    );
    let timeout = c.or("timeout", &raw.timeout, Duration::from_secs(30 * 60), g::duration);

    Basics { target, mode, image, app, environment, environment_url, strategy, timeout }
}

fn health(c: &mut Check, raw: &RawInputs) -> (HealthSpec, String, String) {
    let health = HealthSpec {
        timeout: c.or(
            "health-check-timeout",
            &raw.health_check_timeout,
            Duration::from_secs(60),
            g::duration,
        ),
        interval: c.or(
            "health-check-interval",
            &raw.health_check_interval,
            Duration::from_secs(1),
            g::duration,
        ),
        successes: c.count("health-check-successes", &raw.health_check_successes, 3, 1, 100),
        max_response_time: {
            let (name, value) = c.spelled(
                "health-check-max-latency",
                &raw.health_check_max_latency,
                "health-check-max-response-time",
                &raw.health_check_max_response_time,
            );
            c.parse(name, value, g::duration)
        },
    };
    let health_path = c.or("health-check-path", &raw.health_check_path, "/health".into(), g::http_path);
    let version_path = c.or("version-path", &raw.version_path, "/version".into(), g::http_path);
    (health, health_path, version_path)
}

fn rollout(c: &mut Check, raw: &RawInputs, timeout: Duration) -> RolloutSpec {
    let (migrate_timeout_name, migrate_timeout) =
        c.spelled("migrate-timeout", &raw.migrate_timeout, "migration-timeout", &raw.migration_timeout);
    let canary_steps = c.or("canary-steps", &raw.canary_steps, vec![10, 50, 100], |s| {
        let steps: Vec<u8> = g::list(s)
            .iter()
            .map(|x| x.trim_end_matches('%').parse::<u8>())
            .collect::<Result<_, _>>()
            .map_err(|_| "must be percentages like 10,50,100".to_string())?;
        if steps.is_empty()
            || steps.windows(2).any(|w| w[0] >= w[1])
            || steps.iter().any(|s| *s == 0 || *s > 100)
        {
            return Err("must be increasing percentages from 1 to 100, like 10,50,100".into());
        }
        Ok(steps)
    });
    // Only a cluster's canary may stop short of 100 (a manual promotion).
    if canary_steps.last() != Some(&100) && raw.target.as_deref().map(str::trim) != Some("kubernetes") {
        c.problem(
            "canary-steps",
            "must end at 100 (only target 'kubernetes' can stop a canary short, for a later mode 'promote')",
        );
    }
    let rollout = RolloutSpec {
        observe_window: c.or("observe-window", &raw.observe_window, Duration::from_secs(30), g::duration),
        observe_failures: c.count("observe-failures", &raw.observe_failures, 3, 1, 1000),
        drain: c.or("drain-time", &raw.drain_time, Duration::from_secs(10), g::duration),
        canary_steps,
        canary_interval: c.or("canary-interval", &raw.canary_interval, Duration::from_secs(60), g::duration),
        max_parallel: c.count("max-parallel", &raw.max_parallel, 4, 1, 256) as usize,
        on_host_failure: c.choice(
            "on-host-failure",
            &raw.on_host_failure,
            OnHostFailure::RollbackAll,
            &[("rollback-all", OnHostFailure::RollbackAll), ("keep-going", OnHostFailure::KeepGoing)],
        ),
        migration_timeout: c.or(
            migrate_timeout_name,
            migrate_timeout,
            Duration::from_secs(10 * 60),
            g::duration,
        ),
    };
    // A migration bound at or past the run's own would never fire: the run
    // deadline would cancel first and leave the container running.
    if raw.migrate_command.is_some() && rollout.migration_timeout + Duration::from_secs(60) > timeout {
        c.problem(
            migrate_timeout_name,
            format!(
                "must leave at least 60s of 'timeout' ({}s) for the rest of the deploy; it is {}s",
                timeout.as_secs(),
                rollout.migration_timeout.as_secs()
            ),
        );
    }

    rollout
}

/// `smoke-tests`: on a cluster only the `url` / `preview-url` kind.
fn smoke_tests(c: &mut Check, raw: &RawInputs, b: &Basics) -> Vec<smoke::SmokeTest> {
    let Some(text) = raw.smoke_tests.as_deref() else { return vec![] };
    let tests = smoke::parse(text, &mut c.problems);
    if b.target == TargetKind::Kubernetes {
        for t in tests.iter().filter(|t| matches!(t.aim, smoke::Aim::Path(_))) {
            c.problem("smoke-tests", format!("'{}' has a 'path', sent to each host's nginx: on target 'kubernetes' give 'url' (the live address) and/or 'preview-url' (the preview Service's)", t.name));
        }
    }
    tests
}

/// A smoke test's `service` must name one of the services (it used to
/// fall back to the first one, testing what the user did not ask for).
fn smoke_services(c: &mut Check, tests: &[smoke::SmokeTest], services: &[Service]) {
    let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).filter(|n| !n.is_empty()).collect();
    for t in tests {
        let Some(wanted) = t.service.as_deref() else { continue };
        if !matches!(t.aim, smoke::Aim::Path(_)) {
            c.problem(
                "smoke-tests",
                format!("'{}' names service '{wanted}', which only a 'path' test uses", t.name),
            );
        } else if !names.contains(&wanted) {
            let known = if names.is_empty() {
                "there is no services-file, so the one service has no name: drop 'service'".to_string()
            } else {
                format!("the services are {}", names.join(", "))
            };
            c.problem(
                "smoke-tests",
                format!("'{}' names service '{wanted}', which is not a service: {known}", t.name),
            );
        }
    }
}

/// `max-error-rate`, `max-latency`, `min-requests`, `nginx-access-log`.
fn traffic(c: &mut Check, raw: &RawInputs, b: &Basics) -> Option<TrafficSpec> {
    let max_error_rate = c.parse("max-error-rate", &raw.max_error_rate, |s| {
        let n = s.trim().strip_suffix('%').ok_or("must be a percentage like 10%")?;
        match n.trim().parse::<f64>() {
            Ok(v) if (0.0..=100.0).contains(&v) => Ok(v / 100.0),
            _ => Err("must be a percentage from 0% to 100%, like 10%".to_string()),
        }
    });
    let max_latency = c.parse("max-latency", &raw.max_latency, g::duration);
    let min_requests = c.count("min-requests", &raw.min_requests, 20, 1, 1_000_000_000) as u64;
    let access_log =
        c.or("nginx-access-log", &raw.nginx_access_log, "/var/log/nginx/access.log".into(), g::remote_path);
    if b.target == TargetKind::Kubernetes {
        for (name, set) in [("max-error-rate", &raw.max_error_rate), ("max-latency", &raw.max_latency)] {
            if set.is_some() {
                c.problem(name, "reads nginx's access log on each host: it is for targets 'hosts' and 'ec2' (on a cluster, use 'analysis-query' or 'rollback-alarms')");
            }
        }
        return None;
    }
    (max_error_rate.is_some() || max_latency.is_some()).then_some(TrafficSpec {
        limits: super::Limits { max_error_rate, max_latency, min_requests },
        access_log,
    })
}

/// A file in the workspace named by `input`; `None` (with the problem)
/// when it cannot be read.
fn workspace_file(c: &mut Check, ctx: &RawContext, input: &str, file: &str) -> Option<String> {
    let workspace = ctx.github_workspace.clone().unwrap_or_else(|| ".".into());
    let path = std::path::Path::new(&workspace).join(file);
    std::fs::read_to_string(&path)
        .map_err(|e| c.problem(input, format!("cannot read {}: {e}", path.display())))
        .ok()
}

#[cfg(test)]
mod tests;
