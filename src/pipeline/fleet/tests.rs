//! The fleet driver against units faked in memory: the first host as a
//! barrier, rolling back every host or only the failed one, the observe
//! window and the analysis, a canary's shifts.

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
    assert!(r.units.iter().all(|u| u.outcome == Outcome::Deployed(String::new())));
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
