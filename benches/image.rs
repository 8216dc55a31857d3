//! Figures for the published image (prints them; asserts nothing on time):
//!
//! - binary size, image size uncompressed (`docker image inspect`) and
//!   compressed (`docker save | gzip -c | wc -c`, about what a pull moves);
//! - a `mode: plan` run started the way the runner starts a container
//!   action: time from `docker run` to the action's first log line and to its
//!   exit (medians over repeated runs), beside the same `docker run` of a
//!   trivial static binary (busybox) to show the action's own start cost;
//! - peak memory (max RSS) of a plan run, the binary run directly under
//!   `/usr/bin/time -v`.
//!
//! Needs the local stack (`scripts/stack/up`: Docker Engine and the hosts the
//! plan names) and builds the image with `scripts/image` unless
//! `DEPLOY_ACTION_IMAGE` names one. `BENCH_RUNS` sets the repeat count (10
//! under `cargo bench`, 1 when `cargo test --all-targets` runs it as a smoke test).
//!
//! `cargo bench --bench image`

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BASELINE_IMAGE: &str = "deploy-action-bench/busybox:local";
static DOCKER_HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// A command run with the stack's Docker Engine (`docker …` or `sh -c "docker …"`).
fn with_docker_host(mut cmd: Command) -> Command {
    cmd.env("DOCKER_HOST", DOCKER_HOST.get().map(String::as_str).unwrap_or("unix:///var/run/docker.sock"));
    cmd
}

fn docker() -> Command {
    with_docker_host(Command::new("docker"))
}

fn sh(script: &str) -> Command {
    let mut cmd = with_docker_host(Command::new("sh"));
    cmd.arg("-c").arg(script);
    cmd
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let stack = read_stack(&root);
    if let Some(host) = stack.get("DOCKER_HOST") {
        let _ = DOCKER_HOST.set(host.clone());
    }
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this too,
    // without it, and then one round is enough to show it still works.
    let benching = std::env::args().any(|a| a == "--bench");
    let default_runs = if benching { 10 } else { 1 };
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(default_runs);

    let image = match std::env::var("DEPLOY_ACTION_IMAGE") {
        Ok(image) => image,
        Err(_) => {
            let status = Command::new(root.join("scripts/image"))
                .stdout(Stdio::null())
                .status()
                .expect("scripts/image");
            assert!(status.success(), "scripts/image failed");
            "deploy-action:local".into()
        }
    };
    let binary = root.join("target/image/x86_64-unknown-linux-musl/deploy-action");

    println!("deploy-action image benchmark ({runs} runs per median)");
    println!();
    println!("## Size");
    if let Ok(meta) = std::fs::metadata(&binary) {
        println!("binary (static musl, stripped)     {:>10}", human(meta.len()));
    }
    let uncompressed: u64 = capture(docker().args(["image", "inspect", "--format", "{{.Size}}", &image]))
        .trim()
        .parse()
        .unwrap_or(0);
    println!("image, uncompressed                {:>10}", human(uncompressed));
    let compressed: u64 =
        capture(&mut sh(&format!("docker save '{image}' | gzip -c | wc -c"))).trim().parse().unwrap_or(0);
    println!("image, docker save | gzip          {:>10}", human(compressed));

    println!();
    println!("## Start (docker run → first log line / exit), mode: plan, medians");
    let plan_env = plan_inputs(&stack);
    // One unmeasured run: the first start after a build pays for loading the
    // image's layers into the page cache.
    let _ = docker_plan_run(&image, &plan_env);
    let mut first = Vec::new();
    let mut exit = Vec::new();
    for _ in 0..runs {
        let (f, e, code) = docker_plan_run(&image, &plan_env);
        assert_eq!(code, Some(0), "the plan run failed");
        first.push(f.unwrap_or(e));
        exit.push(e);
    }
    let (action_first, action_exit) = (median(&mut first), median(&mut exit));
    println!("deploy-action plan   first line {:>8}   exit {:>8}", ms(action_first), ms(action_exit));

    match baseline_image() {
        Some(baseline) => {
            let _ = docker_trivial_run(&baseline);
            let mut bfirst = Vec::new();
            let mut bexit = Vec::new();
            for _ in 0..runs {
                let (f, e) = docker_trivial_run(&baseline);
                bfirst.push(f.unwrap_or(e));
                bexit.push(e);
            }
            let (b_first, b_exit) = (median(&mut bfirst), median(&mut bexit));
            println!("busybox echo (base)  first line {:>8}   exit {:>8}", ms(b_first), ms(b_exit));
            println!(
                "ratio action/base    first line {:>7.2}x   exit {:>7.2}x   (action's own share of exit: {})",
                action_first.as_secs_f64() / b_first.as_secs_f64(),
                action_exit.as_secs_f64() / b_exit.as_secs_f64(),
                ms(action_exit.saturating_sub(b_exit)),
            );
        }
        None => println!("busybox baseline skipped: no static /bin/busybox (Debian busybox-static)"),
    }

    println!();
    println!("## The binary alone (no container), mode: plan");
    if binary.exists() {
        let mut direct = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            let out = direct_plan(&binary, &plan_env, None).output().expect("run the binary");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
            direct.push(t.elapsed());
        }
        println!("exit (median)                      {:>10}", ms(median(&mut direct)));
        match peak_rss_kib(&binary, &plan_env) {
            Some(kib) => println!("peak memory (max RSS)              {:>10}", human(kib * 1024)),
            None => println!("peak memory skipped: /usr/bin/time missing (Debian package `time`)"),
        }
    } else {
        println!("skipped: {} missing", binary.display());
    }
}

/// `.stack/env` as a map (empty when the stack was never set up).
fn read_stack(root: &Path) -> BTreeMap<String, String> {
    let dir = std::env::var("STACK_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join(".stack"));
    std::fs::read_to_string(dir.join("env"))
        .unwrap_or_else(|e| panic!("the local stack is not up ({e}); run scripts/stack/up"))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The environment of a plan run over the stack's hosts, as the runner sets it.
fn plan_inputs(stack: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let get = |k: &str| stack.get(k).cloned().unwrap_or_else(|| panic!("{k} missing from .stack/env"));
    let mut env = BTreeMap::new();
    for (k, v) in [
        ("INPUT_TARGET", "hosts".to_string()),
        ("INPUT_MODE", "plan".into()),
        ("INPUT_ENVIRONMENT", "production".into()),
        ("INPUT_APP", "app".into()),
        ("INPUT_IMAGE", get("IMAGE_V2")),
        ("INPUT_HOSTS", get("HOSTS").replace(',', "\n")),
        ("INPUT_SSH-PRIVATE-KEY", std::fs::read_to_string(get("SSH_KEY")).unwrap_or_default()),
        ("INPUT_SSH-KNOWN-HOSTS", std::fs::read_to_string(get("SSH_KNOWN_HOSTS")).unwrap_or_default()),
        ("INPUT_GITHUB-TOKEN", "ghs_benchToken".into()),
        ("INPUT_GITHUB-DEPLOYMENTS", "false".into()),
        ("GITHUB_ACTIONS", "true".into()),
        ("GITHUB_REPOSITORY", "acme/shop-api".into()),
        ("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567".into()),
        ("GITHUB_REF", "refs/heads/main".into()),
        ("GITHUB_RUN_ID", "4242".into()),
        ("GITHUB_RUN_ATTEMPT", "1".into()),
        ("GITHUB_SERVER_URL", "https://github.com".into()),
        ("GITHUB_API_URL", "https://api.github.com".into()),
        ("GITHUB_EVENT_NAME", "push".into()),
        ("GITHUB_ACTOR", "octocat".into()),
        ("HOME", "/github/home".into()),
        ("GITHUB_WORKSPACE", "/github/workspace".into()),
        ("GITHUB_OUTPUT", "/github/file_commands/set_output_bench".into()),
        ("GITHUB_STEP_SUMMARY", "/github/file_commands/step_summary_bench".into()),
    ] {
        env.insert(k.to_string(), v);
    }
    env
}

/// One runner-style `docker run` of a plan: (first stdout line, exit, code).
fn docker_plan_run(image: &str, env: &BTreeMap<String, String>) -> (Option<Duration>, Duration, Option<i32>) {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["workspace", "file_commands", "home"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let mut cmd = docker();
    cmd.args(["run", "--rm", "--workdir", "/github/workspace", "--network", "host"]);
    for (k, v) in env {
        cmd.arg("-e").arg(k).env(k, v);
    }
    for (sub, inner) in [
        ("workspace", "/github/workspace"),
        ("file_commands", "/github/file_commands"),
        ("home", "/github/home"),
    ] {
        cmd.arg("-v").arg(format!("{}:{inner}", dir.path().join(sub).display()));
    }
    cmd.arg(image);
    timed(cmd)
}

fn docker_trivial_run(image: &str) -> (Option<Duration>, Duration) {
    let mut cmd = docker();
    cmd.args(["run", "--rm", "--network", "host", image, "/bin/busybox", "echo", "ready"]);
    let (first, exit, _) = timed(cmd);
    (first, exit)
}

/// Spawns `cmd`; returns when its first stdout line arrived and when it exited.
fn timed(mut cmd: Command) -> (Option<Duration>, Duration, Option<i32>) {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn docker run");
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let first = match reader.read_line(&mut line) {
        Ok(n) if n > 0 => Some(start.elapsed()),
        _ => None,
    };
    std::io::copy(&mut reader, &mut std::io::sink()).ok();
    let status = child.wait().unwrap();
    (first, start.elapsed(), status.code())
}

/// The binary run directly with a plan's environment (paths on the host).
fn direct_plan(binary: &Path, env: &BTreeMap<String, String>, wrapper: Option<&str>) -> Command {
    let dir = std::env::temp_dir().join(format!("deploy-action-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = match wrapper {
        Some(w) => {
            let mut c = Command::new(w);
            c.arg("-v").arg(binary);
            c
        }
        None => Command::new(binary),
    };
    cmd.env_clear().envs(env).env("GITHUB_WORKSPACE", &dir);
    cmd.env("GITHUB_OUTPUT", dir.join("output")).env("GITHUB_STEP_SUMMARY", dir.join("summary"));
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

fn peak_rss_kib(binary: &Path, env: &BTreeMap<String, String>) -> Option<u64> {
    if !Path::new("/usr/bin/time").exists() {
        return None;
    }
    let out = direct_plan(binary, env, Some("/usr/bin/time")).output().ok()?;
    String::from_utf8_lossy(&out.stderr).lines().find_map(|l| {
        l.trim().strip_prefix("Maximum resident set size (kbytes):").map(|v| v.trim().parse().ok())
    })?
}

/// An image holding only Debian's static busybox, made with `docker import`
/// (no pull), as the "trivial static binary" baseline.
fn baseline_image() -> Option<String> {
    let busybox = Path::new("/bin/busybox");
    if !is_static_elf(busybox) {
        return None;
    }
    let have = docker().args(["image", "inspect", BASELINE_IMAGE]).output().ok()?;
    if !have.status.success() {
        let dir = tempfile::tempdir().ok()?;
        std::fs::create_dir_all(dir.path().join("bin")).ok()?;
        std::fs::copy(busybox, dir.path().join("bin/busybox")).ok()?;
        let import = format!("tar -C '{}' -c bin | docker import - {BASELINE_IMAGE}", dir.path().display());
        let ok = sh(&import).stdout(Stdio::null()).status().ok()?.success();
        if !ok {
            return None;
        }
    }
    Some(BASELINE_IMAGE.to_string())
}

/// A 64-bit little-endian ELF without a program interpreter (PT_INTERP).
fn is_static_elf(path: &Path) -> bool {
    let Ok(b) = std::fs::read(path) else { return false };
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 || b[5] != 1 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(b[32..40].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        o + 4 <= b.len() && u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) != 3
    })
}

fn capture(cmd: &mut Command) -> String {
    cmd.output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn human(bytes: u64) -> String {
    if bytes >= 1024 * 1024 {
        format!("{:.2} MiB", bytes as f64 / 1024.0 / 1024.0)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}
