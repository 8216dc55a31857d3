//! The observe window, for every target: after the switch (and at each
//! canary step) the sources of evidence are read every round until the
//! window ends, and once more at its end; the analysis (CloudWatch alarms,
//! the Prometheus query) is read with them, at most once per its own
//! interval for every caller. The first failure ends the window. Hosts read
//! their services through the front door and nginx's access log
//! (`health::observe`); a cluster reads its Deployments' availability
//! (`kubernetes::observe::window`).

use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::analysis::{Analysis, AnalysisError};

/// One kind of evidence the window reads every round. `last`: the reading
/// at the window's end (a source may record its figure for the summary).
#[async_trait]
pub trait Source<E>: Send {
    async fn read(&mut self, last: bool) -> Result<(), E>;
}

/// Reads the analysis and every source each round (`every`, shortened to
/// fit the window) until `end`, then once more. `analysis_failed` says a
/// breach (or a source that cannot be read) in the target's error.
/// `Err(None)`: cancelled.
pub async fn window<E>(
    end: Instant,
    every: Duration,
    analysis: Option<&Analysis>,
    analysis_failed: impl Fn(AnalysisError) -> E,
    sources: &mut [&mut (dyn Source<E> + '_)],
    cancel: &CancellationToken,
) -> Result<(), Option<E>> {
    loop {
        if let Some(a) = analysis {
            match a.check(cancel).await {
                Ok(()) => {}
                Err(AnalysisError::Cancelled) => return Err(None),
                Err(e) => return Err(Some(analysis_failed(e))),
            }
        }
        let last = Instant::now() >= end;
        for source in sources.iter_mut() {
            source.read(last).await.map_err(Some)?;
        }
        if last {
            return Ok(());
        }
        let wait = every.min(end.saturating_duration_since(Instant::now())).max(Duration::from_millis(50));
        tokio::select! {
            () = cancel.cancelled() => return Err(None),
            () = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts its readings and fails at the `fail_at`-th.
    struct Counted {
        reads: Vec<bool>,
        fail_at: Option<usize>,
    }

    #[async_trait]
    impl Source<String> for Counted {
        async fn read(&mut self, last: bool) -> Result<(), String> {
            self.reads.push(last);
            match self.fail_at {
                Some(n) if self.reads.len() == n => Err(format!("failed at reading {n}")),
                _ => Ok(()),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn every_source_is_read_each_round_and_once_more_at_the_end() {
        let cancel = CancellationToken::new();
        let (mut a, mut b) =
            (Counted { reads: vec![], fail_at: None }, Counted { reads: vec![], fail_at: None });
        let end = Instant::now() + Duration::from_secs(3);
        let r = window(end, Duration::from_secs(1), None, |e| e.to_string(), &mut [&mut a, &mut b], &cancel)
            .await;
        assert_eq!(r, Ok(()));
        assert_eq!(a.reads, [false, false, false, true]);
        assert_eq!(b.reads, a.reads);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_failure_ends_the_window_and_a_signal_ends_it_as_cancelled() {
        let cancel = CancellationToken::new();
        let end = Instant::now() + Duration::from_secs(30);
        let (mut a, mut b) =
            (Counted { reads: vec![], fail_at: Some(2) }, Counted { reads: vec![], fail_at: None });
        let r = window(end, Duration::from_secs(1), None, |e| e.to_string(), &mut [&mut a, &mut b], &cancel)
            .await;
        assert_eq!(r, Err(Some("failed at reading 2".into())));
        assert_eq!((a.reads.len(), b.reads.len()), (2, 1), "the failure ends the round too");

        let t0 = Instant::now();
        let stop = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            stop.cancel();
        });
        let mut c = Counted { reads: vec![], fail_at: None };
        let r = window(end, Duration::from_secs(1), None, |e| e.to_string(), &mut [&mut c], &cancel).await;
        assert_eq!(r, Err(None));
        assert_eq!(t0.elapsed(), Duration::from_millis(2500));
        assert_eq!(c.reads, [false, false, false]);
    }
}
