//! Full deploys by the built binary against the real stack: SSH, Docker
//! Engine and nginx on simulated hosts.

use std::time::{Duration, Instant};

use crate::support::action::Action;
use crate::support::{
    first_hosts, live_version, running_colours, shared_app_inputs, shared_app_lock, stack_var,
    wait_until_serving,
};

/// An action deploying the shared `app` to the first `hosts` hosts.
pub fn hosts_action(hosts: usize, image: &str) -> Action {
    Action::new().inputs(shared_app_inputs(&first_hosts(hosts), image))
}

fn image(v: &str) -> String {
    stack_var(&format!("IMAGE_{}", v.to_uppercase()))
}

/// Deploys `v` to host 1 and checks it serves.
fn deploy_ok(v: &str) -> crate::support::action::Run {
    let run = hosts_action(1, &image(v)).run();
    assert_eq!(run.code, Some(0), "deploy {v} failed:\n{}", run.stdout);
    assert_eq!(live_version(1), v);
    run
}

#[test]
fn versions_follow_each_other_and_colours_alternate() {
    let _lock = shared_app_lock();
    deploy_ok("v1");
    let first = running_colours(1, "app");
    assert_eq!(first.len(), 1, "only the live colour runs after retire: {first:?}");
    let run = deploy_ok("v2");
    assert_eq!(run.output("previous-image"), Some(image("v1").as_str()), "read from the host without GitHub");
    assert_eq!(run.output("image"), Some(image("v2").as_str()));
    let second = running_colours(1, "app");
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(first, second, "the colour alternates");
    deploy_ok("v3");
    assert_eq!(running_colours(1, "app"), first, "and comes back");
}

#[test]
fn a_broken_image_keeps_the_old_version_serving() {
    let _lock = shared_app_lock();
    deploy_ok("v1");
    let before = running_colours(1, "app");
    let run = hosts_action(1, &image("broken")).input("health-check-timeout", "3s").run();
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert_eq!(run.output("status"), Some("failure"));
    assert!(run.stdout.contains("health_check_failed"), "{}", run.stdout);
    assert_eq!(live_version(1), "v1");
    assert_eq!(running_colours(1, "app"), before, "the candidate was removed");
    assert!(run.summary.contains("rolled back"), "{}", run.summary);
}

#[test]
fn relayed_output_cannot_inject_workflow_commands() {
    let _lock = shared_app_lock();
    deploy_ok("v1");
    let run = hosts_action(1, &image("v2"))
        .input(
            "migrate-command",
            r#"["sh", "-c", "echo '::error::injected by the app'; echo '::add-mask::x'; exit 3"]"#,
        )
        .run();
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(run.stdout.contains("migration_failed"), "{}", run.stdout);
    // The runner reads a line as a command only when it starts with `::`.
    // Outside a ::stop-commands:: block, no injected command may start a
    // line; inside, the app's output is relayed verbatim but inert.
    let mut stopped: Option<String> = None;
    let mut seen = false;
    for line in run.stdout.lines() {
        if let Some(token) = line.strip_prefix("::stop-commands::") {
            stopped = Some(format!("::{token}::"));
        } else if stopped.as_deref() == Some(line) {
            stopped = None;
        } else if stopped.is_some() {
            seen |= line.contains("::error::injected by the app");
        } else {
            assert!(
                !line.starts_with("::error::injected") && !line.starts_with("::add-mask::x"),
                "injected command reached the runner: {line}"
            );
        }
    }
    assert!(seen, "the migration's output was relayed:\n{}", run.stdout);
    assert_eq!(live_version(1), "v1", "nothing switched");
}

#[test]
fn sigterm_mid_deploy_exits_within_7s_with_one_version_serving() {
    let _lock = shared_app_lock();
    deploy_ok("v1");
    let action = hosts_action(1, &image("v2")).input("observe-window", "60s");
    let mut child = action.spawn();
    // Wait until the switch has happened (v2 serves) and the observe window runs.
    wait_until_serving(1, "v2", &mut child, Duration::from_secs(60));
    let signalled = Instant::now();
    send_signal(child.id(), "TERM");
    let out = child.wait_with_output().unwrap();
    let took = signalled.elapsed();
    let run = action.finish(out);
    assert!(took < Duration::from_secs(7), "took {took:?} to exit");
    assert_ne!(run.code, Some(0));
    assert_eq!(run.output("status"), Some("error"));
    assert_eq!(live_version(1), "v1", "rolled back to exactly the previous version");
    assert_eq!(running_colours(1, "app").len(), 1, "exactly one version runs");
}

fn send_signal(pid: u32, sig: &str) {
    std::process::Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().unwrap();
}

#[test]
fn a_services_file_switches_a_web_service_and_a_worker_together() {
    let _lock = shared_app_lock();
    let host3 = stack_var("HOSTS").split(',').nth(2).unwrap().to_string();
    let file = |dir: &std::path::Path| {
        std::fs::write(
            dir.join("services.yml"),
            "services:\n\
             - name: web\n  blue-port: 8181\n  green-port: 8182\n  upstream-file: /etc/nginx/conf.d/upstreams/app.conf\n  upstream-name: app_backend\n\
             - name: worker\n  proxy: false\n  env:\n    ROLE: worker\n",
        )
        .unwrap();
    };
    for v in ["v1", "v2"] {
        let action = hosts_action(1, &image(v))
            .input("hosts", &host3)
            .input("app", "multi")
            .input("services-file", "services.yml");
        file(action.dir.path());
        let run = action.run();
        assert_eq!(run.code, Some(0), "{v}:\n{}", run.stdout);
        assert_eq!(live_version(3), v, "the web service serves {v} through nginx");
        let running = running_colours(3, "multi");
        assert_eq!(running.len(), 2, "one web and one worker container: {running:?}");
        assert!(
            running.iter().any(|n| n.starts_with("multi-web-"))
                && running.iter().any(|n| n.starts_with("multi-worker-"))
        );
        let images = crate::support::host_exec(
            3,
            &["docker", "ps", "--filter", "label=deploy-action.app=multi", "--format", "{{.Image}}"],
        );
        assert!(images.lines().all(|i| i == image(v)), "both services run {v}: {images}");
    }
}

/// The observe window keeps one failure streak per service. Here the web
/// service passes its checks on the candidate, then fails every check
/// through nginx, while the worker beside it stays up: a streak shared by
/// both was reset by the worker on every round, and the deploy committed.
#[test]
fn a_healthy_worker_does_not_hide_a_web_service_failing_through_nginx() {
    let _lock = shared_app_lock();
    let host3 = stack_var("HOSTS").split(',').nth(2).unwrap().to_string();
    let plain = "services:\n\
         - name: web\n  blue-port: 8181\n  green-port: 8182\n  upstream-file: /etc/nginx/conf.d/upstreams/app.conf\n  upstream-name: app_backend\n\
         - name: worker\n  proxy: false\n";
    let action = hosts_action(1, &image("v1"))
        .input("hosts", &host3)
        .input("app", "multi")
        .input("services-file", "services.yml");
    std::fs::write(action.dir.path().join("services.yml"), plain).unwrap();
    let run = action.run();
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert_eq!(live_version(3), "v1");

    // /health answers 200 three times (the candidate's checks), then 500.
    let flaky = r#"mkdir -p /tmp/w/cgi-bin && echo v2 > /tmp/w/version && printf '#!/bin/sh\nn=$(cat /tmp/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /tmp/n\nif [ $n -gt 3 ]; then echo "Status: 500"; echo; echo failing; else echo "Status: 200"; echo; echo ok; fi\n' > /tmp/w/cgi-bin/health && chmod +x /tmp/w/cgi-bin/health && exec httpd -f -p 8080 -h /tmp/w"#;
    let command = serde_json::to_string(&["sh", "-c", flaky]).unwrap();
    let file = format!(
        "services:\n\
         - name: web\n  blue-port: 8181\n  green-port: 8182\n  upstream-file: /etc/nginx/conf.d/upstreams/app.conf\n  upstream-name: app_backend\n  health-check-path: /cgi-bin/health\n  command: {command}\n\
         - name: worker\n  proxy: false\n"
    );
    let action = hosts_action(1, &image("v2"))
        .input("hosts", &host3)
        .input("app", "multi")
        .input("services-file", "services.yml")
        .input("observe-window", "8s")
        .input("observe-failures", "3");
    std::fs::write(action.dir.path().join("services.yml"), file).unwrap();
    let run = action.run();
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(run.stdout.contains("observe_failed") && run.stdout.contains("of service web"), "{}", run.stdout);
    assert_eq!(run.output("status"), Some("failure"));
    assert_eq!(live_version(3), "v1", "rolled back to v1");
}

/// `target: ec2` end to end: the binary finds the instances through the EC2
/// API (moto, via `AWS_ENDPOINT_URL`), running ones only, and deploys to
/// their private IPs, which are stack hosts 2 and 3. Host 1's instance is
/// stopped: it must not be touched.
#[test]
fn an_ec2_target_deploys_to_the_running_instances_it_finds() {
    let _lock = shared_app_lock();
    let before = hosts_action(3, &image("v1")).run();
    assert_eq!(before.code, Some(0), "{}", before.stdout);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let run_tag = format!("deploy-{}", std::process::id());
    let (config, ids) = rt.block_on(async {
        let config = crate::support::moto_config().await;
        let ids = crate::support::moto_instances(
            &config,
            &run_tag,
            &[("127.0.0.2", "web"), ("127.0.0.3", "web"), ("127.0.0.4", "web")],
        )
        .await;
        let ec2 = aws_sdk_ec2::Client::new(&config);
        ec2.stop_instances().instance_ids(&ids[0]).send().await.expect("stop host 1's instance");
        (config, ids)
    });

    let run = Action::new()
        .inputs(shared_app_inputs(&[], &image("v2")))
        .without("INPUT_HOSTS")
        .input("target", "ec2")
        .input("ssh-user", "root")
        .input("ec2-filters", &format!("Role=web,Run={run_tag}"))
        .moto()
        .run();
    rt.block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&config);
        ec2.terminate_instances().set_instance_ids(Some(ids)).send().await.expect("terminate");
    });

    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert!(
        run.summary.contains("127.0.0.3") && run.summary.contains("127.0.0.4"),
        "both running instances deployed:\n{}",
        run.summary
    );
    assert!(!run.summary.contains("127.0.0.2"), "the stopped instance is not a target:\n{}", run.summary);
    assert_eq!((live_version(2), live_version(3)), ("v2".to_string(), "v2".to_string()));
    assert_eq!(live_version(1), "v1", "host 1 (stopped instance) untouched");
}

/// The outputs `action.yml` declares, by name.
fn declared_outputs() -> Vec<String> {
    let text = std::fs::read_to_string(crate::support::repo_root().join("action.yml")).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    doc["outputs"].as_mapping().unwrap().keys().map(|k| k.as_str().unwrap().to_string()).collect()
}

/// What a later step reads, on every outcome of a hosts deploy: each
/// output written is declared in `action.yml`, and each that has a value on
/// that outcome carries it (on a re-run with nothing to do, the previous
/// image is what is live; on a failure, what serves again).
#[test]
fn every_output_on_every_outcome() {
    let _lock = shared_app_lock();
    let declared = declared_outputs();
    let check = |what: &str, run: &crate::support::action::Run, expect: &[(&str, &str)]| {
        for (k, _) in &run.outputs {
            assert!(declared.contains(k), "{what}: output {k} is not declared in action.yml");
        }
        for (k, v) in expect {
            assert_eq!(run.output(k), Some(*v), "{what}: output {k}\n{}", run.stdout);
        }
    };
    let host = host_label(1);
    deploy_ok("v1");
    let deployed = deploy_ok("v2");
    let (v1, v2, v3, broken) = (image("v1"), image("v2"), image("v3"), image("broken"));
    check(
        "deployed",
        &deployed,
        &[("status", "success"), ("image", &v2), ("previous-image", &v1), ("hosts", &host)],
    );
    let unchanged = deploy_ok("v2");
    assert!(unchanged.stdout.contains("nothing to do"), "{}", unchanged.stdout);
    check(
        "unchanged",
        &unchanged,
        &[("status", "success"), ("image", &v2), ("previous-image", &v2), ("hosts", &host)],
    );
    let failed = hosts_action(1, &broken).input("health-check-timeout", "3s").run();
    assert_eq!(failed.code, Some(1), "{}", failed.stdout);
    assert_eq!(live_version(1), "v2", "rolled back");
    check(
        "rolled back",
        &failed,
        &[("status", "failure"), ("image", &broken), ("previous-image", &v2), ("hosts", &host)],
    );
    let plan = hosts_action(1, &v3).input("mode", "plan").run();
    assert_eq!(plan.code, Some(0), "{}", plan.stdout);
    check("plan", &plan, &[("status", "planned")]);
    assert!(plan.output("plan").is_some_and(|p| p.contains(&v3)), "{:?}", plan.output("plan"));

    // Cancelled while the candidate is checked (v3 is healthy, but 50
    // passes in a row take 10 s): the old version keeps serving.
    let action = hosts_action(1, &v3).input("health-check-successes", "50");
    let child = action.spawn();
    std::thread::sleep(Duration::from_secs(3));
    std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let (cancelled, _) = crate::fleet::finish_within(&action, child, Duration::from_secs(20));
    assert_eq!(cancelled.code, Some(130), "{}", cancelled.stdout);
    assert_eq!(live_version(1), "v2");
    check(
        "cancelled",
        &cancelled,
        &[("status", "error"), ("image", &v3), ("previous-image", &v2), ("hosts", &host)],
    );
}

/// `127.0.0.(K+1)` as the outputs and summary name host `k`.
fn host_label(k: usize) -> String {
    first_hosts(k)[k - 1].trim_start_matches("root@").trim_end_matches(":22").to_string()
}
