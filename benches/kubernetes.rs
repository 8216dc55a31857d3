//! Figures for `target: kubernetes` on the stack's control plane (prints
//! them; asserts nothing on time), each against what a team would run
//! instead, in the same run:
//!
//! - **verdict latency**: the action and `kubectl rollout status` watch the
//!   *same* Deployment at once (kubectl started once the controller has
//!   observed the new generation); a watch of the bench's own (kube-rs
//!   `watcher`) timestamps the first status that meets kubectl's rule for
//!   done (success) or `ProgressDeadlineExceeded` (failure, a `never-ready`
//!   image, `progressDeadlineSeconds` 10). Each judge's latency runs from
//!   that instant to the line with its verdict, read from its stdout (and,
//!   for kubectl's error, stderr) as it is printed;
//! - **four Deployments, apply to verdict**: the action given `a,b,c,d`
//!   (2 replicas each, pods ready after 1 s) against the script teams write
//!   (`kubectl set image` then `kubectl rollout status`, each Deployment in
//!   turn), on identical namespaces, same image, wall time of the whole.
//!
//! Medians over `BENCH_RUNS` (default 5). Namespaces of this run only
//! (`da-bench-<pid>-<n>-…`), deleted at the end. Under `cargo test
//! --all-targets` (no `--bench`) it does nothing.
//!
//! `cargo bench --bench kubernetes`

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use kube::runtime::watcher;

#[path = "../tests/it/support/mod.rs"]
mod support;

use support::action::Action;
use support::{save_figures, stack_var};

/// Bound on every wait of the bench (a rollout, a process, a mark).
const BOUND: Duration = Duration::from_secs(120);

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("kubernetes bench: smoke run — the figures need `cargo bench --bench kubernetes`");
        return;
    }
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(5).max(1);
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let client = rt.block_on(client());
    let started = Instant::now();

    let main = Ns::new("verdict");
    let (act, script) = (Ns::new("act"), Ns::new("script"));
    for ns in [&act, &script] {
        for name in FOUR {
            ns.deployment(name, "example.invalid/web:v1", 2, 60);
        }
    }

    let (mut ok, mut late, mut four) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        // A fresh Deployment each time: the action's own rollback leaves the
        // image owned by `deploy-action` through an Update, which its next
        // server-side apply then conflicts with (kube_apply_conflict).
        let (good, bad) = (format!("ok-{i}"), format!("late-{i}"));
        main.deployment(&good, "example.invalid/web:v1", 2, 60);
        main.deployment(&bad, "example.invalid/web:v1", 2, 10);
        ok.push(verdict(&rt, &client, &main, &good, "example.invalid/web:v2", true));
        late.push(verdict(&rt, &client, &main, &bad, "example.invalid/never-ready:v2", false));
        // Alternate which goes first, so neither always meets a warmer
        // (or busier) control plane.
        let image = format!("example.invalid/web:four{i}");
        let (a, s) = if i % 2 == 0 {
            let a = four_by_action(&act, &image);
            (a, four_by_script(&script, &image))
        } else {
            let s = four_by_script(&script, &image);
            (four_by_action(&act, &image), s)
        };
        println!("run {}/{runs}: four Deployments: action {a:.2}s, script {s:.2}s", i + 1);
        four.push((a, s));
    }
    drop(rt);

    let mut text = String::new();
    let mut say = |l: String| {
        println!("{l}");
        text.push_str(&l);
        text.push('\n');
    };
    say(String::new());
    say(format!(
        "deploy-action, target kubernetes (kube-apiserver {}, kwok nodes); medians over {runs} run(s):",
        stack_var("K8S_VERSION")
    ));
    say(String::new());
    say("verdict latency: from the first status meeting kubectl's rule (bench's own watch) to the verdict line".into());
    say("(all three watch the same event stream: these are delivery and processing, a few ms of scheduler noise)".into());
    say(String::new());
    say("| rollout | action | kubectl rollout status (line) | (exit) | kubectl ÷ action |".into());
    say("|---|---|---|---|---|".into());
    for (label, ms) in [("success, 2 replicas", &ok), ("ProgressDeadlineExceeded (10 s)", &late)] {
        let a = median(ms.iter().map(|m| m.action).collect());
        let k = median(ms.iter().map(|m| m.kubectl).collect());
        let e = median(ms.iter().map(|m| m.kubectl_exit).collect());
        say(format!("| {label} | {a:.1} ms | {k:.1} ms | {e:.1} ms | {:.2}× |", k / a.max(0.1)));
    }
    let a = median(four.iter().map(|f| f.0).collect());
    let s = median(four.iter().map(|f| f.1).collect());
    say(String::new());
    say("four Deployments (2 replicas each, pods ready after 1 s), from the first call to the last verdict:"
        .into());
    say(String::new());
    say("| deploy-action `a,b,c,d` | kubectl set image + rollout status, in turn | script ÷ action |".into());
    say("|---|---|---|".into());
    say(format!("| {a:.2} s | {s:.2} s | {:.2}× |", s / a.max(1e-3)));
    say(String::new());
    say(format!("bench wall time {:.0} s", started.elapsed().as_secs_f64()));
    save_figures("kubernetes-bench", &text);
}

const FOUR: [&str; 4] = ["a", "b", "c", "d"];

async fn client() -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(stack_var("K8S_KUBECONFIG")).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.expect("config");
    kube::Client::try_from(config).expect("client")
}

fn kubectl_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(stack_var("K8S_KUBECTL"));
    c.arg("--kubeconfig").arg(stack_var("K8S_KUBECONFIG")).args(args);
    c.stdin(Stdio::null());
    c
}

fn kubectl_ok(args: &[&str]) -> String {
    let o = kubectl_cmd(args).output().expect("run kubectl");
    assert!(o.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A namespace of this bench run only, deleted when dropped.
struct Ns(String);

impl Ns {
    fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("da-bench-{}-{}-{tag}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        kubectl_ok(&["create", "namespace", &name]);
        let ns = Ns(name);
        // Pods are refused until the serviceaccount controller made `default`.
        let end = Instant::now() + BOUND;
        while !kubectl_cmd(&["-n", &ns.0, "get", "serviceaccount", "default"])
            .output()
            .unwrap()
            .status
            .success()
        {
            assert!(Instant::now() < end, "no default serviceaccount in {}", ns.0);
            std::thread::sleep(Duration::from_millis(200));
        }
        ns
    }

    /// A Deployment made with plain `kubectl apply`, rolled out to `image`:
    /// one container `app`, pods ready 1 s after they start.
    fn deployment(&self, name: &str, image: &str, replicas: u32, deadline: u32) {
        let yaml = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  replicas: {replicas}\n  progressDeadlineSeconds: {deadline}\n  strategy: {{type: RollingUpdate, rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}}}\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n      annotations: {{kwok.deploy-action/delay: 1s}}\n    spec:\n      containers:\n      - {{name: app, image: \"{image}\"}}\n",
            ns = self.0
        );
        let mut c = kubectl_cmd(&["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "kubectl apply: {}", String::from_utf8_lossy(&o.stderr));
        self.rollout_status(name);
    }

    fn rollout_status(&self, name: &str) {
        kubectl_ok(&["-n", &self.0, "rollout", "status", "--timeout=120s", &format!("deployment/{name}")]);
    }

    fn action(&self, deployments: &str, image: &str) -> Action {
        let kubeconfig = std::fs::read_to_string(stack_var("K8S_KUBECONFIG")).unwrap();
        Action::new()
            .input("target", "kubernetes")
            .input("app", "web")
            .input("kubeconfig", &kubeconfig)
            .input("namespace", &self.0)
            .input("deployments", deployments)
            .input("github-deployments", "false")
            .input("image", image)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = kubectl_cmd(&["delete", "namespace", &self.0, "--wait=false"]).output();
    }
}

/// A child process whose output lines are read as they come, each with
/// the instant it was read.
struct Timed {
    child: Child,
    stdout: JoinHandle<Vec<(Instant, String)>>,
    stderr: JoinHandle<Vec<(Instant, String)>>,
}

/// What a [`Timed`] child left: its lines, its status, when it exited.
struct Ended {
    stdout: Vec<(Instant, String)>,
    stderr: Vec<(Instant, String)>,
    status: ExitStatus,
    exited: Instant,
}

impl Ended {
    /// When the first line (stdout, then stderr) containing any of `what` was read.
    fn line(&self, what: &[&str]) -> Option<Instant> {
        self.stdout
            .iter()
            .chain(&self.stderr)
            .filter(|(_, l)| what.iter().any(|w| l.contains(w)))
            .map(|(t, _)| *t)
            .min()
    }

    fn text(lines: &[(Instant, String)]) -> String {
        lines.iter().map(|(_, l)| format!("{l}\n")).collect()
    }

    fn output(&self) -> Output {
        Output {
            status: self.status,
            stdout: Self::text(&self.stdout).into_bytes(),
            stderr: Self::text(&self.stderr).into_bytes(),
        }
    }
}

impl Timed {
    fn spawn(mut cmd: Command) -> Self {
        Self::of(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn"))
    }

    fn of(mut child: Child) -> Self {
        fn lines(r: impl Read + Send + 'static) -> JoinHandle<Vec<(Instant, String)>> {
            std::thread::spawn(move || {
                BufReader::new(r).lines().map_while(Result::ok).map(|l| (Instant::now(), l)).collect()
            })
        }
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        Self { child, stdout, stderr }
    }

    /// Waits for the exit (killing the child past [`BOUND`]).
    fn wait(mut self) -> Ended {
        let end = Instant::now() + BOUND;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!("a child ran past {BOUND:?}");
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let exited = Instant::now();
        Ended { stdout: self.stdout.join().unwrap(), stderr: self.stderr.join().unwrap(), status, exited }
    }
}

/// What the bench's own watch saw of a rollout past generation `base`.
enum Mark {
    /// The watch listed the Deployment at generation `base`.
    Ready(i64),
    /// The controller observed the new generation.
    Observed,
    /// The first status meeting kubectl's rule: done (`true`) or failed.
    Verdict(Instant, bool),
}

/// kubectl's `rollout status` rule: `Some(true)` done, `Some(false)`
/// progress deadline exceeded, `None` still waiting.
fn kubectl_rule(d: &Deployment) -> Option<bool> {
    let st = d.status.clone().unwrap_or_default();
    if d.metadata.generation.unwrap_or(0) > st.observed_generation.unwrap_or(0) {
        return None;
    }
    let progressing = st.conditions.iter().flatten().find(|c| c.type_ == "Progressing");
    if progressing.is_some_and(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded")) {
        return Some(false);
    }
    let (updated, replicas, available) =
        (st.updated_replicas.unwrap_or(0), st.replicas.unwrap_or(0), st.available_replicas.unwrap_or(0));
    let want = d.spec.as_ref().and_then(|s| s.replicas);
    let done = want.is_none_or(|w| updated >= w) && replicas <= updated && available >= updated;
    done.then_some(true)
}

/// Watches `name` from a fresh list: [`Mark::Ready`] with the listed
/// generation, then marks for the first later generation.
fn watch_marks(
    rt: &tokio::runtime::Runtime,
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> (mpsc::Receiver<Mark>, tokio::task::JoinHandle<()>) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let (tx, rx) = mpsc::channel();
    let name = name.to_string();
    let task = rt.spawn(async move {
        let mut events = watcher(api, config).boxed();
        let (mut listed, mut base, mut observed) = (0, None, false);
        while let Some(ev) = events.next().await {
            let now = Instant::now();
            let d = match ev {
                Ok(watcher::Event::InitApply(d)) => {
                    listed = d.metadata.generation.unwrap_or(0);
                    continue;
                }
                Ok(watcher::Event::InitDone) if base.is_none() => {
                    base = Some(listed);
                    let _ = tx.send(Mark::Ready(listed));
                    continue;
                }
                Ok(watcher::Event::Apply(d)) => d,
                Ok(_) => continue,
                Err(e) => {
                    eprintln!("bench watch of {name}: {e}");
                    continue;
                }
            };
            let generation = d.metadata.generation.unwrap_or(0);
            if base.is_none_or(|b| generation <= b) {
                continue;
            }
            let seen = d.status.as_ref().and_then(|s| s.observed_generation).unwrap_or(0);
            if !observed && seen >= generation {
                observed = true;
                let _ = tx.send(Mark::Observed);
            }
            if let Some(done) = kubectl_rule(&d) {
                let _ = tx.send(Mark::Verdict(now, done));
                return;
            }
        }
    });
    (rx, task)
}

/// The watch's next mark; panics with the action's output if the action
/// ends first (it would never come), or past [`BOUND`].
fn mark(rx: &mpsc::Receiver<Mark>, what: &str, action: &mut Timed) -> Mark {
    let end = Instant::now() + BOUND;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(m) => return m,
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < end => {}
            Err(e) => panic!("the bench's watch: no {what} within {BOUND:?}: {e}"),
        }
        if action.child.try_wait().unwrap().is_some() {
            if let Ok(m) = rx.recv_timeout(Duration::from_secs(2)) {
                return m;
            }
            // Lines already read: the child is gone, its pipes close.
            let out = Ended::text(
                &std::mem::replace(&mut action.stdout, std::thread::spawn(Vec::new)).join().unwrap(),
            );
            panic!("the action ended before the bench's watch saw the {what}:\n{out}");
        }
    }
}

/// Latencies (ms) from the server's verdict to each judge's.
struct Latency {
    action: f64,
    kubectl: f64,
    kubectl_exit: f64,
}

/// One rollout of `name` to `image`, judged at once by the action and by
/// `kubectl rollout status`; `ok` whether it should succeed.
fn verdict(
    rt: &tokio::runtime::Runtime,
    client: &kube::Client,
    ns: &Ns,
    name: &str,
    image: &str,
    ok: bool,
) -> Latency {
    let (rx, task) = watch_marks(rt, client, &ns.0, name);
    let Mark::Ready(listed) = rx.recv_timeout(BOUND).expect("the bench's watch lists") else {
        panic!("the watch's first mark")
    };
    assert!(listed > 0, "the listed generation");
    let action = ns.action(name, image);
    let mut child = Timed::of(action.spawn());
    let Mark::Observed = mark(&rx, "observed generation", &mut child) else {
        panic!("a verdict before the generation")
    };
    let kubectl = Timed::spawn(kubectl_cmd(&[
        "-n",
        &ns.0,
        "rollout",
        "status",
        "--timeout=120s",
        &format!("deployment/{name}"),
    ]));
    let Mark::Verdict(server, done) = mark(&rx, "verdict", &mut child) else {
        panic!("a second observed mark")
    };
    task.abort();
    assert_eq!(done, ok, "{name} → {image}: the server's verdict");
    let (kubectl, ran) = (kubectl.wait(), child.wait());
    let run = action.finish(ran.output());
    let (want, code, words): (_, _, &[&str]) = if ok {
        ("success", 0, &["successfully rolled out"])
    } else {
        ("failure", 1, &["exceeded its progress deadline", "ProgressDeadlineExceeded"])
    };
    assert_eq!(run.output("status"), Some(want), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.code, Some(code), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(kubectl.status.success(), ok, "{}", Ended::text(&kubectl.stderr));
    let action_at = ran.line(words).unwrap_or_else(|| panic!("no verdict line: {}", run.stdout));
    let kubectl_at = kubectl.line(words).unwrap_or_else(|| {
        panic!("kubectl's verdict: {}{}", Ended::text(&kubectl.stdout), Ended::text(&kubectl.stderr))
    });
    if !ok {
        // The action rolled back; let that finish before the next rollout.
        ns.rollout_status(name);
    }
    let ms = |t: Instant| signed_ms(server, t);
    let l = Latency { action: ms(action_at), kubectl: ms(kubectl_at), kubectl_exit: ms(kubectl.exited) };
    println!(
        "{name} → {image}: action {:.1} ms, kubectl {:.1} ms (exit {:.1} ms) after the server's status",
        l.action, l.kubectl, l.kubectl_exit
    );
    l
}

/// `b - a` in milliseconds, negative when `b` came first.
fn signed_ms(a: Instant, b: Instant) -> f64 {
    match b.checked_duration_since(a) {
        Some(d) => d.as_secs_f64() * 1e3,
        None => -(a.duration_since(b).as_secs_f64() * 1e3),
    }
}

/// The action rolling `a,b,c,d` to `image`: seconds from spawn to exit.
fn four_by_action(ns: &Ns, image: &str) -> f64 {
    let action = ns.action(&FOUR.join(","), image);
    let t0 = Instant::now();
    let run = action.run();
    let took = t0.elapsed().as_secs_f64();
    assert_eq!(run.output("status"), Some("success"), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    took
}

/// The script teams write: for each Deployment in turn, `kubectl set
/// image` then `kubectl rollout status`. Seconds from the first call's
/// start to the last one's exit.
fn four_by_script(ns: &Ns, image: &str) -> f64 {
    let t0 = Instant::now();
    for name in FOUR {
        let target = format!("deployment/{name}");
        kubectl_ok(&["-n", &ns.0, "set", "image", &target, &format!("app={image}")]);
        kubectl_ok(&["-n", &ns.0, "rollout", "status", "--timeout=120s", &target]);
    }
    t0.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}
