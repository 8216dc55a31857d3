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
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::inputs::StrategyKind;
    use crate::probe::{Probe, Via};
    use crate::redact::Redactor;
    use crate::strategy;
    use crate::targets::{LiveState, TargetError};

    /// A unit that records what was done to it and fails where told.
    struct Fake {
        name: String,
        log: Arc<Mutex<Vec<String>>>,
        fail_at: Option<&'static str>,
        slow_shift: Duration,
    }

    impl Fake {
        fn record(&self, what: &str) -> Result<(), TargetError> {
            self.log.lock().unwrap().push(format!("{}:{what}", self.name));
            if self.fail_at == Some(what) {
                return Err(TargetError::Other(format!("{}: {what} failed", self.name)));
            }
            Ok(())
        }
    }

    #[async_trait]
    impl Target for Fake {
        fn name(&self) -> &str {
            &self.name
        }
        async fn inspect(&self) -> Result<LiveState, TargetError> {
            Ok(LiveState::default())
        }
        async fn prepare(&self, _: &Release) -> Result<(), TargetError> {
            self.record("prepare")
        }
        async fn migrate(&self, _: &Release) -> Result<(), TargetError> {
            self.record("migrate")
        }
        async fn launch(&self, _: &Release) -> Result<(), TargetError> {
            self.record("launch")
        }
        async fn probe(&self, _: &Release, _: usize, via: Via, _: &str) -> Result<Probe, TargetError> {
            let failing = (via == Via::Candidate && self.fail_at == Some("health"))
                || (via == Via::FrontDoor && self.fail_at == Some("observe"));
            Ok(Probe {
                status: if failing { 503 } else { 200 },
                latency: Duration::from_millis(1),
                body: String::new(),
                upstream: None,
            })
        }
        async fn candidate_running(&self, _: &Release, _: usize) -> Result<bool, TargetError> {
            Ok(true)
        }
        async fn shift(&self, _: &Release, p: u8) -> Result<(), TargetError> {
            tokio::time::sleep(self.slow_shift).await;
            self.record(&format!("shift{p}"))?;
            self.record("shift")
        }
        async fn retire(&self, _: &Release) -> Result<(), TargetError> {
            self.record("retire")
        }
        async fn rollback(&self, _: &Release) -> Result<(), TargetError> {
            self.record("rollback")
        }
        async fn close(&self) {}
    }

    fn release() -> Arc<Release> {
        let image = crate::inputs::grammar::image("app:v2").unwrap();
        Arc::new(Release {
            app: "app".into(),
            deploy_id: "1-1".into(),
            run_url: "u".into(),
            services: vec![crate::inputs::Service {
                name: String::new(),
                image,
                container_port: 8080,
                blue_port: 8081,
                green_port: 8082,
                health_path: Some("/health".into()),
                version_path: Some("/version".into()),
                env: vec![],
                command: None,
                restart_policy: crate::inputs::RestartPolicy::No,
                behind_proxy: true,
                upstream_file: "/x.conf".into(),
                upstream_name: "app_backend".into(),
                front_door: Default::default(),
            }],
            secret_env: vec![],
            secrets_fingerprint: None,
            migrate_command: None,
            pre_migrate_command: None,
            migrate_rollback_command: None,
        })
    }

    fn cfg(on_host_failure: OnHostFailure) -> Arc<FleetConfig> {
        Arc::new(FleetConfig {
            health: HealthSpec {
                timeout: Duration::from_millis(500),
                interval: Duration::from_millis(10),
                successes: 2,
                max_response_time: None,
            },
            rollout: RolloutSpec {
                observe_window: Duration::from_millis(50),
                observe_failures: 2,
                drain: Duration::ZERO,
                canary_steps: vec![50, 100],
                canary_interval: Duration::from_millis(20),
                max_parallel: 4,
                on_host_failure,
                migration_timeout: Duration::from_secs(5),
            },
            traffic: None,
            smoke: None,
            analysis: None,
        })
    }

    struct Setup {
        units: Vec<Arc<dyn Target>>,
        log: Arc<Mutex<Vec<String>>>,
    }

    fn fleet(n: usize, failing: Option<(usize, &'static str)>, slow_shift: Duration) -> Setup {
        let log = Arc::new(Mutex::new(Vec::new()));
        let units = (0..n)
            .map(|i| {
                Arc::new(Fake {
                    name: format!("h{i}"),
                    log: log.clone(),
                    fail_at: failing.filter(|(f, _)| *f == i).map(|(_, w)| w),
                    slow_shift,
                }) as Arc<dyn Target>
            })
            .collect();
        Setup { units, log }
    }

    fn runner() -> Runner {
        Runner::new(Box::new(std::io::sink()), Redactor::new(), None, None)
    }

    async fn go(s: &Setup, kind: StrategyKind, on: OnHostFailure, cancel: &CancellationToken) -> FleetReport {
        let c = cfg(on);
        let phases = strategy::phases(kind, &c.rollout, s.units.len(), false);
        run(&s.units, &phases, release(), c, &runner(), cancel).await
    }

    fn entries(s: &Setup, what: &str) -> Vec<String> {
        s.log.lock().unwrap().iter().filter(|e| e.ends_with(&format!(":{what}"))).cloned().collect()
    }

    #[tokio::test]
    async fn first_host_is_a_barrier_and_everyone_deploys() {
        let s = fleet(3, None, Duration::ZERO);
        let r = go(&s, StrategyKind::BlueGreen, OnHostFailure::RollbackAll, &CancellationToken::new()).await;
        assert!(r.error.is_none(), "{:?}", r.error);
        let log = s.log.lock().unwrap().clone();
        let first_switch = log.iter().position(|e| e == "h0:shift").unwrap();
        let others_launch = log.iter().position(|e| e == "h1:launch" || e == "h2:launch").unwrap();
        assert!(first_switch < others_launch, "nobody launches before the first host switched: {log:?}");
        assert_eq!(entries(&s, "retire").len(), 3);
        assert!(r.units.iter().all(|(_, o, _)| *o == UnitOutcome::Deployed));
    }

    #[tokio::test]
    async fn a_failing_third_host_rolls_back_every_host() {
        let s = fleet(3, Some((2, "health")), Duration::ZERO);
        let r = go(&s, StrategyKind::BlueGreen, OnHostFailure::RollbackAll, &CancellationToken::new()).await;
        assert_eq!(r.error.as_ref().map(Error::reason), Some("health_check_failed"));
        assert_eq!(r.failed_stage, Some("verify"));
        assert!(r.rolled_back && !r.committed);
        assert_eq!(entries(&s, "rollback").len(), 3, "all three hosts go back");
        assert!(entries(&s, "retire").is_empty());
    }

    #[tokio::test]
    async fn first_host_failure_stops_the_rest_from_starting() {
        let s = fleet(3, Some((0, "launch")), Duration::ZERO);
        let r = go(&s, StrategyKind::BlueGreen, OnHostFailure::RollbackAll, &CancellationToken::new()).await;
        assert!(r.error.is_some());
        assert!(!s.log.lock().unwrap().iter().any(|e| e == "h1:launch" || e == "h2:launch"));
    }

    #[tokio::test]
    async fn keep_going_rolls_back_only_the_failed_host() {
        let s = fleet(3, Some((2, "launch")), Duration::ZERO);
        let r = go(&s, StrategyKind::BlueGreen, OnHostFailure::KeepGoing, &CancellationToken::new()).await;
        assert!(r.error.is_some());
        assert_eq!(entries(&s, "rollback"), ["h2:rollback"]);
        assert_eq!(entries(&s, "retire").len(), 2);
    }

    #[tokio::test]
    async fn observe_failures_switch_back() {
        let s = fleet(1, Some((0, "observe")), Duration::ZERO);
        let r = go(&s, StrategyKind::BlueGreen, OnHostFailure::RollbackAll, &CancellationToken::new()).await;
        assert_eq!(r.error.as_ref().map(Error::reason), Some("observe_failed"));
        assert_eq!(entries(&s, "rollback").len(), 1);
    }

    #[tokio::test]
    async fn a_healthy_worker_does_not_hide_a_failing_web_service() {
        // The web service fails every check through the proxy; the worker
        // beside it is always running. One shared streak was reset by the
        // worker each round and the deploy committed.
        let s = fleet(1, Some((0, "observe")), Duration::ZERO);
        let mut r = (*release()).clone();
        let mut worker = r.services[0].clone();
        worker.name = "worker".into();
        worker.behind_proxy = false;
        worker.health_path = None;
        r.services.push(worker);
        let phases =
            strategy::phases(StrategyKind::BlueGreen, &cfg(OnHostFailure::RollbackAll).rollout, 1, false);
        let runner = crate::runner::Runner::new(Box::new(std::io::sink()), Redactor::new(), None, None);
        let report = run(
            &s.units,
            &phases,
            Arc::new(r),
            cfg(OnHostFailure::RollbackAll),
            &runner,
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(report.error.as_ref().map(Error::reason), Some("observe_failed"), "{:?}", report.error);
        assert_eq!(entries(&s, "rollback").len(), 1);
    }

    /// Reads `OK` once, then a breach; counts its readings.
    struct Breaching(Arc<std::sync::atomic::AtomicU32>);

    #[async_trait]
    impl crate::analysis::Source for Breaching {
        fn name(&self) -> String {
            "CloudWatch alarms 'api-5xx'".into()
        }
        fn unavailable_code(&self) -> &'static str {
            "alarms_unavailable"
        }
        async fn read(&self) -> Result<Vec<crate::analysis::Figure>, crate::analysis::ReadError> {
            use crate::analysis::{AnalysisError, Figure, Verdict, When};
            let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let verdict = match n {
                0 => Verdict::Ok,
                _ => Verdict::Breach(AnalysisError::AlarmBreached {
                    alarm: "api-5xx".into(),
                    reason: String::new(),
                    when: When::Window,
                }),
            };
            Ok(vec![Figure { source: "a".into(), value: "x".into(), threshold: String::new(), verdict }])
        }
    }

    #[tokio::test]
    async fn an_analysis_breach_in_the_window_rolls_every_host_back() {
        let s = fleet(3, None, Duration::ZERO);
        let reads = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let analysis =
            Analysis::new(Duration::from_millis(40), vec![Box::new(Breaching(reads.clone()))], &runner());
        let base = cfg(OnHostFailure::RollbackAll);
        let mut rollout = base.rollout.clone();
        rollout.observe_window = Duration::from_secs(5);
        let c = Arc::new(FleetConfig {
            health: base.health.clone(),
            rollout,
            traffic: None,
            smoke: None,
            analysis: Some(Arc::new(analysis)),
        });
        let phases = strategy::phases(StrategyKind::BlueGreen, &c.rollout, 3, false);
        let t0 = std::time::Instant::now();
        let r = run(&s.units, &phases, release(), c, &runner(), &CancellationToken::new()).await;
        assert_eq!(r.error.as_ref().map(Error::reason), Some("alarm_breached"), "{:?}", r.error);
        assert_eq!(r.failed_stage, Some("observe"));
        assert!(r.rolled_back && !r.committed);
        assert_eq!(entries(&s, "rollback").len(), 3, "every host goes back");
        assert!(entries(&s, "retire").is_empty());
        assert!(t0.elapsed() < Duration::from_secs(2), "the breach ended the window");
        // Three hosts checking every 10 ms shared the readings: OK, breach.
        assert_eq!(reads.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn canary_shifts_every_step_then_retires() {
        let s = fleet(2, None, Duration::ZERO);
        let r = go(&s, StrategyKind::Canary, OnHostFailure::RollbackAll, &CancellationToken::new()).await;
        assert!(r.error.is_none());
        assert_eq!(entries(&s, "shift50").len(), 2);
        assert_eq!(entries(&s, "shift100").len(), 2);
    }

    #[tokio::test]
    async fn cancellation_finishes_the_switch_then_rolls_back() {
        let s = fleet(1, None, Duration::from_millis(300));
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        let log = s.log.clone();
        tokio::spawn(async move {
            // Cancel while the switch is in flight.
            loop {
                if log.lock().unwrap().iter().any(|e| e == "h0:launch") {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
            c2.cancel();
        });
        let t0 = std::time::Instant::now();
        let r = go(&s, StrategyKind::BlueGreen, OnHostFailure::RollbackAll, &cancel).await;
        assert!(matches!(r.error, Some(Error::Cancelled)), "{:?}", r.error);
        let log = s.log.lock().unwrap().clone();
        let shift = log.iter().position(|e| e == "h0:shift").expect("the in-flight switch finished");
        let rollback = log.iter().position(|e| e == "h0:rollback").expect("then rolled back");
        assert!(shift < rollback);
        assert!(!log.iter().any(|e| e == "h0:retire"));
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
}
