//! The deploy pipeline: validate → resolve secrets → prepare (pull,
//! migrate) → launch candidate → verify → switch → observe → retire, with
//! rollback on any failure after launch, a deadline on every stage and on
//! the whole run, cancellation as an outcome, and the final record (GitHub
//! status, step outputs, job summary).

mod deploy;
pub mod fleet;

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::inputs::{Inputs, Mode};
use crate::plan;
use crate::runner::Runner;
use crate::runner::summary::{Report, StageTiming};

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The new version serves everywhere.
    Success,
    /// The deploy failed and the previous version was kept or restored.
    Failure,
    /// The action could not finish: cancelled, lost contact, unknown state.
    Error,
    /// `mode: plan`: nothing was changed.
    Planned,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Failure => "failure",
            Status::Error => "error",
            Status::Planned => "planned",
        }
    }
}

/// How a deploy ended on its target, in the terms the final status is
/// decided on. Both targets fill one in: [`Ended::status`] is the one
/// mapping of a deploy to its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// A step failed (a signal is `cancelled`, not this).
    pub failed: bool,
    pub cancelled: bool,
    /// The new version serves: the deploy passed its commit point, and a
    /// later failure or signal no longer undoes it.
    pub committed: bool,
    /// Nothing of this deploy is left serving: every change was undone,
    /// nothing had changed yet, or (a cluster) someone else's version runs
    /// now, as they set it.
    pub nothing_left: bool,
}

impl Ended {
    /// Success when the new version serves; failure when the deploy failed
    /// and the previous version was kept or restored; error when the run
    /// was cancelled before its commit point or the state is unknown.
    pub fn status(self) -> Status {
        match self {
            Ended { failed: false, cancelled: false, .. } => Status::Success,
            Ended { committed: true, .. } => Status::Success,
            Ended { cancelled: true, .. } => Status::Error,
            Ended { nothing_left: true, .. } => Status::Failure,
            _ => Status::Error,
        }
    }
}

/// The result of a run, mapped to an exit code by `main`.
#[derive(Debug)]
pub struct Outcome {
    pub status: Status,
    pub error: Option<Error>,
}

impl Outcome {
    pub fn exit_code(&self) -> u8 {
        match self.status {
            Status::Success | Status::Planned => 0,
            Status::Failure => 1,
            Status::Error => match self.error {
                Some(Error::Cancelled) => 130,
                _ => 1,
            },
        }
    }
}

/// Collects the stage timeline for the summary.
#[derive(Default)]
pub struct Timeline(pub Vec<StageTiming>);

impl Timeline {
    pub fn push(&mut self, stage: &str, started: Instant, ok: bool, note: impl Into<String>) {
        self.0.push(StageTiming {
            stage: stage.into(),
            unit: None,
            duration: started.elapsed(),
            ok,
            note: note.into(),
        });
    }
}

/// Runs the action for validated inputs until done, failed, cancelled or
/// out of time (`timeout` input).
pub async fn run(inputs: Inputs, runner: Runner, cancel: CancellationToken) -> Outcome {
    // The whole-run deadline cancels like a signal does, with its own reason.
    let work = cancel.child_token();
    let timer = {
        let (work, timeout) = (work.clone(), inputs.timeout);
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            work.cancel();
        })
    };
    let outcome = match inputs.mode {
        Mode::Plan => plan_only(&inputs, &runner).await,
        Mode::Deploy | Mode::Rollback | Mode::Promote | Mode::Abort => {
            deploy::run(&inputs, &runner, &work, &cancel).await
        }
    };
    timer.abort();
    let outcome = match outcome {
        Outcome { error: Some(Error::Cancelled), status } if !cancel.is_cancelled() => Outcome {
            status,
            error: Some(Error::Deadline { what: "the deploy".into(), after: inputs.timeout }),
        },
        o => o,
    };
    if let Some(e) = &outcome.error {
        runner.error(e.reason(), &format!("deploy {}: {e}", outcome.status.as_str()));
    }
    runner.set_output("status", outcome.status.as_str());
    outcome
}

/// `mode: plan`: prints what would be done and changes nothing.
async fn plan_only(inputs: &Inputs, runner: &Runner) -> Outcome {
    let started = Instant::now();
    let units = match deploy::unit_names(inputs, runner).await {
        Ok(u) => u,
        Err(e) => return Outcome { status: Status::Error, error: Some(e) },
    };
    let mut plan = plan::build(inputs, &units);
    // A cluster answers what would change: a server-side dry run.
    if let Some(k) = &inputs.kubernetes {
        let _g = runner.group("Server-side dry run (dryRun=All — nothing is persisted)");
        let image = inputs.image.as_ref().map(|i| i.full());
        match crate::targets::kubernetes::plan(
            k,
            kube_strategy(inputs),
            &inputs.app,
            image.as_deref(),
            runner,
        )
        .await
        {
            Ok(lines) => plan.cluster_changes = lines,
            Err(e) => return Outcome { status: Status::Failure, error: Some(e.into()) },
        }
    }
    {
        let _g = runner.group("Plan (mode: plan — nothing will be changed)");
        for line in plan::render(&plan) {
            runner.line(&line);
        }
    }
    runner.set_output("plan", &plan::render(&plan).join("\n"));
    let mut timeline = Timeline::default();
    timeline.push("plan", started, true, "");
    runner.write_report(&Report {
        title: format!("deploy-action plan: {} → {}", inputs.app, inputs.environment),
        unit_kind: unit_kind(inputs),
        facts: facts(inputs, plan.image.as_deref().unwrap_or("(last good)"), None),
        units: units.iter().map(|u| (u.clone(), "planned".to_string(), Duration::ZERO)).collect(),
        timeline: timeline.0,
        checks: vec![],
        outcome: "planned".into(),
        reason: None,
        message: Some(plan::render(&plan).join("\n")),
    });
    Outcome { status: Status::Planned, error: None }
}

/// What the summary's unit rows are.
pub fn unit_kind(inputs: &Inputs) -> crate::runner::summary::UnitKind {
    match inputs.target {
        crate::inputs::TargetKind::Kubernetes => crate::runner::summary::UnitKind::Deployment,
        _ => crate::runner::summary::UnitKind::Host,
    }
}

/// The key facts of a run for the summary table.
pub fn facts(inputs: &Inputs, image: &str, previous: Option<&str>) -> Vec<(String, String)> {
    let mut f = vec![
        ("Environment".to_string(), inputs.environment.clone()),
        ("Image".to_string(), format!("`{image}`")),
        ("Target".to_string(), inputs.target.as_str().to_string()),
        ("Strategy".to_string(), inputs.strategy.as_str().to_string()),
        ("Commit".to_string(), format!("`{}`", &inputs.context.sha[..inputs.context.sha.len().min(12)])),
        ("Run".to_string(), inputs.context.run_url()),
    ];
    if let Some(p) = previous {
        f.insert(2, ("Previous image".to_string(), format!("`{p}`")));
    }
    if let Some(u) = &inputs.environment_url {
        f.push(("URL".to_string(), u.to_string()));
    }
    f
}

/// The cluster's strategy from the inputs.
fn kube_strategy(inputs: &Inputs) -> crate::targets::kubernetes::Strategy {
    use crate::targets::kubernetes::{Strategy, bluegreen::Timing, canary::Steps};
    match inputs.strategy {
        // The same list as the hosts', over the one unit a cluster is.
        crate::inputs::StrategyKind::BlueGreen => Strategy::BlueGreen(
            Timing { drain: inputs.rollout.drain },
            crate::strategy::phases(inputs.strategy, &inputs.rollout, 1, inputs.migrate_command.is_some()),
        ),
        crate::inputs::StrategyKind::Canary => Strategy::Canary(Steps {
            steps: inputs.rollout.canary_steps.clone(),
            interval: inputs.rollout.canary_interval,
            traffic: inputs
                .kubernetes
                .as_ref()
                .map(|k| k.canary_traffic.clone())
                .unwrap_or(crate::inputs::CanaryTraffic::Replicas),
            drain: inputs.rollout.drain,
        }),
        crate::inputs::StrategyKind::Rolling => Strategy::Rolling,
    }
}

#[cfg(test)]
mod tests {
    use super::{Ended, Status};

    #[test]
    fn one_status_for_every_way_a_deploy_ends() {
        let e =
            |failed, cancelled, committed, nothing_left| Ended { failed, cancelled, committed, nothing_left };
        for (ended, want) in [
            (e(false, false, true, false), Status::Success),
            (e(false, false, false, false), Status::Success),
            // Past the commit point a failure or a signal leaves it serving.
            (e(true, false, true, false), Status::Success),
            (e(false, true, true, false), Status::Success),
            // A signal before it: error, whether or not it was undone.
            (e(false, true, false, true), Status::Error),
            (e(true, true, false, false), Status::Error),
            (e(true, false, false, true), Status::Failure),
            // Failed and not known to be back: the state is unknown.
            (e(true, false, false, false), Status::Error),
        ] {
            assert_eq!(ended.status(), want, "{ended:?}");
        }
    }
}
