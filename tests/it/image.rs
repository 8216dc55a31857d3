//! The published image, run the way the GitHub runner runs a Docker
//! container action, against the local stack.
//!
//! What the runner does (and so what [`RunnerDocker`] does):
//! `docker run --name … --workdir /github/workspace --rm`, every input as
//! `-e INPUT_<NAME>` (upper-cased, hyphens kept; `action.yml` defaults
//! included) and the `GITHUB_*`/`RUNNER_*` context as `-e NAME` with the value
//! in the docker CLI's own environment (never on its command line), the
//! Docker socket, `HOME`, the event folder, the file-commands folder and the
//! workspace mounted under `/github/…`, `GITHUB_OUTPUT`/`GITHUB_STEP_SUMMARY`
//! pointing into `/github/file_commands`. One difference: the runner puts the
//! container on a bridge network it creates per job, but the stack's hosts,
//! registry and nginx live on this machine's loopback (127.0.0.2…), so the
//! container shares the host's network (`--network host`).
//!
//! The image is built once per test run by `scripts/image` (a no-op when it
//! is up to date); `DEPLOY_ACTION_IMAGE=<ref>` tests another image instead,
//! e.g. a published one, without building.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::support::{
    first_hosts, live_version, repo_root, running_colours, shared_app_inputs, shared_app_lock, stack_var,
};

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
/// What the runner substitutes for `${{ github.token }}` in input defaults.
const FAKE_TOKEN: &str = "ghs_imageTestToken0123456789abcdefABCDEF";

/// The image under test: built by `scripts/image` once per test binary run.
pub fn image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        if let Ok(image) = std::env::var("DEPLOY_ACTION_IMAGE") {
            return image;
        }
        let out = Command::new(repo_root().join("scripts/image"))
            .env("DOCKER_HOST", stack_var("DOCKER_HOST"))
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/image");
        assert!(
            out.status.success(),
            "scripts/image failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        "deploy-action:local".to_string()
    })
}

/// One container-action step: inputs, context, and the host folders the
/// runner mounts.
pub struct RunnerDocker {
    inputs: BTreeMap<String, String>,
    context: BTreeMap<String, String>,
    name: String,
    dir: tempfile::TempDir,
    output_file: String,
    summary_file: String,
}

/// What a finished step left behind.
pub struct StepRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub outputs: Vec<(String, String)>,
    pub summary: String,
}

impl StepRun {
    pub fn output(&self, name: &str) -> Option<&str> {
        self.outputs.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    /// Everything a person can see: the log as the runner shows it (the
    /// `::add-mask::` commands, which carry the values to mask by
    /// necessity, are consumed by the runner), outputs and summary.
    pub fn visible_text(&self) -> String {
        let log: Vec<&str> = self.stdout.lines().filter(|l| !l.starts_with("::add-mask::")).collect();
        let outs: Vec<String> = self.outputs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{}\n{}\n{}\n{}", log.join("\n"), self.stderr, outs.join("\n"), self.summary)
    }
}

/// Removes the container if a test ends early (panic) while it still runs.
pub struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl RunnerDocker {
    /// A step with the runner's context and `action.yml`'s defaults as inputs.
    pub fn new() -> Self {
        static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["workspace", "file_commands", "home", "workflow"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        std::fs::write(dir.path().join("workflow/event.json"), r#"{"ref":"refs/heads/main"}"#).unwrap();
        // The runner names these files per step with a fresh GUID.
        let guid = format!("{:08x}-it-{n}", std::process::id());
        let output_file = format!("set_output_{guid}");
        let summary_file = format!("step_summary_{guid}");
        for f in [&output_file, &summary_file] {
            std::fs::write(dir.path().join("file_commands").join(f), "").unwrap();
        }
        let mut context = BTreeMap::new();
        for (k, v) in [
            ("HOME", "/github/home".to_string()),
            ("CI", "true".into()),
            ("GITHUB_ACTIONS", "true".into()),
            ("GITHUB_JOB", "deploy".into()),
            ("GITHUB_WORKFLOW", "deploy".into()),
            ("GITHUB_ACTION", "__org_deploy-action".into()),
            ("GITHUB_ACTION_REPOSITORY", "org/deploy-action".into()),
            ("GITHUB_ACTION_REF", "v1".into()),
            ("GITHUB_REPOSITORY", "acme/shop-api".into()),
            ("GITHUB_REPOSITORY_OWNER", "acme".into()),
            ("GITHUB_SHA", SHA.into()),
            ("GITHUB_REF", "refs/heads/main".into()),
            ("GITHUB_REF_NAME", "main".into()),
            ("GITHUB_REF_TYPE", "branch".into()),
            ("GITHUB_RUN_ID", "4242".into()),
            ("GITHUB_RUN_NUMBER", "7".into()),
            ("GITHUB_RUN_ATTEMPT", "1".into()),
            ("GITHUB_ACTOR", "octocat".into()),
            ("GITHUB_EVENT_NAME", "push".into()),
            ("GITHUB_EVENT_PATH", "/github/workflow/event.json".into()),
            ("GITHUB_SERVER_URL", "https://github.com".into()),
            ("GITHUB_API_URL", "https://api.github.com".into()),
            ("GITHUB_GRAPHQL_URL", "https://api.github.com/graphql".into()),
            ("GITHUB_WORKSPACE", "/github/workspace".into()),
            ("GITHUB_OUTPUT", format!("/github/file_commands/{output_file}")),
            ("GITHUB_STEP_SUMMARY", format!("/github/file_commands/{summary_file}")),
            ("RUNNER_OS", "Linux".into()),
            ("RUNNER_ARCH", "X64".into()),
            ("RUNNER_NAME", "GitHub Actions 2".into()),
            ("RUNNER_ENVIRONMENT", "github-hosted".into()),
            // Host paths: the runner does not translate these for containers.
            ("RUNNER_TEMP", "/home/runner/work/_temp".into()),
            ("RUNNER_WORKSPACE", "/home/runner/work/shop-api".into()),
        ] {
            context.insert(k.to_string(), v);
        }
        let mut step = Self {
            inputs: BTreeMap::new(),
            context,
            name: format!("deploy-action-it-{}-{n}", std::process::id()),
            dir,
            output_file,
            summary_file,
        };
        for (name, default) in action_defaults() {
            step = step.input(&name, &default);
        }
        // Required, with no default: a workflow names it.
        step.input("environment", "production")
    }

    /// Sets an input by its id in `action.yml` (`health-check-path`).
    pub fn input(mut self, name: &str, value: &str) -> Self {
        self.inputs.insert(format!("INPUT_{}", name.to_uppercase()), value.to_string());
        self
    }

    pub fn container_name(&self) -> &str {
        &self.name
    }

    pub fn host_dir(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    /// The `docker run` command line, as the runner builds it.
    pub fn command(&self) -> Command {
        let mount = |host: &Path, inner: &str| format!("{}:{inner}", host.display());
        let mut cmd = Command::new("docker");
        cmd.env("DOCKER_HOST", stack_var("DOCKER_HOST"));
        cmd.args([
            "run",
            "--name",
            &self.name,
            "--label",
            "deploy-action-it",
            "--workdir",
            "/github/workspace",
            "--rm",
        ]);
        for (k, v) in self.inputs.iter().chain(&self.context) {
            // Name only: the CLI reads the value from its own environment,
            // so no input (secrets included) appears in a process argument.
            cmd.arg("-e").arg(k);
            cmd.env(k, v);
        }
        cmd.args(["-v", "/var/run/docker.sock:/var/run/docker.sock"]);
        cmd.arg("-v").arg(mount(&self.host_dir("home"), "/github/home"));
        cmd.arg("-v").arg(mount(&self.host_dir("workflow"), "/github/workflow"));
        cmd.arg("-v").arg(mount(&self.host_dir("file_commands"), "/github/file_commands"));
        cmd.arg("-v").arg(mount(&self.host_dir("workspace"), "/github/workspace"));
        cmd.args(["--network", "host"]);
        cmd.arg(image());
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd
    }

    pub fn spawn(&self) -> (Child, Cleanup) {
        let child = self.command().spawn().expect("spawn docker run");
        (child, Cleanup(self.name.clone()))
    }

    pub fn run(&self) -> StepRun {
        let _cleanup = Cleanup(self.name.clone());
        let out = self.command().output().expect("docker run");
        self.finish(out)
    }

    /// Reads back the file commands the way the runner does after the step.
    pub fn finish(&self, out: Output) -> StepRun {
        let fc = self.host_dir("file_commands");
        let output_text = std::fs::read_to_string(fc.join(&self.output_file)).unwrap_or_default();
        let outputs = deploy_action::runner::output::parse(&output_text).unwrap_or_else(|e| {
            panic!("GITHUB_OUTPUT does not parse the way the runner parses it: {e}\n{output_text}")
        });
        StepRun {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            outputs,
            summary: std::fs::read_to_string(fc.join(&self.summary_file)).unwrap_or_default(),
        }
    }
}

/// Every input `action.yml` declares with a default, as the runner passes
/// them: `${{ github.token }}` evaluated (to a fake token here).
fn action_defaults() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo_root().join("action.yml")).expect("action.yml");
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("action.yml parses");
    let inputs = doc.get("inputs").and_then(|i| i.as_mapping()).expect("action.yml has inputs");
    inputs
        .iter()
        .filter_map(|(name, spec)| {
            let default = spec.get("default")?;
            let value = match default {
                serde_yaml::Value::String(s) => s.clone(),
                serde_yaml::Value::Bool(b) => b.to_string(),
                serde_yaml::Value::Number(n) => n.to_string(),
                _ => return None,
            };
            let value = if value.trim() == "${{ github.token }}" { FAKE_TOKEN.to_string() } else { value };
            Some((name.as_str()?.to_string(), value))
        })
        .collect()
}

/// A step deploying the shared `app` to the first `hosts` stack hosts with
/// the inputs a real workflow passes (`support::shared_app_inputs`).
fn hosts_step(hosts: usize, image: &str) -> RunnerDocker {
    shared_app_inputs(&first_hosts(hosts), image)
        .into_iter()
        .fold(RunnerDocker::new(), |s, (k, v)| s.input(k, &v))
}

#[test]
fn the_image_is_scratch_with_only_the_binary_and_ca_bundle() {
    let out = Command::new("docker")
        .env("DOCKER_HOST", stack_var("DOCKER_HOST"))
        .args([
            "image",
            "inspect",
            "--format",
            "{{json .Config.Entrypoint}} {{.Config.User}}|{{.Config.WorkingDir}}|{{len .RootFS.Layers}}",
        ])
        .arg(image())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        text, r#"["/deploy-action"] ||2"#,
        "entrypoint, no USER, no WORKDIR, two layers (CA bundle, binary)"
    );
    // Every regular file in the filesystem, less what Docker adds to any
    // container it creates (/.dockerenv, /dev/console and the empty /etc
    // mount points).
    let name = format!("deploy-action-it-files-{}", std::process::id());
    let _cleanup = Cleanup(name.clone());
    let created = Command::new("docker")
        .env("DOCKER_HOST", stack_var("DOCKER_HOST"))
        .args(["create", "--name", &name, image()])
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let listing = Command::new("sh")
        .env("DOCKER_HOST", stack_var("DOCKER_HOST"))
        .arg("-c")
        .arg(format!("docker export {name} | tar -tv"))
        .output()
        .unwrap();
    let mut files: Vec<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| l.split_whitespace().last().map(String::from))
        .filter(|f| {
            ![".dockerenv", "dev/console", "etc/hosts", "etc/hostname", "etc/resolv.conf"]
                .contains(&f.as_str())
        })
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["deploy-action", "etc/ssl/certs/ca-certificates.crt"],
        "nothing but the binary and CA bundle"
    );
}

#[test]
fn plan_run_in_the_image_against_the_stack_hosts() {
    let hosts: Vec<String> = stack_var("HOSTS").split(',').map(String::from).collect();
    let key = std::fs::read_to_string(stack_var("SSH_KEY")).unwrap();
    let step = hosts_step(hosts.len(), &stack_var("IMAGE_V2")).input("mode", "plan");
    let run = step.run();
    assert_eq!(run.code, Some(0), "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert_eq!(run.output("status"), Some("planned"), "{:?}", run.outputs);
    let plan = run.output("plan").expect("plan output");
    assert!(plan.contains(&format!("image: {}", stack_var("IMAGE_V2"))), "{plan}");
    assert!(plan.contains("app-blue / app-green"), "{plan}");
    for addr in stack_var("HOST_ADDRS").split(',') {
        assert!(plan.contains(addr), "plan lacks host {addr}:\n{plan}");
    }
    assert!(plan.lines().count() > 8, "a multi-line output survives the file command:\n{plan}");
    assert!(run.stdout.contains("::group::Plan"), "{}", run.stdout);
    assert!(run.summary.contains("deploy-action plan: app → production"), "summary:\n{}", run.summary);
    // The key's first base64 line, the registry password, the token.
    let key_line = key.lines().nth(1).expect("an OpenSSH key has a body");
    for (what, secret) in
        [("ssh key", key_line), ("registry password", &stack_var("REGISTRY_PASSWORD")), ("token", FAKE_TOKEN)]
    {
        assert!(!run.visible_text().contains(secret), "the {what} leaked into the step's output");
    }
}

#[test]
fn bad_inputs_in_the_image_exit_2_naming_every_problem() {
    let step = RunnerDocker::new()
        .input("target", "hosts")
        .input("hosts", "root@127.0.0.2:22,-oProxyCommand=sh")
        .input("image", "Not An Image!")
        .input("strategy", "yolo")
        .input("health-check-timeout", "soon")
        .input("blue-port", "70000")
        .input("github-token", "t0ken-value")
        .input("ssh-known-hosts", "x ssh-ed25519 AAAA");
    let run = step.run();
    assert_eq!(run.code, Some(2), "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    // Hyphenated names arrive through `docker run -e` intact.
    for input in
        ["'hosts'", "'image'", "'strategy'", "'health-check-timeout'", "'blue-port'", "'ssh-private-key'"]
    {
        assert!(run.stdout.contains(&format!("input {input}")), "{input} not named in:\n{}", run.stdout);
    }
    assert!(run.stdout.contains("::error title=deploy-action (invalid_input)::"), "{}", run.stdout);
    assert_eq!(run.output("status"), Some("error"), "written through the mounted file-commands folder");
    assert!(!run.visible_text().contains("t0ken-value"));
}

/// The runner cancels a container step by signalling the container: SIGINT,
/// then SIGTERM 7.5 s later if it still runs (then SIGKILL).
#[test]
fn cancelled_image_deploy_exits_within_7s_with_one_version_serving() {
    let _lock = shared_app_lock();
    let first = hosts_step(1, &stack_var("IMAGE_V1")).run();
    assert_eq!(first.code, Some(0), "deploying v1 failed:\n{}\n{}", first.stdout, first.stderr);
    assert_eq!(live_version(1), "v1");

    let step = hosts_step(1, &stack_var("IMAGE_V2")).input("observe-window", "60s");
    let (mut child, _cleanup) = step.spawn();
    let t0 = Instant::now();
    while live_version(1) != "v2" {
        assert!(t0.elapsed() < Duration::from_secs(90), "v2 never switched in");
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!("the action ended early ({status}):\n{}", String::from_utf8_lossy(&out.stdout));
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    let signalled = Instant::now();
    docker_kill(step.container_name(), "SIGINT");
    let name = step.container_name().to_string();
    let term = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(7500));
        docker_kill(&name, "SIGTERM"); // fails harmlessly once the container is gone
    });
    let out = child.wait_with_output().unwrap();
    let took = signalled.elapsed();
    let run = step.finish(out);
    eprintln!("cancelled run: exit {:?}, {took:?} after SIGINT", run.code);
    assert!(took < Duration::from_secs(7), "took {took:?} to exit after SIGINT:\n{}", run.stdout);
    assert_ne!(run.code, Some(0), "{}", run.stdout);
    assert_eq!(run.output("status"), Some("error"), "{}", run.stdout);
    let colours = running_colours(1, "app");
    assert_eq!(colours.len(), 1, "exactly one colour runs: {colours:?}");
    let served: Vec<String> = (0..5).map(|_| live_version(1)).collect();
    assert!(served.iter().all(|v| v == &served[0]), "one version serves: {served:?}");
    assert!(["v1", "v2"].contains(&served[0].as_str()), "{served:?}");
    drop(term);
}

fn docker_kill(name: &str, signal: &str) {
    let _ = Command::new("docker")
        .env("DOCKER_HOST", stack_var("DOCKER_HOST"))
        .args(["kill", "--signal", signal, name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
