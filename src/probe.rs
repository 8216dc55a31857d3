//! What a check sends and gets back, below every module that checks:
//! [`Probe`] (one HTTP answer), [`Via`] (where it is sent), a smoke test's
//! [`Request`] and [`body_start`] for messages. Targets, health, smoke and
//! the pipeline all use these; this module uses only the leaves `secrets`
//! (a header's value) and `redact`, so no import cycle can run through it
//! (`scripts/lint-cycles`).

use std::time::Duration;

use crate::redact::Redactor;
use crate::secrets::SecretValue;

/// A single HTTP observation.
#[derive(Debug, Clone)]
pub struct Probe {
    pub status: u16,
    pub latency: Duration,
    pub body: String,
    /// The backend that answered, as the proxy reports it
    /// (`X-Upstream-Addr: 127.0.0.1:8082`; the last one when it retried).
    pub upstream: Option<String>,
}

impl Probe {
    /// The port of the backend that answered, when the proxy said.
    pub fn upstream_port(&self) -> Option<u16> {
        let last = self.upstream.as_deref()?.rsplit(',').next()?.trim();
        last.rsplit_once(':')?.1.parse().ok()
    }
}

/// Where a probe is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Straight to the candidate's port, bypassing the proxy.
    Candidate,
    /// Through the unit's front door (nginx), as users reach it.
    FrontDoor,
}

/// Bound on one smoke request (a `max-latency` is judged on top).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One request of a test, as sent: the method, path, and headers with the
/// secrets filled in (never logged).
#[derive(Debug, Clone)]
pub struct Request {
    pub method: http::Method,
    pub path: String,
    pub headers: Vec<(http::HeaderName, SecretValue)>,
}

/// The start of an answer's body for a message (what the app said went
/// wrong), redacted *before* it is cut: half a secret no longer matches.
pub fn body_start(redactor: &Redactor, body: &str) -> String {
    let text = redactor.redact(body.trim());
    let first: String = text.lines().next().unwrap_or("").chars().take(80).collect();
    if first.len() < text.len() { format!("{first}…") } else { first }
}
