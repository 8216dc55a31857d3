//! What a target and a strategy allow: the inputs of another target or
//! another strategy are refused, never silently ignored.

use super::*;

/// What each target requires, and refuses, of the other inputs.
// long: one rule per target per input, a table read top to bottom.
pub(super) fn target_rules(
    c: &mut Check,
    raw: &RawInputs,
    b: &Basics,
    hosts: &[HostSpec],
    finds_instances: bool,
    ssh: &SshSpec,
    service_count: usize,
) {
    let (target, mode, strategy) = (b.target, b.mode, b.strategy);
    match target {
        TargetKind::Hosts if hosts.is_empty() && raw.hosts.is_none() => {
            c.problem("hosts", "is required for target 'hosts': a list of [user@]host[:port], one per line or comma-separated")
        }
        TargetKind::Ec2 if !finds_instances => {
            c.problem("ec2-filters", "target 'ec2' needs 'ec2-instance-ids' or 'ec2-filters' (like Role=web,Env=prod) to find instances")
        }
        TargetKind::Kubernetes
            if raw.deployments.is_none() && raw.manifests.is_none() && raw.services_file.is_none() =>
        {
            c.problem(
                "deployments",
                "is required for target 'kubernetes' (or 'manifests', or a 'services-file' listing them): Deployment names (name or name:container), one per line or comma-separated",
            )
        }
        _ => {}
    }
    if target == TargetKind::Kubernetes && mode == Mode::Rollback && raw.image.is_some() {
        c.problem("image", "mode 'rollback' on target 'kubernetes' restores the previous revision (as kubectl rollout undo); omit 'image', or deploy that image with mode 'deploy'");
    }
    if target == TargetKind::Kubernetes
        && (strategy == StrategyKind::Canary || matches!(mode, Mode::Promote | Mode::Abort))
    {
        if raw.deployments.as_deref().is_some_and(|d| g::list(d).len() != 1) {
            c.problem("deployments", "strategy 'canary' on target 'kubernetes' takes one Deployment");
        }
        if raw.manifests.is_some() {
            c.problem(
                "manifests",
                "strategy 'canary' on target 'kubernetes' works from an existing Deployment ('deployments')",
            );
        }
    }
    if matches!(mode, Mode::Promote | Mode::Abort) {
        if target != TargetKind::Kubernetes || strategy != StrategyKind::Canary {
            c.problem(
                "mode",
                format!(
                    "'{}' decides a standing canary: it needs target 'kubernetes' and strategy 'canary'",
                    if mode == Mode::Promote { "promote" } else { "abort" }
                ),
            );
        }
        if raw.image.is_some() {
            c.problem("image", "mode 'promote' and 'abort' act on the standing canary's image; omit 'image'");
        }
    }
    if target != TargetKind::Kubernetes && raw.canary_traffic.is_some() {
        c.problem("canary-traffic", "is only used with target 'kubernetes'");
    }
    if target == TargetKind::Kubernetes && strategy == StrategyKind::BlueGreen && raw.manifests.is_some() {
        c.problem("manifests", "blue-green on target 'kubernetes' works from existing Deployments and Services ('deployments'); apply the manifests with strategy 'rolling' first");
    }
    if target != TargetKind::Kubernetes {
        for (name, set) in [
            ("kubeconfig", &raw.kubeconfig),
            ("kube-context", &raw.kube_context),
            ("namespace", &raw.namespace),
            ("deployments", &raw.deployments),
            ("manifests", &raw.manifests),
            ("eks-cluster", &raw.eks_cluster),
        ] {
            if set.is_some() {
                c.problem(name, "is only used with target 'kubernetes'");
            }
        }
    }
    other_targets_inputs(c, raw, target);
    other_strategies_inputs(c, raw, target, strategy);
    if target == TargetKind::Ec2 && mode != Mode::Plan && raw.ssh_user.is_none() {
        c.problem(
            "ssh-user",
            "is required for target 'ec2': stock AMIs refuse root over SSH; use the AMI's user: ec2-user (Amazon Linux, RHEL), ubuntu (Ubuntu), admin (Debian), centos (CentOS), rocky (Rocky Linux), fedora (Fedora), or root where your image allows it",
        );
    }
    if matches!(target, TargetKind::Hosts | TargetKind::Ec2) && mode != Mode::Plan {
        let made_key = raw.ec2_connect.as_deref().map(str::trim) == Some("instance-connect-endpoint");
        if ssh.private_key.is_none() && !made_key {
            c.problem("ssh-private-key", "is required to reach hosts (or set 'ssh-private-key-ssm')");
        }
        let console_keys = target == TargetKind::Ec2
            && raw.ec2_host_keys.as_deref().map(str::trim) == Some("console-output");
        if ssh.known_hosts.is_none() && !console_keys {
            c.problem("ssh-known-hosts", "is required: host keys must be pinned (known_hosts lines, e.g. from ssh-keyscan run once by you; or set 'ssh-known-hosts-ssm'; with target 'ec2', or 'ec2-host-keys: console-output')");
        } else if ssh.known_hosts.is_none() && ssh.jump.is_some() {
            c.problem("ssh-known-hosts", "is required for the 'ssh-jump-host' key: a bastion's key is not in the instances' console output");
        }
    }
    if strategy == StrategyKind::Canary && service_count > 1 {
        c.problem("strategy", "canary works with one proxied service; use blue-green with a services file");
    }
}

/// Inputs of a strategy (or of the hosts' health checks and fleet) that
/// this run would not use, refused instead of silently ignored: a
/// `canary-steps` with blue-green, an `observe-window` on a rolling
/// cluster, a `health-check-path` on a cluster (the pods' probes judge)
/// are workflows that do not do what they say. A value equal to the
/// default the runner passes is not "given".
pub(super) fn other_strategies_inputs(
    c: &mut Check,
    raw: &RawInputs,
    target: TargetKind,
    strategy: StrategyKind,
) {
    if strategy != StrategyKind::Canary {
        for (name, set) in [("canary-steps", &raw.canary_steps), ("canary-interval", &raw.canary_interval)] {
            if Check::given(name, set) {
                c.problem(
                    name,
                    format!("goes with strategy 'canary'; this run's strategy is '{}'", strategy.as_str()),
                );
            }
        }
    }
    if target != TargetKind::Kubernetes {
        return;
    }
    let unused_here: &[(&str, &Option<String>)] = match strategy {
        StrategyKind::Rolling => &[("observe-window", &raw.observe_window), ("drain-time", &raw.drain_time)],
        StrategyKind::Canary => &[("observe-window", &raw.observe_window)],
        StrategyKind::BlueGreen => &[],
    };
    for (name, set) in unused_here {
        if Check::given(name, set) {
            c.problem(
                name,
                format!("is not used by strategy '{}' on target 'kubernetes' (see docs/inputs.md for where it applies)", strategy.as_str()),
            );
        }
    }
    let hosts_only: [(&str, &Option<String>, &str); 16] = [
        ("container-port", &raw.container_port, "the ports are the Deployment's pod spec"),
        ("blue-port", &raw.blue_port, "the colours are Deployments, not host ports"),
        ("green-port", &raw.green_port, "the colours are Deployments, not host ports"),
        ("restart-policy", &raw.restart_policy, "the pod spec's restartPolicy applies"),
        ("health-check-path", &raw.health_check_path, "the pods' readiness probes judge health"),
        (
            "health-check-timeout",
            &raw.health_check_timeout,
            "the Deployment's progressDeadlineSeconds bounds the rollout",
        ),
        ("health-check-interval", &raw.health_check_interval, "the pods' readiness probes judge health"),
        ("health-check-successes", &raw.health_check_successes, "the pods' readiness probes judge health"),
        (
            "health-check-max-latency",
            &raw.health_check_max_latency,
            "the pods' readiness probes judge health",
        ),
        (
            "health-check-max-response-time",
            &raw.health_check_max_response_time,
            "the pods' readiness probes judge health",
        ),
        ("version-path", &raw.version_path, "the switch is checked through the Service's EndpointSlices"),
        ("observe-failures", &raw.observe_failures, "the pods' readiness judges the observe window"),
        (
            "min-requests",
            &raw.min_requests,
            "it goes with max-error-rate and max-latency (nginx's access log)",
        ),
        ("nginx-access-log", &raw.nginx_access_log, "traffic moves with the Service's selector"),
        ("max-parallel", &raw.max_parallel, "the Deployment's maxSurge and maxUnavailable pace the rollout"),
        ("on-host-failure", &raw.on_host_failure, "every Deployment goes back together"),
    ];
    for (name, set, why) in hosts_only {
        if Check::given(name, set) {
            c.problem(
                name,
                format!("is only used with targets 'hosts' and 'ec2'; on target 'kubernetes' {why}"),
            );
        }
    }
}

/// Inputs another target uses, refused instead of silently ignored: a
/// `registry-password` or `ssh-*` given on a cluster, or a `hosts` list
/// given with `target: ec2`, is a workflow that does not do what it says.
pub(super) fn other_targets_inputs(c: &mut Check, raw: &RawInputs, target: TargetKind) {
    let on_hosts: &[(&str, &Option<String>, &str)] = &[
        ("env", &raw.env, "the environment is the Deployment's pod spec (or its manifest)"),
        ("command", &raw.command, "the command is the Deployment's pod spec (or its manifest)"),
        ("container-port", &raw.container_port, "ports are the Deployment's and its Service's"),
        ("blue-port", &raw.blue_port, "blue-green flips the Service's selector"),
        ("green-port", &raw.green_port, "blue-green flips the Service's selector"),
        ("restart-policy", &raw.restart_policy, "the pod spec's restartPolicy applies"),
        ("registry-username", &raw.registry_username, "the cluster pulls with the pod's imagePullSecrets"),
        ("registry-password", &raw.registry_password, "the cluster pulls with the pod's imagePullSecrets"),
        (
            "registry-password-ssm",
            &raw.registry_password_ssm,
            "the cluster pulls with the pod's imagePullSecrets",
        ),
        ("ssh-user", &raw.ssh_user, "the cluster is reached with 'kubeconfig' or 'eks-cluster'"),
        ("ssh-port", &raw.ssh_port, "the cluster is reached with 'kubeconfig' or 'eks-cluster'"),
        (
            "ssh-private-key",
            &raw.ssh_private_key,
            "the cluster is reached with 'kubeconfig' or 'eks-cluster'",
        ),
        (
            "ssh-private-key-ssm",
            &raw.ssh_private_key_ssm,
            "the cluster is reached with 'kubeconfig' or 'eks-cluster'",
        ),
        (
            "ssh-known-hosts",
            &raw.ssh_known_hosts,
            "the cluster is reached with 'kubeconfig' or 'eks-cluster'",
        ),
        (
            "ssh-known-hosts-ssm",
            &raw.ssh_known_hosts_ssm,
            "the cluster is reached with 'kubeconfig' or 'eks-cluster'",
        ),
        ("ssh-timeout", &raw.ssh_timeout, "the cluster is reached with 'kubeconfig' or 'eks-cluster'"),
        ("ssh-jump-host", &raw.ssh_jump_host, "the cluster is reached with 'kubeconfig' or 'eks-cluster'"),
        ("docker-socket", &raw.docker_socket, "the cluster runs the containers"),
        ("nginx-upstream-file", &raw.nginx_upstream_file, "traffic moves with the Service's selector"),
        ("proxy-url", &raw.proxy_url, "traffic moves with the Service's selector"),
        ("lock-dir", &raw.lock_dir, "the GitHub deployment is the lock"),
        ("break-lock", &raw.break_lock, "the GitHub deployment is the lock"),
        ("hosts", &raw.hosts, "the cluster is named by 'kubeconfig' or 'eks-cluster'"),
    ];
    if target == TargetKind::Kubernetes {
        for (name, set, why) in on_hosts {
            if Check::given(name, set) {
                c.problem(
                    name,
                    format!("is only used with targets 'hosts' and 'ec2'; on target 'kubernetes' {why}"),
                );
            }
        }
    }
    if target == TargetKind::Ec2 && raw.hosts.is_some() {
        c.problem(
            "hosts",
            "is only used with target 'hosts'; target 'ec2' finds its hosts with 'ec2-instance-ids' or 'ec2-filters' (for a fixed list, use target 'hosts')",
        );
    }
    if target != TargetKind::Ec2 {
        for (name, set) in [
            ("ec2-instance-ids", &raw.ec2_instance_ids),
            ("ec2-filters", &raw.ec2_filters),
            ("ec2-address", &raw.ec2_address),
            ("ec2-host-keys", &raw.ec2_host_keys),
        ] {
            if Check::given(name, set) {
                c.problem(name, "is only used with target 'ec2'");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::inputs::given::Given;

    #[test]
    fn inputs_of_the_hosts_targets_are_refused_on_a_cluster() {
        for (input, value) in [
            ("env", "A=b"),
            ("command", "[\"bin/web\"]"),
            ("registry-username", "deploy"),
            ("registry-password", "hunter2"),
            ("ssh-user", "ubuntu"),
            ("ssh-private-key", "key"),
            ("ssh-known-hosts-ssm", "/deploy/known-hosts"),
            ("ssh-jump-host", "bastion.example.com"),
            ("hosts", "web-1.internal"),
            ("proxy-url", "http://127.0.0.1:8080/"),
        ] {
            let p = Given::kubernetes().set(input, value).problems();
            assert!(
                p.iter()
                    .any(|p| p.starts_with(&format!("{input}: is only used with targets 'hosts' and 'ec2'"))),
                "{input}: {p:?}"
            );
        }
    }

    #[test]
    fn hosts_are_refused_with_ec2_and_ec2_inputs_elsewhere() {
        let p = Given::ec2().set("hosts", "10.0.0.1").problems();
        assert!(
            p.iter().any(|p| p.starts_with("hosts: is only used with target 'hosts'; target 'ec2' finds")),
            "{p:?}"
        );
        let p = Given::hosts().set("hosts", "10.0.0.1").set("ec2-filters", "Role=web").problems();
        assert_eq!(p, ["ec2-filters: is only used with target 'ec2'"]);
    }

    #[test]
    fn inputs_a_strategy_or_a_cluster_would_not_use_are_named() {
        // Canary inputs with another strategy, on any target.
        let p = Given::hosts()
            .with_defaults()
            .set("strategy", "blue-green")
            .set("canary-steps", "10,100")
            .problems();
        assert_eq!(p, ["canary-steps: goes with strategy 'canary'; this run's strategy is 'blue-green'"]);
        // A rolling cluster has no observe window and no drain; a canary on a
        // cluster watches each step for canary-interval instead.
        let k8s = || Given::kubernetes().with_defaults();
        let p = k8s().set("observe-window", "1m").set("drain-time", "5s").problems();
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].starts_with("observe-window: is not used by strategy 'rolling' on target 'kubernetes'"),
            "{p:?}"
        );
        assert!(p[1].starts_with("drain-time: is not used by strategy 'rolling'"), "{p:?}");
        let bluegreen =
            k8s().set("strategy", "blue-green").set("observe-window", "1m").set("drain-time", "5s");
        assert_eq!(bluegreen.problems(), Vec::<String>::new());
        let p = k8s()
            .set("strategy", "canary")
            .set("observe-window", "1m")
            .set("canary-traffic", "httproute/web")
            .problems();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("observe-window: is not used by strategy 'canary'"), "{p:?}");
        // The hosts' health checks and fleet settings on a cluster.
        let p = k8s()
            .set("health-check-path", "/healthz")
            .set("max-parallel", "2")
            .set("version-path", "/v")
            .problems();
        assert_eq!(p.len(), 3, "{p:?}");
        for input in ["health-check-path", "version-path", "max-parallel"] {
            assert!(
                p.iter().any(|p| p.starts_with(&format!(
                    "{input}: is only used with targets 'hosts' and 'ec2'; on target 'kubernetes'"
                ))),
                "{input}: {p:?}"
            );
        }
        // The defaults the runner passes for all of them are no problem (the
        // defaults test in `validate` covers every input at once).
    }
}
