//! The way back after a signal, for every target. The runner sends SIGTERM
//! 7.5 s after SIGINT and gives up at 10 s; a deploy must be in a safe
//! state, its final status recorded, within 7 s. So the steps that undo a
//! deploy (hosts: every unit back to its previous colour; a cluster:
//! Services flipped back, Deployments and workers undone, a canary removed,
//! candidates scaled to zero) share one budget, [`WAY_BACK`], counted from
//! the moment the first of them saw the signal. Each taking a budget of its own, three slow
//! steps of 4 s would pass the runner's grace. Steps run in the order that
//! matters most: traffic first, then what serves it, then clean-up.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::inputs::grammar::span;
use crate::runner::Runner;

/// The whole way back after a signal, leaving 2.5 s of the 7 for the
/// final GitHub status and the summary. The one budget of both targets
/// (hosts had 4.5 s and clusters 5 s before they shared it).
pub const WAY_BACK: Duration = Duration::from_millis(4500);

/// One run's way back: the run's cancellation and the shared deadline.
pub struct WayBack<'a> {
    cancel: &'a CancellationToken,
    total: Duration,
    seen: OnceLock<Instant>,
}

impl<'a> WayBack<'a> {
    pub fn new(cancel: &'a CancellationToken) -> Self {
        Self::within(cancel, WAY_BACK)
    }

    /// A way back of `total` after the signal (tests use short ones).
    pub fn within(cancel: &'a CancellationToken, total: Duration) -> Self {
        WayBack { cancel, total, seen: OnceLock::new() }
    }

    pub fn cancel(&self) -> &'a CancellationToken {
        self.cancel
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Runs `step` for at most `own` (`None`: no bound of its own). Once the
    /// run is cancelled, before the step or while it runs, the step ends
    /// no later than the shared deadline. `None` when cut short.
    pub async fn bound<F: Future>(&self, own: Option<Duration>, step: F) -> Option<F::Output> {
        let own_end = own.map(|d| Instant::now() + d);
        let mut step = std::pin::pin!(step);
        if !self.cancel.is_cancelled() {
            let own_timer = async {
                match own_end {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                r = &mut step => return Some(r),
                () = own_timer => return None,
                () = self.cancel.cancelled() => {}
            }
        }
        let deadline = self.deadline();
        let end = own_end.map_or(deadline, |t| t.min(deadline));
        tokio::time::timeout_at(end, step).await.ok()
    }

    /// The shared deadline, counted from the first call after the signal.
    fn deadline(&self) -> Instant {
        *self.seen.get_or_init(Instant::now) + self.total
    }
}

/// The drain, for every target and every way out of traffic: once nothing
/// routes to some containers or pods any more (nginx reloaded to the other
/// colour, a Service's selector flipped, a canary's weight at 0), the
/// connections in flight and the routers that have not caught up yet
/// (endpoints, kube-proxy, ingress controllers) still send them requests
/// for a while. So they are kept `drain` before `before` stops, removes or
/// scales them down. A signal cuts the wait short: the way back's budget
/// goes to the clean-up, and the runner kills the job soon after. `false`
/// when it was cut short or skipped for a signal.
pub async fn drain(drain: Duration, before: &str, runner: &Runner, cancel: &CancellationToken) -> bool {
    if drain.is_zero() {
        return true;
    }
    if cancel.is_cancelled() {
        runner.line(&format!("no drain before {before}: cancelled"));
        return false;
    }
    runner.line(&format!("draining for {} before {before}", span(drain)));
    tokio::select! {
        () = tokio::time::sleep(drain) => true,
        () = cancel.cancelled() => {
            runner.line("drain cut short: cancelled");
            false
        }
    }
}

/// The migration's way back, for every target: `migrate-rollback-command`
/// once traffic is back on the old version after a migration that had
/// succeeded. After a signal there is no time for it, so it is named for a
/// person to run (`by_hand`: "run … from … by hand"). Its failure is loud
/// (`migrate_rollback_failed`, naming `place`: the host or the Job) but
/// undoes nothing. `Err` carries why, for the summary.
pub async fn migration_back(
    place: &str,
    by_hand: &str,
    runner: &Runner,
    cancel: &CancellationToken,
    run: impl Future<Output = Result<(), String>>,
) -> Result<(), String> {
    let _g = runner.group("migrate-rollback-command (the migration ran; traffic is back)");
    let result = if cancel.is_cancelled() {
        Err(format!("cancelled before it could run; {by_hand}"))
    } else {
        run.await
    };
    if let Err(why) = &result {
        runner.error(
            "migrate_rollback_failed",
            &format!(
                "{place}: the migration's rollback failed ({why}); the schema may be ahead of the version serving"
            ),
        );
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_drain_waits_its_span_and_a_signal_cuts_it_short() {
        let buf = crate::runner::memory::Log::default();
        let runner = buf.runner();
        let cancel = CancellationToken::new();
        let t0 = Instant::now();
        assert!(drain(Duration::from_millis(1500), "web-blue is removed", &runner, &cancel).await);
        assert_eq!(t0.elapsed(), Duration::from_millis(1500));

        let t1 = Instant::now();
        let cut = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            cut.cancel();
        });
        assert!(!drain(Duration::from_secs(30), "the canary is removed", &runner, &cancel).await);
        assert_eq!(t1.elapsed(), Duration::from_secs(2));
        assert!(!drain(Duration::from_secs(30), "the old colour is scaled to 0", &runner, &cancel).await);
        assert!(drain(Duration::ZERO, "nothing", &runner, &cancel).await);
        assert_eq!(
            buf.text(),
            "draining for 1.5s before web-blue is removed\n\
             draining for 30s before the canary is removed\n\
             drain cut short: cancelled\n\
             no drain before the old colour is scaled to 0: cancelled\n"
        );
    }

    #[tokio::test]
    async fn after_a_signal_the_migrations_way_back_is_named_not_run() {
        let buf = crate::runner::memory::Log::default();
        let runner = buf.runner();
        let cancel = CancellationToken::new();
        cancel.cancel();
        let ran = std::sync::atomic::AtomicBool::new(false);
        let r = migration_back("web-1", "run `db down` by hand", &runner, &cancel, async {
            ran.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        })
        .await;
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(r, Err("cancelled before it could run; run `db down` by hand".into()));
        let log = buf.text();
        let want =
            "web-1: the migration's rollback failed (cancelled before it could run; run `db down` by hand)";
        assert!(log.contains("migrate_rollback_failed") && log.contains(want), "{log}");
        let ok = migration_back("web-1", "-", &runner, &CancellationToken::new(), async { Ok(()) }).await;
        assert_eq!(ok, Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn steps_after_a_signal_share_one_deadline() {
        let cancel = CancellationToken::new();
        let way = WayBack::within(&cancel, Duration::from_secs(5));
        cancel.cancel();
        let start = Instant::now();
        // 3 s of a 4 s step, then a second 4 s step gets only the 2 s left.
        let first = way.bound(Some(Duration::from_secs(4)), tokio::time::sleep(Duration::from_secs(3))).await;
        assert_eq!(first, Some(()));
        let second =
            way.bound(Some(Duration::from_secs(4)), tokio::time::sleep(Duration::from_secs(4))).await;
        assert_eq!(second, None);
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        // Past the deadline a step that would finish at once still may.
        assert_eq!(way.bound(None, async { 7 }).await, Some(7));
        assert_eq!(way.bound(None, tokio::time::sleep(Duration::from_millis(1))).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_signal_during_a_long_step_cuts_it_to_the_way_back() {
        let cancel = CancellationToken::new();
        let way = WayBack::within(&cancel, Duration::from_secs(5));
        let start = Instant::now();
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            c.cancel();
        });
        let r = way.bound(Some(Duration::from_secs(60)), tokio::time::sleep(Duration::from_secs(50))).await;
        assert_eq!(r, None);
        assert_eq!(start.elapsed(), Duration::from_secs(15));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_signal_a_step_keeps_its_own_bound() {
        let cancel = CancellationToken::new();
        let way = WayBack::within(&cancel, Duration::from_secs(5));
        let start = Instant::now();
        let r = way.bound(Some(Duration::from_secs(60)), tokio::time::sleep(Duration::from_secs(30))).await;
        assert_eq!(r, Some(()));
        let r = way.bound(Some(Duration::from_secs(2)), tokio::time::sleep(Duration::from_secs(30))).await;
        assert_eq!(r, None);
        assert_eq!(start.elapsed(), Duration::from_secs(32));
    }
}
