//! `mode: deploy` and `mode: rollback`: record → secrets → units → fleet →
//! final status, outputs and summary.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::fleet::{self, FleetConfig};
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
use crate::targets::unit::{Outcome as UnitOutcome, Unit};
use crate::targets::{Release, StaleLock, Target, TargetError, ec2};

mod connect;
mod finish;
mod material;
mod record;
mod units;

pub(in crate::pipeline) use connect::unit_names;
use connect::*;
use finish::*;
use material::*;
use record::*;
use units::*;

/// What happened, for the final record.
struct Run {
    status: Status,
    error: Option<Error>,
    stage: &'static str,
    image: Option<String>,
    previous_image: Option<String>,
    units: Vec<Unit>,
    /// Every unit was kept on or put back to the previous version.
    rolled_back: bool,
}

/// What every stage of a run works with, passed once instead of threaded
/// through each signature: the inputs, the runner, the run's cancellation
/// (`cancel`: a signal or the run's deadline) and the runner's signal alone
/// (`signal`, to tell the two apart in notifications), the GitHub record's
/// client, and the timeline the stages add to.
struct Ctx<'a> {
    inputs: &'a Inputs,
    runner: &'a Runner,
    cancel: &'a CancellationToken,
    signal: &'a CancellationToken,
    github: Option<Deployments>,
    timeline: std::sync::Mutex<Timeline>,
}

impl Ctx<'_> {
    /// Adds a stage of the run to the summary's timeline.
    fn stage(&self, stage: &str, started: Instant, ok: bool, note: impl Into<String>) {
        self.timeline.lock().unwrap_or_else(|p| p.into_inner()).push(stage, started, ok, note);
    }

    /// Adds the units' own stage timings (the fleet's) to the timeline.
    fn stages(&self, timings: Vec<crate::runner::summary::StageTiming>) {
        self.timeline.lock().unwrap_or_else(|p| p.into_inner()).0.extend(timings);
    }

    /// The timeline so far, for the report (the run is over).
    fn take_timeline(&self) -> Timeline {
        std::mem::take(&mut *self.timeline.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// `cancel` stops the work (a signal or the run's deadline); `signal` is
/// the runner's signal alone, to tell the two apart in notifications.
// long: the run's stages in order (record client, secrets, analysis, image, record, units, final status), the one place that reads top to bottom; each stage's early end is one line here.
pub(super) async fn run(
    inputs: &Inputs,
    runner: &Runner,
    cancel: &CancellationToken,
    signal: &CancellationToken,
) -> Outcome {
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
    let ctx = Ctx { inputs, runner, cancel, signal, github, timeline: Default::default() };

    // Secrets: masked on arrival, never written anywhere but the app's env.
    let t_secrets = Instant::now();
    let Material { secrets, key, known_hosts, registry_password, slack_url, notify_url } =
        match resolve_secrets(&ctx).await {
            Ok(m) => m,
            Err((e, stage)) => return finish_early(inputs, runner, e, stage),
        };
    ctx.stage("secrets", t_secrets, true, format!("{} value(s)", secrets.len()));
    // From here on every end of the run is notified.
    let notifier = Notifier::new(inputs, runner, slack_url, notify_url);
    let early = |e: Error, stage: &'static str| {
        let run = early_run(inputs, e, stage);
        let notifier = &notifier;
        async move {
            notifier.finish(final_moment(inputs, &run, None, ctx.signal), cancel).await;
            report(inputs, runner, run, Timeline::default(), None, &[])
        }
    };

    // The analysis sources, read once before anything changes.
    let t_analysis = Instant::now();
    let analysis = match start_analysis(&ctx).await {
        Ok(a) => a,
        Err(e) => return early(e, "analysis").await,
    };
    if analysis.is_some() {
        ctx.stage("analysis", t_analysis, true, "read before the deploy");
    }

    // Which image, and what was live before (GitHub is read only once
    // every input, SSM values included, has been checked).
    let t0 = Instant::now();
    let (image, image_ref, previous_image) = match which_image(&ctx).await {
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
    let payload = payload(inputs, &image, &previous_image, &digest);
    let record = match begin_record(&ctx, &payload).await {
        Ok(r) => r,
        Err(e) => return early(e, "record").await,
    };
    ctx.stage("record", t0, true, "");
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

    let release = Arc::new(release(inputs, image_ref.as_ref(), secret_env, digest.clone()));
    let material = HostMaterial { key, known_hosts, registry_password };
    let judges = Judges { smoke, analysis };
    let run = deploy_units(&ctx, &release, material, judges).await;
    // What was live: GitHub's record, else what the first host ran.
    let previous_image = previous_image.or(run.previous_image.clone());
    let image = run.image.clone().unwrap_or(image);
    let run = Run { image: Some(image.clone()), previous_image: previous_image.clone(), ..run };
    // The final status and the final notification side by side: after a
    // cancellation each has one short try, and together they stay within
    // the runner's grace.
    let moment = final_moment(inputs, &run, deployment_id, ctx.signal);
    let (run, ()) =
        tokio::join!(post_final_status(&ctx, record.as_ref(), run, &image), notifier.finish(moment, cancel));
    report(inputs, runner, run, ctx.take_timeline(), digest, &secret_names)
}

/// What every unit deploys: the services (a `mode: rollback` without an
/// image gets the last good one, `image_ref`), the secrets' environment
/// and fingerprint, the migration commands.
fn release(
    inputs: &Inputs,
    image_ref: Option<&crate::inputs::ImageRef>,
    secret_env: Vec<(String, SecretValue)>,
    secrets_fingerprint: Option<String>,
) -> Release {
    let services = inputs
        .services
        .iter()
        .cloned()
        .map(|mut s| {
            if s.image.full() == crate::inputs::ROLLBACK_PENDING
                && let Some(i) = image_ref
            {
                s.image = i.clone();
            }
            s
        })
        .collect();
    Release {
        app: inputs.app.clone(),
        deploy_id: format!("{}-{}", inputs.context.run_id, inputs.context.run_attempt),
        run_url: inputs.context.run_url(),
        services,
        secret_env,
        secrets_fingerprint,
        migrate_command: inputs.migrate_command.clone(),
        pre_migrate_command: inputs.pre_migrate_command.clone(),
        migrate_rollback_command: inputs.migrate_rollback_command.clone(),
    }
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
