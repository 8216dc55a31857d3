//! `strategy: blue-green` on a cluster: the new version is proven before
//! traffic moves, and the move is verified through what the endpoint
//! controller computed.
//!
//! For each Deployment `web` of `deployments` or a services file (the
//! template: its pod spec, replicas and selector), and its live Service (of
//! the same name, or the one the file names):
//!
//! 1. the candidate colour, `web-blue` or `web-green` (the one the Service
//!    does not select), is applied from `web`'s spec with the new image and
//!    the label `deploy-action/colour` in its selector and pods, and rolled
//!    out until every replica is available (kubectl's verdict, watched);
//! 2. an optional preview Service (`web-preview`, or the file's) is pointed at it, and its
//!    EndpointSlices must list the candidate's ready pods and no others;
//! 3. once every candidate is ready, every live Service's selector flips to
//!    the candidate colour (all of them, never cut half-way), and each
//!    Service's EndpointSlices must then list exactly the candidate's ready
//!    pods;
//! 4. the observe window watches the candidates; then, after `drain-time`,
//!    the old colour is scaled to zero and kept, for an instant flip back.
//!
//! A worker (`proxy: false`: no Service) has nothing to flip; it is rolled
//! in place between steps 1 and 2 and undone with any way back
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
use super::rollout::{self, HASH_LABEL, Rolled};
use super::secret::MANAGED_BY;
use super::{Cluster, ClusterRun, Deploy, FIELD_MANAGER, workers};
use crate::inputs::{DeploymentRef, KubernetesSpec};
use crate::runner::Runner;
use crate::targets::unit::{Outcome, Unit};
use crate::targets::wayback::{WayBack, drain};

mod back;
mod endpoints;
mod pair;
mod plan;
mod rollback;

use back::*;
use endpoints::*;
pub use pair::colour_deployment;
use pair::*;
pub use plan::plan;
pub use rollback::rollback;

pub const COLOUR: &str = "deploy-action/colour";
/// How long the endpoint controller gets to show a selector change.
const ENDPOINTS_WITHIN: Duration = Duration::from_secs(30);
/// Retiring the candidates is clean-up, last on the way back: bounded
/// (after a signal, by what is left of the way back), failure only warns.
const RETIRE_WITHIN: Duration = Duration::from_secs(45);

/// Observe window and drain, from the rollout inputs.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub observe: Duration,
    pub drain: Duration,
}

/// Runs the blue-green deploy of every Deployment together.
pub async fn deploy(cx: Cluster<'_>, work: &Deploy<'_>, timing: Timing) -> ClusterRun {
    let Cluster { client, spec, runner, cancel } = cx;
    let ns = spec.namespace.as_str();
    let mut out = ClusterRun { stage: "inspect", ..Default::default() };
    let started = Instant::now();
    // Read everything first; a missing Service or a selector that does not
    // fit changes nothing.
    let worker_refs: Vec<&DeploymentRef> = spec.deployments.iter().filter(|r| r.worker).collect();
    let (pairs, workers) = match read_all(client, spec, &worker_refs, runner, &mut out).await {
        Ok(read) => read,
        Err(e) => return ClusterRun { error: Some(e), rolled_back: true, ..out },
    };
    if let Some(s) = &work.secret {
        out.stage = "secrets";
        if let Err(e) = super::secret::ensure(client, ns, s, false).await {
            return unchanged(ClusterRun { error: Some(e), ..out }, &pairs);
        }
    }
    if let Some(first) = pairs.first() {
        out.stage = "migrate";
        match super::migrate_first(cx, work, &first.source).await {
            Ok(true) => out.migrated = work.migrate_command.and(Some(first.source.object.name.clone())),
            Ok(false) => return ClusterRun { cancelled: true, ..unchanged(out, &pairs) },
            Err(e) => return unchanged(ClusterRun { error: Some(e), ..out }, &pairs),
        }
    }

    // 1. The candidates, all at once.
    out.stage = "candidate";
    let result = {
        let _g = runner.group("Candidates (the new colour, not serving)");
        prepare(client, &pairs, work, runner, cancel).await
    };
    let way = WayBack::new(cancel);
    if let Err(e) = result {
        let cancelled = cancel.is_cancelled() && e.is_none();
        out.error = e;
        out.cancelled = cancelled;
        let _g = runner.group("Rollback: candidates to zero (no selector was changed)");
        retire_candidates(client, &pairs, runner, &way).await;
        return unchanged(out, &pairs);
    }

    // 1b. The workers, in place, now that every candidate is ready.
    let rolled = if workers.is_empty() {
        Vec::new()
    } else {
        out.stage = "workers";
        let roll = {
            let _g =
                runner.group(&format!("Workers (no Service to flip): {} rolled in place", workers.len()));
            workers::roll(client, ns, &worker_refs, work, runner, cancel).await
        };
        match roll {
            Ok(rolled) => rolled,
            Err((e, changed)) => {
                out.cancelled = cancel.is_cancelled() && e.is_none();
                out.error = e;
                let mut out = unchanged(out, &pairs);
                back_out(client, &pairs, &changed, &mut out, Duration::ZERO, runner, &way).await;
                return out;
            }
        }
    };
    let flip = Flip { client, spec, work, timing, pairs: &pairs, rolled: &rolled, runner, way: &way };
    let mut out = flip.flip_and_observe(out, started).await;
    if out.error.is_none() && !out.cancelled {
        out.units.extend(workers::rows(&rolled));
    }
    out
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

/// What steps 2 to 4 work on, once every candidate (and worker) is ready.
#[derive(Clone, Copy)]
struct Flip<'a> {
    client: &'a kube::Client,
    spec: &'a KubernetesSpec,
    work: &'a Deploy<'a>,
    timing: Timing,
    pairs: &'a [Pair],
    /// The workers this run rolled, undone on every way back.
    rolled: &'a [workers::Rolled],
    runner: &'a Runner,
    way: &'a WayBack<'a>,
}

impl Flip<'_> {
    /// Each preview Service to its candidate, its endpoints proven, then
    /// the smoke tests through the previews. `Err(None)`: a signal.
    async fn previews(&self) -> Result<(), Option<KubeError>> {
        let Flip { client, spec, work, pairs, runner, way, .. } = *self;
        let cancel = way.cancel();
        let ns = spec.namespace.as_str();
        for p in pairs.iter().filter(|p| p.preview.is_some()) {
            let preview = p.preview.as_ref().and_then(|s| s.metadata.name.clone()).unwrap_or_default();
            let pv = ObjectRef::new("service", ns, &preview);
            let _g = runner.group(&format!("Preview {pv}"));
            let sel: BTreeMap<String, Option<String>> =
                p.selector_for(p.candidate).into_iter().map(|(k, v)| (k, Some(v))).collect();
            let checked = async {
                set_selector(client, &pv, &sel).await?;
                verify_endpoints(client, &pv, &p.selector_for(p.candidate), runner).await
            };
            // A signal ends the wait for the preview's endpoints at once.
            tokio::select! {
                r = checked => { r?; }
                () = cancel.cancelled() => break,
            };
        }
        if cancel.is_cancelled() {
            return Err(None);
        }
        work.smoke(true, runner, cancel).await?;
        if cancel.is_cancelled() {
            return Err(None);
        }
        Ok(())
    }

    /// Every live Service to the new colour, then each one's endpoints
    /// proven. On a failure or a signal (`None`), the Services flipped so
    /// far, for the way back.
    async fn switch(&self) -> Result<(), (Option<KubeError>, Vec<&Pair>)> {
        let Flip { client, pairs, runner, way, .. } = *self;
        let cancel = way.cancel();
        let _g = runner.group("Switch: every live Service to the new colour");
        let mut flipped = Vec::new();
        let mut failed = None;
        for p in pairs {
            let patch = selector_patch(p, Some(p.candidate), None);
            match set_selector(client, &p.service_ref(), &patch).await {
                Ok(()) => {
                    runner.line(&format!("{}: selector now {COLOUR}={}", p.service_ref(), p.candidate));
                    flipped.push(p);
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if failed.is_none() {
            for p in pairs {
                let (service, selector) = (p.service_ref(), p.selector_for(p.candidate));
                let verified = tokio::select! {
                    v = verify_endpoints(client, &service, &selector, runner) => v,
                    // After a signal: back at once, unverified.
                    _ = cancel.cancelled() => break,
                };
                if let Err(e) = verified {
                    failed = Some(e);
                    break;
                }
            }
        }
        match (failed, cancel.is_cancelled()) {
            (Some(e), _) => Err((Some(e), flipped)),
            (None, true) => Err((None, flipped)),
            (None, false) => Ok(()),
        }
    }

    /// Steps 2 to 4: previews, the flip, smoke tests and the observe window,
    /// the old colour retired.
    async fn flip_and_observe(&self, mut out: ClusterRun, started: Instant) -> ClusterRun {
        let Flip { client, spec, work, timing, pairs, runner, way, .. } = *self;
        let cancel = way.cancel();
        let ns = spec.namespace.as_str();
        // 2. Previews, then the smoke tests of the candidates.
        if let Err(e) = self.previews().await {
            out.cancelled = e.is_none();
            out.error = e;
            return self.not_flipped(out).await;
        }

        // 3. The flip, every Service, never cut half-way.
        out.stage = "switch";
        let flipped = self.switch().await;
        if let Err((e, flipped)) = flipped {
            out.cancelled = e.is_none();
            out.error = e;
            return self.switch_back(out, &flipped, started).await;
        }

        // 4. Smoke tests on the live address, observe, then drain and scale
        // the old colour to zero.
        out.stage = "observe";
        let observed = match work.smoke(false, runner, cancel).await {
            Err(e) => Err(Some(e)),
            Ok(()) => {
                let _g = runner.group(&format!("Observe {}s", timing.observe.as_secs()));
                observe(client, pairs, timing.observe, work.analysis, runner, cancel).await
            }
        };
        if observed.is_err() || cancel.is_cancelled() {
            out.error = observed.err().flatten();
            out.cancelled = cancel.is_cancelled() && out.error.is_none();
            let all: Vec<&Pair> = pairs.iter().collect();
            return self.switch_back(out, &all, started).await;
        }
        out.stage = "retire";
        {
            let _g = runner.group("Retire the old colour");
            drain(timing.drain, "the old colour is scaled to 0", runner, cancel).await;
            for p in pairs {
                match scale(client, ns, &p.old_name(), 0).await {
                    Ok(()) => runner.line(&format!(
                        "deployment {ns}/{}: scaled to 0 (kept for a flip back)",
                        p.old_name()
                    )),
                    Err(e) => runner.warning(e.reason(), &format!("the old colour was not scaled down: {e}")),
                }
            }
        }
        out.stage = "done";
        out.units = pairs
            .iter()
            .map(|p| {
                let note =
                    format!("{} live ({} replica(s)), {} at 0", p.candidate_name(), p.replicas, p.old_name());
                Unit::new(p.source.object.to_string(), Outcome::Deployed(note), started.elapsed())
            })
            .collect();
        if work.secret.is_some()
            && let Ok(gone) = super::secret::collect_garbage(client, ns, work.app).await
            && !gone.is_empty()
        {
            runner.line(&format!("removed superseded secret(s): {}", gone.join(", ")));
        }
        out
    }

    /// A failure or a signal before any flip: the workers undone, the
    /// candidates to zero, every Service as it was.
    async fn not_flipped(&self, out: ClusterRun) -> ClusterRun {
        let mut out = unchanged(out, self.pairs);
        back_out(self.client, self.pairs, self.rolled, &mut out, Duration::ZERO, self.runner, self.way).await;
        out
    }

    /// After a failure or a signal past the flip: the `flipped` Services back
    /// to the old colour first, then the workers undone, then every candidate
    /// to zero.
    async fn switch_back(&self, mut out: ClusterRun, flipped: &[&Pair], started: Instant) -> ClusterRun {
        out.rolled_back = flip_back(self.client, flipped, self.runner, self.way).await;
        let back = match out.rolled_back {
            true => Outcome::RolledBack("switched back".into()),
            false => Outcome::Failed("not switched back: see the errors".into()),
        };
        out.units = self
            .pairs
            .iter()
            .map(|p| Unit::new(p.source.object.to_string(), back.clone(), started.elapsed()))
            .collect();
        // Candidates that took traffic drain before they go.
        let drain = if flipped.is_empty() { Duration::ZERO } else { self.timing.drain };
        back_out(self.client, self.pairs, self.rolled, &mut out, drain, self.runner, self.way).await;
        out
    }
}

/// Applies and rolls out every candidate; on the first deploy the live
/// Service is pinned to the source's serving ReplicaSet first. `Err(None)`
/// when cancelled.
async fn prepare(
    client: &kube::Client,
    pairs: &[Pair],
    work: &Deploy<'_>,
    runner: &Runner,
    cancel: &CancellationToken,
) -> Result<(), Option<KubeError>> {
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
        match r {
            Ok(Some(Rolled { .. })) => {}
            Ok(None) => {}
            Err(e) if first_error.is_none() => first_error = Some(e),
            Err(_) => {}
        }
    }
    match (first_error, cancel.is_cancelled()) {
        (Some(e), _) => Err(Some(e)),
        (None, true) => Err(None),
        (None, false) => Ok(()),
    }
}

/// Watches every candidate through the window (see [`observe::window`]).
async fn observe(
    client: &kube::Client,
    pairs: &[Pair],
    window: Duration,
    analysis: Option<&crate::analysis::Analysis>,
    runner: &Runner,
    cancel: &CancellationToken,
) -> Result<(), Option<KubeError>> {
    let watched: Vec<ObjectRef> =
        pairs.iter().map(|p| ObjectRef::deployment(p.ns(), &p.candidate_name())).collect();
    let end = Instant::now() + window;
    super::observe::window(client, &watched, end, "after the switch", analysis, runner, cancel).await
}

#[cfg(test)]
mod tests;
