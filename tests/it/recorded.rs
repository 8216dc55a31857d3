//! Deploys by the built binary, recorded on the GitHub API test server
//! (which validates every request and response against GitHub's OpenAPI
//! description): the whole history a run leaves behind.

// The shared-app guard serialises whole tests, each on its own runtime; no
// task inside a test ever waits for it, so holding it across awaits is safe.
#![allow(clippy::await_holding_lock)]

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::deploy::hosts_action;
use crate::support::action::{Action, Run, SHA};
use crate::support::github_server::{GithubServer, TOKEN};
use crate::support::{live_version, shared_app_lock, stack_var};

fn recorded(server: &GithubServer, image: &str) -> Action {
    hosts_action(1, &stack_var(&format!("IMAGE_{}", image.to_uppercase())))
        .input("github-deployments", "true")
        .input("github-token", TOKEN)
        .input("environment-url", "https://shop.example.com/")
        .env("GITHUB_API_URL", &server.base_url)
}

async fn run(action: Action) -> Run {
    tokio::task::spawn_blocking(move || action.run()).await.unwrap()
}

fn states(d: &Value) -> Vec<String> {
    // Statuses come newest first.
    let mut s: Vec<String> =
        d["statuses"].as_array().unwrap().iter().map(|s| s["state"].as_str().unwrap().to_string()).collect();
    s.reverse();
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_is_recorded_with_statuses_and_the_previous_one_made_inactive() {
    let _lock = shared_app_lock();
    let server = GithubServer::start(Some("/api/v3")).await;
    let first = run(recorded(&server, "v1")).await;
    assert_eq!(first.code, Some(0), "{}", first.stdout);
    let second = recorded(&server, "v2");
    let second_run_id = second.run_id().to_string();
    let second = run(second).await;
    assert_eq!(second.code, Some(0), "{}", second.stdout);
    assert_eq!(live_version(1), "v2");

    let deployments = server.deployments().await;
    assert_eq!(deployments.len(), 2, "one deployment per run");
    let (old, new) = (&deployments[0], &deployments[1]);
    assert_eq!(new["ref"], SHA);
    assert_eq!(new["environment"], "production");
    assert_eq!(new["task"], "deploy");
    assert_eq!(new["payload"]["image"], stack_var("IMAGE_V2"));
    assert_eq!(new["payload"]["previous_image"], stack_var("IMAGE_V1"));
    assert_eq!(new["payload"]["strategy"], "blue-green");
    assert_eq!(new["payload"]["target"], "hosts");
    assert_eq!(states(new), ["in_progress", "success"]);
    assert_eq!(
        states(old),
        ["in_progress", "success", "inactive"],
        "production deployments are deactivated by us"
    );
    let success = &new["statuses"][0];
    assert_eq!(
        success["log_url"],
        format!("https://github.com/acme/shop-api/actions/runs/{second_run_id}/attempts/1")
    );
    assert_eq!(success["environment_url"], "https://shop.example.com/");
    assert_eq!(second.output("deployment-id"), Some(new["id"].to_string().as_str()));

    let creates = server.requests_to("POST", "/deployments").await;
    assert_eq!(creates.len(), 2);
    for c in &creates {
        let body: Value = serde_json::from_str(c["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["auto_merge"], false, "auto_merge: false is sent explicitly");
    }
    server.assert_no_violations().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_deploy_records_failure_and_sigterm_records_error() {
    let _lock = shared_app_lock();
    let server = GithubServer::start(None).await;
    assert_eq!(run(recorded(&server, "v1")).await.code, Some(0));

    let broken = run(recorded(&server, "broken").input("health-check-timeout", "3s")).await;
    assert_eq!(broken.code, Some(1));
    let d = server.deployments().await;
    let failed = d.last().unwrap();
    assert_eq!(states(failed), ["in_progress", "failure"]);
    let description = failed["statuses"][0]["description"].as_str().unwrap();
    assert!(
        description.contains("health_check_failed") && description.chars().count() <= 140,
        "{description}"
    );
    assert_eq!(live_version(1), "v1");

    // SIGTERM once v2 serves, during the observe window.
    let action = recorded(&server, "v2").input("observe-window", "60s");
    let mut child = action.spawn();
    let t0 = Instant::now();
    while live_version(1) != "v2" {
        assert!(
            t0.elapsed() < Duration::from_secs(60) && child.try_wait().unwrap().is_none(),
            "v2 never switched in"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    let cancelled = action.finish(out);
    assert_eq!(cancelled.output("status"), Some("error"));
    let d = server.deployments().await;
    assert_eq!(states(d.last().unwrap()), ["in_progress", "error"]);
    assert_eq!(live_version(1), "v1");
    server.assert_no_violations().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_redeploys_the_last_good_image_as_a_new_deployment() {
    let _lock = shared_app_lock();
    let server = GithubServer::start(Some("/api/v3")).await;
    for v in ["v1", "v2"] {
        assert_eq!(run(recorded(&server, v)).await.code, Some(0));
    }
    let back = run(recorded(&server, "v2").without("INPUT_IMAGE").input("mode", "rollback")).await;
    assert_eq!(back.code, Some(0), "{}", back.stdout);
    assert_eq!(live_version(1), "v1");
    let d = server.deployments().await;
    assert_eq!(d.len(), 3);
    let last = d.last().unwrap();
    assert_eq!(last["task"], "deploy:rollback");
    assert_eq!(last["payload"]["image"], stack_var("IMAGE_V1"));
    assert_eq!(states(last), ["in_progress", "success"]);
    server.assert_no_violations().await;
}

/// `mode: rollback` without an image and no earlier successful deployment
/// to the environment: its own reason code, not `internal_error`, and no
/// host is contacted.
#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_with_nothing_to_roll_back_to_says_so() {
    let server = GithubServer::start(None).await;
    let unreachable = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = unreachable.local_addr().unwrap();
    let action = recorded(&server, "v1")
        .without("INPUT_IMAGE")
        .input("mode", "rollback")
        .input("environment", "staging")
        .input("hosts", &format!("root@{addr}"));
    let run = run(action).await;
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(
        run.stdout.contains("::error title=deploy-action (nothing_to_roll_back)::")
            && run
                .stdout
                .contains("no earlier successful deployment to environment 'staging' to roll back to"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("internal_error"), "{}", run.stdout);
    unreachable.set_nonblocking(true).unwrap();
    assert!(unreachable.accept().is_err(), "no host was contacted");
    server.assert_no_violations().await;
}
