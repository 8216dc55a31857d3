//! The way back of one workload, confirmed: the undo sent within the
//! run's way back (a Deployment as `kubectl rollout undo`, a StatefulSet
//! or DaemonSet through its ControllerRevision), then its own rollout
//! watched as `kubectl rollout status` judges the kind, unless the run was
//! cancelled. It returns the unit's outcome, its note the summary's row.

use std::time::Duration;

use super::error::{KubeError, ObjectRef};
use super::undo::{self, Undone};
use super::{apply, rollout, summary, workloads};
use crate::inputs::WorkloadKind;
use crate::runner::Runner;
use crate::targets::unit::Outcome;
use crate::targets::wayback::WayBack;

/// How long a rollback's own rollout is watched before the run reports it
/// sent but unconfirmed.
const UNDO_WATCH: Duration = Duration::from_secs(120);
/// How long an undo waits for the controller to have seen this run's
/// apply ([`undo::observed`]; half a second after a signal).
const OBSERVED_WITHIN: Duration = Duration::from_secs(5);

/// Undo one Deployment and, unless cancelled, watch that rollout finish.
/// After a signal the undo is still sent, within the run's way back.
pub(crate) async fn undo_and_confirm(
    client: &kube::Client,
    ns: &str,
    name: &str,
    runner: &Runner,
    way: &WayBack<'_>,
) -> Outcome {
    let object = ObjectRef::deployment(ns, name);
    let within = if way.is_cancelled() { Duration::from_millis(500) } else { OBSERVED_WITHIN };
    way.bound(Some(within), undo::observed(client, &object, within)).await;
    let undone = way.bound(Some(UNDO_WATCH), undo::undo(client, ns, name)).await;
    let revision = match sent(&object, undone, way, runner) {
        Ok(revision) => revision,
        Err(note) => return note,
    };
    confirm_undo(client, WorkloadKind::Deployment, ns, name, &revision, runner, way).await
}

/// [`undo_and_confirm`] for a StatefulSet or DaemonSet: back to the
/// template it had before this run, through its ControllerRevision.
pub(super) async fn undo_workload_and_confirm(
    client: &kube::Client,
    t: &apply::Current,
    runner: &Runner,
    way: &WayBack<'_>,
) -> Outcome {
    let (ns, name) = (t.object.namespace.as_str(), t.object.name.as_str());
    let undone = way
        .bound(Some(UNDO_WATCH), workloads::undo(client, t.kind, ns, name, t.live_template.as_ref()))
        .await;
    let revision = match sent(&t.object, undone, way, runner) {
        Ok(revision) => revision,
        Err(note) => return note,
    };
    confirm_undo(client, t.kind, ns, name, &revision, runner, way).await
}

/// What an undo sent within the way back said: the revision it went back
/// to, or the unit's note when it failed or was not sent in time.
fn sent(
    object: &ObjectRef,
    undone: Option<Result<Undone, KubeError>>,
    way: &WayBack<'_>,
    runner: &Runner,
) -> Result<String, Outcome> {
    match undone {
        Some(Ok(Undone::RolledBack { revision, .. })) => {
            runner.line(&format!("{object}: rolled back to revision {revision}"));
            Ok(revision)
        }
        Some(Ok(Undone::Skipped { revision })) => {
            runner.line(&format!(
                "{object}: skipped rollback (current template already matches revision {revision})"
            ));
            Ok(revision)
        }
        Some(Err(e)) => {
            runner.error(e.reason(), &format!("rollback failed: {e}"));
            Err(Outcome::Failed(format!("rollback failed: {}", e.reason())))
        }
        None => {
            let within = if way.is_cancelled() {
                "the way back after the signal".to_string()
            } else {
                format!("{}s", UNDO_WATCH.as_secs())
            };
            runner.error("rollback_timeout", &format!("{object}: rollback not sent within {within}"));
            Err(Outcome::Failed("rollback not sent".into()))
        }
    }
}

/// Watches the rollout an undo started, as `kubectl rollout status` judges
/// its kind, for at most [`UNDO_WATCH`]; not after a signal.
async fn confirm_undo(
    client: &kube::Client,
    kind: WorkloadKind,
    ns: &str,
    name: &str,
    revision: &str,
    runner: &Runner,
    way: &WayBack<'_>,
) -> Outcome {
    if way.is_cancelled() {
        return Outcome::RolledBack(format!("rolled back to revision {revision} (not watched: cancelled)"));
    }
    let stop = way.cancel().child_token();
    let watch = async {
        match kind {
            WorkloadKind::Deployment => rollout::watch(client, ns, name, runner, &stop).await,
            kind => workloads::watch(client, kind, ns, name, None, runner, &stop).await,
        }
    };
    match tokio::time::timeout(UNDO_WATCH, watch).await {
        Ok(Ok(Some(r))) => Outcome::RolledBack(format!("rolled back: {}", summary(&r))),
        Ok(Ok(None)) => {
            Outcome::RolledBack(format!("rolled back to revision {revision} (not watched: cancelled)"))
        }
        Ok(Err(e)) => {
            runner.warning(e.reason(), &format!("the rollback's own rollout failed: {e}"));
            Outcome::Failed(format!("rolled back to revision {revision}, not healthy: {}", e.reason()))
        }
        Err(_) => Outcome::RolledBack(format!(
            "rolled back to revision {revision}, not confirmed within {}s",
            UNDO_WATCH.as_secs()
        )),
    }
}
