//! The GitHub record of a run: what it keeps of the deploy, the record
//! begun (the lock across runs, created, `in_progress`), and its final
//! status posted.

use super::*;

/// What the record keeps of this deploy (read back by a later rollback).
pub(super) fn payload(
    inputs: &Inputs,
    image: &str,
    previous_image: &Option<String>,
    digest: &Option<String>,
) -> DeployPayload {
    DeployPayload {
        image: image.to_string(),
        previous_image: previous_image.clone(),
        strategy: inputs.strategy.as_str().into(),
        target: inputs.target.as_str().into(),
        run_url: inputs.context.run_url(),
        secrets_fingerprint: digest.clone(),
    }
}

/// The GitHub record, when kept: the lock across runs, the deployment
/// created and marked `in_progress`, its id and URL set as outputs.
pub(super) async fn begin_record(
    ctx: &Ctx<'_>,
    payload: &DeployPayload,
) -> Result<Option<crate::github::DeploymentRecord>, Error> {
    let Ctx { inputs, runner, cancel, .. } = *ctx;
    let Some(g) = &ctx.github else { return Ok(None) };
    let task = if inputs.mode == Mode::Rollback { Task::Rollback } else { Task::Deploy };
    let _g = runner.group("GitHub deployment");
    let r = g.begin(payload, task, cancel).await?;
    runner.set_output("deployment-id", &r.id.to_string());
    runner.set_output("deployment-url", &r.url);
    Ok(Some(r))
}

/// Posts the final status: best effort, never changes what the deploy did
/// (unless `fail-on-status-error` asks a successful run to fail for it).
pub(super) async fn post_final_status(
    ctx: &Ctx<'_>,
    record: Option<&crate::github::DeploymentRecord>,
    run: Run,
    image: &str,
) -> Run {
    let Ctx { inputs, runner, cancel, .. } = *ctx;
    let (Some(g), Some(r)) = (&ctx.github, record) else { return run };
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
