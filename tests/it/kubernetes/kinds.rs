//! StatefulSets and DaemonSets (issue 21): rolled by a rolling deploy,
//! judged as `kubectl rollout status` judges each kind, failing pods found
//! early, undone through their ControllerRevisions; refused where they do
//! not fit (blue-green, canary, `updateStrategy: OnDelete`, a bare name).
//! kubectl's verdict sits beside the action's in each.

use std::time::Instant;

use super::{Ns, Verdict, assert_status, bound_to, kubectl, kubectl_ok, kubectl_stdin, readme_role};

impl Ns {
    /// A StatefulSet (`kind` `StatefulSet`) or DaemonSet made with plain
    /// `kubectl apply`, rolled out to `image`.
    fn workload(&self, kind: &str, name: &str, image: &str, replicas: u32, strategy: &str) {
        kubectl_stdin(&["apply", "-f", "-"], &workload_yaml(&self.0, kind, name, image, replicas, strategy));
        if strategy == "RollingUpdate" {
            self.kind_status(kind, name).assert_ok();
        }
    }

    /// `kubectl rollout status <kind>/<name>`.
    fn kind_status(&self, kind: &str, name: &str) -> Verdict {
        let target = format!("{}/{name}", kind.to_lowercase());
        Verdict(kubectl(&["-n", &self.0, "rollout", "status", "--timeout=90s", &target]))
    }

    fn kind_get(&self, kind: &str, name: &str, path: &str) -> String {
        kubectl_ok(&["-n", &self.0, "get", &kind.to_lowercase(), name, "-o", &format!("jsonpath={path}")])
    }

    /// The images the pods of `name` run, sorted (pods of every revision).
    fn pod_images(&self, name: &str) -> Vec<String> {
        let out = kubectl_ok(&[
            "-n",
            &self.0,
            "get",
            "pods",
            "-l",
            &format!("app={name}"),
            "-o",
            "jsonpath={range .items[*]}{.spec.containers[0].image}{\"\\n\"}{end}",
        ]);
        let mut v: Vec<String> = out.lines().map(String::from).collect();
        v.sort();
        v
    }
}

fn workload_yaml(ns: &str, kind: &str, name: &str, image: &str, replicas: u32, strategy: &str) -> String {
    let (replicas, extra) = match kind {
        "StatefulSet" => (format!("  replicas: {replicas}\n"), format!("  serviceName: {name}\n")),
        _ => (String::new(), String::new()),
    };
    format!(
        "apiVersion: apps/v1\nkind: {kind}\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{replicas}{extra}  updateStrategy: {{type: {strategy}}}\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers:\n      - {{name: app, image: \"{image}\"}}\n"
    )
}

fn image_in(ns: &Ns, kind: &str, name: &str) -> String {
    ns.kind_get(kind, name, "{.spec.template.spec.containers[0].image}")
}

/// A StatefulSet and a DaemonSet roll to a new image; the action's last
/// word on each is kubectl's own message, and kubectl agrees.
#[test]
fn kubernetes_a_statefulset_and_a_daemonset_roll_as_kubectl_judges_them() {
    let ns = Ns::new("kinds");
    ns.workload("StatefulSet", "db", "example.invalid/db:v1", 3, "RollingUpdate");
    ns.workload("DaemonSet", "agent", "example.invalid/agent:v1", 0, "RollingUpdate");
    let run = ns.action("statefulset/db:app, ds/agent").input("image", "example.invalid/db:v2").run();
    assert_status(&run, "success", 0);
    for (kind, name) in [("StatefulSet", "db"), ("DaemonSet", "agent")] {
        assert_eq!(image_in(&ns, kind, name), "example.invalid/db:v2");
        let verdict = ns.kind_status(kind, name);
        verdict.assert_ok();
        // The action's last word on the object is kubectl's, word for word.
        let kubectl_said = verdict.text().lines().last().unwrap_or_default().trim().to_string();
        let ours = format!("{} {}/{name}: {kubectl_said}", kind.to_lowercase(), ns.0);
        assert!(run.stdout.contains(&ours), "no '{ours}' in:\n{}", run.stdout);
    }
    let sts = format!("statefulset {}/db", ns.0);
    let ds = format!("daemonset {}/agent", ns.0);
    // `updateStrategy: {type: RollingUpdate}` leaves `rollingUpdate` unset,
    // so kubectl (and the action) take the revision branch, not the
    // partitioned one.
    assert!(
        run.stdout.contains(&format!("{sts}: statefulset rolling update complete 3 pods at revision db-"))
    );
    assert!(
        run.stdout.contains(&format!("{ds}: daemon set \"agent\" successfully rolled out")),
        "{}",
        run.stdout
    );
    assert_eq!(ns.pod_images("db"), vec!["example.invalid/db:v2"; 3]);
    // One pod per kwok node.
    assert_eq!(ns.pod_images("agent"), vec!["example.invalid/db:v2"; 3]);
    assert!(run.summary.contains(&sts) && run.summary.contains(&ds), "{}", run.summary);
    assert_eq!(run.output("previous-image"), Some("example.invalid/db:v1"));
}

/// A crash-looping StatefulSet is caught by its new pod, long before any
/// deadline (these kinds have none: kubectl would wait for its --timeout),
/// and goes back to the ControllerRevision that served: the same revision
/// name as before, every pod on v1 and ready (the broken pod replaced,
/// which `OrderedReady` alone would never do), kubectl agreeing. The same
/// for a DaemonSet.
#[test]
fn kubernetes_a_failing_statefulset_or_daemonset_goes_back_through_its_revision() {
    let ns = Ns::new("kindsbad");
    ns.workload("StatefulSet", "db", "example.invalid/db:v1", 3, "RollingUpdate");
    ns.workload("DaemonSet", "agent", "example.invalid/agent:v1", 0, "RollingUpdate");
    let before = ns.kind_get("StatefulSet", "db", "{.status.updateRevision}");
    for (target, kind, name, v1) in [
        ("sts/db", "StatefulSet", "db", "example.invalid/db:v1"),
        ("daemonset/agent", "DaemonSet", "agent", "example.invalid/agent:v1"),
    ] {
        let started = Instant::now();
        let run = ns.action(target).input("image", "example.invalid/db:crashloop").run();
        let took = started.elapsed();
        assert_status(&run, "failure", 1);
        let object = format!("{} {}/{name}", kind.to_lowercase(), ns.0);
        assert!(run.stdout.contains(&format!("{object}: pod {name}-")), "{}", run.stdout);
        assert!(run.stdout.contains("CrashLoopBackOff"), "{}", run.stdout);
        assert!(run.stdout.contains(&format!("{object}: rolled back to revision ")), "{}", run.stdout);
        assert!(took.as_secs() < 60, "{target}: failed after {took:?}");
        assert_eq!(image_in(&ns, kind, name), v1);
        ns.kind_status(kind, name).assert_ok();
        ns.until(60, "every pod back on v1", || ns.pod_images(name).iter().all(|i| i == v1));
    }
    assert_eq!(ns.kind_get("StatefulSet", "db", "{.status.updateRevision}"), before);
    assert_eq!(ns.kind_get("StatefulSet", "db", "{.status.currentRevision}"), before);
    assert_eq!(ns.pod_images("db").len(), 3);
}

/// `mode: rollback` of a StatefulSet is `kubectl rollout undo`: the same
/// template and revision as kubectl's undo of a twin.
#[test]
fn kubernetes_rollback_mode_of_a_statefulset_matches_kubectl_rollout_undo() {
    let (a, b) = (Ns::new("stsundo-a"), Ns::new("stsundo-b"));
    for ns in [&a, &b] {
        ns.workload("StatefulSet", "db", "example.invalid/db:v1", 2, "RollingUpdate");
        kubectl_ok(&["-n", &ns.0, "set", "image", "statefulset/db", "app=example.invalid/db:v2"]);
        ns.kind_status("StatefulSet", "db").assert_ok();
    }
    let run = a.action("statefulset/db").input("mode", "rollback").run();
    assert_status(&run, "success", 0);
    kubectl_ok(&["-n", &b.0, "rollout", "undo", "statefulset/db"]);
    b.kind_status("StatefulSet", "db").assert_ok();
    let template = |ns: &Ns| ns.kind_get("StatefulSet", "db", "{.spec.template}");
    assert_eq!(template(&a), template(&b));
    assert_eq!(image_in(&a, "StatefulSet", "db"), "example.invalid/db:v1");
    assert_eq!(run.output("image"), Some("example.invalid/db:v1"));
    let revisions = |ns: &Ns| {
        kubectl_ok(&["-n", &ns.0, "get", "controllerrevisions", "-o", "jsonpath={.items[*].revision}"])
    };
    assert_eq!(revisions(&a), revisions(&b));
}

/// A StatefulSet in `manifests` is judged with the Deployment, not applied
/// and forgotten: a crash-looping one fails the deploy (and the
/// Deployment goes back). Before, the run exited 0 with a warning.
#[test]
fn kubernetes_a_statefulset_in_the_manifests_is_judged() {
    let ns = Ns::new("kindsman");
    ns.deployment("web", "example.invalid/web:v1", 1, 60);
    ns.workload("StatefulSet", "cache", "example.invalid/cache:v1", 1, "RollingUpdate");
    let web = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n      - {name: app, image: \"example.invalid/web:latest\"}\n      - {name: sidecar, image: \"example.invalid/sidecar:1\"}\n";
    let cache =
        workload_yaml(&ns.0, "StatefulSet", "cache", "example.invalid/cache:crashloop", 1, "RollingUpdate");
    let action = ns.manifests_action("example.invalid/web:v2", &format!("{web}---\n{cache}"));
    let run = action.run();
    assert_status(&run, "failure", 1);
    let cache_ref = format!("statefulset {}/cache", ns.0);
    assert!(
        run.stdout.contains(&format!("{cache_ref}: pod cache-0 is in CrashLoopBackOff")),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("kube_kind_not_judged"), "{}", run.stdout);
    assert_eq!(super::image_of(&ns, "web"), "example.invalid/web:v1");
    assert_eq!(image_in(&ns, "StatefulSet", "cache"), "example.invalid/cache:v1");
    ns.kind_status("StatefulSet", "cache").assert_ok();
}

/// Refused before any change, each naming the object and the fix: a bare
/// name that is a StatefulSet (item 8: it used to read "not found"), a
/// StatefulSet in blue-green and a DaemonSet in a canary (inputs, before
/// any contact), an `OnDelete` StatefulSet (no rollout to judge), and a
/// Role without `list controllerrevisions` (the way back); with the
/// rules docs/kubernetes.md adds for these kinds, the same deploy runs.
#[test]
fn kubernetes_statefulsets_and_daemonsets_are_refused_where_they_do_not_fit() {
    let ns = Ns::new("kindsno");
    ns.workload("StatefulSet", "db", "example.invalid/db:v1", 1, "RollingUpdate");
    ns.workload("StatefulSet", "ondel", "example.invalid/db:v1", 1, "OnDelete");
    ns.until(60, "ondel's pod", || ns.pod_images("ondel").len() == 1);
    let generation = |name: &str| ns.kind_get("StatefulSet", name, "{.metadata.generation}");
    let (g_db, g_ondel) = (generation("db"), generation("ondel"));

    let run = ns.action("db").input("image", "example.invalid/db:v2").run();
    assert_status(&run, "failure", 1);
    assert!(run.stdout.contains("kube_kind_unsupported"), "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!(
            "statefulset {}/db is a StatefulSet, not a Deployment: name it as statefulset/db in 'deployments'",
            ns.0
        )),
        "{}",
        run.stdout
    );

    for (strategy, target) in [("blue-green", "statefulset/db"), ("canary", "ds/agent")] {
        let run = ns.action(target).input("strategy", strategy).input("image", "example.invalid/db:v2").run();
        assert_eq!(run.code, Some(2), "{}", run.stdout);
        assert!(
            run.stdout.contains(&format!("strategy '{strategy}' takes Deployments only")),
            "{}",
            run.stdout
        );
    }

    let run = ns.action("statefulset/ondel").input("image", "example.invalid/db:v2").run();
    assert_status(&run, "failure", 1);
    assert!(run.stdout.contains("update_strategy_on_delete"), "{}", run.stdout);
    assert!(run.stdout.contains("set updateStrategy type RollingUpdate"), "{}", run.stdout);
    // A manifest that leaves updateStrategy out keeps the live OnDelete (an
    // apply does not touch a field it omits): refused the same, before the
    // apply (before, it applied and then failed the rollout).
    let manifest = workload_yaml(&ns.0, "StatefulSet", "ondel", "example.invalid/db:latest", 1, "OnDelete")
        .replace("  updateStrategy: {type: OnDelete}\n", "");
    assert!(!manifest.contains("updateStrategy"), "{manifest}");
    let run = ns.manifests_action("example.invalid/db:v2", &manifest).run();
    assert_status(&run, "failure", 1);
    assert!(run.stdout.contains("update_strategy_on_delete"), "{}", run.stdout);

    let rules = crate::support::fenced_after(
        &crate::support::doc_section("docs/kubernetes.md", "## Access and RBAC"),
        "To roll StatefulSets or DaemonSets, add these rules",
    );
    let without_history = rules.replace("resources: [\"controllerrevisions\"]", "resources: [\"none\"]");
    // The base Role lists controllerrevisions too (a Secret a revision
    // uses is kept): taken out of both.
    let base = readme_role()
        .replace(r#"resources: ["replicasets", "controllerrevisions"]"#, r#"resources: ["replicasets"]"#);
    assert!(!base.contains("controllerrevisions"), "{base}");
    let kubeconfig = bound_to(&ns, &format!("{base}{without_history}"));
    let run = ns
        .action("statefulset/db")
        .input("kubeconfig", &kubeconfig)
        .input("image", "example.invalid/db:v2")
        .run();
    assert_status(&run, "failure", 1);
    assert!(
        run.stdout.contains(&format!("cannot list controllerrevisions in namespace {}", ns.0)),
        "{}",
        run.stdout
    );
    assert_eq!((generation("db"), generation("ondel")), (g_db, g_ondel), "nothing changed");

    // The documented rules are enough (a Role of the same name replaced).
    kubectl_stdin(
        &["-n", &ns.0, "apply", "-f", "-"],
        &format!(
            "apiVersion: rbac.authorization.k8s.io/v1\n{}{rules}",
            readme_role().replace("namespace: shop", &format!("namespace: {}", ns.0))
        ),
    );
    let run = ns
        .action("statefulset/db")
        .input("kubeconfig", &kubeconfig)
        .input("image", "example.invalid/db:v2")
        .run();
    assert_status(&run, "success", 0);
    assert_eq!(image_in(&ns, "StatefulSet", "db"), "example.invalid/db:v2");
}

/// The app's Secret from SSM in a StatefulSet: after a rotation, the
/// clean-up of superseded Secrets keeps the one the live template names
/// and the one its previous ControllerRevision names (the way back). Before,
/// it looked at Deployments and ReplicaSets only and deleted the Secret
/// the StatefulSet had just been given: its next pod would not start.
#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_a_statefulsets_secrets_stay_while_its_revisions_use_them() {
    let ns = Ns::new("kindssec");
    ns.workload("StatefulSet", "db", "example.invalid/db:v1", 1, "RollingUpdate");
    let ssm = aws_sdk_ssm::Client::new(&crate::support::moto_config().await);
    let prefix = format!("/k8s-sts-{}/db/", crate::support::action::unique_run_id());
    let secret_of = |ns: &Ns| {
        ns.kind_get("StatefulSet", "db", "{.spec.template.spec.containers[0].envFrom[*].secretRef.name}")
    };
    let mut names = Vec::new();
    for (token, image) in [("t-1", "example.invalid/db:v2"), ("t-2", "example.invalid/db:v3")] {
        super::put_ssm(&ssm, &prefix, &[("token", token)]).await;
        let action = ns.action("sts/db").moto().input("ssm-paths", &prefix).input("image", image);
        let run = tokio::task::spawn_blocking(move || action.run()).await.unwrap();
        assert_status(&run, "success", 0);
        let name = secret_of(&ns);
        assert!(name.starts_with("web-secrets-"), "envFrom: {name:?}");
        names.push(name);
    }
    assert_ne!(names[0], names[1], "a rotation makes a new Secret");
    let secrets = kubectl_ok(&["-n", &ns.0, "get", "secrets", "-o", "name"]);
    for name in &names {
        assert!(secrets.contains(&format!("secret/{name}")), "{name} deleted; left: {secrets}");
    }
    ns.kind_status("StatefulSet", "db").assert_ok();
}
