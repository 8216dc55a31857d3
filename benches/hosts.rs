//! Figures for `target: hosts` on the local stack (prints them; asserts
//! nothing on time):
//!
//! - wall time of the action (the built binary, run the way the runner runs
//!   it) deploying the shared `app` blue-green to 1 host and to 8 hosts,
//!   alternating v1/v2 so every run is a real switch;
//! - the same deploys by `scripts/bench/ssh-deploy.sh`, the hand-written
//!   baseline (system `ssh` + `docker` CLI, host after host), with one SSH
//!   connection per command (as most scripts do) and with `SSH_MUX=1`
//!   (one multiplexed connection per host);
//! - each one's own overhead: wall time minus the time spent waiting on
//!   image pulls, health checks and the configured observe window and drain
//!   (for the action: pulls from its log, timed as lines arrive, health
//!   checks and observe from the summary's timeline, on the critical path:
//!   the slowest host of each parallel phase; for the script: its `T` marks,
//!   summed, since it goes host after host).
//!
//! Medians over `BENCH_RUNS` repetitions (default 3; a 1-host case runs two
//! deploys per repetition, there and back). Needs the local stack with 8
//! hosts (`scripts/stack/up --hosts 8`, run here) and the stack to itself:
//! it deploys to hosts 1–8, which the integration tests also use, so never
//! run it beside `cargo test`. Under `cargo test --all-targets` (no
//! `--bench`) it only checks the baseline script's syntax. It leaves every
//! host serving the shared app (one colour, v1 or v2).
//!
//! `cargo bench --bench hosts`

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// The integration tests' helpers: the runner-like `Action`, the stack's
// settings and the shared app's inputs, so the bench runs the action
// exactly as the tests do.
#[path = "../tests/it/support/mod.rs"]
mod support;

use support::action::Action;
use support::{shared_app_inputs, summary_table};

const OBSERVE: Duration = Duration::from_secs(1);
const DRAIN: Duration = Duration::from_secs(1);

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("scripts/bench/ssh-deploy.sh");
    let syntax = Command::new("bash").arg("-n").arg(&script).status().expect("bash");
    assert!(syntax.success(), "{} does not parse", script.display());
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "hosts bench: smoke run — the baseline script parses; the figures need `cargo bench --bench hosts` (it deploys to every host of the stack)"
        );
        return;
    }
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(3).max(1);
    let up = Command::new(root.join("scripts/stack/up"))
        .args(["--hosts", "8"])
        .status()
        .expect("scripts/stack/up");
    assert!(up.success(), "scripts/stack/up --hosts 8 failed");
    let stack = support::stack();
    let hosts: Vec<String> = stack["HOSTS"].split(',').map(String::from).collect();
    assert!(hosts.len() >= 8, "need 8 hosts, the stack has {}", hosts.len());
    let bench = Bench { root: root.clone(), stack, hosts };

    // Warm-up: both images on every host, every host on one version.
    eprintln!("hosts bench: warm-up (v1 then v2 to all 8 hosts)");
    for v in ["v1", "v2"] {
        if let Err(e) = bench.action(8, v) {
            eprintln!("warm-up deploy of {v} failed ({e}); resetting the hosts and trying again");
            let _ = Command::new(root.join("scripts/stack/reset-host")).arg("all").status();
            bench.action(8, v).unwrap_or_else(|e| panic!("warm-up deploy of {v} failed again: {e}"));
        }
    }
    let mut cur = "v2";
    let other = |v: &str| if v == "v1" { "v2" } else { "v1" };

    let mut samples: BTreeMap<(&str, usize), Vec<Sample>> = BTreeMap::new();
    let variants = ["action", "ssh-deploy.sh", "ssh-deploy.sh (SSH_MUX=1)"];
    for rep in 0..runs {
        eprintln!("hosts bench: repetition {}/{runs}", rep + 1);
        for variant in variants {
            // One host there and back (hosts 2–8 stay on `cur`), then all 8.
            for v in [other(cur), cur] {
                let s = bench.run(variant, 1, v).unwrap_or_else(|e| panic!("{variant} → 1 host ({v}): {e}"));
                samples.entry((variant, 1)).or_default().push(s);
            }
            let next = other(cur);
            let s =
                bench.run(variant, 8, next).unwrap_or_else(|e| panic!("{variant} → 8 hosts ({next}): {e}"));
            samples.entry((variant, 8)).or_default().push(s);
            cur = next;
        }
    }

    println!();
    println!(
        "deploy-action `target: hosts` on the local stack: blue-green of the shared app, alternating v1/v2,"
    );
    println!("observe-window 1s, drain-time 1s, health every 200ms × 3; the action with max-parallel 8.");
    println!("Medians over {runs} repetition(s) (1 host: {} deploys).", 2 * runs);
    println!();
    println!(
        "| {:<26} | {:>5} | {:>7} | {:>10} | {:>10} | {:>14} | {:>10} | {:>9} |",
        "who", "hosts", "wall", "pull wait", "health", "observe+drain", "overhead", "vs action"
    );
    println!("|{}|", ["-"; 8].map(|d| d.repeat(3)).join("|"));
    for n in [1, 8] {
        let action_wall = median(samples[&("action", n)].iter().map(|s| s.wall));
        for variant in variants {
            let s = &samples[&(variant, n)];
            let wall = median(s.iter().map(|s| s.wall));
            println!(
                "| {:<26} | {:>5} | {:>6.1}s | {:>9.1}s | {:>9.1}s | {:>13.1}s | {:>9.1}s | {:>8.2}× |",
                variant,
                n,
                wall,
                median(s.iter().map(|s| s.pull)),
                median(s.iter().map(|s| s.health)),
                median(s.iter().map(|s| s.windows)),
                median(s.iter().map(|s| s.overhead())),
                wall / action_wall
            );
        }
    }
    println!();
    println!(
        "8 hosts ÷ 1 host (wall): {}",
        variants
            .iter()
            .map(|v| format!(
                "{v} {:.2}×",
                median(samples[&(*v, 8)].iter().map(|s| s.wall))
                    / median(samples[&(*v, 1)].iter().map(|s| s.wall))
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // Where the action's time goes (median over hosts and runs, per stage).
    for n in [1, 8] {
        let mut stages: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for s in &samples[&("action", n)] {
            for (stage, secs) in &s.stages {
                stages.entry(stage.clone()).or_default().push(*secs);
            }
        }
        let order = ["connect", "prepare", "launch", "verify", "switch", "observe", "retire"];
        println!(
            "action, {n} host(s), median per host and stage: {}",
            order
                .iter()
                .filter_map(|st| stages.get(*st).map(|v| format!("{st} {:.2}s", median(v.iter().copied()))))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!();
    println!("overhead = wall − pull wait − health − observe+drain: the action's (or script's) own time —");
    println!(
        "connecting, SSH commands (locks, nginx switch), Docker API calls, starting and removing containers."
    );
    println!("A remote command costs about 10 ms here (SSH over loopback); more on a real network.");
    println!();
    let mut serving = Vec::new();
    for k in 1..=8 {
        serving.push(format!("h{k} {}", http_version(&format!("127.0.0.{}", k + 1))));
    }
    println!("after the bench: {}", serving.join(", "));
}

/// One timed deploy.
#[derive(Debug, Default)]
struct Sample {
    wall: f64,
    pull: f64,
    health: f64,
    /// The configured observe window and drain.
    windows: f64,
    /// The action's per-host stage times (from the summary).
    stages: Vec<(String, f64)>,
}

impl Sample {
    fn overhead(&self) -> f64 {
        self.wall - self.pull - self.health - self.windows
    }
}

/// A finished command: wall seconds, stdout lines with the second each
/// arrived, stderr, success.
struct Timed {
    wall: f64,
    lines: Vec<(f64, String)>,
    stderr: String,
    ok: bool,
}

struct Bench {
    root: PathBuf,
    stack: &'static HashMap<String, String>,
    hosts: Vec<String>,
}

impl Bench {
    fn image(&self, v: &str) -> String {
        self.stack[&format!("IMAGE_{}", v.to_uppercase())].clone()
    }

    fn run(&self, variant: &str, n: usize, v: &str) -> Result<Sample, String> {
        match variant {
            "action" => self.action(n, v),
            "ssh-deploy.sh" => self.script(n, v, false),
            _ => self.script(n, v, true),
        }
    }

    /// Runs what `spawn` starts (stdout and stderr piped), timestamping
    /// each stdout line as it arrives.
    fn timed(spawn: impl FnOnce() -> std::io::Result<Child>) -> Result<Timed, String> {
        let t0 = Instant::now();
        let mut child = spawn().map_err(|e| e.to_string())?;
        let stderr = child.stderr.take().unwrap();
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s);
            s
        });
        let mut lines = Vec::new();
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let Ok(line) = line else { break };
            lines.push((t0.elapsed().as_secs_f64(), line));
        }
        let ok = child.wait().map_err(|e| e.to_string())?.success();
        let wall = t0.elapsed().as_secs_f64();
        Ok(Timed { wall, lines, stderr: err.join().unwrap_or_default(), ok })
    }

    /// The action deploying `v` to the first `n` hosts.
    fn action(&self, n: usize, v: &str) -> Result<Sample, String> {
        let action = Action::new()
            .inputs(shared_app_inputs(&self.hosts[..n], &self.image(v)))
            .input("drain-time", "1s")
            .input("max-parallel", "8");
        let Timed { wall, lines, stderr, ok } = Self::timed(|| Ok(action.spawn()))?;
        let summary = std::fs::read_to_string(action.path("summary")).unwrap_or_default();
        if !ok {
            let tail: Vec<&str> = lines.iter().rev().take(15).map(|(_, l)| l.as_str()).collect();
            return Err(format!(
                "the action failed:\n{}\n{stderr}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        // Pulls: from "<host>: pulling" to "image pulled host=<host>", all
        // hosts in parallel: the slowest counts.
        let mut pull: f64 = 0.0;
        for h in &self.hosts[..n] {
            let addr = address(h);
            let start = lines.iter().find(|(_, l)| l.starts_with(&format!("{addr}: pulling ")));
            let end = lines
                .iter()
                .find(|(_, l)| l.contains("image pulled") && l.contains(&format!("host=\"{addr}\"")));
            if let (Some((a, _)), Some((b, _))) = (start, end) {
                pull = pull.max(b - a);
            }
        }
        let rows = timeline(&summary);
        let first = address(&self.hosts[0]);
        let of = |stage: &str, first_host: bool| {
            rows.iter()
                .filter(|(s, w, _)| s == stage && (w == &first) == first_host)
                .map(|(_, _, d)| *d)
                .fold(0.0, f64::max)
        };
        // The first host is a barrier; the others verify in one parallel wave.
        let health = of("verify", true) + of("verify", false);
        let windows = of("observe", true).max(of("observe", false)) + DRAIN.as_secs_f64();
        let stages: Vec<(String, f64)> = rows
            .iter()
            .filter(|(s, w, _)| w != "all" || s == "connect")
            .map(|(s, _, d)| (s.clone(), *d))
            .collect();
        Ok(Sample { wall, pull, health, windows, stages })
    }

    /// `scripts/bench/ssh-deploy.sh` deploying `v` to the first `n` hosts.
    fn script(&self, n: usize, v: &str, mux: bool) -> Result<Sample, String> {
        let mut cmd = Command::new(self.root.join("scripts/bench/ssh-deploy.sh"));
        cmd.arg(self.image(v)).args(self.hosts[..n].iter().map(|h| h.trim_end_matches(":22")));
        for k in
            ["SSH_KEY", "SSH_KNOWN_HOSTS", "REGISTRY", "REGISTRY_USERNAME", "REGISTRY_PASSWORD", "APP_PORT"]
        {
            cmd.env(k, &self.stack[k]);
        }
        cmd.env("OBSERVE_SECS", OBSERVE.as_secs().to_string())
            .env("DRAIN_SECS", DRAIN.as_secs().to_string())
            .env("SSH_MUX", if mux { "1" } else { "0" });
        let Timed { wall, lines, stderr, ok } =
            Self::timed(|| cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn())?;
        if !ok {
            return Err(format!("ssh-deploy.sh failed: {stderr}"));
        }
        // `T <ms> <host> <event>`: sum each wait over the hosts.
        let mut marks: HashMap<(String, String), f64> = HashMap::new();
        for (_, l) in &lines {
            let w: Vec<&str> = l.split_whitespace().collect();
            if w.len() == 4 && w[0] == "T" {
                marks.insert(
                    (w[2].to_string(), w[3].to_string()),
                    w[1].parse::<f64>().unwrap_or(0.0) / 1000.0,
                );
            }
        }
        let span = |what: &str| -> f64 {
            self.hosts[..n]
                .iter()
                .map(|h| {
                    let h = h.trim_end_matches(":22").to_string();
                    let a = marks.get(&(h.clone(), format!("{what}-start")));
                    let b = marks.get(&(h, format!("{what}-end")));
                    match (a, b) {
                        (Some(a), Some(b)) => b - a,
                        _ => 0.0,
                    }
                })
                .sum()
        };
        Ok(Sample {
            wall,
            pull: span("pull"),
            health: span("health"),
            windows: span("observe") + span("drain"),
            stages: vec![],
        })
    }
}

/// `root@127.0.0.2:22` → `127.0.0.2`.
fn address(h: &str) -> String {
    let h = h.rsplit('@').next().unwrap_or(h);
    h.trim_end_matches(":22").to_string()
}

/// The summary's timeline: `(stage, where, seconds)`.
fn timeline(summary: &str) -> Vec<(String, String, f64)> {
    summary_table(summary, "### Timeline")
        .into_iter()
        .filter_map(|c| {
            Some((c.first()?.clone(), c.get(1)?.clone(), c.get(2)?.trim_end_matches('s').parse().ok()?))
        })
        .collect()
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 }
}

fn http_version(addr: &str) -> String {
    Command::new("curl")
        .args(["-s", "-m", "3", &format!("http://{addr}/version")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|e| format!("error {e}"))
}
