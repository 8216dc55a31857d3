//! A fault-injecting HTTP/1.1 proxy in front of moto: it answers chosen SSM
//! requests with a throttle, a 500, an access denial or nothing at all, and
//! forwards the rest. Plain tokio with just enough HTTP for the SDK's
//! requests (`Content-Length` bodies, keep-alive).

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// 400 `ThrottlingException`, as SSM sends when over its rate.
    Throttle,
    /// 500 `InternalServerError`.
    ServerError,
    /// Reads the request and never answers.
    Hang,
    /// 400 `AccessDeniedException` from IAM on SSM.
    AccessDenied,
    /// 400 `AccessDeniedException` that SSM passes on from KMS.
    KmsDenied,
    /// 400 `ExpiredTokenException`.
    ExpiredToken,
    /// 200 with no parameters and a `NextToken`, as SSM may send; the
    /// request that follows that token is forwarded as the first page.
    EmptyPageWithToken,
}

/// The token [`Fault::EmptyPageWithToken`] hands out.
const EMPTY_PAGE_TOKEN: &str = "fault-proxy-empty-page";

/// Requests for operation `op` (`GetParametersByPath`, ...) whose body holds
/// `body_contains` get `fault`, `times` times (or always).
#[derive(Debug, Clone)]
pub struct Rule {
    pub op: &'static str,
    pub body_contains: Option<String>,
    pub fault: Fault,
    pub times: Option<usize>,
}

impl Rule {
    pub fn always(op: &'static str, fault: Fault) -> Self {
        Self { op, body_contains: None, fault, times: None }
    }

    pub fn times(op: &'static str, fault: Fault, times: usize) -> Self {
        Self { op, body_contains: None, fault, times: Some(times) }
    }

    pub fn when_body_has(mut self, text: &str) -> Self {
        self.body_contains = Some(text.to_string());
        self
    }
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    /// The operation of every request received, in order.
    seen: Vec<String>,
    in_flight: usize,
    max_in_flight: usize,
}

pub struct FaultProxy {
    url: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(upstream: &str, rules: Vec<Rule>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(Mutex::new(State { rules, ..State::default() }));
        let upstream = upstream.trim_end_matches('/').to_string();
        let http = reqwest::Client::new();
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve(sock, st.clone(), http.clone(), upstream.clone()));
            }
        });
        Self { url, state, task }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// How many requests for `op` arrived.
    pub fn count(&self, op: &str) -> usize {
        self.state.lock().unwrap().seen.iter().filter(|s| *s == op).count()
    }

    /// The most requests that were being answered at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.lock().unwrap().max_in_flight
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Request {
    op: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

async fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let mut headers = Vec::new();
    let mut len = 0usize;
    loop {
        line.clear();
        reader.read_line(&mut line).await.ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
        if k == "content-length" {
            len = v.parse().ok()?;
        }
        headers.push((k, v));
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).await.ok()?;
    let op = headers
        .iter()
        .find(|(k, _)| k == "x-amz-target")
        .map(|(_, v)| v.rsplit('.').next().unwrap_or_default().to_string())
        .unwrap_or_default();
    Some(Request { op, headers, body })
}

async fn serve(sock: TcpStream, state: Arc<Mutex<State>>, http: reqwest::Client, upstream: String) {
    let mut reader = BufReader::new(sock);
    while let Some(req) = read_request(&mut reader).await {
        let fault = {
            let mut st = state.lock().unwrap();
            st.seen.push(req.op.clone());
            st.in_flight += 1;
            st.max_in_flight = st.max_in_flight.max(st.in_flight);
            let body = String::from_utf8_lossy(&req.body);
            let rule = st.rules.iter_mut().find(|r| {
                r.op == req.op
                    && r.times != Some(0)
                    && r.body_contains.as_deref().is_none_or(|t| body.contains(t))
            });
            rule.map(|r| {
                if let Some(n) = r.times.as_mut() {
                    *n -= 1;
                }
                r.fault
            })
        };
        let (status, body) = match fault {
            Some(Fault::Hang) => {
                // Hold the connection until the client gives up on it.
                let mut sink = [0u8; 1024];
                while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {}
                state.lock().unwrap().in_flight -= 1;
                return;
            }
            Some(f) => fault_response(f),
            None => match forward(&http, &upstream, &req).await {
                Some(r) => r,
                None => (502, String::new()),
            },
        };
        let head = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\nx-amzn-requestid: fault-proxy\r\n\r\n",
            body.len()
        );
        let sock = reader.get_mut();
        let written =
            sock.write_all(head.as_bytes()).await.is_ok() && sock.write_all(body.as_bytes()).await.is_ok();
        state.lock().unwrap().in_flight -= 1;
        if !written {
            return;
        }
    }
}

fn fault_response(fault: Fault) -> (u16, String) {
    let (status, kind, message) = match fault {
        Fault::Throttle => (400, "ThrottlingException", "Rate exceeded"),
        Fault::ServerError => (500, "InternalServerError", "An internal error occurred"),
        Fault::AccessDenied => (
            400,
            "AccessDeniedException",
            "User: arn:aws:iam::123456789012:user/deployer is not authorized to perform: ssm:GetParametersByPath on resource: arn:aws:ssm:us-east-1:123456789012:parameter/app because no identity-based policy allows the ssm:GetParametersByPath action",
        ),
        Fault::KmsDenied => (
            400,
            "AccessDeniedException",
            "The ciphertext refers to a customer master key that does not exist, does not exist in this region, or you are not allowed to access. (Service: AWSKMS; Status Code: 400; Error Code: AccessDeniedException; Request ID: 5f642215-959a-11e8-bfd1-81a81941d54a; Proxy: null)",
        ),
        Fault::ExpiredToken => {
            (400, "ExpiredTokenException", "The security token included in the request is expired")
        }
        Fault::EmptyPageWithToken => {
            return (200, serde_json::json!({ "Parameters": [], "NextToken": EMPTY_PAGE_TOKEN }).to_string());
        }
        Fault::Hang => unreachable!("handled by the caller"),
    };
    (status, serde_json::json!({ "__type": kind, "message": message }).to_string())
}

async fn forward(http: &reqwest::Client, upstream: &str, req: &Request) -> Option<(u16, String)> {
    let mut body = req.body.clone();
    if let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(&body)
        && json.get("NextToken").and_then(|t| t.as_str()) == Some(EMPTY_PAGE_TOKEN)
    {
        json.as_object_mut()?.remove("NextToken");
        body = serde_json::to_vec(&json).ok()?;
    }
    let mut rb = http.post(format!("{upstream}/")).body(body);
    for (k, v) in &req.headers {
        if !matches!(k.as_str(), "host" | "content-length" | "connection" | "transfer-encoding" | "expect") {
            rb = rb.header(k, v);
        }
    }
    let resp = rb.send().await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.ok()?))
}
