//! Workers in a blue-green deploy: Deployments no Service selects
//! (`proxy: false` in a services file) have no traffic to flip. They are
//! rolled in place (the Deployment's own rolling update, judged as
//! `kubectl rollout status` judges it) once every candidate colour is
//! ready, before any Service flips, and undone (`kubectl rollout undo`)
//! whenever the deploy goes back: a failed preview, switch, smoke test or
//! observe window, or a signal.
//!
//! A worker this run rolls carries the deploy's id in the annotation
//! [`ROLLED_BY`], as the colour Deployments do; `mode: rollback` undoes only
//! the workers that went with the deploy being rolled back, and names the
//! others it leaves as they are.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::apply::{self, Current};
use super::error::{KubeError, ObjectRef};
use super::{Deploy, FIELD_MANAGER, rollout, undo};
use crate::inputs::DeploymentRef;
use crate::runner::Runner;
use crate::targets::unit::{Outcome, Unit};
use crate::targets::wayback::WayBack;

/// The deploy (`<run id>-<attempt>`) that made a colour or rolled a worker.
pub const ROLLED_BY: &str = "deploy-action/deploy-id";

/// A worker this run changed, for the undo and the summary.
pub struct Rolled {
    pub worker: Current,
    /// `None`: it already ran the image, or its rollout did not finish.
    pub outcome: Option<rollout::Rolled>,
    /// Whether this run's apply changed it (then it is undone on the way back).
    pub changed: bool,
    /// Its [`ROLLED_BY`] before this run, put back by the undo.
    pub was_rolled_by: Option<String>,
    pub took: Duration,
}

/// Reads every worker; one that does not exist stops the deploy before
/// anything changed.
///
/// # Errors
/// A worker that is missing (blue-green rolls workers, it does not create
/// them) or cannot be read.
pub async fn read(
    client: &kube::Client,
    ns: &str,
    refs: &[&DeploymentRef],
) -> Result<Vec<Current>, KubeError> {
    let mut out = Vec::new();
    for r in refs {
        let t = match apply::read(client, ns, r, None).await {
            Err(KubeError::NotFound { object }) => return Err(missing(&object)),
            other => other?,
        };
        if !t.exists {
            return Err(missing(&t.object));
        }
        out.push(t);
    }
    Ok(out)
}

fn missing(object: &ObjectRef) -> KubeError {
    KubeError::Config(format!(
        "{object} not found: a blue-green deploy rolls its workers (proxy: false) in place and does not create them; create it first, or deploy it with strategy 'rolling' and its manifest"
    ))
}

fn rolled_by(d: &Deployment) -> Option<String> {
    d.metadata.annotations.as_ref()?.get(ROLLED_BY).cloned()
}

async fn mark(client: &kube::Client, object: &ObjectRef, id: Option<&str>) -> Result<(), KubeError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), &object.namespace);
    let patch = json!({"metadata": {"annotations": {ROLLED_BY: id}}});
    api.patch(
        &object.name,
        &PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() },
        &Patch::Merge(&patch),
    )
    .await
    .map(|_| ())
    .map_err(|e| KubeError::from_api(e, "patch", "deployments", "apps", object.clone()))
}

/// Sets each worker's image (read afresh, so that only a change of ours
/// counts as one), marks it with the deploy's id, and watches every rollout
/// at once; the first failure stops the others. Starts nothing once
/// cancelled. `Err` carries what was changed (to undo), with `None` for a
/// cancellation.
pub async fn roll(
    client: &kube::Client,
    ns: &str,
    refs: &[&DeploymentRef],
    work: &Deploy<'_>,
    runner: &Runner,
    cancel: &CancellationToken,
) -> Result<Vec<Rolled>, (Option<KubeError>, Vec<Rolled>)> {
    let mut all: Vec<Rolled> = Vec::new();
    for r in refs {
        if cancel.is_cancelled() {
            return Err((None, all));
        }
        let t = match apply::read(client, ns, r, None).await {
            Ok(t) => t,
            Err(e) => return Err((Some(e), all)),
        };
        let env_from = apply::env_from(&t, work.app, work.secret.as_ref().map(|s| s.name.as_str()));
        let image = t.image_to_run(work.image).to_string();
        let was_rolled_by = rolled_by(&t.deployment);
        match apply::set_image(client, &t, &image, env_from.as_deref(), runner, false).await {
            Ok(changed) => {
                if !changed {
                    runner.line(&format!("{}: already runs {image}", t.object));
                }
                // Only a worker this deploy changed is its to undo: marked
                // otherwise, a `mode: rollback` of this deploy would take it
                // back past the release an earlier deploy gave it.
                let marked =
                    if changed { mark(client, &t.object, Some(work.deploy_id)).await } else { Ok(()) };
                all.push(Rolled { worker: t, outcome: None, changed, was_rolled_by, took: Duration::ZERO });
                if let Err(e) = marked {
                    return Err((Some(e), all));
                }
            }
            Err(e) => return Err((Some(e), all)),
        }
    }
    let stop = cancel.child_token();
    let watches = all.iter().filter(|r| r.changed).map(|r| {
        let stop = stop.clone();
        async move {
            let started = Instant::now();
            let t = &r.worker.object;
            let verdict = rollout::watch(client, &t.namespace, &t.name, runner, &stop).await;
            if verdict.is_err() {
                stop.cancel();
            }
            (verdict, started.elapsed())
        }
    });
    let verdicts = futures::future::join_all(watches).await;
    let mut failed = None;
    let mut unfinished = false;
    for (r, (verdict, took)) in all.iter_mut().filter(|r| r.changed).zip(verdicts) {
        r.took = took;
        match verdict {
            Ok(Some(outcome)) => r.outcome = Some(outcome),
            Ok(None) => unfinished = true,
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    if failed.is_some() || unfinished || cancel.is_cancelled() {
        return Err((failed, all));
    }
    Ok(all)
}

/// The summary rows of workers that rolled out.
pub fn rows(rolled: &[Rolled]) -> Vec<Unit> {
    rolled
        .iter()
        .map(|r| {
            let outcome = match &r.outcome {
                Some(o) => Outcome::Deployed(format!(
                    "worker rolled out: revision {}, {}/{} ready",
                    o.revision, o.ready, o.replicas
                )),
                None => Outcome::Unchanged("worker unchanged".into()),
            };
            Unit::new(r.worker.object.to_string(), outcome, r.took)
        })
        .collect()
}

/// `kubectl rollout undo` on every worker this run changed, each watched
/// (after a signal: all sent within what is left of the way back, not
/// watched), and
/// their [`ROLLED_BY`] put back. Workers this run did not change are left
/// alone. Returns whether all went back, and their summary rows.
pub async fn undo(
    client: &kube::Client,
    rolled: &[Rolled],
    runner: &Runner,
    way: &WayBack<'_>,
) -> (bool, Vec<Unit>) {
    let all = async {
        let mut ok = true;
        let mut rows = Vec::new();
        for r in rolled {
            let t = &r.worker.object;
            if !r.changed {
                continue;
            }
            let started = Instant::now();
            let outcome = super::undo_and_confirm(client, &t.namespace, &t.name, runner, way).await;
            let back = matches!(outcome, Outcome::RolledBack(_));
            if back {
                let _ = mark(client, t, r.was_rolled_by.as_deref()).await;
            }
            ok &= back;
            let outcome = outcome.map_note(|n| format!("worker {n}"));
            rows.push(Unit::new(t.to_string(), outcome, started.elapsed()));
        }
        (ok, rows)
    };
    way.bound(None, all).await.unwrap_or_else(|| {
        runner.error("rollback_timeout", "workers not all undone within the way back after the signal");
        (false, Vec::new())
    })
}

/// `mode: rollback` of a blue-green deploy, for its workers: each one the
/// deploy being rolled back rolled (its [`ROLLED_BY`] is `from`, the live
/// colour's) is undone to its previous revision and marked `back_to` (the
/// colour coming back); any other is left as it is, and says so.
///
/// # Errors
/// A worker that cannot be read or undone (e.g. no earlier revision); the
/// Services have not flipped then.
pub async fn roll_back(
    client: &kube::Client,
    ns: &str,
    refs: &[&DeploymentRef],
    from: Option<&str>,
    back_to: Option<&str>,
    runner: &Runner,
    cancel: &CancellationToken,
) -> Result<Vec<Unit>, KubeError> {
    let mut rows = Vec::new();
    for t in read(client, ns, refs).await? {
        let started = Instant::now();
        let by = rolled_by(&t.deployment);
        if from.is_none() || by.as_deref() != from {
            runner.line(&format!(
                "{}: worker left as it is: the deploy being rolled back ({}) did not roll it (it was rolled by {})",
                t.object,
                from.unwrap_or("unknown"),
                by.as_deref().unwrap_or("no deploy of this action")
            ));
            let left = Outcome::Unchanged("worker left as it is".into());
            rows.push(Unit::new(t.object.to_string(), left, Duration::ZERO));
            continue;
        }
        let undone = tokio::select! {
            u = undo::undo(client, ns, &t.object.name) => u?,
            _ = cancel.cancelled() => return Ok(rows),
        };
        let revision = match undone {
            undo::Undone::RolledBack { revision, .. } | undo::Undone::Skipped { revision } => revision,
        };
        runner.line(&format!("{}: worker rolled back to revision {revision}", t.object));
        match rollout::watch(client, ns, &t.object.name, runner, cancel).await? {
            Some(_) => {}
            None => return Ok(rows),
        }
        mark(client, &t.object, back_to).await?;
        rows.push(Unit::new(
            t.object.to_string(),
            Outcome::RolledBack(format!("worker rolled back to revision {revision}")),
            started.elapsed(),
        ));
    }
    Ok(rows)
}
