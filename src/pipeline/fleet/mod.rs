//! Runs a strategy's phases over the units: units in parallel inside a phase
//! (bounded by `max-parallel`), phases in order (so the first unit is a
//! barrier), every step under a deadline and raced against cancellation,
//! and rollback of every unit on a failure before the deploy commits.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::analysis::Analysis;
use crate::error::Error;
use crate::health;
use crate::inputs::{HealthSpec, OnHostFailure, RolloutSpec};
use crate::probe::Via;
use crate::runner::Runner;
use crate::runner::summary::StageTiming;
use crate::strategy::{Phase, Step};
use crate::targets::wayback::{WAY_BACK, drain, migration_back};
use crate::targets::{Release, Target};

/// Why a unit's step stopped when another unit's failure cancelled its phase.
const SIBLING_FAILED: &str = "stopped: another host failed";

/// Whether `e` is a unit's phase being cancelled because another unit
/// failed, not the run being cancelled by a signal or its deadline.
fn stopped_by_sibling(e: &Error, run: &CancellationToken) -> bool {
    matches!(e, Error::Cancelled) && !run.is_cancelled()
}

/// What the fleet needs besides the units.
pub struct FleetConfig {
    pub health: HealthSpec,
    pub rollout: RolloutSpec,
    /// Error-rate and latency limits on what nginx served (access log).
    pub traffic: Option<crate::targets::hosts::access_log::Limits>,
    /// `smoke-tests`: `path` ones on each candidate after its health
    /// checks and through nginx at the start of each observe step; `url`
    /// ones once, at the first observe step.
    pub smoke: Option<Arc<crate::smoke::Suite>>,
    /// Judged in every observe step, shared by every host's loop.
    pub analysis: Option<Arc<Analysis>>,
}

/// How one unit ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitOutcome {
    Deployed,
    RolledBack,
    Failed,
    Untouched,
}

impl UnitOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            UnitOutcome::Deployed => "deployed",
            UnitOutcome::RolledBack => "rolled back",
            UnitOutcome::Failed => "failed (state unknown)",
            UnitOutcome::Untouched => "untouched",
        }
    }
}

/// The fleet's result.
#[derive(Debug)]
pub struct FleetReport {
    /// `None` when every unit deployed.
    pub error: Option<Error>,
    /// Stage in which the first failure happened.
    pub failed_stage: Option<&'static str>,
    pub units: Vec<(String, UnitOutcome, Duration)>,
    pub timeline: Vec<StageTiming>,
    /// Whether every unit that changed is back on the previous version.
    pub rolled_back: bool,
    /// Whether the new version serves (the deploy passed its commit point).
    pub committed: bool,
}

/// The deadline for one step, generous but finite.
pub fn step_deadline(step: &Step, cfg: &FleetConfig) -> Duration {
    let health = &cfg.health;
    match step {
        Step::Prepare => Duration::from_secs(15 * 60),
        // The target stops the migration at its own bound; this one only
        // catches a target that does not.
        // (Twice: a pre-migrate command runs under the same bound first.)
        Step::Migrate => cfg.rollout.migration_timeout * 2 + Duration::from_secs(60),
        Step::Launch => Duration::from_secs(120),
        Step::Verify => health.timeout + Duration::from_secs(30),
        Step::Shift(_) => Duration::from_secs(60),
        Step::Observe(d) => *d + Duration::from_secs(60),
        Step::Retire(d) => *d + Duration::from_secs(180),
    }
}

async fn run_step(
    step: &Step,
    unit: &dyn Target,
    release: &Release,
    cfg: &FleetConfig,
    runner: &Runner,
    cancel: &CancellationToken,
) -> Result<(), Error> {
    match step {
        Step::Prepare => Ok(unit.prepare(release).await?),
        Step::Migrate => Ok(unit.migrate(release).await?),
        Step::Launch => Ok(unit.launch(release).await?),
        Step::Verify => {
            health::wait_healthy(unit, release, &cfg.health, runner, cancel).await?;
            match &cfg.smoke {
                Some(s) => s.run_paths(unit, release, Via::Candidate, runner).await,
                None => Ok(()),
            }
        }
        Step::Shift(p) => Ok(unit.shift(release, *p).await?),
        Step::Observe(d) => {
            if let Some(s) = &cfg.smoke {
                s.run_paths(unit, release, Via::FrontDoor, runner).await?;
                s.run_urls(false, runner).await?;
            }
            let watch = health::Watch {
                window: *d,
                failures: cfg.rollout.observe_failures,
                health: &cfg.health,
                traffic: cfg.traffic.as_ref(),
                analysis: cfg.analysis.as_deref(),
            };
            health::observe(unit, release, &watch, runner, cancel).await
        }
        Step::Retire(d) => {
            let before = format!("{}: the old version is removed", unit.name());
            drain(*d, &before, runner, cancel).await;
            Ok(unit.retire(release).await?)
        }
    }
}

/// One step under its deadline; non-critical steps give way to cancellation
/// at once, critical ones (the proxy switch) finish first.
async fn guarded_step(
    step: &Step,
    unit: &dyn Target,
    release: &Release,
    cfg: &FleetConfig,
    runner: &Runner,
    cancel: &CancellationToken,
) -> Result<(), Error> {
    let deadline = step_deadline(step, cfg);
    let work = tokio::time::timeout(deadline, run_step(step, unit, release, cfg, runner, cancel));
    let timed = |r: Result<Result<(), Error>, _>| {
        r.unwrap_or_else(|_| {
            Err(Error::Deadline { what: format!("{} on {}", step.stage(), unit.name()), after: deadline })
        })
    };
    if step.is_critical() {
        return timed(work.await);
    }
    tokio::select! {
        r = work => timed(r),
        _ = cancel.cancelled() => Err(Error::Cancelled),
    }
}

/// The `migrate-rollback-command`, once the traffic is back: loud when it
/// fails, never a reason to undo the traffic rollback. After a signal
/// there is no time for a container: it is named for a person to run.
async fn migrate_rollback(
    unit: &dyn Target,
    release: &Release,
    cfg: &FleetConfig,
    runner: &Runner,
    cancel: &CancellationToken,
) -> StageTiming {
    let t0 = Instant::now();
    let cmd = release.migrate_rollback_command.as_deref().unwrap_or_default().join(" ");
    let by_hand = format!("run `{cmd}` from the new image by hand");
    let bound = cfg.rollout.migration_timeout + Duration::from_secs(30);
    let result = migration_back(unit.name(), &by_hand, runner, cancel, async {
        match tokio::time::timeout(bound, unit.migrate_rollback(release)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.detail()),
            Err(_) => Err(format!("did not finish within {}s", bound.as_secs())),
        }
    })
    .await;
    let note = result.as_ref().err().cloned().unwrap_or_default();
    StageTiming {
        stage: "migrate-rollback".into(),
        unit: Some(unit.name().to_string()),
        duration: t0.elapsed(),
        ok: result.is_ok(),
        note,
    }
}

/// Runs `phases` over `units`.
pub async fn run(
    units: &[Arc<dyn Target>],
    phases: &[Phase],
    release: Arc<Release>,
    cfg: Arc<FleetConfig>,
    runner: &Runner,
    cancel: &CancellationToken,
) -> FleetReport {
    let n = units.len();
    let started: Vec<Instant> = vec![Instant::now(); n];
    let mut outcome = vec![UnitOutcome::Untouched; n];
    let mut failed = vec![false; n];
    let mut timeline = Vec::new();
    let mut error: Option<Error> = None;
    let mut failed_stage = None;
    let mut committed = false;
    let mut abort_all = false;
    // Whether the migration ran to success (its rollback command then runs
    // after a traffic rollback).
    let mut migrated = false;
    let keep_going = cfg.rollout.on_host_failure == OnHostFailure::KeepGoing;
    let limit = Arc::new(Semaphore::new(cfg.rollout.max_parallel.max(1)));

    for phase in phases {
        if cancel.is_cancelled() {
            error.get_or_insert(Error::Cancelled);
            break;
        }
        let scope: Vec<usize> = phase.scope.indices(n).into_iter().filter(|i| !failed[*i]).collect();
        if scope.is_empty() {
            continue;
        }
        let stage_names: Vec<&str> = phase.steps.iter().map(Step::stage).collect();
        let _group = runner.group(&format!("{} — {}", stage_names.join(", "), describe_scope(&scope, units)));
        // Cancelled when a sibling fails (all-or-nothing) or the run is cancelled.
        let phase_cancel = cancel.child_token();
        let mut tasks = JoinSet::new();
        for &i in &scope {
            let unit = units[i].clone();
            let steps = phase.steps.clone();
            let run_cancel = cancel.clone();
            let (release, cfg, runner, cancel, limit) =
                (release.clone(), cfg.clone(), runner.clone(), phase_cancel.clone(), limit.clone());
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await.expect("semaphore open");
                let mut times = Vec::new();
                for step in &steps {
                    if cancel.is_cancelled() {
                        return (i, times, Err((step.stage(), Error::Cancelled)));
                    }
                    let t0 = Instant::now();
                    tracing::info!(host = unit.name(), stage = step.stage(), "{step}");
                    let r = guarded_step(step, unit.as_ref(), &release, &cfg, &runner, &cancel).await;
                    let note = match &r {
                        Ok(()) => String::new(),
                        Err(e) if stopped_by_sibling(e, &run_cancel) => SIBLING_FAILED.into(),
                        Err(e) => e.to_string(),
                    };
                    times.push(StageTiming {
                        stage: step.stage().to_string(),
                        unit: Some(unit.name().to_string()),
                        duration: t0.elapsed(),
                        ok: r.is_ok(),
                        note,
                    });
                    if let Err(e) = r {
                        return (i, times, Err((step.stage(), e)));
                    }
                }
                (i, times, Ok(()))
            });
        }
        let mut phase_failed = false;
        while let Some(joined) = tasks.join_next().await {
            let (i, times, result) = match joined {
                Ok(r) => r,
                Err(e) => {
                    error.get_or_insert(Error::Other(format!("a deploy task panicked: {e}")));
                    phase_failed = true;
                    continue;
                }
            };
            timeline.extend(times);
            if let Err((stage, e)) = result {
                if stopped_by_sibling(&e, cancel) {
                    runner.line(&format!("{}: {stage} {SIBLING_FAILED}", units[i].name()));
                } else {
                    runner.error(e.reason(), &format!("{stage} failed: {e}"));
                }
                failed[i] = true;
                outcome[i] = UnitOutcome::Failed;
                if committed {
                    // Past the commit point the new version serves: report, don't undo.
                    runner.warning(
                        e.reason(),
                        &format!("{}: {stage} did not finish; the new version is serving", units[i].name()),
                    );
                    continue;
                }
                if keep_going && !matches!(e, Error::Cancelled) && i != 0 {
                    outcome[i] =
                        rollback_one(units[i].as_ref(), &release, runner, Duration::from_secs(120)).await;
                    failed_stage.get_or_insert(stage);
                    error.get_or_insert(e);
                    continue;
                }
                failed_stage.get_or_insert(stage);
                if error.is_none() || matches!(error, Some(Error::Cancelled)) {
                    error = Some(e);
                }
                phase_failed = true;
                phase_cancel.cancel();
            }
        }
        if phase_failed {
            // A barrier failure, or all-or-nothing: start nothing more.
            abort_all = true;
            break;
        }
        migrated |= phase.steps.contains(&Step::Migrate);
        if phase.commits {
            committed = true;
        }
    }

    let mut rolled_back = false;
    if cancel.is_cancelled() && !committed {
        abort_all = true;
        error.get_or_insert(Error::Cancelled);
    }
    if abort_all && !committed {
        let budget = if cancel.is_cancelled() { WAY_BACK } else { Duration::from_secs(180) };
        let _group = runner.group("rollback — every unit back to the previous version");
        let t0 = Instant::now();
        let mut tasks = JoinSet::new();
        for (i, unit) in units.iter().enumerate() {
            let (unit, release, runner) = (unit.clone(), release.clone(), runner.clone());
            tasks.spawn(async move { (i, rollback_one(unit.as_ref(), &release, &runner, budget).await) });
        }
        rolled_back = true;
        while let Some(Ok((i, o))) = tasks.join_next().await {
            if o == UnitOutcome::Failed {
                rolled_back = false;
            }
            outcome[i] = o;
        }
        timeline.push(StageTiming {
            stage: "rollback".into(),
            unit: None,
            duration: t0.elapsed(),
            ok: rolled_back,
            note: String::new(),
        });
        if migrated && release.migrate_rollback_command.is_some() {
            timeline.push(migrate_rollback(units[0].as_ref(), &release, cfg.as_ref(), runner, cancel).await);
        }
    }
    for (i, o) in outcome.iter_mut().enumerate() {
        if *o == UnitOutcome::Untouched && !failed[i] && (error.is_none() || committed || keep_going) {
            *o = UnitOutcome::Deployed;
        }
    }
    FleetReport {
        error,
        failed_stage,
        units: units
            .iter()
            .zip(outcome)
            .zip(started)
            .map(|((u, o), s)| (u.name().to_string(), o, s.elapsed()))
            .collect(),
        timeline,
        rolled_back,
        committed,
    }
}

async fn rollback_one(
    unit: &dyn Target,
    release: &Release,
    runner: &Runner,
    budget: Duration,
) -> UnitOutcome {
    match tokio::time::timeout(budget, unit.rollback(release)).await {
        Ok(Ok(())) => {
            runner.line(&format!("{}: back on the previous version", unit.name()));
            UnitOutcome::RolledBack
        }
        Ok(Err(e)) => {
            // The step's own code when it has one (`rollback_not_verified`).
            let reason = match e.reason() {
                "internal_error" => "rollback_failed",
                r => r,
            };
            runner.error(reason, &format!("{}: rollback failed: {e}", unit.name()));
            UnitOutcome::Failed
        }
        Err(_) => {
            runner.error(
                "rollback_failed",
                &format!("{}: rollback did not finish within {}s", unit.name(), budget.as_secs_f32()),
            );
            UnitOutcome::Failed
        }
    }
}

fn describe_scope(scope: &[usize], units: &[Arc<dyn Target>]) -> String {
    if scope.len() == units.len() && units.len() > 1 {
        return format!("all {} units", units.len());
    }
    scope.iter().map(|i| units[*i].name()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests;
