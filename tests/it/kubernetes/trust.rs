//! Issue 21: the action never reports a success that is not true, and
//! never takes traffic from what it did not deploy. Each test puts the
//! cluster in a situation the other tests do not choose and, where kubectl
//! has a verdict on it, checks kubectl's beside the action's.

use std::time::{Duration, Instant};

use super::{Ns, Verdict, assert_status, image_of, kubectl_ok, revision};
use crate::support::action::Action;

/// A Deployment like [`Ns::deployment`]'s, as a manifest in namespace `ns`.
fn manifest(ns: &str, name: &str, deadline: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  replicas: 1\n  progressDeadlineSeconds: {deadline}\n  strategy: {{type: RollingUpdate, rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}}}\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers:\n      - {{name: app, image: \"example.invalid/web:latest\"}}\n      - {{name: sidecar, image: \"example.invalid/sidecar:1\"}}\n"
    )
}

/// Case 1: the manifest's `metadata.namespace` (B) is not the `namespace`
/// input (A). The apply goes to B, so B's rollout is the one judged, and
/// undone there; A's Deployment of the same name is never touched. Before,
/// the action judged A/web (healthy) and exited 0 with B/web crash-looping.
#[test]
fn kubernetes_a_manifest_in_another_namespace_is_judged_and_undone_there() {
    let (a, b) = (Ns::new("nsa"), Ns::new("nsb"));
    a.deployment("web", "example.invalid/web:v1", 1, 20);
    b.deployment("web", "example.invalid/web:v1", 1, 20);
    b.deployment("twin", "example.invalid/web:v1", 1, 20);
    let a_generation = a.get("web", "{.metadata.generation}");
    let bad = "example.invalid/web:crashloop";
    kubectl_ok(&["-n", &b.0, "set", "image", "deployment/twin", &format!("app={bad}")]);
    let started = Instant::now();
    let twin = b.spawn_rollout_status("twin");
    let action =
        a.action("").without("INPUT_DEPLOYMENTS").input("manifests", "k8s/*.yaml").input("image", bad);
    std::fs::create_dir_all(action.path("k8s")).unwrap();
    std::fs::write(action.path("k8s/web.yaml"), manifest(&b.0, "web", 20)).unwrap();
    let run = action.run();
    let action_took = started.elapsed();
    let kubectl = Verdict(twin.wait_with_output().unwrap());
    let kubectl_took = started.elapsed();
    eprintln!("case 1: action failed after {action_took:?}, kubectl on the twin after {kubectl_took:?}");
    assert_status(&run, "failure", 1);
    kubectl.assert_failed("exceeded its progress deadline");
    assert!(action_took < kubectl_took, "action {action_took:?}, kubectl {kubectl_took:?}");
    let b_web = format!("deployment {}/web", b.0);
    assert!(
        run.stdout.contains(&format!("{b_web}: the manifest sets metadata.namespace {}", b.0)),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains(&format!("{b_web}: pod web-")), "{}", run.stdout);
    assert!(run.stdout.contains("CrashLoopBackOff"), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("{b_web}: rolled back to revision 1")), "{}", run.stdout);
    assert!(!run.stdout.contains(&format!("deployment {}/web", a.0)), "{}", run.stdout);
    // B is back on v1, and kubectl agrees it is rolled out; A never moved.
    assert_eq!(image_of(&b, "web"), "example.invalid/web:v1");
    b.rollout_status("web", &[]).assert_ok();
    assert_eq!(a.get("web", "{.metadata.generation}"), a_generation);
    assert_eq!(image_of(&a, "web"), "example.invalid/web:v1");
}

/// Case 2: while the action watches its rollout to v2, `kubectl set image`
/// puts v1 back. The rollout that then finishes is not this run's: the
/// action fails naming the field manager and the change, and leaves the
/// Deployment as kubectl set it (an undo would undo their change), as
/// `kubectl rollout status --revision=<ours>` fails too.
#[test]
fn kubernetes_a_template_changed_mid_rollout_fails_naming_who_changed_what() {
    let ns = Ns::new("taken");
    ns.deployment("web", "example.invalid/web:v1", 2, 60);
    // Every pod takes 4 s to become ready: the watch is under way when
    // the image is put back.
    kubectl_ok(&[
        "-n",
        &ns.0,
        "patch",
        "deployment/web",
        "-p",
        r#"{"spec":{"template":{"metadata":{"annotations":{"kwok.deploy-action/delay":"4s"}}}}}"#,
    ]);
    ns.rollout_status("web", &[]).assert_ok();
    assert_eq!(revision(&ns), "2");
    let generation: u64 = ns.get("web", "{.metadata.generation}").parse().unwrap();
    let action = ns.action("web:app").input("image", "example.invalid/web:v2");
    let child = action.spawn();
    ns.wait_observed_past("web", generation);
    assert_eq!(revision(&ns), "3", "the run's apply is revision 3");
    std::thread::sleep(Duration::from_millis(500));
    kubectl_ok(&["-n", &ns.0, "set", "image", "deployment/web", "app=example.invalid/web:v1"]);
    let run = action.finish(child.wait_with_output().unwrap());
    let kubectl = ns.rollout_status("web", &["--revision=3"]);
    assert_status(&run, "failure", 1);
    kubectl.assert_failed("desired revision (3) is different from the running revision (4)");
    for want in [
        "rollout_taken_over",
        "changed during the rollout by field manager kubectl-set",
        "container app example.invalid/web:v2 → example.invalid/web:v1",
        "not rolled back: left as field manager kubectl-set",
    ] {
        assert!(run.stdout.contains(want), "{want:?} not in:\n{}", run.stdout);
    }
    assert!(!run.stdout.contains("rolled back to revision"), "{}", run.stdout);
    assert!(!run.summary.contains("rolled out: revision"), "{}", run.summary);
    // kubectl's change stands: v1, revision 4, rolled out.
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v1");
    assert_eq!(revision(&ns), "4");
    ns.rollout_status("web", &[]).assert_ok();
}

/// A services file that is a list at the top level: one problem, naming
/// the shape expected, and no second, misleading one.
#[test]
fn kubernetes_a_services_file_that_is_a_list_names_the_shape_once() {
    let list = "- name: web\n  service: shop\n- name: api\n";
    for (target, strategy) in
        [("kubernetes", "blue-green"), ("kubernetes", "rolling"), ("hosts", "blue-green")]
    {
        let a = Action::new()
            .input("target", target)
            .input("strategy", strategy)
            .input("image", "example.invalid/web:v2")
            .input("services-file", "services.yml")
            .input("github-deployments", "false");
        std::fs::write(a.path("services.yml"), list).unwrap();
        let run = a.run();
        assert_eq!(run.code, Some(2), "{}", run.stdout);
        let problems: Vec<&str> =
            run.stdout.lines().filter(|l| l.contains("input 'services-file'")).collect();
        assert_eq!(problems.len(), 1, "{target}/{strategy}: {problems:#?}\n{}", run.stdout);
        assert!(problems[0].contains("is a list at the top level"), "{}", problems[0]);
        assert!(problems[0].contains("'services'"), "{}", problems[0]);
        assert!(!run.stdout.contains("FileRoot"), "{}", run.stdout);
        assert!(!run.stdout.contains("proxy: false"), "{}", run.stdout);
    }
}
