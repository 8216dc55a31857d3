//! `mode: deploy` and `mode: rollback`: record → secrets → units → fleet →
//! final status, outputs and summary.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::fleet::{self, FleetConfig, UnitOutcome};
use super::{Outcome, Status, Timeline, facts, unit_kind};
use crate::analysis::Analysis;
use crate::error::Error;
use crate::github::{DeployPayload, Deployments, FinalState, RunState, Task};
use crate::inputs::{HostSpec, Inputs, Mode, SecretSource, TargetKind};
use crate::notify::{Event, Moment, Notifier};
use crate::runner::Runner;
use crate::runner::summary::Report;
use crate::secrets::{SecretSet, SecretValue, Ssm};
use crate::strategy;
use crate::targets::hosts::{HostConn, HostTarget};
use crate::targets::{Release, StaleLock, Target, TargetError, ec2};

/// The units' names for the plan (hosts; instances found through EC2).
pub(super) async fn unit_names(inputs: &Inputs, runner: &Runner) -> Result<Vec<String>, Error> {
    if let Some(k) = &inputs.kubernetes {
        return Ok(crate::targets::kubernetes::unit_names(k));
    }
    Ok(host_specs(inputs, runner).await?.iter().map(host_label).collect())
}

fn host_label(h: &HostSpec) -> String {
    match h.port {
        Some(p) if p != 22 => format!("{}:{p}", h.host),
        _ => h.host.clone(),
    }
}

async fn host_specs(inputs: &Inputs, runner: &Runner) -> Result<Vec<HostSpec>, Error> {
    match inputs.target {
        TargetKind::Hosts => Ok(inputs.hosts.clone()),
        TargetKind::Ec2 => {
            let spec = inputs.ec2.as_ref().ok_or_else(|| Error::Other("ec2 settings missing".into()))?;
            let region = inputs.ssm.region.clone().unwrap_or_default();
            let _g = runner.group("Find EC2 instances");
            let hosts = ec2::discover(spec, &region, &inputs.ssh.user, inputs.ssh.port).await?;
            runner.line(&format!(
                "found {} running instance(s): {}",
                hosts.len(),
                hosts.iter().map(host_label).collect::<Vec<_>>().join(", ")
            ));
            Ok(hosts)
        }
        TargetKind::Kubernetes => Err(Error::Other("a cluster has no hosts".into())),
    }
}

/// The hosts to deploy to, each with its way in when it is not TCP to
/// its address (`ec2-connect: instance-connect-endpoint`).
async fn reach(
    inputs: &Inputs,
    runner: &Runner,
) -> Result<Vec<(HostSpec, Option<Arc<dyn crate::targets::hosts::ssh::Via>>)>, Error> {
    let endpoint = inputs.ec2.as_ref().and_then(|spec| match &spec.connect {
        crate::inputs::Ec2Connect::Endpoint { id } => Some((spec, id.as_deref())),
        crate::inputs::Ec2Connect::Ssh => None,
    });
    let Some((spec, named)) = endpoint else {
        return Ok(host_specs(inputs, runner).await?.into_iter().map(|h| (h, None)).collect());
    };
    let region = inputs.ssm.region.clone().unwrap_or_default();
    let _g = runner.group("Find EC2 instances and their Instance Connect Endpoints");
    let found = crate::targets::instance_connect::discover(
        spec,
        &region,
        &inputs.ssh.user,
        inputs.ssh.port,
        named,
        inputs.ssh.timeout,
    )
    .await?;
    runner.line(&format!(
        "found {} running instance(s): {}",
        found.len(),
        found.iter().map(|(h, t)| format!("{} ({t:?})", host_label(h))).collect::<Vec<_>>().join(", ")
    ));
    Ok(found.into_iter().map(|(h, t)| (h, Some(t as Arc<dyn crate::targets::hosts::ssh::Via>))).collect())
}

/// What happened, for the final record.
struct Run {
    status: Status,
    error: Option<Error>,
    stage: &'static str,
    image: Option<String>,
    previous_image: Option<String>,
    units: Vec<(String, String, Duration)>,
    /// Every unit was kept on or put back to the previous version.
    rolled_back: bool,
}

/// `cancel` stops the work (a signal or the run's deadline); `signal` is
/// the runner's signal alone, to tell the two apart in notifications.
pub(super) async fn run(
    inputs: &Inputs,
    runner: &Runner,
    cancel: &CancellationToken,
    signal: &CancellationToken,
) -> Outcome {
    let mut timeline = Timeline::default();
    let github = match inputs.github.enabled {
        true => match Deployments::new(
            &inputs.github,
            &inputs.context,
            &inputs.environment,
            inputs.environment_url.as_ref(),
            runner.clone(),
        ) {
            Ok(g) => Some(g),
            Err(e) => return finish_early(inputs, runner, Error::from(e), "record"),
        },
        false => None,
    };

    // Secrets: masked on arrival, never written anywhere but the app's env.
    let t_secrets = Instant::now();
    let Material { secrets, key, known_hosts, registry_password, slack_url, notify_url } =
        match resolve_secrets(inputs, runner, cancel).await {
            Ok(m) => m,
            Err((e, stage)) => return finish_early(inputs, runner, e, stage),
        };
    timeline.push("secrets", t_secrets, true, format!("{} value(s)", secrets.len()));
    // From here on every end of the run is notified.
    let notifier = Notifier::new(inputs, runner, slack_url, notify_url);
    let early = |e: Error, stage: &'static str| {
        let run = early_run(inputs, e, stage);
        let notifier = &notifier;
        async move {
            notifier.finish(final_moment(inputs, &run, None, signal), cancel).await;
            report(inputs, runner, run, Timeline::default(), None, &[])
        }
    };

    // The analysis sources, read once before anything changes.
    let t_analysis = Instant::now();
    let analysis = match start_analysis(inputs, runner, cancel).await {
        Ok(a) => a,
        Err(e) => return early(e, "analysis").await,
    };
    if analysis.is_some() {
        timeline.push("analysis", t_analysis, true, "read before the deploy");
    }

    // Which image, and what was live before (GitHub is read only once
    // every input, SSM values included, has been checked).
    let t0 = Instant::now();
    let (image, image_ref, previous_image) = match which_image(inputs, runner, github.as_ref()).await {
        Ok(v) => v,
        Err((e, stage)) => return early(e, stage).await,
    };
    let digest = (!secrets.is_empty()).then(|| secrets.fingerprint());
    let secret_names = secrets.names();
    let secret_env = secrets.into_env();
    // Smoke tests' headers take their secrets now: a missing one stops the
    // deploy before the record.
    let smoke = match crate::smoke::Suite::new(&inputs.smoke_tests, &secret_env) {
        Ok(s) => s.map(Arc::new),
        Err(e) => return finish_early(inputs, runner, e, "validate"),
    };

    // The record: lock across runs, create, in_progress.
    let record = match &github {
        Some(g) => {
            let payload = DeployPayload {
                image: image.clone(),
                previous_image: previous_image.clone(),
                strategy: inputs.strategy.as_str().into(),
                target: inputs.target.as_str().into(),
                run_url: inputs.context.run_url(),
                secrets_fingerprint: digest.clone(),
            };
            let task = if inputs.mode == Mode::Rollback { Task::Rollback } else { Task::Deploy };
            let _g = runner.group("GitHub deployment");
            match g.begin(&payload, task, cancel).await {
                Ok(r) => {
                    runner.set_output("deployment-id", &r.id.to_string());
                    runner.set_output("deployment-url", &r.url);
                    Some(r)
                }
                Err(e) => return early(e.into(), "record").await,
            }
        }
        None => None,
    };
    timeline.push("record", t0, true, "");
    let deployment_id = record.as_ref().map(|r| r.id);
    notifier.start(Moment {
        event: Event::Start,
        outcome: "in_progress",
        reason: None,
        image: image.clone(),
        previous_image: previous_image.clone(),
        deployment_id,
        message: start_message(inputs, &image),
    });

    let services = inputs
        .services
        .iter()
        .cloned()
        .map(|mut s| {
            // `mode: rollback` without an image: the last good one.
            if s.image.full() == crate::inputs::ROLLBACK_PENDING
                && let Some(i) = &image_ref
            {
                s.image = i.clone();
            }
            s
        })
        .collect();
    let release = Arc::new(Release {
        app: inputs.app.clone(),
        deploy_id: format!("{}-{}", inputs.context.run_id, inputs.context.run_attempt),
        run_url: inputs.context.run_url(),
        services,
        secret_env,
        secrets_fingerprint: digest.clone(),
        migrate_command: inputs.migrate_command.clone(),
        pre_migrate_command: inputs.pre_migrate_command.clone(),
        migrate_rollback_command: inputs.migrate_rollback_command.clone(),
    });

    let material = HostMaterial { key, known_hosts, registry_password };
    let judges = Judges { smoke, analysis };
    let run =
        deploy_units(inputs, runner, cancel, &release, material, judges, github.as_ref(), &mut timeline)
            .await;
    // What was live: GitHub's record, else what the first host ran.
    let previous_image = previous_image.or(run.previous_image.clone());
    let image = run.image.clone().unwrap_or(image);
    let run = Run { image: Some(image.clone()), previous_image: previous_image.clone(), ..run };
    // The final status and the final notification side by side: after a
    // cancellation each has one short try, and together they stay within
    // the runner's grace.
    let moment = final_moment(inputs, &run, deployment_id, signal);
    let (run, ()) = tokio::join!(
        post_final_status(inputs, runner, cancel, github.as_ref(), record.as_ref(), run, &image),
        notifier.finish(moment, cancel)
    );
    report(inputs, runner, run, timeline, digest, &secret_names)
}

/// What judges the deploy besides the health checks: the smoke tests and
/// the analysis sources.
struct Judges {
    smoke: Option<Arc<crate::smoke::Suite>>,
    analysis: Option<Arc<Analysis>>,
}

/// The analysis of a `mode: deploy` (`rollback-alarms`, `analysis-query`),
/// read once: an alarm that does not exist, a query the server refuses, a
/// source that cannot be read or a breach already there stops the run
/// before the record, with nothing changed. A rollback goes without: it is
/// what a team runs while its alarms fire.
///
/// # Errors
/// What stopped it.
async fn start_analysis(
    inputs: &Inputs,
    runner: &Runner,
    cancel: &CancellationToken,
) -> Result<Option<Arc<Analysis>>, Error> {
    let Some(spec) = &inputs.analysis else { return Ok(None) };
    if inputs.mode != Mode::Deploy {
        runner.line(&format!(
            "analysis: not read in mode {} (rollback-alarms and analysis-query judge deploys)",
            format!("{:?}", inputs.mode).to_lowercase()
        ));
        return Ok(None);
    }
    let _g = runner.group("Analysis: read before the deploy");
    let analysis = Analysis::from_spec(spec, runner).await?;
    runner.line(&format!(
        "{}: read now, then every {}s during the observe window",
        analysis.describe(),
        analysis.interval().as_secs()
    ));
    analysis.preflight(cancel).await?;
    Ok(Some(analysis))
}

/// What the deploy needs from SSM: the app's secrets, and the SSH key,
/// known_hosts, registry password and webhook URLs (inline or by
/// parameter name).
struct Material {
    secrets: SecretSet,
    key: Option<SecretValue>,
    known_hosts: Option<SecretValue>,
    registry_password: Option<SecretValue>,
    slack_url: Option<SecretValue>,
    notify_url: Option<SecretValue>,
}

/// Fetches (and masks) everything secret, then checks SSH material read
/// from SSM like an input: a bad value leaves no trace on GitHub or a host.
///
/// # Errors
/// The failure and the stage to report it under.
async fn resolve_secrets(
    inputs: &Inputs,
    runner: &Runner,
    cancel: &CancellationToken,
) -> Result<Material, (Error, &'static str)> {
    let ssm = match (inputs.needs_ssm(), inputs.ssm.region.as_deref()) {
        (false, _) => None,
        (true, Some(region)) => tokio::select! {
            ssm = Ssm::new(region) => Some(Arc::new(ssm)),
            _ = cancel.cancelled() => return Err((Error::Cancelled, "secrets")),
        },
        (true, None) => {
            return Err((crate::secrets::SecretsError::RegionMissing.into(), "secrets"));
        }
    };
    let secrets = match &ssm {
        Some(ssm) if !inputs.ssm.is_empty() => {
            let _g = runner.group("Secrets from SSM Parameter Store");
            match ssm.fetch(&inputs.ssm, runner, cancel).await {
                Ok(s) => {
                    runner.line(&format!("{} secret(s) for the app: {}", s.len(), s.names().join(", ")));
                    s
                }
                Err(e) => return Err((e.into(), "secrets")),
            }
        }
        _ => SecretSet::default(),
    };
    let resolve = |src: &Option<SecretSource>, input: &'static str| {
        let src = src.clone();
        let ssm = ssm.clone();
        let runner = runner.clone();
        async move {
            match src {
                None => Ok(None),
                Some(SecretSource::Inline(v)) => Ok(Some(v)),
                Some(SecretSource::Ssm(name)) => match ssm {
                    Some(ssm) => {
                        ssm.get(&name, &runner).await.map(Some).map_err(|e| e.for_input(input).into())
                    }
                    None => Err(Error::Other("SSM is not configured".into())),
                },
            }
        }
    };
    let (key, known_hosts, registry_password, slack_url, notify_url) = match tokio::try_join!(
        resolve(&inputs.ssh.private_key, "ssh-private-key-ssm"),
        resolve(&inputs.ssh.known_hosts, "ssh-known-hosts-ssm"),
        resolve(&inputs.registry.password, "registry-password-ssm"),
        resolve(&inputs.notify.slack, "slack-webhook-url-ssm"),
        resolve(&inputs.notify.webhook, "notify-url-ssm")
    ) {
        Ok(v) => v,
        Err(e) => return Err((e, "secrets")),
    };
    // Material read from SSM is checked like an input, before the record:
    // a bad value leaves no trace on GitHub or on a host.
    let from_ssm = |src: &Option<SecretSource>, v: &Option<SecretValue>, input: &'static str| match src {
        Some(SecretSource::Ssm(_)) => v.clone().map(|v| (input, v)),
        _ => None,
    };
    let key_ssm = from_ssm(&inputs.ssh.private_key, &key, "ssh-private-key-ssm");
    let known_ssm = from_ssm(&inputs.ssh.known_hosts, &known_hosts, "ssh-known-hosts-ssm");
    let mut problems = crate::targets::hosts::material::problems(
        key_ssm.as_ref().map(|(i, v)| (*i, v)),
        known_ssm.as_ref().map(|(i, v)| (*i, v)),
    );
    for (i, v) in [
        from_ssm(&inputs.notify.slack, &slack_url, "slack-webhook-url-ssm"),
        from_ssm(&inputs.notify.webhook, &notify_url, "notify-url-ssm"),
    ]
    .into_iter()
    .flatten()
    {
        problems.extend(crate::inputs::webhook_url_problem(i, v.expose()));
    }
    if !problems.is_empty() {
        return Err((Error::Inputs(problems), "validate"));
    }
    Ok(Material { secrets, key, known_hosts, registry_password, slack_url, notify_url })
}

/// The image to deploy (for `mode: rollback` without one, the last good
/// one), parsed, and the image GitHub records as live.
///
/// # Errors
/// The failure and the stage to report it under.
async fn which_image(
    inputs: &Inputs,
    runner: &Runner,
    github: Option<&Deployments>,
) -> Result<(String, Option<crate::inputs::ImageRef>, Option<String>), (Error, &'static str)> {
    let previous_image = match github {
        Some(g) => g.live_image().await.unwrap_or_else(|e| {
            runner.warning(e.reason(), &format!("could not read the live deployment: {e}"));
            None
        }),
        None => None,
    };
    let image = match (&inputs.image, inputs.mode, github) {
        (Some(i), _, _) => i.full(),
        // A cluster rolls back to its previous ReplicaSet (`kubectl rollout
        // undo`): no image is needed; the restored one is reported after.
        (None, Mode::Rollback | Mode::Promote | Mode::Abort, _)
            if inputs.target == TargetKind::Kubernetes =>
        {
            String::new()
        }
        (None, Mode::Rollback, Some(g)) => match g.last_good_image().await {
            Ok(Some(i)) => {
                runner.line(&format!("rollback: redeploying the last good image {i}"));
                i
            }
            Ok(None) => {
                return Err((Error::NothingToRollBack { environment: inputs.environment.clone() }, "record"));
            }
            Err(e) => return Err((e.into(), "record")),
        },
        _ => return Err((Error::Other("no image to deploy".into()), "validate")),
    };
    let image_ref = match crate::inputs::grammar::image(&image) {
        _ if image.is_empty() => None,
        Ok(i) => Some(i),
        Err(e) => {
            return Err((Error::Other(format!("image {image} from the last good deployment {e}")), "record"));
        }
    };

    Ok((image, image_ref, previous_image))
}

/// Posts the final status: best effort, never changes what the deploy did
/// (unless `fail-on-status-error` asks a successful run to fail for it).
async fn post_final_status(
    inputs: &Inputs,
    runner: &Runner,
    cancel: &CancellationToken,
    github: Option<&Deployments>,
    record: Option<&crate::github::DeploymentRecord>,
    run: Run,
    image: &str,
) -> Run {
    let (Some(g), Some(r)) = (github, record) else { return run };
    let state = match run.status {
        Status::Success => FinalState::Success,
        Status::Failure => FinalState::Failure,
        _ => FinalState::Error,
    };
    let description = match &run.error {
        None => format!("deployed {image}"),
        Some(e) => format!("{}: {} — {e}", run.stage, e.reason()),
    };
    // After a cancellation the runner will not wait: one short try.
    let budget = if cancel.is_cancelled() { Duration::from_millis(1500) } else { Duration::from_secs(90) };
    let g = g.with_retry_budget(budget);
    let posted =
        match tokio::time::timeout(budget + Duration::from_millis(200), g.finish(r, state, &description))
            .await
        {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {}s", budget.as_secs_f32())),
        };
    if let Err(e) = posted {
        runner.warning("github_status_failed", &format!("could not post the final deployment status: {e}"));
        if inputs.github.fail_on_status_error && run.error.is_none() {
            return Run {
                status: Status::Error,
                error: Some(Error::Other(format!("final deployment status not recorded: {e}"))),
                ..run
            };
        }
    }
    run
}

/// What reaching the hosts takes (from the inputs or SSM).
struct HostMaterial {
    key: Option<SecretValue>,
    known_hosts: Option<SecretValue>,
    registry_password: Option<SecretValue>,
}

#[allow(clippy::too_many_arguments)]
async fn deploy_units(
    inputs: &Inputs,
    runner: &Runner,
    cancel: &CancellationToken,
    release: &Arc<Release>,
    material: HostMaterial,
    judges: Judges,
    github: Option<&Deployments>,
    timeline: &mut Timeline,
) -> Run {
    let HostMaterial { key, known_hosts, registry_password } = material;
    let fail = |status, error: Error, stage| Run {
        status,
        error: Some(error),
        stage,
        image: None,
        previous_image: None,
        units: vec![],
        rolled_back: false,
    };
    if let Some(k) = &inputs.kubernetes {
        return cluster_units(inputs, k, release, &judges, runner, cancel, timeline).await;
    }
    let t = Instant::now();
    let reached = tokio::select! {
        r = reach(inputs, runner) => r,
        _ = cancel.cancelled() => return fail(Status::Error, Error::Cancelled, "discover"),
    };
    let specs = match reached {
        Ok(s) => s,
        Err(e) => return fail(Status::Failure, e, "discover"),
    };
    // `ec2-host-keys: console-output`: each instance's keys, as AWS has
    // them, pinned beside any stored lines (a bastion's).
    let known_hosts = match inputs.ec2.as_ref().filter(|e| e.console_host_keys) {
        None => known_hosts,
        Some(spec) => {
            let hosts: Vec<HostSpec> = specs.iter().map(|(h, _)| h.clone()).collect();
            let read = async {
                let _g = runner.group("Read the instances' host keys from their console output");
                let config = ec2::sdk_config(inputs.ssm.region.as_deref().unwrap_or_default()).await;
                let lines = ec2::console_host_keys(&config, spec, &hosts, inputs.ssh.timeout).await?;
                runner.line(&format!(
                    "pinned {} host key(s) of {} instance(s), from GetConsoleOutput",
                    lines.lines().count(),
                    hosts.len()
                ));
                Ok::<_, crate::targets::hosts::HostError>(lines)
            };
            let lines = tokio::select! {
                r = read => r,
                _ = cancel.cancelled() => return fail(Status::Error, Error::Cancelled, "discover"),
            };
            match lines {
                Ok(l) => {
                    let stored = known_hosts.as_ref().map(|k| k.expose().to_string()).unwrap_or_default();
                    Some(SecretValue::new(format!("{stored}\n{l}")))
                }
                Err(e) => return fail(Status::Failure, e.into(), "discover"),
            }
        }
    };
    // Through Instance Connect the run's own key logs in (no stored one).
    let key =
        key.or_else(|| specs.iter().any(|(_, via)| via.is_some()).then(|| SecretValue::new(String::new())));
    let (Some(key), Some(known_hosts)) = (key, known_hosts) else {
        return fail(
            Status::Failure,
            Error::Other("ssh-private-key and ssh-known-hosts are required".into()),
            "connect",
        );
    };
    let registry = inputs.registry.username.clone().zip(registry_password);
    let units: Vec<Arc<dyn Target>> = {
        let _g = runner.group(&format!("Connect to {} host(s)", specs.len()));
        let connects = specs.iter().map(|(h, via)| {
            let mut conn =
                HostConn::from_inputs(inputs, h, key.clone(), known_hosts.clone(), registry.clone());
            conn.via = via.clone();
            let runner = runner.clone();
            async move { HostTarget::connect(conn, runner).await }
        });
        let results = tokio::select! {
            r = futures::future::join_all(connects) => r,
            _ = cancel.cancelled() => return fail(Status::Error, Error::Cancelled, "connect"),
        };
        let mut units: Vec<Arc<dyn Target>> = Vec::new();
        let mut first_err = None;
        for r in results {
            match r {
                Ok(u) => units.push(Arc::new(u)),
                Err(e) => {
                    runner.error(e.reason(), &e.to_string());
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            close_all(&units).await;
            return fail(Status::Failure, e.into(), "connect");
        }
        units
    };
    timeline.push("connect", t, true, format!("{} host(s)", units.len()));

    // Every host's lock first: whether there is anything to do is decided
    // while no other deploy can be switching (a run reading "already live"
    // before another run's switch would record a version that is not live).
    let t = Instant::now();
    let locks = tokio::select! {
        r = lock_all(&units, release, github, runner, cancel) => r,
        _ = cancel.cancelled() => {
            close_all(&units).await;
            return fail(Status::Error, Error::Cancelled, "lock");
        }
    };
    if let Some(e) = locks.into_iter().find_map(Result::err) {
        close_all(&units).await;
        return fail(Status::Failure, e, "lock");
    }
    timeline.push("lock", t, true, format!("{} host(s)", units.len()));

    // Re-runs: the same image and secrets already live everywhere → nothing to do.
    let mut all_live = inputs.mode != Mode::Rollback;
    let mut previous_image = None;
    for u in &units {
        match u.inspect().await {
            Ok(live) => {
                if previous_image.is_none() {
                    previous_image = live.image.clone();
                }
                runner.line(&format!(
                    "{}: live {} ({})",
                    u.name(),
                    live.image.as_deref().unwrap_or("nothing"),
                    live.colour.as_deref().unwrap_or("no colour")
                ));
                let same_image =
                    release.services.iter().all(|s| live.image.as_deref() == Some(s.image.full().as_str()));
                // The same image with another command, env or port is a
                // change too (a config-only deploy).
                let same_config = live.config.as_deref() == Some(release.config().as_str());
                if same_image && !same_config {
                    runner.line(&format!(
                        "{}: the live containers run {} with another command, environment or ports (or from before this was recorded); deploying",
                        u.name(),
                        live.image.as_deref().unwrap_or("?")
                    ));
                }
                all_live &=
                    same_image && same_config && live.secrets_fingerprint == release.secrets_fingerprint;
                if !live.leftovers.is_empty() {
                    // A re-run converges the host: the deploy replaces the leftover.
                    runner.line(&format!(
                        "{}: {} of {} also runs, left by an interrupted deploy; deploying to replace it",
                        u.name(),
                        live.leftovers.join(", "),
                        inputs.app
                    ));
                    all_live = false;
                }
            }
            Err(e) => {
                runner.warning(e.reason(), &format!("could not read what runs on {}: {e}", u.name()));
                all_live = false;
            }
        }
    }
    if all_live {
        runner.line("the same image and secrets are already live on every host: nothing to do");
        close_all(&units).await;
        // Nothing changed: what was live before is what is live now.
        return Run {
            status: Status::Success,
            error: None,
            stage: "done",
            image: None,
            previous_image,
            units: units
                .iter()
                .map(|u| (u.name().to_string(), "already live".to_string(), Duration::ZERO))
                .collect(),
            rolled_back: false,
        };
    }

    let phases =
        strategy::phases(inputs.strategy, &inputs.rollout, units.len(), inputs.migrate_command.is_some());
    let cfg = Arc::new(FleetConfig {
        health: inputs.health.clone(),
        rollout: inputs.rollout.clone(),
        traffic: inputs.traffic.as_ref().map(|t| t.limits),
        smoke: judges.smoke,
        analysis: judges.analysis,
    });
    let report = fleet::run(&units, &phases, release.clone(), cfg, runner, cancel).await;
    close_all(&units).await;
    timeline.0.extend(report.timeline);
    let cancelled = matches!(report.error, Some(Error::Cancelled));
    // keep-going: the hosts that failed are each back on their previous
    // version when none is in an unknown state.
    let kept_going_back = inputs.rollout.on_host_failure == crate::inputs::OnHostFailure::KeepGoing
        && report.units.iter().all(|(_, o, _)| *o != UnitOutcome::Failed);
    let status = super::Ended {
        failed: report.error.is_some() && !cancelled,
        cancelled,
        committed: report.committed,
        nothing_left: report.rolled_back || kept_going_back,
    }
    .status();
    let stage = report.failed_stage.unwrap_or("done");
    let error = if report.committed { None } else { report.error };
    Run {
        status,
        error,
        stage,
        image: None,
        previous_image,
        units: report.units.into_iter().map(|(n, o, d)| (n, o.as_str().to_string(), d)).collect(),
        rolled_back: report.rolled_back,
    }
}

/// Every unit's lock. A lock held by another run is taken over when GitHub
/// reports that run as ended (it died holding it: the runner lost, the job
/// killed); while it runs, or when GitHub cannot say, the lock stands.
async fn lock_all(
    units: &[Arc<dyn Target>],
    release: &Release,
    github: Option<&Deployments>,
    runner: &Runner,
    cancel: &CancellationToken,
) -> Vec<Result<(), Error>> {
    let mut results: Vec<Result<(), Error>> =
        futures::future::join_all(units.iter().map(|u| u.lock(release)))
            .await
            .into_iter()
            .map(|r| r.map_err(Error::from))
            .collect();
    let Some(github) = github else { return results };
    let mut verdicts: HashMap<String, RunState> = HashMap::new();
    for (u, result) in units.iter().zip(results.iter_mut()) {
        let Err(Error::Target(e)) = &*result else { continue };
        let TargetError::Locked { holder: Some(holder), .. } = &**e else { continue };
        let holder = holder.clone();
        if !verdicts.contains_key(&holder.run_url) {
            let state = github.run_state(&holder.run_url, cancel).await;
            match &state {
                _ if cancel.is_cancelled() => {}
                RunState::Unknown(why) | RunState::Hidden(why) => {
                    runner.line(&format!("whether {} has ended could not be read: {why}", holder.run_url))
                }
                RunState::Active => runner
                    .line(&format!("GitHub reports {} still running: wait for it to finish", holder.run_url)),
                RunState::Completed { .. } => {}
            }
            verdicts.insert(holder.run_url.clone(), state);
        }
        if let Some(RunState::Completed { conclusion }) = verdicts.get(&holder.run_url) {
            let stale = StaleLock { holder, conclusion: conclusion.clone() };
            *result = u.take_over_lock(release, &stale).await.map_err(Error::from);
        }
    }
    results
}

/// `target: kubernetes`: the cluster does the rolling; its result mapped to
/// the run's (the same statuses as hosts: failure when rolled back, error
/// when the state is unknown or the run was cancelled).
async fn cluster_units(
    inputs: &Inputs,
    spec: &crate::inputs::KubernetesSpec,
    release: &Release,
    judges: &Judges,
    runner: &Runner,
    cancel: &CancellationToken,
    timeline: &mut Timeline,
) -> Run {
    use crate::targets::kubernetes;
    let t = Instant::now();
    let image = inputs.image.as_ref().map(|i| i.full());
    let work = image.as_deref().map(|image| kubernetes::Deploy {
        image,
        app: &release.app,
        deploy_id: &release.deploy_id,
        secret: kubernetes::secret::AppSecret::new(
            &release.app,
            release.secrets_fingerprint.as_deref(),
            &release.secret_env,
        ),
        migrate_command: release.migrate_command.as_deref(),
        pre_migrate_command: release.pre_migrate_command.as_deref(),
        migrate_rollback_command: release.migrate_rollback_command.as_deref(),
        migration_timeout: inputs.rollout.migration_timeout,
        smoke: judges.smoke.as_deref().map(|s| s as &dyn crate::targets::kubernetes::UrlChecks),
        analysis: judges.analysis.as_deref(),
    });
    let k =
        kubernetes::run(spec, inputs.mode, super::kube_strategy(inputs), work.as_ref(), runner, cancel).await;
    // Someone else's template runs now, as they set it: this deploy failed,
    // and there is nothing of it left to undo.
    let theirs = matches!(
        k.error,
        Some(
            kubernetes::KubeError::Paused { .. }
                | kubernetes::KubeError::NoHistory { .. }
                | kubernetes::KubeError::TakenOver { .. }
        )
    );
    let status = super::Ended {
        failed: k.error.is_some(),
        cancelled: k.cancelled,
        // A cluster's deploy is done when its run returns without error.
        committed: false,
        nothing_left: k.rolled_back || theirs || k.units.iter().all(|(_, o, _)| o == "unchanged"),
    }
    .status();
    timeline.push(k.stage, t, status == Status::Success, format!("{} deployment(s)", spec.deployments.len()));
    let error = match (k.error, k.cancelled) {
        (Some(e), _) => Some(Error::from(e)),
        (None, true) => Some(Error::Cancelled),
        (None, false) => None,
    };
    Run {
        status,
        error,
        stage: k.stage,
        image: k.restored_image,
        previous_image: k.previous_image,
        units: k.units,
        rolled_back: k.rolled_back,
    }
}

async fn close_all(units: &[Arc<dyn Target>]) {
    futures::future::join_all(units.iter().map(|u| u.close())).await;
}

/// A run that ended before any unit was touched.
fn early_run(inputs: &Inputs, error: Error, stage: &'static str) -> Run {
    let status = if matches!(error, Error::Cancelled) { Status::Error } else { Status::Failure };
    Run {
        status,
        error: Some(error),
        stage,
        image: inputs.image.as_ref().map(|i| i.full()),
        previous_image: None,
        units: vec![],
        rolled_back: false,
    }
}

/// The end of a run that failed before the webhooks were known.
fn finish_early(inputs: &Inputs, runner: &Runner, error: Error, stage: &'static str) -> Outcome {
    report(inputs, runner, early_run(inputs, error, stage), Timeline::default(), None, &[])
}

/// What the start notification says is about to happen.
fn start_message(inputs: &Inputs, image: &str) -> String {
    match inputs.mode {
        Mode::Rollback if image.is_empty() => "rolling back to the previous revision".into(),
        Mode::Rollback => format!("rolling back to {image}"),
        Mode::Promote => "promoting the standing canary".into(),
        Mode::Abort => "aborting the standing canary".into(),
        _ => format!("deploying {image} ({} on {})", inputs.strategy.as_str(), inputs.target.as_str()),
    }
}

/// The final notification of `run`: success; rollback when every unit was
/// kept on or put back to the previous version; else failure. The run's
/// own deadline cancels like a signal does, and is named as such here as
/// `pipeline::run` names it in the annotation.
fn final_moment(
    inputs: &Inputs,
    run: &Run,
    deployment_id: Option<u64>,
    signal: &CancellationToken,
) -> Moment {
    let event = match (run.status, run.rolled_back) {
        (Status::Success, _) => Event::Success,
        (_, true) => Event::Rollback,
        _ => Event::Failure,
    };
    let deadline;
    let error = match &run.error {
        Some(Error::Cancelled) if !signal.is_cancelled() => {
            deadline = Error::Deadline { what: "the deploy".into(), after: inputs.timeout };
            Some(&deadline)
        }
        e => e.as_ref(),
    };
    let image = run.image.clone().unwrap_or_default();
    let message = match (error, event) {
        (None, _) => match inputs.mode {
            Mode::Rollback => format!("rolled back to {image}"),
            Mode::Promote => format!("canary promoted: {image} serves"),
            Mode::Abort => "canary aborted: the stable version serves".into(),
            _ => format!("{image} is live"),
        },
        (Some(e), Event::Rollback) => format!(
            "{} failed: {e} (rolled back: {} serves)",
            run.stage,
            run.previous_image.as_deref().unwrap_or("the previous version")
        ),
        (Some(e), _) => format!("{} failed: {e}", run.stage),
    };
    Moment {
        event,
        outcome: run.status.as_str(),
        reason: error.map(Error::reason),
        image,
        previous_image: run.previous_image.clone(),
        deployment_id,
        message,
    }
}

fn report(
    inputs: &Inputs,
    runner: &Runner,
    run: Run,
    timeline: Timeline,
    digest: Option<String>,
    secret_names: &[String],
) -> Outcome {
    let image = run.image.clone().unwrap_or_default();
    runner.set_output("image", &image);
    runner.set_output("previous-image", run.previous_image.as_deref().unwrap_or(""));
    runner.set_output("environment-url", inputs.environment_url.as_ref().map(|u| u.as_str()).unwrap_or(""));
    runner.set_output("secrets-fingerprint", digest.as_deref().unwrap_or(""));
    runner.set_output("secret-names", &secret_names.join(","));
    runner.set_output("hosts", &run.units.iter().map(|(n, _, _)| n.as_str()).collect::<Vec<_>>().join(","));
    runner.write_report(&Report {
        title: format!("deploy-action: {} → {}", inputs.app, inputs.environment),
        unit_kind: unit_kind(inputs),
        facts: facts(inputs, &image, run.previous_image.as_deref()),
        units: run.units.clone(),
        timeline: timeline.0,
        checks: vec![],
        outcome: run.status.as_str().into(),
        reason: run.error.as_ref().map(|e| e.reason().to_string()),
        message: run.error.as_ref().map(|e| format!("{} failed: {e}", run.stage)),
    });
    Outcome { status: run.status, error: run.error }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Inputs {
        let env = crate::inputs::Env::from_pairs([
            ("INPUT_TARGET", "hosts"),
            ("INPUT_ENVIRONMENT", "production"),
            ("INPUT_IMAGE", "ghcr.io/acme/shop:2"),
            ("INPUT_HOSTS", "root@127.0.0.2"),
            ("INPUT_SSH-PRIVATE-KEY", "key"),
            ("INPUT_SSH-KNOWN-HOSTS", "known"),
            ("INPUT_GITHUB-DEPLOYMENTS", "false"),
            ("INPUT_TIMEOUT", "5m"),
            ("GITHUB_REPOSITORY", "acme/shop"),
            ("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567"),
        ]);
        crate::inputs::load(&env).expect("valid inputs")
    }

    fn run(status: Status, error: Option<Error>, rolled_back: bool) -> Run {
        Run {
            status,
            error,
            stage: "verify",
            image: Some("ghcr.io/acme/shop:2".into()),
            previous_image: Some("ghcr.io/acme/shop:1".into()),
            units: vec![],
            rolled_back,
        }
    }

    #[test]
    fn the_final_event_follows_the_status_and_the_rollback() {
        let (i, signal) = (inputs(), CancellationToken::new());
        let unhealthy = || Some(Error::Unhealthy { unit: "h1".into(), message: "HTTP 500".into() });
        let cases = [
            (run(Status::Success, None, false), Event::Success, "success", None),
            (
                run(Status::Failure, unhealthy(), true),
                Event::Rollback,
                "failure",
                Some("health_check_failed"),
            ),
            (
                run(Status::Failure, unhealthy(), false),
                Event::Failure,
                "failure",
                Some("health_check_failed"),
            ),
            (
                run(Status::Error, Some(Error::Other("lost".into())), false),
                Event::Failure,
                "error",
                Some("internal_error"),
            ),
        ];
        for (r, event, outcome, reason) in cases {
            let m = final_moment(&i, &r, Some(7), &signal);
            assert_eq!((m.event, m.outcome, m.reason), (event, outcome, reason), "{:?}", r.error);
            assert_eq!(m.deployment_id, Some(7));
            assert_eq!(m.previous_image.as_deref(), Some("ghcr.io/acme/shop:1"));
        }
        let m = final_moment(&i, &run(Status::Failure, unhealthy(), true), None, &signal);
        assert_eq!(m.message, "verify failed: h1: HTTP 500 (rolled back: ghcr.io/acme/shop:1 serves)");
        assert_eq!(
            final_moment(&i, &run(Status::Success, None, false), None, &signal).message,
            "ghcr.io/acme/shop:2 is live"
        );
    }

    #[test]
    fn a_cancel_is_named_by_its_cause() {
        let i = inputs();
        let cancelled = run(Status::Error, Some(Error::Cancelled), true);
        // The run's own deadline: the work token fired, the signal did not.
        let m = final_moment(&i, &cancelled, None, &CancellationToken::new());
        assert_eq!((m.event, m.reason), (Event::Rollback, Some("deadline_exceeded")));
        assert!(m.message.contains("did not finish within 300s"), "{}", m.message);
        let signal = CancellationToken::new();
        signal.cancel();
        let m = final_moment(&i, &cancelled, None, &signal);
        assert_eq!((m.event, m.outcome, m.reason), (Event::Rollback, "error", Some("cancelled")));
    }

    #[test]
    fn the_start_says_what_is_about_to_happen() {
        let i = inputs();
        assert_eq!(
            start_message(&i, "ghcr.io/acme/shop:2"),
            "deploying ghcr.io/acme/shop:2 (blue-green on hosts)"
        );
        let rollback = Inputs { mode: Mode::Rollback, ..i };
        assert_eq!(start_message(&rollback, ""), "rolling back to the previous revision");
    }
}
