//! Fleet behaviour of the built binary against the real stack: a failing
//! host in a fleet, a host lost mid-deploy, SIGTERM during the switch, a
//! foreign deploy lock, a changed host key, wrong registry credentials, and
//! zero dropped requests through twenty consecutive deploys.
//!
//! Isolation: these tests use ONLY simulated hosts 4–8 (127.0.0.5–127.0.0.9);
//! hosts 1–3 belong to `deploy.rs` (and may be deployed by another test
//! process at the same time). Inside this process, tests touching the same
//! host serialise on [`lock_hosts`]; tests on distinct hosts run in
//! parallel. Every test leaves its hosts serving the shared `app` (one
//! colour, one version) for the next one.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::support::action::{Action, Run};
use crate::support::{
    host_addr, host_exec, live_version, repo_root, running_colours, shared_app_inputs, stack_var,
    summary_table, wait_until_serving,
};

/// Serialises this module's tests per host (4..=8), taken in ascending
/// order so two tests never wait on each other crosswise.
pub(crate) fn lock_hosts(ks: &[usize]) -> Vec<MutexGuard<'static, ()>> {
    static LOCKS: [Mutex<()>; 9] = [const { Mutex::new(()) }; 9];
    let mut ks = ks.to_vec();
    ks.sort_unstable();
    ks.dedup();
    ks.iter()
        .map(|&k| {
            assert!((4..=8).contains(&k), "fleet tests use hosts 4–8 only, not {k}");
            LOCKS[k].lock().unwrap_or_else(|p| p.into_inner())
        })
        .collect()
}

/// `root@127.0.0.(K+1):22` as the stack lists host `k`.
fn host_spec(k: usize) -> String {
    let hosts = stack_var("HOSTS");
    hosts
        .split(',')
        .nth(k - 1)
        .map(String::from)
        .unwrap_or_else(|| panic!("host {k} is not up (HOSTS={hosts}); run scripts/stack/up --hosts 8"))
}

/// An action deploying the shared `app` to hosts `ks` (stack numbers, in
/// this order: the first is the fleet's barrier).
pub fn fleet_action(ks: &[usize], image: &str) -> Action {
    let list: Vec<String> = ks.iter().map(|&k| host_spec(k)).collect();
    Action::new().inputs(shared_app_inputs(&list, image))
}

pub(crate) fn image(v: &str) -> String {
    stack_var(&format!("IMAGE_{}", v.to_uppercase()))
}

/// The summary's "Hosts" table: `(host, outcome)` per row.
fn host_rows(summary: &str) -> Vec<(String, String)> {
    summary_table(summary, "### Hosts")
        .into_iter()
        .map(|cells| (cells[0].clone(), cells.get(1).cloned().unwrap_or_default()))
        .collect()
}

/// Runs `scripts/stack/<script> args…`, panicking with its output on failure.
pub(crate) fn stack_script(script: &str, args: &[&str]) {
    let out = Command::new(repo_root().join("scripts/stack").join(script)).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "scripts/stack/{script} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes host `k` serve `v` from exactly one colour (deploying it when
/// needed; a host left in a strange state by an earlier run is reset first).
pub(crate) fn ensure_serving(k: usize, v: &str) {
    if live_version(k) == v && running_colours(k, "app").len() == 1 && !lock_held(k) {
        return;
    }
    let mut run = fleet_action(&[k], &image(v)).run();
    if run.code != Some(0) {
        eprintln!("host {k}: could not deploy {v} ({:?}); resetting the host", run.output("status"));
        stack_script("reset-host", &[&k.to_string()]);
        run = fleet_action(&[k], &image(v)).run();
    }
    assert_eq!(run.code, Some(0), "host {k}: deploying {v} failed:\n{}", run.stdout);
    assert_eq!(live_version(k), v, "host {k}");
    assert_eq!(running_colours(k, "app").len(), 1, "host {k}");
}

pub(crate) const LOCK: &str = "/var/lib/deploy-action/locks/app.lock";

pub(crate) fn lock_held(k: usize) -> bool {
    host_exec(k, &["sh", "-c", &format!("test -d {LOCK} && echo held")]).trim() == "held"
}

/// What a host serves and runs, for assertions and for the test's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostState {
    pub version: String,
    pub colours: Vec<String>,
}

pub(crate) fn state(k: usize) -> HostState {
    HostState { version: live_version(k), colours: running_colours(k, "app") }
}

/// Restores host `k`'s network (after `cut-host`) even when the test fails.
struct Uncut(usize);

impl Drop for Uncut {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("scripts/stack/restore-host")).arg(self.0.to_string()).output();
    }
}

/// Kills a spawned action when a test fails before it ends.
pub(crate) struct KillOnDrop(pub u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-KILL", &self.0.to_string()]).stderr(Stdio::null()).status();
    }
}

/// A spawned action's stdout, read on a thread line by line as it arrives.
pub(crate) struct LogWatch {
    lines: std::sync::mpsc::Receiver<String>,
    all: std::thread::JoinHandle<String>,
}

impl LogWatch {
    pub(crate) fn start(child: &mut std::process::Child) -> LogWatch {
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = std::sync::mpsc::channel();
        let all = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                all.push_str(&line);
                all.push('\n');
                let _ = tx.send(line);
            }
            all
        });
        LogWatch { lines, all }
    }

    /// Returns at the first line matching `pred`; panics with the lines
    /// before it when the log ends or `bound` passes first.
    pub(crate) fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool, bound: Duration) {
        let deadline = Instant::now() + bound;
        let mut seen = String::new();
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if pred(&line) => return,
                Ok(line) => seen.push_str(&(line + "\n")),
                Err(_) => panic!("{what} never came:\n{seen}"),
            }
        }
    }

    /// Everything the action wrote, once it has ended.
    pub(crate) fn all(self) -> String {
        self.all.join().unwrap()
    }
}

/// Spawns `action` and returns once its log shows a line containing
/// `marker` (panicking after `bound`): the child, its kill-on-drop guard
/// and the rest of its log.
pub(crate) fn spawn_until(
    action: &Action,
    marker: &str,
    bound: Duration,
) -> (std::process::Child, KillOnDrop, LogWatch) {
    let mut child = action.spawn();
    let kill = KillOnDrop(child.id());
    let log = LogWatch::start(&mut child);
    log.wait_for(marker, |l| l.contains(marker), bound);
    (child, kill, log)
}

/// Runs a spawned action to its end on another thread, so the test can
/// bound how long it takes (and kill it if it hangs).
pub(crate) fn finish_within(action: &Action, child: std::process::Child, bound: Duration) -> (Run, Duration) {
    let pid = child.id();
    let started = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(bound) {
        Ok(out) => (action.finish(out.unwrap()), started.elapsed()),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            panic!("the action was still running {}s later (a hang)", bound.as_secs());
        }
    }
}

#[test]
fn a_failing_third_host_puts_all_three_back_on_the_old_version() {
    let _hosts = lock_hosts(&[4, 5, 6]);
    for k in [4, 5, 6] {
        ensure_serving(k, "v1");
    }
    let before: Vec<HostState> = [4, 5, 6].iter().map(|&k| state(k)).collect();

    // Host 6 fails for a real reason: another process already holds the
    // host port its candidate colour must publish (here a stray container
    // of someone else), so the Engine refuses to start the candidate
    // (`port is already allocated`) — after hosts 4 (the barrier) and 5
    // have started or even switched to theirs.
    let candidate_port = if before[2].colours == ["app-blue"] { "8082" } else { "8081" };
    host_exec(6, &["docker", "rm", "-f", "squatter"]);
    let squat = host_exec(
        6,
        &[
            "docker",
            "run",
            "-d",
            "--name",
            "squatter",
            "-p",
            &format!("127.0.0.1:{candidate_port}:8080"),
            &image("v1"),
        ],
    );
    assert!(!squat.trim().is_empty(), "could not start the squatter on host 6");
    struct Squatter;
    impl Drop for Squatter {
        fn drop(&mut self) {
            host_exec(6, &["docker", "rm", "-f", "squatter"]);
        }
    }
    let _squatter = Squatter;

    let run = fleet_action(&[4, 5, 6], &image("v2")).run();
    println!("{}", run.summary);
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert_eq!(run.output("status"), Some("failure"), "{}", run.stdout);
    assert!(run.stdout.contains("container_start_failed"), "{}", run.stdout);
    assert!(run.summary.contains("127.0.0.7"), "the failing host is named:\n{}", run.summary);
    let rows = host_rows(&run.summary);
    let names: Vec<&str> = rows.iter().map(|(h, _)| h.as_str()).collect();
    assert_eq!(names, ["127.0.0.5", "127.0.0.6", "127.0.0.7"], "every host is listed:\n{}", run.summary);
    for (host, outcome) in &rows {
        assert_eq!(outcome, "rolled back", "{host}:\n{}", run.summary);
    }
    for (i, k) in [4, 5, 6].into_iter().enumerate() {
        assert_eq!(state(k), before[i], "host {k} is back on v1 with only its old colour running");
        assert!(!lock_held(k), "host {k}: the deploy lock was released");
    }
}

/// Deploys v2 to host 7 with a long observe window, cuts the host off once
/// v2 serves through nginx, and checks the run ends within its deadlines,
/// names the host and says its state is unknown. Then, with the network
/// back, reports honestly what the host serves and that a re-run of the
/// deploy converges it.
fn cut_mid_deploy(mode: &[&str], ssh_timeout: &str, bound: Duration) {
    let _hosts = lock_hosts(&[7]);
    ensure_serving(7, "v1");
    let action =
        fleet_action(&[7], &image("v2")).input("observe-window", "60s").input("ssh-timeout", ssh_timeout);
    let run_id = action.run_id().to_string();
    let mut child = action.spawn();
    wait_until_serving(7, "v2", &mut child, Duration::from_secs(90));
    // Into the observe window (the switch verifies 3 answers first).
    std::thread::sleep(Duration::from_secs(3));
    let mut args = vec!["7"];
    args.extend_from_slice(mode);
    stack_script("cut-host", &args);
    let uncut = Uncut(7);
    let (run, took) = finish_within(&action, child, bound);
    println!(
        "cut-host 7 {mode:?}: the action ended {:.1}s after the cut\n{}",
        took.as_secs_f64(),
        run.summary
    );

    assert_eq!(run.code, Some(1), "{}", run.stdout);
    let status = run.output("status").unwrap_or("");
    assert!(status == "error" || status == "failure", "status {status}:\n{}", run.stdout);
    assert!(run.stdout.contains("127.0.0.8"), "the lost host is named:\n{}", run.stdout);
    // The host could not be switched back: its state is unknown, and the
    // summary says so for that host.
    assert_eq!(
        host_rows(&run.summary),
        [("127.0.0.8".to_string(), "failed (state unknown)".to_string())],
        "{}",
        run.summary
    );
    assert_eq!(status, "error", "a host whose state is unknown makes the run an error");

    drop(uncut);
    // What the host looks like once reachable again, stated as found.
    let after = state(7);
    let lock = lock_held(7);
    println!(
        "after restore-host 7: nginx serves {:?}; running: {:?}; deploy lock held: {lock}",
        after.version, after.colours
    );
    assert!(after.version == "v2" || after.version == "v1", "something serves: {after:?}");
    // Recovery is GitHub's "Re-run" of the job: the same run, attempt 2,
    // which takes over the lock the lost attempt may still hold.
    let rerun =
        fleet_action(&[7], &image("v1")).env("GITHUB_RUN_ID", &run_id).env("GITHUB_RUN_ATTEMPT", "2").run();
    assert_eq!(rerun.code, Some(0), "re-running the deploy converges the host:\n{}", rerun.stdout);
    assert_eq!(live_version(7), "v1", "v1 serves after the re-run");
    assert_eq!(running_colours(7, "app").len(), 1, "exactly one version runs after the re-run");
    assert!(!lock_held(7));
}

#[test]
fn ssh_cut_mid_deploy_connections_refused() {
    // `cut-host 7`: the forwarders die, the SSH session drops at once and
    // new connections are refused, so every remote call fails fast.
    cut_mid_deploy(&[], "5s", Duration::from_secs(30));
}

#[test]
fn ssh_cut_mid_deploy_packets_dropped() {
    // `cut-host 7 --drop`: packets vanish, calls hang until their timeout
    // (ssh-timeout 3s here): 3 observe probes, the rollback's first command,
    // the lock release — each bounded.
    cut_mid_deploy(&["--drop"], "3s", Duration::from_secs(60));
}

#[test]
fn a_lock_held_by_another_run_stops_the_deploy_until_broken() {
    let _hosts = lock_hosts(&[8]);
    ensure_serving(8, "v1");
    let before = state(8);
    let owner = "deploy-id: 999-2\nrun: https://github.com/acme/shop-api/actions/runs/999/attempts/2\nimage: 127.0.0.1:5000/demo/app:v3\nsince: 2026-01-02T03:04:05Z\n";
    host_exec(8, &["sh", "-c", &format!("mkdir -p {LOCK} && printf '%s' '{owner}' > {LOCK}/owner")]);

    let run = fleet_action(&[8], &image("v2")).run();
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert_eq!(run.output("status"), Some("failure"));
    assert!(run.stdout.contains("deploy_locked"), "{}", run.stdout);
    for part in
        ["999-2", "https://github.com/acme/shop-api/actions/runs/999/attempts/2", "2026-01-02T03:04:05Z"]
    {
        assert!(run.stdout.contains(part), "the owner ({part}) is named:\n{}", run.stdout);
    }
    assert_eq!(state(8), before, "nothing changed");
    assert_eq!(host_exec(8, &["cat", &format!("{LOCK}/owner")]), owner, "the foreign lock is left alone");

    let run = fleet_action(&[8], &image("v2")).input("break-lock", "true").run();
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert!(run.stdout.contains("deploy_lock_broken") && run.stdout.contains("999-2"), "{}", run.stdout);
    assert_eq!(live_version(8), "v2");
    assert!(!lock_held(8), "our lock is released at the end");
}

#[test]
fn a_changed_host_key_is_refused_before_anything_changes() {
    let _hosts = lock_hosts(&[8]);
    ensure_serving(8, "v1");
    let before = state(8);
    // Another valid ed25519 key, pinned for host 8's address.
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let mut parts = public.split_whitespace();
    let (kind, blob) = (parts.next().unwrap(), parts.next().unwrap());
    let known: Vec<String> = std::fs::read_to_string(stack_var("SSH_KNOWN_HOSTS"))
        .unwrap()
        .lines()
        .map(|l| if l.starts_with("127.0.0.9 ") { format!("127.0.0.9 {kind} {blob}") } else { l.to_string() })
        .collect();

    let run = fleet_action(&[8], &image("v2")).input("ssh-known-hosts", &known.join("\n")).run();
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert_eq!(run.output("status"), Some("failure"));
    assert!(run.stdout.contains("host_key_mismatch"), "{}", run.stdout);
    assert!(
        run.summary.contains("127.0.0.9") && run.summary.contains("host_key_mismatch"),
        "{}",
        run.summary
    );
    assert_eq!(state(8), before, "nothing changed");
}

#[test]
fn wrong_registry_credentials_keep_the_old_version() {
    let _hosts = lock_hosts(&[5]);
    ensure_serving(5, "v1");
    let before = state(5);
    let run = fleet_action(&[5], &image("v2")).input("registry-password", "not-the-password").run();
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert_eq!(run.output("status"), Some("failure"));
    assert!(run.stdout.contains("registry_auth_failed"), "{}", run.stdout);
    let leaks = run
        .all_text()
        .lines()
        .filter(|l| !l.starts_with("::add-mask::"))
        .any(|l| l.contains("not-the-password"));
    assert!(!leaks, "the password is masked everywhere but in its own ::add-mask::");
    assert_eq!(state(5), before, "the old version serves, nothing else runs");
    assert!(!lock_held(5));
}

/// SIGTERM while a non-barrier host is in the middle of its nginx switch:
/// the switch (a critical step) finishes, then every host that switched is
/// put back, and the run ends within the runner's 7 s with exactly one
/// version serving on every host.
#[test]
fn sigterm_during_the_switch_leaves_one_version_serving_on_every_host() {
    let ks = [4, 5, 6];
    let _hosts = lock_hosts(&ks);
    for k in ks {
        ensure_serving(k, "v1");
    }
    let before: Vec<HostState> = ks.iter().map(|&k| state(k)).collect();
    let action = fleet_action(&ks, &image("v2")).input("observe-window", "60s");
    let mut child = action.spawn();
    let pid = child.id();
    let log = LogWatch::start(&mut child);
    let _kill = KillOnDrop(pid);
    // Host 5 (127.0.0.6) switches after the barrier, host 4, has switched.
    let target = "host=\"127.0.0.6\"";
    let is_switch_start = |l: &str| l.contains("switching nginx") && l.contains(target);
    log.wait_for("host 5's switch", is_switch_start, Duration::from_secs(90));
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let (mut run, took) = finish_within(&action, child, Duration::from_secs(30));
    run.stdout = log.all();
    let figure = format!(
        "SIGTERM during host 5's switch (3 hosts): the action exited {:.1}s later\n",
        took.as_secs_f64()
    );
    print!("{figure}{}", run.summary);
    crate::support::save_figures("sigterm-during-switch", &figure);

    // The signal really landed inside the switch: host 5's switch started
    // before it and finished (traffic moved) after it.
    let lines: Vec<&str> = run.stdout.lines().collect();
    let at = |pred: &dyn Fn(&str) -> bool| lines.iter().position(|l| pred(l));
    let started = at(&is_switch_start).expect("switch start logged");
    let received = at(&|l: &str| l.contains("SIGTERM received")).expect("the signal is reported");
    let moved = at(&|l: &str| l.contains("127.0.0.6: 100% of traffic goes to"))
        .expect("the in-flight switch is finished, not cut half-way");
    assert!(started < received && received < moved, "the signal landed mid-switch:\n{}", run.stdout);

    assert!(took < Duration::from_secs(7), "took {took:?} to exit after SIGTERM:\n{}", run.stdout);
    assert_ne!(run.code, Some(0));
    assert_eq!(run.output("status"), Some("error"), "{}", run.stdout);
    for (i, k) in ks.into_iter().enumerate() {
        assert_eq!(state(k), before[i], "host {k}: v1 serves from its old colour, nothing else runs");
        assert!(!lock_held(k), "host {k}: the deploy lock was released");
    }
}

// ---------------------------------------------------------------------------
// Zero dropped requests.

/// wrk's totals, from `scripts/bench/count.lua`.
#[derive(Debug, Default)]
pub(crate) struct WrkTotals {
    pub requests: u64,
    errors: BTreeMap<String, u64>,
    statuses: BTreeMap<u16, u64>,
    pub bodies: BTreeMap<String, u64>,
    pub latency: String,
}

impl WrkTotals {
    fn parse(out: &str) -> WrkTotals {
        let mut t = WrkTotals::default();
        for line in out.lines() {
            let mut w = line.split_whitespace();
            match w.next() {
                Some("requests") => t.requests = w.next().and_then(|n| n.parse().ok()).unwrap_or(0),
                Some("errors") => {
                    for kv in w {
                        if let Some((k, v)) = kv.split_once('=') {
                            t.errors.insert(k.to_string(), v.parse().unwrap_or(0));
                        }
                    }
                }
                Some("status") => {
                    if let (Some(c), Some(n)) = (w.next(), w.next()) {
                        t.statuses.insert(c.parse().unwrap_or(0), n.parse().unwrap_or(0));
                    }
                }
                Some("body") => {
                    if let (Some(b), Some(n)) = (w.next(), w.next()) {
                        t.bodies.insert(b.to_string(), n.parse().unwrap_or(0));
                    }
                }
                Some("latency") => t.latency = w.collect::<Vec<_>>().join(" "),
                _ => {}
            }
        }
        t
    }
    pub fn non_2xx(&self) -> u64 {
        self.statuses.iter().filter(|(c, _)| !(200..300).contains(*c)).map(|(_, n)| n).sum()
    }
    pub fn error(&self, k: &str) -> u64 {
        self.errors.get(k).copied().unwrap_or(0)
    }
}

/// A wrk run in the background, stopped with SIGINT (wrk then prints its
/// report and the Lua totals).
pub(crate) struct Wrk {
    child: std::process::Child,
    what: &'static str,
}

impl Wrk {
    /// `pause_ms` before each request caps the load (2 cores also run
    /// the deploys, sshd and dockerd).
    pub fn start(what: &'static str, extra: &[&str], url: &str, pause_ms: u32) -> Wrk {
        let script = repo_root().join("scripts/bench/count.lua");
        let child = Command::new("wrk")
            .args(["-t1", "-d1h", "--timeout", "10s", "--latency", "-s"])
            .arg(&script)
            .args(extra)
            .arg(url)
            .args(["--", &pause_ms.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("wrk (Debian's wrk, installed by scripts/stack/up)");
        Wrk { child, what }
    }
    pub fn stop(self) -> WrkTotals {
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let out = self.child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        println!("--- wrk, {}:\n{text}", self.what);
        WrkTotals::parse(&text)
    }
}

/// What the keep-alive client saw.
#[derive(Debug, Default)]
pub(crate) struct ClientTotals {
    pub ok: u64,
    pub non_2xx: u64,
    /// A request that got no answer although it may have been processed:
    /// sent on a fresh connection, or cut off after part of an answer.
    pub dropped: u64,
    /// Requests sent on a reused keep-alive connection that the server had
    /// closed (no byte of an answer came back) and sent again on a fresh
    /// one, as RFC 9112 §9.3.1 lets a client do for idempotent requests.
    pub retried: u64,
    pub connect_errors: u64,
    pub bodies: BTreeMap<String, u64>,
    /// Why the last dropped request was lost.
    pub last_drop: Option<String>,
}

enum Exchange {
    Answer {
        status: u16,
        body: String,
        keep: bool,
    },
    /// The connection closed or reset before any byte of an answer.
    NoAnswer,
    /// Anything else (partial answer, timeout, bad framing).
    Broken(String),
}

fn exchange(conn: &mut BufReader<TcpStream>, host: &str) -> Exchange {
    let req = format!("GET /version HTTP/1.1\r\nHost: {host}\r\nUser-Agent: fleet-test\r\n\r\n");
    if let Err(e) = conn.get_mut().write_all(req.as_bytes()) {
        return match e.kind() {
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => Exchange::NoAnswer,
            _ => Exchange::Broken(e.to_string()),
        };
    }
    let mut line = String::new();
    match conn.read_line(&mut line) {
        Ok(0) => return Exchange::NoAnswer,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Exchange::NoAnswer,
        Err(e) => return Exchange::Broken(e.to_string()),
        Ok(_) => {}
    }
    let status: u16 = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (mut length, mut keep) = (None, true);
    loop {
        let mut h = String::new();
        match conn.read_line(&mut h) {
            Ok(0) => return Exchange::Broken("closed inside the headers".into()),
            Err(e) => return Exchange::Broken(e.to_string()),
            Ok(_) => {}
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':').unwrap_or((h, ""));
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse::<usize>().ok(),
            "connection" if value.trim().eq_ignore_ascii_case("close") => keep = false,
            _ => {}
        }
    }
    let mut body = Vec::new();
    let read = match length {
        Some(n) => {
            body.resize(n, 0);
            conn.read_exact(&mut body)
        }
        None => {
            keep = false;
            conn.read_to_end(&mut body).map(|_| ())
        }
    };
    if let Err(e) = read {
        return Exchange::Broken(format!("reading the body: {e}"));
    }
    Exchange::Answer { status, body: String::from_utf8_lossy(&body).trim().to_string(), keep }
}

/// A keep-alive HTTP/1.1 client loop against `addr:80` until `stop`.
fn keepalive_client(addr: String, stop: Arc<AtomicBool>) -> ClientTotals {
    let host = addr.clone();
    keepalive_client_as(addr, &host, stop)
}

/// [`keepalive_client`] sending `Host: host` (one of the host's nginx
/// `server_name`s).
pub(crate) fn keepalive_client_as(addr: String, host: &str, stop: Arc<AtomicBool>) -> ClientTotals {
    let mut t = ClientTotals::default();
    let mut conn: Option<BufReader<TcpStream>> = None;
    let mut reused = false;
    while !stop.load(Ordering::Relaxed) {
        if conn.is_none() {
            match TcpStream::connect((addr.as_str(), 80)) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    s.set_nodelay(true).unwrap();
                    conn = Some(BufReader::new(s));
                    reused = false;
                }
                Err(_) => {
                    t.connect_errors += 1;
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            }
        }
        match exchange(conn.as_mut().unwrap(), host) {
            Exchange::Answer { status, body, keep } => {
                if (200..300).contains(&status) {
                    t.ok += 1;
                    *t.bodies.entry(body).or_default() += 1;
                } else {
                    t.non_2xx += 1;
                }
                if keep {
                    reused = true;
                } else {
                    conn = None;
                }
            }
            // The server closed an idle keep-alive connection as the request
            // went out: nothing was processed; send it again, fresh.
            Exchange::NoAnswer if reused => {
                t.retried += 1;
                conn = None;
            }
            Exchange::NoAnswer => {
                t.dropped += 1;
                t.last_drop = Some("no answer on a fresh connection".into());
                conn = None;
            }
            Exchange::Broken(why) => {
                t.dropped += 1;
                t.last_drop = Some(why);
                conn = None;
            }
        }
        std::thread::sleep(Duration::from_millis(PAUSE_MS.into()));
    }
    t
}

/// Pause between requests on one connection of the zero-drop loads.
pub(crate) const PAUSE_MS: u32 = 10;

/// One line per load (wrk keep-alive, wrk `Connection: close`, the
/// retrying keep-alive client), each starting with `prefix`.
pub(crate) fn load_report(prefix: &str, ka: &WrkTotals, fr: &WrkTotals, rc: &ClientTotals) -> String {
    let mut report = String::new();
    for (name, t) in [("wrk keep-alive", ka), ("wrk Connection: close", fr)] {
        report += &format!(
            "{prefix}{name:<22} requests {:>7}  non-2xx {}  socket errors: connect {} read {} write {} timeout {}  versions {:?}  latency {}\n",
            t.requests,
            t.non_2xx(),
            t.error("connect"),
            t.error("read"),
            t.error("write"),
            t.error("timeout"),
            t.bodies,
            t.latency
        );
    }
    report
        + &format!(
            "{prefix}{:<22} requests {:>7}  non-2xx {}  dropped {}  connect errors {}  retried on a closed keep-alive connection {}  versions {:?}\n",
            "retrying keep-alive",
            rc.ok + rc.non_2xx,
            rc.non_2xx,
            rc.dropped,
            rc.connect_errors,
            rc.retried,
            rc.bodies
        )
}

/// Requests through host 4's nginx during 20 consecutive deploys
/// (alternating v2/v1, observe 1s, drain 1s), from three clients at once:
///
/// - **wrk, keep-alive** (4 connections): Debian's wrk, reported as is.
///   wrk counts a keep-alive connection the server closes as a `read`
///   error and never retries. nginx's reload (which every switch needs:
///   OSS nginx cannot change an upstream without one) makes the old worker
///   close its idle keep-alive client connections at once
///   (`ngx_close_idle_connections`), including one whose next request is
///   already on the wire but not read yet; a request that was being served
///   finishes and gets `Connection: close`. So `read` errors are requests
///   nginx never read (or no request at all), which HTTP/1.1 lets a client
///   send again (RFC 9112 §9.3.1) and browsers, curl and proxies do. The
///   same appears with a bare `nginx -s reload` and no deploy at all.
/// - **wrk, `Connection: close`** (2 connections): a fresh connection per
///   request, so the reload has no idle connection to close: must be
///   perfect — it shows the switch itself (listening socket handed over,
///   old colour drained before it stops) loses nothing.
/// - **a keep-alive client that retries as RFC 9112 allows** (2 threads):
///   only a request sent on a reused connection that got no byte back is
///   sent again; anything else missing counts as dropped: must be zero.
#[test]
fn zero_dropped_requests_through_twenty_deploys() {
    let _hosts = lock_hosts(&[4]);
    let deploys: usize =
        std::env::var("FLEET_ZERO_DROP_DEPLOYS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    ensure_serving(4, "v1");
    let addr = host_addr(4);
    let url = format!("http://{addr}/version");

    let keepalive = Wrk::start("keep-alive, 4 connections", &["-c4"], &url, PAUSE_MS);
    let fresh =
        Wrk::start("Connection: close, 2 connections", &["-c2", "-H", "Connection: close"], &url, PAUSE_MS);
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (addr, stop) = (addr.clone(), stop.clone());
            std::thread::spawn(move || keepalive_client(addr, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    let started = Instant::now();
    let mut failures = Vec::new();
    for i in 0..deploys {
        let v = if i % 2 == 0 { "v2" } else { "v1" };
        let t = Instant::now();
        let run = fleet_action(&[4], &image(v)).input("observe-window", "1s").input("drain-time", "1s").run();
        println!("deploy {:>2}: {v} exit {:?} in {:.1}s", i + 1, run.code, t.elapsed().as_secs_f64());
        if run.code != Some(0) {
            failures.push(format!("deploy {} of {v}: {}", i + 1, run.stdout));
            break;
        }
    }
    let deploy_time = started.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let ka = keepalive.stop();
    let fr = fresh.stop();
    let mut rc = ClientTotals::default();
    for c in clients {
        let t = c.join().unwrap();
        rc.ok += t.ok;
        rc.non_2xx += t.non_2xx;
        rc.dropped += t.dropped;
        rc.retried += t.retried;
        rc.connect_errors += t.connect_errors;
        rc.last_drop = rc.last_drop.or(t.last_drop);
        for (b, n) in t.bodies {
            *rc.bodies.entry(b).or_default() += n;
        }
    }

    let mut report = format!(
        "=== zero dropped requests: {deploys} deploys through 127.0.0.5 in {:.0}s\n",
        deploy_time.as_secs_f64()
    );
    report += &load_report("", &ka, &fr, &rc);
    print!("{report}");
    // `scripts/test` prints this file after the tests, so CI's log has the totals.
    crate::support::save_figures("zero-dropped-requests", &report);

    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(ka.requests > 0 && fr.requests > 0 && rc.ok > 0, "every load ran");
    assert!(rc.bodies.len() >= 2 && ka.bodies.len() >= 2, "both versions answered during the run");
    // No load ever saw an error answer or a refused/timed-out connection.
    for t in [&ka, &fr] {
        assert_eq!(t.non_2xx(), 0, "non-2xx answers: {:?}", t.statuses);
        for k in ["connect", "write", "timeout", "status"] {
            assert_eq!(t.error(k), 0, "wrk {k} errors");
        }
    }
    // A fresh connection per request: nothing lost at all.
    assert_eq!(fr.error("read"), 0, "wrk with Connection: close lost requests");
    // A client that retries like HTTP/1.1 allows: nothing lost.
    assert_eq!((rc.non_2xx, rc.dropped, rc.connect_errors), (0, 0, 0), "{rc:?}");
    // wrk's keep-alive `read` errors: at most one per connection per reload.
    assert!(
        ka.error("read") <= 4 * deploys as u64,
        "more keep-alive closes than one per connection per switch: {}",
        ka.error("read")
    );
}
