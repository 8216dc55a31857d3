//! `target: kubernetes` on the stack's real control plane (kube-apiserver,
//! controller-manager, scheduler; kwok nodes), through the built binary.
//! Each test has its own namespace, deleted at the end. In each, `kubectl
//! rollout status` judges a Deployment in the same state and must reach the
//! action's verdict.

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::action::{Action, Run, unique_run_id};
use crate::support::stack_var;

fn kubectl_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(stack_var("K8S_KUBECTL"));
    c.arg("--kubeconfig").arg(stack_var("K8S_KUBECONFIG")).args(args);
    c
}

pub(crate) fn kubectl(args: &[&str]) -> Output {
    kubectl_cmd(args).output().expect("run kubectl")
}

pub(crate) fn kubectl_ok(args: &[&str]) -> String {
    let o = kubectl(args);
    assert!(o.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn kubectl_stdin(args: &[&str], input: &str) {
    let mut c = kubectl_cmd(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// A namespace of this test only, deleted when dropped.
pub(crate) struct Ns(pub(crate) String);

impl Ns {
    pub(crate) fn new(tag: &str) -> Self {
        let name = format!("da-it-{tag}-{}", unique_run_id());
        kubectl_ok(&["create", "namespace", &name]);
        let ns = Ns(name);
        // Pods are refused until the serviceaccount controller made `default`.
        ns.until(30, "the default serviceaccount", || {
            kubectl(&["-n", &ns.0, "get", "serviceaccount", "default"]).status.success()
        });
        ns
    }

    pub(crate) fn until(&self, secs: u64, what: &str, mut f: impl FnMut() -> bool) {
        let end = Instant::now() + Duration::from_secs(secs);
        while !f() {
            assert!(Instant::now() < end, "{what} not within {secs}s in {}", self.0);
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub(crate) fn get(&self, name: &str, path: &str) -> String {
        kubectl_ok(&["-n", &self.0, "get", "deployment", name, "-o", &format!("jsonpath={path}")])
    }

    /// A Deployment made with plain `kubectl apply`, rolled out to `image`.
    pub(crate) fn deployment(&self, name: &str, image: &str, replicas: u32, deadline: u32) {
        let yaml = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  replicas: {replicas}\n  progressDeadlineSeconds: {deadline}\n  strategy: {{type: RollingUpdate, rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}}}\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers:\n      - {{name: app, image: \"{image}\"}}\n      - {{name: sidecar, image: \"example.invalid/sidecar:1\"}}\n",
            ns = self.0
        );
        kubectl_stdin(&["apply", "-f", "-"], &yaml);
        self.rollout_status(name, &[]).assert_ok();
    }

    fn rollout_status(&self, name: &str, extra: &[&str]) -> Verdict {
        let mut args = vec!["-n", &self.0, "rollout", "status", "--timeout=90s"];
        let target = format!("deployment/{name}");
        args.push(&target);
        args.extend_from_slice(extra);
        Verdict(kubectl(&args))
    }

    fn spawn_rollout_status(&self, name: &str) -> Child {
        kubectl_cmd(&["-n", &self.0, "rollout", "status", "--timeout=90s", &format!("deployment/{name}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Waits until the controller has observed a template change past
    /// `generation` (so a `kubectl rollout status` started now judges the
    /// new rollout, not the finished old one).
    pub(crate) fn wait_observed_past(&self, name: &str, generation: u64) {
        self.until(30, "the new generation observed", || {
            let g: u64 = self.get(name, "{.metadata.generation}").parse().unwrap_or(0);
            let o: u64 = self.get(name, "{.status.observedGeneration}").parse().unwrap_or(0);
            g > generation && o >= g
        });
    }

    /// Another declarative owner (a GitOps tool) applies `image` to
    /// Deployment `name`'s container `app`.
    fn gitops_applies_image(&self, name: &str, image: &str) {
        let yaml = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {}}}\nspec:\n  template:\n    spec:\n      containers:\n      - {{name: app, image: {image}}}\n",
            self.0
        );
        kubectl_stdin(
            &["apply", "--server-side", "--force-conflicts", "--field-manager=gitops", "-f", "-"],
            &yaml,
        );
    }

    /// Runs `action`, sends SIGTERM `after` the controller saw its change
    /// to Deployment `name`, and checks that it ended within 7 s of the
    /// signal as cancelled (`error`, exit 130).
    pub(crate) fn sigterm_mid_rollout(&self, action: &Action, name: &str, after: Duration) -> Run {
        let generation: u64 = self.get(name, "{.metadata.generation}").parse().unwrap();
        let child = action.spawn();
        self.wait_observed_past(name, generation);
        std::thread::sleep(after);
        let signalled = Instant::now();
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        let (run, took) = crate::fleet::finish_within(action, child, Duration::from_secs(20));
        assert!(took < Duration::from_secs(7), "took {took:?} after SIGTERM:\n{}", run.stdout);
        assert!(signalled.elapsed() >= took);
        assert_status(&run, "error", 130);
        run
    }

    /// An action deploying `image` with `manifests: k8s/*.yaml`, the
    /// manifests being `yaml` in `k8s/app.yaml`.
    pub(crate) fn manifests_action(&self, image: &str, yaml: &str) -> Action {
        let a = self
            .action("")
            .without("INPUT_DEPLOYMENTS")
            .input("manifests", "k8s/*.yaml")
            .input("image", image);
        std::fs::create_dir_all(a.path("k8s")).unwrap();
        std::fs::write(a.path("k8s/app.yaml"), yaml).unwrap();
        a
    }

    pub(crate) fn action(&self, deployments: &str) -> Action {
        let kubeconfig = std::fs::read_to_string(stack_var("K8S_KUBECONFIG")).unwrap();
        Action::new()
            .input("target", "kubernetes")
            .input("app", "web")
            .input("kubeconfig", &kubeconfig)
            .input("namespace", &self.0)
            .input("deployments", deployments)
            .input("github-deployments", "false")
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "namespace", &self.0, "--wait=false"]);
    }
}

struct Verdict(Output);

impl Verdict {
    fn text(&self) -> String {
        format!("{}{}", String::from_utf8_lossy(&self.0.stdout), String::from_utf8_lossy(&self.0.stderr))
    }
    fn assert_ok(&self) {
        assert!(self.0.status.success(), "kubectl rollout status failed: {}", self.text());
    }
    fn assert_failed(&self, why: &str) {
        assert!(!self.0.status.success(), "kubectl rollout status succeeded: {}", self.text());
        assert!(self.text().contains(why), "kubectl said: {}", self.text());
    }
}

pub(crate) fn image_of(ns: &Ns, name: &str) -> String {
    ns.get(name, "{.spec.template.spec.containers[?(@.name==\"app\")].image}")
}

/// The image of the ReplicaSet whose pods serve: all ready replicas in one
/// ReplicaSet, none elsewhere.
fn serving_image(ns: &Ns, name: &str) -> String {
    let out = kubectl_ok(&[
        "-n",
        &ns.0,
        "get",
        "rs",
        "-l",
        &format!("app={name}"),
        "-o",
        "jsonpath={range .items[*]}{.status.readyReplicas}={.spec.template.spec.containers[0].image}{\"\\n\"}{end}",
    ]);
    let serving: Vec<&str> = out.lines().filter(|l| !l.starts_with('=') && !l.starts_with("0=")).collect();
    assert_eq!(serving.len(), 1, "ReplicaSets with ready pods: {out}");
    serving[0].split_once('=').unwrap().1.to_string()
}

pub(crate) fn assert_status(run: &Run, status: &str, code: i32) {
    // KDEBUG=1 prints every run checked here (passing tests' output is captured).
    if std::env::var("KDEBUG").is_ok() {
        eprintln!("=====\n{}\n-----\n{}", run.stdout, run.summary);
    }
    assert_eq!(run.output("status"), Some(status), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.code, Some(code), "{}\n{}", run.stdout, run.stderr);
}

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

/// The README's Role, read from the README itself, bound to a
/// ServiceAccount: enough for a deploy and its automatic rollback; the same
/// Role without `patch` is refused with a message naming it.
#[test]
fn kubernetes_the_readme_role_is_enough_and_patch_is_named_when_missing() {
    let role = readme_role();
    for (tag, role, image, ok) in [
        ("role", role.clone(), "example.invalid/web:imagepull", true),
        (
            "nopatch",
            role.replace("\"watch\", \"patch\", \"create\",", "\"watch\", \"create\","),
            "example.invalid/web:v2",
            false,
        ),
    ] {
        let ns = Ns::new(tag);
        ns.deployment("web", "example.invalid/web:v1", 2, 60);
        let kubeconfig = bound_to(&ns, &role);
        let run = ns.action("web").input("kubeconfig", &kubeconfig).input("image", image).run();
        if ok {
            // A failed rollout on purpose: apply, watch pods, undo all allowed.
            assert_status(&run, "failure", 1);
            assert!(run.stdout.contains("ImagePullBackOff"), "{}", run.stdout);
            assert!(run.stdout.contains("rolled back to revision 1"), "{}", run.stdout);
            assert!(!run.stdout.contains("kube_forbidden"), "{}", run.stdout);
        } else {
            assert_status(&run, "failure", 1);
            assert!(
                run.stdout.contains(&format!("cannot patch deployments in namespace {}", ns.0)),
                "{}",
                run.stdout
            );
            assert!(run.stdout.contains("verbs [\"patch\"]"), "{}", run.stdout);
        }
        assert_eq!(image_of(&ns, "web"), "example.invalid/web:v1");
        ns.rollout_status("web", &[]).assert_ok();
    }
}

/// The least-privilege Role, as `docs/kubernetes.md` prints it.
fn readme_role() -> String {
    let section = crate::support::doc_section("docs/kubernetes.md", "## Access and RBAC");
    let role = section.split("kind: Role").nth(1).expect("the Role in docs/kubernetes.md");
    format!("kind: Role{}", &role[..role.find("```").unwrap()])
}

/// The Role with its rules for `strategy: canary` added.
fn readme_canary_role() -> String {
    let section = crate::support::doc_section("docs/kubernetes.md", "## Access and RBAC");
    let block = crate::support::fenced_after(&section, "For `strategy: canary`, add these rules");
    format!("{}{block}", readme_role())
}

/// A kubeconfig for a ServiceAccount of `ns` bound to `role` only.
fn bound_to(ns: &Ns, role: &str) -> String {
    let role = role.replace("namespace: shop", &format!("namespace: {}", ns.0));
    kubectl_stdin(
        &["-n", &ns.0, "apply", "-f", "-"],
        &format!("apiVersion: rbac.authorization.k8s.io/v1\n{role}"),
    );
    kubectl_ok(&["-n", &ns.0, "create", "serviceaccount", "deployer"]);
    kubectl_ok(&[
        "-n",
        &ns.0,
        "create",
        "rolebinding",
        "deployer",
        "--role=deploy-action",
        &format!("--serviceaccount={}:deployer", ns.0),
    ]);
    let token = kubectl_ok(&["-n", &ns.0, "create", "token", "deployer"]).trim().to_string();
    token_kubeconfig(&token)
}

/// The README's Role also covers the app's Secret (create, list and
/// remove superseded ones), the migration Job (run, watch, logs, delete)
/// and blue-green (colours, the selector flip, EndpointSlices).
#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_the_readme_role_covers_secrets_and_migrations() {
    let ns = Ns::new("rolesec");
    ns.deployment("web", "example.invalid/web:v1", 1, 60);
    let kubeconfig = bound_to(&ns, &readme_role());
    let ssm = aws_sdk_ssm::Client::new(&crate::support::moto_config().await);
    let prefix = format!("/k8s-role-{}/web/", unique_run_id());
    put_ssm(&ssm, &prefix, &[("token", "t-1")]).await;
    let action = |image: &str| {
        ns.action("web")
            .moto()
            .input("kubeconfig", &kubeconfig)
            .input("ssm-paths", &prefix)
            .input("migrate-command", r#"["migrate"]"#)
            .input("image", image)
    };
    let run = action("example.invalid/web:v2").run();
    assert_status(&run, "success", 0);
    // A failed migration reads its pod's logs (kwok serves none: the
    // API's answer is quoted, not a refusal).
    put_ssm(&ssm, &prefix, &[("token", "t-2")]).await;
    let failed = action("example.invalid/web:fail").run();
    assert_status(&failed, "failure", 1);
    assert!(failed.stdout.contains("migration_failed"), "{}", failed.stdout);
    // A rotation removes nothing the history uses; the superseded secret
    // goes once its ReplicaSet does, through the same Role (list, delete).
    let again = action("example.invalid/web:v3").run();
    assert_status(&again, "success", 0);
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v3");
    // Blue-green through the same Role: colours created, the selector
    // flipped and verified on the EndpointSlices.
    ns.service("web");
    let bg = ns.blue_green("web", "example.invalid/web:v4").input("kubeconfig", &kubeconfig).run();
    assert_status(&bg, "success", 0);
    assert_eq!(ns.selector("web")["deploy-action/colour"], "blue");
    for r in [&run, &failed, &again, &bg] {
        assert!(!r.stdout.contains("kube_forbidden") && !r.stdout.contains("forbidden"), "{}", r.stdout);
    }
}

fn token_kubeconfig(token: &str) -> String {
    use base64::Engine;
    let ca = std::fs::read(stack_var("K8S_CA_FILE")).unwrap();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"{}\", certificate-authority-data: {}}}\nusers:\n- name: u\n  user: {{token: {token}}}\ncontexts:\n- name: d\n  context: {{cluster: c, user: u}}\ncurrent-context: d\n",
        stack_var("K8S_SERVER"),
        base64::engine::general_purpose::STANDARD.encode(ca),
    )
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

/// Puts `(name, value)` under a path of this test only; returns the path.
pub(crate) async fn put_ssm(ssm: &aws_sdk_ssm::Client, prefix: &str, values: &[(&str, &str)]) {
    for (name, value) in values {
        ssm.put_parameter()
            .name(format!("{prefix}{name}"))
            .value(*value)
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .overwrite(true)
            .send()
            .await
            .unwrap();
    }
}

/// The secret references of the `app` container's `envFrom`, in order
/// (`-` for an entry of another kind).
fn env_from(ns: &Ns) -> Vec<String> {
    let json = ns.get("web", "{.spec.template.spec.containers[?(@.name==\"app\")].envFrom}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v.as_array().unwrap().iter().map(|e| e["secretRef"]["name"].as_str().unwrap_or("-").to_string()).collect()
}

/// Whether `value` appears in what the run printed or wrote, beyond the
/// `::add-mask::` command that hides it.
fn shows(run: &Run, value: &str) -> bool {
    let out = run.stdout.lines().filter(|l| !l.starts_with("::add-mask::")).collect::<Vec<_>>().join("\n");
    [out.as_str(), &run.stderr, &run.summary].iter().any(|t| t.contains(value))
}

fn revision(ns: &Ns) -> String {
    ns.get("web", "{.metadata.annotations.deployment\\.kubernetes\\.io/revision}")
}

/// SSM values become one immutable Secret per secret set, referenced by
/// `envFrom`: a re-run changes nothing, a rotation rolls the pods onto a
/// new Secret while the previous revision keeps its own, and Secrets no
/// ReplicaSet uses any more are removed.
#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_secrets_are_an_immutable_secret_and_a_rotation_rolls_the_pods() {
    let ns = Ns::new("secrets");
    ns.deployment("web", "example.invalid/web:v1", 2, 60);
    // The user's own envFrom entry stays; one old ReplicaSet is kept.
    kubectl_ok(&[
        "-n",
        &ns.0,
        "patch",
        "deployment",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/spec/revisionHistoryLimit","value":1},{"op":"add","path":"/spec/template/spec/containers/0/envFrom","value":[{"configMapRef":{"name":"web-config"}}]}]"#,
    ]);
    ns.rollout_status("web", &[]).assert_ok();
    let ssm = aws_sdk_ssm::Client::new(&crate::support::moto_config().await);
    let prefix = format!("/k8s-{}/web/", unique_run_id());
    put_ssm(&ssm, &prefix, &[("db/password", "first-Pa55:word"), ("api_key", "k-1")]).await;
    let deploy =
        || ns.action("web:app").moto().input("ssm-paths", &prefix).input("image", "example.invalid/web:v2");

    let run = deploy().run();
    assert_status(&run, "success", 0);
    let fp = run.output("secrets-fingerprint").unwrap();
    let ours = format!("web-secrets-{}", &fp[..12]);
    assert_eq!(env_from(&ns), ["-".to_string(), ours.clone()], "the user's entry, then ours");
    assert_eq!(
        ns.get("web", "{.spec.template.spec.containers[0].envFrom[0].configMapRef.name}"),
        "web-config"
    );
    let get_secret = |name: &str, path: &str| {
        kubectl_ok(&["-n", &ns.0, "get", "secret", name, "-o", &format!("jsonpath={path}")])
    };
    assert_eq!(get_secret(&ours, "{.immutable}"), "true");
    assert_eq!(get_secret(&ours, "{.metadata.labels.deploy-action/app}"), "web");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let value = b64.decode(get_secret(&ours, "{.data.DB_PASSWORD}")).unwrap();
    assert_eq!(value, b"first-Pa55:word");
    for v in ["first-Pa55:word", "k-1"] {
        assert!(!shows(&run, v), "{v} leaked: {}", run.stdout);
    }
    assert_eq!(revision(&ns), "3");
    ns.rollout_status("web", &[]).assert_ok();

    // Same image, same secrets: nothing changes.
    let rerun = deploy().run();
    assert_status(&rerun, "success", 0);
    assert!(rerun.stdout.contains("already runs example.invalid/web:v2"), "{}", rerun.stdout);
    assert!(rerun.stdout.contains("exists (same secret versions)"), "{}", rerun.stdout);
    assert_eq!(revision(&ns), "3");
    assert_eq!(rerun.output("secrets-fingerprint"), Some(fp));

    // A rotation: a new Secret, the pods roll, the previous one is kept
    // for the previous revision.
    put_ssm(&ssm, &prefix, &[("db/password", "second-Pa55:word")]).await;
    let rotated = deploy().run();
    assert_status(&rotated, "success", 0);
    let fp2 = rotated.output("secrets-fingerprint").unwrap().to_string();
    assert_ne!(fp2, fp);
    let second = format!("web-secrets-{}", &fp2[..12]);
    assert_eq!(env_from(&ns), ["-".to_string(), second.clone()]);
    assert_eq!(revision(&ns), "4");
    assert_eq!(b64.decode(get_secret(&second, "{.data.DB_PASSWORD}")).unwrap(), b"second-Pa55:word");
    assert_eq!(get_secret(&ours, "{.metadata.name}"), ours, "the previous revision's Secret is kept");
    let verdict = ns.rollout_status("web", &[]);
    verdict.assert_ok();

    // A third rotation: revision 3's ReplicaSet leaves the history
    // (revisionHistoryLimit 1), so its Secret goes.
    put_ssm(&ssm, &prefix, &[("api_key", "k-3")]).await;
    let third = deploy().run();
    assert_status(&third, "success", 0);
    ns.until(30, "one old ReplicaSet left", || {
        kubectl_ok(&["-n", &ns.0, "get", "rs", "-l", "app=web", "-o", "name"]).lines().count() == 2
    });
    // The controller may drop the ReplicaSet just after the run's own
    // clean-up: a no-op run cleans again.
    let again = deploy().run();
    assert_status(&again, "success", 0);
    let left = kubectl_ok(&["-n", &ns.0, "get", "secret", "-l", "deploy-action/app=web", "-o", "name"]);
    assert!(!left.contains(&ours), "the first Secret should be gone: {left}");
    assert!(left.contains(&second), "the previous revision's Secret is kept: {left}");
    assert_eq!(left.lines().count(), 2, "{left}");
    // The user's entry survived every rotation.
    assert_eq!(
        ns.get("web", "{.spec.template.spec.containers[0].envFrom[0].configMapRef.name}"),
        "web-config"
    );
}

/// The migration runs as a Job from the new image with the app's Secret;
/// it succeeds before the rollout, and a failing one rolls nothing.
#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_migration_job_runs_first_and_a_failing_one_rolls_nothing() {
    let ns = Ns::new("migrate");
    ns.deployment("web", "example.invalid/web:v1", 2, 60);
    let ssm = aws_sdk_ssm::Client::new(&crate::support::moto_config().await);
    let prefix = format!("/k8s-mig-{}/web/", unique_run_id());
    put_ssm(&ssm, &prefix, &[("db_url", "postgres://u:Secr3t@db/web")]).await;
    let action = |image: &str| {
        ns.action("web:app")
            .moto()
            .input("ssm-paths", &prefix)
            .input("migrate-command", r#"["./manage", "migrate"]"#)
            .input("image", image)
    };

    // What the migration's pod writes (kwok serves it as the container's
    // log): the secret among its lines, and the last line the one to read.
    let lines: String = (1..=25).map(|i| format!("applying migration {i:03}\n")).collect::<String>()
        + "connecting to postgres://u:Secr3t@db/web\nERROR: relation \"orders\" already exists\n";
    ns.pod_logs(&lines);

    // kwok fails a Never-restarting pod whose image is tagged `fail`.
    let run = action("example.invalid/web:fail").run();
    assert_status(&run, "failure", 1);
    assert!(run.stdout.contains("migration_failed"), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("job {}/web-migrate-", ns.0)), "{}", run.stdout);
    assert!(run.stdout.contains("last log lines"), "{}", run.stdout);
    // The last 20 lines, redacted: the error line is there, the first
    // migrations are not, the secret is masked.
    assert!(run.stdout.contains("ERROR: relation \"orders\" already exists"), "{}", run.stdout);
    assert!(run.stdout.contains("connecting to ***"), "{}", run.stdout);
    assert!(!run.stdout.contains("applying migration 001"), "{}", run.stdout);
    assert!(run.summary.contains("already exists"), "{}", run.summary);
    assert!(!shows(&run, "Secr3t"), "{}", run.stdout);
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v1");
    assert_eq!(revision(&ns), "1");
    assert!(run.summary.contains("unchanged"), "{}", run.summary);
    ns.until(30, "the failed Job deleted", || {
        kubectl_ok(&["-n", &ns.0, "get", "jobs", "-o", "name"]).trim().is_empty()
    });

    // A migration that succeeds, then the rollout.
    let run = action("example.invalid/web:v2").run();
    assert_status(&run, "success", 0);
    let job = run.stdout.find("web-migrate-").expect("the Job is named");
    let succeeded = run.stdout.find(": succeeded").expect("the Job succeeded");
    let rolled = run.stdout.find("container app set to example.invalid/web:v2").expect("then the image");
    assert!(job < succeeded && succeeded < rolled, "{}", run.stdout);
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v2");
    ns.until(30, "the Job deleted", || {
        kubectl_ok(&["-n", &ns.0, "get", "jobs", "-o", "name"]).trim().is_empty()
    });
    ns.rollout_status("web", &[]).assert_ok();

    // A pre-migrate command: its own Job, before the migration's.
    let run =
        action("example.invalid/web:v3").input("pre-migrate-command", r#"["./manage", "backup"]"#).run();
    assert_status(&run, "success", 0);
    let pre = run.stdout.find("web-pre-migrate-").expect("the pre-migrate Job");
    let job = run.stdout.find("web-migrate-").expect("the migration Job");
    assert!(pre < job, "{}", run.stdout);
    assert!(run.stdout.contains(r#"running ["./manage","backup"]"#), "{}", run.stdout);
}

/// `migrate-rollback-command` on a cluster: the migration succeeded, then
/// one Deployment's rollout failed and both were undone; the down
/// migration then runs as its own Job from the new image. A deploy that
/// succeeds, or one whose migration failed, runs none.
#[test]
fn kubernetes_migrate_rollback_runs_as_a_job_after_the_undo() {
    let ns = Ns::new("migback");
    ns.deployment("web", "example.invalid/web:v1", 1, 60);
    ns.deployment("jobs", "example.invalid/jobs:v1", 1, 60);
    let action = |web: &str, jobs: &str| {
        let a = ns
            .action("")
            .without("INPUT_DEPLOYMENTS")
            .input("services-file", "services.yml")
            .input("migrate-command", r#"["./manage", "migrate"]"#)
            .input("migrate-rollback-command", r#"["./manage", "migrate", "down"]"#);
        let file = format!(
            "services:\n  - {{name: web, container: app, image: {web}}}\n  - {{name: jobs, container: app, proxy: false, image: {jobs}}}\n"
        );
        std::fs::write(a.path("services.yml"), file).unwrap();
        a
    };
    let down_job = format!("job {}/web-migrate-rollback-", ns.0);

    let ok = action("example.invalid/web:v2", "example.invalid/jobs:v2").run();
    assert_status(&ok, "success", 0);
    assert!(!ok.stdout.contains(&down_job), "a deploy that succeeds runs no down migration: {}", ok.stdout);

    // `jobs` crashes: both are undone, then the down migration runs.
    let run = action("example.invalid/web:v3", "example.invalid/jobs:crashloop").run();
    assert_status(&run, "failure", 1);
    let undone = run.stdout.rfind("rolled back to revision").expect("the undo");
    let job = run.stdout.find(&down_job).expect("the down migration's Job");
    assert!(undone < job, "after the undo: {}", run.stdout);
    assert!(
        run.stdout.contains(r#"running ["./manage","migrate","down"] from example.invalid/web:v3"#),
        "from the new image: {}",
        run.stdout
    );
    assert!(run.summary.contains("migration rolled back"), "{}", run.summary);
    assert!(!run.stdout.contains("migrate_rollback_failed"), "{}", run.stdout);
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v2");
    assert_eq!(image_of(&ns, "jobs"), "example.invalid/jobs:v2");
    ns.until(30, "the Jobs deleted", || {
        kubectl_ok(&["-n", &ns.0, "get", "jobs", "-o", "name"]).trim().is_empty()
    });

    // A migration that fails changed nothing to roll back.
    let failed = action("example.invalid/web:fail", "example.invalid/jobs:v3").run();
    assert_status(&failed, "failure", 1);
    assert!(failed.stdout.contains("migration_failed"), "{}", failed.stdout);
    assert!(!failed.stdout.contains(&down_job), "{}", failed.stdout);
}

/// `manifests`: multi-document YAML applied by server-side apply in
/// dependency order, the image set in the containers that run its
/// repository; a Deployment the manifests create is rolled out like the
/// others, and a failing later one rolls back to the previous revision.
#[test]
fn kubernetes_manifests_are_applied_in_order_with_the_image_set() {
    let ns = Ns::new("manifests");
    let yaml = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: 2\n  progressDeadlineSeconds: 60\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers:\n      - {{name: app, image: \"example.invalid/web:latest\", envFrom: [{{configMapRef: {{name: web-config}}}}]}}\n      - {{name: sidecar, image: \"example.invalid/sidecar:1\"}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec: {{selector: {{app: web}}, ports: [{{port: 80}}]}}\n---\n# a comment-only document is skipped\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: web-config, namespace: {ns}}}\ndata: {{MODE: prod}}\n",
        ns = ns.0
    );
    let action = |image: &str| ns.manifests_action(image, &yaml);
    // A plan first: a server-side dry run that creates nothing.
    let plan = action("example.invalid/web:v1").input("mode", "plan").run();
    assert_eq!(plan.code, Some(0), "{}", plan.stdout);
    assert!(
        plan.stdout.contains(&format!("configmap {}/web-config: would be applied from k8s/app.yaml#4", ns.0)),
        "{}",
        plan.stdout
    );
    assert!(plan.stdout.contains(&format!("deployment {}/web: would be created", ns.0)), "{}", plan.stdout);
    assert!(
        kubectl_ok(&["-n", &ns.0, "get", "deployments,configmaps,services", "-o", "name"])
            .lines()
            .all(|l| l == "configmap/kube-root-ca.crt")
    );

    let run = action("example.invalid/web:v1").run();
    assert_status(&run, "success", 0);
    let at = |s: &str| run.stdout.find(s).unwrap_or_else(|| panic!("{s} missing: {}", run.stdout));
    let (cm, svc, dep) = (
        at(&format!("configmap {}/web-config: applied", ns.0)),
        at(&format!("service {}/web: applied", ns.0)),
        at(&format!("deployment {}/web: created, container app runs example.invalid/web:v1", ns.0)),
    );
    assert!(cm < svc && svc < dep, "dependency order: {}", run.stdout);
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v1");
    assert_eq!(ns.get("web", "{.spec.template.spec.containers[1].image}"), "example.invalid/sidecar:1");
    ns.rollout_status("web", &[]).assert_ok();
    let managers = kubectl_ok(&[
        "-n",
        &ns.0,
        "get",
        "configmap",
        "web-config",
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ]);
    assert_eq!(managers, "deploy-action");

    let run = action("example.invalid/web:v2").run();
    assert_status(&run, "success", 0);
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v2");
    assert_eq!(revision(&ns), "2");

    // A bad image: rolled back to the previous revision, the manifest's
    // envFrom kept.
    let run = action("example.invalid/web:imagepull").run();
    assert_status(&run, "failure", 1);
    assert!(run.stdout.contains("rolled back to revision 2"), "{}", run.stdout);
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v2");
    assert_eq!(serving_image(&ns, "web"), "example.invalid/web:v2");
    assert_eq!(
        ns.get("web", "{.spec.template.spec.containers[0].envFrom[0].configMapRef.name}"),
        "web-config"
    );
}

/// Problems in the manifests are named at once, before any contact.
#[test]
fn kubernetes_manifest_problems_are_named_before_any_contact() {
    let a = Action::new()
        .input("target", "kubernetes")
        .input("app", "web")
        .input("kubeconfig", &token_kubeconfig("never-used"))
        .input("manifests", "k8s/*.yaml, missing.yaml")
        .input("image", "example.invalid/web:v2")
        .input("github-deployments", "false");
    std::fs::create_dir_all(a.path("k8s")).unwrap();
    std::fs::write(
        a.path("k8s/app.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    spec:\n      containers: [{name: app, image: other.example/else:1}]\n---\nkind: Service\n",
    )
    .unwrap();
    let run = a.run();
    assert_eq!(run.code, Some(2), "{}", run.stdout);
    for want in [
        "'missing.yaml' matches no file",
        "k8s/app.yaml#2: is not a Kubernetes object (no apiVersion, metadata.name)",
        "no container of their workloads runs example.invalid/web",
    ] {
        assert!(run.stdout.contains(want), "{want}: {}", run.stdout);
    }
    assert!(!run.stdout.contains("Connect to the cluster"), "{}", run.stdout);
}

/// `eks-cluster`: the endpoint and CA from the EKS API (moto), the token
/// signed by the action and verified by the API server's webhook token
/// authenticator (which recomputes the signature with botocore); the EKS
/// identity's group is bound to the README's Role in this namespace only.
/// A wrong secret key and an expired token are refused with a message
/// that says so.
#[test]
fn kubernetes_eks_token_is_accepted_and_a_bad_or_expired_one_refused() {
    let ns = Ns::new("eks");
    ns.deployment("web", "example.invalid/web:v1", 1, 60);
    kubectl_ok(&[
        "-n",
        &ns.0,
        "create",
        "rolebinding",
        "eks-deployers",
        &format!("--clusterrole={}", stack_var("K8S_DEPLOY_CLUSTERROLE")),
        &format!("--group={}", stack_var("K8S_EKS_GROUP")),
    ]);
    let eks = |image: &str| {
        ns.action("web")
            .without("INPUT_KUBECONFIG")
            .moto()
            .input("aws-region", &stack_var("K8S_EKS_REGION"))
            .input("eks-cluster", &stack_var("K8S_EKS_CLUSTER"))
            .input("image", image)
    };
    let run = eks("example.invalid/web:v2").run();
    assert_status(&run, "success", 0);
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v2");
    // The API server knew the action as the EKS identity.
    let log = std::fs::read_to_string(stack_var("K8S_EKS_AUTH_LOG")).unwrap();
    assert!(log.contains(&stack_var("K8S_EKS_USER")), "{log}");

    // A tampered signature (the wrong secret key): refused, nothing changed.
    let bad = eks("example.invalid/web:v3").env("AWS_SECRET_ACCESS_KEY", "not-the-key").run();
    assert_status(&bad, "failure", 1);
    assert!(bad.stdout.contains("kube_unauthorized"), "{}", bad.stdout);
    assert!(bad.stdout.contains("the cluster refused the credentials (401 Unauthorized"), "{}", bad.stdout);
    assert!(!bad.stdout.contains("not-the-key"), "{}", bad.stdout);
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v2");

    // A token the action's signer made 20 minutes ago: past the 15-minute
    // lifetime the authenticator allows.
    let creds = aws_credential_types::Credentials::new(
        stack_var("AWS_ACCESS_KEY_ID"),
        stack_var("AWS_SECRET_ACCESS_KEY"),
        None,
        None,
        "stack",
    );
    let then = std::time::SystemTime::now() - Duration::from_secs(20 * 60);
    let old = deploy_action::targets::kubernetes::eks::token(
        &creds,
        &stack_var("K8S_EKS_CLUSTER"),
        &stack_var("K8S_EKS_REGION"),
        then,
    )
    .unwrap();
    let expired = ns
        .action("web")
        .input("kubeconfig", &token_kubeconfig(&old))
        .input("image", "example.invalid/web:v3")
        .run();
    assert_status(&expired, "failure", 1);
    assert!(expired.stdout.contains("kube_unauthorized"), "{}", expired.stdout);
    let log = std::fs::read_to_string(stack_var("K8S_EKS_AUTH_LOG")).unwrap();
    assert!(log.contains("expired"), "{log}");
    // The same signer, now: accepted (the refusal was the age alone).
    let fresh = deploy_action::targets::kubernetes::eks::token(
        &creds,
        &stack_var("K8S_EKS_CLUSTER"),
        &stack_var("K8S_EKS_REGION"),
        std::time::SystemTime::now(),
    )
    .unwrap();
    let ok = ns
        .action("web")
        .input("kubeconfig", &token_kubeconfig(&fresh))
        .input("image", "example.invalid/web:v3")
        .run();
    assert_status(&ok, "success", 0);
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v3");
}

/// `eks-cluster` problems are named before any contact.
#[test]
fn kubernetes_eks_inputs_are_checked() {
    let run = Action::new()
        .input("target", "kubernetes")
        .input("app", "web")
        .input("deployments", "web")
        .input("eks-cluster", "-bad name")
        .input("kubeconfig", &token_kubeconfig("x"))
        .input("image", "example.invalid/web:v2")
        .input("github-deployments", "false")
        .run();
    assert_eq!(run.code, Some(2), "{}", run.stdout);
    for want in [
        "input 'eks-cluster': '-bad name' is not an EKS cluster name",
        "input 'kubeconfig': cannot be combined with 'eks-cluster'",
        "input 'aws-region': is required with 'eks-cluster'",
    ] {
        assert!(run.stdout.contains(want), "{want}: {}", run.stdout);
    }
}

impl Ns {
    /// A Service `name` selecting the pods of Deployment `name`.
    fn service(&self, name: &str) {
        self.service_for(name, name);
    }

    /// A Service `name` selecting the pods of Deployment `deployment`.
    fn service_for(&self, name: &str, deployment: &str) {
        let yaml = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{selector: {{app: {deployment}}}, ports: [{{port: 80, targetPort: 8080}}]}}\n",
            ns = self.0
        );
        kubectl_stdin(&["apply", "-f", "-"], &yaml);
    }

    /// A blue-green run reading its Deployments from `file` (a services
    /// file written into the run's workspace).
    fn blue_green_file(&self, file: &str, image: Option<&str>) -> Action {
        let a = self
            .blue_green("", image.unwrap_or(""))
            .without("INPUT_DEPLOYMENTS")
            .input("services-file", "services.yml");
        let a = if image.is_none() { a.without("INPUT_IMAGE") } else { a };
        std::fs::write(a.path("services.yml"), file).unwrap();
        a
    }

    fn selector(&self, service: &str) -> serde_json::Value {
        let s = kubectl_ok(&["-n", &self.0, "get", "service", service, "-o", "jsonpath={.spec.selector}"]);
        serde_json::from_str(&s).unwrap()
    }

    /// The pods the Service's EndpointSlices list as ready.
    fn endpoint_pods(&self, service: &str) -> Vec<String> {
        let out = kubectl_ok(&[
            "-n",
            &self.0,
            "get",
            "endpointslices",
            "-l",
            &format!("kubernetes.io/service-name={service}"),
            "-o",
            "jsonpath={range .items[*].endpoints[?(@.conditions.ready==true)]}{.targetRef.name}{\"\\n\"}{end}",
        ]);
        let mut pods: Vec<String> = out.lines().map(String::from).collect();
        pods.sort();
        pods
    }

    fn replicas(&self, name: &str) -> String {
        self.get(name, "{.spec.replicas}")
    }

    fn blue_green(&self, deployments: &str, image: &str) -> Action {
        self.action(deployments)
            .input("strategy", "blue-green")
            .input("observe-window", "2s")
            .input("drain-time", "1s")
            .input("image", image)
    }
}

/// Blue-green: the candidate colour is fully available before the live
/// Service's selector flips; afterwards its EndpointSlices list only the
/// new pods and the old colour sits at zero. A second deploy goes to the
/// other colour, and `mode: rollback` flips back to the one at zero.
#[test]
fn kubernetes_blue_green_flips_only_once_the_candidate_is_ready_and_rolls_back() {
    let ns = Ns::new("bg");
    ns.deployment("web", "example.invalid/web:v1", 2, 60);
    ns.service("web");
    let before = ns.endpoint_pods("web");
    assert_eq!(before.len(), 2);

    let run = ns.blue_green("web:app", "example.invalid/web:v2").run();
    assert_status(&run, "success", 0);
    let at = |s: &str| run.stdout.find(s).unwrap_or_else(|| panic!("{s}: {}", run.stdout));
    assert!(
        at("deployment \"web-blue\" successfully rolled out") < at("selector now deploy-action/colour=blue"),
        "{}",
        run.stdout
    );
    assert_eq!(ns.selector("web")["deploy-action/colour"], "blue");
    assert!(ns.selector("web").get("pod-template-hash").is_none());
    let pods = ns.endpoint_pods("web");
    assert_eq!(pods.len(), 2, "{pods:?}");
    assert!(pods.iter().all(|p| p.starts_with("web-blue-")), "only the new colour: {pods:?}");
    assert_eq!(image_of(&ns, "web-blue"), "example.invalid/web:v2");
    assert_eq!(ns.replicas("web"), "0", "the old version is kept at zero");
    ns.rollout_status("web-blue", &[]).assert_ok();
    assert!(run.summary.contains("web-blue live (2 replica(s)), web at 0"), "{}", run.summary);

    let run = ns.blue_green("web:app", "example.invalid/web:v3").run();
    assert_status(&run, "success", 0);
    assert_eq!(ns.selector("web")["deploy-action/colour"], "green");
    assert!(ns.endpoint_pods("web").iter().all(|p| p.starts_with("web-green-")));
    assert_eq!(ns.replicas("web-blue"), "0");
    assert_eq!(run.output("previous-image"), Some("example.invalid/web:v2"));

    // Rollback: the colour at zero comes back up, then the flip.
    let run = ns.blue_green("web:app", "").without("INPUT_IMAGE").input("mode", "rollback").run();
    assert_status(&run, "success", 0);
    assert_eq!(ns.selector("web")["deploy-action/colour"], "blue");
    let pods = ns.endpoint_pods("web");
    assert!(!pods.is_empty() && pods.iter().all(|p| p.starts_with("web-blue-")), "{pods:?}");
    assert_eq!(image_of(&ns, "web-blue"), "example.invalid/web:v2");
    assert_eq!(ns.replicas("web-green"), "0");
    ns.rollout_status("web-blue", &[]).assert_ok();

    // v4 fails its smoke test after the flip to green (its pods are
    // healthy): flipped back, and green, at zero, holds v3 again, the
    // release it held. So the next `mode: rollback` brings back v3, never
    // the release that failed.
    let (bad, _) = answering(503, "broken");
    let tests = format!("- {{name: live, url: '{bad}/'}}\n");
    let run = ns.blue_green("web:app", "example.invalid/web:v4").input("smoke-tests", &tests).run();
    assert_status(&run, "failure", 1);
    assert!(run.stdout.contains("selector now deploy-action/colour=green"), "{}", run.stdout);
    assert_eq!(ns.selector("web")["deploy-action/colour"], "blue");
    assert_eq!(ns.replicas("web-green"), "0");
    assert_eq!(image_of(&ns, "web-green"), "example.invalid/web:v3", "{}", run.stdout);
    assert!(run.stdout.contains("back to the release it held"), "{}", run.stdout);
    let run = ns.blue_green("web:app", "").without("INPUT_IMAGE").input("mode", "rollback").run();
    assert_status(&run, "success", 0);
    assert_eq!(ns.selector("web")["deploy-action/colour"], "green");
    assert_eq!(run.output("image"), Some("example.invalid/web:v3"), "{}", run.stdout);
    ns.rollout_status("web-green", &[]).assert_ok();
    assert_eq!(image_of(&ns, "web-green"), "example.invalid/web:v3");
}

/// Four services switched together: the fourth's candidate never becomes
/// ready, so none of the four Services changes selector (and kubectl's
/// verdict on that candidate is the same failure).
#[test]
fn kubernetes_blue_green_four_services_none_flips_when_one_is_never_ready() {
    let ns = Ns::new("bg4");
    for name in ["a", "b", "c", "d"] {
        ns.deployment(name, "example.invalid/web:v1", 1, 10);
        ns.service(name);
    }
    // d's template is broken from now on: its running pods keep serving,
    // but any pod made from it (the candidate's) never becomes ready.
    kubectl_ok(&[
        "-n",
        &ns.0,
        "patch",
        "deployment",
        "d",
        "-p",
        r#"{"spec":{"template":{"metadata":{"annotations":{"kwok.deploy-action/behavior":"never-ready"}}}}}"#,
    ]);
    let before: Vec<serde_json::Value> = ["a", "b", "c", "d"].iter().map(|s| ns.selector(s)).collect();
    // One file lists the four (the dashboard's shape).
    let file = "services:\n".to_string()
        + &["a", "b", "c", "d"].map(|n| format!("  - {{name: {n}, container: app}}\n")).concat();
    let action = ns.blue_green_file(&file, Some("example.invalid/web:v2"));
    let child = action.spawn();
    // kubectl watches the same candidate while the action does.
    ns.until(30, "the candidate d-blue", || {
        kubectl(&["-n", &ns.0, "get", "deployment", "d-blue"]).status.success()
    });
    let kubectl_verdict = Verdict(ns.spawn_rollout_status("d-blue").wait_with_output().unwrap());
    let run = action.finish(child.wait_with_output().unwrap());
    assert_status(&run, "failure", 1);
    kubectl_verdict.assert_failed("exceeded its progress deadline");
    assert!(run.stdout.contains("deployment \"d-blue\" exceeded its progress deadline"), "{}", run.stdout);
    assert!(!run.stdout.contains("selector now"), "{}", run.stdout);
    let after: Vec<serde_json::Value> = ["a", "b", "c", "d"].iter().map(|s| ns.selector(s)).collect();
    assert_eq!(before, after, "no Service changed");
    for s in ["a", "b", "c"] {
        assert!(ns.endpoint_pods(s).iter().all(|p| !p.contains("-blue-")), "{s} serves only the old pods");
        assert!(ns.gone("deployment", &format!("{s}-blue")), "the candidate this run made is removed");
    }
}

/// A services file names each Deployment's live and preview Services and
/// its own image: the names need not follow the Deployment's, and every
/// entry's image lands on its own candidate.
#[test]
fn kubernetes_blue_green_services_file_names_deployments_services_and_images() {
    let ns = Ns::new("bgfile");
    ns.deployment("api-server", "example.invalid/api:v1", 2, 60);
    ns.service_for("api", "api-server");
    ns.service_for("api-staging", "api-server");
    ns.deployment("frontend", "example.invalid/frontend:v1", 1, 60);
    ns.service("frontend");
    let file = "services:\n  - name: api\n    deployment: api-server\n    container: app\n    service: api\n    preview-service: api-staging\n    image: example.invalid/api:v2\n  - name: frontend\n    image: example.invalid/frontend:v2\n";
    let run = ns.blue_green_file(file, None).run();
    assert_status(&run, "success", 0);
    let at = |s: &str| run.stdout.find(s).unwrap_or_else(|| panic!("{s}: {}", run.stdout));
    // The preview is checked before any live flip.
    assert!(
        at(&format!("service {}/api-staging", ns.0)) < at("selector now deploy-action/colour=blue"),
        "{}",
        run.stdout
    );
    for (service, deployment, image) in [
        ("api", "api-server", "example.invalid/api:v2"),
        ("frontend", "frontend", "example.invalid/frontend:v2"),
    ] {
        assert_eq!(ns.selector(service)["deploy-action/colour"], "blue", "{service}: {}", run.stdout);
        let pods = ns.endpoint_pods(service);
        assert!(
            !pods.is_empty() && pods.iter().all(|p| p.starts_with(&format!("{deployment}-blue-"))),
            "{service}: {pods:?}"
        );
        assert_eq!(image_of(&ns, &format!("{deployment}-blue")), image);
        assert_eq!(ns.replicas(deployment), "0", "{deployment} kept at zero");
    }
    assert_eq!(ns.selector("api-staging")["deploy-action/colour"], "blue");
    assert_eq!(ns.replicas("api-server-blue"), "2");
    // The record's image is the first entry's.
    assert_eq!(run.output("image"), Some("example.invalid/api:v2"), "{}", run.stdout);
}

/// Blue-green with a worker (`proxy: false`, no Service): the web's colours
/// and Service flip as before; the worker is rolled in place once the
/// candidate is ready, before the flip. It is undone whenever the deploy
/// goes back (its own crash, a smoke test failing after the flip), and
/// `mode: rollback` undoes it beside the flip back.
#[test]
fn kubernetes_blue_green_rolls_workers_in_place_and_undoes_them_with_the_flip() {
    let ns = Ns::new("bgwork");
    ns.deployment("web", "example.invalid/web:v1", 1, 60);
    ns.service("web");
    ns.deployment("jobs", "example.invalid/jobs:v1", 1, 60);
    let file = |v: &str, jobs: &str| {
        format!(
            "services:\n  - {{name: web, container: app, image: example.invalid/web:{v}}}\n  - {{name: jobs, container: app, proxy: false, image: example.invalid/jobs:{jobs}}}\n"
        )
    };
    let plan = ns.blue_green_file(&file("v2", "v2"), None).input("mode", "plan").run();
    assert_eq!(plan.code, Some(0), "{}", plan.stdout);
    let worker = format!("deployment {}/jobs: worker, rolled in place to example.invalid/jobs:v2", ns.0);
    assert!(plan.stdout.contains(&worker), "{}", plan.stdout);
    assert!(plan.stdout.contains("web-blue: 1 replica(s) of example.invalid/web:v2"), "{}", plan.stdout);
    assert_eq!(image_of(&ns, "jobs"), "example.invalid/jobs:v1", "a plan changes nothing");

    let run = ns.blue_green_file(&file("v2", "v2"), None).run();
    assert_status(&run, "success", 0);
    let at = |s: &str| run.stdout.find(s).unwrap_or_else(|| panic!("{s}: {}", run.stdout));
    assert!(
        at("container app set to example.invalid/jobs:v2") < at("selector now deploy-action/colour=blue")
    );
    assert_eq!(image_of(&ns, "jobs"), "example.invalid/jobs:v2");
    assert_eq!(ns.selector("web")["deploy-action/colour"], "blue");
    assert!(run.summary.contains("worker rolled out"), "{}", run.summary);
    ns.rollout_status("jobs", &[]).assert_ok();

    // The worker crashes: nothing flips, the worker is undone.
    let run = ns.blue_green_file(&file("v3", "crashloop"), None).run();
    assert_status(&run, "failure", 1);
    assert_eq!(ns.selector("web")["deploy-action/colour"], "blue");
    assert_eq!(image_of(&ns, "jobs"), "example.invalid/jobs:v2", "{}", run.stdout);
    assert!(ns.gone("deployment", "web-green"), "the candidate this run made is removed");
    assert!(run.summary.contains("worker rolled back"), "{}", run.summary);

    // A smoke test failing after the flip: flipped back, the worker undone,
    // then the down migration, from the web's spec and image although the
    // worker comes first in the file.
    let worker_first = "services:\n  - {name: jobs, container: app, proxy: false, image: example.invalid/jobs:v3}\n  - {name: web, container: app, image: example.invalid/web:v3}\n";
    let run = ns
        .blue_green_file(worker_first, None)
        .input("smoke-tests", "- name: front door\n  url: http://127.0.0.1:9/\n")
        .input("migrate-command", r#"["./manage", "migrate"]"#)
        .input("migrate-rollback-command", r#"["./manage", "migrate", "down"]"#)
        .run();
    assert_status(&run, "failure", 1);
    let at = |s: &str| run.stdout.find(s).unwrap_or_else(|| panic!("{s}: {}", run.stdout));
    assert!(at("selector now deploy-action/colour=green") < at("Rollback: workers undone"));
    assert!(at("Rollback: workers undone") < at("web-migrate-rollback-"));
    assert!(
        run.stdout.contains(r#"running ["./manage","migrate","down"] from example.invalid/web:v3"#),
        "{}",
        run.stdout
    );
    assert_eq!(ns.selector("web")["deploy-action/colour"], "blue");
    assert_eq!(image_of(&ns, "jobs"), "example.invalid/jobs:v2");

    // A good one, then `mode: rollback`: the web back on blue, the worker
    // back to its previous revision.
    let run = ns.blue_green_file(&file("v4", "v4"), None).run();
    assert_status(&run, "success", 0);
    assert_eq!(ns.selector("web")["deploy-action/colour"], "green");
    assert_eq!(image_of(&ns, "jobs"), "example.invalid/jobs:v4");
    let run = ns.blue_green_file(&file("v4", "v4"), None).input("mode", "rollback").run();
    assert_status(&run, "success", 0);
    assert_eq!(ns.selector("web")["deploy-action/colour"], "blue");
    assert_eq!(image_of(&ns, "jobs"), "example.invalid/jobs:v2", "{}", run.stdout);
    assert!(run.stdout.contains("worker rolled back to revision"), "{}", run.stdout);

    // A worker the rolled-back deploy did not roll is left as it is.
    kubectl_ok(&["-n", &ns.0, "set", "image", "deployment/jobs", "app=example.invalid/jobs:by-hand"]);
    kubectl_ok(&[
        "-n",
        &ns.0,
        "annotate",
        "--overwrite",
        "deployment/jobs",
        "deploy-action/deploy-id=someone-else",
    ]);
    ns.rollout_status("jobs", &[]).assert_ok();
    let run = ns.blue_green_file(&file("v4", "v4"), None).input("mode", "rollback").run();
    assert_status(&run, "success", 0);
    assert_eq!(ns.selector("web")["deploy-action/colour"], "green");
    assert_eq!(image_of(&ns, "jobs"), "example.invalid/jobs:by-hand");
    assert!(run.stdout.contains("worker left as it is"), "{}", run.stdout);

    // A missing worker: named, before anything changes.
    let before = ns.selector("web");
    let run = ns.blue_green_file(&file("v5", "v5").replace("name: jobs", "name: gone"), None).run();
    assert_status(&run, "failure", 1);
    assert!(run.stdout.contains("does not create them"), "{}", run.stdout);
    assert_eq!(ns.selector("web"), before);
}

/// A services file for a cluster is checked with the other inputs: the
/// hosts-only fields, only workers in a blue-green switch, a file beside
/// `deployments`, an entry without an image; all named at once, nothing
/// contacted.
#[test]
fn kubernetes_services_file_problems_are_named_before_any_contact() {
    let file = "services:\n  - {name: api, blue-port: 8081, green-port: 8082, env: {A: b}}\n  - {name: worker, proxy: false, image: example.invalid/worker:v2}\n  - {name: web, service: Not_A_Name, image: example.invalid/web:v2}\n  - {name: web, image: example.invalid/web:v2}\n";
    let a = Action::new()
        .input("target", "kubernetes")
        .input("strategy", "blue-green")
        .input("deployments", "api")
        .input("services-file", "services.yml")
        .input("kubeconfig", "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\nusers: [{name: u, user: {token: t}}]\n")
        .input("github-deployments", "false");
    std::fs::write(a.path("services.yml"), file).unwrap();
    let run = a.run();
    assert_eq!(run.code, Some(2), "{}", run.stdout);
    for want in [
        "blue-port, green-port, env only apply to target 'hosts' and 'ec2'",
        "service must",
        "the name is used twice",
        "'api' has no image",
        "input 'deployments': cannot be combined with 'services-file'",
    ] {
        assert!(run.stdout.contains(want), "{want:?} not in:\n{}", run.stdout);
    }
    // A worker beside Services is rolled in place; workers alone have
    // nothing to flip.
    assert!(!run.stdout.contains("'worker'"), "{}", run.stdout);
    let a = a.without("INPUT_DEPLOYMENTS");
    std::fs::write(
        a.path("services.yml"),
        "services:\n  - {name: worker, proxy: false, image: example.invalid/worker:v2}\n",
    )
    .unwrap();
    let run = a.run();
    assert_eq!(run.code, Some(2), "{}", run.stdout);
    assert!(run.stdout.contains("every entry here has 'proxy: false'"), "{}", run.stdout);
}

/// SIGTERM between two flips of a two-service switch: the flips are
/// finished, then every Service goes back to the old colour, within 7 s.
#[test]
fn kubernetes_blue_green_sigterm_between_flips_leaves_every_service_on_one_colour() {
    let ns = Ns::new("bgterm");
    for name in ["api", "web"] {
        ns.deployment(name, "example.invalid/web:v1", 1, 60);
        ns.service(name);
    }
    // A first blue-green deploy: both on blue.
    let run = ns.blue_green("api:app, web:app", "example.invalid/web:v2").run();
    assert_status(&run, "success", 0);
    let action = ns.blue_green("api:app, web:app", "example.invalid/web:v3").input("observe-window", "30s");
    let (child, _kill, log) = crate::fleet::spawn_until(
        &action,
        "selector now deploy-action/colour=green",
        Duration::from_secs(60),
    );
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let (run, took) = crate::fleet::finish_within(&action, child, Duration::from_secs(20));
    let stdout = log.all();
    assert!(took < Duration::from_secs(7), "took {took:?}: {stdout}");
    assert_eq!(run.code, Some(130), "{stdout}");
    let colours: Vec<String> = ["api", "web"]
        .iter()
        .map(|s| ns.selector(s)["deploy-action/colour"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(colours, ["blue", "blue"], "{stdout}");
    for s in ["api", "web"] {
        ns.until(30, "the old colour's endpoints", || {
            let pods = ns.endpoint_pods(s);
            !pods.is_empty() && pods.iter().all(|p| p.starts_with(&format!("{s}-blue-")))
        });
    }
}

/// The same signal over a real round trip to the API server (200 ms, a
/// cluster in another region; every request and watch event pays it):
/// past the flips of two Services and a worker rolled in place, SIGTERM
/// still ends within 7 s with both Services back on the old colour, the
/// worker undone and the candidates at zero. Every step of the way back
/// shares one budget (`wayback.rs`, unit-tested with paused time).
#[test]
fn kubernetes_blue_green_sigterm_over_real_latency_undoes_flips_and_worker_within_7s() {
    let ns = Ns::new("bglat");
    for name in ["api", "web"] {
        ns.deployment(name, "example.invalid/web:v1", 1, 60);
        ns.service(name);
    }
    ns.deployment("jobs", "example.invalid/jobs:v1", 1, 60);
    let file = |v: &str| {
        format!(
            "services:\n  - {{name: api, container: app, image: example.invalid/web:{v}}}\n  - {{name: web, container: app, image: example.invalid/web:{v}}}\n  - {{name: jobs, container: app, proxy: false, image: example.invalid/jobs:{v}}}\n"
        )
    };
    assert_status(&ns.blue_green_file(&file("v2"), None).run(), "success", 0);

    let server = stack_var("K8S_SERVER");
    let api: std::net::SocketAddr = server.trim_start_matches("https://").parse().unwrap();
    let relay = crate::support::latency::DelayProxy::start(api, Duration::from_millis(100));
    let kubeconfig = std::fs::read_to_string(stack_var("K8S_KUBECONFIG"))
        .unwrap()
        .replace(&server, &format!("https://127.0.0.1:{}", relay.port));
    let action =
        ns.blue_green_file(&file("v3"), None).input("kubeconfig", &kubeconfig).input("observe-window", "60s");
    let (child, _kill, log) = crate::fleet::spawn_until(&action, "Observe 60s", Duration::from_secs(180));
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let (run, took) = crate::fleet::finish_within(&action, child, Duration::from_secs(30));
    let stdout = log.all();
    assert!(took < Duration::from_secs(7), "took {took:?}: {stdout}");
    assert_eq!(run.code, Some(130), "{stdout}");
    for s in ["api", "web"] {
        assert_eq!(ns.selector(s)["deploy-action/colour"], "blue", "{s}: {stdout}");
        assert!(ns.gone("deployment", &format!("{s}-green")), "{s}: {stdout}");
    }
    assert_eq!(image_of(&ns, "jobs"), "example.invalid/jobs:v2", "{stdout}");
    assert!(!stdout.contains("rollback_timeout"), "{stdout}");
    ns.rollout_status("jobs", &[]).assert_ok();
}

/// `mode: plan` with blue-green: a server-side dry run and the steps;
/// nothing changes (resourceVersions kept).
#[test]
fn kubernetes_blue_green_plan_touches_nothing() {
    let ns = Ns::new("bgplan");
    ns.deployment("web", "example.invalid/web:v1", 2, 60);
    ns.service("web");
    let versions = || {
        kubectl_ok(&[
            "-n",
            &ns.0,
            "get",
            "deployments,services",
            "-o",
            "jsonpath={.items[*].metadata.resourceVersion}",
        ])
    };
    let before = versions();
    let run = ns.blue_green("web", "example.invalid/web:v2").input("mode", "plan").run();
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!(
            "deployment {}/web-blue: 2 replica(s) of example.invalid/web:v2 (blue-green candidate)",
            ns.0
        )),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("flips to deploy-action/colour=blue"), "{}", run.stdout);
    assert_eq!(versions(), before);
    assert!(kubectl(&["-n", &ns.0, "get", "deployment", "web-blue"]).status.code() != Some(0));
}

impl Ns {
    fn canary(&self, steps: &str, traffic: &str, image: &str) -> Action {
        self.action("web:app")
            .input("strategy", "canary")
            .input("canary-steps", steps)
            .input("canary-interval", "1s")
            .input("canary-traffic", traffic)
            .input("image", image)
    }

    fn decide(&self, mode: &str, traffic: &str) -> Action {
        self.action("web:app")
            .input("strategy", "canary")
            .input("canary-traffic", traffic)
            .input("mode", mode)
    }

    fn annotation(&self, kind: &str, name: &str, key: &str) -> String {
        let key = key.replace('.', "\\.");
        kubectl_ok(&[
            "-n",
            &self.0,
            "get",
            kind,
            name,
            "-o",
            &format!("jsonpath={{.metadata.annotations.{key}}}"),
        ])
    }

    /// An HTTPRoute `shop` sending everything to Service `backend`.
    fn httproute(&self, backend: &str) {
        kubectl_stdin(
            &["-n", &self.0, "apply", "-f", "-"],
            &format!(
                "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: shop}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules:\n  - backendRefs: [{{name: {backend}, port: 80}}]\n"
            ),
        );
    }

    /// The HTTPRoute `shop`'s backends as `name=weight` words.
    fn route_weights(&self) -> String {
        kubectl_ok(&[
            "-n",
            &self.0,
            "get",
            "httproute",
            "shop",
            "-o",
            "jsonpath={range .spec.rules[0].backendRefs[*]}{.name}={.weight} {end}",
        ])
        .trim()
        .to_string()
    }

    /// What the namespace's pods print, as kwok serves it through the
    /// API server (`kubectl logs`, the migration's last lines).
    pub(crate) fn pod_logs(&self, text: &str) {
        let mut logs = Command::new(stack_var("K8S_POD_LOGS"))
            .args(["-n", &self.0])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        logs.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        assert!(logs.wait().unwrap().success());
        std::thread::sleep(Duration::from_secs(2)); // kwok picks the object up by watch
    }

    fn gone(&self, kind: &str, name: &str) -> bool {
        !kubectl(&["-n", &self.0, "get", kind, name]).status.success()
    }
}

/// Canary by replica ratio behind the one Service: the canary's pods join
/// the stable ones (1 of 4 at 25%), then promotion rolls the stable
/// Deployment and removes the canary.
#[test]
fn kubernetes_canary_by_replicas_steps_then_promotes() {
    let ns = Ns::new("canary");
    ns.deployment("web", "example.invalid/web:v1", 3, 60);
    ns.service("web");
    // Stopped at 25%: the share is on the objects, and in the endpoints.
    let run = ns.canary("25", "replicas", "example.invalid/web:v2").run();
    assert_status(&run, "success", 0);
    assert_eq!(ns.replicas("web-canary"), "1");
    assert_eq!(ns.replicas("web"), "3");
    assert_eq!(ns.annotation("deployment", "web-canary", "deploy-action/canary-weight"), "25");
    let pods = ns.endpoint_pods("web");
    assert_eq!(pods.len(), 4, "{pods:?}");
    assert_eq!(pods.iter().filter(|p| p.starts_with("web-canary-")).count(), 1, "{pods:?}");
    assert_status(&ns.decide("abort", "replicas").run(), "success", 0);
    assert!(ns.gone("deployment", "web-canary"));
    ns.until(30, "the canary's pod out of the endpoints", || ns.endpoint_pods("web").len() == 3);

    let run = ns.canary("25,100", "replicas", "example.invalid/web:v2").run();
    assert_status(&run, "success", 0);
    assert!(run.stdout.contains("canary at 25% (1 of 4 pods) via replicas"), "{}", run.stdout);
    assert!(run.stdout.contains("promoted to example.invalid/web:v2"), "{}", run.stdout);
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v2");
    assert!(ns.gone("deployment", "web-canary"));
    ns.rollout_status("web", &[]).assert_ok();
    assert_eq!(serving_image(&ns, "web"), "example.invalid/web:v2");
}

/// Canary through an ingress-nginx canary Ingress, stopped at 50% for a
/// manual gate: the weights are on the objects, the stable is untouched;
/// a separate `mode: promote` run finishes it from the annotations alone.
#[test]
fn kubernetes_canary_through_ingress_waits_and_a_later_run_promotes() {
    let ns = Ns::new("canaryin");
    ns.deployment("web", "example.invalid/web:v1", 2, 60);
    ns.service("web");
    kubectl_stdin(
        &["-n", &ns.0, "apply", "-f", "-"],
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: shop}\nspec:\n  ingressClassName: nginx\n  rules:\n  - host: shop.example.com\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n",
    );
    let run = ns.canary("10,50", "ingress/shop", "example.invalid/web:v2").run();
    assert_status(&run, "success", 0);
    assert!(run.stdout.contains("the canary stays at 50%"), "{}", run.stdout);
    assert_eq!(ns.annotation("ingress", "shop-canary", "nginx.ingress.kubernetes.io/canary"), "true");
    assert_eq!(ns.annotation("ingress", "shop-canary", "nginx.ingress.kubernetes.io/canary-weight"), "50");
    let backend = kubectl_ok(&[
        "-n",
        &ns.0,
        "get",
        "ingress",
        "shop-canary",
        "-o",
        "jsonpath={.spec.rules[0].host} {.spec.rules[0].http.paths[0].backend.service.name}",
    ]);
    assert_eq!(backend, "shop.example.com web-canary");
    assert_eq!(ns.annotation("deployment", "web-canary", "deploy-action/canary-weight"), "50");
    // The canary's pods are not behind the stable Service.
    assert!(ns.endpoint_pods("web").iter().all(|p| !p.starts_with("web-canary-")));
    assert!(!ns.endpoint_pods("web-canary").is_empty());
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v1");
    // A second deploy is refused while it stands.
    let again = ns.canary("10,50", "ingress/shop", "example.invalid/web:v3").run();
    assert_status(&again, "failure", 1);
    assert!(again.stdout.contains("stands at 50 percent; decide it first"), "{}", again.stdout);
    assert!(again.stdout.contains("canary_standing"), "{}", again.stdout);

    let promote = ns.decide("promote", "replicas").run();
    assert_status(&promote, "success", 0);
    assert!(
        promote.stdout.contains("canary of example.invalid/web:v2 at 50% via ingress/shop"),
        "{}",
        promote.stdout
    );
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v2");
    assert!(
        ns.gone("ingress", "shop-canary")
            && ns.gone("deployment", "web-canary")
            && ns.gone("service", "web-canary")
    );
    assert!(!ns.gone("ingress", "shop"));
    ns.rollout_status("web", &[]).assert_ok();
}

/// Canary through a Gateway API HTTPRoute: the backendRefs weights at the
/// step, then `mode: abort` puts them back; a canary that never becomes
/// ready is aborted on its own.
#[test]
fn kubernetes_canary_through_httproute_and_abort() {
    let ns = Ns::new("canaryhr");
    ns.deployment("web", "example.invalid/web:v1", 2, 10);
    ns.service("web");
    ns.httproute("web");
    let weights = || ns.route_weights();
    let run = ns.canary("20", "httproute/shop", "example.invalid/web:v2").run();
    assert_status(&run, "success", 0);
    assert_eq!(weights(), "web=80 web-canary=20");
    let abort = ns.decide("abort", "replicas").run();
    assert_status(&abort, "success", 0);
    assert_eq!(weights(), "web=100");
    assert!(ns.gone("deployment", "web-canary") && ns.gone("service", "web-canary"));
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v1");

    // A candidate that never becomes ready: aborted, weights back.
    let bad = ns.canary("20,100", "httproute/shop", "example.invalid/web:never-ready").run();
    assert_status(&bad, "failure", 1);
    assert!(bad.stdout.contains("exceeded its progress deadline"), "{}", bad.stdout);
    assert_eq!(weights(), "web=100");
    assert!(ns.gone("deployment", "web-canary"));
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v1");
    ns.rollout_status("web", &[]).assert_ok();
}

/// A promotion that fails is undone only as far as it went. Refused before
/// any change (another tool applies the image), the stable keeps its
/// revision, the canary stands where it stood, and the error is the
/// refusal itself; an undo there would have put the stable one revision
/// further back than it ran. A promotion cancelled mid-rollout is undone
/// one revision, to what served before it, and the canary goes.
#[test]
fn kubernetes_canary_failed_promote_undoes_only_what_it_changed() {
    let ns = Ns::new("canaryfp");
    ns.deployment("web", "example.invalid/web:v0", 2, 120);
    ns.service("web");
    // Revision 2: v1, each pod ready 4 s after it starts (kwok's delay).
    kubectl_ok(&[
        "-n",
        &ns.0,
        "patch",
        "deployment",
        "web",
        "-p",
        r#"{"spec":{"template":{"metadata":{"annotations":{"kwok.deploy-action/delay":"4s"}},"spec":{"containers":[{"name":"app","image":"example.invalid/web:v1"}]}}}}"#,
    ]);
    ns.rollout_status("web", &[]).assert_ok();
    assert_eq!(revision(&ns), "2");
    assert_status(&ns.canary("25", "replicas", "example.invalid/web:v2").run(), "success", 0);

    // A GitOps tool applies the image it sees: the promotion is refused.
    ns.gitops_applies_image("web", "example.invalid/web:v1");
    let generation = ns.get("web", "{.metadata.generation}");
    let refused = ns.decide("promote", "replicas").run();
    assert_status(&refused, "failure", 1);
    assert!(refused.stdout.contains("kube_apply_conflict"), "{}", refused.stdout);
    assert!(refused.stdout.contains("gitops"), "{}", refused.stdout);
    assert!(!refused.stdout.contains("did not finish"), "{}", refused.stdout);
    assert!(refused.stdout.contains("still at 25%"), "{}", refused.stdout);
    assert_eq!(ns.get("web", "{.metadata.generation}"), generation);
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v1");
    assert_eq!(revision(&ns), "2");
    assert_eq!(ns.annotation("deployment", "web-canary", "deploy-action/canary-weight"), "25");
    ns.rollout_status("web", &[]).assert_ok();

    // The tool lets go (its managed fields cleared); the promotion starts
    // and is cancelled while the stable rolls.
    kubectl_ok(&[
        "-n",
        &ns.0,
        "patch",
        "deployment",
        "web",
        "--type=merge",
        "-p",
        r#"{"metadata":{"managedFields":[{}]}}"#,
    ]);
    let run = ns.sigterm_mid_rollout(&ns.decide("promote", "replicas"), "web", Duration::from_millis(1500));
    assert!(run.all_text().contains("promotion rolled back to revision 2"), "{}", run.all_text());
    assert!(run.all_text().contains("; canary removed"), "{}", run.all_text());
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v1");
    assert!(ns.gone("deployment", "web-canary"));
    ns.rollout_status("web", &[]).assert_ok();
    assert_eq!(serving_image(&ns, "web"), "example.invalid/web:v1");
}

/// The README's Role with its canary rules is enough for a canary through
/// each router, stopped, then promoted (ingress) or aborted (httproute)
/// by a later run.
#[test]
fn kubernetes_the_readme_canary_rules_are_enough() {
    let ns = Ns::new("rolecanary");
    ns.deployment("web", "example.invalid/web:v1", 2, 60);
    ns.service("web");
    kubectl_stdin(
        &["-n", &ns.0, "apply", "-f", "-"],
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: shop}\nspec:\n  rules:\n  - host: shop.example\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: shop}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n  - backendRefs: [{name: web, port: 80}]\n",
    );
    let kubeconfig = bound_to(&ns, &readme_canary_role());
    let as_deployer = |a: Action| a.input("kubeconfig", &kubeconfig);
    let run = as_deployer(ns.canary("50", "ingress/shop", "example.invalid/web:v2")).run();
    assert_status(&run, "success", 0);
    assert_eq!(ns.annotation("ingress", "shop-canary", "nginx.ingress.kubernetes.io/canary-weight"), "50");
    let run = as_deployer(ns.decide("promote", "ingress/shop")).run();
    assert_status(&run, "success", 0);
    assert!(ns.gone("ingress", "shop-canary") && ns.gone("deployment", "web-canary"));
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v2");

    let run = as_deployer(ns.canary("20", "httproute/shop", "example.invalid/web:v3")).run();
    assert_status(&run, "success", 0);
    let run = as_deployer(ns.decide("abort", "httproute/shop")).run();
    assert_status(&run, "success", 0);
    assert!(ns.gone("service", "web-canary") && ns.gone("deployment", "web-canary"));
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v2");
}

/// A canary whose stable Service is not named like the Deployment: the
/// services file names it, and the route's weights move on that backend.
#[test]
fn kubernetes_canary_services_file_names_the_stable_service() {
    let ns = Ns::new("canaryfile");
    ns.deployment("web", "example.invalid/web:v1", 2, 60);
    ns.service_for("storefront", "web");
    ns.httproute("storefront");
    let weights = || ns.route_weights();
    let with_file = |a: Action| {
        let a = a.without("INPUT_DEPLOYMENTS").input("services-file", "services.yml");
        std::fs::write(
            a.path("services.yml"),
            "services:\n  - {name: web, container: app, service: storefront}\n",
        )
        .unwrap();
        a
    };
    let run = with_file(ns.canary("30", "httproute/shop", "example.invalid/web:v2")).run();
    assert_status(&run, "success", 0);
    assert_eq!(weights(), "storefront=70 web-canary=30");
    let promote = with_file(ns.decide("promote", "httproute/shop")).run();
    assert_status(&promote, "success", 0);
    assert_eq!(weights(), "storefront=100");
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v2");
    assert!(ns.gone("deployment", "web-canary") && ns.gone("service", "web-canary"));
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

/// Every strategy runs the migration first: a failing one stops a
/// blue-green deploy before any colour exists, and a canary before any
/// canary pod.
#[test]
fn kubernetes_blue_green_and_canary_run_the_migration_first() {
    let ns = Ns::new("bgmig");
    ns.deployment("web", "example.invalid/web:v1", 1, 60);
    ns.service("web");
    let before = ns.selector("web");
    for strategy in ["blue-green", "canary"] {
        let mut action = ns
            .action("web:app")
            .input("strategy", strategy)
            .input("migrate-command", r#"["migrate"]"#)
            .input("image", "example.invalid/web:fail");
        if strategy == "canary" {
            // A step one replica can express (10% of it is refused first).
            action = action.input("canary-steps", "50,100");
        }
        let run = action.run();
        assert_status(&run, "failure", 1);
        assert!(run.stdout.contains("migration_failed"), "{strategy}: {}", run.stdout);
        assert_eq!(ns.selector("web"), before, "{strategy}");
        assert!(ns.gone("deployment", "web-blue") && ns.gone("deployment", "web-canary"), "{strategy}");
    }
    // And a good one goes on to the switch.
    let run =
        ns.blue_green("web:app", "example.invalid/web:v2").input("migrate-command", r#"["migrate"]"#).run();
    assert_status(&run, "success", 0);
    let (migrated, switched) =
        (run.stdout.find(": succeeded").unwrap(), run.stdout.find("selector now").unwrap());
    assert!(migrated < switched, "{}", run.stdout);
}

/// A local HTTP server answering `status` and `body` to every request (the
/// smoke tests' "preview" and "live" addresses: kwok's pods carry no
/// traffic); returns its base URL and how many requests it got.
fn answering(status: u16, body: &'static str) -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, hits)
}

/// Smoke tests around a blue-green flip: a failing `preview-url` test
/// leaves every selector as it was; a failing `url` test after the flip
/// flips back; passing ones commit, each result in the summary.
#[test]
fn kubernetes_blue_green_smoke_tests_gate_and_undo_the_flip() {
    let ns = Ns::new("bgsmoke");
    ns.deployment("web", "example.invalid/web:v1", 1, 60);
    ns.service("web");
    let (good, good_hits) = answering(200, "v2 ok");
    let (bad, bad_hits) = answering(503, "upstream down");
    let before = ns.selector("web");

    let tests = format!("- {{name: preview, preview-url: '{bad}/health'}}\n");
    let run = ns.blue_green("web:app", "example.invalid/web:v2").input("smoke-tests", &tests).run();
    assert_status(&run, "failure", 1);
    assert!(run.stdout.contains("smoke_test_failed") && run.stdout.contains("HTTP 503"), "{}", run.stdout);
    assert!(!run.stdout.contains("selector now"), "{}", run.stdout);
    assert_eq!(ns.selector("web"), before, "nothing flipped");
    assert_eq!(bad_hits.load(std::sync::atomic::Ordering::Relaxed), 1);

    let tests = format!("- {{name: live, url: '{bad}/'}}\n");
    let run = ns.blue_green("web:app", "example.invalid/web:v2").input("smoke-tests", &tests).run();
    assert_status(&run, "failure", 1);
    assert!(run.stdout.contains("selector now deploy-action/colour=blue"), "{}", run.stdout);
    assert!(run.stdout.contains("smoke test 'live' failed"), "{}", run.stdout);
    assert!(ns.selector("web").get("deploy-action/colour").is_none(), "flipped back: {}", ns.selector("web"));
    ns.until(30, "the old pods behind web again", || {
        let pods = ns.endpoint_pods("web");
        !pods.is_empty() && pods.iter().all(|p| !p.starts_with("web-blue-"))
    });

    let tests = format!(
        "- {{name: preview, preview-url: '{good}/health', body: ok}}\n- {{name: live, url: '{good}/', body-regex: '^v2'}}\n"
    );
    let run = ns.blue_green("web:app", "example.invalid/web:v2").input("smoke-tests", &tests).run();
    assert_status(&run, "success", 0);
    assert_eq!(ns.selector("web")["deploy-action/colour"], "blue");
    assert_eq!(good_hits.load(std::sync::atomic::Ordering::Relaxed), 2);
    let rows = crate::support::summary_table(&run.summary, "### What users saw");
    assert_eq!(rows.iter().filter(|r| r[3] == "passed").count(), 2, "{rows:?}");
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

/// CloudWatch alarms and the Prometheus query in a blue-green window and a
/// canary step.
mod analysis;
mod kinds;
mod manifests;
mod trust;
