//! Notifications through the built binary: real deploys on the stack's
//! Kubernetes control plane (a namespace per test) with `slack-webhook-url`
//! and `notify-url` pointed at a local receiver
//! ([`crate::support::notify_receiver`]) that checks each payload's shape and
//! records every delivery. The tests read what arrived: which events, in
//! which order, with which facts — and that nothing secret travelled.

use std::time::Duration;

use serde_json::Value;

use crate::kubernetes::{Ns, assert_status, image_of, put_ssm};
use crate::leak::{forms, put_secrets, secrets};
use crate::support::action::{Action, Run, unique_run_id};
use crate::support::notify_receiver::Receiver;
use crate::support::stack_var;

/// `run`'s log, outputs and summary without the `::add-mask::` commands
/// (the only place a secret may appear: the runner consumes them).
fn shown(run: &Run) -> String {
    run.all_text().lines().filter(|l| !l.starts_with("::add-mask::")).collect::<Vec<_>>().join("\n")
}

/// The generic webhook's accepted bodies under `prefix`, in order.
fn bodies(rx: &Receiver, prefix: &str) -> Vec<Value> {
    rx.accepted(prefix).iter().map(|d| d.json()).collect()
}

/// An address nothing listens on.
fn closed_url(path: &str) -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}{path}", l.local_addr().unwrap())
}

/// A good rollout, recorded on GitHub: both webhooks get `start` (after the
/// record: it carries the deployment id) then `success`, with the image,
/// environment, previous image and links; neither URL shows anywhere.
#[tokio::test(flavor = "multi_thread")]
async fn notify_good_deploy_sends_start_then_success_to_both_webhooks() {
    use crate::support::github_server::{GithubServer, TOKEN};
    let server = GithubServer::start(None).await;
    let rx = Receiver::start();
    let ns = Ns::new("ntf-ok");
    ns.deployment("web", "example.invalid/web:v1", 2, 60);
    let slack_url = rx.url("/slack/T0NOTIFY/B0NOTIFY/slack-path-token");
    let hook_url = rx.url("/hook/generic-path-token");
    let action = ns
        .action("web")
        .input("image", "example.invalid/web:v2")
        .input("environment", "staging")
        .input("github-deployments", "true")
        .input("github-token", TOKEN)
        .env("GITHUB_API_URL", &server.base_url)
        .input("slack-webhook-url", &slack_url)
        .input("notify-url", &hook_url);
    let run_id = action.run_id().to_string();
    let run = tokio::task::spawn_blocking(move || action.run()).await.unwrap();
    assert_status(&run, "success", 0);
    let deployment_id: u64 = run.output("deployment-id").unwrap().parse().unwrap();

    assert_eq!(rx.events("/slack"), ["start", "success"], "{}", run.stdout);
    assert_eq!(rx.events("/hook"), ["start", "success"], "{}", run.stdout);
    let hooks = bodies(&rx, "/hook");
    let run_url = format!("https://github.com/acme/shop-api/actions/runs/{run_id}/attempts/1");
    for (b, event, outcome) in [(&hooks[0], "start", "in_progress"), (&hooks[1], "success", "success")] {
        assert_eq!(b["event"], event, "{b}");
        assert_eq!(b["outcome"], outcome, "{b}");
        assert_eq!(b["environment"], "staging");
        assert_eq!(b["app"], "web");
        assert_eq!(b["image"], "example.invalid/web:v2");
        assert_eq!(b["reason"], Value::Null);
        assert_eq!(b["deployment_id"], deployment_id, "{b}");
        assert_eq!(b["target"], "kubernetes");
        assert_eq!(b["strategy"], "rolling");
        assert_eq!(b["mode"], "deploy");
        assert_eq!(b["run_url"], run_url.as_str());
        assert_eq!(b["summary_url"], run_url.as_str());
    }
    // Before the rollout only GitHub's record is known (none yet); after
    // it, what the Deployment ran.
    assert_eq!(hooks[0]["previous_image"], Value::Null);
    assert_eq!(hooks[1]["previous_image"], "example.invalid/web:v1");
    assert_eq!(hooks[1]["message"], "example.invalid/web:v2 is live");

    let slack: Vec<Value> = rx.accepted("/slack").iter().map(|d| d.json()).collect();
    for s in &slack {
        let text = s["text"].as_str().unwrap();
        assert!(text.contains("web → staging") && text.contains("example.invalid/web:v2"), "{text}");
    }
    assert!(slack[1]["text"].as_str().unwrap().contains(": deployed"), "{}", slack[1]);
    let fields = slack[1]["blocks"][1]["fields"].to_string();
    assert!(
        fields.contains("example.invalid/web:v1") && fields.contains(&deployment_id.to_string()),
        "{fields}"
    );
    assert!(slack[1]["blocks"][2].to_string().contains(&format!("<{run_url}|Job summary>")), "{}", slack[1]);

    // One delivery id per event, the same for both webhooks.
    let ids: Vec<String> =
        rx.accepted("/").iter().map(|d| d.header("x-deploy-action-delivery").unwrap().to_string()).collect();
    for want in [format!("{run_id}-1-start"), format!("{run_id}-1-success")] {
        assert_eq!(ids.iter().filter(|i| **i == want).count(), 2, "{ids:?}");
    }
    // Logged by name and host, never by URL.
    assert!(run.stdout.contains("notification delivered"), "{}", run.stdout);
    assert!(run.stdout.contains("slack webhook") && run.stdout.contains("notify webhook"), "{}", run.stdout);
    let text = shown(&run);
    for secret in [&slack_url, &hook_url, "T0NOTIFY/B0NOTIFY/slack-path-token", "generic-path-token"] {
        assert!(!text.contains(secret), "{secret} shown:\n{text}");
    }
    rx.assert_no_violations();
    server.assert_no_violations().await;
}

/// A rollout whose pods cannot pull their image: `start`, then `rollback`
/// with the reason code and the message; the old version serves.
#[test]
fn notify_bad_deploy_sends_start_then_rollback_with_the_reason() {
    let rx = Receiver::start();
    let ns = Ns::new("ntf-bad");
    // Past the pull grace (20 s), before the progress deadline.
    ns.deployment("web", "example.invalid/web:v1", 2, 60);
    let run = ns
        .action("web")
        .input("image", "example.invalid/web:imagepull")
        .input("slack-webhook-url", &rx.url("/slack/T0/B0/bad-deploy-token"))
        .input("notify-url", &rx.url("/hook"))
        .run();
    assert_status(&run, "failure", 1);
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v1");

    assert_eq!(rx.events("/slack"), ["start", "rollback"], "{}", run.stdout);
    assert_eq!(rx.events("/hook"), ["start", "rollback"], "{}", run.stdout);
    let hooks = bodies(&rx, "/hook");
    let last = &hooks[1];
    assert_eq!(last["outcome"], "failure", "{last}");
    assert_eq!(last["reason"], "pod_failed", "{last}");
    assert_eq!(last["image"], "example.invalid/web:imagepull");
    assert_eq!(last["previous_image"], "example.invalid/web:v1");
    let message = last["message"].as_str().unwrap();
    assert!(message.contains("ImagePullBackOff") || message.contains("ErrImagePull"), "{message}");
    assert!(message.contains("rolled back: example.invalid/web:v1 serves"), "{message}");
    assert_eq!(hooks[0]["reason"], Value::Null);

    let slack = rx.accepted("/slack")[1].json();
    let text = slack["text"].as_str().unwrap();
    assert!(text.contains("rolled back (pod_failed)") && text.contains("web → production"), "{text}");
    let section = slack["blocks"][0]["text"]["text"].as_str().unwrap();
    assert!(section.contains("rolled back") && section.contains("\n> "), "{section}");
    assert!(slack["blocks"][1]["fields"].to_string().contains("`pod_failed`"), "{slack}");
    rx.assert_no_violations();
}

/// A receiver answering 500 at first gets the same delivery again and
/// takes it; one that is down costs warnings only: the deploy succeeds,
/// exit 0, and the other webhook is told as usual. Then a `mode: rollback`.
#[test]
fn notify_retries_after_500_and_a_receiver_that_is_down_only_warns() {
    let rx = Receiver::start().fail_first(2);
    let ns = Ns::new("ntf-retry");
    ns.deployment("web", "example.invalid/web:v1", 2, 60);
    let run = ns
        .action("web")
        .input("image", "example.invalid/web:v2")
        .input("slack-webhook-url", &rx.url("/slack/T0/B0/retry-token"))
        .input("notify-url", &rx.url("/hook"))
        .run();
    assert_status(&run, "success", 0);
    let all = rx.deliveries();
    for prefix in ["/slack", "/hook"] {
        let mine: Vec<_> = all.iter().filter(|d| d.path.starts_with(prefix)).collect();
        let statuses: Vec<u16> = mine.iter().map(|d| d.status).collect();
        assert_eq!(statuses, [500, 200, 200], "{prefix}: {mine:?}");
        let id = |i: usize| mine[i].header("x-deploy-action-delivery").unwrap().to_string();
        assert_eq!(id(0), id(1), "a retry is the same delivery");
        assert_ne!(id(1), id(2));
        assert_eq!(rx.events(prefix), ["start", "success"]);
    }
    assert!(!run.stdout.contains("notify_failed"), "{}", run.stdout);
    rx.assert_no_violations();

    // Slack is down; the generic webhook still hears everything.
    let rx = Receiver::start();
    let down = closed_url("/slack/T0DOWN/B0DOWN/down-path-token");
    let run = ns
        .action("web")
        .input("image", "example.invalid/web:v3")
        .input("slack-webhook-url", &down)
        .input("notify-url", &rx.url("/hook"))
        .run();
    assert_status(&run, "success", 0);
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v3");
    assert_eq!(rx.events("/hook"), ["start", "success"]);
    let warnings: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("::warning title=deploy-action (notify_failed)::"))
        .collect();
    assert_eq!(warnings.len(), 2, "one per event:\n{}", run.stdout);
    for (w, event) in warnings.iter().zip(["start", "success"]) {
        assert!(
            w.contains(&format!("slack webhook (127.0.0.1): the {event} notification was not delivered after 3 attempt(s): no connection")),
            "{w}"
        );
    }
    assert!(!shown(&run).contains("down-path-token"), "{}", run.stdout);
    rx.assert_no_violations();

    // `mode: rollback` on a cluster: the image is unknown until the undo
    // is done, then it is the one restored.
    let rx = Receiver::start();
    let run = ns.action("web").input("mode", "rollback").input("notify-url", &rx.url("/hook")).run();
    assert_status(&run, "success", 0);
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v2");
    let hooks = bodies(&rx, "/hook");
    assert_eq!(rx.events("/hook"), ["start", "success"]);
    assert_eq!(
        (&hooks[0]["image"], &hooks[0]["mode"]),
        (&Value::Null, &Value::from("rollback")),
        "{}",
        hooks[0]
    );
    assert_eq!(hooks[0]["message"], "rolling back to the previous revision");
    assert_eq!(hooks[1]["image"], "example.invalid/web:v2", "{}", hooks[1]);
    assert_eq!(hooks[1]["message"], "rolled back to example.invalid/web:v2");
    rx.assert_no_violations();
}

/// The leak scan over every payload: the app's SSM secrets (the tricky set
/// of the leak test) are printed by a failing migration whose last lines
/// the error quotes, and both webhook URLs come from SSM. No form of any
/// secret reaches a payload (nor the log), the migration's output does
/// arrive (masked), and neither URL shows anywhere.
#[tokio::test(flavor = "multi_thread")]
async fn notify_payloads_never_carry_a_secret() {
    let (prefix, ssm) = put_secrets().await;
    let rx = Receiver::start();
    let ns = Ns::new("ntf-leak");
    ns.deployment("web", "example.invalid/web:v1", 2, 60);
    let urls = format!("/ntf-leak-{}/", unique_run_id());
    let slack_url = rx.url("/slack/T0LEAK/B0LEAK/leak-slack-path-token");
    let hook_url = rx.url("/hook/leak-generic-path-token");
    put_ssm(&ssm, &urls, &[("slack", &slack_url), ("hook", &hook_url)]).await;

    // The migration's pod prints every secret (kwok serves this as its log).
    let mut lines: String = secrets().iter().map(|(_, v)| format!("{v}\n")).collect();
    lines.push_str("ERROR: relation \"orders\" already exists\n");
    ns.pod_logs(&lines);

    let action = ns
        .action("web:app")
        .moto()
        .input("ssm-paths", &prefix)
        .input("migrate-command", r#"["./manage", "migrate"]"#)
        .input("image", "example.invalid/web:fail")
        .input("slack-webhook-url-ssm", &format!("{urls}slack"))
        .input("notify-url-ssm", &format!("{urls}hook"));
    let run = tokio::task::spawn_blocking(move || action.run()).await.unwrap();
    assert_status(&run, "failure", 1);
    assert!(run.stdout.contains("migration_failed"), "{}", run.stdout);

    assert_eq!(rx.events("/slack"), ["start", "rollback"], "{}", run.stdout);
    assert_eq!(rx.events("/hook"), ["start", "rollback"], "{}", run.stdout);
    // The path was exercised: the migration's last lines reached both
    // payloads, masked.
    let last = &bodies(&rx, "/hook")[1];
    assert_eq!(last["reason"], "migration_failed", "{last}");
    let message = last["message"].as_str().unwrap();
    assert!(
        message.contains("ERROR: relation \"orders\" already exists") && message.contains("***"),
        "{message}"
    );
    let section = rx.accepted("/slack")[1].json()["blocks"][0]["text"]["text"].as_str().unwrap().to_string();
    assert!(section.contains("already exists") && section.contains("***"), "{section}");

    let payloads = rx.all_text();
    let text = shown(&run);
    let mut hits = Vec::new();
    for (name, value) in secrets() {
        for form in forms(&value) {
            if payloads.contains(&form) {
                hits.push(format!("payload: {name}: {}…", form.chars().take(6).collect::<String>()));
            }
            if text.contains(&form) {
                hits.push(format!("log: {name}: {}…", form.chars().take(6).collect::<String>()));
            }
        }
    }
    assert!(hits.is_empty(), "secrets leaked: {hits:?}");
    let bodies: String = rx.deliveries().iter().map(|d| d.body.clone()).collect();
    for secret in [&slack_url, &hook_url, "leak-slack-path-token", "leak-generic-path-token"] {
        assert!(!text.contains(secret), "{secret} shown in the log, summary or outputs");
        assert!(!bodies.contains(secret), "{secret} in a payload");
    }
    rx.assert_no_violations();
}

/// A URL that is not http(s) is named with its input, with every other
/// problem, before anything is contacted — inline (exit 2) or read from
/// SSM (right after the fetch, before the record); its value is never shown.
#[tokio::test(flavor = "multi_thread")]
async fn notify_bad_urls_are_refused_before_anything_is_contacted() {
    // Stands in for GitHub and for both webhooks: any request is a contact.
    let rx = Receiver::start();
    let kubeconfig = std::fs::read_to_string(stack_var("K8S_KUBECONFIG")).unwrap();
    let base = || {
        Action::new()
            .env("GITHUB_API_URL", &rx.url(""))
            .input("target", "kubernetes")
            .input("kubeconfig", &kubeconfig)
            .input("namespace", "default")
            .input("deployments", "web")
            .input("image", "example.invalid/web:v2")
            .input("github-token", "t0ken-value")
    };
    let run = base()
        .input("slack-webhook-url", "hooks.slack.com/services/T0/B0/not-a-url-token")
        .input("notify-url", "ftp://example.com/ftp-url-token")
        .run();
    assert_eq!(run.code, Some(2), "{}", run.stdout);
    assert!(run.stdout.contains("2 input problem(s)"), "{}", run.stdout);
    for input in ["'slack-webhook-url'", "'notify-url'"] {
        assert!(
            run.stdout.contains(&format!("input {input}: must be an http:// or https:// URL")),
            "{input}:\n{}",
            run.stdout
        );
    }
    assert!(!run.all_text().contains("not-a-url-token") && !run.all_text().contains("ftp-url-token"));
    let both = base()
        .input("notify-url", &rx.url("/hook"))
        .input("notify-url-ssm", "/x/hook")
        .input("aws-region", "us-east-1")
        .run();
    assert_eq!(both.code, Some(2), "{}", both.stdout);
    assert!(both.stdout.contains("set either 'notify-url' or 'notify-url-ssm', not both"), "{}", both.stdout);

    let ssm = aws_sdk_ssm::Client::new(&crate::support::moto_config().await);
    let prefix = format!("/ntf-bad-{}/", unique_run_id());
    put_ssm(
        &ssm,
        &prefix,
        &[("slack", "not a url slack-bad-token"), ("hook", "mailto:ops@example.com?hook-bad-token")],
    )
    .await;
    let action = base()
        .moto()
        .input("slack-webhook-url-ssm", &format!("{prefix}slack"))
        .input("notify-url-ssm", &format!("{prefix}hook"));
    let run = tokio::task::spawn_blocking(move || action.run()).await.unwrap();
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(run.stdout.contains("(invalid_input)"), "{}", run.stdout);
    for input in ["'slack-webhook-url-ssm'", "'notify-url-ssm'"] {
        assert!(run.stdout.contains(&format!("input {input}")), "{input}:\n{}", run.stdout);
    }
    let text = shown(&run);
    assert!(!text.contains("slack-bad-token") && !text.contains("hook-bad-token"), "{text}");
    assert!(rx.deliveries().is_empty(), "contacted: {:?}", rx.deliveries());
}

/// SIGTERM mid-rollout: the rollback and the final notification (one
/// short try) fit the runner's 7 s, even with a receiver that never
/// answers; the other webhook hears `rollback` with reason `cancelled`.
#[test]
fn notify_after_sigterm_the_final_event_is_sent_within_7s() {
    let (stalled, rx) = (Receiver::start().stalled(), Receiver::start());
    let ns = Ns::new("ntf-term");
    ns.deployment("web", "example.invalid/web:v1", 2, 120);
    let action = ns
        .action("web")
        .input("image", "example.invalid/web:never-ready")
        .input("slack-webhook-url", &stalled.url("/slack/T0/B0/stalled-token"))
        .input("notify-url", &rx.url("/hook"));
    let run = ns.sigterm_mid_rollout(&action, "web", Duration::from_secs(2));
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v1");

    assert_eq!(rx.events("/hook"), ["start", "rollback"], "{}", run.stdout);
    let last = &bodies(&rx, "/hook")[1];
    assert_eq!(
        (&last["outcome"], &last["reason"]),
        (&Value::from("error"), &Value::from("cancelled")),
        "{last}"
    );
    // The stalled one was tried (the start, then the final) and warned about.
    assert!(stalled.deliveries().len() >= 2, "{:?}", stalled.deliveries());
    assert!(
        run.stdout
            .lines()
            .any(|l| l.contains("(notify_failed)::slack webhook (127.0.0.1): the rollback notification")),
        "{}",
        run.stdout
    );
    rx.assert_no_violations();
}
