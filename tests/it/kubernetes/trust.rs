//! Issue 21: the action never reports a success that is not true, and
//! never takes traffic from what it did not deploy. Each test puts the
//! cluster in a situation the other tests do not choose and, where kubectl
//! has a verdict on it, checks kubectl's beside the action's.

use std::time::{Duration, Instant};

use super::{Ns, Verdict, assert_status, image_of, kubectl, kubectl_ok, kubectl_stdin, revision};
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

/// Case 3: `mode: rollback` while a canary stands (left at 50% for a later
/// promote): the canary is what the last run brought, so it is removed, its
/// share back to the stable Deployment, which that run never touched and
/// which stays at its revision. Before, the stable was undone one revision
/// too far (v2 → v1) and the canary kept its share.
#[test]
fn kubernetes_rollback_with_a_canary_standing_removes_the_canary_not_the_stable() {
    let ns = Ns::new("rbcanary");
    ns.deployment("web", "example.invalid/web:v1", 2, 60);
    ns.service("web");
    kubectl_ok(&["-n", &ns.0, "set", "image", "deployment/web", "app=example.invalid/web:v2"]);
    ns.rollout_status("web", &[]).assert_ok();
    let run = ns.canary("50", "replicas", "example.invalid/web:v3").run();
    assert_status(&run, "success", 0);
    assert!(!ns.gone("deployment", "web-canary"));
    let run = ns.action("web:app").input("strategy", "canary").input("mode", "rollback").run();
    assert_status(&run, "success", 0);
    assert!(run.stdout.contains("mode 'rollback' removes it (as mode 'abort' does)"), "{}", run.stdout);
    assert!(run.summary.contains("canary of example.invalid/web:v3 aborted at 50%"), "{}", run.summary);
    assert!(ns.gone("deployment", "web-canary"));
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v2");
    assert_eq!(revision(&ns), "2");
    ns.rollout_status("web", &[]).assert_ok();
    ns.until(30, "only the stable's pods behind web", || {
        let pods = ns.endpoint_pods("web");
        pods.len() == 2 && pods.iter().all(|p| !p.starts_with("web-canary-"))
    });
}

/// A Deployment whose pods carry `labels` (also its selector).
fn labelled(ns: &Ns, name: &str, labels: &str, replicas: u32) {
    let yaml = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {labels}}}\n  template:\n    metadata: {{labels: {labels}}}\n    spec:\n      containers:\n      - {{name: app, image: \"example.invalid/web:v1\"}}\n",
        ns = ns.0
    );
    kubectl_stdin(&["apply", "-f", "-"], &yaml);
    ns.rollout_status(name, &[]).assert_ok();
}

/// Case 4: Service `shop` selects `app: shop` over `web` and `api`. A
/// blue-green of `web` behind `shop` would narrow the selector to web's
/// pods and take api's out of the endpoints: refused before any change,
/// naming the Service, the other Deployment and the fix.
#[test]
fn kubernetes_blue_green_of_a_service_shared_with_another_deployment_is_refused() {
    let ns = Ns::new("shared");
    labelled(&ns, "web", "{app: shop, component: web}", 2);
    labelled(&ns, "api", "{app: shop, component: api}", 2);
    ns.service_for("shop", "shop");
    let before = ns.endpoint_pods("shop");
    assert_eq!(before.len(), 4, "{before:?}");
    let run = ns
        .blue_green_file("services:\n  - {name: web, service: shop}\n", Some("example.invalid/web:v2"))
        .run();
    assert_status(&run, "failure", 1);
    for want in [
        "service_shared",
        &format!("service {n}/shop also selects the pods of deployment {n}/api", n = ns.0),
        "give web a Service of its own",
    ] {
        assert!(run.stdout.contains(want), "{want:?} not in:\n{}", run.stdout);
    }
    assert_eq!(ns.selector("shop"), serde_json::json!({"app": "shop"}));
    assert!(ns.gone("deployment", "web-blue"));
    assert_eq!(ns.endpoint_pods("shop"), before);
}

/// Case 5: an HPA scales `web`: blue-green would run fixed replicas in the
/// colours and keep `web` at zero, switching the HPA off. Refused before
/// any change, naming the HPA and the fix.
#[test]
fn kubernetes_blue_green_of_a_deployment_an_hpa_scales_is_refused() {
    let ns = Ns::new("bghpa");
    ns.deployment("web", "example.invalid/web:v1", 2, 60);
    ns.service("web");
    kubectl_ok(&["-n", &ns.0, "autoscale", "deployment/web", "--min=2", "--max=5", "--cpu-percent=80"]);
    let before = ns.selector("web");
    let run = ns.blue_green("web:app", "example.invalid/web:v2").run();
    assert_status(&run, "failure", 1);
    for want in [
        "autoscaled_blue_green",
        &format!("horizontalpodautoscaler {n}/web scales deployment {n}/web", n = ns.0),
        "strategy 'rolling'",
    ] {
        assert!(run.stdout.contains(want), "{want:?} not in:\n{}", run.stdout);
    }
    assert_eq!(ns.selector("web"), before);
    assert_eq!(ns.replicas("web"), "2");
    assert!(ns.gone("deployment", "web-blue"));
}

/// Case 6: a Role without `list replicasets` (the watch's new ReplicaSet,
/// the undo's previous revision): refused before the image is applied,
/// naming the rule, as `kubectl auth can-i` says. Before, the image was
/// applied, then the watch and the undo were both forbidden.
#[test]
fn kubernetes_a_permission_of_the_way_back_missing_is_refused_before_any_change() {
    let ns = Ns::new("nors");
    ns.deployment("web", "example.invalid/web:v1", 2, 60);
    let rule = "resources: [\"replicasets\", \"controllerrevisions\"]\n    verbs: [\"list\"]";
    let role = super::readme_role();
    assert!(role.contains(rule), "{role}");
    // controllerrevisions keep their list; replicasets may only be read one by one.
    let narrowed = "resources: [\"controllerrevisions\"]\n    verbs: [\"list\"]\n  \
                    - apiGroups: [\"apps\"]\n    resources: [\"replicasets\"]\n    verbs: [\"get\"]";
    let kubeconfig = super::bound_to(&ns, &role.replace(rule, narrowed));
    let generation = ns.get("web", "{.metadata.generation}");
    let can_i = kubectl(&[
        "-n",
        &ns.0,
        "auth",
        "can-i",
        "list",
        "replicasets.apps",
        &format!("--as=system:serviceaccount:{}:deployer", ns.0),
    ]);
    assert_eq!(String::from_utf8_lossy(&can_i.stdout).trim(), "no");
    let run =
        ns.action("web").input("kubeconfig", &kubeconfig).input("image", "example.invalid/web:v2").run();
    assert_status(&run, "failure", 1);
    for want in [
        "kube_forbidden",
        &format!("cannot list replicasets in namespace {}", ns.0),
        "checked before any change",
        "verbs [\"list\"]",
    ] {
        assert!(run.stdout.contains(want), "{want:?} not in:\n{}", run.stdout);
    }
    assert_eq!(ns.get("web", "{.metadata.generation}"), generation, "nothing applied");
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v1");
    ns.rollout_status("web", &[]).assert_ok();
}

/// Case 8: a StatefulSet or a DaemonSet named in `deployments` gets a
/// message naming the kind found and what is supported, not "not found".
#[test]
fn kubernetes_a_statefulset_or_daemonset_named_is_called_by_its_kind() {
    let ns = Ns::new("kinds");
    for (kind, extra) in [("StatefulSet", "  serviceName: db\n  replicas: 1\n"), ("DaemonSet", "")] {
        let name = kind.to_lowercase();
        kubectl_stdin(
            &["-n", &ns.0, "apply", "-f", "-"],
            &format!(
                "apiVersion: apps/v1\nkind: {kind}\nmetadata: {{name: {name}}}\nspec:\n{extra}  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers:\n      - {{name: app, image: \"example.invalid/web:v1\"}}\n"
            ),
        );
        let run = ns.action(&name).input("image", "example.invalid/web:v2").run();
        assert_status(&run, "failure", 1);
        let want = format!("{name} {}/{name} is a {kind}, not a Deployment", ns.0);
        assert!(run.stdout.contains(&want), "{want:?} not in:\n{}", run.stdout);
        assert!(run.stdout.contains("kube_kind_unsupported"), "{}", run.stdout);
        assert!(!run.stdout.contains("not found"), "{}", run.stdout);
    }
}

/// Case 8: 10% by replica ratio beside 1 stable replica would really be
/// 50% (1 canary pod beside 1): refused before any change, naming the real
/// share and the fix.
#[test]
fn kubernetes_a_canary_share_the_replicas_cannot_express_is_refused() {
    let ns = Ns::new("share");
    ns.deployment("web", "example.invalid/web:v1", 1, 60);
    ns.service("web");
    let generation = ns.get("web", "{.metadata.generation}");
    let run = ns.canary("10,100", "replicas", "example.invalid/web:v2").run();
    assert_status(&run, "failure", 1);
    for want in [
        "canary_share_inexpressible",
        // (`%` is `%25` in the annotation's workflow command.)
        "cannot be expressed by replicas with 1 stable replica(s): 1 canary pod(s) beside 1 is 50.0",
        &format!("scale deployment {}/web to at least 6 replicas", ns.0),
    ] {
        assert!(run.stdout.contains(want), "{want:?} not in:\n{}", run.stdout);
    }
    assert!(ns.gone("deployment", "web-canary"));
    assert_eq!(ns.get("web", "{.metadata.generation}"), generation);
    assert_eq!(ns.endpoint_pods("web").len(), 1);
}

/// Lines of a `kubectl get -w` of `args`, each with the time it came.
struct Watched {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<(Instant, String)>>>,
}

impl Watched {
    fn start(ns: &Ns, args: &[&str]) -> Self {
        use std::io::BufRead;
        let mut all = vec!["-n", ns.0.as_str(), "get", "-w"];
        all.extend_from_slice(args);
        let mut child = super::kubectl_cmd(&all)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let into = lines.clone();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                into.lock().unwrap().push((Instant::now(), l));
            }
        });
        Watched { child, lines }
    }

    fn stop(mut self) -> Vec<(Instant, String)> {
        std::thread::sleep(Duration::from_millis(300));
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.lines.lock().unwrap().clone()
    }
}

/// Runs `action` while watching Service `web`'s colour and Deployment
/// `watched`'s replicas; returns the run, and the seconds from the last
/// time the Service went (back) to `colour` to the first time `watched`
/// was at 0 replicas after that.
fn drained(ns: &Ns, action: &Action, watched: &str, colour: &str) -> (crate::support::action::Run, f64) {
    let service = Watched::start(ns, &["service", "web", "-o", "jsonpath={.spec.selector}{\"\\n\"}"]);
    let replicas = Watched::start(ns, &["deployment", watched, "-o", "jsonpath={.spec.replicas}{\"\\n\"}"]);
    std::thread::sleep(Duration::from_millis(500));
    let run = action.finish(action.spawn().wait_with_output().unwrap());
    let (service, replicas) = (service.stop(), replicas.stop());
    let colour_of = |l: &str| {
        serde_json::from_str::<serde_json::Value>(l)
            .ok()
            .and_then(|v| v["deploy-action/colour"].as_str().map(String::from))
    };
    let flip = service
        .windows(2)
        .rev()
        .find(|w| {
            colour_of(&w[0].1).as_deref() != Some(colour) && colour_of(&w[1].1).as_deref() == Some(colour)
        })
        .map(|w| w[1].0)
        .unwrap_or_else(|| panic!("the flip to {colour} seen: {service:?}\n{}", run.stdout));
    let down = replicas
        .iter()
        .find(|(at, l)| *at >= flip && l.trim() == "0")
        .map(|(at, _)| *at)
        .unwrap_or_else(|| panic!("{watched} at 0 seen: {replicas:?}\n{}", run.stdout));
    (run, (down - flip).as_secs_f64())
}

/// Case 7: drain on a cluster's way back. `mode: rollback` of a blue-green
/// with `drain-time: 5s` keeps the colour it leaves for the drain after the
/// selector flips back; so does the way back of a candidate that failed
/// after the flip. Before, they went 0.1 s after the flip.
#[test]
fn kubernetes_blue_green_way_back_drains_before_the_pods_go() {
    let ns = Ns::new("bgdrain");
    ns.deployment("web", "example.invalid/web:v1", 1, 60);
    ns.service("web");
    assert_status(&ns.blue_green("web:app", "example.invalid/web:v2").run(), "success", 0);
    assert_status(&ns.blue_green("web:app", "example.invalid/web:v3").run(), "success", 0);
    assert_eq!(ns.selector("web")["deploy-action/colour"], "green");

    let rollback = ns
        .blue_green("web:app", "")
        .without("INPUT_IMAGE")
        .input("mode", "rollback")
        .input("drain-time", "5s");
    let (run, took) = drained(&ns, &rollback, "web-green", "blue");
    assert_status(&run, "success", 0);
    eprintln!("case 7, mode rollback: web-green scaled to 0 {took:.1}s after the flip back to blue");
    assert!(took >= 4.5, "{took:.1}s:\n{}", run.stdout);
    assert!(
        run.stdout.contains("draining for 5s before the colour rolled back from is scaled to 0"),
        "{}",
        run.stdout
    );

    // v4 fails its smoke test after the flip to green: back to blue, then
    // green drains before it goes to zero.
    let (bad, _) = super::answering(503, "broken");
    let failing = ns
        .blue_green("web:app", "example.invalid/web:v4")
        .input("smoke-tests", &format!("- {{name: live, url: '{bad}/'}}\n"))
        .input("drain-time", "5s");
    let (run, took) = drained(&ns, &failing, "web-green", "blue");
    assert_status(&run, "failure", 1);
    assert!(run.stdout.contains("selector now deploy-action/colour=green"), "{}", run.stdout);
    eprintln!("case 7, failed candidate: web-green down {took:.1}s after the flip back to blue");
    assert!(took >= 4.5, "{took:.1}s:\n{}", run.stdout);
    assert_eq!(ns.selector("web")["deploy-action/colour"], "blue");
    assert_eq!(image_of(&ns, "web-green"), "example.invalid/web:v3");
}

/// Case 7, canary: behind a weighted router the canary keeps its pods for
/// `drain-time` after its weight went to 0, before it is removed.
#[test]
fn kubernetes_canary_abort_drains_after_the_weight_goes_to_zero() {
    let ns = Ns::new("canarydrain");
    ns.deployment("web", "example.invalid/web:v1", 2, 60);
    ns.service("web");
    ns.httproute("web");
    assert_status(&ns.canary("20", "httproute/shop", "example.invalid/web:v2").run(), "success", 0);
    assert_eq!(ns.route_weights(), "web=80 web-canary=20");
    let abort = ns.decide("abort", "httproute/shop").input("drain-time", "5s");
    let mut child = abort.spawn();
    let (mut zero, mut gone) = (None, None);
    loop {
        let ended = child.try_wait().unwrap().is_some();
        if zero.is_none() && ns.route_weights() == "web=100" {
            zero = Some(Instant::now());
        }
        if zero.is_some() && gone.is_none() && ns.gone("deployment", "web-canary") {
            gone = Some(Instant::now());
        }
        if ended {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let run = abort.finish(child.wait_with_output().unwrap());
    assert_status(&run, "success", 0);
    let took = (gone.expect("the canary removed") - zero.expect("the weight seen at 0")).as_secs_f64();
    eprintln!("case 7, canary abort: web-canary removed {took:.1}s after its weight went to 0");
    assert!(took >= 4.5, "{took:.1}s:\n{}", run.stdout);
}

/// `mode: rollback` right after the first blue-green deploy: there is no
/// other colour yet; what served before is `web` itself, kept at zero as
/// the template. It comes back up and the Service is pinned to its pods
/// again. Before, the run failed with "deployment web-green not found".
#[test]
fn kubernetes_blue_green_rollback_right_after_the_first_deploy_brings_the_source_back() {
    let ns = Ns::new("bgfirst");
    ns.deployment("web", "example.invalid/web:v1", 2, 60);
    ns.service("web");
    assert_status(&ns.blue_green("web:app", "example.invalid/web:v2").run(), "success", 0);
    assert_eq!(ns.replicas("web"), "0");
    let run = ns.blue_green("web:app", "").without("INPUT_IMAGE").input("mode", "rollback").run();
    assert_status(&run, "success", 0);
    assert_eq!(run.output("image"), Some("example.invalid/web:v1"), "{}", run.stdout);
    let selector = ns.selector("web");
    assert!(selector.get("deploy-action/colour").is_none(), "{selector}");
    assert!(selector.get("pod-template-hash").is_some(), "{selector}");
    assert_eq!(ns.replicas("web"), "2");
    assert_eq!(ns.replicas("web-blue"), "0");
    ns.rollout_status("web", &[]).assert_ok();
    ns.until(30, "only web's own pods behind web", || {
        let pods = ns.endpoint_pods("web");
        pods.len() == 2 && pods.iter().all(|p| !p.starts_with("web-blue-"))
    });
    // The next deploy adopts it again, into the colour at zero.
    assert_status(&ns.blue_green("web:app", "example.invalid/web:v3").run(), "success", 0);
    assert_eq!(ns.selector("web")["deploy-action/colour"], "blue");
    assert_eq!(image_of(&ns, "web-blue"), "example.invalid/web:v3");
}

/// A Deployment selecting its pods by `matchExpressions` only keeps early
/// failure detection: its crash-looping pod is named well before the
/// progress deadline, where kubectl (and, before, the action) only fails at
/// the deadline.
#[test]
fn kubernetes_a_selector_of_expressions_only_keeps_early_failure_detection() {
    let ns = Ns::new("exprsel");
    let yaml = |name: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  replicas: 1\n  progressDeadlineSeconds: 20\n  selector:\n    matchExpressions: [{{key: app, operator: In, values: [{name}]}}]\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers:\n      - {{name: app, image: \"example.invalid/web:v1\"}}\n",
            ns = ns.0
        )
    };
    for name in ["web", "twin"] {
        kubectl_stdin(&["apply", "-f", "-"], &yaml(name));
        ns.rollout_status(name, &[]).assert_ok();
    }
    let bad = "example.invalid/web:crashloop";
    kubectl_ok(&["-n", &ns.0, "set", "image", "deployment/twin", &format!("app={bad}")]);
    let started = Instant::now();
    let twin = ns.spawn_rollout_status("twin");
    let run = ns.action("web:app").input("image", bad).run();
    let action_took = started.elapsed();
    let kubectl = Verdict(twin.wait_with_output().unwrap());
    let kubectl_took = started.elapsed();
    eprintln!("matchExpressions: action failed after {action_took:?}, kubectl after {kubectl_took:?}");
    assert_status(&run, "failure", 1);
    kubectl.assert_failed("exceeded its progress deadline");
    assert!(run.stdout.contains("CrashLoopBackOff") && run.stdout.contains("pod web-"), "{}", run.stdout);
    assert!(
        action_took + Duration::from_secs(3) < kubectl_took,
        "action {action_took:?}, kubectl {kubectl_took:?}"
    );
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v1");
    ns.rollout_status("web", &[]).assert_ok();
}

/// A registry blip: the new pods' first pull fails (ErrImagePull), the
/// kubelet's next one succeeds (the stack's `pullblip` behaviour, 8 s
/// later). The rollout completes and is reported as done. Before, the
/// first ErrImagePull failed the deploy at once and undid it. A pull that
/// keeps failing still fails early (`kubernetes_bad_image_is_caught...`).
#[test]
fn kubernetes_a_registry_blip_heals_within_the_pull_grace() {
    let ns = Ns::new("blip");
    ns.deployment("web", "example.invalid/web:v1", 2, 60);
    let run = ns.action("web").input("image", "example.invalid/web:pullblip").run();
    assert_status(&run, "success", 0);
    assert!(run.stdout.contains("is in ErrImagePull"), "the blip was seen:\n{}", run.stdout);
    assert!(run.stdout.contains("the kubelet pulls again within 20s"), "{}", run.stdout);
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:pullblip");
    ns.rollout_status("web", &[]).assert_ok();
}
