//! Sending one payload to one webhook: a timeout on every request, a few
//! attempts with backoff on what may pass (no connection, no answer in
//! time, 429, 5xx), none on what will not (another 4xx, a redirect), and a
//! budget over them all. Nothing here retries forever.
//!
//! The URL never appears in an error: it is a secret (for Slack, the path
//! *is* the credential). Errors say what happened and, for an HTTP answer,
//! the start of its body, which the caller redacts like any remote output.

use std::time::Duration;

use tokio::time::Instant;

/// How hard one delivery tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Bound on one request, from connecting to the end of the answer.
    pub request_timeout: Duration,
    /// The wait after the first failed attempt; doubled after each next one.
    pub first_backoff: Duration,
    /// No wait is longer, whatever a `Retry-After` asks.
    pub max_backoff: Duration,
    /// Bound on the whole delivery, waits included.
    pub budget: Duration,
}

impl Policy {
    /// A deploy's own events: 3 attempts of at most 10 s, 1 s then 2 s
    /// apart, 30 s in all.
    pub const NORMAL: Policy = Policy {
        attempts: 3,
        request_timeout: Duration::from_secs(10),
        first_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(5),
        budget: Duration::from_secs(30),
    };

    /// After SIGINT/SIGTERM: the runner kills the container 7.5 s after
    /// SIGINT and the rollback has had most of that, so the final
    /// notification gets one try of 1.5 s, side by side with the final
    /// GitHub status (which gets the same).
    pub const CANCELLED: Policy = Policy {
        attempts: 1,
        request_timeout: Duration::from_millis(1500),
        first_backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
        budget: Duration::from_millis(1500),
    };
}

/// Why one attempt failed. Never carries the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    #[error("no answer within {:.1}s", .0.as_secs_f32())]
    Timeout(Duration),
    /// No answer at all: refused, reset, closed before the response.
    #[error("no connection: {0}")]
    Connect(String),
    #[error("HTTP {status}{}", if .body.is_empty() { String::new() } else { format!(": {}", .body) })]
    Status { status: u16, body: String },
    #[error("redirected (HTTP {0}); a webhook is not followed to another address")]
    Redirect(u16),
    /// The request could not be made (not worth a second try).
    #[error("request not sent: {0}")]
    Request(String),
}

impl NotifyError {
    /// Whether another attempt may succeed: no connection, no answer in
    /// time, too many requests (429, also 408), or a server error (5xx).
    /// Any other answer is the receiver's verdict on this payload.
    pub fn retryable(&self) -> bool {
        match self {
            NotifyError::Timeout(_) | NotifyError::Connect(_) => true,
            NotifyError::Status { status, .. } => matches!(status, 408 | 429 | 500..=599),
            NotifyError::Redirect(_) | NotifyError::Request(_) => false,
        }
    }
}

/// The wait after failed attempt `attempt` (1-based): the receiver's
/// `Retry-After` when it gave one, else `first_backoff` doubled per attempt;
/// never more than `max_backoff`.
pub fn backoff(policy: &Policy, attempt: u32, retry_after: Option<Duration>) -> Duration {
    let doubled = policy.first_backoff.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    retry_after.unwrap_or(doubled).min(policy.max_backoff)
}

/// `Retry-After` in seconds (the form Slack and most APIs send; an HTTP
/// date is ignored and the backoff applies).
pub fn retry_after(value: Option<&str>) -> Option<Duration> {
    value?.trim().parse::<u64>().ok().map(|s| Duration::from_secs(s.min(3600)))
}

/// One POST to make: the URL (a secret), the JSON body, extra headers.
pub struct Delivery<'a> {
    pub url: &'a str,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

/// Posts `d` until it is accepted (2xx), the error is not retryable, the
/// attempts are used up, or the budget would be passed.
///
/// # Errors
/// The last attempt's error and the number of attempts made.
pub async fn post(
    http: &reqwest::Client,
    d: &Delivery<'_>,
    policy: &Policy,
) -> Result<u32, (NotifyError, u32)> {
    let deadline = Instant::now() + policy.budget;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let timeout = policy.request_timeout.min(deadline.saturating_duration_since(Instant::now()));
        let (err, hint) = match once(http, d, timeout).await {
            Ok(()) => return Ok(attempt),
            Err(e) => e,
        };
        if attempt >= policy.attempts || !err.retryable() {
            return Err((err, attempt));
        }
        let wait = backoff(policy, attempt, hint);
        // A wait that leaves no time for the next request is not worth it.
        if Instant::now() + wait + Duration::from_millis(100) >= deadline {
            return Err((err, attempt));
        }
        tokio::time::sleep(wait).await;
    }
}

/// One attempt within `timeout`; on failure, the error and the receiver's
/// `Retry-After`.
async fn once(
    http: &reqwest::Client,
    d: &Delivery<'_>,
    timeout: Duration,
) -> Result<(), (NotifyError, Option<Duration>)> {
    let mut req = http
        .post(d.url)
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(d.body.clone());
    for (k, v) in &d.headers {
        req = req.header(*k, v);
    }
    let attempt = async {
        let resp = req.send().await.map_err(|e| (classify(e, timeout), None))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        if status.is_redirection() {
            return Err((NotifyError::Redirect(status.as_u16()), None));
        }
        let hint =
            retry_after(resp.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()));
        // The start of the answer says why (Slack: `no_service`,
        // `invalid_payload`...); a cut body is enough, and bounded.
        let body = resp.bytes().await.map(|b| first_line(&String::from_utf8_lossy(&b))).unwrap_or_default();
        Err((NotifyError::Status { status: status.as_u16(), body }, hint))
    };
    // reqwest's timeout bounds the request; this one bounds the body read
    // and anything reqwest might not.
    match tokio::time::timeout(timeout + Duration::from_millis(100), attempt).await {
        Ok(r) => r,
        Err(_) => Err((NotifyError::Timeout(timeout), None)),
    }
}

/// A transport error as what the operator can act on, without its URL.
fn classify(e: reqwest::Error, timeout: Duration) -> NotifyError {
    let e = e.without_url();
    if e.is_timeout() {
        return NotifyError::Timeout(timeout);
    }
    // The innermost cause reads best ("Connection refused (os error 111)").
    let mut cause: &dyn std::error::Error = &e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let text = first_line(&cause.to_string());
    if e.is_connect() || e.is_request() { NotifyError::Connect(text) } else { NotifyError::Request(text) }
}

/// The first line of `s`, at most 120 characters.
fn first_line(s: &str) -> String {
    let line = s.trim().lines().next().unwrap_or("");
    match line.char_indices().nth(120) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn quick(attempts: u32) -> Policy {
        Policy {
            attempts,
            request_timeout: Duration::from_millis(500),
            first_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            budget: Duration::from_secs(5),
        }
    }

    #[test]
    fn what_is_retried() {
        assert!(NotifyError::Timeout(Duration::from_secs(1)).retryable());
        assert!(NotifyError::Connect("refused".into()).retryable());
        for status in [408, 429, 500, 502, 503, 599] {
            assert!(NotifyError::Status { status, body: String::new() }.retryable(), "{status}");
        }
        for status in [400, 401, 403, 404, 410, 413] {
            assert!(!NotifyError::Status { status, body: String::new() }.retryable(), "{status}");
        }
        assert!(!NotifyError::Redirect(302).retryable());
        assert!(!NotifyError::Request("bad header".into()).retryable());
    }

    #[test]
    fn backoff_doubles_honours_retry_after_and_is_capped() {
        let p = Policy::NORMAL;
        assert_eq!(backoff(&p, 1, None), Duration::from_secs(1));
        assert_eq!(backoff(&p, 2, None), Duration::from_secs(2));
        assert_eq!(backoff(&p, 3, None), Duration::from_secs(4));
        assert_eq!(backoff(&p, 9, None), Duration::from_secs(5), "capped");
        assert_eq!(backoff(&p, 40, None), Duration::from_secs(5), "no overflow");
        assert_eq!(backoff(&p, 1, Some(Duration::from_secs(3))), Duration::from_secs(3));
        assert_eq!(backoff(&p, 1, Some(Duration::from_secs(3600))), Duration::from_secs(5));
        assert_eq!(retry_after(Some(" 7 ")), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after(Some("99999999999999")), Some(Duration::from_secs(3600)));
        assert_eq!(retry_after(None), None);
    }

    #[test]
    fn every_bound_is_finite_and_the_cancelled_one_fits_the_runner() {
        let p = Policy::NORMAL;
        let worst = p.request_timeout * p.attempts + backoff(&p, 1, None) + backoff(&p, 2, None);
        assert!(p.budget <= worst && p.budget <= Duration::from_secs(30));
        let c = Policy::CANCELLED;
        assert_eq!(c.attempts, 1);
        assert!(c.budget <= Duration::from_secs(2) && c.request_timeout <= c.budget);
    }

    #[test]
    fn errors_are_short_and_one_line() {
        let long = "x".repeat(500) + "\nsecond";
        let e = NotifyError::Status { status: 500, body: first_line(&long) };
        let text = e.to_string();
        assert!(text.starts_with("HTTP 500: xxx") && text.chars().count() < 140 && !text.contains('\n'));
        assert_eq!(NotifyError::Status { status: 404, body: String::new() }.to_string(), "HTTP 404");
    }

    /// A loopback server answering each connection with the next status of
    /// `script` (the last one repeated); returns its URL and a request count.
    async fn scripted(script: Vec<u16>) -> (String, std::sync::Arc<std::sync::atomic::AtomicU32>) {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook/s3cret-path", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let count = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let n = count.fetch_add(1, Ordering::SeqCst) as usize;
                let status = script[n.min(script.len() - 1)];
                let mut buf = vec![0u8; 8192];
                let _ = s.read(&mut buf).await;
                if status == 0 {
                    // Never answer: the attempt must time out.
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    continue;
                }
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 8\r\nretry-after: 0\r\nconnection: close\r\n\r\nno_reply"
                );
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        (url, seen)
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
    }

    fn delivery(url: &str) -> Delivery<'_> {
        Delivery { url, body: b"{}".to_vec(), headers: vec![] }
    }

    #[tokio::test]
    async fn server_errors_are_retried_until_accepted() {
        let (url, seen) = scripted(vec![500, 503, 200]).await;
        assert_eq!(post(&client(), &delivery(&url), &quick(3)).await, Ok(3));
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn attempts_are_bounded_and_the_error_never_names_the_url() {
        let (url, seen) = scripted(vec![500]).await;
        let (e, n) = post(&client(), &delivery(&url), &quick(3)).await.unwrap_err();
        assert_eq!((n, seen.load(std::sync::atomic::Ordering::SeqCst)), (3, 3));
        assert_eq!(e, NotifyError::Status { status: 500, body: "no_reply".into() });
        assert!(!e.to_string().contains("s3cret-path"));
    }

    #[tokio::test]
    async fn a_client_error_or_redirect_is_not_retried() {
        for (status, want) in [
            (404, NotifyError::Status { status: 404, body: "no_reply".into() }),
            (302, NotifyError::Redirect(302)),
        ] {
            let (url, seen) = scripted(vec![status]).await;
            let got = post(&client(), &delivery(&url), &quick(3)).await;
            assert_eq!(got, Err((want, 1)));
            assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);
        }
    }

    #[tokio::test]
    async fn a_silent_receiver_times_out_and_a_closed_port_is_a_connect_error() {
        let (url, _) = scripted(vec![0]).await;
        let started = std::time::Instant::now();
        let (e, n) = post(&client(), &delivery(&url), &quick(2)).await.unwrap_err();
        assert!(matches!(e, NotifyError::Timeout(_)), "{e}");
        assert_eq!(n, 2);
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());

        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}/hook/s3cret-path", l.local_addr().unwrap())
        };
        let (e, n) = post(&client(), &delivery(&closed), &quick(3)).await.unwrap_err();
        assert!(matches!(e, NotifyError::Connect(_)), "{e}");
        assert_eq!(n, 3, "a refused connection is retried");
        assert!(!e.to_string().contains("s3cret-path") && !e.to_string().contains("127.0.0.1"), "{e}");
    }

    #[tokio::test]
    async fn the_budget_stops_retries_early() {
        let (url, seen) = scripted(vec![500]).await;
        let policy = Policy {
            budget: Duration::from_millis(30),
            first_backoff: Duration::from_millis(50),
            ..quick(5)
        };
        let (_, n) = post(&client(), &delivery(&url), &policy).await.unwrap_err();
        assert_eq!((n, seen.load(std::sync::atomic::Ordering::SeqCst)), (1, 1));
    }
}
