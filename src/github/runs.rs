//! Whether a workflow run has ended, as GitHub says: what tells a dead
//! run's deploy lock (the runner VM lost mid-deploy, the job killed) from a
//! live one (`GET /repos/{owner}/{repo}/actions/runs/{run_id}`).
//!
//! Reading runs needs `permissions: actions: read` when the workflow sets
//! its token's permissions; without it GitHub answers 403 or 404, and the
//! run is [`RunState::Unknown`]: treated as alive, so nothing is taken over
//! on a guess.

use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::Deployments;
use super::client::Method;
use super::errors::GithubError;

/// One look at a run takes at most this long, retries included: it is asked
/// while a deploy waits for a lock, which has its own deadline.
const RUN_BUDGET: Duration = Duration::from_secs(15);

/// What GitHub says of a workflow run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    /// Queued, waiting or in progress: a deploy it holds may still be going.
    Active,
    /// Ended (`conclusion`: `failure`, `cancelled`, ...): whatever it left in
    /// progress will never finish.
    Completed { conclusion: String },
    /// GitHub would not show it (403/404: no `actions: read`, or a deleted
    /// run), and will not until the job's permissions change. Treated as
    /// alive.
    Hidden(String),
    /// GitHub could not say this time (unavailable, rate limited,
    /// cancelled); the reason, for the log. Treated as alive.
    Unknown(String),
}

/// The run id in `run_url`, a run of the same server and repository as
/// our own run `own` (`https://github.com/OWNER/REPO/actions/runs/ID[/attempts/N]`),
/// or why it is not one.
pub(crate) fn run_id(run_url: &str, own: &str) -> Result<u64, String> {
    const RUNS: &str = "/actions/runs/";
    let Some((before, after)) = run_url.trim_end_matches('/').split_once(RUNS) else {
        return Err(format!("{run_url} is not a workflow run URL"));
    };
    let ours = own.split_once(RUNS).map_or(own, |(repo, _)| repo);
    if !before.eq_ignore_ascii_case(ours) {
        return Err(format!("{run_url} is a run of another server or repository than {ours}"));
    }
    let id = after.split('/').next().unwrap_or("");
    id.parse().map_err(|_| format!("{run_url} has no run id"))
}

#[derive(Deserialize)]
struct WorkflowRun {
    status: Option<String>,
    conclusion: Option<String>,
}

impl Deployments {
    /// What GitHub says of the run at `run_url` (a run of this repository).
    /// Never fails: anything GitHub cannot answer is [`RunState::Unknown`].
    pub async fn run_state(&self, run_url: &str, cancel: &CancellationToken) -> RunState {
        let id = match run_id(run_url, &self.run_url) {
            Ok(id) => id,
            Err(why) => return RunState::Unknown(why),
        };
        let api = self.api.with_budget(RUN_BUDGET);
        let op = api.op(format!("reading workflow run {id}"));
        let path = format!("/actions/runs/{id}?exclude_pull_requests=true");
        let run: WorkflowRun = match api.call(Method::Get, &path, None, &op, cancel).await {
            Ok(reply) => match reply.json(&op) {
                Ok(run) => run,
                Err(e) => return RunState::Unknown(e.to_string()),
            },
            Err(GithubError::PermissionDenied { .. } | GithubError::NotFound { .. }) => {
                return RunState::Hidden(format!(
                    "GitHub would not show run {id} (403/404): give the job `permissions: actions: read` so the action can tell whether that run has ended (a deleted run answers the same; then break-lock: true)"
                ));
            }
            Err(e) => return RunState::Unknown(e.to_string()),
        };
        match run.status.as_deref() {
            Some("completed") => {
                RunState::Completed { conclusion: run.conclusion.unwrap_or_else(|| "unknown".into()) }
            }
            _ => RunState::Active,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_come_from_run_urls_of_this_server_and_repository_only() {
        let own = "https://github.com/acme/shop-api/actions/runs/99/attempts/1";
        assert_eq!(run_id("https://github.com/acme/shop-api/actions/runs/42/attempts/3", own), Ok(42));
        assert_eq!(run_id("https://github.com/Acme/Shop-API/actions/runs/42", own), Ok(42));
        assert_eq!(run_id("https://github.com/acme/shop-api/actions/runs/7/", own), Ok(7));
        let ghe = "https://ghe.example/acme/shop-api/actions/runs/1/attempts/1";
        assert_eq!(run_id("https://ghe.example/acme/shop-api/actions/runs/7", ghe), Ok(7));
        assert!(run_id("https://ghe.example/acme/shop-api/actions/runs/7", own).is_err(), "another server");
        assert!(run_id("https://github.com/other/shop-api/actions/runs/42", own).is_err());
        assert!(run_id("https://github.com/acme/shop-api/actions/runs/x1", own).is_err());
        assert!(run_id("https://github.com/acme/shop-api/commit/abc", own).is_err());
        assert!(run_id("shop-api/actions/runs/1", own).is_err());
    }
}
