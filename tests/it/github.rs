//! `github::Deployments` against the GitHub API test server: the lifecycle,
//! every non-201 answer, retries, the GitHub Enterprise prefix, the deploy
//! lock across runs, and reading the history back. Each test has its own
//! server and ends with no spec violations.

use std::time::{Duration, Instant};

use deploy_action::github::{DeployPayload, Deployments, FinalState, GithubError, Task};
use deploy_action::inputs::{Context, GithubSpec};
use deploy_action::secrets::SecretValue;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::Log;
use crate::support::github_server::{GithubServer, TOKEN};

const RUN_ID: &str = "4242";
const OTHER_RUN: &str = "https://github.com/octo/app/actions/runs/1111/attempts/1";

fn run_url() -> String {
    format!("https://github.com/octo/app/actions/runs/{RUN_ID}/attempts/1")
}

fn spec() -> GithubSpec {
    GithubSpec {
        enabled: true,
        token: Some(SecretValue::new(TOKEN.into())),
        deployment_id: None,
        git_ref: "main".into(),
        required_contexts: None,
        production_environment: None,
        transient_environment: false,
        deactivate_previous: true,
        lock_timeout: Duration::from_secs(5),
        fail_on_status_error: false,
    }
}

fn context(api_url: &str) -> Context {
    Context {
        owner: "octo".into(),
        repo: "app".into(),
        sha: "0123456789abcdef0123456789abcdef01234567".into(),
        git_ref: Some("refs/heads/main".into()),
        run_id: RUN_ID.into(),
        run_attempt: "1".into(),
        server_url: "https://github.com".into(),
        api_url: api_url.into(),
        event_name: Some("push".into()),
        actor: Some("octocat".into()),
        workspace: ".".into(),
    }
}

fn payload(image: &str) -> DeployPayload {
    DeployPayload {
        image: image.into(),
        previous_image: None,
        strategy: "rolling".into(),
        target: "hosts".into(),
        run_url: run_url(),
        secrets_fingerprint: None,
    }
}

struct Setup {
    server: GithubServer,
    log: Log,
}

impl Setup {
    async fn new(prefix: Option<&str>) -> Self {
        Self { server: GithubServer::start(prefix).await, log: Log::default() }
    }

    fn deployments(&self, spec: GithubSpec) -> Deployments {
        let runner = self.log.runner();
        let url = url::Url::parse("https://app.example/").unwrap();
        Deployments::new(&spec, &context(&self.server.base_url), "production", Some(&url), runner).unwrap()
    }

    /// No violations, and the token nowhere but in `Authorization`.
    async fn check(&self) {
        self.server.assert_no_violations().await;
        for r in self.server.requests().await {
            let auth = r["headers"]["Authorization"].as_str().or(r["headers"]["authorization"].as_str());
            assert_eq!(auth, Some(format!("Bearer {TOKEN}").as_str()), "{r}");
            let mut rest = r.clone();
            rest["headers"].as_object_mut().unwrap().retain(|k, _| !k.eq_ignore_ascii_case("authorization"));
            assert!(!rest.to_string().contains(TOKEN), "token leaked in {rest}");
        }
        assert!(!self.log.text().contains(TOKEN), "token in the log:\n{}", self.log.text());
    }
}

/// Seeds a deployment to production; answers its id.
async fn seed_one(server: &GithubServer, item: Value) -> u64 {
    let mut item = item;
    item["owner"] = json!("octo");
    item["repo"] = json!("app");
    let out = server.seed(json!({"deployments": [item]})).await;
    out["deployments"][0]["id"].as_u64().unwrap()
}

fn states(d: &Value) -> Vec<String> {
    d["statuses"].as_array().unwrap().iter().map(|s| s["state"].as_str().unwrap().to_string()).collect()
}

fn by_id(all: &[Value], id: u64) -> Value {
    all.iter().find(|d| d["id"].as_u64() == Some(id)).cloned().unwrap_or_else(|| panic!("no deployment {id}"))
}

#[tokio::test]
async fn a_deploy_is_recorded_from_in_progress_to_success_and_replaces_the_previous_one() {
    let s = Setup::new(None).await;
    let previous = seed_one(
        &s.server,
        json!({"payload": {"image": "app:v1"}, "production_environment": true, "created_at": "2024-01-01T00:00:00Z",
               "statuses": [{"state": "in_progress"}, {"state": "success"}]}),
    )
    .await;
    // What GitHub creates for a job with `environment:`: no run_url, in
    // progress while our job runs. It must not block us.
    let job_env = seed_one(&s.server, json!({"payload": {}, "statuses": [{"state": "in_progress"}]})).await;

    let d = s.deployments(spec());
    assert_eq!(d.live_image().await.unwrap().as_deref(), Some("app:v1"));
    let mut p = payload("app:v2");
    p.previous_image = Some("app:v1".into());
    // Not waited for: no `queued` below.
    let record = d.begin(&p, Task::Deploy, &CancellationToken::new()).await.unwrap();
    d.finish(&record, FinalState::Success, "deploy: rolling to 3 hosts, healthy").await.unwrap();

    let all = s.server.deployments().await;
    assert_eq!(all.len(), 3);
    let ours = by_id(&all, record.id);
    assert!(record.url.ends_with(&format!("/repos/octo/app/deployments/{}", record.id)), "{}", record.url);
    assert_eq!(ours["ref"], "main");
    assert_eq!(ours["environment"], "production");
    assert_eq!(ours["task"], "deploy");
    assert_eq!(ours["auto_merge"], false);
    assert_eq!(ours["payload"]["image"], "app:v2");
    assert_eq!(ours["payload"]["previous_image"], "app:v1");
    assert_eq!(ours["payload"]["strategy"], "rolling");
    assert_eq!(ours["payload"]["target"], "hosts");
    assert_eq!(ours["payload"]["run_url"], run_url().as_str());
    assert_eq!(states(&ours), ["success", "in_progress"]);
    for status in ours["statuses"].as_array().unwrap() {
        assert_eq!(status["log_url"], run_url().as_str());
        assert_eq!(status["environment_url"], "https://app.example/");
    }
    assert_eq!(ours["statuses"][0]["description"], "deploy: rolling to 3 hosts, healthy");
    // Production: GitHub's auto_inactive does not cover it, we did.
    assert_eq!(by_id(&all, previous)["latest_state"], "inactive");
    assert_eq!(by_id(&all, job_env)["latest_state"], "in_progress");

    // auto_merge: false is sent explicitly, required_contexts omitted.
    let creates = s.server.requests_to("POST", "/repos/octo/app/deployments").await;
    assert_eq!(creates.len(), 1);
    let body: Value = serde_json::from_str(creates[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["auto_merge"], false);
    assert!(body.get("required_contexts").is_none(), "{body}");
    assert_eq!(d.live_image().await.unwrap().as_deref(), Some("app:v2"));
    assert_eq!(d.last_good_image().await.unwrap().as_deref(), Some("app:v1"));
    s.check().await;
}

#[tokio::test]
async fn a_failed_deploy_is_recorded_as_failure_and_keeps_the_previous_one_active() {
    let s = Setup::new(None).await;
    let previous = seed_one(
        &s.server,
        json!({"payload": {"image": "app:v1"}, "created_at": "2024-01-01T00:00:00Z", "statuses": [{"state": "success"}]}),
    )
    .await;
    let d = s.deployments(spec());
    let record = d.begin(&payload("app:v2"), Task::Deploy, &CancellationToken::new()).await.unwrap();
    let long = format!("health: {} never became healthy — kept app:v1", "höst-ä,".repeat(40));
    d.finish(&record, FinalState::Failure, &long).await.unwrap();

    let all = s.server.deployments().await;
    let ours = by_id(&all, record.id);
    assert_eq!(states(&ours), ["failure", "in_progress"]);
    let description = ours["statuses"][0]["description"].as_str().unwrap();
    assert!(description.chars().count() <= 140 && description.starts_with("health: "), "{description}");
    assert_eq!(by_id(&all, previous)["latest_state"], "success");

    let record = d.begin(&payload("app:v3"), Task::Deploy, &CancellationToken::new()).await.unwrap();
    d.finish(&record, FinalState::Error, "cancelled by the runner").await.unwrap();
    assert_eq!(states(&by_id(&s.server.deployments().await, record.id)), ["error", "in_progress"]);
    s.check().await;
}

#[tokio::test]
async fn each_answer_that_is_not_201_gives_its_message() {
    let s = Setup::new(None).await;
    let d = s.deployments(spec());
    let cases: &[(Value, &str, &[&str])] = &[
        (
            json!({"status": 202}),
            "github_merge_happened",
            &["merged the default branch into main", "nothing was deployed"],
        ),
        (json!({"status": 409}), "github_merge_conflict", &["could not merge the default branch into main"]),
        (
            json!({"status": 409, "kind": "status_checks"}),
            "github_status_checks_failed",
            &["required-contexts", "ci/test: failure"],
        ),
        (json!({"status": 422}), "github_validation_failed", &["field 'environment'"]),
        (
            json!({"status": 403}),
            "github_permission_denied",
            &["permissions: deployments: write", "Resource not accessible by integration"],
        ),
        (json!({"status": 401}), "github_bad_credentials", &["github-token"]),
        (json!({"status": 404}), "github_not_found", &["repository octo/app not found"]),
    ];
    for (fault, reason, words) in cases {
        let mut fault = fault.clone();
        fault["method"] = json!("POST");
        fault["path"] = json!("/deployments$");
        s.server.fault(fault.clone()).await;
        let e = d.begin(&payload("app:v2"), Task::Deploy, &CancellationToken::new()).await.unwrap_err();
        let message = e.to_string();
        assert_eq!(e.reason(), *reason, "{fault}: {message}");
        for w in *words {
            assert!(message.contains(w), "{fault}: {message} lacks {w}");
        }
        assert!(!message.contains(TOKEN));
    }
    assert!(s.server.deployments().await.is_empty());

    // The real thing, not faults: a failing check, a missing ref, a wrong
    // token, a missing repository.
    s.server
        .seed(json!({"refs": {"main": {"statuses": [{"context": "ci/lint", "state": "failure"}]}, "gone": {"missing": true}}}))
        .await;
    let e = d.begin(&payload("app:v2"), Task::Deploy, &CancellationToken::new()).await.unwrap_err();
    assert!(
        matches!(e, GithubError::StatusChecksFailed { .. }) && e.to_string().contains("ci/lint: failure"),
        "{e}"
    );
    // An empty required-contexts skips the check.
    let skip = s.deployments(GithubSpec { required_contexts: Some(vec![]), ..spec() });
    let record = skip.begin(&payload("app:v2"), Task::Deploy, &CancellationToken::new()).await.unwrap();
    skip.finish(&record, FinalState::Success, "ok").await.unwrap();
    let e = s
        .deployments(GithubSpec { git_ref: "gone".into(), ..spec() })
        .begin(&payload("app:v2"), Task::Deploy, &CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "github_validation_failed");
    assert!(e.to_string().contains("field 'ref'"), "{e}");
    s.check().await;

    let wrong = s.deployments(GithubSpec { token: Some(SecretValue::new("not-the-token".into())), ..spec() });
    let e = wrong.begin(&payload("app:v2"), Task::Deploy, &CancellationToken::new()).await.unwrap_err();
    assert_eq!(e.reason(), "github_bad_credentials");
    assert!(!e.to_string().contains("not-the-token"));
    let runner = s.log.runner();
    let mut ctx = context(&s.server.base_url);
    ctx.repo = "missing".into();
    let e = Deployments::new(&spec(), &ctx, "production", None, runner)
        .unwrap()
        .begin(&payload("app:v2"), Task::Deploy, &CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "github_not_found");
    assert!(e.to_string().contains("octo/missing"), "{e}");
    s.server.assert_no_violations().await;
}

#[tokio::test]
async fn retry_after_is_waited_and_not_hammered() {
    let s = Setup::new(None).await;
    let d = s.deployments(spec());
    s.server
        .fault(
            json!({"method": "POST", "path": "/deployments$", "status": 403, "kind": "secondary_rate_limit",
                      "headers": {"retry-after": "2"}}),
        )
        .await;
    let started = Instant::now();
    let record = d.begin(&payload("app:v2"), Task::Deploy, &CancellationToken::new()).await.unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(2), "{waited:?}");
    assert!(waited < Duration::from_secs(8), "{waited:?}");
    let creates = s.server.requests_to("POST", "/deployments").await;
    assert_eq!(creates.len(), 2);
    let gap = creates[1]["time"].as_f64().unwrap() - creates[0]["time"].as_f64().unwrap();
    assert!(gap >= 2.0, "retried after {gap}s");

    // The primary limit: x-ratelimit-remaining 0 until x-ratelimit-reset.
    s.server
        .fault(json!({"method": "POST", "path": "/statuses$", "status": 403, "kind": "rate_limit",
                      "headers": {"x-ratelimit-reset": (chrono::Utc::now().timestamp() + 2).to_string()}}))
        .await;
    let started = Instant::now();
    d.finish(&record, FinalState::Success, "ok").await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1), "{:?}", started.elapsed());

    // 5xx: backoff, then it goes through, without a second deployment.
    s.server.fault(json!({"method": "POST", "path": "/deployments$", "status": 502, "times": 2})).await;
    let record = d.begin(&payload("app:v3"), Task::Deploy, &CancellationToken::new()).await.unwrap();
    assert_eq!(s.server.requests_to("POST", "/deployments").await.len(), 5);
    assert_eq!(s.server.deployments().await.len(), 2);
    d.finish(&record, FinalState::Success, "ok").await.unwrap();
    s.check().await;
}

#[tokio::test]
async fn retries_stay_inside_the_budget() {
    let s = Setup::new(None).await;
    let d = s.deployments(spec()).with_retry_budget(Duration::from_secs(3));
    // A wait longer than the budget is not started.
    s.server
        .fault(json!({"method": "POST", "path": "/deployments$", "status": 429, "headers": {"retry-after": "30"}}))
        .await;
    let started = Instant::now();
    let e = d.begin(&payload("app:v2"), Task::Deploy, &CancellationToken::new()).await.unwrap_err();
    assert_eq!(e.reason(), "github_rate_limited", "{e}");
    assert!(e.to_string().contains("30s"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());

    s.server.fault(json!({"method": "POST", "path": "/deployments$", "status": 503, "times": null})).await;
    let started = Instant::now();
    let e = d.begin(&payload("app:v2"), Task::Deploy, &CancellationToken::new()).await.unwrap_err();
    assert_eq!(e.reason(), "github_unavailable", "{e}");
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    let tries = s.server.requests_to("POST", "/deployments").await.len();
    assert!((3..=8).contains(&tries), "{tries} attempts");

    // Cancelled while waiting: returns at once.
    s.server.clear_faults().await;
    s.server
        .fault(json!({"method": "POST", "path": "/deployments$", "status": 429, "headers": {"retry-after": "2"}}))
        .await;
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.cancel();
    });
    let started = Instant::now();
    let e = d.begin(&payload("app:v2"), Task::Deploy, &cancel).await.unwrap_err();
    assert_eq!(e.reason(), "cancelled");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    s.check().await;
}

#[tokio::test]
async fn a_github_enterprise_prefix_works_unchanged() {
    let s = Setup::new(Some("/api/v3")).await;
    assert!(s.server.base_url.ends_with("/api/v3"));
    seed_one(&s.server, json!({"payload": {"image": "app:v1"}, "created_at": "2024-01-01T00:00:00Z", "statuses": [{"state": "success"}]}))
        .await;
    let d = s.deployments(spec());
    assert_eq!(d.live_image().await.unwrap().as_deref(), Some("app:v1"));
    let record = d.begin(&payload("app:v2"), Task::Deploy, &CancellationToken::new()).await.unwrap();
    assert!(record.url.contains("/api/v3/repos/octo/app/deployments/"), "{}", record.url);
    d.finish(&record, FinalState::Success, "ok").await.unwrap();
    let requests = s.server.requests().await;
    assert!(requests.len() >= 4);
    for r in &requests {
        assert!(r["path"].as_str().unwrap().starts_with("/api/v3/repos/octo/app/"), "{r}");
    }
    assert_eq!(states(&by_id(&s.server.deployments().await, record.id)), ["success", "in_progress"]);
    s.check().await;
}

#[tokio::test]
async fn another_run_in_progress_is_waited_for_then_named() {
    let s = Setup::new(None).await;
    let other = seed_one(
        &s.server,
        json!({"payload": {"image": "app:v1", "run_url": OTHER_RUN}, "statuses": [{"state": "in_progress"}]}),
    )
    .await;
    let d = s.deployments(GithubSpec { lock_timeout: Duration::from_secs(2), ..spec() });
    let started = Instant::now();
    let e = d.begin(&payload("app:v2"), Task::Deploy, &CancellationToken::new()).await.unwrap_err();
    assert!(started.elapsed() >= Duration::from_secs(2), "{:?}", started.elapsed());
    assert_eq!(e.reason(), "github_locked_by_other_run");
    let message = e.to_string();
    assert!(message.contains(OTHER_RUN) && message.contains(&other.to_string()), "{message}");
    assert!(message.contains("lock-timeout"), "{message}");
    // Ours was queued, then given up with `error` (so it holds no lock).
    let all = s.server.deployments().await;
    let ours = all.iter().find(|d| d["id"].as_u64() != Some(other)).unwrap();
    assert_eq!(states(ours), ["error", "queued"]);
    assert!(s.log.text().contains(OTHER_RUN), "{}", s.log.text());

    // lock-timeout 0: fails at once.
    let d0 = s.deployments(GithubSpec { lock_timeout: Duration::ZERO, ..spec() });
    let started = Instant::now();
    let e = d0.begin(&payload("app:v2"), Task::Deploy, &CancellationToken::new()).await.unwrap_err();
    assert_eq!(e.reason(), "github_locked_by_other_run");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());

    // Cancelled while waiting: `error` too, at once.
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(800)).await;
        c.cancel();
    });
    let long = s.deployments(GithubSpec { lock_timeout: Duration::from_secs(60), ..spec() });
    let started = Instant::now();
    let e = long.begin(&payload("app:v2"), Task::Deploy, &cancel).await.unwrap_err();
    assert_eq!(e.reason(), "cancelled");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    let last = s.server.deployments().await.last().cloned().unwrap();
    assert_eq!(states(&last), ["error", "queued"]);
    s.check().await;
}

/// A deployment left `in_progress` by a run that died (the runner VM lost
/// mid-deploy) held the environment until it was 6 hours old. Now GitHub
/// is asked about its run: while the run goes on, or when GitHub will not
/// say (no `actions: read`: 404), the lock stands and the wait says why;
/// once the run has ended, the deployment is marked `error`, named in a
/// warning, and the deploy goes on at once.
#[tokio::test]
async fn a_deployment_whose_run_has_ended_no_longer_holds_the_environment() {
    let s = Setup::new(None).await;
    let dead = seed_one(
        &s.server,
        json!({"payload": {"image": "app:v1", "run_url": OTHER_RUN}, "statuses": [{"state": "in_progress"}]}),
    )
    .await;
    let d = s.deployments(GithubSpec { lock_timeout: Duration::from_secs(2), ..spec() });
    let (v2, cancel) = (payload("app:v2"), CancellationToken::new());
    let begin = || d.begin(&v2, Task::Deploy, &cancel);

    let e = begin().await.unwrap_err();
    assert_eq!(e.reason(), "github_locked_by_other_run", "a run GitHub does not show is not taken over");
    assert!(s.log.text().contains("permissions: actions: read"), "the wait says why:\n{}", s.log.text());

    s.server.set_run(1111, "in_progress", None).await;
    let e = begin().await.unwrap_err();
    assert_eq!(e.reason(), "github_locked_by_other_run", "a run still going holds its lock");
    assert_eq!(by_id(&s.server.deployments().await, dead)["latest_state"], "in_progress");

    s.server.set_run(1111, "completed", Some("failure")).await;
    let started = Instant::now();
    let record = begin().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "not waited for: {:?}", started.elapsed());
    let left = by_id(&s.server.deployments().await, dead);
    assert_eq!(states(&left), ["error", "in_progress"]);
    let why = left["statuses"][0]["description"].as_str().unwrap();
    assert!(why.contains("abandoned") && why.contains(&record.id.to_string()), "{why}");
    let log = s.log.text();
    assert!(
        log.contains("deployment_abandoned") && log.contains(OTHER_RUN) && log.contains("(failure)"),
        "{log}"
    );
    d.finish(&record, FinalState::Success, "ok").await.unwrap();
    s.check().await;
}

#[tokio::test]
async fn the_lock_is_taken_when_the_other_run_finishes() {
    let s = Setup::new(None).await;
    let other = seed_one(
        &s.server,
        json!({"payload": {"image": "app:v1", "run_url": OTHER_RUN}, "statuses": [{"state": "queued"}]}),
    )
    .await;
    let server_url = s.server.base_url.clone();
    let finisher = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let resp = reqwest::Client::new()
            .post(format!("{server_url}/repos/octo/app/deployments/{other}/statuses"))
            .bearer_auth(TOKEN)
            .json(&json!({"state": "success"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
    });
    let d = s.deployments(GithubSpec { lock_timeout: Duration::from_secs(20), ..spec() });
    let started = Instant::now();
    let record = d.begin(&payload("app:v2"), Task::Deploy, &CancellationToken::new()).await.unwrap();
    let waited = started.elapsed();
    finisher.await.unwrap();
    assert!(waited >= Duration::from_millis(1500) && waited < Duration::from_secs(8), "{waited:?}");
    assert_eq!(states(&by_id(&s.server.deployments().await, record.id)), ["in_progress", "queued"]);
    d.finish(&record, FinalState::Success, "ok").await.unwrap();
    assert_eq!(by_id(&s.server.deployments().await, other)["latest_state"], "inactive");

    // An earlier attempt of our own run does not hold the lock.
    let attempt1 = run_url();
    seed_one(
        &s.server,
        json!({"payload": {"image": "app:v3", "run_url": attempt1}, "statuses": [{"state": "in_progress"}]}),
    )
    .await;
    let mut ctx = context(&s.server.base_url);
    ctx.run_attempt = "2".into();
    let runner = s.log.runner();
    let retry = Deployments::new(&spec(), &ctx, "production", None, runner).unwrap();
    let started = Instant::now();
    let record = retry.begin(&payload("app:v3"), Task::Deploy, &CancellationToken::new()).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    retry.finish(&record, FinalState::Success, "ok").await.unwrap();
    s.check().await;
}

#[tokio::test]
async fn rollback_finds_the_last_good_image_before_the_live_one() {
    let s = Setup::new(None).await;
    for (i, (image, statuses)) in [
        ("app:v1", json!([{"state": "success"}, {"state": "inactive"}])),
        ("app:v2", json!([{"state": "in_progress"}, {"state": "inactive"}])),
        ("app:v3", json!([{"state": "success"}, {"state": "inactive"}])),
        ("app:v4", json!([{"state": "success"}])),
        ("app:v5", json!([{"state": "in_progress"}, {"state": "failure"}])),
    ]
    .into_iter()
    .enumerate()
    {
        let created = format!("2024-01-0{}T00:00:00Z", i + 1);
        seed_one(
            &s.server,
            json!({"payload": {"image": image}, "created_at": created, "statuses": statuses}),
        )
        .await;
    }
    // Another environment is not looked at.
    seed_one(
        &s.server,
        json!({"environment": "staging", "payload": {"image": "app:v9"}, "statuses": [{"state": "success"}]}),
    )
    .await;
    let d = s.deployments(spec());
    assert_eq!(d.live_image().await.unwrap().as_deref(), Some("app:v4"));
    assert_eq!(d.last_good_image().await.unwrap().as_deref(), Some("app:v3"));

    // Rolling back records a new deployment with task deploy:rollback.
    let mut p = payload("app:v3");
    p.previous_image = Some("app:v4".into());
    let record = d.begin(&p, Task::Rollback, &CancellationToken::new()).await.unwrap();
    d.finish(&record, FinalState::Success, "rollback: app:v3 healthy").await.unwrap();
    let ours = by_id(&s.server.deployments().await, record.id);
    assert_eq!(ours["task"], "deploy:rollback");
    assert_eq!(d.live_image().await.unwrap().as_deref(), Some("app:v3"));
    // v4 is now inactive after a success: it is the last good one.
    assert_eq!(d.last_good_image().await.unwrap().as_deref(), Some("app:v4"));
    s.check().await;
}

#[tokio::test]
async fn statuses_go_to_the_deployment_id_given() {
    let s = Setup::new(None).await;
    // Seeded in the past, so that our statuses come after its own.
    let job_env = seed_one(
        &s.server,
        json!({"payload": {}, "created_at": "2024-01-01T00:00:00Z", "statuses": [{"state": "in_progress"}]}),
    )
    .await;
    let d = s.deployments(GithubSpec { deployment_id: Some(job_env), ..spec() });
    let record = d.begin(&payload("app:v2"), Task::Deploy, &CancellationToken::new()).await.unwrap();
    assert_eq!(record.id, job_env);
    d.finish(&record, FinalState::Success, "ok").await.unwrap();
    let all = s.server.deployments().await;
    assert_eq!(all.len(), 1);
    assert_eq!(states(&all[0]), ["success", "in_progress", "in_progress"]);

    let e = s
        .deployments(GithubSpec { deployment_id: Some(4_000_000_000), ..spec() })
        .begin(&payload("app:v2"), Task::Deploy, &CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "github_not_found");
    assert!(e.to_string().contains("deployment-id"), "{e}");
    s.check().await;
}
