//! The way back after a signal. The runner sends SIGKILL 7.5 s after
//! SIGINT, so the steps that undo a deploy (Services flipped back,
//! Deployments and workers undone, a canary removed, candidates scaled to
//! zero) share one budget, [`WAY_BACK`], counted from the moment the first
//! of them saw the signal. Each taking a budget of its own, three slow
//! steps of 4 s would pass the runner's grace. Steps run in the order that
//! matters most: traffic first, then what serves it, then clean-up.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The whole way back after a signal, leaving time for the final GitHub
/// status within the runner's 7.5 s.
pub const WAY_BACK: Duration = Duration::from_secs(5);

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

#[cfg(test)]
mod tests {
    use super::*;

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
