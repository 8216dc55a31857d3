//! The latency group: the hosts target over a real 50 ms round trip (see
//! `support::latency` for why a delaying relay and not `tc netem`), where
//! every promise must still hold: a deploy goes through, and SIGTERM at any
//! stage, the switch included, ends within 7 s with one version serving and
//! the final status posted.
//!
//! Hosts 4–8 only, serialised per host as in `fleet.rs`.

// The per-host guards serialise whole tests, each on its own runtime.
#![allow(clippy::await_holding_lock)]

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fleet::{ensure_serving, finish_within, image, lock_held, lock_hosts, spawn_until};
use crate::support::action::Action;
use crate::support::github_server::GithubServer;
use crate::support::latency::{DelayProxy, known_hosts_via};
use crate::support::{host_addr, live_version, running_colours, shared_app_inputs, stack_var};

/// One way; the round trip is twice this.
pub const ONE_WAY: Duration = Duration::from_millis(25);

/// A deploy of the shared app to host `k` through a 50 ms RTT relay,
/// recorded on `server`.
pub fn slow_action(k: usize, v: &str, server: &GithubServer) -> (Action, DelayProxy) {
    let proxy = DelayProxy::start(format!("{}:22", host_addr(k)).parse().unwrap(), ONE_WAY);
    let known = std::fs::read_to_string(stack_var("SSH_KNOWN_HOSTS")).unwrap();
    let action = server.record(
        Action::new()
            .inputs(shared_app_inputs(&[format!("root@127.0.0.1:{}", proxy.port)], &image(v)))
            .input("ssh-known-hosts", &known_hosts_via(&known, &host_addr(k), proxy.port)),
    );
    (action, proxy)
}

fn last_state(d: &Value) -> String {
    d["statuses"][0]["state"].as_str().unwrap_or("none").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_at_50ms_rtt_goes_through() {
    let _hosts = lock_hosts(&[5]);
    tokio::task::spawn_blocking(|| ensure_serving(5, "v1")).await.unwrap();
    let server = GithubServer::start(None).await;
    let (action, _proxy) = slow_action(5, "v2", &server);
    let run = tokio::task::spawn_blocking(move || action.run()).await.unwrap();
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert_eq!(live_version(5), "v2");
    assert_eq!(running_colours(5, "app").len(), 1);
    let deployments = server.deployments().await;
    assert_eq!(last_state(deployments.last().unwrap()), "success");
    server.assert_no_violations().await;
}

/// SIGTERM the moment each stage starts, at 50 ms RTT: out within 7 s,
/// `error` posted on the deployment, one version serving from one colour,
/// the lock released.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_at_any_stage_at_50ms_rtt_ends_safely_within_7s() {
    let _hosts = lock_hosts(&[6]);
    let stages: [(&str, &str); 5] = [
        ("prepare", "pulling"),
        ("launch", "starting the candidate"),
        ("verify", "wait until the candidate is healthy"),
        ("switch", "switching nginx"),
        ("observe", "observe health through the proxy"),
    ];
    let mut figures = String::new();
    for (i, (stage, marker)) in stages.iter().enumerate() {
        let v = if i % 2 == 0 { "v2" } else { "v3" };
        tokio::task::spawn_blocking(|| ensure_serving(6, "v1")).await.unwrap();
        let server = GithubServer::start(None).await;
        let (action, proxy) = slow_action(6, v, &server);
        let action = action.input("observe-window", "30s");
        let marker = marker.to_string();
        let (took, run, log) = tokio::task::spawn_blocking(move || {
            let (child, _kill, log) = spawn_until(&action, &marker, Duration::from_secs(120));
            let sent = Instant::now();
            Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
            let (run, _) = finish_within(&action, child, Duration::from_secs(30));
            (sent.elapsed(), run, log.all())
        })
        .await
        .unwrap();
        drop(proxy);
        assert!(took < Duration::from_secs(7), "{stage}: exited {took:?} after SIGTERM\n{log}");
        assert_eq!(run.output("status"), Some("error"), "{stage}\n{log}");
        let deployments = server.deployments().await;
        assert_eq!(last_state(deployments.last().unwrap()), "error", "{stage}: the final status is posted");
        let colours = running_colours(6, "app");
        assert_eq!(colours.len(), 1, "{stage}: one colour runs: {colours:?}\n{log}");
        assert_eq!(live_version(6), "v1", "{stage}: the old version serves\n{log}");
        assert!(!lock_held(6), "{stage}: the lock is released");
        figures.push_str(&format!("sigterm at {stage} (50 ms RTT): exited in {:.2}s\n", took.as_secs_f64()));
    }
    crate::support::save_figures("latency-sigterm", &figures);
}
