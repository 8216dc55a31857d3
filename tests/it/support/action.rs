//! Runs the built `deploy-action` binary the way the runner starts a
//! container action: inputs as `INPUT_<NAME>` (upper-cased, hyphens kept),
//! the `GITHUB_*` context, and file commands in a temp dir.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

pub const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

/// A workflow run id no other `Action` of this test run (or, very likely, of
/// an earlier one) has: each test is its own run, so a lock or deployment
/// that one test leaks is never silently adopted by the next as its own.
pub fn unique_run_id() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static BASE: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = *BASE.get_or_init(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        // Seconds since 2026, times 1000 runs per process start.
        (now.as_secs().saturating_sub(1_767_225_600) % 1_000_000_000) * 1000
    });
    (base + NEXT.fetch_add(1, Ordering::Relaxed)).to_string()
}

pub struct Action {
    env: BTreeMap<String, String>,
    pub dir: tempfile::TempDir,
}

/// What a finished run left behind.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub outputs: Vec<(String, String)>,
    pub summary: String,
}

impl Run {
    pub fn output(&self, name: &str) -> Option<&str> {
        self.outputs.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    /// Everything the run produced, for leak scans.
    pub fn all_text(&self) -> String {
        let outs: Vec<String> = self.outputs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{}\n{}\n{}\n{}", self.stdout, self.stderr, outs.join("\n"), self.summary)
    }
}

impl Action {
    /// A run with a plausible `GITHUB_*` context and no inputs.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut env = BTreeMap::new();
        for (k, v) in [
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_REPOSITORY", "acme/shop-api"),
            ("GITHUB_SHA", SHA),
            ("GITHUB_REF", "refs/heads/main"),
            ("GITHUB_REF_NAME", "main"),
            ("GITHUB_RUN_ATTEMPT", "1"),
            ("GITHUB_SERVER_URL", "https://github.com"),
            ("GITHUB_API_URL", "https://api.github.com"),
            ("GITHUB_EVENT_NAME", "push"),
            ("GITHUB_ACTOR", "octocat"),
            ("RUNNER_TEMP", "/tmp"),
            // Required; a workflow names it. Tests of other environments set their own.
            ("INPUT_ENVIRONMENT", "production"),
        ] {
            env.insert(k.to_string(), v.to_string());
        }
        env.insert("GITHUB_RUN_ID".into(), unique_run_id());
        env.insert("GITHUB_WORKSPACE".into(), dir.path().display().to_string());
        env.insert("GITHUB_OUTPUT".into(), dir.path().join("output").display().to_string());
        env.insert("GITHUB_STEP_SUMMARY".into(), dir.path().join("summary").display().to_string());
        Self { env, dir }
    }

    /// Sets an input by its id in `action.yml` (`health-check-path`).
    pub fn input(mut self, name: &str, value: &str) -> Self {
        self.env.insert(format!("INPUT_{}", name.to_uppercase()), value.to_string());
        self
    }

    /// Sets every input of a list (see `support::shared_app_inputs`).
    pub fn inputs(self, list: Vec<(&str, String)>) -> Self {
        list.into_iter().fold(self, |a, (k, v)| a.input(k, &v))
    }

    /// Points the AWS SDK at the stack's moto server (endpoint, test keys,
    /// region), as `aws-actions/configure-aws-credentials` would for AWS.
    pub fn moto(self) -> Self {
        use super::stack_var;
        self.env("AWS_ENDPOINT_URL", &stack_var("AWS_ENDPOINT_URL"))
            .env("AWS_ACCESS_KEY_ID", &stack_var("AWS_ACCESS_KEY_ID"))
            .env("AWS_SECRET_ACCESS_KEY", &stack_var("AWS_SECRET_ACCESS_KEY"))
            .input("aws-region", &stack_var("AWS_REGION"))
    }

    /// This run's `GITHUB_RUN_ID`.
    pub fn run_id(&self) -> &str {
        &self.env["GITHUB_RUN_ID"]
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.to_string(), value.to_string());
        self
    }

    pub fn without(mut self, key: &str) -> Self {
        self.env.remove(key);
        self
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_deploy-action"));
        cmd.env_clear().envs(&self.env).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd
    }

    pub fn spawn(&self) -> Child {
        self.command().spawn().expect("spawn deploy-action")
    }

    pub fn run(&self) -> Run {
        let out = self.command().output().expect("run deploy-action");
        self.finish(out)
    }

    /// Reads back the file commands the way the runner does.
    pub fn finish(&self, out: Output) -> Run {
        let output_text = std::fs::read_to_string(self.path("output")).unwrap_or_default();
        let outputs = deploy_action::runner::output::parse(&output_text)
            .expect("GITHUB_OUTPUT parses the way the runner parses it");
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            outputs,
            summary: std::fs::read_to_string(self.path("summary")).unwrap_or_default(),
        }
    }
}
