//! Inputs: the environment the runner gives the container, read with envy
//! ([`raw`]) and validated into typed values ([`Inputs`]) before anything is
//! contacted. Validation reports every problem at once, each naming the input
//! and what is allowed. No network, no side effects.

pub mod analysis;
pub mod grammar;
pub mod manifests;
pub mod raw;
mod services;
pub mod smoke;
mod validate;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub use analysis::{AnalysisSpec, QuerySpec};
pub use grammar::{HostSpec, ImageRef};
pub use services::{FrontDoor, RestartPolicy, Service};
pub use validate::{ROLLBACK_PENDING, validate, webhook_url_problem};

use crate::secrets::SecretValue;

/// A snapshot of the process environment, so tests can hand one in.
#[derive(Debug, Clone, Default)]
pub struct Env(BTreeMap<String, String>);

impl Env {
    pub fn from_process() -> Self {
        Self(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        )
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Self(pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }

    /// A non-empty variable.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }

    pub fn get_path(&self, key: &str) -> Option<PathBuf> {
        self.get(key).map(PathBuf::from)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// One problem with one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub input: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "input '{}': {}", self.input, self.message)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    Ec2,
    Hosts,
    Kubernetes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Deploy,
    Plan,
    Rollback,
    /// Kubernetes canary: the standing canary becomes the stable version.
    Promote,
    /// Kubernetes canary: the standing canary is removed.
    Abort,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrategyKind {
    BlueGreen,
    Rolling,
    Canary,
}

impl StrategyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyKind::BlueGreen => "blue-green",
            StrategyKind::Rolling => "rolling",
            StrategyKind::Canary => "canary",
        }
    }
}

impl TargetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Ec2 => "ec2",
            TargetKind::Hosts => "hosts",
            TargetKind::Kubernetes => "kubernetes",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressKind {
    PrivateIp,
    PublicIp,
    PublicDns,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnHostFailure {
    /// Every host that switched is switched back (the default).
    RollbackAll,
    /// Hosts that succeeded keep the new version.
    KeepGoing,
}

/// Where a secret input comes from: given inline (already masked) or named
/// as an SSM parameter to fetch.
#[derive(Debug, Clone)]
pub enum SecretSource {
    Inline(SecretValue),
    Ssm(String),
}

/// How health is judged.
#[derive(Debug, Clone)]
pub struct HealthSpec {
    pub timeout: Duration,
    pub interval: Duration,
    pub successes: u32,
    pub max_response_time: Option<Duration>,
}

/// How traffic moves and how long we watch.
#[derive(Debug, Clone)]
pub struct RolloutSpec {
    pub observe_window: Duration,
    pub observe_failures: u32,
    pub drain: Duration,
    pub canary_steps: Vec<u8>,
    pub canary_interval: Duration,
    pub max_parallel: usize,
    pub on_host_failure: OnHostFailure,
    /// Bound on the migration container (`migrate-timeout`).
    pub migration_timeout: Duration,
}

/// What users see through nginx, judged in the observe window from its
/// access log on each host (`max-error-rate`, `max-latency`).
#[derive(Debug, Clone)]
pub struct TrafficSpec {
    pub limits: Limits,
    pub access_log: String,
}

/// What users may be served in the observe window (`max-error-rate`,
/// `max-latency`, judged once `min-requests` were seen).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_error_rate: Option<f64>,
    pub max_latency: Option<Duration>,
    pub min_requests: u64,
}

/// SSH and host-level settings shared by `hosts` and `ec2`.
#[derive(Debug, Clone)]
pub struct SshSpec {
    pub user: String,
    pub port: u16,
    pub private_key: Option<SecretSource>,
    pub known_hosts: Option<SecretSource>,
    pub timeout: Duration,
    pub docker_socket: String,
    pub proxy_url: url::Url,
    pub lock_dir: String,
    pub break_lock: bool,
    /// A bastion every host is reached through (`ssh-jump-host`); its key
    /// is pinned in `ssh-known-hosts` like the hosts'.
    pub jump: Option<HostSpec>,
}

#[derive(Debug, Clone)]
pub struct Ec2Spec {
    pub instance_ids: Vec<String>,
    pub filters: Vec<(String, Vec<String>)>,
    pub address: AddressKind,
    pub connect: Ec2Connect,
    /// `ec2-host-keys: console-output`: each instance's SSH host keys are
    /// read from its console output (GetConsoleOutput) and pinned for the
    /// run, besides any `ssh-known-hosts` lines.
    pub console_host_keys: bool,
}

/// How `target: ec2` instances are reached (`ec2-connect`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ec2Connect {
    /// SSH straight to `ec2-address` (or through `ssh-jump-host`), with
    /// the stored key.
    Ssh,
    /// Through an EC2 Instance Connect Endpoint's tunnel to the private IP,
    /// with a key made for the run and pushed by SendSSHPublicKey. `None`:
    /// the endpoint of each instance's subnet, else of its VPC.
    Endpoint { id: Option<String> },
}

/// The workload kinds a cluster deploy sets the image of. Blue-green and
/// canary take Deployments only; a rolling deploy takes all three, each
/// judged as `kubectl rollout status` judges its kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WorkloadKind {
    #[default]
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl WorkloadKind {
    /// The `kind` of the object (`StatefulSet`).
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
        }
    }
    /// The API resource (`statefulsets`, group `apps`).
    pub fn resource(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "deployments",
            WorkloadKind::StatefulSet => "statefulsets",
            WorkloadKind::DaemonSet => "daemonsets",
        }
    }
    /// From a manifest's `kind` (`apps/v1` only).
    pub fn of_manifest(api_version: &str, kind: &str) -> Option<Self> {
        if api_version != "apps/v1" {
            return None;
        }
        match kind {
            "Deployment" => Some(WorkloadKind::Deployment),
            "StatefulSet" => Some(WorkloadKind::StatefulSet),
            "DaemonSet" => Some(WorkloadKind::DaemonSet),
            _ => None,
        }
    }
    /// From a `kind/` prefix of `deployments`, as kubectl spells it
    /// (`statefulset`, `sts`, `daemonset`, `ds`, `deployment`, `deploy`).
    pub fn of_prefix(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "deployment" | "deployments" | "deploy" => Some(WorkloadKind::Deployment),
            "statefulset" | "statefulsets" | "sts" => Some(WorkloadKind::StatefulSet),
            "daemonset" | "daemonsets" | "ds" => Some(WorkloadKind::DaemonSet),
            _ => None,
        }
    }
}

/// One workload to update (`deployments`, or an entry of a services
/// file): the container whose image is set, or `None` for the only (or
/// first) container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploymentRef {
    pub name: String,
    /// A Deployment unless `deployments` names `statefulset/<name>` or
    /// `daemonset/<name>`, or the manifest holding it is of that kind.
    pub kind: WorkloadKind,
    pub container: Option<String>,
    /// Its own image (a services file entry's `image`); `None`: the run's.
    pub image: Option<String>,
    /// The live Service blue-green flips; `None`: the Deployment's name.
    pub service: Option<String>,
    /// The preview Service the candidate is checked through; `None`:
    /// `<service>-preview` when it exists.
    pub preview: Option<String>,
    /// No Service selects it (`proxy: false` in a services file).
    pub worker: bool,
}

impl DeploymentRef {
    /// `name`, or `statefulset/name` for another kind (as written in
    /// `deployments` and in messages).
    pub fn label(&self) -> String {
        match self.kind {
            WorkloadKind::Deployment => self.name.clone(),
            k => format!("{}/{}", k.as_str().to_lowercase(), self.name),
        }
    }
    /// The live Service's name.
    pub fn service_name(&self) -> &str {
        self.service.as_deref().unwrap_or(&self.name)
    }
}

/// How `target: kubernetes` reaches the cluster and what it updates.
#[derive(Debug, Clone)]
pub struct KubernetesSpec {
    /// Kubeconfig content from the `kubeconfig` input; kept in memory only.
    pub kubeconfig: Option<SecretValue>,
    /// `KUBECONFIG` from the environment, used when the input is unset;
    /// with neither, the in-cluster service account.
    pub kubeconfig_env: Option<String>,
    pub context: Option<String>,
    /// `eks-cluster`: endpoint and CA from the EKS API, a signed token.
    pub eks: Option<EksSpec>,
    pub namespace: String,
    /// The Deployments rolled and watched: named by `deployments`, or
    /// found in `manifests` (the containers running the image's repository).
    pub deployments: Vec<DeploymentRef>,
    /// `manifests`, read and in apply order; empty without the input.
    pub manifests: Vec<manifests::Manifest>,
    pub canary_traffic: CanaryTraffic,
}

/// How a Kubernetes canary gets its share of traffic (`canary-traffic`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CanaryTraffic {
    /// By replica ratio behind the one Service.
    Replicas,
    /// An ingress-nginx canary Ingress beside this Ingress.
    Ingress(String),
    /// The weights of this Gateway API HTTPRoute.
    HttpRoute(String),
}

/// An EKS cluster reached without the `aws` binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EksSpec {
    pub cluster: String,
    pub region: String,
}

#[derive(Debug, Clone, Default)]
pub struct RegistryAuth {
    pub username: Option<String>,
    pub password: Option<SecretSource>,
}

pub use crate::secrets::SsmSpec;

/// GitHub Deployments settings.
#[derive(Debug, Clone)]
pub struct GithubSpec {
    pub enabled: bool,
    pub token: Option<SecretValue>,
    pub deployment_id: Option<u64>,
    pub git_ref: String,
    pub required_contexts: Option<Vec<String>>,
    pub production_environment: Option<bool>,
    pub transient_environment: bool,
    pub deactivate_previous: bool,
    pub lock_timeout: Duration,
    pub fail_on_status_error: bool,
}

/// Where deploy notifications go. Both are secrets: a webhook URL is its
/// own credential (anyone holding it can post), so each is masked, given
/// inline or read from SSM like the SSH key.
#[derive(Debug, Clone, Default)]
pub struct NotifySpec {
    /// `slack-webhook-url` / `slack-webhook-url-ssm`: a Slack incoming webhook.
    pub slack: Option<SecretSource>,
    /// `notify-url` / `notify-url-ssm`: a generic JSON webhook.
    pub webhook: Option<SecretSource>,
}

/// The run's `GITHUB_*` context.
#[derive(Debug, Clone)]
pub struct Context {
    pub owner: String,
    pub repo: String,
    pub sha: String,
    pub git_ref: Option<String>,
    pub run_id: String,
    pub run_attempt: String,
    pub server_url: String,
    pub api_url: String,
    pub event_name: Option<String>,
    pub actor: Option<String>,
    pub workspace: PathBuf,
}

impl Context {
    /// The log of this run attempt, as GitHub shows it.
    pub fn run_url(&self) -> String {
        format!(
            "{}/{}/{}/actions/runs/{}/attempts/{}",
            self.server_url.trim_end_matches('/'),
            self.owner,
            self.repo,
            self.run_id,
            self.run_attempt
        )
    }

    /// Where GitHub shows this attempt's job summaries: the run attempt's
    /// page, whose Summary view renders each job's summary below the job
    /// graph. A step is given no id of its own job to link to, so this is
    /// the same page as [`Context::run_url`]; notifications carry it as a
    /// field of its own so receivers need not know that.
    pub fn summary_url(&self) -> String {
        self.run_url()
    }
}

/// Everything the action was asked to do, validated.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub target: TargetKind,
    pub mode: Mode,
    /// The image to deploy; `None` only for `mode: rollback`, which finds it.
    pub image: Option<ImageRef>,
    pub app: String,
    pub environment: String,
    pub environment_url: Option<url::Url>,
    pub strategy: StrategyKind,
    pub timeout: Duration,
    pub services: Vec<Service>,
    pub migrate_command: Option<Vec<String>>,
    /// Run before the migration (a backup point); its failure stops the
    /// deploy before the migration.
    pub pre_migrate_command: Option<Vec<String>>,
    /// Run once from the new image when a deploy rolls back after its
    /// migration succeeded; never blocks the traffic rollback.
    pub migrate_rollback_command: Option<Vec<String>>,
    pub health: HealthSpec,
    pub rollout: RolloutSpec,
    /// `None` when neither `max-error-rate` nor `max-latency` is set.
    pub traffic: Option<TrafficSpec>,
    /// CloudWatch alarms and a Prometheus query read during the observe
    /// window; `None` when neither is set.
    pub analysis: Option<AnalysisSpec>,
    /// `smoke-tests`, in order.
    pub smoke_tests: Vec<smoke::SmokeTest>,
    pub hosts: Vec<HostSpec>,
    pub ssh: SshSpec,
    pub ec2: Option<Ec2Spec>,
    pub kubernetes: Option<KubernetesSpec>,
    pub registry: RegistryAuth,
    pub ssm: SsmSpec,
    pub github: GithubSpec,
    pub notify: NotifySpec,
    pub context: Context,
    /// Inputs given by an old spelling (read as the new one), to warn of.
    pub deprecated: Vec<Problem>,
}

/// Reads and validates the inputs from an environment snapshot.
///
/// # Errors
/// Every problem found, each naming its input.
impl Inputs {
    /// Whether the run reads anything from SSM: the app's secrets, or the
    /// SSH key, known_hosts, registry password or a webhook URL by
    /// parameter name.
    pub fn needs_ssm(&self) -> bool {
        !self.ssm.is_empty()
            || [
                &self.ssh.private_key,
                &self.ssh.known_hosts,
                &self.registry.password,
                &self.notify.slack,
                &self.notify.webhook,
            ]
            .iter()
            .any(|s| matches!(s, Some(SecretSource::Ssm(_))))
    }
}

pub fn load(env: &Env) -> Result<Inputs, Vec<Problem>> {
    let (raw, ctx) =
        raw::read(env).map_err(|e| vec![Problem { input: "(environment)".into(), message: e }])?;
    validate(&raw, &ctx, env)
}

/// The validation tests' builder.
#[cfg(test)]
pub(crate) mod given;
