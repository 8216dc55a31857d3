//! The HTTP side: octocrab pointed at `GITHUB_API_URL`, one request at a
//! time, and the retry policy.
//!
//! We use octocrab's raw `_get`/`_post`, which hand back the status and the
//! headers: the policy needs `retry-after` and `x-ratelimit-*`, and the
//! error messages need GitHub's body.
//!
//! # Retry policy
//!
//! Retried: 5xx, no answer, 429 and 403 rate limits. The wait is
//! `retry-after` when given, else the time until `x-ratelimit-reset` when
//! `x-ratelimit-remaining` is 0, else exponential backoff with jitter. Every
//! call has a budget ([`RETRY_BUDGET`]): a wait that would end past it is not
//! started, the call fails at once with what GitHub said. Waits race the
//! cancellation token, and so do requests.

use std::time::Duration;

use rand::Rng;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

// `Reply` lives with the errors that classify it: client → errors only.
pub(crate) use super::errors::Reply;
use super::errors::{GithubError, Op, classify, secs};
use crate::redact::Redactor;
use crate::secrets::SecretValue;

/// How long one call may take, retries and waits included.
pub(crate) const RETRY_BUDGET: Duration = Duration::from_secs(60);
/// One request, from connect to the end of the body.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy)]
pub(crate) enum Method {
    Get,
    Post,
}

/// What to do after one attempt.
pub(crate) enum Next {
    Done(Reply),
    Fail(GithubError),
    /// Try again after `wait`. `ambiguous`: the request may have been
    /// carried out (5xx, no answer), so a create must look before repeating.
    Retry {
        wait: Duration,
        ambiguous: bool,
    },
}

/// Attempts of one call, against its budget.
pub(crate) struct Attempts {
    started: Instant,
    deadline: Instant,
    count: u32,
}

/// GitHub's REST API for one repository.
#[derive(Clone)]
pub(crate) struct Api {
    octo: octocrab::Octocrab,
    /// `GITHUB_API_URL` without a trailing slash: `https://HOST/api/v3`.
    base: String,
    /// `owner/repo`.
    pub repository: String,
    budget: Duration,
    /// Every string of every request body passes through it: a status
    /// description can quote a failed command's output.
    redactor: Redactor,
}

impl Api {
    /// Must run inside a Tokio runtime (octocrab spawns its worker there).
    ///
    /// # Errors
    /// No token, or an API URL octocrab cannot use.
    pub fn new(
        api_url: &str,
        token: Option<&SecretValue>,
        owner: &str,
        repo: &str,
        redactor: Redactor,
    ) -> Result<Self, GithubError> {
        let token = token.filter(|t| !t.expose().is_empty()).ok_or(GithubError::MissingToken)?;
        let base = api_url.trim_end_matches('/').to_string();
        let bad = |problem: String| GithubError::ApiUrl { url: api_url.to_string(), problem };
        let parsed = url::Url::parse(&base).map_err(|e| bad(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(bad("it must be an http(s) URL".into()));
        }
        // Requests are sent with absolute URLs under `base` (see `uri`), so
        // the base URI only serves octocrab to decide where the token may go:
        // to this authority and nowhere else.
        let octo = octocrab::Octocrab::builder()
            .base_uri(format!("{base}/"))
            .map_err(|e| bad(e.to_string()))?
            .personal_token(token.expose().to_string())
            .add_header(http::header::ACCEPT, "application/vnd.github+json".to_string())
            .set_connect_timeout(Some(Duration::from_secs(10)))
            .set_read_timeout(Some(REQUEST_TIMEOUT))
            .build()
            .map_err(|e| bad(format!("octocrab: {e}")))?;
        Ok(Self { octo, base, repository: format!("{owner}/{repo}"), budget: RETRY_BUDGET, redactor })
    }

    /// Same client, another retry budget (tests; the final status after a
    /// cancellation).
    pub fn with_budget(&self, budget: Duration) -> Self {
        Self { budget, ..self.clone() }
    }

    /// `op` for this repository.
    pub fn op(&self, what: impl Into<String>) -> Op {
        Op { what: what.into(), repository: self.repository.clone(), git_ref: None, deployment: None }
    }

    /// The absolute URL of `path` under the repository
    /// (`/deployments?environment=...`). Built by hand, not joined by
    /// octocrab: a GitHub Enterprise prefix such as `/api/v3` is kept as is.
    fn uri(&self, path: &str) -> String {
        format!("{}/repos/{}{path}", self.base, self.repository)
    }

    pub fn attempts(&self) -> Attempts {
        let now = Instant::now();
        Attempts { started: now, deadline: now + self.budget, count: 0 }
    }

    /// One call with the retry policy: the 2xx answer or the error.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        op: &Op,
        cancel: &CancellationToken,
    ) -> Result<Reply, GithubError> {
        let mut attempts = self.attempts();
        loop {
            let result = self.once(method, path, body, op, cancel).await?;
            match self.judge(op, result, &mut attempts) {
                Next::Done(reply) => return Ok(reply),
                Next::Fail(e) => return Err(e),
                Next::Retry { wait, .. } => pause(wait, op, cancel).await?,
            }
        }
    }

    /// One request, no retry. `Err` only for a cancellation; no answer at
    /// all is `Ok(Err(reason))`.
    pub async fn once(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        op: &Op,
        cancel: &CancellationToken,
    ) -> Result<Result<Reply, String>, GithubError> {
        let uri = self.uri(path);
        let body = body.map(|b| redact_json(b, &self.redactor));
        let body = body.as_ref();
        tracing::debug!(method = ?method, path, "github request");
        let request = async {
            let response = match method {
                Method::Get => self.octo._get(uri).await,
                Method::Post => self.octo._post(uri, body).await,
            }
            .map_err(|e| transport_error(&e))?;
            let (parts, body) = response.into_parts();
            let body =
                self.octo.body_to_string(http::Response::new(body)).await.map_err(|e| transport_error(&e))?;
            Ok(Reply { status: parts.status.as_u16(), headers: parts.headers, body })
        };
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(GithubError::Cancelled { what: op.what.clone() }),
            r = tokio::time::timeout(REQUEST_TIMEOUT, request) => {
                Ok(r.unwrap_or_else(|_| Err(format!("no answer within {}", secs(REQUEST_TIMEOUT)))))
            }
        }
    }

    /// Decides what one attempt means: done, failed for good, or worth
    /// another try after a wait that fits in the budget.
    pub fn judge(&self, op: &Op, result: Result<Reply, String>, attempts: &mut Attempts) -> Next {
        attempts.count += 1;
        let (error, hint, ambiguous) = match result {
            Ok(reply) if (200..300).contains(&reply.status) => return Next::Done(reply),
            Ok(reply) => {
                let error = classify(op, &reply);
                if !error.is_retryable() {
                    return Next::Fail(error);
                }
                (error, retry_hint(&reply), reply.status >= 500)
            }
            Err(reason) => (GithubError::Unavailable { what: op.what.clone(), detail: reason }, None, true),
        };
        let wait = hint.unwrap_or_else(|| backoff(attempts.count));
        let now = Instant::now();
        // Checked: `wait` comes from the network and may be near u64::MAX.
        if now.checked_add(wait).is_some_and(|end| end <= attempts.deadline) {
            tracing::info!(what = %op.what, wait_ms = wait.as_millis() as u64, attempt = attempts.count, "github: {error}; retrying");
            return Next::Retry { wait, ambiguous };
        }
        let tried = format!(
            "{} attempt(s) in {}, and the next wait of {} would pass the {} budget",
            attempts.count,
            secs(now - attempts.started),
            secs(wait),
            secs(self.budget)
        );
        Next::Fail(match error {
            GithubError::RateLimited { what, detail } => {
                GithubError::RateLimited { what, detail: format!("{detail}; {tried}") }
            }
            GithubError::Unavailable { what, detail } => {
                GithubError::Unavailable { what, detail: format!("{detail}; {tried}") }
            }
            other => other,
        })
    }
}

/// Sleeps `wait`, unless cancelled first.
pub(crate) async fn pause(wait: Duration, op: &Op, cancel: &CancellationToken) -> Result<(), GithubError> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(GithubError::Cancelled { what: op.what.clone() }),
        _ = tokio::time::sleep(wait) => Ok(()),
    }
}

/// What GitHub asked for: `retry-after` (seconds), else, with the primary
/// limit spent, the time until `x-ratelimit-reset` (epoch seconds).
///
/// Both come from the network: any number is capped at [`MAX_HINT`] (far
/// past every budget), so no arithmetic on it can overflow.
fn retry_hint(reply: &Reply) -> Option<Duration> {
    if let Some(secs) = reply.header("retry-after").and_then(|v| v.trim().parse::<u64>().ok()) {
        return Some(Duration::from_secs(secs).min(MAX_HINT));
    }
    if reply.header("x-ratelimit-remaining").map(str::trim) == Some("0") {
        let reset = reply.header("x-ratelimit-reset")?.trim().parse::<i64>().ok()?;
        let now = chrono::Utc::now().timestamp();
        // A second more: the reset is rounded down and clocks drift.
        let secs = reset.saturating_sub(now).max(0).unsigned_abs().saturating_add(1);
        return Some(Duration::from_secs(secs).min(MAX_HINT));
    }
    None
}

/// Longest wait a server may ask for; longer hints are read as this.
const MAX_HINT: Duration = Duration::from_secs(24 * 3600);

/// `value` with every string (keys too) redacted.
fn redact_json(value: &Value, redactor: &Redactor) -> Value {
    match value {
        Value::String(s) => Value::String(redactor.redact(s)),
        Value::Array(items) => Value::Array(items.iter().map(|v| redact_json(v, redactor)).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (redactor.redact(k), redact_json(v, redactor))).collect())
        }
        other => other.clone(),
    }
}

/// Exponential backoff with jitter: attempt 1 waits 0.25–0.5 s, doubling up
/// to 7.5–15 s.
fn backoff(attempt: u32) -> Duration {
    let full = BACKOFF_FIRST.saturating_mul(1 << attempt.saturating_sub(1).min(10)).min(BACKOFF_MAX);
    full.mul_f64(rand::rng().random_range(0.5..=1.0))
}

/// A transport failure in words, without the request (and so without any
/// header).
fn transport_error(e: &octocrab::Error) -> String {
    use std::error::Error as _;
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client for a GitHub Enterprise-style URL where nothing listens.
    fn api() -> Api {
        Api::new("http://127.0.0.1:9/api/v3/", Some(&SecretValue::new("t".into())), "o", "r", Redactor::new())
            .unwrap()
    }

    fn reply(headers: &[(&'static str, String)]) -> Reply {
        let mut h = http::HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, v.parse().unwrap());
        }
        Reply { status: 403, headers: h, body: String::new() }
    }

    #[test]
    fn retry_after_wins_then_the_reset() {
        let soon = (chrono::Utc::now().timestamp() + 5).to_string();
        let r = reply(&[
            ("retry-after", "3".into()),
            ("x-ratelimit-remaining", "0".into()),
            ("x-ratelimit-reset", soon.clone()),
        ]);
        assert_eq!(retry_hint(&r), Some(Duration::from_secs(3)));
        let r = reply(&[("x-ratelimit-remaining", "0".into()), ("x-ratelimit-reset", soon.clone())]);
        let d = retry_hint(&r).unwrap();
        assert!(d >= Duration::from_secs(5) && d <= Duration::from_secs(6), "{d:?}");
        let r = reply(&[("x-ratelimit-remaining", "12".into()), ("x-ratelimit-reset", soon)]);
        assert_eq!(retry_hint(&r), None);
    }

    #[test]
    fn hints_near_the_integer_limits_do_not_overflow() {
        for (k, v) in [
            ("retry-after", u64::MAX.to_string()),
            ("retry-after", (u64::MAX / 1000).to_string()),
            ("x-ratelimit-reset", i64::MAX.to_string()),
            ("x-ratelimit-reset", i64::MIN.to_string()),
        ] {
            let r = reply(&[("x-ratelimit-remaining", "0".into()), (k, v.clone())]);
            let d = retry_hint(&r).unwrap();
            assert!(d <= MAX_HINT, "{k}={v}: {d:?}");
            // What `judge` does with it: no panic, no wrap.
            assert!(Instant::now().checked_add(d).is_some(), "{k}={v}");
        }
    }

    #[tokio::test]
    async fn a_huge_retry_after_fails_the_call_instead_of_the_process() {
        let api = api();
        let op = api.op("posting");
        let mut attempts = api.attempts();
        let mut r = reply(&[("retry-after", u64::MAX.to_string())]);
        r.body = r#"{"message":"You have exceeded a secondary rate limit."}"#.into();
        assert!(matches!(api.judge(&op, Ok(r), &mut attempts), Next::Fail(_)));
    }

    #[test]
    fn request_bodies_are_redacted_to_every_leaf() {
        let r = Redactor::new();
        r.add("pa55%w0rd::add-mask::x");
        let body = serde_json::json!({"description": "echo pa55%w0rd::add-mask::x", "payload": {"l": ["pa55%w0rd::add-mask::x"]}});
        let text = redact_json(&body, &r).to_string();
        assert!(!text.contains("pa55"), "{text}");
        assert_eq!(text.matches("***").count(), 2, "{text}");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 1..20 {
            let d = backoff(attempt);
            assert!(d <= BACKOFF_MAX, "{attempt}: {d:?}");
        }
        assert!(backoff(1) <= BACKOFF_FIRST);
        assert!(backoff(6) >= BACKOFF_MAX / 2);
    }

    #[tokio::test]
    async fn a_wait_past_the_budget_fails_at_once() {
        let api = api().with_budget(Duration::from_secs(10));
        assert_eq!(api.uri("/deployments"), "http://127.0.0.1:9/api/v3/repos/o/r/deployments");
        let op = api.op("posting");
        let mut attempts = api.attempts();
        let mut r = reply(&[("retry-after", "30".into())]);
        r.body = r#"{"message":"You have exceeded a secondary rate limit."}"#.into();
        match api.judge(&op, Ok(r), &mut attempts) {
            Next::Fail(e) => {
                assert_eq!(e.reason(), "github_rate_limited");
                assert!(e.to_string().contains("next wait of 30s"), "{e}");
            }
            _ => panic!("expected a failure"),
        }
    }
}
