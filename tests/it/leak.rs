//! The leak test: the built binary deploys with tricky secrets from SSM
//! (moto, real SDK) to a real host and records on the GitHub test server;
//! then every byte the run produced is scanned for every secret and the
//! forms the action could derive from it. Zero hits — on success and on
//! the failure paths where the app's own output comes back: a migration
//! that prints the secrets (stdout and stderr), and a health check whose
//! answer carries one. On those paths the scan also covers every payload
//! the Slack and generic webhooks received (a local receiver).
//!
//! Every run starts from a known host state (the host is reset), so each
//! really deploys: a run that finds its release already live does nothing
//! and would prove nothing.
//!
//! The only place a secret may appear is the `::add-mask::` command itself,
//! which the runner consumes to mask and never shows; those lines are
//! checked to be well-formed and then left out of the scan.

// The shared-app guard serialises whole tests, each on its own runtime.
#![allow(clippy::await_holding_lock)]

use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_ssm::types::ParameterType;
use base64::Engine as _;

use crate::deploy::hosts_action;
use crate::fleet::stack_script;
use crate::support::action::{Action, Run};
use crate::support::github_server::{GithubServer, TOKEN};
use crate::support::notify_receiver::Receiver;
use crate::support::{host_exec, live_version, shared_app_lock, stack_var};

const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\nQ2xlYW4gZmFrZSBrZXkgbWF0ZXJpYWwgZm9yIHRlc3Rz+/==\n-----END PRIVATE KEY-----";

pub(crate) fn secrets() -> Vec<(&'static str, String)> {
    vec![
        ("db/password", "p@ss w0rd/with%25\"quotes\"&amp;=?#".to_string()),
        ("db/url", "postgres://app:s3cr3t-Pa55@db.internal:5432/app?sslmode=require".to_string()),
        ("tls/key", PEM.to_string()),
        (
            "api/credentials",
            r#"{"client_id":"abc-client","client_secret":"json-leaf-s3cret\\with\"escapes"}"#.to_string(),
        ),
        ("unicode", "pässwörd-ключ-密钥-🔑".to_string()),
        ("big", "Z9".repeat(2000)),
        // `%` is what the runner's escaping changes (`%25`); `::` what it parses.
        ("percent/colon", "pa55%w0rd::add-mask::x".to_string()),
        ("pipe/newline", "left|right\nsecond|line-of-it".to_string()),
    ]
}

/// Every form a secret could leak in.
pub(crate) fn forms(value: &str) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let mut f = vec![
        value.to_string(),
        STANDARD.encode(value),
        URL_SAFE_NO_PAD.encode(value),
        url::form_urlencoded::byte_serialize(value.as_bytes()).collect(),
        serde_json::to_string(value).unwrap().trim_matches('"').to_string(),
    ];
    // Each line of a multi-line value, and each JSON string leaf.
    f.extend(value.lines().filter(|l| l.len() >= 8).map(String::from));
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(value) {
        f.extend(map.values().filter_map(|v| v.as_str()).filter(|s| s.len() >= 8).map(String::from));
    }
    f.retain(|x| x.len() >= 8);
    f
}

/// Puts the secrets under a fresh prefix in moto; returns the prefix.
pub(crate) async fn put_secrets() -> (String, aws_sdk_ssm::Client) {
    let nonce = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let prefix = format!("/leak-{nonce}/app/");
    let ssm = aws_sdk_ssm::Client::new(&crate::support::moto_config().await);
    for (name, value) in secrets() {
        ssm.put_parameter()
            .name(format!("{prefix}{name}"))
            .value(&value)
            .r#type(ParameterType::SecureString)
            .send()
            .await
            .unwrap();
    }
    (prefix, ssm)
}

/// A deploy of `image` to host 1 with the secrets and the GitHub record.
fn secret_action(server: &GithubServer, prefix: &str, image: &str) -> Action {
    hosts_action(1, image)
        .input("github-deployments", "true")
        .input("github-token", TOKEN)
        .env("GITHUB_API_URL", &server.base_url)
        .input("ssm-paths", prefix)
        .input("ssm-parameters", &format!("EXTRA_KEY={prefix}tls/key"))
        .moto()
        .env("DEPLOY_ACTION_LOG", "trace")
}

/// Every secret form found in what `run` produced, what GitHub received
/// and what the webhook receiver `rx` got (every request: path, headers,
/// body), as `name: start…` (cut on characters: the values are not ASCII).
/// Empty when nothing leaked.
async fn leaks(run: &Run, server: &GithubServer, rx: Option<&Receiver>) -> Vec<String> {
    let mut produced =
        run.all_text().lines().filter(|l| !l.starts_with("::add-mask::")).collect::<Vec<_>>().join("\n");
    if let Some(rx) = rx {
        produced.push_str(&rx.all_text());
    }
    for r in server.requests().await {
        produced.push_str(r["body"].as_str().unwrap_or_default());
        produced.push_str(&r["query"].to_string());
    }
    let mut hits = Vec::new();
    for (name, value) in secrets() {
        for form in forms(&value) {
            if produced.contains(&form) {
                hits.push(format!("{name}: {}…", form.chars().take(6).collect::<String>()));
            }
        }
    }
    hits
}

/// The descriptions of every deployment status GitHub received.
async fn status_descriptions(server: &GithubServer) -> Vec<String> {
    let mut out = Vec::new();
    for r in server.requests_to("POST", "/statuses").await {
        let body: serde_json::Value =
            serde_json::from_str(r["body"].as_str().unwrap_or("{}")).unwrap_or_default();
        out.push(body["description"].as_str().unwrap_or_default().to_string());
    }
    out
}

/// The migration prints every secret, on stdout and on stderr, and fails;
/// its last lines go into the error, the annotation, the summary and the
/// deployment status. Then a candidate whose health answer carries a
/// secret fails its checks; the answer's start goes into the error.
#[tokio::test(flavor = "multi_thread")]
async fn no_secret_appears_in_any_output_on_the_failure_paths() {
    let _lock = shared_app_lock();
    stack_script("reset-host", &["1"]);
    let (prefix, _ssm) = put_secrets().await;
    let server = GithubServer::start(None).await;
    let first = secret_action(&server, &prefix, &stack_var("IMAGE_V1"));
    let first = tokio::task::spawn_blocking(move || first.run()).await.unwrap();
    assert_eq!(first.code, Some(0), "{}", first.stdout);

    // Both webhooks hear each failing run.
    let rx = Receiver::start();
    let notified = |a: Action| {
        a.input("slack-webhook-url", &rx.url("/slack/T0LEAK/B0LEAK/hosts-leak-token"))
            .input("notify-url", &rx.url("/hook/hosts-leak"))
    };
    let shout = "echo $PERCENT_COLON $DB_PASSWORD $UNICODE; echo \"$PIPE_NEWLINE\"; echo $DB_URL $API_CREDENTIALS >&2; echo \"$TLS_KEY\" >&2; exit 1";
    let migrate = notified(secret_action(&server, &prefix, &stack_var("IMAGE_V2")))
        .input("migrate-command", &serde_json::to_string(&["sh", "-c", shout]).unwrap());
    let migrate = tokio::task::spawn_blocking(move || migrate.run()).await.unwrap();
    assert_eq!(migrate.code, Some(1), "{}", migrate.stdout);
    assert!(migrate.stdout.contains("migration_failed"), "{}", migrate.stdout);
    let hits = leaks(&migrate, &server, Some(&rx)).await;
    assert!(hits.is_empty(), "secrets leaked on the migration path: {hits:?}");
    // The path was exercised: masked output reached the annotation and the
    // status description (cut to 140 characters after redaction).
    let annotation =
        migrate.stdout.lines().find(|l| l.starts_with("::error") && l.contains("migration")).unwrap_or("");
    assert!(annotation.contains("***"), "the migration's output reached the annotation: {annotation}");
    let failed = status_descriptions(&server)
        .await
        .into_iter()
        .filter(|d| d.contains("migration_failed"))
        .collect::<Vec<_>>();
    assert!(!failed.is_empty(), "a failure status was posted");
    assert!(failed.iter().all(|d| d.chars().count() <= 140));
    assert_eq!(live_version(1), "v1");
    // The webhooks heard start and rollback, with the record's id, and the
    // migration's output (masked) reached them.
    assert_eq!(rx.events("/slack"), ["start", "rollback"], "{}", migrate.stdout);
    assert_eq!(rx.events("/hook"), ["start", "rollback"], "{}", migrate.stdout);
    let hooks: Vec<serde_json::Value> = rx.accepted("/hook").iter().map(|d| d.json()).collect();
    let id: u64 = migrate.output("deployment-id").unwrap().parse().unwrap();
    assert!(hooks.iter().all(|h| h["deployment_id"] == id && h["target"] == "hosts"), "{hooks:?}");
    assert_eq!(hooks[1]["reason"], "migration_failed");
    assert!(hooks[1]["message"].as_str().unwrap().contains("***"), "{}", hooks[1]);

    // Health: the candidate answers 500 with a secret in the body.
    let cgi = "mkdir -p /tmp/w/cgi-bin && printf '#!/bin/sh\\necho Status: 500\\necho\\necho db is $PERCENT_COLON and $UNICODE\\n' > /tmp/w/cgi-bin/h && chmod +x /tmp/w/cgi-bin/h && exec httpd -f -p 8080 -h /tmp/w";
    let health = notified(secret_action(&server, &prefix, &stack_var("IMAGE_V2")))
        .input("command", &serde_json::to_string(&["sh", "-c", cgi]).unwrap())
        .input("health-check-path", "/cgi-bin/h")
        .input("health-check-timeout", "3s");
    let health = tokio::task::spawn_blocking(move || health.run()).await.unwrap();
    assert_eq!(health.code, Some(1), "{}", health.stdout);
    assert!(health.stdout.contains("health_check_failed"), "{}", health.stdout);
    let hits = leaks(&health, &server, Some(&rx)).await;
    assert!(hits.is_empty(), "secrets leaked on the health path: {hits:?}");
    assert!(
        health.stdout.contains("HTTP 500: db is *** and ***"),
        "the answer's start is reported, redacted:\n{}",
        health.stdout
    );
    assert_eq!(live_version(1), "v1");
    assert_eq!(rx.events("/hook"), ["start", "rollback", "start", "rollback"], "{}", health.stdout);
    let last = rx.accepted("/hook").last().unwrap().json();
    assert_eq!(last["reason"], "health_check_failed", "{last}");
    assert!(last["message"].as_str().unwrap().contains("db is *** and ***"), "{last}");
    let shown = |r: &Run| {
        r.all_text().lines().filter(|l| !l.starts_with("::add-mask::")).any(|l| l.contains("hosts-leak"))
    };
    assert!(!shown(&migrate) && !shown(&health), "a webhook URL was shown");
    rx.assert_no_violations();

    server.assert_no_violations().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_appears_in_any_output() {
    let _lock = shared_app_lock();
    // From a known state: this run really deploys.
    stack_script("reset-host", &["1"]);
    let (prefix, ssm) = put_secrets().await;
    let server = GithubServer::start(None).await;
    let action = secret_action(&server, &prefix, &stack_var("IMAGE_V1"));
    let run = tokio::task::spawn_blocking(move || action.run()).await.unwrap();
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(live_version(1), "v1");

    // Delivered: the app's environment on the host has every value.
    let env = host_exec(
        1,
        &[
            "sh",
            "-c",
            "docker inspect --format '{{json .Config.Env}}' $(docker ps -q --filter label=deploy-action.app=app)",
        ],
    );
    let env: Vec<String> = serde_json::from_str(env.trim()).expect("container env");
    for (name, value) in secrets() {
        let var = name.to_uppercase().replace('/', "_");
        assert!(env.contains(&format!("{var}={value}")), "{var} not delivered");
    }
    assert!(env.contains(&format!("EXTRA_KEY={PEM}")));
    let names = run.output("secret-names").unwrap();
    assert!(names.contains("DB_PASSWORD") && names.contains("EXTRA_KEY"), "{names}");
    assert_eq!(run.output("secrets-fingerprint").unwrap().len(), 64);
    assert!(run.stdout.contains("container started"), "the run deployed:\n{}", run.stdout);

    // Masks are registered, whole and line by line.
    let masks: Vec<&str> = run.stdout.lines().filter(|l| l.starts_with("::add-mask::")).collect();
    assert!(
        masks.iter().any(|m| m.contains("-----BEGIN PRIVATE KEY-----%0A")),
        "multi-line values are masked whole"
    );
    assert!(masks.contains(&"::add-mask::-----END PRIVATE KEY-----"), "and line by line");

    // The scan: everything but the mask commands themselves.
    let hits = leaks(&run, &server, None).await;
    assert!(hits.is_empty(), "secrets leaked: {hits:?}");
    server.assert_no_violations().await;

    // Same image and secrets again: nothing to do. Rotated: redeployed.
    let again = hosts_action(1, &stack_var("IMAGE_V1"))
        .input("ssm-paths", &prefix)
        .input("ssm-parameters", &format!("EXTRA_KEY={prefix}tls/key"))
        .moto();
    let rerun = tokio::task::spawn_blocking(move || {
        let r = again.run();
        (r, again)
    })
    .await
    .unwrap();
    assert_eq!(rerun.0.code, Some(0), "{}", rerun.0.stdout);
    assert!(rerun.0.stdout.contains("already live on every host: nothing to do"), "{}", rerun.0.stdout);
    ssm.put_parameter()
        .name(format!("{prefix}db/password"))
        .value("rotated-Pa55word")
        .r#type(ParameterType::SecureString)
        .overwrite(true)
        .send()
        .await
        .unwrap();
    let a = rerun.1;
    let rotated = tokio::task::spawn_blocking(move || a.run()).await.unwrap();
    assert_eq!(rotated.code, Some(0), "{}", rotated.stdout);
    assert!(!rotated.stdout.contains("nothing to do"), "rotated secrets redeploy the same image");
    assert!(
        !rotated
            .all_text()
            .lines()
            .filter(|l| !l.starts_with("::add-mask::"))
            .any(|l| l.contains("rotated-Pa55word"))
    );
}
