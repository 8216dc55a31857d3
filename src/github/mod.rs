//! GitHub Deployments: the record of every deploy (see issue 4).
//!
//! Every run is a GitHub Deployment of the ref to the environment, with
//! statuses through the run: `queued` while another run holds the
//! environment, `in_progress` while deploying, then `success`, `failure`
//! (the deploy failed; the previous version was kept or restored) or `error`
//! (the action could not finish). Each status carries the run's log URL and
//! the environment URL. The payload records what was shipped, so that
//! `mode: rollback` can find the last good image again.
//!
//! # Layout
//!
//! - [`Deployments`] (here and in `deployments.rs`) — what the pipeline calls.
//! - `client.rs` — octocrab at `GITHUB_API_URL`, retry and rate-limit policy.
//! - `errors.rs` — [`GithubError`] and how GitHub's answers map to it.
//! - `history.rs` — pure decisions: live, last good, lock holders.
//! - `runs.rs` — whether a workflow run has ended (a dead run's lock).
//! - `wire.rs` — request and response bodies.
//!
//! # Two deployments per run
//!
//! A job that declares `environment:` already gets a deployment created by
//! GitHub. Either drop `environment:` from the job (and lose its protection
//! rules), or pass that deployment's id in the `deployment-id` input so the
//! statuses go there ([`GithubSpec::deployment_id`]). Such a deployment has
//! no payload of ours, so `mode: rollback` does not see its image.

mod client;
mod deployments;
mod errors;
mod history;
mod runs;
mod wire;

use std::time::Duration;

use serde::Serialize;

pub use errors::GithubError;
pub use runs::RunState;

use crate::inputs::{Context, GithubSpec};
use crate::runner::Runner;

/// What a deployment records in its payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeployPayload {
    pub image: String,
    pub previous_image: Option<String>,
    pub strategy: String,
    pub target: String,
    /// The run that made the deployment; the deploy lock compares it.
    pub run_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secrets_fingerprint: Option<String>,
}

/// The deployment's `task`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Deploy,
    Rollback,
}

impl Task {
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Deploy => "deploy",
            Task::Rollback => "deploy:rollback",
        }
    }
}

/// The deployment this run reports to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentRecord {
    pub id: u64,
    /// Its API URL (`.../repos/OWNER/REPO/deployments/ID`).
    pub url: String,
}

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalState {
    /// Deployed and healthy.
    Success,
    /// The deploy failed; the previous version was kept or restored.
    Failure,
    /// The action could not finish: cancelled, lost contact, unknown state.
    Error,
}

impl FinalState {
    pub fn as_str(self) -> &'static str {
        match self {
            FinalState::Success => "success",
            FinalState::Failure => "failure",
            FinalState::Error => "error",
        }
    }
}

/// GitHub Deployments for one repository and environment. Cheap to clone.
#[derive(Clone)]
pub struct Deployments {
    api: client::Api,
    spec: GithubSpec,
    environment: String,
    environment_url: Option<String>,
    run_url: String,
    runner: Runner,
}

impl std::fmt::Debug for Deployments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployments")
            .field("repository", &self.api.repository)
            .field("environment", &self.environment)
            .finish_non_exhaustive()
    }
}

impl Deployments {
    /// A client for `ctx`'s repository at `ctx.api_url` (GitHub Enterprise
    /// Server's `https://HOST/api/v3` works as is), authenticated with
    /// `spec.token`. Contacts nothing yet. Must be called inside a Tokio
    /// runtime.
    ///
    /// # Errors
    /// No token, or an API URL that is not an http(s) URL.
    pub fn new(
        spec: &GithubSpec,
        ctx: &Context,
        environment: &str,
        environment_url: Option<&url::Url>,
        runner: Runner,
    ) -> Result<Self, GithubError> {
        Ok(Self {
            api: client::Api::new(
                &ctx.api_url,
                spec.token.as_ref(),
                &ctx.owner,
                &ctx.repo,
                runner.redactor().clone(),
            )?,
            spec: spec.clone(),
            environment: environment.to_string(),
            environment_url: environment_url.map(|u| u.to_string()),
            run_url: ctx.run_url(),
            runner,
        })
    }

    /// The same client with another time budget per API call, retries and
    /// waits included (default 60 s): for the final status after a
    /// cancellation, when the runner will not wait that long, and for tests.
    pub fn with_retry_budget(&self, budget: Duration) -> Self {
        Self { api: self.api.with_budget(budget), ..self.clone() }
    }
}
