//! A webhook receiver on 127.0.0.1:0 for the notification tests: records
//! every delivery (method, path, headers, body, the status it answered),
//! checks each against the shape its path promises — Slack's (`text` a
//! string, `blocks` an array of objects with a `type`) under `/slack`, the
//! generic flat object elsewhere — and records violations. It can answer
//! 500 to the first N requests, or never answer at all.
//!
//! It runs on a thread and runtime of its own (usable from sync and async
//! tests alike) and stops when dropped.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use serde_json::Value;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// What the receiver answered.
    pub status: u16,
}

impl Delivery {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Default)]
struct State {
    deliveries: Vec<Delivery>,
    violations: Vec<String>,
    /// Requests still to be answered 500.
    fail_next: usize,
    /// Never answer (hold every request open).
    stall: bool,
}

pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// The fields of the generic webhook's object, as the README documents them.
pub const GENERIC_FIELDS: &[&str] = &[
    "event",
    "environment",
    "app",
    "image",
    "previous_image",
    "outcome",
    "reason",
    "run_url",
    "summary_url",
    "deployment_id",
    "target",
    "strategy",
    "mode",
    "message",
];

impl Receiver {
    /// A receiver that accepts (200) every request.
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shared = state.clone();
        std::thread::spawn(move || {
            let rt =
                tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let accept = async {
                    while let Ok((stream, _)) = listener.accept().await {
                        let state = shared.clone();
                        tokio::spawn(async move {
                            let service = hyper::service::service_fn(move |req| handle(req, state.clone()));
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                .await;
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
        });
        Receiver { addr, state, stop: Some(stop) }
    }

    /// Answers 500 to the next `n` requests (whatever their path).
    pub fn fail_first(self, n: usize) -> Self {
        self.state.lock().unwrap().fail_next = n;
        self
    }

    /// Reads every request and never answers.
    pub fn stalled(self) -> Self {
        self.state.lock().unwrap().stall = true;
        self
    }

    /// `http://127.0.0.1:PORT<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far, in arrival order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.state.lock().unwrap().deliveries.clone()
    }

    /// The requests under `prefix` that were accepted (2xx).
    pub fn accepted(&self, prefix: &str) -> Vec<Delivery> {
        self.deliveries().into_iter().filter(|d| d.path.starts_with(prefix) && d.status < 300).collect()
    }

    /// The `X-Deploy-Action-Event` of each accepted request under `prefix`.
    pub fn events(&self, prefix: &str) -> Vec<String> {
        self.accepted(prefix)
            .iter()
            .map(|d| d.header("x-deploy-action-event").unwrap_or("?").to_string())
            .collect()
    }

    /// Waits up to `bound` for `n` accepted requests under `prefix` (a
    /// start sent in the background may land a moment after the run ends).
    pub fn wait_for(&self, prefix: &str, n: usize, bound: Duration) -> Vec<Delivery> {
        let end = std::time::Instant::now() + bound;
        loop {
            let got = self.accepted(prefix);
            if got.len() >= n || std::time::Instant::now() > end {
                return got;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn violations(&self) -> Vec<String> {
        self.state.lock().unwrap().violations.clone()
    }

    pub fn assert_no_violations(&self) {
        let v = self.violations();
        assert!(v.is_empty(), "the webhook receiver saw violations:\n{}", v.join("\n"));
    }

    /// Everything every request carried (paths, headers, bodies), for leak scans.
    pub fn all_text(&self) -> String {
        self.deliveries()
            .iter()
            .map(|d| {
                let headers: Vec<String> = d.headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                format!("{} {}\n{}\n\n{}", d.method, d.path, headers.join("\n"), d.body)
            })
            .collect::<Vec<_>>()
            .join("\n----\n")
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let body = String::from_utf8_lossy(&req.into_body().collect().await?.to_bytes()).into_owned();
    let mut d = Delivery { method, path, headers, body, status: 200 };
    let problems = check(&d);
    let stall = {
        let mut s = state.lock().unwrap();
        if s.fail_next > 0 {
            s.fail_next -= 1;
            d.status = 500;
        }
        s.violations.extend(problems.into_iter().map(|p| format!("{} {}: {p}", d.method, d.path)));
        let stall = s.stall;
        s.deliveries.push(d.clone());
        stall
    };
    if stall {
        tokio::time::sleep(Duration::from_secs(600)).await;
    }
    let text = if d.status == 200 { "ok" } else { "rollup_error" };
    Ok(Response::builder().status(d.status).body(Full::new(Bytes::from(text))).unwrap())
}

/// What is wrong with `d` for its path: Slack's shape under `/slack`, the
/// generic flat object elsewhere; a JSON POST either way.
fn check(d: &Delivery) -> Vec<String> {
    let mut p = Vec::new();
    if d.method != "POST" {
        p.push(format!("method {}", d.method));
    }
    if !d.header("content-type").is_some_and(|c| c.starts_with("application/json")) {
        p.push(format!("content-type {:?}", d.header("content-type")));
    }
    for h in ["x-deploy-action-event", "x-deploy-action-delivery"] {
        if d.header(h).is_none() {
            p.push(format!("no {h} header"));
        }
    }
    let body = d.json();
    let Some(obj) = body.as_object() else {
        p.push(format!("body is not a JSON object: {}", d.body));
        return p;
    };
    if d.path.starts_with("/slack") {
        match obj.get("text") {
            Some(Value::String(t)) if !t.is_empty() && !t.contains('\n') => {}
            other => p.push(format!("text must be a non-empty one-line string: {other:?}")),
        }
        match obj.get("blocks") {
            Some(Value::Array(blocks)) if !blocks.is_empty() => {
                for (i, b) in blocks.iter().enumerate() {
                    let ty = b.get("type").and_then(Value::as_str);
                    match ty {
                        None => p.push(format!("blocks[{i}] has no string type: {b}")),
                        Some("section") => {
                            let text_ok = b["text"]["type"].is_string() && b["text"]["text"].is_string();
                            let fields_ok = b["fields"].as_array().is_some_and(|f| {
                                f.len() <= 10
                                    && f.iter().all(|x| x["type"].is_string() && x["text"].is_string())
                            });
                            if !text_ok && !fields_ok {
                                p.push(format!("blocks[{i}]: a section needs text or fields: {b}"));
                            }
                            if b["text"]["text"].as_str().is_some_and(|t| t.chars().count() > 3000) {
                                p.push(format!("blocks[{i}]: section text over 3000 characters"));
                            }
                        }
                        Some("context") => {
                            if b["elements"].as_array().is_none_or(|e| e.is_empty()) {
                                p.push(format!("blocks[{i}]: a context needs elements: {b}"));
                            }
                        }
                        Some(_) => {}
                    }
                }
            }
            other => p.push(format!("blocks must be a non-empty array: {other:?}")),
        }
    } else {
        for f in GENERIC_FIELDS {
            if !obj.contains_key(*f) {
                p.push(format!("field {f} missing"));
            }
        }
        if obj.values().any(|v| v.is_object() || v.is_array()) {
            p.push(format!("not flat: {body}"));
        }
        if !matches!(
            obj.get("event").and_then(Value::as_str),
            Some("start" | "success" | "failure" | "rollback")
        ) {
            p.push(format!("event {:?}", obj.get("event")));
        }
        if obj.get("event").and_then(Value::as_str) != d.header("x-deploy-action-event") {
            p.push("the event header and the body's event differ".into());
        }
    }
    p
}
