//! The GitHub API test server (`tests/github-server/server.py`), one
//! process per test on a free loopback port, killed on drop.
//!
//! It validates every request and response against GitHub's OpenAPI
//! description; tests end with [`GithubServer::assert_no_violations`].

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::repo_root;

/// The only token the server accepts.
pub const TOKEN: &str = "test-token";

pub struct GithubServer {
    /// What `GITHUB_API_URL` should be: `http://127.0.0.1:PORT[/prefix]`.
    pub base_url: String,
    /// `http://127.0.0.1:PORT`, where `/_control/` lives.
    pub root_url: String,
    child: Child,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl GithubServer {
    /// Starts a server (at the root, or under `prefix` like GitHub
    /// Enterprise's `/api/v3`) and waits until it listens.
    pub async fn start(prefix: Option<&str>) -> Self {
        let python = std::env::var("GITHUB_SERVER_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|_| repo_root().join(".stack/venv/bin/python"));
        assert!(
            python.exists(),
            "{} is missing: run scripts/stack/up, or python3 -m venv .stack/venv && .stack/venv/bin/pip install -r tests/github-server/requirements.txt",
            python.display()
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let port_file = dir.path().join("port");
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
        let mut cmd = Command::new(&python);
        cmd.arg(repo_root().join("tests/github-server/server.py"))
            .args(["--port", "0", "--token", TOKEN, "--port-file"])
            .arg(&port_file)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        if let Some(prefix) = prefix {
            cmd.args(["--prefix", prefix]);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {}: {e}", python.display()));
        let mut server = Self {
            base_url: String::new(),
            root_url: String::new(),
            child,
            dir,
            http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("reqwest"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let port: u16 = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file)
                && let Ok(port) = text.trim().parse()
            {
                break port;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("the GitHub test server exited ({status}):\n{}", server.log());
            }
            assert!(
                Instant::now() < deadline,
                "the GitHub test server did not start in 30s:\n{}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        server.root_url = format!("http://127.0.0.1:{port}");
        server.base_url = format!("{}{}", server.root_url, prefix.unwrap_or("").trim_end_matches('/'));
        server
    }

    /// The server's stderr so far (one line per request).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    async fn control(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/_control/{path}", self.root_url);
        let mut req = self.http.request(method, &url);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(status.is_success(), "{url}: {status} {value}");
        value
    }

    /// Every API request so far.
    pub async fn requests(&self) -> Vec<Value> {
        as_list(self.control(reqwest::Method::GET, "requests", None).await)
    }

    /// Requests whose method and path (after the prefix) match.
    pub async fn requests_to(&self, method: &str, path_suffix: &str) -> Vec<Value> {
        self.requests()
            .await
            .into_iter()
            .filter(|r| r["method"] == method && r["path"].as_str().is_some_and(|p| p.ends_with(path_suffix)))
            .collect()
    }

    pub async fn violations(&self) -> Vec<Value> {
        as_list(self.control(reqwest::Method::GET, "violations", None).await)
    }

    pub async fn assert_no_violations(&self) {
        let v = self.violations().await;
        assert!(
            v.is_empty(),
            "the GitHub test server saw violations:\n{}",
            serde_json::to_string_pretty(&v).unwrap()
        );
    }

    /// Deployments (oldest first) with their statuses (newest first).
    pub async fn state(&self) -> Value {
        self.control(reqwest::Method::GET, "state", None).await
    }

    /// The deployments of the state, oldest first.
    pub async fn deployments(&self) -> Vec<Value> {
        as_list(self.state().await["deployments"].clone())
    }

    /// One fault (object) or several (array); see the server's README.
    pub async fn fault(&self, fault: Value) -> Value {
        self.control(reqwest::Method::POST, "faults", Some(fault)).await
    }

    pub async fn clear_faults(&self) {
        self.control(reqwest::Method::DELETE, "faults", None).await;
    }

    /// `action` recording its deploy here (`github-deployments: true`, the
    /// token, `GITHUB_API_URL`).
    pub fn record(&self, action: super::action::Action) -> super::action::Action {
        action
            .input("github-deployments", "true")
            .input("github-token", TOKEN)
            .env("GITHUB_API_URL", &self.base_url)
    }

    /// What `GET /repos/{o}/{r}/actions/runs/{id}` answers for run `id`
    /// from now on: `status` (`in_progress`, `completed`, ...) and, for a
    /// completed run, its `conclusion`. A run never set is 404.
    pub async fn set_run(&self, id: u64, status: &str, conclusion: Option<&str>) {
        let run = serde_json::json!({"id": id, "status": status, "conclusion": conclusion});
        self.control(reqwest::Method::POST, "runs", Some(run)).await;
    }

    /// Inserts deployments/refs; answers the rendered deployments.
    pub async fn seed(&self, seed: Value) -> Value {
        self.control(reqwest::Method::POST, "seed", Some(seed)).await
    }

    /// An API call as another run would make it (with the token).
    pub async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base_url);
        let mut req = self.http.request(method, &url).bearer_auth(TOKEN);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{url}: {status} {value}");
        value
    }
}

impl Drop for GithubServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn as_list(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items,
        other => panic!("expected a JSON array, got {other}"),
    }
}
