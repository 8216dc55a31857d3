//! One HTTP/1.1 GET sent from the host itself: a `direct-tcpip` channel to
//! `host:port` as the host sees it, with hyper's client connection on top.
//! Used for the candidate's port and for the nginx front door.

use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use super::error::{HostError, HostFailure};
use super::ssh::Session;
use crate::probe::{Probe, Request};

/// Health and version answers are short; a page is cut here.
const MAX_BODY: usize = 64 * 1024;

/// GETs `path` from `addr:port` on the host, with `Host: host_header`.
///
/// # Errors
/// `probe_failed` when nothing answers (connection refused, reset, timeout);
/// an HTTP error status is an `Ok` probe.
pub async fn get(
    session: &Session,
    unit: &str,
    to: (&str, u16),
    host_header: &str,
    path: &str,
    timeout: Duration,
) -> Result<Probe, HostError> {
    let req = Request { method: http::Method::GET, path: path.into(), headers: vec![] };
    send(session, unit, to, host_header, &req, timeout).await
}

/// Sends `req` (a smoke test's) to `addr:port` on the host, its header
/// values (secrets among them) set but never shown.
///
/// # Errors
/// As [`get`].
pub async fn send(
    session: &Session,
    unit: &str,
    (addr, port): (&str, u16),
    host_header: &str,
    r: &Request,
    timeout: Duration,
) -> Result<Probe, HostError> {
    let started = Instant::now();
    let path = r.path.as_str();
    let target = format!("http://{addr}:{port}{path}");
    let method = &r.method;
    let fail = |why: String| {
        HostError::new(unit, HostFailure::ProbeFailed, format!("{method} {target} from the host: {why}"))
    };
    let exchange = async {
        let stream = session.open_tcp(addr, port).await.map_err(|e| fail(e.message))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| fail(e.to_string()))?;
        let driver = tokio::spawn(conn);
        let mut req = http::Request::builder()
            .method(method.clone())
            .uri(path)
            .header(http::header::HOST, host_header)
            .header(http::header::USER_AGENT, "deploy-action")
            .header(http::header::CONNECTION, "close");
        for (k, v) in &r.headers {
            req = req.header(k, v.expose());
        }
        let req = req.body(Empty::<Bytes>::new()).map_err(|e| fail(e.to_string()))?;
        let resp = sender.send_request(req).await.map_err(|e| fail(e.to_string()))?;
        let status = resp.status().as_u16();
        let upstream = resp
            .headers()
            .get("x-upstream-addr")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .filter(|v| !v.trim().is_empty());
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| fail(format!("reading the body: {e}")))?
            .to_bytes();
        driver.abort();
        Ok(Probe {
            status,
            latency: started.elapsed(),
            body: String::from_utf8_lossy(&body).into_owned(),
            upstream,
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| fail(format!("no answer within {}ms", timeout.as_millis())))?
}
