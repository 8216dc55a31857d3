//! Workers in a blue-green deploy: Deployments no Service selects
//! (`proxy: false` in a services file) have no traffic to flip. They are
//! rolled in place (the Deployment's own rolling update, judged as
//! `kubectl rollout status` judges it) once every candidate colour is
//! ready, before any Service flips, and undone (`kubectl rollout undo`)
//! whenever the deploy goes back: a failed preview, switch, smoke test or
//! observe window, or a signal. `mode: rollback` undoes them beside the
//! flip back.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::apply::{self, Current};
use super::error::KubeError;
use super::{Deploy, rollout};
use crate::inputs::DeploymentRef;
use crate::runner::Runner;

/// A worker this run changed, for the undo and the summary.
pub struct Rolled {
    pub worker: Current,
    /// `None`: it already ran the image (nothing to undo).
    pub outcome: Option<rollout::Rolled>,
    pub took: Duration,
}

/// Reads every worker; one that does not exist stops the deploy before
/// anything changed (a blue-green deploy updates workers, it does not
/// create them).
///
/// # Errors
/// A worker that is missing or cannot be read.
pub async fn read(
    client: &kube::Client,
    ns: &str,
    refs: &[&DeploymentRef],
) -> Result<Vec<Current>, KubeError> {
    let mut out = Vec::new();
    for r in refs {
        let t = apply::read(client, ns, r, None).await?;
        if !t.exists {
            return Err(KubeError::NotFound { object: t.object });
        }
        out.push(t);
    }
    Ok(out)
}

/// Sets each worker's image and watches every rollout at once; the first
/// failure stops the others. `Err` carries what was changed (to undo),
/// with `None` for a cancellation.
pub async fn roll(
    client: &kube::Client,
    workers: &[Current],
    work: &Deploy<'_>,
    runner: &Runner,
    cancel: &CancellationToken,
) -> Result<Vec<Rolled>, (Option<KubeError>, Vec<Rolled>)> {
    let mut changed = Vec::new();
    let mut same = Vec::new();
    for t in workers {
        let env_from = apply::env_from(t, work.app, work.secret.as_ref().map(|s| s.name.as_str()));
        let image = t.image_to_run(work.image);
        match apply::set_image(client, t, image, env_from.as_deref(), runner, false).await {
            Ok(true) => changed.push(t.clone()),
            Ok(false) => {
                runner.line(&format!("{}: already runs {image}", t.object));
                same.push(Rolled { worker: t.clone(), outcome: None, took: Duration::ZERO });
            }
            Err(e) => return Err((Some(e), as_rolled(changed))),
        }
    }
    let stop = cancel.child_token();
    let watches = changed.iter().map(|t| {
        let stop = stop.clone();
        async move {
            let started = Instant::now();
            let r = rollout::watch(client, &t.object.namespace, &t.object.name, runner, &stop).await;
            if r.is_err() {
                stop.cancel();
            }
            (r, started.elapsed())
        }
    });
    let verdicts = futures::future::join_all(watches).await;
    let mut failed = None;
    let mut rolled = Vec::new();
    for (t, (r, took)) in changed.into_iter().zip(verdicts) {
        match r {
            Ok(outcome) => rolled.push(Rolled { worker: t, outcome, took }),
            Err(e) => {
                failed.get_or_insert(e);
                rolled.push(Rolled { worker: t, outcome: None, took });
            }
        }
    }
    if failed.is_some() || cancel.is_cancelled() || rolled.iter().any(|r| r.outcome.is_none()) {
        return Err((failed, rolled));
    }
    rolled.extend(same);
    Ok(rolled)
}

fn as_rolled(changed: Vec<Current>) -> Vec<Rolled> {
    changed.into_iter().map(|worker| Rolled { worker, outcome: None, took: Duration::ZERO }).collect()
}

/// The summary rows of workers that rolled out.
pub fn rows(rolled: &[Rolled]) -> Vec<(String, String, Duration)> {
    rolled
        .iter()
        .map(|r| {
            let note = match &r.outcome {
                Some(o) => {
                    format!("worker rolled out: revision {}, {}/{} ready", o.revision, o.ready, o.replicas)
                }
                None => "worker unchanged".into(),
            };
            (r.worker.object.to_string(), note, r.took)
        })
        .collect()
}

/// `kubectl rollout undo` on every worker this run changed, each watched
/// (within the runner's grace after a signal). Returns whether all went
/// back, and their summary rows.
pub async fn undo(
    client: &kube::Client,
    changed: &[Rolled],
    runner: &Runner,
    cancel: &CancellationToken,
) -> (bool, Vec<(String, String, Duration)>) {
    let mut ok = true;
    let mut rows = Vec::new();
    for r in changed {
        let started = Instant::now();
        let t = &r.worker;
        let (note, back) =
            super::undo_and_confirm(client, &t.object.namespace, &t.object.name, runner, cancel).await;
        ok &= back;
        rows.push((t.object.to_string(), format!("worker {note}"), started.elapsed()));
    }
    (ok, rows)
}
