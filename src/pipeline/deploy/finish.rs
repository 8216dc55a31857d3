//! How a run ends: the report, the summary's last moment and the runs
//! that stop before the deploy.

use super::*;

/// A run that ended before any unit was touched.
pub(super) fn early_run(inputs: &Inputs, error: Error, stage: &'static str) -> Run {
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
pub(super) fn finish_early(inputs: &Inputs, runner: &Runner, error: Error, stage: &'static str) -> Outcome {
    report(inputs, runner, early_run(inputs, error, stage), Timeline::default(), None, &[])
}

/// What the start notification says is about to happen.
pub(super) fn start_message(inputs: &Inputs, image: &str) -> String {
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
pub(super) fn final_moment(
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

pub(super) fn report(
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
    runner.set_output("hosts", &run.units.iter().map(|u| u.name.as_str()).collect::<Vec<_>>().join(","));
    runner.write_report(&Report {
        title: format!("deploy-action: {} → {}", inputs.app, inputs.environment),
        unit_kind: unit_kind(inputs),
        facts: facts(inputs, &image, run.previous_image.as_deref()),
        units: run.units.iter().map(|u| (u.name.clone(), u.outcome.to_string(), u.took)).collect(),
        timeline: timeline.0,
        checks: vec![],
        outcome: run.status.as_str().into(),
        reason: run.error.as_ref().map(|e| e.reason().to_string()),
        message: run.error.as_ref().map(|e| format!("{} failed: {e}", run.stage)),
    });
    Outcome { status: run.status, error: run.error }
}
