//! The action as a runner loads it: every workflow of `examples/`, copied
//! unmodified into a repository, run by nektos/act (`support::act`) against
//! the local stack and the release image `scripts/image` built. Each run
//! checks what a user sees: the step's result, the outputs a later step
//! reads, a failed deploy failing the step with its `::error` annotation,
//! the GitHub Deployment and its statuses on the test server, and no
//! secret value anywhere in the log.
//!
//! Hosts: 7 and 8 (127.0.0.8-9), under `fleet::lock_hosts`, each left
//! serving the shared `app` as the fleet tests expect. The example's app
//! name is the repository's (`acme/app`), the one the stack's nginx
//! includes.

use std::time::Duration;

use crate::fleet::{ensure_serving, image, lock_hosts};
use crate::support::act::{ActRun, Workflow};
use crate::support::github_server::{GithubServer, TOKEN};
use crate::support::{live_version, stack_var};

const BOUND: Duration = Duration::from_secs(240);

/// `root@127.0.0.(K+1):22`, one per line, as a repository variable holds
/// a fleet.
fn hosts_var(ks: &[usize]) -> String {
    let all = stack_var("HOSTS");
    let list: Vec<&str> = all.split(',').collect();
    ks.iter().map(|&k| list[k - 1]).collect::<Vec<_>>().join("\n")
}

fn read(key: &str) -> String {
    std::fs::read_to_string(stack_var(key)).unwrap_or_else(|e| panic!("{key}: {e}"))
}

/// Pushes demo image `v` to the stack's registry under `tag`, as the
/// user's build would have pushed it (`<repository>:<tag>`).
fn push_as(v: &str, tag: &str) -> String {
    let to = format!("{}:{tag}", stack_var("IMAGE_REPO"));
    for args in [vec!["tag", &image(v), &to], vec!["push", "-q", &to]] {
        let out = std::process::Command::new("docker").args(&args).output().expect("docker");
        assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    to
}

/// The values a run must never show: the SSH key's body, the registry
/// password, the GitHub token.
fn assert_no_secret(run: &ActRun, secrets: &[String]) {
    for s in secrets {
        for line in s.lines().map(str::trim).filter(|l| l.len() >= 8 && !l.starts_with("-----")) {
            assert!(!run.log.contains(line), "a secret line reached act's log: {line:.12}…\n{}", run.log);
        }
    }
}

/// The `Report` step's line (it reads the deploy step's outputs).
fn report_line(run: &ActRun) -> String {
    run.step_lines()
        .into_iter()
        .find(|l| l.starts_with("deploy ") && l.contains("(before: "))
        .unwrap_or_else(|| panic!("no Report line read from the outputs:\n{}", run.log))
        .to_string()
}

fn hosts_workflow(example: &str, ks: &[usize], server: &GithubServer) -> Workflow {
    let hosts = hosts_var(ks);
    // The names each example reads its fleet, key and known_hosts under.
    let staging = example.contains("staging") || example == "build-and-deploy.yml";
    let (hosts_name, key_secret, kh) = if staging {
        ("STAGING_HOSTS", "STAGING_SSH_KEY", "STAGING_KNOWN_HOSTS")
    } else {
        ("PRODUCTION_HOSTS", "DEPLOY_SSH_KEY", "DEPLOY_KNOWN_HOSTS")
    };
    Workflow::example(example, "app", &[])
        .var(hosts_name, &hosts)
        .var("IMAGE_REPOSITORY", &stack_var("IMAGE_REPO"))
        .var(kh, &read("SSH_KNOWN_HOSTS"))
        .secret(key_secret, &read("SSH_KEY"))
        .secret("GHCR_READ_TOKEN", &stack_var("REGISTRY_PASSWORD"))
        .github(&server.base_url, TOKEN)
}

#[tokio::test(flavor = "multi_thread")]
async fn act_hosts_staging_deploys_and_a_rerun_names_what_is_live() {
    let _hosts = lock_hosts(&[7]);
    ensure_serving(7, "v1");
    let server = GithubServer::start(None).await;
    let wf = hosts_workflow("hosts-staging.yml", &[7], &server);
    // The action as a release publishes it: action.yml pinned by the
    // release script to the digest the image was pushed under.
    let release = publish_release(&wf);
    let img = push_as("v2", wf.sha());
    let secrets = [read("SSH_KEY"), stack_var("REGISTRY_PASSWORD"), TOKEN.to_string()];

    let run = tokio::task::block_in_place(|| wf.run("push", BOUND));
    let (code, took) = (run.code, run.took);
    assert_eq!(code, Some(0), "act failed:\n{}", run.log);
    assert_eq!(live_version(7), "v2", "host 7 serves the pushed image:\n{}", run.log);
    let line = report_line(&run);
    assert!(line.starts_with(&format!("deploy success: {img} (before: {}", image("v1"))), "{line}");
    assert_no_secret(&run, &secrets);
    assert!(run.shows(&release), "act ran the pinned image {release}:\n{}", run.log);
    let deployments = server.deployments().await;
    let ours = deployments.last().expect("a deployment recorded");
    assert_eq!(ours["environment"], "staging");
    let states: Vec<&str> =
        ours["statuses"].as_array().unwrap().iter().map(|s| s["state"].as_str().unwrap()).collect();
    assert_eq!(states.first(), Some(&"success"), "newest status first: {states:?}");
    assert!(states.contains(&"in_progress"), "{states:?}");
    assert!(line.ends_with(&format!("deployment {}", ours["id"])), "{line}");

    // The same commit again: nothing to do, and the outputs name what is live.
    let again = tokio::task::block_in_place(|| wf.run("push", BOUND));
    assert_eq!(again.code, Some(0), "act failed:\n{}", again.log);
    let line = report_line(&again);
    assert!(line.starts_with(&format!("deploy success: {img} (before: {img})")), "unchanged: {line}");
    assert!(again.shows("already live"), "{}", again.log);
    server.assert_no_violations().await;
    eprintln!("act hosts-staging: {took:?} first run, {:?} unchanged", again.took);
    drop(wf);
    ensure_serving(7, "v1");
}

#[tokio::test(flavor = "multi_thread")]
async fn act_hosts_hotfix_a_failing_deploy_fails_the_step_with_its_annotation() {
    let _hosts = lock_hosts(&[7, 8]);
    ensure_serving(7, "v1");
    ensure_serving(8, "v1");
    let server = GithubServer::start(None).await;
    let wf = hosts_workflow("hosts-hotfix.yml", &[7, 8], &server)
        .event(serde_json::json!({"inputs": {"image": image("broken"), "ref": "main"}}));
    let secrets = [read("SSH_KEY"), stack_var("REGISTRY_PASSWORD"), TOKEN.to_string()];

    let run = tokio::task::block_in_place(|| wf.run("workflow_dispatch", BOUND));
    assert_ne!(run.code, Some(0), "a failed deploy fails the job:\n{}", run.log);
    // The step failed, and the runner showed the action's annotation.
    assert!(run.shows("❌  Failure - Main org/deploy-action@v1"), "{}", run.log);
    assert!(run.log.lines().any(|l| l.contains("❗") && l.contains("::error")), "{}", run.log);
    assert!(run.shows("health_check_failed") || run.shows("unhealthy"), "the reason is named:\n{}", run.log);
    assert_eq!((live_version(7), live_version(8)), ("v1".into(), "v1".into()), "the old version serves");
    let line = report_line(&run);
    assert!(line.starts_with(&format!("deploy failure: {}", image("broken"))), "{line}");
    assert_no_secret(&run, &secrets);
    let deployments = server.deployments().await;
    let ours = deployments.last().expect("a deployment recorded");
    assert_eq!(ours["environment"], "production");
    assert_eq!(ours["ref"], "main", "the dispatch's ref input");
    assert_eq!(ours["statuses"][0]["state"], "failure");
    server.assert_no_violations().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn act_hosts_production_releases_a_tag_to_the_fleet() {
    let _hosts = lock_hosts(&[7, 8]);
    ensure_serving(7, "v1");
    ensure_serving(8, "v1");
    let server = GithubServer::start(None).await;
    let tag = format!("v1.4.{}", std::process::id() % 1000);
    let img = push_as("v3", &tag);
    let wf = hosts_workflow("hosts-production.yml", &[7, 8], &server)
        .event(serde_json::json!({"ref": format!("refs/tags/{tag}")}));
    let run = tokio::task::block_in_place(|| wf.run("push", BOUND));
    assert_eq!(run.code, Some(0), "act failed:\n{}", run.log);
    assert_eq!((live_version(7), live_version(8)), ("v3".into(), "v3".into()));
    let line = report_line(&run);
    assert!(line.starts_with(&format!("deploy success: {img}")), "{line}");
    let deployments = server.deployments().await;
    assert_eq!(deployments.last().unwrap()["environment"], "production");
    server.assert_no_violations().await;
    ensure_serving(7, "v1");
    ensure_serving(8, "v1");
}

/// The build job pushes the image and passes its digest on (`needs:
/// build`); the deploy job deploys `<repository>@<digest>`. Another
/// workflow's check of the commit is still pending (seeded here as GitHub
/// would show it): the example's `required-contexts: "[]"` is what lets the
/// deployment through.
#[tokio::test(flavor = "multi_thread")]
async fn act_build_and_deploy_deploys_the_digest_the_build_job_pushed() {
    let _hosts = lock_hosts(&[7]);
    ensure_serving(7, "v1");
    let server = GithubServer::start(None).await;
    let wf = hosts_workflow("build-and-deploy.yml", &[7], &server);
    // What the build pushed (the stand-in of docker/build-push-action
    // outputs this digest when the workflow asks to push this name).
    let built = push_as("v2", wf.sha());
    let digest = pushed_digest(&built);
    let wf = wf.env("STACK_BUILT_IMAGE", &built).env("STACK_BUILT_DIGEST", &digest);
    let pending = serde_json::json!([{"context": "ci / test", "state": "pending"}]);
    server.seed(serde_json::json!({"refs": {wf.sha(): {"statuses": pending}}})).await;
    let secrets = [read("SSH_KEY"), stack_var("REGISTRY_PASSWORD"), TOKEN.to_string()];

    let run = tokio::task::block_in_place(|| wf.run("push", BOUND));
    assert_eq!(run.code, Some(0), "act failed:\n{}", run.log);
    assert!(run.shows(&format!("pushed {built}@{digest}")), "the build job ran first:\n{}", run.log);
    assert_eq!(live_version(7), "v2", "host 7 serves what the build pushed:\n{}", run.log);
    let by_digest = format!("{}@{digest}", stack_var("IMAGE_REPO"));
    let line = report_line(&run);
    assert!(line.starts_with(&format!("deploy success: {by_digest} (before: {}", image("v1"))), "{line}");
    assert_no_secret(&run, &secrets);
    let deployments = server.deployments().await;
    let ours = deployments.last().expect("a deployment recorded");
    assert_eq!(ours["environment"], "staging");
    assert_eq!(ours["required_contexts"], serde_json::json!([]), "{ours}");
    assert_eq!(ours["statuses"][0]["state"], "success");
    server.assert_no_violations().await;
    eprintln!("act build-and-deploy: {:?}", run.took);
    drop(wf);
    ensure_serving(7, "v1");
}

/// The registry's digest of `reference` (`<repository>:<tag>`, pushed).
fn pushed_digest(reference: &str) -> String {
    let repo = reference.rsplit_once(':').expect("a tag").0;
    let out = std::process::Command::new("docker")
        .args(["image", "inspect", "--format", "{{range .RepoDigests}}{{println .}}{{end}}", reference])
        .output()
        .expect("docker");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let digests = String::from_utf8_lossy(&out.stdout).into_owned();
    digests
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{repo}@")))
        .unwrap_or_else(|| panic!("no digest of {repo} after the push: {digests}"))
        .to_string()
}

/// Publishes the image `scripts/image` built the way the release does (a
/// push, then its digest) to the stack's registry, and pins the action act
/// resolves (`org/deploy-action@v1`) to it with the release's script.
/// Returns the pinned reference.
fn publish_release(wf: &Workflow) -> String {
    let repo = format!("{}/deploy-action/deploy-action", stack_var("REGISTRY"));
    let tagged = format!("{repo}:act-release");
    let docker = |args: &[&str]| {
        let out = std::process::Command::new("docker").args(args).output().expect("docker");
        assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    docker(&["tag", "ghcr.io/deploy-action/deploy-action:v1", &tagged]);
    docker(&["push", "-q", &tagged]);
    let digests =
        docker(&["image", "inspect", "--format", "{{range .RepoDigests}}{{println .}}{{end}}", &tagged]);
    let reference = digests
        .lines()
        .find(|l| l.starts_with(&format!("{repo}@sha256:")))
        .unwrap_or_else(|| panic!("no digest of {repo} after the push: {digests}"))
        .to_string();
    let out = pin(&reference, &wf.action_dir().join("action.yml"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    reference
}

/// `scripts/release/pin-image` on a copy of `action.yml`.
fn pin(reference: &str, file: &std::path::Path) -> std::process::Output {
    std::process::Command::new(crate::support::repo_root().join("scripts/release/pin-image"))
        .arg(reference)
        .arg(file)
        .output()
        .expect("pin-image")
}

/// The release pins `runs.image` to the digest it pushed: that line only,
/// and never a moving tag.
#[test]
fn the_release_pins_runs_image_by_digest_and_nothing_else() {
    let root = crate::support::repo_root();
    let original = std::fs::read_to_string(root.join("action.yml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("action.yml");
    std::fs::write(&file, &original).unwrap();
    let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
    let reference = format!("ghcr.io/acme-fork/deploy-action@{digest}");

    let out = pin(&reference, &file);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pinned = std::fs::read_to_string(&file).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&pinned).unwrap();
    assert_eq!(doc["runs"]["image"].as_str(), Some(format!("docker://{reference}").as_str()));
    let before: serde_yaml::Value = serde_yaml::from_str(&original).unwrap();
    assert_eq!(doc["inputs"], before["inputs"]);
    assert_eq!(doc["outputs"], before["outputs"]);
    let changed = original.lines().zip(pinned.lines()).filter(|(a, b)| a != b).count();
    assert_eq!((changed, original.lines().count()), (1, pinned.lines().count()));

    // Refused, the file untouched: a tag, a short digest, an upper-case name.
    for bad in [
        "ghcr.io/acme-fork/deploy-action:v1".to_string(),
        "ghcr.io/acme-fork/deploy-action@sha256:0123".to_string(),
        format!("ghcr.io/Acme/deploy-action@{digest}"),
    ] {
        let out = pin(&bad, &file);
        assert!(!out.status.success(), "{bad} accepted");
        assert!(String::from_utf8_lossy(&out.stderr).contains("is not IMAGE@sha256"), "{bad}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), pinned, "{bad} changed the file");
    }
    // A file that is not a docker action, refused.
    std::fs::write(&file, "name: x\nruns:\n  using: node20\n  main: index.js\n").unwrap();
    assert!(!pin(&reference, &file).status.success(), "a file with no runs.image accepted");
}

/// The release workflow pins what it published and points the tags a user
/// names (`@v1.4.2`, `@v1`) at that commit, never at the unpinned one.
#[test]
fn the_release_workflow_moves_its_tags_to_the_pinned_commit() {
    let text =
        std::fs::read_to_string(crate::support::repo_root().join(".github/workflows/release.yml")).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let steps = doc["jobs"]["publish"]["steps"].as_sequence().expect("publish steps");
    let idx = |name: &str| {
        steps
            .iter()
            .position(|s| s["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no step {name}"))
    };
    let (image, pin, major) = (
        idx("Multi-platform image tags"),
        idx("Pin the published image in action.yml"),
        idx("Move the major tag"),
    );
    assert!(image < pin && pin < major, "image, then pin, then tags");
    let pin_step = &steps[pin];
    assert_eq!(pin_step["env"]["IMAGE_REF"].as_str(), Some("${{ steps.image.outputs.ref }}"));
    let script = pin_step["run"].as_str().unwrap();
    assert!(script.contains("scripts/release/pin-image \"$IMAGE_REF\" action.yml"), "{script}");
    assert!(script.contains("git/refs/tags/$TAG\" -f \"sha=$commit\""), "the version tag moves: {script}");
    assert!(script.contains("contents/action.yml?ref=$TAG"), "verified after: {script}");
    let major_step = &steps[major];
    assert_eq!(major_step["env"]["RELEASE_COMMIT"].as_str(), Some("${{ steps.pin.outputs.commit }}"));
    let run = major_step["run"].as_str().unwrap();
    assert!(run.contains("sha=$RELEASE_COMMIT") && !run.contains("GITHUB_SHA"), "{run}");
}

// ---------------------------------------------------------------------------
// Kubernetes: the examples name their namespace (`shop`, `dashboard`,
// `scheduler`); each test makes it anew on the stack's cluster.
// ---------------------------------------------------------------------------

use crate::kubernetes::{kubectl, kubectl_ok, kubectl_stdin};

/// A namespace the example names, made fresh (an earlier run's deleted
/// first) and deleted at the end.
struct ExampleNs(&'static str);

impl ExampleNs {
    fn fresh(name: &'static str, objects: &str) -> Self {
        let _ = kubectl(&["delete", "namespace", name, "--ignore-not-found", "--wait=true", "--timeout=90s"]);
        kubectl_ok(&["create", "namespace", name]);
        let t0 = std::time::Instant::now();
        while !kubectl(&["-n", name, "get", "serviceaccount", "default"]).status.success() {
            assert!(t0.elapsed() < Duration::from_secs(30), "no default serviceaccount in {name}");
            std::thread::sleep(Duration::from_millis(200));
        }
        if !objects.is_empty() {
            kubectl_stdin(&["-n", name, "apply", "-f", "-"], objects);
        }
        ExampleNs(name)
    }

    fn get(&self, kind_name: &str, path: &str) -> String {
        kubectl_ok(&["-n", self.0, "get", kind_name, "-o", &format!("jsonpath={path}")])
    }

    fn rollout_ok(&self, deployment: &str) {
        let out = kubectl(&[
            "-n",
            self.0,
            "rollout",
            "status",
            "--timeout=60s",
            &format!("deployment/{deployment}"),
        ]);
        assert!(
            out.status.success(),
            "kubectl rollout status {deployment}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for ExampleNs {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "namespace", self.0, "--wait=false"]);
    }
}

/// A Deployment (its one container named `container`) and its Service.
fn deployment_yaml(name: &str, container: &str, image: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: {replicas}\n  progressDeadlineSeconds: 60\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers:\n      - {{name: {container}, image: \"{image}\"}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{selector: {{app: {name}}}, ports: [{{port: 80}}]}}\n---\n"
    )
}

fn kubeconfig() -> String {
    std::fs::read_to_string(stack_var("K8S_KUBECONFIG")).expect("the stack's kubeconfig")
}

#[tokio::test(flavor = "multi_thread")]
async fn act_k8s_staging_applies_the_repository_manifests() {
    let ns = ExampleNs::fresh("shop", "");
    let server = GithubServer::start(None).await;
    let manifests = deployment_yaml("shop", "app", "ghcr.io/acme/shop:built-by-ci", 2);
    let wf = Workflow::example("k8s-staging.yml", "shop", &[("deploy/k8s/shop.yaml", &manifests)])
        .secret("STAGING_KUBECONFIG", &kubeconfig())
        .github(&server.base_url, TOKEN);
    let run = tokio::task::block_in_place(|| wf.run("push", BOUND));
    assert_eq!(run.code, Some(0), "act failed:\n{}", run.log);
    let img = format!("ghcr.io/acme/shop:{}", wf.sha());
    assert_eq!(ns.get("deployment/shop", "{.spec.template.spec.containers[0].image}"), img);
    ns.rollout_ok("shop");
    let line = report_line(&run);
    assert!(line.starts_with(&format!("deploy success: {img} (before: nothing)")), "{line}");
    assert_no_secret(&run, &[kubeconfig(), TOKEN.to_string()]);
    let deployments = server.deployments().await;
    assert_eq!(deployments.last().unwrap()["environment"], "staging");
    assert_eq!(deployments.last().unwrap()["statuses"][0]["state"], "success");
    server.assert_no_violations().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn act_k8s_blue_green_flips_four_services_on_a_tag() {
    let old = "ghcr.io/acme/dashboard:v1.0.0";
    let objects: String = [("web", "web"), ("api", "app"), ("reports", "reports"), ("admin", "admin")]
        .iter()
        .map(|(n, c)| deployment_yaml(n, c, old, 2))
        .collect();
    let ns = ExampleNs::fresh("dashboard", &objects);
    for d in ["web", "api", "reports", "admin"] {
        ns.rollout_ok(d);
    }
    let server = GithubServer::start(None).await;
    let wf = Workflow::example("k8s-blue-green.yml", "dashboard", &[])
        .secret("KUBECONFIG", &kubeconfig())
        .github(&server.base_url, TOKEN)
        .event(serde_json::json!({"ref": "refs/tags/v2.0.0"}));
    let run = tokio::task::block_in_place(|| wf.run("push", BOUND));
    assert_eq!(run.code, Some(0), "act failed:\n{}", run.log);
    let new = "ghcr.io/acme/dashboard:v2.0.0";
    for d in ["web", "api", "reports", "admin"] {
        let colour = ns.get(&format!("service/{d}"), "{.spec.selector.deploy-action/colour}");
        assert!(colour == "blue" || colour == "green", "service {d} selects colour {colour:?}");
        let live = format!("deployment/{d}-{colour}");
        assert_eq!(ns.get(&live, "{.spec.template.spec.containers[0].image}"), new, "{live}");
        ns.rollout_ok(&format!("{d}-{colour}"));
    }
    let line = report_line(&run);
    assert!(line.starts_with(&format!("deploy success: {new} (before: {old})")), "{line}");
    assert_no_secret(&run, &[kubeconfig(), TOKEN.to_string()]);
    server.assert_no_violations().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn act_k8s_canary_then_a_later_job_promotes_it() {
    let old = "ghcr.io/acme/scheduler:v1.0.0";
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: scheduler}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n  - backendRefs: [{name: scheduler, port: 80}]\n";
    let ns =
        ExampleNs::fresh("scheduler", &format!("{}{route}", deployment_yaml("scheduler", "app", old, 2)));
    ns.rollout_ok("scheduler");
    let server = GithubServer::start(None).await;
    let wf = Workflow::example("k8s-canary.yml", "scheduler", &[])
        .secret("PROD_KUBECONFIG", &kubeconfig())
        .github(&server.base_url, TOKEN)
        .event(serde_json::json!({"ref": "refs/tags/v1.1.0"}));
    let run = tokio::task::block_in_place(|| wf.run("push", BOUND));
    assert_eq!(run.code, Some(0), "act failed:\n{}", run.log);
    let new = "ghcr.io/acme/scheduler:v1.1.0";
    // The canary job stepped through 10% and 50%; the promote job, after it,
    // put the new template on `scheduler` and took the canary away.
    assert!(run.shows("10%") && run.shows("50%"), "{}", run.log);
    assert_eq!(ns.get("deployment/scheduler", "{.spec.template.spec.containers[0].image}"), new);
    ns.rollout_ok("scheduler");
    assert!(
        !kubectl(&["-n", ns.0, "get", "deployment", "scheduler-canary"]).status.success(),
        "canary removed"
    );
    let weights =
        ns.get("httproute/scheduler", "{range .spec.rules[0].backendRefs[*]}{.name}={.weight} {end}");
    assert!(!weights.contains("scheduler-canary"), "{weights}");
    let promote = run
        .step_lines()
        .into_iter()
        .find(|l| l.starts_with("promote "))
        .unwrap_or_else(|| panic!("no promote Report line:\n{}", run.log))
        .to_string();
    assert_eq!(promote, format!("promote success: {new} (the canary ran {new})"));
    let envs: Vec<String> =
        server.deployments().await.iter().map(|d| d["environment"].as_str().unwrap().to_string()).collect();
    assert!(envs.contains(&"production-canary".into()) && envs.contains(&"production".into()), "{envs:?}");
    assert_no_secret(&run, &[kubeconfig(), TOKEN.to_string()]);
    server.assert_no_violations().await;
}

// ---------------------------------------------------------------------------
// EC2: instances found by tag in moto (region eu-west-1, as the examples
// say), whose private IPs are stack hosts; the SSH key, known_hosts and
// registry password read from SSM by the action; AWS reached through the
// configure-aws-credentials stand-in.
// ---------------------------------------------------------------------------

const EC2_REGION: &str = "eu-west-1";

async fn aws_config() -> aws_config::SdkConfig {
    let base = crate::support::moto_config().await;
    base.into_builder().region(aws_config::Region::new(EC2_REGION)).build()
}

/// Running instances tagged `Role=web,Env=<env>` at hosts `ks`' addresses,
/// any left by an earlier run terminated first. Returns their ids.
async fn ec2_fleet(env: &str, ks: &[usize]) -> Vec<String> {
    use aws_sdk_ec2::types::Filter;
    let ec2 = aws_sdk_ec2::Client::new(&aws_config().await);
    let leftovers = ec2
        .describe_instances()
        .filters(Filter::builder().name("tag:Env").values(env).build())
        .filters(Filter::builder().name("instance-state-name").values("running").build())
        .send()
        .await
        .expect("describe");
    let old: Vec<String> = leftovers
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| i.instance_id().map(String::from))
        .collect();
    if !old.is_empty() {
        ec2.terminate_instances().set_instance_ids(Some(old)).send().await.expect("terminate leftovers");
    }
    let addrs: Vec<String> = ks.iter().map(|&k| crate::support::host_addr(k)).collect();
    let tags = [("Role", "web"), ("Env", env)];
    let hosts: Vec<(&str, &[(&str, &str)])> = addrs.iter().map(|a| (a.as_str(), &tags[..])).collect();
    crate::support::tagged_instances(&aws_config().await, &hosts).await
}

/// Hosts `ks` as private EC2 instances behind an Instance Connect
/// Endpoint (created in the subnet of `ids`, through the stack's endpoint
/// server): each sshd takes only keys SendSSHPublicKey pushed, until dropped.
struct Endpoint {
    id: String,
    ks: Vec<usize>,
    log_from: u64,
}

impl Endpoint {
    async fn new(ids: &[String], ks: &[usize]) -> Endpoint {
        let log_from = std::fs::metadata(stack_var("EICE_LOG")).map(|m| m.len()).unwrap_or(0);
        // Made first, so that a failure below still turns the sshds back.
        let mut made = Endpoint { id: String::new(), ks: ks.to_vec(), log_from };
        for &k in ks {
            let out = std::process::Command::new(stack_var("EICE_HOST_SSHD"))
                .args([&k.to_string(), "on"])
                .output()
                .unwrap();
            assert!(out.status.success(), "host-sshd {k} on: {}", String::from_utf8_lossy(&out.stderr));
        }
        let config = aws_config().await.into_builder().endpoint_url(stack_var("EICE_URL")).build();
        let ec2 = aws_sdk_ec2::Client::new(&config);
        let described = ec2.describe_instances().instance_ids(&ids[0]).send().await.expect("describe");
        let subnet = described.reservations()[0].instances()[0].subnet_id().unwrap().to_string();
        let e =
            ec2.create_instance_connect_endpoint().subnet_id(subnet).send().await.expect("create endpoint");
        made.id = e.instance_connect_endpoint().unwrap().instance_connect_endpoint_id().unwrap().to_string();
        made
    }

    /// The endpoint server's log since this endpoint was made.
    fn log(&self) -> String {
        let text = std::fs::read(stack_var("EICE_LOG")).unwrap_or_default();
        String::from_utf8_lossy(&text[(self.log_from as usize).min(text.len())..]).into_owned()
    }

    /// Every host was reached through this endpoint, its key pushed and
    /// its host key read from the console output; nothing was refused.
    fn assert_used_for(&self, ids: &[String]) {
        let log = self.log();
        for (k, id) in self.ks.iter().zip(ids) {
            let addr = crate::support::host_addr(*k);
            assert!(log.contains(&format!("ALLOW tunnel {} -> {addr}:22", self.id)), "{log}");
            assert!(log.contains(&format!("ALLOW SendSSHPublicKey {id}")), "{log}");
            assert!(log.contains(&format!("ALLOW GetConsoleOutput {id}")), "{log}");
        }
        assert!(!log.contains("DENY"), "{log}");
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        for &k in &self.ks {
            let _ = std::process::Command::new(stack_var("EICE_HOST_SSHD"))
                .args([&k.to_string(), "off"])
                .status();
        }
    }
}

async fn terminate(ids: Vec<String>) {
    let ec2 = aws_sdk_ec2::Client::new(&aws_config().await);
    ec2.terminate_instances().set_instance_ids(Some(ids)).send().await.expect("terminate");
}

/// The SSM parameters an EC2 example reads for `env` (`staging`, `prod`):
/// `/deploy/<env>/{ssh-key,known-hosts,ghcr-read-token}` and the app's
/// `/shop/<env>/DATABASE_URL`. Returns the values that must never show.
async fn ec2_parameters(env: &str) -> Vec<String> {
    let ssm = aws_sdk_ssm::Client::new(&aws_config().await);
    let database_url = format!("postgres://shop:pw-{}-{env}@db.internal/shop", std::process::id());
    crate::kubernetes::put_ssm(
        &ssm,
        &format!("/deploy/{env}/"),
        &[
            ("ssh-key", &read("SSH_KEY")),
            ("known-hosts", &read("SSH_KNOWN_HOSTS")),
            ("ghcr-read-token", &stack_var("REGISTRY_PASSWORD")),
        ],
    )
    .await;
    crate::kubernetes::put_ssm(&ssm, &format!("/shop/{env}/"), &[("DATABASE_URL", &database_url)]).await;
    vec![read("SSH_KEY"), stack_var("REGISTRY_PASSWORD"), database_url, TOKEN.to_string()]
}

fn ec2_workflow(example: &str, server: &GithubServer) -> Workflow {
    Workflow::example(example, "app", &[])
        .var("IMAGE_REPOSITORY", &stack_var("IMAGE_REPO"))
        .var("REGISTRY_USERNAME", &stack_var("REGISTRY_USERNAME"))
        .var("DEPLOY_SSH_USER", &stack_var("SSH_USER"))
        .github(&server.base_url, TOKEN)
        .aws()
}

#[tokio::test(flavor = "multi_thread")]
async fn act_ec2_staging_finds_its_instances_and_reads_ssm() {
    let _hosts = lock_hosts(&[7]);
    ensure_serving(7, "v1");
    let ids = ec2_fleet("staging", &[7]).await;
    let endpoint = Endpoint::new(&ids, &[7]).await;
    let secrets = ec2_parameters("staging").await;
    let server = GithubServer::start(None).await;
    let wf = ec2_workflow("ec2-staging.yml", &server);
    let img = push_as("v2", wf.sha());
    let run = tokio::task::block_in_place(|| wf.run("push", BOUND));
    assert_eq!(run.code, Some(0), "act failed:\n{}", run.log);
    endpoint.assert_used_for(&ids);
    drop(endpoint);
    terminate(ids).await;
    assert_eq!(live_version(7), "v2");
    assert!(run.shows("DATABASE_URL"), "the app's secret by name:\n{}", run.log);
    let line = report_line(&run);
    assert!(line.starts_with(&format!("deploy success: {img} (before: {}", image("v1"))), "{line}");
    assert_no_secret(&run, &secrets);
    assert_eq!(server.deployments().await.last().unwrap()["environment"], "staging");
    server.assert_no_violations().await;
    ensure_serving(7, "v1");
}

#[tokio::test(flavor = "multi_thread")]
async fn act_ec2_hotfix_then_a_tagged_release_to_production() {
    let _hosts = lock_hosts(&[7, 8]);
    ensure_serving(7, "v1");
    ensure_serving(8, "v1");
    let ids = ec2_fleet("prod", &[7, 8]).await;
    let endpoint = Endpoint::new(&ids, &[7, 8]).await;
    let secrets = ec2_parameters("prod").await;
    let server = GithubServer::start(None).await;

    // A hotfix by hand: the image named in the dispatch.
    let hotfix = ec2_workflow("ec2-hotfix.yml", &server)
        .event(serde_json::json!({"inputs": {"image": image("v2"), "ref": "hotfix-1"}}));
    let run = tokio::task::block_in_place(|| hotfix.run("workflow_dispatch", BOUND));
    assert_eq!(run.code, Some(0), "act failed:\n{}", run.log);
    assert_eq!((live_version(7), live_version(8)), ("v2".into(), "v2".into()));
    assert_eq!(report_line(&run), {
        let d = server.deployments().await;
        format!(
            "deploy success: {} (before: {}), deployment {}",
            image("v2"),
            image("v1"),
            d.last().unwrap()["id"]
        )
    });
    assert_eq!(server.deployments().await.last().unwrap()["ref"], "hotfix-1");
    assert_no_secret(&run, &secrets);

    // Then a tag: the release's image to both.
    let tag = format!("v2.0.{}", std::process::id() % 1000);
    let img = push_as("v3", &tag);
    let release = ec2_workflow("ec2-production.yml", &server)
        .event(serde_json::json!({"ref": format!("refs/tags/{tag}")}));
    let run = tokio::task::block_in_place(|| release.run("push", BOUND));
    assert_eq!(run.code, Some(0), "act failed:\n{}", run.log);
    endpoint.assert_used_for(&ids);
    drop(endpoint);
    terminate(ids).await;
    assert_eq!((live_version(7), live_version(8)), ("v3".into(), "v3".into()));
    let line = report_line(&run);
    assert!(line.starts_with(&format!("deploy success: {img} (before: {})", image("v2"))), "{line}");
    assert_no_secret(&run, &secrets);
    // The hotfix's deployment went inactive when the release succeeded.
    let d = server.deployments().await;
    assert_eq!(d.len(), 2, "{d:?}");
    server.assert_no_violations().await;
    ensure_serving(7, "v1");
    ensure_serving(8, "v1");
}

/// Private instances from a hosted runner, through a bastion: the example
/// reaches its instance's private address through `ssh-jump-host` (the
/// stack's bastion, its host key pinned beside the instances' in SSM).
/// Host 8's lock too: the bastion's only other user (safety.rs) takes it,
/// so every bastion login meanwhile is this run's.
#[tokio::test(flavor = "multi_thread")]
async fn act_ec2_via_jump_host_reaches_the_private_address_through_the_bastion() {
    let _hosts = lock_hosts(&[7, 8]);
    ensure_serving(7, "v1");
    let ids = ec2_fleet("staging", &[7]).await;
    let secrets = ec2_parameters("staging").await;
    let known = format!("{}\n{}", read("SSH_KNOWN_HOSTS"), read("JUMP_KNOWN_HOSTS"));
    let ssm = aws_sdk_ssm::Client::new(&aws_config().await);
    crate::kubernetes::put_ssm(&ssm, "/deploy/staging/", &[("known-hosts", &known)]).await;
    let server = GithubServer::start(None).await;
    let wf = ec2_workflow("ec2-via-jump-host.yml", &server).var("JUMP_HOST", &stack_var("JUMP_HOST"));
    let img = push_as("v2", wf.sha());
    let logins = crate::safety::bastion_logins();
    let run = tokio::task::block_in_place(|| wf.run("push", BOUND));
    terminate(ids).await;
    assert_eq!(run.code, Some(0), "act failed:\n{}", run.log);
    assert_eq!(live_version(7), "v2");
    assert!(crate::safety::bastion_logins() > logins, "the deploy went through the bastion:\n{}", run.log);
    let line = report_line(&run);
    assert!(line.starts_with(&format!("deploy success: {img} (before: {}", image("v1"))), "{line}");
    assert_no_secret(&run, &secrets);
    assert_eq!(server.deployments().await.last().unwrap()["environment"], "staging");
    server.assert_no_violations().await;
    eprintln!("act ec2-via-jump-host: {:?}", run.took);
    ensure_serving(7, "v1");
}
