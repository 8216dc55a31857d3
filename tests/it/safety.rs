//! The hosts target's safety holes, each reproduced against the real stack
//! the way it bit a user: a run killed outright, a reload nginx refused, an
//! upstream file that names a colour nginx never loaded, two runs a second
//! apart, a hung migration. Each test failed before its fix.
//!
//! Isolation as in `fleet.rs` (hosts 4–8, serialised per host by
//! [`lock_hosts`]); every test leaves its host serving one colour.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::fleet::{
    ensure_serving, finish_within, fleet_action, image, lock_held, lock_hosts, spawn_until, state,
};
use crate::support::{host_addr, host_exec, http_get, live_version, running_colours, stack_var};

/// While alive, host `k`'s nginx master refuses every reload: a server
/// block that cannot bind (sshd has the port) passes `nginx -t`, and
/// `nginx -s reload` still exits 0 — the case a deploy tool must not take
/// for a switch. Dropped: removed and reloaded.
struct RefuseReloads(usize);

const REFUSE: &str = "/etc/nginx/conf.d/zz-refuse-reloads.conf";

impl RefuseReloads {
    fn plant(k: usize) -> RefuseReloads {
        host_exec(
            k,
            &[
                "sh",
                "-c",
                &format!(
                    "printf 'server {{ listen 127.0.0.1:22; return 204; }}\\n' > {REFUSE} && nginx -t 2>&1"
                ),
            ],
        );
        RefuseReloads(k)
    }
}

impl Drop for RefuseReloads {
    fn drop(&mut self) {
        host_exec(self.0, &["sh", "-c", &format!("rm -f {REFUSE}; nginx -s reload")]);
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Counts the front door's non-2xx answers and failed requests on host `k`
/// while alive.
struct FrontDoorWatch {
    stop: Arc<AtomicBool>,
    bad: Arc<AtomicU64>,
    total: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl FrontDoorWatch {
    fn start(k: usize) -> FrontDoorWatch {
        let (stop, bad, total) =
            (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (s, b, t) = (stop.clone(), bad.clone(), total.clone());
        let thread = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(300);
            while !s.load(Ordering::SeqCst) && Instant::now() < deadline {
                t.fetch_add(1, Ordering::SeqCst);
                match http_get(&host_addr(k), "/version") {
                    Ok((200, _)) => {}
                    other => {
                        b.fetch_add(1, Ordering::SeqCst);
                        if seen.len() < 5 {
                            seen.push(format!("{other:?}"));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            seen
        });
        FrontDoorWatch { stop, bad, total, thread: Some(thread) }
    }

    /// `(requests, failed, first failures)`.
    fn stop(mut self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let seen = self.thread.take().unwrap().join().unwrap();
        (self.total.load(Ordering::SeqCst), self.bad.load(Ordering::SeqCst), seen)
    }
}

impl Drop for FrontDoorWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The colour of a running `app-<colour>` container name.
fn colour(name: &str) -> String {
    name.rsplit('-').next().unwrap().to_string()
}

fn port_of(colour: &str) -> u16 {
    if colour == "green" { 8082 } else { 8081 }
}

/// A run killed outright in its observe window (the runner VM lost) leaves
/// its lock and both colours. Another run is refused, naming the dead run;
/// GitHub's "Re-run" of the same run (attempt 2) takes the lock over and
/// converges the host. Before: every test shared one run id, so the
/// takeover was invisible, and a real re-run failed with `deploy_locked`.
#[test]
fn a_killed_run_is_taken_over_by_its_own_rerun_and_by_no_other_run() {
    let _hosts = lock_hosts(&[7]);
    ensure_serving(7, "v1");
    let action = fleet_action(&[7], &image("v2")).input("observe-window", "120s");
    let run_id = action.run_id().to_string();
    let (mut child, _kill, _log) = spawn_until(&action, "100% of traffic goes to", Duration::from_secs(90));
    child.kill().unwrap();
    child.wait().unwrap();
    let left = state(7);
    assert_eq!(left.colours.len(), 2, "the killed run left both colours: {left:?}");
    assert_eq!(left.version, "v2");
    assert!(lock_held(7), "and its lock");

    let other = fleet_action(&[7], &image("v3")).run();
    assert_eq!(other.code, Some(1), "{}", other.stdout);
    assert!(other.stdout.contains("deploy_locked"), "{}", other.stdout);
    assert!(other.stdout.contains(&format!("{run_id}-1")), "the dead run is named:\n{}", other.stdout);
    assert_eq!(state(7), left, "another run changed nothing");

    let rerun =
        fleet_action(&[7], &image("v2")).env("GITHUB_RUN_ID", &run_id).env("GITHUB_RUN_ATTEMPT", "2").run();
    assert_eq!(rerun.code, Some(0), "{}", rerun.stdout);
    assert!(
        rerun.stdout.contains("deploy_lock_taken_over") && rerun.stdout.contains("attempt 1 of this run"),
        "{}",
        rerun.stdout
    );
    assert_eq!(live_version(7), "v2");
    assert_eq!(running_colours(7, "app").len(), 1, "one colour again");
    assert!(!lock_held(7), "the lock is released");
}

/// The upstream file of the shared app on host `k`.
fn upstream(k: usize) -> String {
    host_exec(k, &["cat", "/etc/nginx/conf.d/upstreams/app.conf"])
}

/// A run killed outright mid-canary (its runner VM lost) left nginx's
/// traffic split 70/30 between v1 and its v2, both colours, its host lock
/// and an `in_progress` deployment. Another run used to wait out
/// `lock-timeout` (the deployment held the environment for 6 hours) and then
/// fail `deploy_locked`: a locked-out environment. Now:
/// - while GitHub will not say whether the dead run has ended (here: a run it
///   does not show), the other run still waits and changes nothing;
/// - once GitHub reports it ended, the other run marks its deployment
///   `error`, takes over the host lock with a warning naming it, puts all
///   traffic back on v1 (which served before), proven through nginx,
///   removes v2, and then deploys v3: no request fails meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_killed_mid_canary_is_taken_over_once_github_reports_it_ended() {
    let _hosts = lock_hosts(&[8]);
    tokio::task::spawn_blocking(|| ensure_serving(8, "v1")).await.unwrap();
    let server = crate::support::github_server::GithubServer::start(None).await;
    let recorded = |action| server.record(action);
    let dead = recorded(fleet_action(&[8], &image("v2")))
        .input("strategy", "canary")
        .input("canary-steps", "30,100")
        .input("canary-interval", "120s");
    let dead_run: u64 = dead.run_id().parse().unwrap();
    let (mut child, _kill, _log) = spawn_until(&dead, "30% of traffic goes to", Duration::from_secs(90));
    child.kill().unwrap();
    child.wait().unwrap();
    let left = (state(8).colours, upstream(8));
    assert_eq!(left.0.len(), 2, "the killed run left both colours: {left:?}");
    assert!(left.1.contains("weight=70") && left.1.contains("weight=30"), "and the split: {}", left.1);
    assert!(lock_held(8), "and its lock");

    let watch = FrontDoorWatch::start(8);
    let waiting = recorded(fleet_action(&[8], &image("v3"))).input("lock-timeout", "3s");
    let refused = tokio::task::spawn_blocking(move || waiting.run()).await.unwrap();
    assert_eq!(refused.code, Some(1), "{}", refused.stdout);
    assert!(refused.stdout.contains("github_locked_by_other_run"), "{}", refused.stdout);
    assert!(refused.stdout.contains("permissions: actions: read"), "the wait says why: {}", refused.stdout);
    assert_eq!((state(8).colours, upstream(8)), left, "a run GitHub does not show is not taken over");

    server.set_run(dead_run, "completed", Some("failure")).await;
    let taking = recorded(fleet_action(&[8], &image("v3")));
    let run = tokio::task::spawn_blocking(move || taking.run()).await.unwrap();
    let (requests, failed, first) = watch.stop();
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    let dead_id = format!("{dead_run}-1");
    for needle in
        ["deployment_abandoned", "deploy_lock_stale", dead_id.as_str(), "left split between colours"]
    {
        assert!(run.stdout.contains(needle), "{needle}:\n{}", run.stdout);
    }
    assert!(run.stdout.contains("brought back to one colour"), "{}", run.stdout);
    assert_eq!(live_version(8), "v3");
    assert_eq!(running_colours(8, "app").len(), 1, "one colour again");
    assert!(!lock_held(8), "the lock is released");
    assert_eq!(failed, 0, "{failed} of {requests} requests failed through the takeover: {first:?}");
    assert!(requests > 20, "the front door was watched: {requests} requests");
    let deployments = server.deployments().await;
    let latest = |d: &serde_json::Value| d["statuses"][0]["state"].as_str().unwrap_or("none").to_string();
    let states: Vec<String> = deployments.iter().map(latest).collect();
    assert_eq!(states.first().map(String::as_str), Some("error"), "the dead run's deployment: {states:?}");
    assert_eq!(states.last().map(String::as_str), Some("success"), "{states:?}");
    server.assert_no_violations().await;
}

/// A host lock whose run left no GitHub deployment (`github-deployments:
/// false` then): only the host lock says who holds it. It stands while
/// GitHub will not show that run, and while GitHub reports it running;
/// once GitHub reports it ended, it is taken over, and the switch that
/// run finished (nginx on its v2) is kept as the host's one colour.
#[tokio::test(flavor = "multi_thread")]
async fn a_host_lock_stands_while_github_reports_its_run_running_and_goes_once_it_ended() {
    let _hosts = lock_hosts(&[7]);
    tokio::task::spawn_blocking(|| ensure_serving(7, "v1")).await.unwrap();
    let server = crate::support::github_server::GithubServer::start(None).await;
    let dead = fleet_action(&[7], &image("v2")).input("observe-window", "120s");
    let dead_run: u64 = dead.run_id().parse().unwrap();
    let (mut child, _kill, _log) = spawn_until(&dead, "100% of traffic goes to", Duration::from_secs(90));
    child.kill().unwrap();
    child.wait().unwrap();
    let left = state(7);
    assert_eq!(left.colours.len(), 2, "{left:?}");
    let next = || server.record(fleet_action(&[7], &image("v3")));
    let run = |a: crate::support::action::Action| tokio::task::spawn_blocking(move || a.run());

    let hidden = run(next()).await.unwrap();
    assert_eq!(hidden.code, Some(1), "{}", hidden.stdout);
    assert!(hidden.stdout.contains("deploy_locked"), "{}", hidden.stdout);
    assert!(hidden.stdout.contains("permissions: actions: read"), "{}", hidden.stdout);
    assert_eq!(state(7), left, "a run GitHub does not show keeps its lock");

    server.set_run(dead_run, "in_progress", None).await;
    let running = run(next()).await.unwrap();
    assert_eq!(running.code, Some(1), "{}", running.stdout);
    assert!(
        running.stdout.contains("deploy_locked") && running.stdout.contains("still running"),
        "{}",
        running.stdout
    );
    assert_eq!(state(7), left, "a run still going keeps its lock");

    // The taking run also moves the app to other ports, as a canary: what
    // the dead run left is judged on the ports its containers publish, and
    // the canary's live half goes where the live colour listens.
    server.set_run(dead_run, "completed", Some("cancelled")).await;
    let taking = next()
        .input("blue-port", "8091")
        .input("green-port", "8092")
        .input("strategy", "canary")
        .input("canary-steps", "50,100")
        .input("canary-interval", "3s");
    let (split, taken) = tokio::task::spawn_blocking(move || {
        let (child, _kill, log) = spawn_until(&taking, "50% of traffic goes to", Duration::from_secs(90));
        let split = upstream(7);
        let mut run = finish_within(&taking, child, Duration::from_secs(120)).0;
        run.stdout = log.all();
        (split, run)
    })
    .await
    .unwrap();
    // Half to the live colour where it listens (:8081/:8082), half to the
    // candidate on its new port.
    assert!(split.contains("weight=50") && split.contains(":809"), "{split}");
    assert!(split.contains("127.0.0.1:8081 ") || split.contains("127.0.0.1:8082 "), "{split}");
    assert_eq!(taken.code, Some(0), "{}", taken.stdout);
    assert!(
        taken.stdout.contains("deploy_lock_stale") && taken.stdout.contains("(cancelled)"),
        "{}",
        taken.stdout
    );
    assert!(taken.stdout.contains(&format!("{dead_run}-1")), "{}", taken.stdout);
    assert!(
        taken.stdout.contains("live 127.0.0.1:5000/demo/app:v2"),
        "the finished switch is kept: {}",
        taken.stdout
    );
    assert!(
        !taken.stdout.contains("left split"),
        "nginx was on the dead run's colour already: {}",
        taken.stdout
    );
    assert_eq!(live_version(7), "v3");
    assert_eq!(running_colours(7, "app").len(), 1);
    assert!(upstream(7).contains("127.0.0.1:809"), "{}", upstream(7));
    assert!(!lock_held(7));
    server.assert_no_violations().await;
    // Back on the stack's ports for the other tests.
    let back = run(fleet_action(&[7], &image("v1"))).await.unwrap();
    assert_eq!(back.code, Some(0), "{}", back.stdout);
}

/// The same image with another environment, command or ports was "already
/// live: nothing to do" (only the image and the secrets were compared), so
/// a config-only change never shipped while the run reported success. The
/// containers now carry a fingerprint of what they were started with.
#[test]
fn a_config_only_change_is_deployed_and_an_unchanged_one_is_not() {
    let _hosts = lock_hosts(&[6]);
    ensure_serving(6, "v1");
    let with_env =
        |greeting: &str| fleet_action(&[6], &image("v1")).input("env", &format!("GREETING={greeting}"));
    let env_of_live = || {
        let live = running_colours(6, "app");
        assert_eq!(live.len(), 1, "{live:?}");
        host_exec(
            6,
            &["docker", "inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}", &live[0]],
        )
    };
    let first = with_env("one").run();
    assert_eq!(first.code, Some(0), "{}", first.stdout);
    assert!(
        !first.stdout.contains("nothing to do"),
        "new env on the same image is deployed: {}",
        first.stdout
    );
    assert!(env_of_live().lines().any(|l| l == "GREETING=one"), "{}", env_of_live());
    let before = state(6);

    let same = with_env("one").run();
    assert_eq!(same.code, Some(0), "{}", same.stdout);
    assert!(same.stdout.contains("nothing to do"), "{}", same.stdout);
    assert_eq!(state(6), before, "an unchanged deploy touches nothing");

    let changed = with_env("two").run();
    assert_eq!(changed.code, Some(0), "{}", changed.stdout);
    assert!(!changed.stdout.contains("nothing to do"), "{}", changed.stdout);
    assert!(changed.stdout.contains("another command, environment or ports"), "{}", changed.stdout);
    assert_ne!(state(6).colours, before.colours, "a new colour runs it");
    assert!(env_of_live().lines().any(|l| l == "GREETING=two"), "{}", env_of_live());

    let command = fleet_action(&[6], &image("v1"))
        .input("env", "GREETING=two")
        .input("command", r#"["/bin/app-start"]"#)
        .run();
    assert_eq!(command.code, Some(0), "{}", command.stdout);
    assert!(!command.stdout.contains("nothing to do"), "a new command is deployed: {}", command.stdout);
    assert_eq!(live_version(6), "v1");
}

/// A redeploy of the same image (a secret rotation) while nginx refuses
/// reloads: both colours answer `v1`, so the version text proved nothing
/// and the old colour, still serving, was removed (502 for everyone). The
/// backend nginx reports now decides: the switch is not verified, the
/// candidate goes, and v1 keeps serving from its old colour.
#[tokio::test(flavor = "multi_thread")]
async fn a_same_image_switch_that_nginx_refused_is_caught_by_the_backend_port() {
    let _hosts = lock_hosts(&[6]);
    ensure_serving(6, "v1");
    let prefix = format!("/rotate-{}/app/", crate::support::action::unique_run_id());
    let ssm = aws_sdk_ssm::Client::new(&crate::support::moto_config().await);
    let put = |value: &'static str| {
        let (ssm, name) = (ssm.clone(), format!("{prefix}token"));
        async move {
            ssm.put_parameter()
                .name(name)
                .value(value)
                .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
                .overwrite(true)
                .send()
                .await
                .unwrap();
        }
    };
    let deploy = |prefix: String| fleet_action(&[6], &image("v1")).input("ssm-paths", &prefix).moto();
    put("first-token-value").await;
    let first = deploy(prefix.clone());
    let first = tokio::task::spawn_blocking(move || first.run()).await.unwrap();
    assert_eq!(first.code, Some(0), "{}", first.stdout);
    let before = state(6);
    assert_eq!(before.colours.len(), 1);

    put("rotated-token-value").await;
    let refuse = RefuseReloads::plant(6);
    let again = deploy(prefix.clone());
    let run = tokio::task::spawn_blocking(move || again.run()).await.unwrap();
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(run.stdout.contains("switch_not_verified"), "{}", run.stdout);
    assert_eq!(http_get(&host_addr(6), "/version").unwrap(), (200, "v1".to_string()), "v1 still answers");
    assert_eq!(state(6), before, "from its old colour, with the candidate gone");
    drop(refuse);
    assert_eq!(live_version(6), "v1");
}

/// A rollback whose restore nginx refuses: the old code reported "back on
/// the previous version" and removed what it had started. The restore is
/// now proven through nginx first; unproven, the run ends in `error` and
/// says so.
#[test]
fn a_rollback_whose_restore_nginx_refused_is_not_reported_as_done() {
    let _hosts = lock_hosts(&[5]);
    ensure_serving(5, "v1");
    let old = colour(&running_colours(5, "app")[0]);
    let action = fleet_action(&[5], &image("v2"))
        .input("observe-window", "60s")
        .input("observe-failures", "2")
        .input("ssh-timeout", "5s");
    let (child, _kill, log) = spawn_until(&action, "100% of traffic goes to", Duration::from_secs(90));
    let refuse = RefuseReloads::plant(5);
    let candidate = if old == "blue" { "green" } else { "blue" };
    host_exec(5, &["docker", "stop", "-t", "0", &format!("app-{candidate}")]);
    let (run, _) = finish_within(&action, child, Duration::from_secs(120));
    let text = run.stdout.clone() + &log.all();
    assert_eq!(run.code, Some(1), "{text}");
    assert_eq!(run.output("status"), Some("error"), "{text}");
    assert!(text.contains("rollback_not_verified"), "{text}");
    assert!(!text.contains("back on the previous version"), "{text}");
    drop(refuse);
    // With reloads accepted again, the restored file serves the old colour.
    assert_eq!(live_version(5), "v1");
}

/// A run that died between the upstream file's rename and the reload left
/// a file naming its candidate's colour while nginx still served the old
/// one. The next run read the file, took the serving colour for the
/// candidate's and replaced it under live traffic. What answers through
/// nginx decides now: no request fails.
#[test]
fn a_file_naming_a_colour_nginx_never_loaded_does_not_fool_the_next_run() {
    let _hosts = lock_hosts(&[8]);
    ensure_serving(8, "v1");
    let live = colour(&running_colours(8, "app")[0]);
    let action = fleet_action(&[8], &image("v2"));
    let run_id = action.run_id().to_string();
    let (mut child, _kill, _log) = spawn_until(&action, "container started", Duration::from_secs(90));
    child.kill().unwrap();
    child.wait().unwrap();
    // What the dead run did next: the new file renamed in, no reload.
    let other = if live == "blue" { "green" } else { "blue" };
    host_exec(
        8,
        &[
            "sh",
            "-c",
            &format!(
                "printf 'upstream app_backend {{\\n    server 127.0.0.1:{};\\n}}\\n' > /etc/nginx/conf.d/upstreams/app.conf",
                port_of(other)
            ),
        ],
    );
    assert_eq!(live_version(8), "v1", "nginx still serves the old colour");

    let watch = FrontDoorWatch::start(8);
    let rerun =
        fleet_action(&[8], &image("v3")).env("GITHUB_RUN_ID", &run_id).env("GITHUB_RUN_ATTEMPT", "2").run();
    let (total, bad, seen) = watch.stop();
    assert_eq!(rerun.code, Some(0), "{}", rerun.stdout);
    assert_eq!(live_version(8), "v3");
    assert!(total > 10, "the watch ran ({total} requests)");
    assert_eq!(bad, 0, "{bad} of {total} requests failed during the re-run: {seen:?}\n{}", rerun.stdout);
    assert_eq!(running_colours(8, "app").len(), 1);
}

/// Two runs a moment apart: the first (v2) holds the lock mid-deploy; the
/// second (v3, already what the host served) read "v3 is live" outside the
/// lock, recorded success and left, and then v2 went live. The decision is
/// taken under the lock now: the second run is refused.
#[test]
fn nothing_to_do_is_decided_only_under_the_lock() {
    let _hosts = lock_hosts(&[4]);
    ensure_serving(4, "v3");
    let first = fleet_action(&[4], &image("v2")).input("observe-window", "5s");
    let (child, _kill, log) = spawn_until(&first, "deploy lock taken", Duration::from_secs(60));
    let second = fleet_action(&[4], &image("v3")).run();
    assert_eq!(second.code, Some(1), "{}", second.stdout);
    assert!(second.stdout.contains("deploy_locked"), "{}", second.stdout);
    assert!(!second.stdout.contains("nothing to do"), "{}", second.stdout);
    let (run, _) = finish_within(&first, child, Duration::from_secs(120));
    assert_eq!(run.code, Some(0), "{}", log.all());
    assert_eq!(live_version(4), "v2");
}

fn migrate_containers(k: usize) -> String {
    host_exec(
        k,
        &["docker", "ps", "-a", "--filter", "name=app-migrate", "--format", "{{.Names}} {{.Status}}"],
    )
}

/// `migrate-timeout` fires (it never could under the default run
/// timeout), the migration container is stopped and removed, nothing
/// switched; and a re-run never removes a migration that another attempt
/// left running (it would cut a schema change in half).
#[test]
fn a_hung_migration_is_stopped_at_its_timeout_and_never_cut_by_the_next_run() {
    let _hosts = lock_hosts(&[7]);
    ensure_serving(7, "v1");
    let hung = r#"["sh", "-c", "echo migrating; sleep 600"]"#;
    let run =
        fleet_action(&[7], &image("v2")).input("migrate-command", hung).input("migrate-timeout", "3s").run();
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(run.stdout.contains("migration_timeout") && run.stdout.contains("migrating"), "{}", run.stdout);
    assert_eq!(migrate_containers(7).trim(), "", "nothing left running");
    assert_eq!(live_version(7), "v1");

    // An attempt killed mid-migration leaves it running...
    let action = fleet_action(&[7], &image("v2")).input("migrate-command", hung);
    let run_id = action.run_id().to_string();
    let (mut child, _kill, _log) = spawn_until(&action, "running the migration", Duration::from_secs(90));
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(migrate_containers(7).contains("Up"), "{}", migrate_containers(7));
    // ...and its re-run refuses to cut it.
    let rerun = fleet_action(&[7], &image("v2"))
        .input("migrate-command", hung)
        .env("GITHUB_RUN_ID", &run_id)
        .env("GITHUB_RUN_ATTEMPT", "2")
        .run();
    assert_eq!(rerun.code, Some(1), "{}", rerun.stdout);
    assert!(rerun.stdout.contains("migration_running"), "{}", rerun.stdout);
    assert!(migrate_containers(7).contains("Up"), "the migration still runs");
    assert_eq!(live_version(7), "v1");
    host_exec(7, &["docker", "rm", "-f", "app-migrate"]);
    assert!(!lock_held(7), "the re-run released the lock it took over");
}

/// SIGTERM while the migration runs: the migration is stopped, not left
/// for the next deploy to find, within the 7 s budget.
#[test]
fn sigterm_during_a_migration_stops_it_within_the_budget() {
    let _hosts = lock_hosts(&[6]);
    ensure_serving(6, "v1");
    let action = fleet_action(&[6], &image("v2"))
        .input("migrate-command", r#"["sh", "-c", "echo migrating; sleep 600"]"#);
    let (child, _kill, log) = spawn_until(&action, "running the migration", Duration::from_secs(90));
    std::thread::sleep(Duration::from_millis(500));
    let sent = Instant::now();
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let (run, _) = finish_within(&action, child, Duration::from_secs(30));
    let took = sent.elapsed();
    assert!(took < Duration::from_secs(7), "exited {took:?} after SIGTERM\n{}", log.all());
    assert_eq!(run.output("status"), Some("error"));
    assert_eq!(migrate_containers(6).trim(), "", "the migration was stopped and removed");
    assert_eq!(live_version(6), "v1");
    assert!(!lock_held(6));
}

/// Stock EC2 images refuse root: the deploy user is `ec2-user`, with
/// passwordless sudo and outside the `docker` group. The whole deploy goes
/// through (nginx switch and lock under `sudo -n`, the Engine through
/// `sudo -n docker system dial-stdio`); a user whose sudo wants a password
/// is told exactly that, and nothing changes.
#[test]
fn a_non_root_sudo_user_deploys_and_one_without_passwordless_sudo_is_told_why() {
    let _hosts = lock_hosts(&[4]);
    ensure_serving(4, "v1");
    let as_user = |user: &str, v: &str| {
        fleet_action(&[4], &image(v)).input("hosts", &format!("{user}@{}:22", host_addr(4)))
    };
    let run = as_user(&stack_var("SSH_USER_SUDO"), "v2").run();
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert!(run.stdout.contains("trying sudo -n docker system dial-stdio"), "{}", run.stdout);
    assert_eq!(live_version(4), "v2");
    assert_eq!(running_colours(4, "app").len(), 1);
    assert!(!lock_held(4));

    let before = state(4);
    let run = as_user(&stack_var("SSH_USER_SUDO_PASSWORD"), "v3").run();
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(run.stdout.contains("sudo_password_required"), "{}", run.stdout);
    assert!(run.stdout.contains("passwordless sudo"), "{}", run.stdout);
    assert_eq!(state(4), before, "nothing changed");
}

pub(crate) fn bastion_logins() -> usize {
    let log = std::fs::read_to_string(format!("{}/logs/bastion-sshd.log", stack_var("STACK_DIR")))
        .unwrap_or_default();
    log.matches("Accepted publickey for jump").count()
}

/// Private instances are reached through a bastion: `ssh-jump-host`, with
/// the bastion's key pinned in `ssh-known-hosts` like the hosts'. Without
/// its pin the bastion is refused, by name, before anything changes.
#[test]
fn a_jump_host_reaches_the_hosts_and_an_unpinned_one_is_refused() {
    let _hosts = lock_hosts(&[8]);
    ensure_serving(8, "v1");
    let known = std::fs::read_to_string(stack_var("SSH_KNOWN_HOSTS")).unwrap();
    let bastion = std::fs::read_to_string(stack_var("JUMP_KNOWN_HOSTS")).unwrap();
    let logins = bastion_logins();
    let run = fleet_action(&[8], &image("v2"))
        .input("ssh-jump-host", &stack_var("JUMP_HOST"))
        .input("ssh-known-hosts", &format!("{known}\n{bastion}"))
        .run();
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert_eq!(live_version(8), "v2");
    assert!(bastion_logins() > logins, "the session went through the bastion");

    let before = state(8);
    let run = fleet_action(&[8], &image("v3")).input("ssh-jump-host", &stack_var("JUMP_HOST")).run();
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(
        run.stdout.contains("host_key_unknown") && run.stdout.contains("jump host 127.0.0.1:2222"),
        "{}",
        run.stdout
    );
    assert_eq!(state(8), before, "nothing changed");
}

/// Another switch holds the host's nginx switch lock past our wait: the
/// deploy fails with `lock_failed`, changes nothing, and leaves the other
/// holder's lock alone (waiters used to remove a lock another waiter had
/// just taken). Once it is free, the deploy goes through.
#[test]
fn a_held_switch_lock_is_waited_for_never_broken() {
    let _hosts = lock_hosts(&[5]);
    ensure_serving(5, "v1");
    let before = state(5);
    let lock = "/var/lib/deploy-action/locks/nginx-switch.flock";
    let holder = std::thread::spawn(move || {
        host_exec(5, &["sh", "-c", &format!("mkdir -p /var/lib/deploy-action/locks; flock {lock} sleep 25")])
    });
    std::thread::sleep(Duration::from_millis(500));
    let run = fleet_action(&[5], &image("v2")).input("ssh-timeout", "4s").run();
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(
        run.stdout.contains("lock_failed") && run.stdout.contains("another switch held"),
        "{}",
        run.stdout
    );
    assert_eq!(state(5), before, "nothing changed");
    let held = host_exec(5, &["sh", "-c", &format!("flock -n {lock} true && echo free || echo held")]);
    assert_eq!(held.trim(), "held", "the other holder keeps its lock");
    holder.join().unwrap();
    let run = fleet_action(&[5], &image("v2")).run();
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert_eq!(live_version(5), "v2");
}
