//! `target: kubernetes`: the cluster's inputs, the workloads named, and
//! the manifests' workloads.

use super::*;

// long: one independent check per cluster input (workloads, services file, EKS, kubeconfig, namespace), in action.yml's order.
pub(super) fn kubernetes(
    c: &mut Check,
    raw: &RawInputs,
    env: &Env,
    ctx: &RawContext,
    b: &Basics,
) -> Option<KubernetesSpec> {
    let target = b.target;
    (target == TargetKind::Kubernetes).then(|| {
        let mut deployments: Vec<DeploymentRef> = raw
            .deployments
            .as_deref()
            .map(|d| {
                g::list(d)
                    .iter()
                    .filter_map(|s| c.parse("deployments", &Some(s.clone()), g::deployment_ref))
                    .collect()
            })
            .unwrap_or_default();
        if deployments.is_empty() && raw.deployments.as_deref().is_some_and(|d| g::list(d).is_empty()) {
            c.problem("deployments", "names no Deployment; list them as name or name:container");
        }
        for (i, d) in deployments.iter().enumerate() {
            if deployments[..i].iter().any(|o| o.name == d.name && o.kind == d.kind) {
                c.problem("deployments", format!("'{}' is named twice", d.label()));
            }
        }
        if b.strategy != StrategyKind::Rolling {
            for d in deployments.iter().filter(|d| d.kind != WorkloadKind::Deployment) {
                c.problem(
                    "deployments",
                    format!(
                        "'{}': strategy '{}' takes Deployments only (it runs a second Deployment beside the first); deploy a {} with strategy 'rolling'",
                        d.label(),
                        if b.strategy == StrategyKind::Canary { "canary" } else { "blue-green" },
                        d.kind.as_str()
                    ),
                );
            }
        }
        let manifests = match raw.manifests.as_deref().map(g::list) {
            None => Vec::new(),
            Some(patterns) => {
                let workspace = ctx.github_workspace.clone().unwrap_or_else(|| ".".into());
                let (m, problems) = manifests::load(std::path::Path::new(&workspace), &patterns);
                for p in problems {
                    c.problem("manifests", p);
                }
                m
            }
        };
        if !manifests.is_empty() {
            deployments = manifest_deployments(c, &manifests, deployments, b);
        }
        if let Some(file) = &raw.services_file {
            for (input, set) in [("deployments", &raw.deployments), ("manifests", &raw.manifests)] {
                if set.is_some() {
                    c.problem(input, "cannot be combined with 'services-file', which lists the Deployments");
                }
            }
            if let Some(text) = workspace_file(c, ctx, "services-file", file) {
                deployments = services::kube_from_file(&text, &mut c.problems);
            }
            if b.image.is_none() && matches!(b.mode, Mode::Deploy | Mode::Plan) {
                for d in deployments.iter().filter(|d| d.image.is_none()) {
                    c.problem(
                        "services-file",
                        format!("'{}' has no image: set image there or the 'image' input", d.name),
                    );
                }
            }
            match b.strategy {
                StrategyKind::Canary if deployments.len() > 1 => c.problem(
                    "services-file",
                    "strategy 'canary' on target 'kubernetes' takes one Deployment; this file lists several",
                ),
                // (An empty list: the file did not parse, and that is named.)
                StrategyKind::BlueGreen if !deployments.is_empty() && deployments.iter().all(|d| d.worker) => c.problem(
                    "services-file",
                    "strategy 'blue-green' flips Services, and every entry here has 'proxy: false' (no Service): deploy workers alone with strategy 'rolling'",
                ),
                _ => {}
            }
        }
        let eks = raw.eks_cluster.as_deref().map(str::trim).and_then(|name| {
            for (input, set) in [("kubeconfig", &raw.kubeconfig), ("kube-context", &raw.kube_context)] {
                if set.is_some() {
                    c.problem(input, "cannot be combined with 'eks-cluster' (the endpoint, CA and token come from AWS)");
                }
            }
            // EKS cluster names: 1-100 of [0-9A-Za-z_-], starting alphanumeric.
            let valid = !name.is_empty()
                && name.len() <= 100
                && name.starts_with(|ch: char| ch.is_ascii_alphanumeric())
                && name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_');
            if !valid {
                c.problem("eks-cluster", format!("'{name}' is not an EKS cluster name (1-100 letters, digits, '-' or '_', starting with a letter or digit)"));
            }
            match raw.aws_region.as_deref().map(str::trim) {
                Some(region) if valid => Some(EksSpec { cluster: name.into(), region: region.into() }),
                None => {
                    c.problem("aws-region", "is required with 'eks-cluster' (the cluster's region)");
                    None
                }
                _ => None,
            }
        });
        KubernetesSpec {
            kubeconfig: raw.kubeconfig.clone().map(SecretValue::new),
            kubeconfig_env: env.get("KUBECONFIG").map(String::from),
            context: raw.kube_context.as_deref().map(|s| s.trim().to_string()),
            eks,
            namespace: c.or("namespace", &raw.namespace, "default".into(), g::dns1123_label),
            deployments,
            manifests,
            canary_traffic: c.or("canary-traffic", &raw.canary_traffic, CanaryTraffic::Replicas, |s| {
                match s.split_once('/') {
                    None if s == "replicas" => Ok(CanaryTraffic::Replicas),
                    Some(("ingress", n)) => g::dns1123_subdomain(n).map(CanaryTraffic::Ingress),
                    Some(("httproute", n)) => g::dns1123_subdomain(n).map(CanaryTraffic::HttpRoute),
                    _ => Err("must be 'replicas', 'ingress/<Ingress name>' (ingress-nginx canary) or 'httproute/<HTTPRoute name>' (Gateway API)".into()),
                }
            }),
        }
    })
}

/// With `manifests`, the workloads to roll: those `deployments` names
/// (each must be in the manifests, with the container), else every
/// container of the manifests' workloads that runs the image's repository.
/// A rolling deploy also judges (and undoes) every other Deployment,
/// StatefulSet and DaemonSet of the manifests, with the image the manifest
/// gives it: applied and forgotten, a crash-looping one would go unseen.
// long: the matching of named workloads against the manifests' and the refusals it makes, which read together.
pub(super) fn manifest_deployments(
    c: &mut Check,
    manifests: &[manifests::Manifest],
    named: Vec<DeploymentRef>,
    b: &Basics,
) -> Vec<DeploymentRef> {
    let rolling = b.strategy == StrategyKind::Rolling;
    let in_manifests: Vec<&manifests::Manifest> = manifests
        .iter()
        .filter(|m| m.workload_kind().is_some_and(|k| rolling || k == WorkloadKind::Deployment))
        .collect();
    let mut out = if !named.is_empty() {
        let mut out = Vec::new();
        for d in named {
            // A bare name takes the kind of the manifest that has it.
            // A workload of the kind named first (a bare name: a Deployment),
            // else, for a bare name, the other kind of that name.
            let found = in_manifests
                .iter()
                .find(|m| m.name() == d.name && m.workload_kind() == Some(d.kind))
                .or_else(|| {
                    in_manifests.iter().find(|m| m.name() == d.name && d.kind == WorkloadKind::Deployment)
                });
            match found {
                None => c.problem(
                    "deployments",
                    format!(
                        "'{}' is not a {} in the manifests",
                        d.label(),
                        if rolling {
                            "Deployment, StatefulSet or DaemonSet (apps/v1)"
                        } else {
                            "Deployment (apps/v1)"
                        }
                    ),
                ),
                Some(m) => {
                    let containers = m.containers();
                    if let Some(want) = &d.container
                        && !containers.iter().any(|(n, _)| n == want)
                    {
                        c.problem(
                            "deployments",
                            format!(
                                "{} '{}' in {} has no container '{want}' (it has: {})",
                                m.kind(),
                                d.name,
                                m.source,
                                containers.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
                            ),
                        );
                    }
                    let kind = m.workload_kind().unwrap_or_default();
                    if out.iter().any(|o: &DeploymentRef| o.name == d.name && o.kind == kind) {
                        // `db` and `sts/db` both found the StatefulSet.
                        c.problem(
                            "deployments",
                            format!("'{}' names the {} '{}' again", d.label(), kind.as_str(), d.name),
                        );
                        continue;
                    }
                    out.push(DeploymentRef { kind, ..d });
                }
            }
        }
        out
    } else if let Some(image) = &b.image {
        let same_repo = |i: &str| {
            g::image(i).is_ok_and(|i| i.repository == image.repository && i.registry == image.registry)
        };
        let found: Vec<DeploymentRef> = in_manifests
            .iter()
            .filter_map(|m| {
                m.containers().into_iter().find(|(_, i)| same_repo(i)).map(|(container, _)| DeploymentRef {
                    name: m.name().into(),
                    kind: m.workload_kind().unwrap_or_default(),
                    container: Some(container),
                    ..Default::default()
                })
            })
            .collect();
        if found.is_empty() {
            c.problem(
                "manifests",
                format!(
                    "no container of their {} runs {}; name the containers to set in 'deployments' (name:container)",
                    if rolling { "workloads" } else { "Deployments" },
                    match &image.registry {
                        Some(r) => format!("{r}/{}", image.repository),
                        None => image.repository.clone(),
                    }
                ),
            );
        }
        found
    } else {
        if b.mode != Mode::Rollback {
            c.problem("manifests", "need 'image' (or 'deployments' naming the containers)");
        }
        return in_manifests
            .iter()
            .map(|m| DeploymentRef {
                name: m.name().into(),
                kind: m.workload_kind().unwrap_or_default(),
                ..Default::default()
            })
            .collect();
    };
    if rolling && matches!(b.mode, Mode::Deploy | Mode::Plan) {
        for m in &in_manifests {
            let kind = m.workload_kind().unwrap_or_default();
            if out.iter().any(|d| d.name == m.name() && d.kind == kind) {
                continue;
            }
            // Judged with the image its manifest gives it.
            let Some((container, image)) = m.containers().into_iter().next() else { continue };
            out.push(DeploymentRef {
                name: m.name().into(),
                kind,
                container: Some(container),
                image: Some(image),
                ..Default::default()
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::inputs::WorkloadKind;
    use crate::inputs::given::Given;

    #[test]
    fn the_workloads_named_are_read_once_each_and_blue_green_takes_deployments_only() {
        let spec =
            Given::kubernetes().set("deployments", "web, api:server, sts/queue").ok().kubernetes.unwrap();
        let named: Vec<_> =
            spec.deployments.iter().map(|d| (d.name.as_str(), d.kind, d.container.as_deref())).collect();
        assert_eq!(
            named,
            [
                ("web", WorkloadKind::Deployment, None),
                ("api", WorkloadKind::Deployment, Some("server")),
                ("queue", WorkloadKind::StatefulSet, None),
            ]
        );
        let p = Given::kubernetes().set("deployments", "web, web").problems();
        assert_eq!(p, ["deployments: 'web' is named twice"]);
        let p = Given::kubernetes().set("deployments", " , ").problems();
        assert_eq!(p, ["deployments: names no Deployment; list them as name or name:container"]);
        let p =
            Given::kubernetes().set("deployments", "web, ds/agent").set("strategy", "blue-green").problems();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("deployments: 'daemonset/agent': strategy 'blue-green' takes Deployments only")
                && p[0].ends_with("deploy a DaemonSet with strategy 'rolling'"),
            "{p:?}"
        );
    }

    #[test]
    fn a_services_file_lists_the_deployments_and_its_shape_is_named_once() {
        let cluster = |text: &str| {
            Given::kubernetes().unset("deployments").set("services-file", "s.yml").file("s.yml", text)
        };
        let spec = cluster("services:\n  - {name: web, service: shop}\n  - {name: worker, proxy: false}\n")
            .ok()
            .kubernetes
            .unwrap();
        let listed: Vec<_> =
            spec.deployments.iter().map(|d| (d.name.as_str(), d.service.as_deref())).collect();
        assert_eq!(listed, [("web", Some("shop")), ("worker", None)]);
        // A list at the top: the shape expected, once, not serde's words.
        let p = cluster("- name: web\n- name: api\n").problems();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("services-file: is a list at the top level; a services file is a mapping whose one key, 'services', holds the list"), "{p:?}");
        assert!(!p[0].contains("FileRoot"), "{p:?}");
        // With `deployments` too, which lists them is not guessed.
        let p = cluster("services:\n  - {name: web}\n").set("deployments", "web").problems();
        assert_eq!(p, ["deployments: cannot be combined with 'services-file', which lists the Deployments"]);
        // A canary is one Deployment; blue-green needs a Service to flip.
        let p = cluster("services:\n  - {name: web}\n  - {name: api}\n").set("strategy", "canary").problems();
        assert_eq!(
            p,
            [
                "services-file: strategy 'canary' on target 'kubernetes' takes one Deployment; this file lists several"
            ]
        );
        let p =
            cluster("services:\n  - {name: worker, proxy: false}\n").set("strategy", "blue-green").problems();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("every entry here has 'proxy: false' (no Service)"), "{p:?}");
    }

    #[test]
    fn an_eks_cluster_takes_no_kubeconfig_and_needs_its_region() {
        let p =
            Given::kubernetes().set("eks-cluster", "prod-1").set("kubeconfig", "apiVersion: v1").problems();
        assert_eq!(
            p,
            ["kubeconfig: cannot be combined with 'eks-cluster' (the endpoint, CA and token come from AWS)"]
        );
        let p = Given::kubernetes().set("eks-cluster", "-prod").problems();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("eks-cluster: '-prod' is not an EKS cluster name"), "{p:?}");
        let p = Given::kubernetes().set("eks-cluster", "prod-1").unset("aws-region").problems();
        assert_eq!(p, ["aws-region: is required with 'eks-cluster' (the cluster's region)"]);
        let eks = Given::kubernetes().set("eks-cluster", "prod-1").ok().kubernetes.unwrap().eks.unwrap();
        assert_eq!((eks.cluster.as_str(), eks.region.as_str()), ("prod-1", "eu-west-1"));
    }

    /// `deployments` against manifests: a workload reached twice (a bare name
    /// and its kind) is named once, not rolled twice; a bare name takes the
    /// Deployment of that name before another kind's.
    #[test]
    fn a_workload_of_the_manifests_is_named_once_and_a_bare_name_prefers_the_deployment() {
        let workload = |kind: &str, name: &str| {
            format!(
                "apiVersion: apps/v1\nkind: {kind}\nmetadata: {{name: {name}}}\nspec:\n  template:\n    spec:\n      containers: [{{name: app, image: ghcr.io/acme/shop:0}}]\n"
            )
        };
        let cluster = |deployments: &str, manifests: String| {
            Given::kubernetes()
                .set("manifests", "m.yaml")
                .set("deployments", deployments)
                .file("m.yaml", &manifests)
        };
        let p = cluster("db, sts/db", workload("StatefulSet", "db")).problems();
        assert!(p.iter().any(|p| p.contains("'statefulset/db' names the StatefulSet 'db' again")), "{p:?}");
        let both = format!("{}---\n{}", workload("StatefulSet", "web"), workload("Deployment", "web"));
        let spec = cluster("web", both).ok().kubernetes.unwrap();
        let rolled: Vec<_> = spec.deployments.iter().filter(|d| d.name == "web").map(|d| d.kind).collect();
        assert!(rolled.contains(&WorkloadKind::Deployment), "{rolled:?}");
        assert_eq!(
            spec.deployments.iter().filter(|d| d.name == "web" && d.kind == WorkloadKind::Deployment).count(),
            1
        );
    }
}
