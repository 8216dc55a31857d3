//! Every permission a run will use, asked of the API server before the
//! first change (one `SelfSubjectAccessReview` per rule), including the
//! way back: a Role that can apply the image but not list ReplicaSets
//! would otherwise leave a new revision in place, unwatched and not undone.
//! [`needed`] is pure (what this run calls, from the inputs); [`check`]
//! asks.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

use super::error::KubeError;
use super::{Deploy, Strategy};
use crate::inputs::{CanaryTraffic, KubernetesSpec, Mode, WorkloadKind};
use crate::runner::Runner;

/// One verb on one resource in one namespace, and what the run uses it for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub verb: &'static str,
    pub group: &'static str,
    pub resource: &'static str,
    pub namespace: String,
    pub why: &'static str,
}

/// What a run of `mode` and `strategy` calls in each namespace it works
/// in, in the order a missing one is best reported (reading first).
// long: a table, one line per rule, in the order a missing one is best reported.
pub fn needed(
    spec: &KubernetesSpec,
    namespaces: &[&str],
    mode: Mode,
    strategy: &Strategy,
    work: Option<&Deploy<'_>>,
) -> Vec<Rule> {
    let mut out = Vec::new();
    let kinds: Vec<WorkloadKind> = spec.deployments.iter().map(|d| d.kind).collect();
    // Deployments' rules unless every workload is of another kind (a
    // rolling deploy of StatefulSets or DaemonSets only).
    let deployments = !matches!(strategy, Strategy::Rolling)
        || kinds.is_empty()
        || kinds.contains(&WorkloadKind::Deployment);
    for ns in namespaces {
        let mut add = |verb, group, resource, why| {
            out.push(Rule { verb, group, resource, namespace: ns.to_string(), why });
        };
        if deployments {
            add("get", "apps", "deployments", "reading each Deployment");
            add("list", "apps", "deployments", "watching the rollout");
            add("watch", "apps", "deployments", "watching the rollout");
            add("patch", "apps", "deployments", "setting the image, and the undo on the way back");
            add("list", "apps", "replicasets", "the new ReplicaSet's pods, and the undo's previous revision");
            add("list", "", "pods", "early failure detection (CrashLoopBackOff, ImagePullBackOff)");
            add("watch", "", "pods", "early failure detection (CrashLoopBackOff, ImagePullBackOff)");
        }
        for kind in
            [WorkloadKind::StatefulSet, WorkloadKind::DaemonSet].into_iter().filter(|k| kinds.contains(k))
        {
            let resource = kind.resource();
            add("get", "apps", resource, "reading it, and judging its rollout");
            add("patch", "apps", resource, "setting the image, and the undo on the way back");
            add("list", "apps", "controllerrevisions", "the new revision's pods, and the undo's revision");
            add("list", "", "pods", "early failure detection (CrashLoopBackOff, ImagePullBackOff)");
            if kind == WorkloadKind::StatefulSet {
                add("delete", "", "pods", "replacing a StatefulSet's broken pods after the undo");
            }
        }
        match (mode, strategy) {
            (Mode::Deploy | Mode::Rollback, Strategy::BlueGreen(..)) => {
                add("create", "apps", "deployments", "the blue-green colours");
                add("delete", "apps", "deployments", "a candidate colour this run created, on the way back");
                add("get", "", "services", "the live and preview Services");
                add("patch", "", "services", "the selector flip, and the flip back");
                add("list", "discovery.k8s.io", "endpointslices", "the flip verified by the endpoints");
                add("watch", "discovery.k8s.io", "endpointslices", "the flip verified by the endpoints");
                if mode == Mode::Deploy {
                    add(
                        "list",
                        "autoscaling",
                        "horizontalpodautoscalers",
                        "refusing a Deployment an HPA scales",
                    );
                }
            }
            (Mode::Deploy | Mode::Promote | Mode::Abort | Mode::Rollback, Strategy::Canary(s)) => {
                if mode == Mode::Deploy {
                    add("create", "apps", "deployments", "the canary Deployment");
                }
                add("delete", "apps", "deployments", "the canary, after promote or abort");
                let traffic = match mode {
                    Mode::Deploy => Some(&s.traffic),
                    // Read from the canary's annotations later: not known yet.
                    _ => None,
                };
                if matches!(traffic, Some(CanaryTraffic::Ingress(_) | CanaryTraffic::HttpRoute(_))) {
                    let why = "a NetworkPolicy or PodDisruptionBudget of the stable's that would miss the canary's pods";
                    add("list", "networking.k8s.io", "networkpolicies", why);
                    add("list", "policy", "poddisruptionbudgets", why);
                }
                match traffic {
                    Some(CanaryTraffic::Ingress(_)) => {
                        add("get", "", "services", "the stable Service's ports");
                        add("create", "", "services", "the canary Service");
                        add("patch", "", "services", "the canary Service");
                        add("delete", "", "services", "the canary Service, after promote or abort");
                        for verb in ["get", "create", "patch", "delete"] {
                            add(verb, "networking.k8s.io", "ingresses", "the canary Ingress");
                        }
                    }
                    Some(CanaryTraffic::HttpRoute(_)) => {
                        add("get", "", "services", "the stable Service's ports");
                        add("create", "", "services", "the canary Service");
                        add("patch", "", "services", "the canary Service");
                        add("delete", "", "services", "the canary Service, after promote or abort");
                        for verb in ["get", "patch"] {
                            add(verb, "gateway.networking.k8s.io", "httproutes", "the HTTPRoute's weights");
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        if mode == Mode::Deploy
            && let Some(w) = work
        {
            if w.secret.is_some() {
                for verb in ["create", "list", "delete"] {
                    add(verb, "", "secrets", "the app's Secret from SSM; superseded ones removed");
                }
                // What refers to a superseded Secret keeps it.
                for resource in ["deployments", "replicasets", "controllerrevisions"] {
                    add(
                        "list",
                        "apps",
                        resource,
                        "superseded Secrets removed only when no workload revision uses them",
                    );
                }
            }
            if w.migrate_command.is_some() {
                for verb in ["create", "get", "list", "watch", "delete"] {
                    add(verb, "batch", "jobs", "the migration Job");
                }
                add("list", "", "pods", "the migration's pod");
                add("get", "", "pods/log", "a failed migration's last log lines");
            }
        }
        // A manifest may create its Deployment.
        if mode == Mode::Deploy && !spec.manifests.is_empty() {
            if deployments {
                add("create", "apps", "deployments", "a Deployment the manifests create");
            }
            if kinds.contains(&WorkloadKind::StatefulSet) {
                add("create", "apps", "statefulsets", "a StatefulSet the manifests create");
            }
            if kinds.contains(&WorkloadKind::DaemonSet) {
                add("create", "apps", "daemonsets", "a DaemonSet the manifests create");
            }
        }
    }
    let mut seen = Vec::new();
    out.retain(|r| {
        let key = (r.verb, r.group, r.resource, r.namespace.clone());
        let new = !seen.contains(&key);
        seen.push(key);
        new
    });
    out
}

/// Asks the API server about each rule; the first denied one is the
/// error (naming the rule, what it is for, and every other one denied).
/// A review the server cannot answer is warned about and skipped: the
/// calls themselves still name a refusal.
///
/// # Errors
/// [`KubeError::Forbidden`] for the first rule denied.
pub async fn check(client: &kube::Client, rules: &[Rule], runner: &Runner) -> Result<(), KubeError> {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let mut denied: Vec<&Rule> = Vec::new();
    for r in rules {
        let (resource, subresource) = match r.resource.split_once('/') {
            Some((res, sub)) => (res, Some(sub.to_string())),
            None => (r.resource, None),
        };
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(r.namespace.clone()),
                    verb: Some(r.verb.into()),
                    group: Some(r.group.into()),
                    resource: Some(resource.into()),
                    subresource,
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        match api.create(&PostParams::default(), &review).await {
            Ok(answer) if answer.status.as_ref().is_some_and(|s| s.allowed) => {}
            Ok(_) => denied.push(r),
            Err(e) => {
                runner.warning(
                    "kube_access_unchecked",
                    &format!("permissions not checked before the deploy (SelfSubjectAccessReview: {e})"),
                );
                return Ok(());
            }
        }
    }
    let Some(first) = denied.first() else { return Ok(()) };
    let others: Vec<String> = denied[1..]
        .iter()
        .map(|r| {
            let group = if r.group.is_empty() { String::new() } else { format!("{}/", r.group) };
            format!("{} {group}{}", r.verb, r.resource)
        })
        .collect();
    let mut message =
        format!("checked before any change, by SelfSubjectAccessReview; the run needs it for {}", first.why);
    if !others.is_empty() {
        message.push_str(&format!("; also missing: {}", others.join(", ")));
    }
    Err(KubeError::Forbidden {
        verb: first.verb,
        resource: first.resource.into(),
        group: first.group.into(),
        namespace: first.namespace.clone(),
        message,
    })
}
