//! Raw strings → typed [`Inputs`], collecting every problem.

use std::time::Duration;

use super::grammar::{self as g};
use super::raw::{RawContext, RawInputs};
use super::services::{self, Defaults, RestartPolicy, Service};
use super::*;

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

/// The services (one from the inputs, or a services file) and the
/// migration command.
fn services(
    c: &mut Check,
    raw: &RawInputs,
    ctx: &RawContext,
    b: &Basics,
    health_path: String,
    version_path: String,
) -> (Vec<Service>, Option<Vec<String>>) {
    let (app, image, mode) = (&b.app, &b.image, b.mode);
    let container_port = c.or("container-port", &raw.container_port, 8080, g::port);
    let restart_policy =
        c.or("restart-policy", &raw.restart_policy, RestartPolicy::UnlessStopped, RestartPolicy::parse);
    let env_pairs = raw.env.as_deref().map(|t| pairs("env", t, c, |v| Ok(v.to_string()))).unwrap_or_default();
    let command = c.parse("command", &raw.command, g::command);
    let migrate_command = c.parse("migrate-command", &raw.migrate_command, g::command);
    // On a cluster the services file lists Deployments: see `kubernetes`.
    let services = if let Some(file) =
        raw.services_file.as_ref().filter(|_| b.target != TargetKind::Kubernetes)
    {
        for (name, set) in
            [("blue-port", &raw.blue_port), ("green-port", &raw.green_port), ("command", &raw.command)]
        {
            if Check::given(name, set) {
                c.problem(name, "cannot be combined with 'services-file'; set it per service in the file");
            }
        }
        match workspace_file(c, ctx, "services-file", file) {
            Some(text) => {
                let d = Defaults {
                    app,
                    image: image.as_ref(),
                    container_port,
                    health_path: Some(health_path.clone()),
                    version_path: Some(version_path.clone()),
                    restart_policy,
                };
                let mut svcs = services::from_file(&text, &d, &mut c.problems);
                for s in &mut svcs {
                    s.env.extend(env_pairs.iter().cloned());
                }
                svcs
            }
            None => vec![],
        }
    } else {
        let blue = c.or("blue-port", &raw.blue_port, 8081, g::port);
        let green = c.or("green-port", &raw.green_port, 8082, g::port);
        if blue == green {
            c.problem("green-port", "must differ from blue-port");
        }
        // `mode: rollback` without an image: the pipeline fills the image in
        // from the last good deployment.
        image
            .clone()
            .or_else(|| {
                (mode == Mode::Rollback).then(|| g::image(ROLLBACK_PENDING).expect("valid placeholder"))
            })
            .map(|image| {
                vec![Service {
                    name: String::new(),
                    image,
                    container_port,
                    blue_port: blue,
                    green_port: green,
                    health_path: Some(health_path.clone()),
                    version_path: Some(version_path.clone()),
                    env: env_pairs.clone(),
                    command,
                    restart_policy,
                    behind_proxy: true,
                    upstream_file: format!("/etc/nginx/conf.d/upstreams/{app}.conf"),
                    upstream_name: format!("{app}_backend").replace('-', "_"),
                    front_door: services::FrontDoor::default(),
                }]
            })
            .unwrap_or_default()
    };
    let mut services = services;
    if let Some(file) = &raw.nginx_upstream_file {
        if services.len() > 1 {
            c.problem("nginx-upstream-file", "set upstream-file per service in the services file instead");
        } else if let Some(path) = c.parse("nginx-upstream-file", &Some(file.clone()), g::remote_path) {
            services.iter_mut().for_each(|s| s.upstream_file = path.clone());
        }
    }

    (services, migrate_command)
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

fn hosts_and_ssh(c: &mut Check, raw: &RawInputs) -> (Vec<HostSpec>, SshSpec) {
    let hosts: Vec<HostSpec> = raw
        .hosts
        .as_deref()
        .map(|h| g::list(h).iter().filter_map(|s| c.parse("hosts", &Some(s.clone()), g::host_spec)).collect())
        .unwrap_or_default();
    let ssh = SshSpec {
        user: c.or("ssh-user", &raw.ssh_user, "root".into(), g::user),
        port: c.or("ssh-port", &raw.ssh_port, 22, g::port),
        private_key: c.secret(
            "ssh-private-key",
            &raw.ssh_private_key,
            "ssh-private-key-ssm",
            &raw.ssh_private_key_ssm,
        ),
        known_hosts: c.secret(
            "ssh-known-hosts",
            &raw.ssh_known_hosts,
            "ssh-known-hosts-ssm",
            &raw.ssh_known_hosts_ssm,
        ),
        timeout: c.or("ssh-timeout", &raw.ssh_timeout, Duration::from_secs(20), g::duration),
        docker_socket: c.or(
            "docker-socket",
            &raw.docker_socket,
            "/var/run/docker.sock".into(),
            g::remote_path,
        ),
        proxy_url: c.or(
            "proxy-url",
            &raw.proxy_url,
            url::Url::parse("http://127.0.0.1:80/").expect("url"),
            g::http_url,
        ),
        lock_dir: c.or("lock-dir", &raw.lock_dir, "/var/lib/deploy-action/locks".into(), g::remote_path),
        break_lock: c.or("break-lock", &raw.break_lock, false, g::boolean),
        jump: c.parse("ssh-jump-host", &raw.ssh_jump_host, g::host_spec),
    };
    (hosts, ssh)
}

/// The EC2 settings (for `target: ec2`), and whether ids or filters name
/// the instances.
fn ec2(c: &mut Check, raw: &RawInputs, target: TargetKind) -> (Option<Ec2Spec>, bool) {
    let ec2_ids: Vec<String> = raw.ec2_instance_ids.as_deref().map(g::list).unwrap_or_default();
    let instance_id = regex::Regex::new(r"^i-[0-9a-f]{8,17}$").expect("regex");
    for id in &ec2_ids {
        if !instance_id.is_match(id) {
            c.problem("ec2-instance-ids", format!("'{id}' is not an instance id like i-0123456789abcdef0"));
        }
    }
    let mut ec2_filters = Vec::new();
    for f in raw.ec2_filters.as_deref().map(g::list).unwrap_or_default() {
        match f.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => {
                ec2_filters.push((k.trim().to_string(), v.split('|').map(|x| x.trim().to_string()).collect()))
            }
            _ => c.problem(
                "ec2-filters",
                format!("'{f}' must be Tag=value (several values as a|b), like Role=web,Env=prod"),
            ),
        }
    }
    let ec2_address = c.choice(
        "ec2-address",
        &raw.ec2_address,
        AddressKind::PrivateIp,
        &[
            ("private-ip", AddressKind::PrivateIp),
            ("public-ip", AddressKind::PublicIp),
            ("public-dns", AddressKind::PublicDns),
        ],
    );
    let connect = ec2_connect(c, raw, target, ec2_address);
    let console_host_keys = c.choice(
        "ec2-host-keys",
        &raw.ec2_host_keys,
        false,
        &[("known-hosts", false), ("console-output", true)],
    );
    let ec2 = (target == TargetKind::Ec2).then(|| Ec2Spec {
        instance_ids: ec2_ids.clone(),
        filters: ec2_filters.clone(),
        address: ec2_address,
        connect,
        console_host_keys,
    });

    (ec2, !ec2_ids.is_empty() || !ec2_filters.is_empty())
}

/// `ec2-connect` and what it refuses: through an Instance Connect
/// Endpoint the run makes its own key (a stored one would never be used,
/// and a user who sets one believes it is), the endpoint is the way in (no
/// bastion), and it reaches instances at their private IP only.
fn ec2_connect(c: &mut Check, raw: &RawInputs, target: TargetKind, address: AddressKind) -> Ec2Connect {
    const EICE: &str = "ec2-connect 'instance-connect-endpoint'";
    let endpoint = c.choice(
        "ec2-connect",
        &raw.ec2_connect,
        false,
        &[("ssh", false), ("instance-connect-endpoint", true)],
    );
    let id = c.parse("ec2-instance-connect-endpoint-id", &raw.ec2_instance_connect_endpoint_id, |v| {
        let re = regex::Regex::new(r"^eice-[0-9a-f]{8,17}$").expect("regex");
        if re.is_match(v) {
            Ok(v.to_string())
        } else {
            Err(format!("'{v}' is not an Instance Connect Endpoint id like eice-0123456789abcdef0"))
        }
    });
    if !endpoint {
        if raw.ec2_instance_connect_endpoint_id.is_some() {
            c.problem("ec2-instance-connect-endpoint-id", format!("goes with {EICE}, which is not set"));
        }
        return Ec2Connect::Ssh;
    }
    if target != TargetKind::Ec2 {
        c.problem("ec2-connect", "is only used with target 'ec2'");
    }
    for (name, set) in
        [("ssh-private-key", &raw.ssh_private_key), ("ssh-private-key-ssm", &raw.ssh_private_key_ssm)]
    {
        if set.is_some() {
            c.problem(
                name,
                format!("is not used with {EICE}: each run makes its own key and pushes it with SendSSHPublicKey; remove it (and the stored key)"),
            );
        }
    }
    if raw.ssh_jump_host.is_some() {
        c.problem("ssh-jump-host", format!("is not used with {EICE}: the endpoint is the way in"));
    }
    if address != AddressKind::PrivateIp {
        c.problem(
            "ec2-address",
            format!("must be 'private-ip' with {EICE}: the endpoint reaches an instance at its private IP"),
        );
    }
    Ec2Connect::Endpoint { id }
}

/// What each target requires, and refuses, of the other inputs.
fn target_rules(
    c: &mut Check,
    raw: &RawInputs,
    b: &Basics,
    hosts: &[HostSpec],
    finds_instances: bool,
    ssh: &SshSpec,
    service_count: usize,
) {
    let (target, mode, strategy) = (b.target, b.mode, b.strategy);
    match target {
        TargetKind::Hosts if hosts.is_empty() && raw.hosts.is_none() => {
            c.problem("hosts", "is required for target 'hosts': a list of [user@]host[:port], one per line or comma-separated")
        }
        TargetKind::Ec2 if !finds_instances => {
            c.problem("ec2-filters", "target 'ec2' needs 'ec2-instance-ids' or 'ec2-filters' (like Role=web,Env=prod) to find instances")
        }
        TargetKind::Kubernetes
            if raw.deployments.is_none() && raw.manifests.is_none() && raw.services_file.is_none() =>
        {
            c.problem(
                "deployments",
                "is required for target 'kubernetes' (or 'manifests', or a 'services-file' listing them): Deployment names (name or name:container), one per line or comma-separated",
            )
        }
        _ => {}
    }
    if target == TargetKind::Kubernetes && mode == Mode::Rollback && raw.image.is_some() {
        c.problem("image", "mode 'rollback' on target 'kubernetes' restores the previous revision (as kubectl rollout undo); omit 'image', or deploy that image with mode 'deploy'");
    }
    if target == TargetKind::Kubernetes
        && (strategy == StrategyKind::Canary || matches!(mode, Mode::Promote | Mode::Abort))
    {
        if raw.deployments.as_deref().is_some_and(|d| g::list(d).len() != 1) {
            c.problem("deployments", "strategy 'canary' on target 'kubernetes' takes one Deployment");
        }
        if raw.manifests.is_some() {
            c.problem(
                "manifests",
                "strategy 'canary' on target 'kubernetes' works from an existing Deployment ('deployments')",
            );
        }
    }
    if matches!(mode, Mode::Promote | Mode::Abort) {
        if target != TargetKind::Kubernetes || strategy != StrategyKind::Canary {
            c.problem(
                "mode",
                format!(
                    "'{}' decides a standing canary: it needs target 'kubernetes' and strategy 'canary'",
                    if mode == Mode::Promote { "promote" } else { "abort" }
                ),
            );
        }
        if raw.image.is_some() {
            c.problem("image", "mode 'promote' and 'abort' act on the standing canary's image; omit 'image'");
        }
    }
    if target != TargetKind::Kubernetes && raw.canary_traffic.is_some() {
        c.problem("canary-traffic", "is only used with target 'kubernetes'");
    }
    if target == TargetKind::Kubernetes && strategy == StrategyKind::BlueGreen && raw.manifests.is_some() {
        c.problem("manifests", "blue-green on target 'kubernetes' works from existing Deployments and Services ('deployments'); apply the manifests with strategy 'rolling' first");
    }
    if target != TargetKind::Kubernetes {
        for (name, set) in [
            ("kubeconfig", &raw.kubeconfig),
            ("kube-context", &raw.kube_context),
            ("namespace", &raw.namespace),
            ("deployments", &raw.deployments),
            ("manifests", &raw.manifests),
            ("eks-cluster", &raw.eks_cluster),
        ] {
            if set.is_some() {
                c.problem(name, "is only used with target 'kubernetes'");
            }
        }
    }
    other_targets_inputs(c, raw, target);
    other_strategies_inputs(c, raw, target, strategy);
    if target == TargetKind::Ec2 && mode != Mode::Plan && raw.ssh_user.is_none() {
        c.problem(
            "ssh-user",
            "is required for target 'ec2': stock AMIs refuse root over SSH; use the AMI's user: ec2-user (Amazon Linux, RHEL), ubuntu (Ubuntu), admin (Debian), centos (CentOS), rocky (Rocky Linux), fedora (Fedora), or root where your image allows it",
        );
    }
    if matches!(target, TargetKind::Hosts | TargetKind::Ec2) && mode != Mode::Plan {
        let made_key = raw.ec2_connect.as_deref().map(str::trim) == Some("instance-connect-endpoint");
        if ssh.private_key.is_none() && !made_key {
            c.problem("ssh-private-key", "is required to reach hosts (or set 'ssh-private-key-ssm')");
        }
        let console_keys = target == TargetKind::Ec2
            && raw.ec2_host_keys.as_deref().map(str::trim) == Some("console-output");
        if ssh.known_hosts.is_none() && !console_keys {
            c.problem("ssh-known-hosts", "is required: host keys must be pinned (known_hosts lines, e.g. from ssh-keyscan run once by you; or set 'ssh-known-hosts-ssm'; with target 'ec2', or 'ec2-host-keys: console-output')");
        } else if ssh.known_hosts.is_none() && ssh.jump.is_some() {
            c.problem("ssh-known-hosts", "is required for the 'ssh-jump-host' key: a bastion's key is not in the instances' console output");
        }
    }
    if strategy == StrategyKind::Canary && service_count > 1 {
        c.problem("strategy", "canary works with one proxied service; use blue-green with a services file");
    }
}

/// Inputs of a strategy (or of the hosts' health checks and fleet) that
/// this run would not use, refused instead of silently ignored: a
/// `canary-steps` with blue-green, an `observe-window` on a rolling
/// cluster, a `health-check-path` on a cluster (the pods' probes judge)
/// are workflows that do not do what they say. A value equal to the
/// default the runner passes is not "given".
fn other_strategies_inputs(c: &mut Check, raw: &RawInputs, target: TargetKind, strategy: StrategyKind) {
    if strategy != StrategyKind::Canary {
        for (name, set) in [("canary-steps", &raw.canary_steps), ("canary-interval", &raw.canary_interval)] {
            if Check::given(name, set) {
                c.problem(
                    name,
                    format!("goes with strategy 'canary'; this run's strategy is '{}'", strategy.as_str()),
                );
            }
        }
    }
    if target != TargetKind::Kubernetes {
        return;
    }
    let unused_here: &[(&str, &Option<String>)] = match strategy {
        StrategyKind::Rolling => &[("observe-window", &raw.observe_window), ("drain-time", &raw.drain_time)],
        StrategyKind::Canary => &[("observe-window", &raw.observe_window)],
        StrategyKind::BlueGreen => &[],
    };
    for (name, set) in unused_here {
        if Check::given(name, set) {
            c.problem(
                name,
                format!("is not used by strategy '{}' on target 'kubernetes' (see docs/inputs.md for where it applies)", strategy.as_str()),
            );
        }
    }
    let hosts_only: [(&str, &Option<String>, &str); 16] = [
        ("container-port", &raw.container_port, "the ports are the Deployment's pod spec"),
        ("blue-port", &raw.blue_port, "the colours are Deployments, not host ports"),
        ("green-port", &raw.green_port, "the colours are Deployments, not host ports"),
        ("restart-policy", &raw.restart_policy, "the pod spec's restartPolicy applies"),
        ("health-check-path", &raw.health_check_path, "the pods' readiness probes judge health"),
        (
            "health-check-timeout",
            &raw.health_check_timeout,
            "the Deployment's progressDeadlineSeconds bounds the rollout",
        ),
        ("health-check-interval", &raw.health_check_interval, "the pods' readiness probes judge health"),
        ("health-check-successes", &raw.health_check_successes, "the pods' readiness probes judge health"),
        (
            "health-check-max-latency",
            &raw.health_check_max_latency,
            "the pods' readiness probes judge health",
        ),
        (
            "health-check-max-response-time",
            &raw.health_check_max_response_time,
            "the pods' readiness probes judge health",
        ),
        ("version-path", &raw.version_path, "the switch is checked through the Service's EndpointSlices"),
        ("observe-failures", &raw.observe_failures, "the pods' readiness judges the observe window"),
        (
            "min-requests",
            &raw.min_requests,
            "it goes with max-error-rate and max-latency (nginx's access log)",
        ),
        ("nginx-access-log", &raw.nginx_access_log, "traffic moves with the Service's selector"),
        ("max-parallel", &raw.max_parallel, "the Deployment's maxSurge and maxUnavailable pace the rollout"),
        ("on-host-failure", &raw.on_host_failure, "every Deployment goes back together"),
    ];
    for (name, set, why) in hosts_only {
        if Check::given(name, set) {
            c.problem(
                name,
                format!("is only used with targets 'hosts' and 'ec2'; on target 'kubernetes' {why}"),
            );
        }
    }
}

/// Inputs another target uses, refused instead of silently ignored: a
/// `registry-password` or `ssh-*` given on a cluster, or a `hosts` list
/// given with `target: ec2`, is a workflow that does not do what it says.
fn other_targets_inputs(c: &mut Check, raw: &RawInputs, target: TargetKind) {
    let on_hosts: &[(&str, &Option<String>, &str)] = &[
        ("env", &raw.env, "the environment is the Deployment's pod spec (or its manifest)"),
        ("command", &raw.command, "the command is the Deployment's pod spec (or its manifest)"),
        ("container-port", &raw.container_port, "ports are the Deployment's and its Service's"),
        ("blue-port", &raw.blue_port, "blue-green flips the Service's selector"),
        ("green-port", &raw.green_port, "blue-green flips the Service's selector"),
        ("restart-policy", &raw.restart_policy, "the pod spec's restartPolicy applies"),
        ("registry-username", &raw.registry_username, "the cluster pulls with the pod's imagePullSecrets"),
        ("registry-password", &raw.registry_password, "the cluster pulls with the pod's imagePullSecrets"),
        (
            "registry-password-ssm",
            &raw.registry_password_ssm,
            "the cluster pulls with the pod's imagePullSecrets",
        ),
        ("ssh-user", &raw.ssh_user, "the cluster is reached with 'kubeconfig' or 'eks-cluster'"),
        ("ssh-port", &raw.ssh_port, "the cluster is reached with 'kubeconfig' or 'eks-cluster'"),
        (
            "ssh-private-key",
            &raw.ssh_private_key,
            "the cluster is reached with 'kubeconfig' or 'eks-cluster'",
        ),
        (
            "ssh-private-key-ssm",
            &raw.ssh_private_key_ssm,
            "the cluster is reached with 'kubeconfig' or 'eks-cluster'",
        ),
        (
            "ssh-known-hosts",
            &raw.ssh_known_hosts,
            "the cluster is reached with 'kubeconfig' or 'eks-cluster'",
        ),
        (
            "ssh-known-hosts-ssm",
            &raw.ssh_known_hosts_ssm,
            "the cluster is reached with 'kubeconfig' or 'eks-cluster'",
        ),
        ("ssh-timeout", &raw.ssh_timeout, "the cluster is reached with 'kubeconfig' or 'eks-cluster'"),
        ("ssh-jump-host", &raw.ssh_jump_host, "the cluster is reached with 'kubeconfig' or 'eks-cluster'"),
        ("docker-socket", &raw.docker_socket, "the cluster runs the containers"),
        ("nginx-upstream-file", &raw.nginx_upstream_file, "traffic moves with the Service's selector"),
        ("proxy-url", &raw.proxy_url, "traffic moves with the Service's selector"),
        ("lock-dir", &raw.lock_dir, "the GitHub deployment is the lock"),
        ("break-lock", &raw.break_lock, "the GitHub deployment is the lock"),
        ("hosts", &raw.hosts, "the cluster is named by 'kubeconfig' or 'eks-cluster'"),
    ];
    if target == TargetKind::Kubernetes {
        for (name, set, why) in on_hosts {
            if Check::given(name, set) {
                c.problem(
                    name,
                    format!("is only used with targets 'hosts' and 'ec2'; on target 'kubernetes' {why}"),
                );
            }
        }
    }
    if target == TargetKind::Ec2 && raw.hosts.is_some() {
        c.problem(
            "hosts",
            "is only used with target 'hosts'; target 'ec2' finds its hosts with 'ec2-instance-ids' or 'ec2-filters' (for a fixed list, use target 'hosts')",
        );
    }
    if target != TargetKind::Ec2 {
        for (name, set) in [
            ("ec2-instance-ids", &raw.ec2_instance_ids),
            ("ec2-filters", &raw.ec2_filters),
            ("ec2-address", &raw.ec2_address),
            ("ec2-host-keys", &raw.ec2_host_keys),
        ] {
            if Check::given(name, set) {
                c.problem(name, "is only used with target 'ec2'");
            }
        }
    }
}

fn kubernetes(
    c: &mut Check,
    raw: &RawInputs,
    env: &Env,
    ctx: &RawContext,
    b: &Basics,
) -> Option<KubernetesSpec> {
    let target = b.target;
    (target == TargetKind::Kubernetes).then(|| {
        let mut deployments: Vec<DeploymentRef> = raw
            .deployments
            .as_deref()
            .map(|d| {
                g::list(d)
                    .iter()
                    .filter_map(|s| c.parse("deployments", &Some(s.clone()), g::deployment_ref))
                    .collect()
            })
            .unwrap_or_default();
        if deployments.is_empty() && raw.deployments.as_deref().is_some_and(|d| g::list(d).is_empty()) {
            c.problem("deployments", "names no Deployment; list them as name or name:container");
        }
        for (i, d) in deployments.iter().enumerate() {
            if deployments[..i].iter().any(|o| o.name == d.name && o.kind == d.kind) {
                c.problem("deployments", format!("'{}' is named twice", d.label()));
            }
        }
        if b.strategy != StrategyKind::Rolling {
            for d in deployments.iter().filter(|d| d.kind != WorkloadKind::Deployment) {
                c.problem(
                    "deployments",
                    format!(
                        "'{}': strategy '{}' takes Deployments only (it runs a second Deployment beside the first); deploy a {} with strategy 'rolling'",
                        d.label(),
                        if b.strategy == StrategyKind::Canary { "canary" } else { "blue-green" },
                        d.kind.as_str()
                    ),
                );
            }
        }
        let manifests = match raw.manifests.as_deref().map(g::list) {
            None => Vec::new(),
            Some(patterns) => {
                let workspace = ctx.github_workspace.clone().unwrap_or_else(|| ".".into());
                let (m, problems) = manifests::load(std::path::Path::new(&workspace), &patterns);
                for p in problems {
                    c.problem("manifests", p);
                }
                m
            }
        };
        if !manifests.is_empty() {
            deployments = manifest_deployments(c, &manifests, deployments, b);
        }
        if let Some(file) = &raw.services_file {
            for (input, set) in [("deployments", &raw.deployments), ("manifests", &raw.manifests)] {
                if set.is_some() {
                    c.problem(input, "cannot be combined with 'services-file', which lists the Deployments");
                }
            }
            if let Some(text) = workspace_file(c, ctx, "services-file", file) {
                deployments = services::kube_from_file(&text, &mut c.problems);
            }
            if b.image.is_none() && matches!(b.mode, Mode::Deploy | Mode::Plan) {
                for d in deployments.iter().filter(|d| d.image.is_none()) {
                    c.problem(
                        "services-file",
                        format!("'{}' has no image: set image there or the 'image' input", d.name),
                    );
                }
            }
            match b.strategy {
                StrategyKind::Canary if deployments.len() > 1 => c.problem(
                    "services-file",
                    "strategy 'canary' on target 'kubernetes' takes one Deployment; this file lists several",
                ),
                // (An empty list: the file did not parse, and that is named.)
                StrategyKind::BlueGreen if !deployments.is_empty() && deployments.iter().all(|d| d.worker) => c.problem(
                    "services-file",
                    "strategy 'blue-green' flips Services, and every entry here has 'proxy: false' (no Service): deploy workers alone with strategy 'rolling'",
                ),
                _ => {}
            }
        }
        let eks = raw.eks_cluster.as_deref().map(str::trim).and_then(|name| {
            for (input, set) in [("kubeconfig", &raw.kubeconfig), ("kube-context", &raw.kube_context)] {
                if set.is_some() {
                    c.problem(input, "cannot be combined with 'eks-cluster' (the endpoint, CA and token come from AWS)");
                }
            }
            // EKS cluster names: 1-100 of [0-9A-Za-z_-], starting alphanumeric.
            let valid = !name.is_empty()
                && name.len() <= 100
                && name.starts_with(|ch: char| ch.is_ascii_alphanumeric())
                && name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_');
            if !valid {
                c.problem("eks-cluster", format!("'{name}' is not an EKS cluster name (1-100 letters, digits, '-' or '_', starting with a letter or digit)"));
            }
            match raw.aws_region.as_deref().map(str::trim) {
                Some(region) if valid => Some(EksSpec { cluster: name.into(), region: region.into() }),
                None => {
                    c.problem("aws-region", "is required with 'eks-cluster' (the cluster's region)");
                    None
                }
                _ => None,
            }
        });
        KubernetesSpec {
            kubeconfig: raw.kubeconfig.clone().map(SecretValue::new),
            kubeconfig_env: env.get("KUBECONFIG").map(String::from),
            context: raw.kube_context.as_deref().map(|s| s.trim().to_string()),
            eks,
            namespace: c.or("namespace", &raw.namespace, "default".into(), g::dns1123_label),
            deployments,
            manifests,
            canary_traffic: c.or("canary-traffic", &raw.canary_traffic, CanaryTraffic::Replicas, |s| {
                match s.split_once('/') {
                    None if s == "replicas" => Ok(CanaryTraffic::Replicas),
                    Some(("ingress", n)) => g::dns1123_subdomain(n).map(CanaryTraffic::Ingress),
                    Some(("httproute", n)) => g::dns1123_subdomain(n).map(CanaryTraffic::HttpRoute),
                    _ => Err("must be 'replicas', 'ingress/<Ingress name>' (ingress-nginx canary) or 'httproute/<HTTPRoute name>' (Gateway API)".into()),
                }
            }),
        }
    })
}

/// With `manifests`, the workloads to roll: those `deployments` names
/// (each must be in the manifests, with the container), else every
/// container of the manifests' workloads that runs the image's repository.
/// A rolling deploy also judges (and undoes) every other Deployment,
/// StatefulSet and DaemonSet of the manifests, with the image the manifest
/// gives it: applied and forgotten, a crash-looping one would go unseen.
fn manifest_deployments(
    c: &mut Check,
    manifests: &[manifests::Manifest],
    named: Vec<DeploymentRef>,
    b: &Basics,
) -> Vec<DeploymentRef> {
    let rolling = b.strategy == StrategyKind::Rolling;
    let in_manifests: Vec<&manifests::Manifest> = manifests
        .iter()
        .filter(|m| m.workload_kind().is_some_and(|k| rolling || k == WorkloadKind::Deployment))
        .collect();
    let mut out = if !named.is_empty() {
        let mut out = Vec::new();
        for d in named {
            // A bare name takes the kind of the manifest that has it.
            // A workload of the kind named first (a bare name: a Deployment),
            // else, for a bare name, the other kind of that name.
            let found = in_manifests
                .iter()
                .find(|m| m.name() == d.name && m.workload_kind() == Some(d.kind))
                .or_else(|| {
                    in_manifests.iter().find(|m| m.name() == d.name && d.kind == WorkloadKind::Deployment)
                });
            match found {
                None => c.problem(
                    "deployments",
                    format!(
                        "'{}' is not a {} in the manifests",
                        d.label(),
                        if rolling {
                            "Deployment, StatefulSet or DaemonSet (apps/v1)"
                        } else {
                            "Deployment (apps/v1)"
                        }
                    ),
                ),
                Some(m) => {
                    let containers = m.containers();
                    if let Some(want) = &d.container
                        && !containers.iter().any(|(n, _)| n == want)
                    {
                        c.problem(
                            "deployments",
                            format!(
                                "{} '{}' in {} has no container '{want}' (it has: {})",
                                m.kind(),
                                d.name,
                                m.source,
                                containers.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
                            ),
                        );
                    }
                    let kind = m.workload_kind().unwrap_or_default();
                    if out.iter().any(|o: &DeploymentRef| o.name == d.name && o.kind == kind) {
                        // `db` and `sts/db` both found the StatefulSet.
                        c.problem(
                            "deployments",
                            format!("'{}' names the {} '{}' again", d.label(), kind.as_str(), d.name),
                        );
                        continue;
                    }
                    out.push(DeploymentRef { kind, ..d });
                }
            }
        }
        out
    } else if let Some(image) = &b.image {
        let same_repo = |i: &str| {
            g::image(i).is_ok_and(|i| i.repository == image.repository && i.registry == image.registry)
        };
        let found: Vec<DeploymentRef> = in_manifests
            .iter()
            .filter_map(|m| {
                m.containers().into_iter().find(|(_, i)| same_repo(i)).map(|(container, _)| DeploymentRef {
                    name: m.name().into(),
                    kind: m.workload_kind().unwrap_or_default(),
                    container: Some(container),
                    ..Default::default()
                })
            })
            .collect();
        if found.is_empty() {
            c.problem(
                "manifests",
                format!(
                    "no container of their {} runs {}; name the containers to set in 'deployments' (name:container)",
                    if rolling { "workloads" } else { "Deployments" },
                    match &image.registry {
                        Some(r) => format!("{r}/{}", image.repository),
                        None => image.repository.clone(),
                    }
                ),
            );
        }
        found
    } else {
        if b.mode != Mode::Rollback {
            c.problem("manifests", "need 'image' (or 'deployments' naming the containers)");
        }
        return in_manifests
            .iter()
            .map(|m| DeploymentRef {
                name: m.name().into(),
                kind: m.workload_kind().unwrap_or_default(),
                ..Default::default()
            })
            .collect();
    };
    if rolling && matches!(b.mode, Mode::Deploy | Mode::Plan) {
        for m in &in_manifests {
            let kind = m.workload_kind().unwrap_or_default();
            if out.iter().any(|d| d.name == m.name() && d.kind == kind) {
                continue;
            }
            // Judged with the image its manifest gives it.
            let Some((container, image)) = m.containers().into_iter().next() else { continue };
            out.push(DeploymentRef {
                name: m.name().into(),
                kind,
                container: Some(container),
                image: Some(image),
                ..Default::default()
            });
        }
    }
    out
}

fn registry_and_ssm(
    c: &mut Check,
    raw: &RawInputs,
    env: &Env,
    target: TargetKind,
    ssh: &SshSpec,
    notify: &NotifySpec,
) -> (RegistryAuth, SsmSpec) {
    let registry = RegistryAuth {
        username: raw.registry_username.clone(),
        password: c.secret(
            "registry-password",
            &raw.registry_password,
            "registry-password-ssm",
            &raw.registry_password_ssm,
        ),
    };
    if registry.username.is_some() != registry.password.is_some() {
        c.problem(
            "registry-username",
            "set both 'registry-username' and 'registry-password' (or 'registry-password-ssm'), or neither",
        );
    }
    let ssm_paths: Vec<String> = raw.ssm_paths.as_deref().map(g::list).unwrap_or_default();
    for p in &ssm_paths {
        if let Err(e) = g::ssm_name(p) {
            c.problem("ssm-paths", e);
        } else if !p.starts_with('/') {
            c.problem("ssm-paths", format!("'{p}' must start with '/' (a path like /myapp/prod/)"));
        }
    }
    let ssm_parameters = raw
        .ssm_parameters
        .as_deref()
        .map(|t| pairs("ssm-parameters", &t.replace(',', "\n"), c, g::ssm_name))
        .unwrap_or_default();
    let ssm = SsmSpec {
        paths: ssm_paths,
        parameters: ssm_parameters,
        region: match &raw.aws_region {
            Some(_) => c.parse("aws-region", &raw.aws_region, g::aws_region),
            None => {
                env.get("AWS_REGION").or_else(|| env.get("AWS_DEFAULT_REGION")).map(|r| r.trim().to_string())
            }
        },
    };
    // One rule for "this run talks to AWS"; the pipeline asks the same
    // question through `Inputs::needs_ssm`.
    let needs_aws = target == TargetKind::Ec2
        || !ssm.is_empty()
        || [&ssh.private_key, &ssh.known_hosts, &registry.password, &notify.slack, &notify.webhook]
            .iter()
            .any(|s| matches!(s, Some(SecretSource::Ssm(_))));
    if needs_aws
        && raw.aws_region.is_none()
        && let Some(Err(e)) = ssm.region.as_deref().map(g::aws_region)
    {
        c.problem("aws-region", format!("not set, and AWS_REGION from the environment: {e}"));
    }
    if needs_aws && ssm.region.is_none() {
        c.problem("aws-region", "is required for EC2 and SSM (or set AWS_REGION, e.g. with aws-actions/configure-aws-credentials)");
    }

    (registry, ssm)
}

/// `slack-webhook-url` and `notify-url`, inline or by SSM name. An inline
/// URL is checked here; one read from SSM right after the fetch
/// ([`webhook_url_problem`]). The problem never quotes the value.
fn notifications(c: &mut Check, raw: &RawInputs) -> NotifySpec {
    let mut source = |inline_name: &str, inline: &Option<String>, ssm_name: &str, ssm: &Option<String>| {
        let s = c.secret(inline_name, inline, ssm_name, ssm);
        if let Some(SecretSource::Inline(v)) = &s
            && let Some(problem) = webhook_url_problem(inline_name, v.expose())
        {
            c.problems.push(problem);
            return None;
        }
        s
    };
    NotifySpec {
        slack: source(
            "slack-webhook-url",
            &raw.slack_webhook_url,
            "slack-webhook-url-ssm",
            &raw.slack_webhook_url_ssm,
        ),
        webhook: source("notify-url", &raw.notify_url, "notify-url-ssm", &raw.notify_url_ssm),
    }
}

/// Why `value` is not a webhook URL `input` can take, without quoting it
/// (it is a secret): `None` for an http(s) URL with a host.
pub fn webhook_url_problem(input: &str, value: &str) -> Option<Problem> {
    g::http_url(value.trim()).err().map(|e| Problem {
        input: input.into(),
        message: format!("{e} (the value is a secret and is not shown)"),
    })
}

fn github(c: &mut Check, raw: &RawInputs, ctx: &RawContext, b: &Basics) -> (GithubSpec, Context) {
    let (mode, image, target) = (b.mode, &b.image, b.target);
    let repository = ctx.github_repository.clone().unwrap_or_default();
    let (owner, repo) = match repository.split_once('/') {
        Some((o, r)) if !o.is_empty() && !r.is_empty() && !r.contains('/') => (o.to_string(), r.to_string()),
        _ => {
            c.problem(
                "GITHUB_REPOSITORY",
                "must be owner/repo (the runner sets it; set it yourself outside Actions)",
            );
            (String::new(), String::new())
        }
    };
    let sha = ctx.github_sha.clone().unwrap_or_default();
    if !regex::Regex::new("^[0-9a-f]{40}$").expect("regex").is_match(&sha) {
        c.problem("GITHUB_SHA", "must be a 40-character commit SHA (the runner sets it)");
    }
    let github_enabled = c.or("github-deployments", &raw.github_deployments, true, g::boolean);
    let git_ref = raw.git_ref.clone().unwrap_or_else(|| sha.clone());
    if git_ref.starts_with('-')
        || git_ref.contains("..")
        || git_ref.chars().any(|ch| ch.is_whitespace() || ch.is_control())
    {
        c.problem("ref", "must be a branch, tag or commit SHA");
    }
    let token = raw.github_token.clone().map(SecretValue::new);
    if github_enabled && token.is_none() && mode != Mode::Plan {
        c.problem("github-token", "is required to record the deployment (it defaults to ${{ github.token }}; or set github-deployments: false)");
    }
    // Kubernetes rolls back to the previous ReplicaSet (as `kubectl rollout
    // undo`): it needs no image from GitHub.
    if mode == Mode::Rollback && image.is_none() && !github_enabled && target != TargetKind::Kubernetes {
        c.problem("image", "mode 'rollback' without an image reads the last good image from GitHub Deployments; enable github-deployments or name the image");
    }
    let github = GithubSpec {
        enabled: github_enabled,
        token,
        deployment_id: c.parse("deployment-id", &raw.deployment_id, |s| {
            s.parse::<u64>().map_err(|_| "must be a deployment id (a number)".to_string())
        }),
        git_ref,
        required_contexts: c.parse("required-contexts", &raw.required_contexts, g::strict_list),
        production_environment: c.parse("production-environment", &raw.production_environment, g::boolean),
        transient_environment: c.or("transient-environment", &raw.transient_environment, false, g::boolean),
        deactivate_previous: c.or("deactivate-previous", &raw.deactivate_previous, true, g::boolean),
        lock_timeout: c.or("lock-timeout", &raw.lock_timeout, Duration::from_secs(600), g::duration),
        fail_on_status_error: c.or("fail-on-status-error", &raw.fail_on_status_error, false, g::boolean),
    };
    let server_url = ctx.github_server_url.clone().unwrap_or_else(|| "https://github.com".into());
    let api_url = ctx.github_api_url.clone().unwrap_or_else(|| "https://api.github.com".into());
    for (name, v) in [("GITHUB_SERVER_URL", &server_url), ("GITHUB_API_URL", &api_url)] {
        if g::http_url(v).is_err() {
            c.problem(name, "must be an http(s) URL");
        }
    }
    let context = Context {
        owner,
        repo,
        sha,
        git_ref: ctx.github_ref.clone(),
        run_id: ctx.github_run_id.clone().unwrap_or_else(|| "0".into()),
        run_attempt: ctx.github_run_attempt.clone().unwrap_or_else(|| "1".into()),
        server_url,
        api_url,
        event_name: ctx.github_event_name.clone(),
        actor: ctx.github_actor.clone(),
        workspace: ctx.github_workspace.clone().unwrap_or_else(|| ".".into()).into(),
    };

    (github, context)
}
