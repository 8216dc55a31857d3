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
use crate::targets::unit::{Outcome, Unit};
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

/// The fleet's result.
#[derive(Debug)]
pub struct FleetReport {
    /// `None` when every unit deployed.
    pub error: Option<Error>,
    /// Stage in which the first failure happened.
    pub failed_stage: Option<&'static str>,
    pub units: Vec<Unit>,
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
    let mut fleet = Fleet {
        units,
        release,
        limit: Arc::new(Semaphore::new(cfg.rollout.max_parallel.max(1))),
        cfg,
        runner,
        cancel,
        started: Instant::now(),
        outcome: vec![Outcome::Unchanged(String::new()); n],
        failed: vec![false; n],
        timeline: Vec::new(),
        error: None,
        failed_stage: None,
        committed: false,
        migrated: false,
        rolled_back: false,
    };
    let mut abort_all = false;
    for phase in phases {
        if cancel.is_cancelled() {
            fleet.error.get_or_insert(Error::Cancelled);
            break;
        }
        if fleet.phase(phase).await {
            // A barrier failure, or all-or-nothing: start nothing more.
            abort_all = true;
            break;
        }
    }
    if cancel.is_cancelled() && !fleet.committed {
        abort_all = true;
        fleet.error.get_or_insert(Error::Cancelled);
    }
    if abort_all && !fleet.committed {
        fleet.way_back().await;
    }
    fleet.report()
}

/// One run of the fleet: what it works on, and what it has learnt so far.
struct Fleet<'a> {
    units: &'a [Arc<dyn Target>],
    release: Arc<Release>,
    cfg: Arc<FleetConfig>,
    runner: &'a Runner,
    cancel: &'a CancellationToken,
    /// How many units run their steps at once (`max-parallel`).
    limit: Arc<Semaphore>,
    started: Instant,
    outcome: Vec<Outcome>,
    failed: Vec<bool>,
    timeline: Vec<StageTiming>,
    error: Option<Error>,
    failed_stage: Option<&'static str>,
    /// Past the commit point: the new version serves, nothing is undone.
    committed: bool,
    /// Whether the migration ran to success (its rollback command then
    /// runs after a traffic rollback).
    migrated: bool,
    rolled_back: bool,
}

/// What one unit's task hands back: its index, the steps' timings, and the
/// step it stopped at with why.
type UnitSteps = (usize, Vec<StageTiming>, Result<(), (&'static str, Error)>);

impl Fleet<'_> {
    /// `on-host-failure: keep-going`: a failed host (not the first) goes
    /// back alone, the others go on.
    fn keep_going(&self) -> bool {
        self.cfg.rollout.on_host_failure == OnHostFailure::KeepGoing
    }

    /// Runs one phase's steps on every unit of its scope (each unit in
    /// turn through the steps, the units in parallel up to the limit).
    /// `true`: the phase failed and the run stops here.
    async fn phase(&mut self, phase: &Phase) -> bool {
        let (units, runner) = (self.units, self.runner);
        let scope: Vec<usize> =
            phase.scope.indices(units.len()).into_iter().filter(|i| !self.failed[*i]).collect();
        if scope.is_empty() {
            return false;
        }
        let stage_names: Vec<&str> = phase.steps.iter().map(Step::stage).collect();
        let _group = runner.group(&format!("{} — {}", stage_names.join(", "), describe_scope(&scope, units)));
        // Cancelled when a sibling fails (all-or-nothing) or the run is cancelled.
        let phase_cancel = self.cancel.child_token();
        let mut tasks = JoinSet::new();
        for &i in &scope {
            tasks.spawn(unit_steps(
                i,
                units[i].clone(),
                phase.steps.clone(),
                (self.release.clone(), self.cfg.clone(), runner.clone()),
                (phase_cancel.clone(), self.cancel.clone()),
                self.limit.clone(),
            ));
        }
        let mut phase_failed = false;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(done) => phase_failed |= self.settle(done, &phase_cancel).await,
                Err(e) => {
                    self.error.get_or_insert(Error::Other(format!("a deploy task panicked: {e}")));
                    phase_failed = true;
                }
            }
        }
        if !phase_failed {
            self.migrated |= phase.steps.contains(&Step::Migrate);
            self.committed |= phase.commits;
        }
        phase_failed
    }

    /// What one unit's steps came to. A failure before the commit point
    /// stops the phase (`true`), unless `keep-going` puts that one unit
    /// back alone; after it, the failure is reported and nothing undone.
    async fn settle(&mut self, (i, times, result): UnitSteps, phase_cancel: &CancellationToken) -> bool {
        let (unit, runner) = (&self.units[i], self.runner);
        self.timeline.extend(times);
        let Err((stage, e)) = result else { return false };
        if stopped_by_sibling(&e, self.cancel) {
            runner.line(&format!("{}: {stage} {SIBLING_FAILED}", unit.name()));
        } else {
            runner.error(e.reason(), &format!("{stage} failed: {e}"));
        }
        self.failed[i] = true;
        self.outcome[i] = Outcome::Failed(String::new());
        if self.committed {
            // Past the commit point the new version serves: report, don't undo.
            runner.warning(
                e.reason(),
                &format!("{}: {stage} did not finish; the new version is serving", unit.name()),
            );
            return false;
        }
        if self.keep_going() && !matches!(e, Error::Cancelled) && i != 0 {
            self.outcome[i] =
                rollback_one(unit.as_ref(), &self.release, runner, Duration::from_secs(120)).await;
            self.failed_stage.get_or_insert(stage);
            self.error.get_or_insert(e);
            return false;
        }
        self.failed_stage.get_or_insert(stage);
        if self.error.is_none() || matches!(self.error, Some(Error::Cancelled)) {
            self.error = Some(e);
        }
        phase_cancel.cancel();
        true
    }

    /// All or nothing: every unit back to its previous version (within
    /// [`WAY_BACK`] after a signal), then the migration's rollback command.
    async fn way_back(&mut self) {
        let runner = self.runner;
        let budget = if self.cancel.is_cancelled() { WAY_BACK } else { Duration::from_secs(180) };
        let _group = runner.group("rollback — every unit back to the previous version");
        let t0 = Instant::now();
        let mut tasks = JoinSet::new();
        for (i, unit) in self.units.iter().enumerate() {
            let (unit, release, runner) = (unit.clone(), self.release.clone(), runner.clone());
            tasks.spawn(async move { (i, rollback_one(unit.as_ref(), &release, &runner, budget).await) });
        }
        self.rolled_back = true;
        while let Some(Ok((i, o))) = tasks.join_next().await {
            if matches!(o, Outcome::Failed(_)) {
                self.rolled_back = false;
            }
            self.outcome[i] = o;
        }
        self.timeline.push(StageTiming {
            stage: "rollback".into(),
            unit: None,
            duration: t0.elapsed(),
            ok: self.rolled_back,
            note: String::new(),
        });
        if self.migrated && self.release.migrate_rollback_command.is_some() {
            let unit = self.units[0].as_ref();
            let back = migrate_rollback(unit, &self.release, self.cfg.as_ref(), runner, self.cancel).await;
            self.timeline.push(back);
        }
    }

    fn report(self) -> FleetReport {
        let keep_going = self.keep_going();
        let Fleet { units, mut outcome, failed, error, committed, started, .. } = self;
        for (i, o) in outcome.iter_mut().enumerate() {
            if matches!(o, Outcome::Unchanged(_))
                && !failed[i]
                && (error.is_none() || committed || keep_going)
            {
                *o = Outcome::Deployed(String::new());
            }
        }
        FleetReport {
            error,
            failed_stage: self.failed_stage,
            units: units
                .iter()
                .zip(outcome)
                .map(|(u, o)| Unit::new(u.name(), o, started.elapsed()))
                .collect(),
            timeline: self.timeline,
            rolled_back: self.rolled_back,
            committed,
        }
    }
}

/// One unit through a phase's steps, each under its deadline, once a
/// place under the limit is free. `cancel`: the phase's (a sibling failed,
/// or the run was cancelled) and the run's own.
async fn unit_steps(
    i: usize,
    unit: Arc<dyn Target>,
    steps: Vec<Step>,
    (release, cfg, runner): (Arc<Release>, Arc<FleetConfig>, Runner),
    (cancel, run_cancel): (CancellationToken, CancellationToken),
    limit: Arc<Semaphore>,
) -> UnitSteps {
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
}

async fn rollback_one(unit: &dyn Target, release: &Release, runner: &Runner, budget: Duration) -> Outcome {
    match tokio::time::timeout(budget, unit.rollback(release)).await {
        Ok(Ok(())) => {
            runner.line(&format!("{}: back on the previous version", unit.name()));
            Outcome::RolledBack(String::new())
        }
        Ok(Err(e)) => {
            // The step's own code when it has one (`rollback_not_verified`).
            let reason = match e.reason() {
                "internal_error" => "rollback_failed",
                r => r,
            };
            runner.error(reason, &format!("{}: rollback failed: {e}", unit.name()));
            Outcome::Failed(String::new())
        }
        Err(_) => {
            runner.error(
                "rollback_failed",
                &format!("{}: rollback did not finish within {}s", unit.name(), budget.as_secs_f32()),
            );
            Outcome::Failed(String::new())
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
