//! Runs a workflow of `examples/` through nektos/act, the runner-like client
//! built by `scripts/stack/act/up` (`$STACK_DIR/act/env`): act parses the
//! workflow and `action.yml` with the runner's own schema, evaluates the
//! expressions, starts the action's image (`--pull=false`: the one
//! `scripts/image` built) and passes inputs, outputs, masks and annotations
//! the way GitHub's runner does.
//!
//! The workflow file is copied unmodified into a fresh git repository
//! (`acme/<repo>`, one commit, so `github.sha` is known). What a repository
//! would hold as variables and secrets, and a `workflow_dispatch`'s inputs,
//! come through `--var-file`, `--secret-file` and the event file.
//! `uses: org/deploy-action@v1` resolves to this checkout's `action.yml`
//! and third-party actions to stand-ins under `tests/act/`, both through
//! `--local-repository`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{repo_root, stack_var};

/// The act settings written by `scripts/stack/act/up`.
fn act_var(key: &str) -> String {
    let dir = PathBuf::from(stack_var("STACK_DIR"));
    let text = std::fs::read_to_string(dir.join("act/env"))
        .unwrap_or_else(|e| panic!("{}/act/env: {e}: run scripts/stack/act/up", dir.display()));
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} missing from {}/act/env", dir.display()))
        .to_string()
}

/// The pinned `uses:` of the examples' third-party actions, and the
/// stand-in each resolves to.
const STAND_INS: &[(&str, &str)] = &[
    (
        "aws-actions/configure-aws-credentials@b47578312673ae6fa5b5096b330d9fbac3d116df",
        "configure-aws-credentials",
    ),
    ("docker/login-action@4907a6ddec9925e35a0a9e82d7399ccc52663121", "login-action"),
    ("docker/build-push-action@53b7df96c91f9c12dcc8a07bcb9ccacbed38856a", "build-push-action"),
];

pub struct Workflow {
    /// The repository act runs in (the workspace).
    pub repo: tempfile::TempDir,
    /// Files beside it: vars, secrets, event, the action's checkout.
    side: tempfile::TempDir,
    file: String,
    vars: Vec<(String, String)>,
    secrets: Vec<(String, String)>,
    env: Vec<(String, String)>,
    event: serde_json::Value,
    action_dir: PathBuf,
    sha: String,
    repo_name: String,
}

/// What act printed and how it ended.
pub struct ActRun {
    pub code: Option<i32>,
    pub log: String,
    pub took: Duration,
}

impl ActRun {
    /// The lines a step printed (act prefixes them with `| `).
    pub fn step_lines(&self) -> Vec<&str> {
        self.log.lines().filter_map(|l| l.split_once("| ").map(|(_, r)| r)).collect()
    }
    /// Whether a line act printed for the job contains `needle`.
    pub fn shows(&self, needle: &str) -> bool {
        self.log.contains(needle)
    }
}

impl Workflow {
    /// `examples/<name>`, copied unmodified into `.github/workflows/` of a
    /// new repository `acme/<repo>` with `files` (path, content) committed
    /// beside it.
    pub fn example(name: &str, repo: &str, files: &[(&str, &str)]) -> Self {
        let dir = tempfile::Builder::new().prefix("act-repo-").tempdir().expect("tempdir");
        let wf = dir.path().join(".github/workflows");
        std::fs::create_dir_all(&wf).unwrap();
        std::fs::copy(repo_root().join("examples").join(name), wf.join(name))
            .unwrap_or_else(|e| panic!("examples/{name}: {e}"));
        for (path, content) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        let git = |args: &[&str]| {
            let out = Command::new("git")
                .args(["-c", "user.name=octocat", "-c", "user.email=octocat@example.com"])
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("git");
            assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        git(&["init", "-q", "-b", "main"]);
        git(&["remote", "add", "origin", &format!("https://github.com/acme/{repo}.git")]);
        git(&["add", "-A"]);
        git(&["commit", "-q", "-m", "the workflow under test"]);
        let sha = git(&["rev-parse", "HEAD"]);

        // The action as `uses: org/deploy-action@v1` finds it: this
        // checkout's action.yml (a docker:// action needs nothing else; the
        // whole checkout would be copied into each job).
        let side = tempfile::Builder::new().prefix("act-side-").tempdir().expect("tempdir");
        let action_dir = side.path().join("deploy-action");
        std::fs::create_dir_all(&action_dir).unwrap();
        std::fs::copy(repo_root().join("action.yml"), action_dir.join("action.yml")).unwrap();
        Self {
            repo: dir,
            side,
            file: name.to_string(),
            vars: vec![],
            secrets: vec![],
            env: vec![],
            event: serde_json::json!({}),
            action_dir,
            sha,
            repo_name: repo.to_string(),
        }
    }

    /// `github.sha` of the run.
    pub fn sha(&self) -> &str {
        &self.sha
    }

    /// Where `org/deploy-action@v1` resolves (to replace its action.yml).
    pub fn action_dir(&self) -> &Path {
        &self.action_dir
    }

    /// A repository (or environment) variable, `vars.<key>`.
    pub fn var(mut self, key: &str, value: &str) -> Self {
        self.vars.push((key.into(), value.into()));
        self
    }

    /// A secret, `secrets.<key>`.
    pub fn secret(mut self, key: &str, value: &str) -> Self {
        self.secrets.push((key.into(), value.into()));
        self
    }

    /// An environment variable of the job, set by the runner's machine
    /// (act `--env`); the examples never read these, the stand-ins do.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The event's payload (`inputs` of a `workflow_dispatch`, the `ref` of
    /// a tag push).
    pub fn event(mut self, event: serde_json::Value) -> Self {
        self.event = event;
        self
    }

    /// Points the action at a GitHub API test server.
    pub fn github(self, api_url: &str, token: &str) -> Self {
        self.env("GITHUB_API_URL", api_url).secret("GITHUB_TOKEN", token)
    }

    /// The stack's moto, for the AWS stand-in.
    pub fn aws(self) -> Self {
        self.env("STACK_AWS_ACCESS_KEY_ID", &stack_var("AWS_ACCESS_KEY_ID"))
            .env("STACK_AWS_SECRET_ACCESS_KEY", &stack_var("AWS_SECRET_ACCESS_KEY"))
            .env("STACK_AWS_ENDPOINT_URL", &stack_var("AWS_ENDPOINT_URL"))
            .env("STACK_AWS_ENDPOINT_URL_EC2", &stack_var("EICE_URL"))
    }

    /// Runs `act <event>` and waits, at most `bound`.
    pub fn run(&self, event: &str, bound: Duration) -> ActRun {
        let side = self.side.path();
        let dotenv = |pairs: &[(String, String)]| {
            pairs.iter().map(|(k, v)| format!("{k}={}\n", quote(v))).collect::<String>()
        };
        std::fs::write(side.join("vars.env"), dotenv(&self.vars)).unwrap();
        std::fs::write(side.join("secrets.env"), dotenv(&self.secrets)).unwrap();
        std::fs::write(side.join("event.json"), self.event.to_string()).unwrap();
        let mut cmd = Command::new(act_var("ACT"));
        cmd.arg(event)
            .args(["-W", &format!(".github/workflows/{}", self.file)])
            .args(["-P", &format!("ubuntu-latest={}", act_var("ACT_JOB_IMAGE"))])
            .arg("--pull=false")
            // No Docker socket in the job, no cache server (it binds the
            // machine's outbound address), nothing left behind.
            .args(["--container-daemon-socket", "-"])
            .arg("--no-cache-server")
            .arg("--rm")
            .arg("--action-offline-mode")
            .args(["--env", &format!("GITHUB_REPOSITORY=acme/{}", self.repo_name)])
            .args(["--actor", &stack_var("REGISTRY_USERNAME")])
            .arg("--var-file")
            .arg(side.join("vars.env"))
            .arg("--secret-file")
            .arg(side.join("secrets.env"))
            .arg("-e")
            .arg(side.join("event.json"))
            .args(["--local-repository", &format!("org/deploy-action@v1={}", self.action_dir.display())]);
        for (uses, dir) in STAND_INS {
            cmd.args([
                "--local-repository",
                &format!("{uses}={}", repo_root().join("tests/act").join(dir).display()),
            ]);
        }
        for (k, v) in &self.env {
            cmd.args(["--env", &format!("{k}={v}")]);
        }
        cmd.current_dir(self.repo.path())
            .env("DOCKER_HOST", "unix:///var/run/docker.sock")
            .env("NO_COLOR", "1")
            .env("ACT_DISABLE_VERSION_CHECK", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let t0 = Instant::now();
        let child = cmd.spawn().expect("spawn act");
        let out = wait_output(child, bound);
        let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        // ACT_LOG_DIR=<dir>: keep each run's log, to read what act showed.
        if let Ok(dir) = std::env::var("ACT_LOG_DIR") {
            let name = format!(
                "{}-{event}-{}.log",
                self.file.trim_end_matches(".yml"),
                super::action::unique_run_id()
            );
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(std::path::Path::new(&dir).join(name), &log);
        }
        ActRun { code: out.status.code(), log, took: t0.elapsed() }
    }
}

/// A dotenv value as act's reader (godotenv) takes it back whole: double
/// quotes, with newlines, quotes and backslashes escaped.
fn quote(v: &str) -> String {
    assert!(!v.contains('$'), "a value with `$` would be expanded by act's dotenv reader");
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"))
}

/// Waits for `child` at most `bound` (then kills it), keeping what it wrote.
fn wait_output(mut child: std::process::Child, bound: Duration) -> std::process::Output {
    use std::io::Read;
    let pipe = |r: Option<Box<dyn Read + Send>>| {
        let mut r = r.expect("piped");
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = pipe(child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let err = pipe(child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let deadline = Instant::now() + bound;
    let status = loop {
        if let Some(s) = child.try_wait().expect("act") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let s = child.wait().expect("act");
            let log = String::from_utf8_lossy(&out.join().unwrap()).into_owned();
            panic!("act ran past {bound:?} ({s}):\n{log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    std::process::Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}
