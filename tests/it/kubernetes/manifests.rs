//! The manifests' other objects (issue 21's smaller items): the custom
//! resources that make Secrets go before the workloads that read them, and
//! a signal while they are applied stops the applying.

use std::process::Command;
use std::time::{Duration, Instant};

use super::*;

/// The CustomResourceDefinitions of sealed-secrets and external-secrets,
/// as a cluster running those controllers has them (the objects are only
/// stored here: no controller turns them into Secrets).
fn secret_crds() {
    let crd = |group: &str, kind: &str, plural: &str, version: &str| {
        format!(
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {{name: {plural}.{group}}}\nspec:\n  group: {group}\n  scope: Namespaced\n  names: {{kind: {kind}, plural: {plural}, singular: {singular}}}\n  versions:\n  - name: {version}\n    served: true\n    storage: true\n    schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}\n",
            singular = kind.to_lowercase()
        )
    };
    let all = [
        crd("bitnami.com", "SealedSecret", "sealedsecrets", "v1alpha1"),
        crd("external-secrets.io", "ExternalSecret", "externalsecrets", "v1beta1"),
        crd("external-secrets.io", "SecretStore", "secretstores", "v1beta1"),
    ]
    .join("---\n");
    kubectl_stdin(&["apply", "-f", "-"], &all);
    for name in [
        "sealedsecrets.bitnami.com",
        "externalsecrets.external-secrets.io",
        "secretstores.external-secrets.io",
    ] {
        kubectl_ok(&["wait", "--for=condition=Established", "--timeout=30s", &format!("crd/{name}")]);
    }
}

/// Custom resources whose controllers make the Secrets a workload reads
/// (a SealedSecret, an ExternalSecret and the SecretStore it names) are
/// applied before the Deployment that mounts them, as a Secret written
/// out would be. Before, they ranked with the unknown kinds, after every
/// workload (and after the migration that reads them).
#[test]
fn kubernetes_secret_making_custom_resources_are_applied_before_the_workloads() {
    secret_crds();
    let ns = Ns::new("crs");
    let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n      - name: app\n        image: example.invalid/web:latest\n        envFrom: [{secretRef: {name: web-db, optional: true}}, {secretRef: {name: web-api, optional: true}}]\n---\napiVersion: bitnami.com/v1alpha1\nkind: SealedSecret\nmetadata: {name: web-db}\nspec: {encryptedData: {DATABASE_URL: AgBy3i4OJSWK}}\n---\napiVersion: external-secrets.io/v1beta1\nkind: ExternalSecret\nmetadata: {name: web-api}\nspec: {secretStoreRef: {name: aws, kind: SecretStore}, target: {name: web-api}, data: [{secretKey: API_KEY, remoteRef: {key: /shop/api-key}}]}\n---\napiVersion: external-secrets.io/v1beta1\nkind: SecretStore\nmetadata: {name: aws}\nspec: {provider: {aws: {service: ParameterStore, region: eu-west-1}}}\n";
    let run = ns.manifests_action("example.invalid/web:v1", yaml).run();
    assert_status(&run, "success", 0);
    let at = |s: String| run.stdout.find(&s).unwrap_or_else(|| panic!("{s} missing: {}", run.stdout));
    let store = at(format!("secretstore {}/aws: applied (k8s/app.yaml#4)", ns.0));
    let sealed = at(format!("sealedsecret {}/web-db: applied (k8s/app.yaml#2)", ns.0));
    let external = at(format!("externalsecret {}/web-api: applied (k8s/app.yaml#3)", ns.0));
    let web = at(format!("deployment {}/web: created", ns.0));
    assert!(store < external && sealed < web && external < web, "apply order: {}", run.stdout);
    // The cluster holds them as written.
    assert_eq!(
        kubectl_ok(&[
            "-n",
            &ns.0,
            "get",
            "externalsecret",
            "web-api",
            "-o",
            "jsonpath={.spec.secretStoreRef.name}"
        ]),
        "aws"
    );
    kubectl_ok(&["-n", &ns.0, "get", "sealedsecret", "web-db"]);
}

/// SIGTERM while the manifests' objects are applied (400 ConfigMaps, before
/// the Deployment): the action stops applying at once (no more than the
/// write in flight after the signal), leaves the Deployment as it was and
/// exits within the runner's 7 s. Before, every object was applied first.
#[test]
fn kubernetes_a_signal_while_the_manifests_are_applied_stops_the_applying() {
    let ns = Ns::new("applysig");
    ns.deployment("web", "example.invalid/web:v1", 1, 60);
    let total = 400;
    let mut yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n      - {name: app, image: \"example.invalid/web:latest\"}\n      - {name: sidecar, image: \"example.invalid/sidecar:1\"}\n".to_string();
    for i in 0..total {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cfg-{i:03}}}\ndata: {{N: \"{i}\"}}\n"
        ));
    }
    let action = ns.manifests_action("example.invalid/web:v2", &yaml);
    let applied = || {
        kubectl_ok(&["-n", &ns.0, "get", "configmaps", "-o", "name"])
            .lines()
            .filter(|l| l.contains("cfg-"))
            .count()
    };
    let child = action.spawn();
    let start = Instant::now();
    while applied() < 5 {
        assert!(start.elapsed() < Duration::from_secs(60), "no ConfigMap applied within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let at_signal = applied();
    let (run, took) = crate::fleet::finish_within(&action, child, Duration::from_secs(20));
    assert!(took < Duration::from_secs(7), "took {took:?} after SIGTERM:\n{}", run.stdout);
    assert_status(&run, "error", 130);
    let after = applied();
    // The write in flight at the signal (and one racing the count) at most.
    assert!(
        after <= at_signal + 2 && after < total,
        "{at_signal} applied at the signal, {after} after:\n{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!("of {total} object(s) applied, the rest left as they were")),
        "{}",
        run.stdout
    );
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v1");
    assert_eq!(ns.get("web", "{.metadata.generation}"), "1");
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
