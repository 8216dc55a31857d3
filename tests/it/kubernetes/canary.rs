//! `strategy: canary` on a cluster: by replicas, through ingress-nginx and
//! the Gateway API, promote and abort.

use super::*;

impl Ns {
    pub(crate) fn canary(&self, steps: &str, traffic: &str, image: &str) -> Action {
        self.action("web:app")
            .input("strategy", "canary")
            .input("canary-steps", steps)
            .input("canary-interval", "1s")
            .input("canary-traffic", traffic)
            .input("image", image)
    }

    pub(crate) fn decide(&self, mode: &str, traffic: &str) -> Action {
        self.action("web:app")
            .input("strategy", "canary")
            .input("canary-traffic", traffic)
            .input("mode", mode)
    }

    pub(crate) fn annotation(&self, kind: &str, name: &str, key: &str) -> String {
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

    /// An Ingress `shop` sending everything for `shop.example` to Service
    /// `backend`.
    pub(crate) fn ingress(&self, backend: &str) {
        kubectl_stdin(
            &["-n", &self.0, "apply", "-f", "-"],
            &format!(
                "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: shop}}\nspec:\n  rules:\n  - host: shop.example\n    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: {backend}, port: {{number: 80}}}}}}}}]}}\n"
            ),
        );
    }

    /// An HTTPRoute `shop` sending everything to Service `backend`.
    pub(crate) fn httproute(&self, backend: &str) {
        kubectl_stdin(
            &["-n", &self.0, "apply", "-f", "-"],
            &format!(
                "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: shop}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules:\n  - backendRefs: [{{name: {backend}, port: 80}}]\n"
            ),
        );
    }

    /// The HTTPRoute `shop`'s backends as `name=weight` words.
    pub(crate) fn route_weights(&self) -> String {
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

    pub(crate) fn gone(&self, kind: &str, name: &str) -> bool {
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

/// Behind a weighted router the canary's pods carry
/// `deploy-action/canary-of` instead of the labels the stable Service
/// selects on: a NetworkPolicy that lets traffic reach `app: web` would miss
/// them (under the default deny beside it they would get nothing). The
/// deploy is refused before any change, naming that policy and not the
/// deny-all that selects every pod; with a NetworkPolicy of the canary's
/// own it goes ahead, and a PodDisruptionBudget that misses the canary is a
/// warning.
#[test]
fn kubernetes_canary_refuses_a_network_policy_that_would_miss_its_pods() {
    let ns = Ns::new("canarynp");
    ns.deployment("web", "example.invalid/web:v1", 2, 60);
    ns.service("web");
    ns.ingress("web");
    kubectl_stdin(
        &["-n", &ns.0, "apply", "-f", "-"],
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-all}\nspec: {podSelector: {}, policyTypes: [Ingress]}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow-web}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  ingress: [{ports: [{port: 80}]}]\n---\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: web-pdb}\nspec: {minAvailable: 1, selector: {matchLabels: {app: web}}}\n",
    );
    let run = ns.canary("10,50", "ingress/shop", "example.invalid/web:v2").run();
    assert_status(&run, "failure", 1);
    assert!(run.stdout.contains("canary_policy_uncovered"), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("networkpolicy {}/allow-web select", ns.0)), "{}", run.stdout);
    assert!(!run.stdout.contains("/deny-all"), "{}", run.stdout);
    assert!(run.stdout.contains("selecting deploy-action/canary-of: web"), "{}", run.stdout);
    // Nothing changed.
    assert!(
        ns.gone("deployment", "web-canary")
            && ns.gone("service", "web-canary")
            && ns.gone("ingress", "shop-canary")
    );
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v1");

    // A policy of the canary's own, as the refusal says: it goes ahead.
    kubectl_stdin(
        &["-n", &ns.0, "apply", "-f", "-"],
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow-web-canary}\nspec:\n  podSelector: {matchLabels: {deploy-action/canary-of: web}}\n  ingress: [{ports: [{port: 80}]}]\n",
    );
    let run = ns.canary("10", "ingress/shop", "example.invalid/web:v2").run();
    assert_status(&run, "success", 0);
    assert!(run.stdout.contains("canary_budget_uncovered"), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("poddisruptionbudget {}/web-pdb", ns.0)), "{}", run.stdout);
    assert_eq!(ns.annotation("ingress", "shop-canary", "nginx.ingress.kubernetes.io/canary-weight"), "10");
}
