//! Targets do the mechanics; strategies decide the order (see
//! [`crate::strategy`]). A deploy runs over *units*: a host for `hosts` and
//! `ec2`, a cluster for `kubernetes`. Each host is one [`Target`]; a
//! cluster rolls its pods itself, so [`kubernetes`] takes the whole deploy
//! through its own entry point ([`kubernetes::run`]) instead.
//!
//! # Contract
//! - Nothing before [`Target::launch`] changes what serves traffic.
//! - [`Target::rollback`] is idempotent and safe to call after any method,
//!   including one that failed or was cancelled half-way: afterwards exactly
//!   the previous version serves (or nothing changed at all).
//! - [`Target::close`] releases what the unit holds (locks, connections) and
//!   is called on every exit path.
//! - Every method bounds its own remote calls with timeouts; the pipeline
//!   adds a deadline per stage on top.

pub mod ec2;
pub mod hosts;
pub mod instance_connect;
pub mod kubernetes;
pub mod observe;
pub mod unit;
pub mod wayback;

/// Checks a target needs beyond the inputs' grammar, run before anything
/// is contacted (`main` reports them like input problems): for hosts, that
/// the SSH key and known_hosts given inline parse.
pub fn preflight(inputs: &crate::inputs::Inputs) -> Vec<crate::inputs::Problem> {
    use crate::inputs::{SecretSource, TargetKind};
    use crate::secrets::SecretValue;
    match inputs.target {
        TargetKind::Hosts | TargetKind::Ec2 => {
            fn inline<'a>(
                s: &'a Option<SecretSource>,
                input: &'static str,
            ) -> Option<(&'static str, &'a SecretValue)> {
                match s {
                    Some(SecretSource::Inline(v)) => Some((input, v)),
                    _ => None,
                }
            }
            hosts::material::problems(
                inline(&inputs.ssh.private_key, "ssh-private-key"),
                inline(&inputs.ssh.known_hosts, "ssh-known-hosts"),
            )
        }
        TargetKind::Kubernetes => {
            inputs.kubernetes.as_ref().map(kubernetes::cluster::problems).unwrap_or_default()
        }
    }
}

use async_trait::async_trait;

use crate::inputs::Service;
use crate::probe::{Probe, Via};
use crate::secrets::SecretValue;

/// What a host's step fails with. [`crate::Error`] wraps it (`From`): the
/// targets never name the action's error type, so no import cycle runs
/// through them (`scripts/lint-cycles`).
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(transparent)]
    Host(#[from] hosts::HostError),

    #[error("migration failed on {unit}: {message}")]
    Migration { unit: String, message: String },

    /// `holder`: who, from the lock's owner file, when it names a run.
    #[error(
        "{unit}: the deploy lock is held by {owner}; wait for that deploy, or set break-lock: true if it is stale"
    )]
    Locked { unit: String, owner: String, holder: Option<LockHolder> },

    /// A fault of this program (never of the host or the inputs).
    #[error("{0}")]
    Other(String),
}

impl TargetError {
    /// Stable reason code.
    pub fn reason(&self) -> &'static str {
        match self {
            TargetError::Host(e) => e.reason(),
            TargetError::Migration { .. } => "migration_failed",
            TargetError::Locked { .. } => "deploy_locked",
            TargetError::Other(_) => "internal_error",
        }
    }

    /// The message without its `<unit>: ` prefix (see [`crate::Error::detail`]).
    pub fn detail(&self) -> String {
        match self {
            TargetError::Host(e) => e.message.clone(),
            e => e.to_string(),
        }
    }
}

/// What one deploy delivers, identical on every unit.
#[derive(Debug, Clone)]
pub struct Release {
    pub app: String,
    /// Identifies this deploy in labels and locks (`<run id>-<attempt>`).
    pub deploy_id: String,
    pub run_url: String,
    pub services: Vec<Service>,
    /// Secret environment from SSM, added to every service.
    pub secret_env: Vec<(String, SecretValue)>,
    /// Fingerprint of the secret set (SSM versions, never values): a change
    /// redeploys.
    pub secrets_fingerprint: Option<String>,
    pub migrate_command: Option<Vec<String>>,
    pub pre_migrate_command: Option<Vec<String>>,
    pub migrate_rollback_command: Option<Vec<String>>,
}

/// Who holds a unit's deploy lock, from its owner file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    /// `<run id>-<attempt>`.
    pub deploy_id: String,
    /// The holder's run URL, to ask GitHub whether that run has ended.
    pub run_url: String,
}

/// A lock whose run GitHub reports as ended: [`Target::take_over_lock`]
/// may take it, and only it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleLock {
    pub holder: LockHolder,
    /// The run's conclusion (`failure`, `cancelled`, ...).
    pub conclusion: String,
}

impl Release {
    /// Every service's [`Service::config_fingerprint`], by service name: a
    /// unit whose live version says the same runs what this release would.
    pub fn config(&self) -> String {
        config_of(self.services.iter().map(|s| (s.name.as_str(), s.config_fingerprint())))
    }
}

/// `name=fingerprint` pairs, sorted, `;`-joined.
pub fn config_of<'a>(pairs: impl Iterator<Item = (&'a str, String)>) -> String {
    let mut pairs: Vec<String> = pairs.map(|(n, f)| format!("{n}={f}")).collect();
    pairs.sort();
    pairs.join(";")
}

/// What a unit runs now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveState {
    /// Colour serving traffic (`blue`/`green`), if any.
    pub colour: Option<String>,
    /// Image of the live version, if any.
    pub image: Option<String>,
    /// Secrets fingerprint the live version was started with.
    pub secrets_fingerprint: Option<String>,
    /// Other colours still running (left by an interrupted deploy).
    pub leftovers: Vec<String>,
    /// What the live colour's containers run, as [`Release::config`] puts
    /// it (`None`: the unit cannot say, e.g. containers from before it was
    /// recorded).
    pub config: Option<String>,
}

/// One unit of a deploy (a host, or a cluster).
#[async_trait]
pub trait Target: Send + Sync {
    /// Human name for logs and the summary (`web-1 (10.0.1.5)`).
    fn name(&self) -> &str;

    /// Takes the unit's deploy lock for `release` (idempotent: a unit whose
    /// lock this deploy holds answers `Ok` at once). Taken before
    /// [`Target::inspect`] decides whether there is anything to do, so that
    /// decision cannot race another deploy's switch. Units without a lock of
    /// their own keep the default.
    async fn lock(&self, _release: &Release) -> Result<(), TargetError> {
        Ok(())
    }

    /// [`Target::lock`], taking over `stale` when it is still the holder:
    /// the pipeline has asked GitHub, and the run that took it has ended.
    /// The unit is brought back to one known version first (a dead deploy
    /// may have left a half-done switch). Any other holder is refused as
    /// [`Target::lock`] refuses it.
    async fn take_over_lock(&self, release: &Release, _stale: &StaleLock) -> Result<(), TargetError> {
        self.lock(release).await
    }

    /// Reads what runs now. Changes nothing.
    async fn inspect(&self) -> Result<LiveState, TargetError>;

    /// Takes the unit's deploy lock (if [`Target::lock`] has not), logs in
    /// to the registry and pulls the release's images. Traffic is untouched.
    async fn prepare(&self, release: &Release) -> Result<(), TargetError>;

    /// Runs the release's migration command once (called on the first unit
    /// only). A failure stops the deploy before anything switches.
    async fn migrate(&self, release: &Release) -> Result<(), TargetError>;

    /// Runs the release's `migrate-rollback-command` once (the first unit
    /// only), after a rollback of a deploy whose migration succeeded.
    async fn migrate_rollback(&self, _release: &Release) -> Result<(), TargetError> {
        Ok(())
    }

    /// Starts the candidate beside the live version. Traffic is untouched.
    async fn launch(&self, release: &Release) -> Result<(), TargetError>;

    /// Sends one HTTP GET of `path` to the candidate or through the front
    /// door of `service` (index into `release.services`).
    async fn probe(
        &self,
        release: &Release,
        service: usize,
        via: Via,
        path: &str,
    ) -> Result<Probe, TargetError>;

    /// Sends a smoke test's request ([`crate::probe::Request`]) like
    /// [`Target::probe`]. Units that cannot (a cluster) keep the default.
    async fn request(
        &self,
        _release: &Release,
        _service: usize,
        _via: Via,
        req: &crate::probe::Request,
    ) -> Result<Probe, TargetError> {
        Err(TargetError::Other(format!(
            "{}: smoke tests by path need a host ({} {})",
            self.name(),
            req.method,
            req.path
        )))
    }

    /// For services that are not behind the proxy (workers): whether the
    /// candidate container is running (and healthy, if it has a check).
    async fn candidate_running(&self, release: &Release, service: usize) -> Result<bool, TargetError>;

    /// What users were served through this unit's front door since the
    /// first call (the first call marks the start and counts nothing), from
    /// nginx's access log; `None` for a unit without that source.
    async fn traffic(&self, _release: &Release) -> Result<Option<hosts::access_log::Tally>, TargetError> {
        Ok(None)
    }

    /// Moves `percent` of traffic to the candidate (100 = full switch) and
    /// verifies the proxy took the change; on failure, restores the previous
    /// proxy configuration before returning the error.
    async fn shift(&self, release: &Release, percent: u8) -> Result<(), TargetError>;

    /// Stops and removes the previous version (the driver has drained it
    /// first: `wayback::drain`); keeps its
    /// image for rollback and prunes older ones.
    async fn retire(&self, release: &Release) -> Result<(), TargetError>;

    /// Puts the previous version back in service and removes the candidate.
    async fn rollback(&self, release: &Release) -> Result<(), TargetError>;

    /// Releases the lock and connections. Best effort, never fails.
    async fn close(&self);
}
