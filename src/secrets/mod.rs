//! Secrets from AWS SSM Parameter Store (issue 5): fetched fast, masked the
//! moment they arrive, delivered without a trace.
//!
//! - [`client`] — [`Ssm`]: the one SSM client of a run; [`Ssm::fetch`] for
//!   the app's environment, [`Ssm::get`] for single named secrets.
//! - [`set`] — [`SecretSet`]: env name → value, with the name mapping and
//!   the fingerprint (names, SSM versions, dates; never values) recorded with the deployment.
//! - [`error`] — [`SecretsError`] with stable reason codes.

pub mod client;
pub mod error;
pub mod set;

use std::fmt;

use tokio_util::sync::CancellationToken;

pub use client::{Ssm, SsmOptions};
pub use error::SecretsError;
pub use set::{SecretSet, env_name};

/// What to fetch from SSM Parameter Store for the app's environment
/// (validated by the `inputs` module, which depends on this one, never the
/// other way round).
#[derive(Debug, Clone, Default)]
pub struct SsmSpec {
    pub paths: Vec<String>,
    pub parameters: Vec<(String, String)>,
    pub region: Option<String>,
}

impl SsmSpec {
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty() && self.parameters.is_empty()
    }
}
use crate::runner::Runner;

/// A secret value that redacts itself in `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The value itself: only for handing it to where it is delivered.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(***)")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Fetches the app's secrets named by `spec` with a client of its own (use
/// [`Ssm::fetch`] to share one client with [`Ssm::get`]).
///
/// # Errors
///
/// [`SecretsError::RegionMissing`] without a region; otherwise as
/// [`Ssm::fetch`].
pub async fn fetch(
    spec: &SsmSpec,
    runner: &Runner,
    cancel: &CancellationToken,
) -> Result<SecretSet, SecretsError> {
    if spec.is_empty() {
        return Ok(SecretSet::new());
    }
    let region = spec.region.as_deref().ok_or(SecretsError::RegionMissing)?;
    let ssm = tokio::select! {
        biased;
        _ = cancel.cancelled() => return Err(SecretsError::Cancelled),
        ssm = Ssm::new(region) => ssm,
    };
    ssm.fetch(spec, runner, cancel).await
}
