//! EKS: the token the action signs, accepted and refused by the stack's
//! authenticator; the EKS inputs.

use super::*;

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
