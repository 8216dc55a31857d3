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

fn token_kubeconfig(token: &str) -> String {
    use base64::Engine;
    let ca = std::fs::read(stack_var("K8S_CA_FILE")).unwrap();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"{}\", certificate-authority-data: {}}}\nusers:\n- name: u\n  user: {{token: {token}}}\ncontexts:\n- name: d\n  context: {{cluster: c, user: u}}\ncurrent-context: d\n",
        stack_var("K8S_SERVER"),
        base64::engine::general_purpose::STANDARD.encode(ca),
    )
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

/// The secret references of the `app` container's `envFrom`, in order
/// (`-` for an entry of another kind).
pub(crate) fn env_from(ns: &Ns) -> Vec<String> {
    let json = ns.get("web", "{.spec.template.spec.containers[?(@.name==\"app\")].envFrom}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v.as_array().unwrap().iter().map(|e| e["secretRef"]["name"].as_str().unwrap_or("-").to_string()).collect()
}

/// Whether `value` appears in what the run printed or wrote, beyond the
/// `::add-mask::` command that hides it.
pub(crate) fn shows(run: &Run, value: &str) -> bool {
    let out = run.stdout.lines().filter(|l| !l.starts_with("::add-mask::")).collect::<Vec<_>>().join("\n");
    [out.as_str(), &run.stderr, &run.summary].iter().any(|t| t.contains(value))
}

pub(crate) fn revision(ns: &Ns) -> String {
    ns.get("web", "{.metadata.annotations.deployment\\.kubernetes\\.io/revision}")
}

mod access;
/// CloudWatch alarms and the Prometheus query in a blue-green window and a
/// canary step.
mod analysis;
mod bluegreen;
mod canary;
mod eks;
mod kinds;
mod manifests;
mod rolling;
mod secrets;
mod trust;
