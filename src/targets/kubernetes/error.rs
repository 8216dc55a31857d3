//! What can go wrong on a cluster, each variant naming the object
//! (kind/namespace/name) and a stable [`KubeError::reason`] code.

/// An object, as users name it (`deployment default/web`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// Lower-case, as kubectl names kinds (`deployment`, `configmap`).
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

impl ObjectRef {
    pub fn deployment(namespace: &str, name: &str) -> Self {
        Self::new("deployment", namespace, name)
    }

    pub fn new(kind: &str, namespace: &str, name: &str) -> Self {
        Self { kind: kind.to_lowercase(), namespace: namespace.into(), name: name.into() }
    }
}

/// Holds text only (never a `kube::Error`), so it can be cloned.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KubeError {
    #[error("cannot configure the cluster client: {0}")]
    Config(String),

    #[error("cannot reach the cluster: {0}")]
    Connect(String),

    /// A smoke test failed (its message names the test and the answer).
    #[error("{0}")]
    Smoke(String),

    #[error(
        "forbidden: cannot {verb} {resource} in namespace {namespace} ({message}); the action's Role needs a rule with apiGroups [\"{group}\"], resources [\"{resource}\"], verbs [\"{verb}\"] (see the least-privilege Role in docs/kubernetes.md)"
    )]
    Forbidden { verb: &'static str, resource: String, group: String, namespace: String, message: String },

    #[error("the cluster refused the credentials (401 Unauthorized: {message}): {hint}")]
    Unauthorized { message: String, hint: &'static str },

    #[error("{object} not found")]
    NotFound { object: ObjectRef },

    /// `deployments` names a workload of another kind (`object.kind`).
    #[error(
        "{object} is a {kind}, not a Deployment: name it as {}/{} in 'deployments' to roll it (strategy 'rolling'; blue-green and canary take Deployments only)", .object.kind, .object.name
    )]
    NotADeployment { object: ObjectRef, kind: &'static str },

    #[error(
        "{object}: updateStrategy OnDelete changes its pods only when they are deleted, so there is no rollout to judge or undo (kubectl rollout status refuses it too); set updateStrategy type RollingUpdate"
    )]
    OnDelete { object: ObjectRef },

    /// A canary step the replica counts cannot express (`canary-traffic:
    /// replicas`): the real share is far from the step.
    #[error(
        "{object}: a canary step of {weight}% cannot be expressed by replicas with {stable} stable replica(s): {canary} canary pod(s) beside {stable} is {real:.1}% of the pods; scale {object} to at least {need} replicas, use a step near {real:.0}%, or weigh exactly with canary-traffic ingress/<name> or httproute/<name>"
    )]
    CanaryShare { object: ObjectRef, weight: u8, stable: i32, canary: i32, real: f64, need: i32 },

    #[error("{object} has no container named '{container}' (it has: {})", .containers.join(", "))]
    NoSuchContainer { object: ObjectRef, container: String, containers: Vec<String> },

    #[error(
        "{object}: server-side apply conflicts with field manager {managers} on {fields}; that manager owns the image: change it there, or stop it managing the field"
    )]
    Conflict { object: ObjectRef, managers: String, fields: String },

    #[error("{object}: {message}")]
    ProgressDeadline { object: ObjectRef, message: String },

    #[error("{object}: pod {pod} of the new ReplicaSet is in {reason}: {message}")]
    PodFailed { object: ObjectRef, pod: String, reason: String, message: String },

    /// The Deployment's template was changed while this run watched the
    /// rollout it applied (kubectl's `rollout status --revision=N` fails
    /// too): the rollout that would finish is not this run's.
    #[error(
        "{object}: changed during the rollout by {by}: {change}; what rolls out now is not what this run applied, so it is not reported as deployed (and not undone: the change is theirs)"
    )]
    TakenOver { object: ObjectRef, by: String, change: String },

    /// Blue-green would narrow a Service that also selects the pods of
    /// other Deployments to one Deployment's colour.
    #[error(
        "{service} also selects the pods of {others}; a blue-green flip narrows its selector to {deployment}'s colour, and those pods would leave its endpoints: give {} a Service of its own (one selecting only its pods, named with 'service' in a services file), or move the others to another Service",
        .deployment.name
    )]
    SharedService { service: ObjectRef, deployment: ObjectRef, others: String },

    /// Blue-green of a Deployment an HPA scales.
    #[error(
        "{hpa} scales {deployment}: blue-green runs fixed replicas in its colours and keeps {} at zero, which would switch the autoscaler off; deploy it with strategy 'rolling' (its rolling update leaves the replicas to the HPA) or 'canary', or remove the HPA first",
        .deployment.name
    )]
    Autoscaled { hpa: ObjectRef, deployment: ObjectRef },

    /// A weighted canary whose pods NetworkPolicies of the stable's would
    /// not select.
    #[error(
        "{policies} select {object}'s pods by the labels its Service selects on, which a canary behind a weighted router does not carry (its pods carry deploy-action/canary-of={} instead, so that the stable Service never sends them traffic): they would miss its pods. Add a NetworkPolicy with the same rules selecting deploy-action/canary-of: {}, or use canary-traffic 'replicas' (its pods keep every label)",
        .object.name, .object.name
    )]
    CanaryUncovered { object: ObjectRef, policies: String },

    #[error("{object}: object has been deleted during the rollout")]
    Deleted { object: ObjectRef },

    /// kubectl's message; `action` is `rollback` (its wording) or `deploy to`.
    #[error(
        "{object}: you cannot {action} a paused deployment; resume it first with 'kubectl rollout resume' and try again"
    )]
    Paused { object: ObjectRef, action: &'static str },

    #[error("{object}: no rollout history found for {} \"{}\"", .object.kind, .object.name)]
    NoHistory { object: ObjectRef },

    /// The migration Job failed, timed out or its pod could not start;
    /// `logs` are the pod's last lines.
    #[error("{object}: migration {reason}: {message}; last log lines:\n{logs}")]
    Migration { object: ObjectRef, reason: String, message: String, logs: String },

    #[error(
        "{object}: a canary of {image} stands at {weight} percent; decide it first with mode 'promote' or mode 'abort'"
    )]
    CanaryStanding { object: ObjectRef, image: String, weight: u8 },

    /// `mode: promote`/`abort` with no canary standing.
    #[error("{object}: no canary stands (nothing to {action})")]
    NoCanary { object: ObjectRef, action: &'static str },

    #[error("{object}: cannot {verb}: {message}")]
    Api { object: ObjectRef, verb: &'static str, message: String },

    /// An analysis source failed the window (`rollback-alarms`,
    /// `analysis-query`): handled as a candidate losing availability is.
    #[error(transparent)]
    Analysis(crate::analysis::AnalysisError),
}

impl KubeError {
    /// Stable reason code for annotations, statuses and the summary.
    pub fn reason(&self) -> &'static str {
        match self {
            KubeError::Config(_) => "kube_config_invalid",
            KubeError::Connect(_) => "kube_connect_failed",
            KubeError::Forbidden { .. } => "kube_forbidden",
            KubeError::Unauthorized { .. } => "kube_unauthorized",
            KubeError::NotFound { .. } => "kube_not_found",
            KubeError::NoSuchContainer { .. } => "kube_no_such_container",
            KubeError::Conflict { .. } => "kube_apply_conflict",
            KubeError::ProgressDeadline { .. } => "progress_deadline_exceeded",
            KubeError::PodFailed { .. } => "pod_failed",
            KubeError::Deleted { .. } => "kube_object_deleted",
            KubeError::TakenOver { .. } => "rollout_taken_over",
            KubeError::SharedService { .. } => "service_shared",
            KubeError::Autoscaled { .. } => "autoscaled_blue_green",
            KubeError::NotADeployment { .. } => "kube_kind_unsupported",
            KubeError::OnDelete { .. } => "update_strategy_on_delete",
            KubeError::CanaryShare { .. } => "canary_share_inexpressible",
            KubeError::CanaryUncovered { .. } => "canary_policy_uncovered",
            KubeError::Paused { .. } => "deployment_paused",
            KubeError::NoHistory { .. } => "no_rollout_history",
            KubeError::Migration { reason, .. } if reason == "timeout" || reason == "DeadlineExceeded" => {
                "migration_timeout"
            }
            KubeError::Migration { .. } => "migration_failed",
            KubeError::CanaryStanding { .. } => "canary_standing",
            KubeError::NoCanary { .. } => "no_canary",
            KubeError::Api { .. } => "kube_api_error",
            KubeError::Smoke(_) => "smoke_test_failed",
            KubeError::Analysis(e) => e.reason(),
        }
    }

    /// Maps an API error for `verb` on `object` (whose resource is
    /// `resource` in API group `group`).
    pub fn from_api(
        e: kube::Error,
        verb: &'static str,
        resource: &str,
        group: &str,
        object: ObjectRef,
    ) -> Self {
        match &e {
            kube::Error::Api(s) if s.code == 403 => KubeError::Forbidden {
                verb,
                resource: resource.into(),
                group: group.into(),
                namespace: object.namespace,
                message: s.message.clone(),
            },
            kube::Error::Api(s) if s.code == 401 => KubeError::Unauthorized {
                message: s.message.clone(),
                hint: "an expired, revoked or tampered token, or an identity the cluster does not map (for eks-cluster: an EKS access entry or aws-auth mapping for the IAM identity, and a correct clock)",
            },
            kube::Error::Api(s) if s.code == 404 => KubeError::NotFound { object },
            kube::Error::Api(s) => KubeError::Api { object, verb, message: s.message.clone() },
            other => KubeError::Api { object, verb, message: other.to_string() },
        }
    }
}
