//! The docs' Roles, bound to a ServiceAccount: exactly enough, and the
//! missing rule named.

use super::*;

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

/// The README's Role with its canary rules is enough for a canary through
/// each router, stopped, then promoted (ingress) or aborted (httproute)
/// by a later run.
#[test]
fn kubernetes_the_readme_canary_rules_are_enough() {
    let ns = Ns::new("rolecanary");
    ns.deployment("web", "example.invalid/web:v1", 2, 60);
    ns.service("web");
    ns.ingress("web");
    ns.httproute("web");
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
