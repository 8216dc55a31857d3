//! The deployment lifecycle: create (or attach), the lock across runs,
//! statuses, deactivating what was replaced, and reading the history back.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::{Api, Method, Next, pause};
use super::errors::{GithubError, Op, secs};
use super::history::{self, Candidate, Entry, Holder};
use super::runs::RunState;
use super::wire::{Deployment, NewDeployment, NewStatus, Status};
use super::{DeployPayload, DeploymentRecord, Deployments, FinalState, Task};

/// At most this many earlier deployments are checked for deactivation.
const MAX_DEACTIVATE: usize = 50;
/// Between two `inactive` posts: GitHub's secondary limits allow about 80
/// content-creating requests a minute.
const DEACTIVATE_PACING: Duration = Duration::from_millis(750);
/// Stop deactivating when fewer requests than this remain in the hour.
const RATE_RESERVE: u64 = 100;
/// How many of the newest deployments the history and lock scans read.
const SCAN_DEPTH: usize = 30;
/// The final status after something failed in `begin`.
const CLEANUP_BUDGET: Duration = Duration::from_secs(10);

impl Deployments {
    /// Creates the deployment (or attaches to `deployment-id`), takes the
    /// environment's deploy lock, and posts `in_progress`.
    ///
    /// The lock: deployments to this environment older than ours, made by
    /// another run and still `queued`/`in_progress`, are waited for: ours
    /// is `queued` meanwhile, for at most `lock-timeout`, then this fails
    /// naming that run. Whenever `begin` fails after creating the
    /// deployment, it posts `error` on it, so that it holds no lock.
    ///
    /// A failed `in_progress` post only warns, unless
    /// `fail-on-status-error` is set.
    ///
    /// # Errors
    /// What GitHub answered (see [`GithubError`]), the lock, cancellation.
    pub async fn begin(
        &self,
        payload: &DeployPayload,
        task: Task,
        cancel: &CancellationToken,
    ) -> Result<DeploymentRecord, GithubError> {
        let deployment = match self.spec.deployment_id {
            Some(id) => self.attach(id, cancel).await?,
            None => self.create(payload, task, cancel).await?,
        };
        let record = DeploymentRecord { id: deployment.id, url: deployment.url };
        tracing::info!(deployment = record.id, environment = %self.environment, "github deployment");
        self.runner.line(&format!("GitHub deployment {} to {}: {}", record.id, self.environment, record.url));

        if let Err(e) = self.take_lock(&record, cancel).await {
            self.cleanup(record.id, &e).await;
            return Err(e);
        }
        let verb = match task {
            Task::Deploy => "deploying",
            Task::Rollback => "rolling back to",
        };
        let what = format!("{verb} {} ({}, {})", payload.image, payload.strategy, payload.target);
        match self.post_status(&self.api, record.id, "in_progress", &what, None, cancel).await {
            Ok(()) => Ok(record),
            Err(e @ GithubError::Cancelled { .. }) => {
                self.cleanup(record.id, &e).await;
                Err(e)
            }
            Err(e) if self.spec.fail_on_status_error => Err(e),
            Err(e) => {
                self.runner.warning(e.reason(), &e.to_string());
                Ok(record)
            }
        }
    }

    /// Posts the final status with `description` (cut to 140 characters).
    /// On success, unless `deactivate-previous: false`, earlier deployments
    /// to the environment that are still active become `inactive`: GitHub
    /// does it itself only for non-production ones (`auto_inactive`). That
    /// part only warns when it fails.
    ///
    /// Not cancellable (it reports the cancellation); bounded by the retry
    /// budget ([`Deployments::with_retry_budget`]).
    ///
    /// # Errors
    /// What GitHub answered to the status post.
    pub async fn finish(
        &self,
        record: &DeploymentRecord,
        state: FinalState,
        description: &str,
    ) -> Result<(), GithubError> {
        let cancel = CancellationToken::new();
        let success = state == FinalState::Success;
        // `auto_inactive` defaults to true; sent only to turn it off.
        let auto_inactive = (success && !self.spec.deactivate_previous).then_some(false);
        self.post_status(&self.api, record.id, state.as_str(), description, auto_inactive, &cancel).await?;
        if success && self.spec.deactivate_previous {
            match self.deactivate_earlier(record.id, &cancel).await {
                Ok(0) => {}
                Ok(n) => self
                    .runner
                    .line(&format!("marked {n} earlier deployment(s) to {} inactive", self.environment)),
                Err(e) => self.runner.warning(e.reason(), &format!("earlier deployments stay active: {e}")),
            }
        }
        Ok(())
    }

    /// The image of the live deployment (the newest whose latest status is
    /// `success`), for `payload.previous_image`.
    ///
    /// # Errors
    /// What GitHub answered.
    pub async fn live_image(&self) -> Result<Option<String>, GithubError> {
        self.scan(|entries, _| history::live(entries).cloned()).await
    }

    /// For `mode: rollback`: the image of the newest good deployment (latest
    /// status `success`, or `inactive` after a success) older than the live
    /// one, with another image. Reads the newest 30 deployments.
    ///
    /// # Errors
    /// What GitHub answered.
    pub async fn last_good_image(&self) -> Result<Option<String>, GithubError> {
        self.scan(|entries, complete| history::last_good(entries, complete).cloned()).await
    }

    async fn create(
        &self,
        payload: &DeployPayload,
        task: Task,
        cancel: &CancellationToken,
    ) -> Result<Deployment, GithubError> {
        let git_ref = &self.spec.git_ref;
        let op = Op {
            git_ref: Some(git_ref.clone()),
            ..self.api.op(format!("creating the deployment of {git_ref} to {}", self.environment))
        };
        let description = history::description(&self.runner.redactor().redact(&format!(
            "{} {}",
            task.as_str(),
            payload.image
        )));
        let body = NewDeployment {
            git_ref,
            task: task.as_str(),
            auto_merge: false,
            required_contexts: self.spec.required_contexts.as_deref(),
            environment: &self.environment,
            production_environment: self.spec.production_environment,
            transient_environment: self.spec.transient_environment,
            description: &description,
            payload: serde_json::to_value(payload).unwrap_or(Value::Null),
        };
        let body = serde_json::to_value(&body).unwrap_or(Value::Null);
        let mut attempts = self.api.attempts();
        loop {
            let result = self.api.once(Method::Post, "/deployments", Some(&body), &op, cancel).await?;
            match self.api.judge(&op, result, &mut attempts) {
                Next::Done(reply) if reply.status == 202 => {
                    let message = serde_json::from_str::<Value>(&reply.body)
                        .ok()
                        .and_then(|v| v.get("message")?.as_str().map(str::to_string))
                        .unwrap_or_else(|| "202 Accepted".into());
                    return Err(GithubError::MergeHappened {
                        what: op.what,
                        git_ref: git_ref.clone(),
                        message,
                    });
                }
                Next::Done(reply) => return reply.json(&op),
                Next::Fail(e) => return Err(e),
                Next::Retry { wait, ambiguous } => {
                    pause(wait, &op, cancel).await?;
                    // GitHub may have created it before failing to answer:
                    // look for ours before creating another.
                    if ambiguous && let Some(found) = self.find_own(task, &body["payload"], cancel).await? {
                        return Ok(found);
                    }
                }
            }
        }
    }

    /// The deployment a failed create may have made: same task and payload
    /// (which names this run), if the list says so in one attempt.
    async fn find_own(
        &self,
        task: Task,
        payload: &Value,
        cancel: &CancellationToken,
    ) -> Result<Option<Deployment>, GithubError> {
        let op = self.api.op("looking for a deployment this run may have created");
        let path = format!(
            "/deployments?{}",
            query(&[("environment", &self.environment), ("task", task.as_str()), ("per_page", "10")])
        );
        let Ok(reply) = self.api.once(Method::Get, &path, None, &op, cancel).await? else { return Ok(None) };
        if reply.status != 200 {
            return Ok(None);
        }
        let list: Vec<Deployment> = reply.json(&op)?;
        Ok(list.into_iter().find(|d| &d.payload == payload))
    }

    async fn attach(&self, id: u64, cancel: &CancellationToken) -> Result<Deployment, GithubError> {
        let op =
            Op { deployment: Some(id), ..self.api.op(format!("reading deployment {id} (deployment-id)")) };
        let deployment: Deployment =
            self.api.call(Method::Get, &format!("/deployments/{id}"), None, &op, cancel).await?.json(&op)?;
        if let Some(env) = deployment.environment.as_deref().filter(|e| *e != self.environment) {
            self.runner.warning(
                "github_environment_mismatch",
                &format!(
                    "deployment {id} (deployment-id) is for environment {env}, not {}",
                    self.environment
                ),
            );
        }
        Ok(deployment)
    }

    async fn post_status(
        &self,
        api: &Api,
        id: u64,
        state: &str,
        description: &str,
        auto_inactive: Option<bool>,
        cancel: &CancellationToken,
    ) -> Result<(), GithubError> {
        let op = Op { deployment: Some(id), ..api.op(format!("posting status {state} on deployment {id}")) };
        let log_url = self.run_url.as_str();
        let body = NewStatus {
            state,
            log_url: Some(log_url),
            environment_url: self.environment_url.as_deref(),
            // Redacted before the cut: a value cut in half no longer matches.
            description: &history::description(&self.runner.redactor().redact(description)),
            auto_inactive,
        };
        let body = serde_json::to_value(&body).unwrap_or(Value::Null);
        api.call(Method::Post, &format!("/deployments/{id}/statuses"), Some(&body), &op, cancel).await?;
        tracing::info!(deployment = id, state, "github deployment status");
        Ok(())
    }

    /// After `begin` failed past the create: `error` on the deployment, best
    /// effort, so it does not look in progress (and hold the lock).
    async fn cleanup(&self, id: u64, cause: &GithubError) {
        let api = self.api.with_budget(CLEANUP_BUDGET);
        let text = format!("not deployed: {}", cause.reason());
        if let Err(e) = self.post_status(&api, id, "error", &text, None, &CancellationToken::new()).await {
            self.runner.warning(e.reason(), &format!("deployment {id} keeps its last status: {e}"));
        }
    }

    /// Waits while older deployments of other runs are in progress. One
    /// whose run GitHub reports as ended is abandoned (its runner was lost,
    /// or the job killed): it gets `error` and no longer holds the lock.
    async fn take_lock(
        &self,
        record: &DeploymentRecord,
        cancel: &CancellationToken,
    ) -> Result<(), GithubError> {
        let mut finished = HashSet::new();
        let mut unknown = HashMap::new();
        let holders = self.lock_holders(record.id, &mut finished, &mut unknown, cancel).await?;
        let Some(first) = holders.first().cloned() else { return Ok(()) };
        let timeout = self.spec.lock_timeout;
        let locked = |h: &Holder, waited: String| GithubError::LockedByOtherRun {
            environment: self.environment.clone(),
            run_url: h.run_url.clone(),
            deployment_id: h.id,
            waited,
        };
        if timeout.is_zero() {
            return Err(locked(&first, "lock-timeout is 0, so this run did not wait".into()));
        }
        let waiting = format!("waiting for deployment {} of {}", first.id, first.run_url);
        self.post_status(&self.api, record.id, "queued", &waiting, None, cancel).await?;
        self.runner.line(&format!(
            "environment {} is being deployed by {} (deployment {}, {}); waiting up to {}",
            self.environment,
            first.run_url,
            first.id,
            first.state,
            secs(timeout)
        ));
        if let Some(why) = unknown.get(&history::run_of(&first.run_url)) {
            self.runner.line(&format!("whether that run has ended could not be read: {why}"));
        }
        let op = self.api.op(format!("waiting for the deploy lock on {}", self.environment));
        let poll = (timeout / 20).clamp(Duration::from_secs(1), Duration::from_secs(10));
        let started = Instant::now();
        let mut holder = first;
        let mut last_note = started;
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(locked(&holder, format!("waited {} (lock-timeout)", secs(started.elapsed()))));
            }
            pause(poll.min(left), &op, cancel).await?;
            match self.lock_holders(record.id, &mut finished, &mut unknown, cancel).await?.into_iter().next()
            {
                None => {
                    self.runner.line(&format!(
                        "deploy lock on {} free after {}",
                        self.environment,
                        secs(started.elapsed())
                    ));
                    return Ok(());
                }
                Some(h) => holder = h,
            }
            if last_note.elapsed() >= Duration::from_secs(30) {
                last_note = Instant::now();
                self.runner.line(&format!(
                    "still waiting for {} (deployment {}), {} of {}",
                    holder.run_url,
                    holder.id,
                    secs(started.elapsed()),
                    secs(timeout)
                ));
            }
        }
    }

    /// Older deployments of other runs still in progress, oldest first.
    /// `finished` remembers deployments seen finished (or abandoned), not
    /// asked again; `unknown`, the runs GitHub would not say anything of
    /// (by run URL without the attempt), not asked again either.
    async fn lock_holders(
        &self,
        own_id: u64,
        finished: &mut HashSet<u64>,
        unknown: &mut HashMap<String, String>,
        cancel: &CancellationToken,
    ) -> Result<Vec<Holder>, GithubError> {
        let now = chrono::Utc::now();
        let mut holders = Vec::new();
        for d in self.list(cancel).await? {
            let recent = (now - d.created_at).to_std().unwrap_or_default() < history::STALE_AFTER;
            if d.id >= own_id || finished.contains(&d.id) || !recent {
                continue;
            }
            let Some(run_url) = d.run_url() else { continue };
            if history::same_run(&run_url, &self.run_url) {
                continue;
            }
            let latest =
                self.statuses(d.id, 1, cancel).await?.into_iter().next().map(|s| (s.state, s.created_at));
            let candidate = Candidate { id: d.id, run_url: Some(run_url), created_at: d.created_at, latest };
            let Some(h) = history::holder(&candidate, own_id, &self.run_url, now) else {
                finished.insert(d.id);
                continue;
            };
            let run = history::run_of(&h.run_url);
            if unknown.contains_key(&run) {
                holders.push(h);
                continue;
            }
            match self.run_state(&h.run_url, cancel).await {
                RunState::Active => holders.push(h),
                // Asked again next round: it may answer then.
                RunState::Unknown(why) => {
                    tracing::info!(run = %h.run_url, why = %why, "whether the lock holder's run ended is unknown");
                    holders.push(h);
                }
                RunState::Hidden(why) => {
                    unknown.insert(run, why);
                    holders.push(h);
                }
                RunState::Completed { conclusion } => {
                    finished.insert(h.id);
                    self.abandon(&h, &conclusion, own_id, cancel).await;
                }
            }
        }
        holders.sort_by_key(|h| h.id);
        Ok(holders)
    }

    /// `error` on a deployment whose run ended while it was in progress, so
    /// that it holds nothing and the record says what happened to it. Best
    /// effort: a failed post is a warning (the run's end decided it).
    async fn abandon(&self, h: &Holder, conclusion: &str, own_id: u64, cancel: &CancellationToken) {
        self.runner.warning(
            "deployment_abandoned",
            &format!(
                "deployment {} of {} is still {}, but that run has ended ({conclusion}) without a final status; deployment {own_id} takes over the environment",
                h.id, h.run_url, h.state
            ),
        );
        let text = format!(
            "abandoned: its run ended ({conclusion}) while deploying; taken over by deployment {own_id}"
        );
        if let Err(e) = self.post_status(&self.api, h.id, "error", &text, None, cancel).await {
            self.runner.warning(e.reason(), &format!("deployment {} keeps its last status: {e}", h.id));
        }
    }

    /// Marks earlier deployments of the environment whose latest status is
    /// `success` inactive; returns how many. Those GitHub's `auto_inactive`
    /// already covered (non-production, non-transient) are skipped.
    async fn deactivate_earlier(
        &self,
        own_id: u64,
        cancel: &CancellationToken,
    ) -> Result<usize, GithubError> {
        let earlier: Vec<Deployment> =
            self.list(cancel).await?.into_iter().filter(|d| d.id < own_id).collect();
        let mut done = 0;
        for d in earlier.iter().take(MAX_DEACTIVATE) {
            if d.production_environment == Some(false) && d.transient_environment == Some(false) {
                continue;
            }
            let op = Op {
                deployment: Some(d.id),
                ..self.api.op(format!("reading the statuses of deployment {}", d.id))
            };
            let reply = self
                .api
                .call(Method::Get, &format!("/deployments/{}/statuses?per_page=1", d.id), None, &op, cancel)
                .await?;
            let remaining = reply.header("x-ratelimit-remaining").and_then(|v| v.trim().parse::<u64>().ok());
            let latest: Vec<Status> = reply.json(&op)?;
            if latest.first().is_some_and(|s| s.state == "success") {
                if done > 0 {
                    pause(DEACTIVATE_PACING, &op, cancel).await?;
                }
                let text = format!("replaced by deployment {own_id}");
                self.post_status(&self.api, d.id, "inactive", &text, None, cancel).await?;
                done += 1;
            }
            if remaining.is_some_and(|r| r < RATE_RESERVE) {
                self.runner.warning(
                    "github_rate_limited",
                    "stopped marking earlier deployments inactive: the API rate limit is nearly spent",
                );
                break;
            }
        }
        Ok(done)
    }

    /// Reads the environment's deployments newest first, with their
    /// statuses, until `pick` gives a definite answer (`complete: false`),
    /// or to the end (`complete: true`); returns the picked image.
    async fn scan<F>(&self, pick: F) -> Result<Option<String>, GithubError>
    where
        F: Fn(&[Entry], bool) -> Option<Entry>,
    {
        let cancel = CancellationToken::new();
        let mut entries = Vec::new();
        for d in self.list(&cancel).await? {
            let Some(image) = d.image() else { continue };
            let statuses = self.statuses(d.id, 100, &cancel).await?;
            let states: Vec<&str> = statuses.iter().map(|s| s.state.as_str()).collect();
            entries.push(Entry::new(d.id, Some(image), &states));
            if let Some(found) = pick(&entries, false) {
                return Ok(found.image);
            }
        }
        Ok(pick(&entries, true).and_then(|e| e.image))
    }

    /// The newest deployments to the environment, newest first.
    async fn list(&self, cancel: &CancellationToken) -> Result<Vec<Deployment>, GithubError> {
        let op = self.api.op(format!("listing the deployments to {}", self.environment));
        let depth = SCAN_DEPTH.to_string();
        let path =
            format!("/deployments?{}", query(&[("environment", &self.environment), ("per_page", &depth)]));
        self.api.call(Method::Get, &path, None, &op, cancel).await?.json(&op)
    }

    /// A deployment's newest `count` statuses, newest first.
    async fn statuses(
        &self,
        id: u64,
        count: u8,
        cancel: &CancellationToken,
    ) -> Result<Vec<Status>, GithubError> {
        let op =
            Op { deployment: Some(id), ..self.api.op(format!("reading the statuses of deployment {id}")) };
        let path = format!("/deployments/{id}/statuses?per_page={count}");
        self.api.call(Method::Get, &path, None, &op, cancel).await?.json(&op)
    }
}

/// `a=1&b=x%20y`.
fn query(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}
