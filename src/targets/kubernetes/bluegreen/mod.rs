//! `strategy: blue-green` on a cluster: the new version is proven before
//! traffic moves, and the move is verified through what the endpoint
//! controller computed.
//!
//! The steps are the strategy's one list, the hosts' too
//! ([`crate::strategy::phases`] over the one unit a cluster is); how the
//! cluster does each is in `run.rs`. For each Deployment `web` of
//! `deployments` or a services file (the template: its pod spec, replicas
//! and selector), and its live Service (of the same name, or the one the
//! file names):
//!
//! 1. Launch: the candidate colour, `web-blue` or `web-green` (the one the
//!    Service does not select), is applied from `web`'s spec with the new
//!    image and the label `deploy-action/colour` in its selector and pods;
//! 2. Verify: it is rolled out until every replica is available
//!    (kubectl's verdict, watched); an optional preview Service
//!    (`web-preview`, or the file's) is pointed at it, and its
//!    EndpointSlices must list the candidate's ready pods and no others;
//! 3. Shift: once every candidate is ready, every live Service's selector
//!    flips to the candidate colour (all of them, never cut half-way), and
//!    each Service's EndpointSlices must then list exactly the candidate's
//!    ready pods;
//! 4. Observe: the window watches the candidates (the commit point);
//! 5. Retire: after `drain-time`, the old colour is scaled to zero and
//!    kept, for an instant flip back.
//!
//! A worker (`proxy: false`: no Service) has nothing to flip; it is rolled
//! in place in step 2, once every candidate is ready, and undone with any way back
//! ([`super::workers`]).
//!
//! Any failure before the flip leaves every selector as it was (the
//! candidate goes to zero); any failure after it flips every Service back.
//! On the first deploy the live Service selects `web`'s own pods: it is
//! first pinned to their ReplicaSet (`pod-template-hash`), so the
//! candidate's pods, which carry the same app labels, join it only at the
//! flip; after the drain `web` itself is scaled to zero and stays the
//! template.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::apply::{self, Current};
use super::error::{KubeError, ObjectRef};
use super::rollout::{self, HASH_LABEL};
use super::secret::MANAGED_BY;
use super::{Cluster, ClusterRun, Deploy, FIELD_MANAGER, workers};
use crate::inputs::{DeploymentRef, KubernetesSpec};
use crate::runner::Runner;
use crate::strategy::Phase;
use crate::targets::unit::{Outcome, Unit};
use crate::targets::wayback::{WayBack, drain};

mod back;
mod endpoints;
mod pair;
mod plan;
mod rollback;
mod run;

use back::*;
use endpoints::*;
pub use pair::colour_deployment;
use pair::*;
pub use plan::plan;
pub use rollback::rollback;
use run::Run;

pub const COLOUR: &str = "deploy-action/colour";
/// How long the endpoint controller gets to show a selector change.
const ENDPOINTS_WITHIN: Duration = Duration::from_secs(30);
/// Retiring the candidates is clean-up, last on the way back: bounded
/// (after a signal, by what is left of the way back), failure only warns.
const RETIRE_WITHIN: Duration = Duration::from_secs(45);

/// The drain of every way back, from the rollout inputs (the observe
/// window and the run's drain are its steps' own: [`crate::strategy::Step::Observe`],
/// [`crate::strategy::Step::Retire`]).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub drain: Duration,
}

/// Runs the blue-green deploy of every Deployment together: the strategy's
/// `phases` in order, each step as [`Run::step`] does it on a cluster.
/// Before the commit point a failure or a signal takes the way back
/// ([`Run::way_back`]); past it (the observe window passed) the new colour
/// serves and the old one retires.
pub async fn deploy(cx: Cluster<'_>, work: &Deploy<'_>, timing: Timing, phases: &[Phase]) -> ClusterRun {
    let mut run = Run::new(cx, work, timing);
    let mut committed = false;
    for phase in phases {
        for step in &phase.steps {
            match run.step(step).await {
                Err(stopped) => return run.way_back(stopped).await,
                // Short of the commit point, a signal seen by the end of a
                // step is a way back (the one check: steps end on a signal
                // without checking it again).
                Ok(()) if !committed && cx.cancel.is_cancelled() => return run.way_back(None).await,
                Ok(()) => {}
            }
        }
        committed |= phase.commits;
    }
    run.done()
}

/// Every pair (Deployment, Service, colours) and every worker, read and
/// checked before anything changes; `out` learns the image that served.
async fn read_all(
    client: &kube::Client,
    spec: &KubernetesSpec,
    worker_refs: &[&DeploymentRef],
    runner: &Runner,
    out: &mut ClusterRun,
) -> Result<(Vec<Pair>, Vec<Current>), KubeError> {
    let ns = spec.namespace.as_str();
    let mut pairs = Vec::new();
    let _g =
        runner.group(&format!("Read {} deployment(s) and their Services in {ns}", spec.deployments.len()));
    for r in spec.deployments.iter().filter(|r| !r.worker) {
        let p = read_pair(client, ns, r).await?;
        runner.line(&format!(
            "{}: live {}, candidate {}, {} replica(s)",
            p.service_ref(),
            p.live.map_or_else(|| format!("{} (not yet blue-green)", p.name()), |c| p.colour_name(c)),
            p.candidate_name(),
            p.replicas
        ));
        if out.previous_image.is_none() {
            out.previous_image = p.old_image.clone();
        }
        pairs.push(p);
    }
    autoscaled(client, ns, &pairs).await?;
    let workers = workers::read(client, ns, worker_refs).await?;
    for w in &workers {
        runner.line(&format!(
            "{}: worker (no Service), runs {}; rolled in place once the candidates are ready",
            w.object,
            w.image.as_deref().unwrap_or("(no image)")
        ));
    }
    Ok((pairs, workers))
}

/// Nothing of the pairs changed (or it was all put back): every row
/// `unchanged`, the run rolled back.
fn unchanged(mut out: ClusterRun, pairs: &[Pair]) -> ClusterRun {
    out.units = pairs.iter().map(|p| Unit::unchanged(p.source.object.to_string())).collect();
    out.rolled_back = true;
    out
}

/// Applies every candidate; on the first deploy the live Service is
/// pinned to the source's serving ReplicaSet first.
async fn apply_candidates(
    client: &kube::Client,
    pairs: &[Pair],
    work: &Deploy<'_>,
    runner: &Runner,
) -> Result<(), KubeError> {
    for p in pairs.iter().filter(|p| p.live.is_none()) {
        let hash = serving_hash(client, p).await?.ok_or_else(|| {
            KubeError::Config(format!(
                "{}: no pod of {} serves now; roll it out before adopting it for blue-green",
                p.service_ref(),
                p.source.object
            ))
        })?;
        set_selector(client, &p.service_ref(), &selector_patch(p, None, Some(&hash))).await?;
        let _ = p.pin.set(hash.clone());
        runner.line(&format!(
            "{}: pinned to the serving ReplicaSet ({HASH_LABEL}={hash}) before the candidate starts",
            p.service_ref()
        ));
    }
    let api_of = |ns: &str| -> Api<Deployment> { Api::namespaced(client.clone(), ns) };
    for p in pairs {
        let env_from = apply::env_from(&p.source, work.app, work.secret.as_ref().map(|s| s.name.as_str()));
        let image = p.source.image_to_run(work.image);
        let body = colour_deployment(
            &p.source,
            p.candidate,
            image,
            env_from.as_deref(),
            p.replicas,
            Some(work.deploy_id),
        );
        let name = p.candidate_name();
        api_of(p.ns())
            .patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
            .await
            .map_err(|e| {
            KubeError::from_api(e, "patch", "deployments", "apps", ObjectRef::deployment(p.ns(), &name))
        })?;
        runner.line(&format!("deployment {}/{name}: {} replica(s) of {image}", p.ns(), p.replicas));
    }
    Ok(())
}

/// Watches every candidate's rollout to kubectl's verdict, together; the
/// first failure stops the others. `Err(None)` when cancelled.
async fn watch_candidates(
    client: &kube::Client,
    pairs: &[Pair],
    runner: &Runner,
    cancel: &CancellationToken,
) -> Result<(), Option<KubeError>> {
    let stop = cancel.child_token();
    let watches = pairs.iter().map(|p| {
        let stop = stop.clone();
        async move {
            let r = rollout::watch(client, p.ns(), &p.candidate_name(), runner, &stop).await;
            if r.is_err() {
                stop.cancel();
            }
            r
        }
    });
    let mut first_error = None;
    for r in futures::future::join_all(watches).await {
        if let Err(e) = r {
            first_error.get_or_insert(e);
        }
    }
    match (first_error, cancel.is_cancelled()) {
        (Some(e), _) => Err(Some(e)),
        (None, true) => Err(None),
        (None, false) => Ok(()),
    }
}

#[cfg(test)]
mod tests;
