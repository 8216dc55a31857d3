//! Figures for the hosts target over a real round trip (prints them;
//! asserts nothing on time): the built binary deploys the shared app to one
//! host blue-green, at loopback speed and through a 50 ms RTT relay (see
//! `tests/it/support/latency.rs`; this kernel has no `tc netem`), both in
//! the same run, so the ratio compares like with like:
//!
//! - **switch (script)**: the one SSH exec that installs the upstream file,
//!   tests and reloads nginx (from the action's debug log);
//! - **switch (with proof)**: from `switching nginx` to `100% of traffic
//!   goes to …`, i.e. the script plus the proof through nginx that the
//!   candidate answers (3 answers from its port);
//! - **SIGTERM → exit**: SIGTERM sent the moment the switch starts; the
//!   switch is finished (never cut half-way), rolled back, the lock
//!   released, and the process gone.
//!
//! Medians over `BENCH_RUNS` (default 3). Deploys to stack host 2, which the
//! integration tests also use: never run it beside `cargo test`. Under
//! `cargo test --all-targets` (no `--bench`) it does nothing.
//!
//! `cargo bench --bench latency`

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "../tests/it/support/mod.rs"]
mod support;

use support::action::Action;
use support::latency::{DelayProxy, known_hosts_via};
use support::{host_addr, live_version, shared_app_inputs, stack_var};

const HOST: usize = 2;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("latency bench: smoke run — the figures need `cargo bench --bench latency`");
        return;
    }
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(3).max(1);
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let up = Command::new(root.join("scripts/stack/up")).status().expect("scripts/stack/up");
    assert!(up.success(), "scripts/stack/up failed");

    let mut rows = Vec::new();
    for (label, one_way) in [("loopback", Duration::ZERO), ("50 ms RTT", Duration::from_millis(25))] {
        let (mut script, mut proof, mut cancel) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..runs {
            let v = if i % 2 == 0 { "v2" } else { "v1" };
            let d = deploy(one_way, v, false);
            script.push(d.script);
            proof.push(d.proof);
            let back = if v == "v2" { "v1" } else { "v2" };
            let c = deploy(one_way, back, true);
            cancel.push(c.cancel);
            // The cancelled deploy left `v` serving; leave the host on it.
            assert_eq!(live_version(HOST), v, "{label}: the cancelled deploy rolled back");
        }
        rows.push((label, median(script), median(proof), median(cancel)));
    }
    println!();
    println!("deploy-action, one host, blue-green; medians over {runs} run(s) each:");
    println!();
    println!("| link | switch (script) | switch (with proof) | SIGTERM → exit |");
    println!("|---|---|---|---|");
    for (label, s, p, c) in &rows {
        println!("| {label} | {:.3}s | {:.3}s | {:.2}s |", s, p, c);
    }
    let (base, slow) = (&rows[0], &rows[1]);
    println!();
    println!(
        "50 ms RTT ÷ loopback: switch script {:.1}×, switch with proof {:.1}×, SIGTERM → exit {:.1}×",
        slow.1 / base.1.max(1e-3),
        slow.2 / base.2.max(1e-3),
        slow.3 / base.3.max(1e-3)
    );
    println!(
        "the switch script is one SSH exec: at 50 ms RTT it costs about one round trip plus nginx's test and reload"
    );
}

struct Figures {
    script: f64,
    proof: f64,
    cancel: f64,
}

/// Deploys `v` to the host through a relay `one_way` late each way (none
/// for zero); with `cancel`, SIGTERM as the switch starts.
fn deploy(one_way: Duration, v: &str, cancel: bool) -> Figures {
    let known = std::fs::read_to_string(stack_var("SSH_KNOWN_HOSTS")).unwrap();
    let proxy = (!one_way.is_zero())
        .then(|| DelayProxy::start(format!("{}:22", host_addr(HOST)).parse().unwrap(), one_way));
    let (host, known) = match &proxy {
        Some(p) => (format!("root@127.0.0.1:{}", p.port), known_hosts_via(&known, &host_addr(HOST), p.port)),
        None => (format!("root@{}:22", host_addr(HOST)), known),
    };
    let action = Action::new()
        .inputs(shared_app_inputs(&[host], &stack_var(&format!("IMAGE_{}", v.to_uppercase()))))
        .input("ssh-known-hosts", &known)
        .input("observe-window", "1s")
        .env("DEPLOY_ACTION_LOG", "deploy_action=debug");
    let mut child = action.spawn();
    let stdout = child.stdout.take().unwrap();
    let (mut switch_at, mut switched_at, mut script, mut term_at) = (None, None, 0.0, None);
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        let now = Instant::now();
        if line.contains("switching nginx") && switch_at.is_none() {
            switch_at = Some(now);
            if cancel {
                Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
                term_at = Some(now);
            }
        }
        if line.contains("% of traffic goes to") && switched_at.is_none() {
            switched_at = Some(now);
        }
        // `ssh exec host=… program="sh" ms=N`: the switch script.
        if line.contains("ssh exec")
            && line.contains("program=\"sh\"")
            && switched_at.is_none()
            && switch_at.is_some()
            && let Some(ms) = line
                .split("ms=")
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .and_then(|s| s.parse::<f64>().ok())
        {
            script = ms / 1000.0;
        }
    }
    let status = child.wait().unwrap();
    let ended = Instant::now();
    assert!(cancel || status.success(), "the deploy of {v} failed");
    drop(proxy);
    let since = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => f64::NAN,
    };
    Figures { script, proof: since(switch_at, switched_at), cancel: since(term_at, Some(ended)) }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}
