//! Rolling deploys: kubectl rollout status's verdict, early failure
//! detection, rollback, refusals, the GitHub record, HPAs, the plan.

use super::*;

#[test]
fn kubernetes_rolling_success_three_replicas() {
    let ns = Ns::new("ok");
    ns.deployment("web", "example.invalid/web:v1", 3, 60);
    let generation: u64 = ns.get("web", "{.metadata.generation}").parse().unwrap();
    // Every status the Deployment goes through, to check the surge bounds.
    let mut states = kubectl_cmd(&[
        "-n",
        &ns.0,
        "get",
        "deployment",
        "web",
        "-w",
        "-o",
        "jsonpath={.status.replicas} {.status.availableReplicas}{\"\\n\"}",
    ])
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let action = ns.action("web:app").input("image", "example.invalid/web:v2");
    let child = action.spawn();
    ns.wait_observed_past("web", generation);
    let kubectl = Verdict(ns.spawn_rollout_status("web").wait_with_output().unwrap());
    let run = action.finish(child.wait_with_output().unwrap());
    assert_status(&run, "success", 0);
    // maxUnavailable 0: never fewer than 3 available; maxSurge 1: a surge
    // pod was used. (The controller bounds the ReplicaSets' *spec* counts by
    // maxSurge; status.replicas can pass 4 for a moment while a deleted old
    // pod is not yet counted out, so it is no bound to assert.)
    states.kill().unwrap();
    let seen = String::from_utf8_lossy(&states.wait_with_output().unwrap().stdout).into_owned();
    let pairs: Vec<(u32, u32)> = seen
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(r, a)| Some((r.parse().ok()?, a.parse().ok()?)))
        .collect();
    assert!(pairs.len() >= 3, "the rollout's states were seen: {seen}");
    assert!(pairs.iter().all(|(_, a)| *a >= 3), "maxUnavailable 0 broken: {seen}");
    assert!(pairs.iter().any(|(r, _)| *r >= 4), "the surge pod was used: {seen}");
    kubectl.assert_ok();
    assert!(kubectl.text().contains("successfully rolled out"), "{}", kubectl.text());
    assert!(
        run.stdout.contains("updated replicas are available")
            || run.stdout.contains("new replicas have been updated"),
        "{}",
        run.stdout
    );
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v2");
    // Only the named container changed; the sidecar is not the action's.
    assert_eq!(ns.get("web", "{.spec.template.spec.containers[1].image}"), "example.invalid/sidecar:1");
    assert_eq!(serving_image(&ns, "web"), "example.invalid/web:v2");
    assert_eq!(ns.get("web", "{.status.readyReplicas}"), "3");
    assert!(run.summary.contains("| deployment | outcome | time |"), "{}", run.summary);
    assert!(run.summary.contains("rolled out: revision 2, 3/3 ready"), "{}", run.summary);
    assert_eq!(run.output("previous-image"), Some("example.invalid/web:v1"));
    // The action owns the image by server-side apply, and not replicas.
    let managed =
        kubectl_ok(&["-n", &ns.0, "get", "deployment", "web", "--show-managed-fields", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&managed).unwrap();
    let ours: Vec<&serde_json::Value> = v["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["manager"] == "deploy-action" && m["operation"] == "Apply")
        .collect();
    assert_eq!(ours.len(), 1, "{managed}");
    assert!(!ours[0]["fieldsV1"].to_string().contains("f:replicas"), "{}", ours[0]);
}

/// An early failure: the action must fail (and roll back) before the
/// progress deadline, while kubectl on an identical Deployment given the
/// same image reaches failure only at that deadline.
/// `deadline`: the progress deadline (s) kubectl waits for; the action must
/// be out well before it.
fn early_failure(tag: &str, bad: &str, reason: &str, deadline: u32) {
    let ns = Ns::new(tag);
    ns.deployment("web", "example.invalid/web:v1", 2, deadline);
    ns.deployment("twin", "example.invalid/web:v1", 2, deadline);
    kubectl_ok(&["-n", &ns.0, "set", "image", "deployment/twin", &format!("app={bad}")]);
    let started = Instant::now();
    let twin = ns.spawn_rollout_status("twin");
    let run = ns.action("web").input("image", bad).run();
    let action_took = started.elapsed();
    let kubectl = Verdict(twin.wait_with_output().unwrap());
    let kubectl_took = started.elapsed();
    assert_status(&run, "failure", 1);
    kubectl.assert_failed("exceeded its progress deadline");
    assert!(
        action_took + Duration::from_secs(3) < kubectl_took,
        "action {action_took:?}, kubectl {kubectl_took:?}"
    );
    assert!(run.stdout.contains(reason), "{}", run.stdout);
    assert!(run.stdout.contains("pod web-"), "the pod is named: {}", run.stdout);
    assert!(run.stdout.contains("rolled back"), "{}", run.stdout);
    // The previous ReplicaSet serves again, and kubectl agrees it is done.
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v1");
    ns.rollout_status("web", &[]).assert_ok();
    assert_eq!(serving_image(&ns, "web"), "example.invalid/web:v1");
    assert!(run.summary.contains("failure"), "{}", run.summary);
}

#[test]
fn kubernetes_bad_image_is_caught_before_the_deadline_and_rolled_back() {
    // A pull that keeps failing is fatal after the grace a registry blip
    // gets (20 s): kubectl waits for a 40 s progress deadline.
    early_failure("pull", "example.invalid/web:imagepull", "ImagePullBackOff", 40);
}

#[test]
fn kubernetes_crashloop_is_caught_early_and_rolled_back() {
    early_failure("crash", "example.invalid/web:crashloop", "CrashLoopBackOff", 20);
}

#[test]
fn kubernetes_never_ready_hits_the_progress_deadline_and_rolls_back() {
    let ns = Ns::new("never");
    ns.deployment("web", "example.invalid/web:v1", 2, 8);
    let generation: u64 = ns.get("web", "{.metadata.generation}").parse().unwrap();
    let action = ns.action("web").input("image", "example.invalid/web:never-ready");
    let child = action.spawn();
    ns.wait_observed_past("web", generation);
    let kubectl = Verdict(ns.spawn_rollout_status("web").wait_with_output().unwrap());
    let run = action.finish(child.wait_with_output().unwrap());
    kubectl.assert_failed("exceeded its progress deadline");
    assert_status(&run, "failure", 1);
    assert!(run.stdout.contains("exceeded its progress deadline"), "{}", run.stdout);
    assert!(run.stdout.contains("progress_deadline_exceeded"), "{}", run.stdout);
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v1");
    ns.rollout_status("web", &[]).assert_ok();
    assert_eq!(serving_image(&ns, "web"), "example.invalid/web:v1");
}

#[test]
fn kubernetes_rollback_mode_matches_kubectl_rollout_undo() {
    let (a, b) = (Ns::new("undo-a"), Ns::new("undo-b"));
    for ns in [&a, &b] {
        ns.deployment("web", "example.invalid/web:v1", 2, 60);
        kubectl_ok(&["-n", &ns.0, "annotate", "deployment/web", "team=payments"]);
        kubectl_ok(&["-n", &ns.0, "set", "image", "deployment/web", "app=example.invalid/web:v2"]);
        ns.rollout_status("web", &[]).assert_ok();
    }
    let run = a.action("web").input("mode", "rollback").run();
    assert_status(&run, "success", 0);
    kubectl_ok(&["-n", &b.0, "rollout", "undo", "deployment/web"]);
    b.rollout_status("web", &[]).assert_ok();
    let template = |ns: &Ns| {
        let v: serde_json::Value =
            serde_json::from_str(&kubectl_ok(&["-n", &ns.0, "get", "deployment", "web", "-o", "json"]))
                .unwrap();
        let mut ann = v["metadata"]["annotations"].clone();
        ann.as_object_mut().unwrap().remove("kubectl.kubernetes.io/last-applied-configuration");
        (
            v["spec"]["template"].to_string().replace(&ns.0, "NS"),
            ann,
            v["metadata"]["annotations"]["deployment.kubernetes.io/revision"].clone(),
        )
    };
    assert_eq!(template(&a), template(&b));
    assert_eq!(image_of(&a, "web"), "example.invalid/web:v1");
    assert_eq!(run.output("image"), Some("example.invalid/web:v1"));
    assert!(run.summary.contains("rolled back: revision 3"), "{}", run.summary);
}

#[test]
fn kubernetes_paused_deployment_is_refused() {
    let ns = Ns::new("paused");
    ns.deployment("web", "example.invalid/web:v1", 1, 60);
    kubectl_ok(&["-n", &ns.0, "set", "image", "deployment/web", "app=example.invalid/web:v2"]);
    ns.rollout_status("web", &[]).assert_ok();
    kubectl_ok(&["-n", &ns.0, "rollout", "pause", "deployment/web"]);
    let undo = kubectl(&["-n", &ns.0, "rollout", "undo", "deployment/web"]);
    let kubectl_says = String::from_utf8_lossy(&undo.stderr).into_owned();
    assert!(!undo.status.success());
    let run = ns.action("web").input("mode", "rollback").run();
    assert_status(&run, "failure", 1);
    let ours = "you cannot rollback a paused deployment; resume it first with 'kubectl rollout resume' and try again";
    assert!(kubectl_says.contains(ours), "{kubectl_says}");
    assert!(run.stdout.contains(ours), "{}", run.stdout);
    let run = ns.action("web").input("image", "example.invalid/web:v3").run();
    assert_status(&run, "failure", 1);
    assert!(run.stdout.contains("you cannot deploy to a paused deployment"), "{}", run.stdout);
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v2");
}

#[test]
fn kubernetes_apply_conflict_names_the_other_manager() {
    let ns = Ns::new("conflict");
    ns.deployment("web", "example.invalid/web:v1", 1, 60);
    // Another declarative owner (a GitOps tool) applies the image.
    ns.gitops_applies_image("web", "example.invalid/web:v1");
    let before: String = ns.get("web", "{.metadata.generation}");
    // The plan's dry run already meets the conflict.
    let plan = ns.action("web").input("mode", "plan").input("image", "example.invalid/web:v2").run();
    assert_eq!(plan.code, Some(1), "{}", plan.stdout);
    assert!(plan.stdout.contains("conflicts with field manager gitops"), "{}", plan.stdout);
    // Refused before anything changes: the migration never starts.
    let run = ns
        .action("web")
        .input("image", "example.invalid/web:v2")
        .input("migrate-command", r#"["./manage", "migrate"]"#)
        .run();
    assert_status(&run, "failure", 1);
    assert_eq!(kubectl_ok(&["-n", &ns.0, "get", "jobs", "-o", "name"]).trim(), "", "{}", run.stdout);
    assert!(!run.stdout.contains("Migration (Job)"), "{}", run.stdout);
    assert!(run.stdout.contains("kube_apply_conflict"), "{}", run.stdout);
    assert!(run.stdout.contains("gitops"), "{}", run.stdout);
    assert!(run.stdout.contains(".spec.template.spec.containers[name=\"app\"].image"), "{}", run.stdout);
    assert_eq!(ns.get("web", "{.metadata.generation}"), before);
    // kubectl's own verdict on the untouched Deployment: still rolled out.
    ns.rollout_status("web", &[]).assert_ok();
}

#[test]
fn kubernetes_forbidden_names_verb_resource_and_namespace() {
    let ns = Ns::new("rbac");
    ns.deployment("web", "example.invalid/web:v1", 1, 60);
    let kubeconfig = token_kubeconfig(&stack_var("K8S_RESTRICTED_TOKEN"));
    let run =
        ns.action("web").input("kubeconfig", &kubeconfig).input("image", "example.invalid/web:v2").run();
    assert_status(&run, "failure", 1);
    assert!(run.stdout.contains("kube_forbidden"), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("cannot get deployments in namespace {}", ns.0)), "{}", run.stdout);
    assert!(run.stdout.contains("verbs [\"get\"]"), "{}", run.stdout);
    // Masked: the token shows only in its own ::add-mask:: command.
    let token = stack_var("K8S_RESTRICTED_TOKEN");
    assert!(run.stdout.contains(&format!("::add-mask::{token}")), "{}", run.stdout);
    let leaked = run.all_text().lines().any(|l| !l.starts_with("::add-mask::") && l.contains(&token));
    assert!(!leaked, "the token leaked");
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v1");
    ns.rollout_status("web", &[]).assert_ok();
}

#[test]
fn kubernetes_inputs_are_checked_before_any_contact() {
    let run = Action::new()
        .input("target", "kubernetes")
        .input("image", "example.invalid/web:v2")
        .input("deployments", "Web_1, ok:Bad_Container")
        .input("namespace", "Not-OK")
        .input("strategy", "canary-ish")
        .input("github-deployments", "false")
        .run();
    assert_eq!(run.code, Some(2), "{}", run.stdout);
    for input in ["'deployments'", "'namespace'", "'strategy'"] {
        assert!(run.stdout.contains(&format!("input {input}")), "{input} not named in:\n{}", run.stdout);
    }
    assert!(
        !run.stdout.contains("input 'hosts'") && !run.stdout.contains("ssh-private-key"),
        "{}",
        run.stdout
    );
    // The kubeconfig is parsed before any contact too.
    let run = Action::new()
        .input("target", "kubernetes")
        .input("image", "example.invalid/web:v2")
        .input("deployments", "web")
        .input("kubeconfig", "not: [a kubeconfig")
        .input("github-deployments", "false")
        .run();
    assert_eq!(run.code, Some(2), "{}", run.stdout);
    assert!(run.stdout.contains("input 'kubeconfig'"), "{}", run.stdout);
}

/// SIGTERM while the new pods never become ready: the action undoes the
/// rollout and exits within the runner's 7 s grace, status `error`.
#[test]
fn kubernetes_sigterm_mid_rollout_rolls_back_within_7s() {
    let ns = Ns::new("term");
    ns.deployment("web", "example.invalid/web:v1", 2, 120);
    let action = ns.action("web").input("image", "example.invalid/web:never-ready");
    let run = ns.sigterm_mid_rollout(&action, "web", Duration::from_secs(2));
    assert!(run.stdout.contains("rolled back to revision 1"), "{}", run.stdout);
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v1");
    // kubectl's verdict on what the action left: the previous revision, done.
    ns.rollout_status("web", &[]).assert_ok();
    assert_eq!(serving_image(&ns, "web"), "example.invalid/web:v1");
}

/// The GitHub Deployment record, as for hosts: in_progress then success
/// for a good rollout, failure (with the reason) for a rolled-back one.
#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_records_the_github_deployment() {
    use crate::support::github_server::{GithubServer, TOKEN};
    let server = GithubServer::start(None).await;
    let ns = Ns::new("gh");
    ns.deployment("web", "example.invalid/web:v1", 2, 60);
    let mut runs = Vec::new();
    for image in ["example.invalid/web:v2", "example.invalid/web:crashloop"] {
        let action = ns
            .action("web")
            .input("image", image)
            .input("github-deployments", "true")
            .input("github-token", TOKEN)
            .env("GITHUB_API_URL", &server.base_url);
        runs.push(tokio::task::spawn_blocking(move || action.run()).await.unwrap());
    }
    assert_status(&runs[0], "success", 0);
    assert_status(&runs[1], "failure", 1);
    assert!(runs[0].output("deployment-id").is_some_and(|d| !d.is_empty()));
    let deployments = server.deployments().await;
    // Statuses come newest first.
    let states = |d: &serde_json::Value| -> Vec<String> {
        d["statuses"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .map(|s| s["state"].as_str().unwrap().to_string())
            .collect()
    };
    let find = |image: &str| {
        deployments
            .iter()
            .find(|d| d["payload"]["image"] == image)
            .unwrap_or_else(|| panic!("{deployments:?}"))
    };
    let ok = find("example.invalid/web:v2");
    assert_eq!(ok["payload"]["target"], "kubernetes");
    assert_eq!(states(ok), ["in_progress", "success"], "{ok}");
    let bad = find("example.invalid/web:crashloop");
    assert_eq!(states(bad), ["in_progress", "failure"], "{bad}");
    let last = bad["statuses"][0]["description"].as_str().unwrap().to_string();
    assert!(last.contains("pod_failed"), "{last}");
    assert_eq!(bad["payload"]["previous_image"], "example.invalid/web:v2");
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v2");
    server.assert_no_violations().await;
}

/// Several Deployments move together: a failure rolls back every one this
/// run changed.
#[test]
fn kubernetes_several_deployments_roll_back_together() {
    let ns = Ns::new("multi");
    ns.deployment("api", "example.invalid/web:v1", 2, 60);
    ns.deployment("worker", "example.invalid/web:v1", 1, 60);
    let run = ns.action("api\nworker:app").input("image", "example.invalid/web:crashloop").run();
    assert_status(&run, "failure", 1);
    assert!(run.stdout.contains("CrashLoopBackOff"), "{}", run.stdout);
    for name in ["api", "worker"] {
        assert!(
            run.stdout.contains(&format!("deployment {}/{name}: rolled back to revision 1", ns.0)),
            "{name}: {}",
            run.stdout
        );
        assert_eq!(image_of(&ns, name), "example.invalid/web:v1");
        ns.rollout_status(name, &[]).assert_ok();
        assert_eq!(serving_image(&ns, name), "example.invalid/web:v1");
    }
}

/// Replicas owned by a HorizontalPodAutoscaler survive a deploy and its
/// rollback: the action never writes them.
#[test]
fn kubernetes_replicas_owned_by_an_hpa_are_kept() {
    let ns = Ns::new("scale");
    ns.deployment("web", "example.invalid/web:v1", 2, 60);
    // A real HorizontalPodAutoscaler owns the replicas: its controller
    // raises them to minReplicas (no metrics are needed for that).
    kubectl_ok(&["-n", &ns.0, "autoscale", "deployment/web", "--min=3", "--max=5", "--cpu-percent=80"]);
    ns.until(60, "the HPA scaling web to 3", || ns.get("web", "{.spec.replicas}") == "3");
    let hpa = || kubectl_ok(&["-n", &ns.0, "get", "hpa", "web", "-o", "jsonpath={.status.desiredReplicas}"]);
    assert_eq!(hpa(), "3");
    ns.rollout_status("web", &[]).assert_ok();
    let run = ns.action("web").input("image", "example.invalid/web:v2").run();
    assert_status(&run, "success", 0);
    assert_eq!(ns.get("web", "{.spec.replicas}"), "3");
    // A re-run with the same image changes nothing (and reads KUBECONFIG
    // when there is no kubeconfig input).
    let rerun = ns
        .action("web")
        .without("INPUT_KUBECONFIG")
        .env("KUBECONFIG", &stack_var("K8S_KUBECONFIG"))
        .input("image", "example.invalid/web:v2")
        .run();
    assert_status(&rerun, "success", 0);
    assert!(rerun.stdout.contains("already runs example.invalid/web:v2"), "{}", rerun.stdout);
    assert_eq!(ns.get("web", "{.metadata.annotations.deployment\\.kubernetes\\.io/revision}"), "2");
    let run = ns.action("web").input("mode", "rollback").run();
    assert_status(&run, "success", 0);
    assert_eq!(ns.get("web", "{.spec.replicas}"), "3");
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v1");
    ns.rollout_status("web", &[]).assert_ok();
    assert_eq!(hpa(), "3");
    // A deploy after the action's own rollback: its undo's writes are not
    // another owner's (a conflict with itself once failed it here).
    let after = ns.action("web").input("image", "example.invalid/web:v3").run();
    assert_status(&after, "success", 0);
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v3");
    assert_eq!(ns.get("web", "{.spec.replicas}"), "3");
}

/// `mode: plan` asks the cluster (server-side dry run) and changes nothing.
#[test]
fn kubernetes_plan_is_a_server_side_dry_run() {
    let ns = Ns::new("plan");
    ns.deployment("web", "example.invalid/web:v1", 2, 60);
    ns.deployment("api", "example.invalid/web:v2", 1, 60);
    let before = ns.get("web", "{.metadata.generation}");
    let run = ns.action("web, api:app").input("mode", "plan").input("image", "example.invalid/web:v2").run();
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert_eq!(run.output("status"), Some("planned"));
    let web = format!(
        "deployment {}/web: container app example.invalid/web:v1 → example.invalid/web:v2 (a new revision)",
        ns.0
    );
    assert!(run.stdout.contains(&web), "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!(
            "deployment {}/api: container app already runs example.invalid/web:v2: nothing to do",
            ns.0
        )),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("server-side apply (field manager deploy-action)"), "{}", run.stdout);
    assert!(!run.stdout.contains("nginx"), "{}", run.stdout);
    assert_eq!(ns.get("web", "{.metadata.generation}"), before, "the dry run changed the Deployment");
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v1");
    // kubectl agrees nothing moved.
    ns.rollout_status("web", &[]).assert_ok();
}

/// A rolling deploy from a services file: each Deployment gets its own
/// image, a worker (`proxy: false`) among them.
#[test]
fn kubernetes_rolling_services_file_sets_each_deployments_image() {
    let ns = Ns::new("rollfile");
    ns.deployment("web", "example.invalid/web:v1", 1, 60);
    ns.deployment("worker", "example.invalid/worker:v1", 1, 60);
    let a = ns.action("").without("INPUT_DEPLOYMENTS").input("services-file", "services.yml");
    std::fs::write(
        a.path("services.yml"),
        "services:\n  - {name: web, container: app, image: example.invalid/web:v2}\n  - {name: worker, container: app, proxy: false, image: example.invalid/worker:v2}\n",
    )
    .unwrap();
    let run = a.run();
    assert_status(&run, "success", 0);
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v2");
    assert_eq!(image_of(&ns, "worker"), "example.invalid/worker:v2");
    ns.rollout_status("worker", &[]).assert_ok();
    assert_eq!(run.output("image"), Some("example.invalid/web:v2"));
}

/// Rolling: a `url` smoke test failing after the rollout undoes it.
#[test]
fn kubernetes_rolling_smoke_test_failing_rolls_back() {
    let ns = Ns::new("rollsmoke");
    ns.deployment("web", "example.invalid/web:v1", 1, 60);
    let (bad, _) = answering(500, "boom");
    let run = ns
        .action("web:app")
        .input("image", "example.invalid/web:v2")
        .input("smoke-tests", &format!("- {{name: live, url: '{bad}/'}}\n"))
        .run();
    assert_status(&run, "failure", 1);
    assert!(run.stdout.contains("smoke_test_failed") && run.stdout.contains("HTTP 500 in"), "{}", run.stdout);
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v1", "rolled back");
    // A `path` test has no host to go to on a cluster: refused up front.
    let run = ns
        .action("web:app")
        .input("image", "example.invalid/web:v2")
        .input("smoke-tests", "- {name: home, path: /}\n")
        .run();
    assert_eq!(run.code, Some(2), "{}", run.stdout);
    assert!(run.stdout.contains("'home' has a 'path'"), "{}", run.stdout);
}
