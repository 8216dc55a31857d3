//! Analysis during the observe window: what users see, read from outside
//! the action — CloudWatch alarms ([`alarms`], as AWS CodeDeploy reads
//! them) and a Prometheus query ([`prometheus`], as an Argo Rollouts
//! analysis) — beside the action's own health checks.
//!
//! One [`Analysis`] per run, shared as an `Arc` by every caller: each host's
//! observe loop, a cluster's blue-green window, each canary step. The rules:
//!
//! - **Pre-flight** ([`Analysis::preflight`]): every source is read once
//!   before anything changes. An alarm that does not exist, a query the
//!   server refuses, a source that cannot be read, or a breach already
//!   there (an alarm in `ALARM`, as CodeDeploy refuses) stops the run with
//!   nothing changed. A query returning no series is only a warning there
//!   (its series may appear once traffic moves).
//! - **During the window** ([`Analysis::check`]): a source is read at most
//!   once per interval, however many callers ask: its last reading is
//!   reused until it is 90% of an interval old (so a caller ticking at the
//!   interval never skips one). A breach is kept: once seen, every caller
//!   fails with it, and every host's observe loop rolls back.
//! - **A source that cannot be read** (no answer within [`READ_TIMEOUT`],
//!   an error, a result that is not one number) is a warning; `ERROR_LIMIT`
//!   such readings in a row fail the deploy (`alarms_unavailable`,
//!   `analysis_unavailable`), as Argo Rollouts counts consecutive errors.
//! - **Every reading** goes to the log and the job summary's "What users
//!   saw" table ([`Runner::check`]), the value, the threshold and the time.

pub mod alarms;
pub mod prometheus;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::inputs::AnalysisSpec;
use crate::runner::Runner;

/// Readings in a row that may fail before the deploy does.
pub const ERROR_LIMIT: u32 = 3;
/// One reading of one source, all its attempts included.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// When a breach was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Preflight,
    Window,
}

impl std::fmt::Display for When {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            When::Preflight => "before the deploy changed anything",
            When::Window => "during the observe window",
        })
    }
}

/// Why the analysis stops a run. Text only, so it can be cloned to every
/// caller that asks after the breach.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnalysisError {
    #[error("CloudWatch alarm '{alarm}' is ALARM {when} (threshold: any alarm in ALARM){}", suffix(.reason))]
    AlarmBreached { alarm: String, reason: String, when: When },

    #[error("analysis query '{query}' = {value}, {bound} {when}")]
    QueryBreached { query: String, value: String, bound: String, when: When },

    #[error("CloudWatch alarm(s) {} not found in {region}: rollback-alarms must name existing alarms", quoted(.names))]
    AlarmNotFound { names: Vec<String>, region: String },

    #[error("Prometheus at {url} refused analysis query '{query}': {message}")]
    QueryInvalid { url: String, query: String, message: String },

    #[error("{what} could not be read {when} ({count} time(s) in a row; last: {message})")]
    Unavailable { what: String, code: &'static str, count: u32, message: String, when: When },

    #[error("cancelled")]
    Cancelled,
}

fn suffix(reason: &str) -> String {
    if reason.is_empty() { String::new() } else { format!(": {reason}") }
}

fn quoted(names: &[String]) -> String {
    names.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ")
}

impl AnalysisError {
    /// Stable reason code.
    pub fn reason(&self) -> &'static str {
        match self {
            AnalysisError::AlarmBreached { .. } => "alarm_breached",
            AnalysisError::QueryBreached { .. } => "analysis_breached",
            AnalysisError::AlarmNotFound { .. } => "alarm_not_found",
            AnalysisError::QueryInvalid { .. } => "analysis_query_invalid",
            AnalysisError::Unavailable { code, .. } => code,
            AnalysisError::Cancelled => "cancelled",
        }
    }

    fn at(mut self, at: When) -> Self {
        match &mut self {
            AnalysisError::AlarmBreached { when, .. }
            | AnalysisError::QueryBreached { when, .. }
            | AnalysisError::Unavailable { when, .. } => *when = at,
            _ => {}
        }
        self
    }
}

/// One figure of a reading: an alarm's state, a query's value.
#[derive(Debug, Clone)]
pub struct Figure {
    /// `CloudWatch alarm 'api-5xx'`, `analysis query 'sum(...)'`.
    pub source: String,
    /// `OK`, `0.031`; `-` when nothing was read.
    pub value: String,
    /// `ALARM rolls back`, `max 0.1`.
    pub threshold: String,
    pub verdict: Verdict,
}

#[derive(Debug, Clone)]
pub enum Verdict {
    Ok,
    Breach(AnalysisError),
    /// Read, but not a figure that can be judged (no series, NaN...).
    Unreadable(String),
}

/// Why a source could not be read.
#[derive(Debug, Clone)]
pub enum ReadError {
    /// The source says the settings are wrong (no such alarm, a query it
    /// rejects): fatal before the deploy, a failed reading during it.
    Refused(AnalysisError),
    /// It could not be reached or answered an error.
    Failed(String),
}

/// A place figures are read from.
#[async_trait]
pub trait Source: Send + Sync {
    /// How messages name it: `CloudWatch alarms`, `analysis query 'up'`.
    fn name(&self) -> String;
    /// The reason code once it could not be read [`ERROR_LIMIT`] times.
    fn unavailable_code(&self) -> &'static str;
    /// One reading: a figure per alarm, or the query's one value.
    ///
    /// # Errors
    /// [`ReadError`]; a breach is a figure, not an error.
    async fn read(&self) -> Result<Vec<Figure>, ReadError>;
}

#[derive(Default)]
struct Memo {
    /// When the last reading was started.
    read_at: Option<Instant>,
    /// Failed readings in a row.
    errors: u32,
    /// A breach or an unreadable source: kept, and returned to every caller.
    failed: Option<AnalysisError>,
}

struct Watched {
    source: Box<dyn Source>,
    memo: tokio::sync::Mutex<Memo>,
}

/// The run's analysis sources, read at most once per interval.
pub struct Analysis {
    interval: Duration,
    sources: Vec<Watched>,
    runner: Runner,
}

impl Analysis {
    /// The sources of `spec`, not yet read.
    ///
    /// # Errors
    /// A Prometheus client that cannot be built.
    pub async fn from_spec(spec: &AnalysisSpec, runner: &Runner) -> Result<Arc<Self>, AnalysisError> {
        let mut sources: Vec<Box<dyn Source>> = Vec::new();
        if !spec.alarms.is_empty() {
            let region = spec.region.clone().unwrap_or_default();
            sources.push(Box::new(alarms::Alarms::new(&region, spec.alarms.clone()).await));
        }
        if let Some(q) = &spec.query {
            sources.push(Box::new(prometheus::Query::new(q)?));
        }
        Ok(Arc::new(Self::new(spec.interval, sources, runner)))
    }

    pub fn new(interval: Duration, sources: Vec<Box<dyn Source>>, runner: &Runner) -> Self {
        Self {
            interval,
            sources: sources.into_iter().map(|source| Watched { source, memo: Default::default() }).collect(),
            runner: runner.clone(),
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The sources, for the log: `CloudWatch alarms 'a', 'b'; analysis query 'x' (max 0.1)`.
    pub fn describe(&self) -> String {
        self.sources.iter().map(|w| w.source.name()).collect::<Vec<_>>().join("; ")
    }

    /// Reads every source once, before anything changes.
    ///
    /// # Errors
    /// A breach, a missing alarm, a refused query, a source that cannot be
    /// read, or [`AnalysisError::Cancelled`].
    pub async fn preflight(&self, cancel: &CancellationToken) -> Result<(), AnalysisError> {
        for w in &self.sources {
            let read = tokio::select! {
                r = read_bounded(w.source.as_ref()) => r,
                _ = cancel.cancelled() => return Err(AnalysisError::Cancelled),
            };
            let figures = match read {
                Ok(f) => f,
                Err(ReadError::Refused(e)) => {
                    self.record(w.source.as_ref(), true, &Err(ReadError::Refused(e.clone())));
                    return Err(e);
                }
                Err(ReadError::Failed(message)) => {
                    self.record(w.source.as_ref(), true, &Err(ReadError::Failed(message.clone())));
                    return Err(AnalysisError::Unavailable {
                        what: w.source.name(),
                        code: w.source.unavailable_code(),
                        count: 1,
                        message,
                        when: When::Preflight,
                    });
                }
            };
            self.record(w.source.as_ref(), true, &Ok(figures.clone()));
            for f in &figures {
                match &f.verdict {
                    Verdict::Breach(e) => return Err(e.clone().at(When::Preflight)),
                    Verdict::Unreadable(why) => self.runner.warning(
                        w.source.unavailable_code(),
                        &format!("{}: {why} (before the deploy; judged again during the window)", f.source),
                    ),
                    Verdict::Ok => {}
                }
            }
        }
        Ok(())
    }

    /// Judges the window now: each source read unless its last reading is
    /// fresh (see the module's rules).
    ///
    /// # Errors
    /// A breach, a source unreadable [`ERROR_LIMIT`] times in a row, or
    /// [`AnalysisError::Cancelled`].
    pub async fn check(&self, cancel: &CancellationToken) -> Result<(), AnalysisError> {
        let fresh_for = self.interval - self.interval / 10;
        for w in &self.sources {
            let mut memo = tokio::select! {
                m = w.memo.lock() => m,
                _ = cancel.cancelled() => return Err(AnalysisError::Cancelled),
            };
            if let Some(e) = &memo.failed {
                return Err(e.clone());
            }
            if memo.read_at.is_some_and(|t| t.elapsed() < fresh_for) {
                continue;
            }
            memo.read_at = Some(Instant::now());
            let read = tokio::select! {
                r = read_bounded(w.source.as_ref()) => r,
                _ = cancel.cancelled() => {
                    memo.read_at = None;
                    return Err(AnalysisError::Cancelled);
                }
            };
            self.record(w.source.as_ref(), false, &read);
            let problem = match read {
                Ok(figures) => {
                    if let Some(e) = figures.iter().find_map(|f| match &f.verdict {
                        Verdict::Breach(e) => Some(e.clone().at(When::Window)),
                        _ => None,
                    }) {
                        memo.failed = Some(e.clone());
                        return Err(e);
                    }
                    figures.iter().find_map(|f| match &f.verdict {
                        Verdict::Unreadable(why) => Some(format!("{}: {why}", f.source)),
                        _ => None,
                    })
                }
                Err(ReadError::Refused(e)) => Some(e.to_string()),
                Err(ReadError::Failed(m)) => Some(m),
            };
            match problem {
                None => memo.errors = 0,
                Some(message) => {
                    memo.errors += 1;
                    if memo.errors >= ERROR_LIMIT {
                        let e = AnalysisError::Unavailable {
                            what: w.source.name(),
                            code: w.source.unavailable_code(),
                            count: memo.errors,
                            message,
                            when: When::Window,
                        };
                        memo.failed = Some(e.clone());
                        return Err(e);
                    }
                    self.runner.warning(
                        w.source.unavailable_code(),
                        &format!(
                            "{} could not be read ({} of {ERROR_LIMIT} allowed in a row): {message}",
                            w.source.name(),
                            memo.errors
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// Every reading, to the log and the summary's "What users saw":
    /// `analysis query 'x': 0.05 (max 0.1) at 12:00:01Z (ok)`.
    fn record(&self, source: &dyn Source, preflight: bool, read: &Result<Vec<Figure>, ReadError>) {
        let at = chrono::Utc::now().format("%H:%M:%SZ");
        let figures = match read {
            Ok(f) => f.clone(),
            Err(e) => vec![Figure {
                source: source.name(),
                value: "-".into(),
                threshold: String::new(),
                verdict: Verdict::Unreadable(match e {
                    ReadError::Refused(e) => e.to_string(),
                    ReadError::Failed(m) => m.clone(),
                }),
            }],
        };
        for f in figures {
            let verdict = match &f.verdict {
                Verdict::Ok => "ok".to_string(),
                Verdict::Breach(_) => "breach".to_string(),
                Verdict::Unreadable(why) => format!("not read: {why}"),
            };
            let verdict = if preflight { format!("{verdict}, before the deploy") } else { verdict };
            let figure = match f.threshold.as_str() {
                "" => format!("{} at {at}", f.value),
                t => format!("{} ({t}) at {at}", f.value),
            };
            self.runner.check_reading(&f.source, None, figure, &verdict);
        }
    }
}

async fn read_bounded(source: &dyn Source) -> Result<Vec<Figure>, ReadError> {
    tokio::time::timeout(READ_TIMEOUT, source.read())
        .await
        .unwrap_or_else(|_| Err(ReadError::Failed(format!("no answer within {}s", READ_TIMEOUT.as_secs()))))
}

#[cfg(test)]
mod tests;
