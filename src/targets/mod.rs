//! Targets do the mechanics; strategies decide the order (see
//! [`crate::strategy`]). A deploy runs over *units*: a host for `hosts` and
//! `ec2`, a cluster for `kubernetes`. Each unit is one [`Target`].
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

use std::time::Duration;

use async_trait::async_trait;

use crate::error::Error;
use crate::inputs::Service;
use crate::secrets::SecretValue;

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
    /// Digest of the secret set (never the values): a change redeploys.
    pub secrets_digest: Option<String>,
    pub migrate_command: Option<Vec<String>>,
}

/// What a unit runs now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveState {
    /// Colour serving traffic (`blue`/`green`), if any.
    pub colour: Option<String>,
    /// Image of the live version, if any.
    pub image: Option<String>,
    /// Secrets digest the live version was started with.
    pub secrets_digest: Option<String>,
    /// Other colours still running (left by an interrupted deploy).
    pub leftovers: Vec<String>,
}

/// A single HTTP observation.
#[derive(Debug, Clone)]
pub struct Probe {
    pub status: u16,
    pub latency: Duration,
    pub body: String,
}

/// Where a probe is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Straight to the candidate's port, bypassing the proxy.
    Candidate,
    /// Through the unit's front door (nginx), as users reach it.
    FrontDoor,
}

/// One unit of a deploy (a host, or a cluster).
#[async_trait]
pub trait Target: Send + Sync {
    /// Human name for logs and the summary (`web-1 (10.0.1.5)`).
    fn name(&self) -> &str;

    /// Reads what runs now. Changes nothing.
    async fn inspect(&self) -> Result<LiveState, Error>;

    /// Takes the unit's deploy lock, logs in to the registry and pulls the
    /// release's images. Traffic is untouched.
    async fn prepare(&self, release: &Release) -> Result<(), Error>;

    /// Runs the release's migration command once (called on the first unit
    /// only). A failure stops the deploy before anything switches.
    async fn migrate(&self, release: &Release) -> Result<(), Error>;

    /// Starts the candidate beside the live version. Traffic is untouched.
    async fn launch(&self, release: &Release) -> Result<(), Error>;

    /// Sends one HTTP GET of `path` to the candidate or through the front
    /// door of `service` (index into `release.services`).
    async fn probe(&self, release: &Release, service: usize, via: Via, path: &str) -> Result<Probe, Error>;

    /// For services that are not behind the proxy (workers): whether the
    /// candidate container is running (and healthy, if it has a check).
    async fn candidate_running(&self, release: &Release, service: usize) -> Result<bool, Error>;

    /// Moves `percent` of traffic to the candidate (100 = full switch) and
    /// verifies the proxy took the change; on failure, restores the previous
    /// proxy configuration before returning the error.
    async fn shift(&self, release: &Release, percent: u8) -> Result<(), Error>;

    /// Stops and removes the previous version after draining; keeps its
    /// image for rollback and prunes older ones.
    async fn retire(&self, release: &Release, drain: Duration) -> Result<(), Error>;

    /// Puts the previous version back in service and removes the candidate.
    async fn rollback(&self, release: &Release) -> Result<(), Error>;

    /// Releases the lock and connections. Best effort, never fails.
    async fn close(&self);
}
