//! The decision rules on a scripted source, in paused time.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;

/// A source that answers from a script (then `default`), counting reads.
struct Scripted {
    reads: Arc<AtomicU32>,
    script: Mutex<VecDeque<Result<Vec<Figure>, ReadError>>>,
    default: Result<Vec<Figure>, ReadError>,
    delay: Duration,
}

fn value(v: &str, verdict: Verdict) -> Figure {
    Figure { source: "q".into(), value: v.into(), threshold: "max 1".into(), verdict }
}

fn ok(v: &str) -> Result<Vec<Figure>, ReadError> {
    Ok(vec![value(v, Verdict::Ok)])
}

fn breach(v: &str) -> Result<Vec<Figure>, ReadError> {
    let e = AnalysisError::QueryBreached {
        query: "q".into(),
        value: v.into(),
        bound: "above analysis-max 1".into(),
        when: When::Window,
    };
    Ok(vec![value(v, Verdict::Breach(e))])
}

fn down() -> Result<Vec<Figure>, ReadError> {
    Err(ReadError::Failed("connection refused".into()))
}

#[async_trait]
impl Source for Scripted {
    fn name(&self) -> String {
        "analysis query 'q' (max 1)".into()
    }
    fn unavailable_code(&self) -> &'static str {
        "analysis_unavailable"
    }
    async fn read(&self) -> Result<Vec<Figure>, ReadError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        let next = self.script.lock().unwrap().pop_front();
        next.unwrap_or_else(|| self.default.clone())
    }
}

const I: Duration = Duration::from_secs(10);

use crate::runner::memory::Log;

/// The readings recorded (`runner.check` lines of source `q`), without
/// their time: `0.1 (max 1) (ok)`.
fn readings(log: &Log) -> Vec<String> {
    let time = regex::Regex::new(r" at \d\d:\d\d:\d\dZ").unwrap();
    log.text()
        .lines()
        .filter_map(|l| l.strip_prefix("q: "))
        .map(|l| time.replace(l, "").into_owned())
        .collect()
}

fn analysis(
    script: Vec<Result<Vec<Figure>, ReadError>>,
    default: Result<Vec<Figure>, ReadError>,
) -> (Arc<Analysis>, Arc<AtomicU32>, Log) {
    analysis_slow(script, default, Duration::ZERO)
}

fn analysis_slow(
    script: Vec<Result<Vec<Figure>, ReadError>>,
    default: Result<Vec<Figure>, ReadError>,
    delay: Duration,
) -> (Arc<Analysis>, Arc<AtomicU32>, Log) {
    let reads = Arc::new(AtomicU32::new(0));
    let source = Scripted { reads: reads.clone(), script: Mutex::new(script.into()), default, delay };
    let log = Log::default();
    let runner = log.runner();
    (Arc::new(Analysis::new(I, vec![Box::new(source)], &runner)), reads, log)
}

#[tokio::test(start_paused = true)]
async fn many_callers_share_one_reading_per_interval() {
    let (a, reads, log) = analysis(vec![], ok("0.1"));
    let cancel = CancellationToken::new();
    // Eight hosts, each checking every second for 25 s.
    let hosts = (0..8).map(|_| {
        let (a, cancel) = (a.clone(), cancel.clone());
        tokio::spawn(async move {
            for _ in 0..=25 {
                a.check(&cancel).await.unwrap();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    });
    for h in futures::future::join_all(hosts).await {
        h.unwrap();
    }
    // At 0, 10 and 20 s: once per interval, not once per host.
    assert_eq!(reads.load(Ordering::SeqCst), 3);
    assert_eq!(readings(&log), ["0.1 (max 1) (ok)"; 3], "every reading recorded");
}

/// A caller ticking at the interval: checks now and every interval until
/// `end`, as a cluster's observe window did before the shared one.
async fn watch_until(a: &Analysis, end: Instant, cancel: &CancellationToken) -> Result<(), AnalysisError> {
    let start = Instant::now();
    for k in 1u32.. {
        a.check(cancel).await?;
        let next = start + a.interval * k;
        let wake = if next > end { end } else { next };
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = cancel.cancelled() => return Err(AnalysisError::Cancelled),
        }
        if next > end {
            break;
        }
    }
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_caller_ticking_at_the_interval_never_skips_a_reading() {
    let (a, reads, _) = analysis(vec![], ok("0.1"));
    let cancel = CancellationToken::new();
    let end = Instant::now() + I * 3;
    watch_until(&a, end, &cancel).await.unwrap();
    assert_eq!(Instant::now(), end);
    // At 0, 10, 20 and 30 s (the end itself).
    assert_eq!(reads.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn a_reading_taken_a_moment_late_does_not_hide_the_next_tick() {
    // A caller's tick wakes a little after its instant, and a reading
    // starts a little after the tick: the next tick finds the last reading
    // a hair younger than the interval, and must still read.
    let (a, reads, _) = analysis(vec![], ok("0.1"));
    let cancel = CancellationToken::new();
    let start = Instant::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    a.check(&cancel).await.unwrap();
    tokio::time::sleep_until(start + I).await;
    a.check(&cancel).await.unwrap();
    assert_eq!(reads.load(Ordering::SeqCst), 2);
    // Well within the interval, it is reused.
    tokio::time::sleep(I / 2).await;
    a.check(&cancel).await.unwrap();
    assert_eq!(reads.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_breach_is_kept_for_every_caller() {
    let (a, reads, log) = analysis(vec![ok("0.5"), breach("3")], ok("0.1"));
    let cancel = CancellationToken::new();
    a.check(&cancel).await.unwrap();
    tokio::time::sleep(I).await;
    let e = a.check(&cancel).await.unwrap_err();
    assert_eq!(e.reason(), "analysis_breached");
    assert!(e.to_string().contains("= 3, above analysis-max 1 during the observe window"), "{e}");
    // Later callers, within the interval or long after: the same breach,
    // without reading again (the source would now say 0.1).
    for wait in [Duration::ZERO, I * 5] {
        tokio::time::sleep(wait).await;
        assert_eq!(a.check(&cancel).await.unwrap_err(), e);
    }
    assert_eq!(reads.load(Ordering::SeqCst), 2);
    assert_eq!(readings(&log), ["0.5 (max 1) (ok)", "3 (max 1) (breach)"]);
}

#[tokio::test(start_paused = true)]
async fn failed_readings_warn_until_three_in_a_row() {
    let (a, reads, _) = analysis(vec![down(), down(), ok("0.2"), down(), down()], down());
    let cancel = CancellationToken::new();
    let mut verdicts = Vec::new();
    for _ in 0..6 {
        verdicts.push(a.check(&cancel).await.map_err(|e| e.reason()));
        tokio::time::sleep(I).await;
    }
    // Two failures, a good reading (the count starts again), then three.
    assert_eq!(verdicts[..5], [Ok(()), Ok(()), Ok(()), Ok(()), Ok(())]);
    let e = a.check(&cancel).await;
    assert_eq!(verdicts[5], Err("analysis_unavailable"));
    let Err(AnalysisError::Unavailable { count, message, .. }) = e else { panic!("{e:?}") };
    assert_eq!((count, message.as_str()), (3, "connection refused"));
    assert_eq!(reads.load(Ordering::SeqCst), 6, "no reading after the limit");
}

#[tokio::test(start_paused = true)]
async fn a_result_that_is_not_one_number_counts_as_a_failed_reading() {
    let unreadable = Ok(vec![value("-", Verdict::Unreadable("it returned no series".into()))]);
    let (a, _, _) = analysis(vec![], unreadable);
    let cancel = CancellationToken::new();
    for _ in 0..2 {
        a.check(&cancel).await.unwrap();
        tokio::time::sleep(I).await;
    }
    let e = a.check(&cancel).await.unwrap_err();
    assert!(e.to_string().contains("q: it returned no series"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn a_slow_source_is_a_failed_reading_after_the_timeout() {
    let (a, _, log) = analysis_slow(vec![], ok("0.1"), READ_TIMEOUT * 2);
    let t0 = Instant::now();
    a.check(&CancellationToken::new()).await.unwrap();
    assert_eq!(t0.elapsed(), READ_TIMEOUT);
    let text = log.text();
    assert!(text.contains("analysis query 'q' (max 1): - at "), "{text}");
    assert!(text.contains("(not read: no answer within 5s)"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn cancellation_stops_a_reading_at_once() {
    let (a, _, _) = analysis_slow(vec![], ok("0.1"), Duration::from_secs(4));
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        c.cancel();
    });
    let t0 = Instant::now();
    assert_eq!(a.check(&cancel).await, Err(AnalysisError::Cancelled));
    assert_eq!(t0.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn preflight_stops_on_a_breach_or_an_unreachable_source_and_warns_on_no_series() {
    let cancel = CancellationToken::new();
    let (a, _, log) = analysis(vec![breach("2")], ok("0"));
    let e = a.preflight(&cancel).await.unwrap_err();
    assert!(e.to_string().contains("= 2, above analysis-max 1 before the deploy changed anything"), "{e}");
    assert_eq!(readings(&log), ["2 (max 1) (breach, before the deploy)"]);

    let (a, _, _) = analysis(vec![down()], ok("0"));
    let e = a.preflight(&cancel).await.unwrap_err();
    assert_eq!(e.reason(), "analysis_unavailable");
    assert!(e.to_string().contains("could not be read before the deploy changed anything"), "{e}");

    let refused =
        AnalysisError::QueryInvalid { url: "u".into(), query: "q".into(), message: "refused".into() };
    let (a, _, _) = analysis(vec![Err(ReadError::Refused(refused.clone()))], ok("0"));
    assert_eq!(a.preflight(&cancel).await.unwrap_err(), refused);

    let (a, reads, _) =
        analysis(vec![Ok(vec![value("-", Verdict::Unreadable("no series".into()))])], ok("0"));
    a.preflight(&cancel).await.unwrap();
    // The window's first check reads again (the pre-flight is not its memo).
    a.check(&cancel).await.unwrap();
    assert_eq!(reads.load(Ordering::SeqCst), 2);
}
