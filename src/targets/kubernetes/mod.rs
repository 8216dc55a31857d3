//! `target: kubernetes`: the unit is the cluster's namespace. The cluster
//! rolls the pods itself (the Deployment's rolling update shifts traffic
//! while it launches), so this target does not fit the hosts' launch →
//! verify → switch seam: the pipeline hands it the whole deploy through
//! [`run`], and it reports back a [`ClusterRun`].
//!
//! A deploy: read each Deployment (nothing changes if one is missing,
//! paused or lacks the container) → the app's Secret ([`secret`]) → the
//! migration Job ([`migrate`]) → set the image (and `envFrom`) by
//! server-side apply ([`apply`]) → watch every rollout to kubectl's verdict
//! ([`rollout::watch`]) → on any failure or cancellation, `rollout undo`
//! every Deployment this run changed ([`undo::undo`]).
//! `mode: rollback` is `rollout undo` of each, watched to completion.
//! Blue-green ([`bluegreen`], its workers in [`workers`]) and canary
//! ([`canary`]) have their own files; after any of them is undone past a
//! successful migration, `migrate-rollback-command` runs as a Job
//! (`migrate_back`).

// A failure happens once per run and carries the object's full name; its
// size costs nothing that matters, boxing every one would cost clarity.
#![allow(clippy::result_large_err)]

pub mod access;
pub mod apply;
pub mod bluegreen;
pub mod canary;
pub mod cluster;
mod confirm;
pub mod eks;
pub mod error;
pub mod migrate;
pub mod observe;
pub mod paged;
mod rolling;
pub mod rollout;
pub mod secret;
pub mod steps;
pub mod traffic;
pub mod undo;
pub mod workers;
pub mod workloads;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use error::{KubeError, ObjectRef};

use crate::inputs::manifests::{self, Manifest};
use crate::inputs::{DeploymentRef, KubernetesSpec, Mode, WorkloadKind};
use crate::runner::Runner;
use crate::targets::unit::{Outcome, Unit};
use crate::targets::wayback::{WayBack, migration_back};
pub(crate) use confirm::undo_and_confirm;
use confirm::undo_workload_and_confirm;
use rolling::deploy;
use rollout::Rolled;
use secret::AppSecret;
use undo::Undone;

/// What a deploy brings to the cluster: the image, and the app's secrets
/// and migration.
pub struct Deploy<'a> {
    pub image: &'a str,
    pub app: &'a str,
    /// `<run id>-<attempt>`.
    pub deploy_id: &'a str,
    pub secret: Option<AppSecret>,
    pub migrate_command: Option<&'a [String]>,
    /// Run as its own Job before the migration.
    pub pre_migrate_command: Option<&'a [String]>,
    /// Run as its own Job, from the new image, when the deploy is undone
    /// after its migration succeeded.
    pub migrate_rollback_command: Option<&'a [String]>,
    pub migration_timeout: Duration,
    /// `smoke-tests` (`preview-url` before a blue-green flip, `url` after
    /// the switch).
    pub smoke: Option<&'a dyn UrlChecks>,
    /// Judged through blue-green's observe window and each canary step.
    pub analysis: Option<&'a crate::analysis::Analysis>,
}

impl Deploy<'_> {
    /// The smoke tests of the `preview-url` kind (before a flip) or the
    /// `url` kind (after the switch); `Ok` without any. A signal stops them
    /// at once (a request may take 30 s) and returns `Ok`: the caller
    /// checks `cancel` next, as after every step.
    pub(crate) async fn smoke(
        &self,
        preview: bool,
        runner: &Runner,
        cancel: &CancellationToken,
    ) -> Result<(), KubeError> {
        let Some(s) = self.smoke else { return Ok(()) };
        let _g = runner.group(if preview { "Smoke tests (preview)" } else { "Smoke tests" });
        tokio::select! {
            r = s.check_urls(preview, runner) => r.map_err(KubeError::Smoke),
            () = cancel.cancelled() => {
                runner.line("smoke tests stopped: cancelled");
                Ok(())
            }
        }
    }
}

/// The `smoke-tests` a cluster runs by URL ([`crate::smoke::Suite`]),
/// seen through this trait so that the targets need nothing of the smoke
/// module (which sends its path tests through [`crate::targets::Target`]).
#[async_trait::async_trait]
pub trait UrlChecks: Send + Sync {
    /// The `preview-url` tests (before a flip) or the `url` tests (after
    /// the switch). `Err`: the first failure, without a unit.
    async fn check_urls(&self, preview: bool, runner: &Runner) -> Result<(), String>;
}

/// What every stage of a cluster run works with, passed once: the client,
/// the inputs' `kubernetes` part, the runner and the run's cancellation.
/// The primitives below the flows (`apply`, `rollout`, `undo`) keep their
/// own narrower arguments: they serve every flow and the tests.
#[derive(Clone, Copy)]
pub struct Cluster<'a> {
    pub client: &'a kube::Client,
    pub spec: &'a KubernetesSpec,
    pub runner: &'a Runner,
    pub cancel: &'a CancellationToken,
}

/// The field manager of every write, so `managedFields` shows what the
/// action owns.
pub const FIELD_MANAGER: &str = "deploy-action";

/// How the cluster's part of a run ended.
#[derive(Debug, Default)]
pub struct ClusterRun {
    /// The error that failed the run, if any.
    pub error: Option<KubeError>,
    /// Whether the failure was undone (every changed Deployment rolled back).
    pub rolled_back: bool,
    /// Cancelled (signal or the run's deadline).
    pub cancelled: bool,
    pub stage: &'static str,
    /// The image the first Deployment ran before.
    pub previous_image: Option<String>,
    /// The image the first Deployment runs after a `mode: rollback`.
    pub restored_image: Option<String>,
    /// `(deployment, outcome, duration)` for the summary.
    pub units: Vec<Unit>,
    /// The migration Job succeeded, from this Deployment's pod spec (the
    /// schema may be ahead of the old version if the deploy is undone).
    pub migrated: Option<String>,
}

/// The unit names `mode: plan` prints (nothing is contacted).
pub fn unit_names(spec: &KubernetesSpec) -> Vec<String> {
    spec.deployments.iter().map(|d| format!("deployment {}/{}", spec.namespace, d.name)).collect()
}

/// `mode: plan` on a cluster: every apply as a server-side dry run
/// (`dryRun=All`: admission and conflicts checked, nothing persisted).
/// Returns one line per Deployment saying what would change in the fields
/// the action owns.
///
/// # Errors
/// What the deploy itself would meet first: a missing or paused
/// Deployment, a conflict, a refusal.
pub async fn plan(
    spec: &KubernetesSpec,
    strategy: Strategy,
    app: &str,
    image: Option<&str>,
    runner: &Runner,
) -> Result<Vec<String>, KubeError> {
    let client = cluster::connect(spec).await?;
    let ns = spec.namespace.as_str();
    match (&strategy, image) {
        (Strategy::BlueGreen(..), Some(image)) => {
            return bluegreen::plan(&client, spec, app, image, runner).await;
        }
        (Strategy::Canary(s), Some(image)) => return canary::plan(&client, spec, s, image, runner).await,
        _ => {}
    }
    let mut lines = Vec::new();
    let (before, after) = others(spec);
    for m in &before {
        let o = apply::apply_object(&client, m, ns, runner, true).await?;
        lines.push(format!("{o}: would be applied from {}", m.source));
    }
    for r in &spec.deployments {
        let t = apply::read(&client, ns, r, manifest_of(spec, r)).await?;
        let image = t.image_to_run(image.ok_or_else(|| KubeError::Config("no image to deploy".into()))?);
        let env_from = apply::env_from_as_is(&t, app);
        let changes = apply::set_image(&client, &t, image, env_from.as_deref(), runner, true).await?;
        let was = t.image.as_deref().unwrap_or("(no image)");
        lines.push(match (t.exists, changes) {
            (false, _) => {
                format!("{}: would be created, container {} running {image}", t.object, t.container)
            }
            (true, true) => {
                format!("{}: container {} {was} → {image} (a new revision)", t.object, t.container)
            }
            (true, false) => {
                format!("{}: container {} already runs {image}: nothing to do", t.object, t.container)
            }
        });
    }
    for m in &after {
        let o = apply::apply_object(&client, m, ns, runner, true).await?;
        lines.push(format!("{o}: would be applied from {}", m.source));
    }
    Ok(lines)
}

/// The manifest of a rolled workload, if `manifests`.
fn manifest_of<'a>(spec: &'a KubernetesSpec, r: &DeploymentRef) -> Option<&'a Manifest> {
    spec.manifests.iter().find(|m| m.workload_kind() == Some(r.kind) && m.name() == r.name)
}

/// The namespace a rolled Deployment lives in: its manifest's
/// `metadata.namespace` when it sets one (that is where the apply goes, so
/// it is where the rollout is judged and undone), else the `namespace` input.
fn namespace_of<'a>(spec: &'a KubernetesSpec, r: &DeploymentRef) -> &'a str {
    manifest_of(spec, r).and_then(Manifest::namespace).unwrap_or(&spec.namespace)
}

/// The namespaces of `targets`, each once, in order: where the app's
/// Secret must exist for their templates to refer to it.
fn namespaces_of(targets: &[apply::Current]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for t in targets {
        if !out.contains(&t.object.namespace.as_str()) {
            out.push(&t.object.namespace);
        }
    }
    out
}

/// The manifests' other objects: those applied before the migration
/// (what workloads refer to), and those after the Deployments.
fn others(spec: &KubernetesSpec) -> (Vec<&Manifest>, Vec<&Manifest>) {
    let rolled = |m: &Manifest| {
        m.workload_kind().is_some_and(|k| spec.deployments.iter().any(|d| d.name == m.name() && d.kind == k))
    };
    spec.manifests
        .iter()
        .filter(|m| !rolled(m))
        .partition(|m| manifests::rank(m.kind()) < manifests::WORKLOAD)
}

/// Applies `list` in order; the first failure stops, and so does a
/// signal (checked before each write: the one in flight completes, so
/// what was applied is known). `Ok(false)` when cancelled.
async fn apply_all(
    client: &kube::Client,
    list: &[&Manifest],
    ns: &str,
    runner: &Runner,
    cancel: &CancellationToken,
) -> Result<bool, KubeError> {
    for (i, m) in list.iter().enumerate() {
        if cancel.is_cancelled() {
            runner.line(&format!(
                "cancelled: {} of {} object(s) applied, the rest left as they were",
                i,
                list.len()
            ));
            return Ok(false);
        }
        let o = apply::apply_object(client, m, ns, runner, false).await?;
        runner.line(&format!("{o}: applied ({})", m.source));
        if matches!(m.kind(), "StatefulSet" | "DaemonSet") {
            runner.warning(
                "kube_kind_not_judged",
                &format!(
                    "{o}: applied, not judged: blue-green and canary judge their Deployments only (a rolling deploy judges every workload of the manifests); check it with kubectl rollout status"
                ),
            );
        }
    }
    Ok(true)
}

fn summary(r: &Rolled) -> String {
    format!("revision {}, {}/{} ready", r.revision, r.ready, r.replicas)
}

/// How the new version reaches traffic.
#[derive(Debug, Clone)]
pub enum Strategy {
    /// The Deployment's own rolling update.
    Rolling,
    /// Two colours and a Service selector flip ([`bluegreen`]), run as the
    /// strategy's steps ([`crate::strategy::phases`] over the one unit a
    /// cluster is: the list the hosts' fleet runs).
    BlueGreen(bluegreen::Timing, Vec<crate::strategy::Phase>),
    /// A canary beside the stable, step by step ([`canary`]).
    Canary(canary::Steps),
}

impl Strategy {
    /// `drain-time`, for the strategies that move traffic away from pods
    /// before removing them (zero for a rolling update, which the
    /// Deployment's own rollout paces).
    pub fn drain(&self) -> Duration {
        match self {
            Strategy::Rolling => Duration::ZERO,
            Strategy::BlueGreen(t, _) => t.drain,
            Strategy::Canary(s) => s.drain,
        }
    }
}

/// Runs `mode: deploy` (with `deploy`) or `mode: rollback` on the cluster.
pub async fn run(
    spec: &KubernetesSpec,
    mode: Mode,
    strategy: Strategy,
    deploy_of: Option<&Deploy<'_>>,
    runner: &Runner,
    cancel: &CancellationToken,
) -> ClusterRun {
    let fail = |stage, e| ClusterRun { error: Some(e), stage, ..Default::default() };
    let client = {
        let _g = runner.group("Connect to the cluster");
        match cluster::connect(spec).await {
            Ok(c) => c,
            Err(e) => return fail("connect", e),
        }
    };
    // Every permission the run will use, the way back included, before
    // the first change.
    {
        // Where the Deployments live (a manifest may set its own).
        let mut namespaces: Vec<&str> = Vec::new();
        for r in &spec.deployments {
            let ns = namespace_of(spec, r);
            if !namespaces.contains(&ns) {
                namespaces.push(ns);
            }
        }
        if namespaces.is_empty() {
            namespaces.push(&spec.namespace);
        }
        let rules = access::needed(spec, &namespaces, mode, &strategy, deploy_of);
        if let Err(e) = access::check(&client, &rules, runner).await {
            return ClusterRun { rolled_back: true, ..fail("permissions", e) };
        }
    }
    let cx = Cluster { client: &client, spec, runner, cancel };
    match (mode, deploy_of, &strategy) {
        (Mode::Promote | Mode::Abort, _, _) => {
            canary::decide(cx, mode == Mode::Promote, strategy.drain()).await
        }
        (Mode::Rollback, _, Strategy::BlueGreen(t, _)) => bluegreen::rollback(cx, *t).await,
        (Mode::Rollback, _, _) => match canary::standing_beside(&client, spec).await {
            // The stable never took the canary's version: undoing it would
            // go one release too far back, and leave the canary serving.
            Some((weight, image)) => {
                runner.line(&format!(
                    "deployment {}/{}-canary: a canary of {image} stands at {weight}%: mode 'rollback' removes it (as mode 'abort' does), its share back to the stable Deployment, which is not undone",
                    spec.namespace, spec.deployments[0].name
                ));
                canary::decide(cx, false, strategy.drain()).await
            }
            None => rollback_mode(cx).await,
        },
        (_, Some(d), strategy) => {
            let out = match strategy {
                Strategy::BlueGreen(t, phases) => bluegreen::deploy(cx, d, *t, phases).await,
                Strategy::Canary(s) => canary::deploy(cx, d, s).await,
                Strategy::Rolling => deploy(cx, d).await,
            };
            migrate_back(cx, d, out).await
        }
        (_, None, _) => fail("validate", KubeError::Config("no image to deploy".into())),
    }
}

/// `migrate-rollback-command` as a Job from the new image, when the deploy
/// was undone (traffic back on the old version) after its migration
/// succeeded. Its failure is loud but undoes nothing; after a signal there
/// is no time for a Job, so it is named for a person to run.
async fn migrate_back(cx: Cluster<'_>, work: &Deploy<'_>, mut out: ClusterRun) -> ClusterRun {
    let Cluster { client, spec, runner, cancel } = cx;
    let Some(command) = work.migrate_rollback_command else { return out };
    let undone = out.rolled_back && (out.error.is_some() || out.cancelled);
    // The Deployment the migration ran from, and so its image.
    let from_name = out.migrated.clone().filter(|_| undone);
    let Some(first) = from_name.and_then(|n| spec.deployments.iter().find(|d| d.name == n)) else {
        return out;
    };
    let started = Instant::now();
    let name = migrate::job_name(work.app, "migrate-rollback", work.deploy_id);
    let object = ObjectRef::new("job", &spec.namespace, &name);
    let image = first.image.as_deref().unwrap_or(work.image);
    let by_hand = format!("run {} from {image} by hand", migrate::shown(command));
    let result = migration_back(&object.to_string(), &by_hand, runner, cancel, async {
        match apply::read(client, &spec.namespace, first, manifest_of(spec, first)).await {
            Err(e) => Err(e.to_string()),
            Ok(_) if cancel.is_cancelled() => Err(format!("cancelled before it could run; {by_hand}")),
            Ok(from) => {
                let job = migrate::Migration {
                    app: work.app,
                    deploy_id: work.deploy_id,
                    kind: "migrate-rollback",
                    command,
                    image: from.image_to_run(work.image),
                    timeout: work.migration_timeout,
                    secret: work.secret.as_ref().map(|s| s.name.as_str()),
                };
                match migrate::run(client, &job, &from, runner, cancel).await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(format!("cancelled while it ran (the Job was deleted); {by_hand}")),
                    Err(e) => Err(e.to_string()),
                }
            }
        }
    })
    .await;
    let outcome = match result {
        Ok(()) => Outcome::RolledBack("migration rolled back".into()),
        Err(why) => Outcome::Failed(format!("failed: {why}")),
    };
    out.units.push(Unit::new(object.to_string(), outcome, started.elapsed()));
    out
}

/// `migrate-command`, if any, as a Job from the new image with `from`'s pod
/// spec, before any strategy moves traffic. `Ok(false)` when cancelled.
///
/// # Errors
/// The migration's failure ([`KubeError::Migration`]) or a refusal.
pub(crate) async fn migrate_first(
    cx: Cluster<'_>,
    work: &Deploy<'_>,
    from: &apply::Current,
) -> Result<bool, KubeError> {
    let Cluster { client, runner, cancel, .. } = cx;
    let Some(command) = work.migrate_command else { return Ok(true) };
    let job = |kind, command| migrate::Migration {
        app: work.app,
        deploy_id: work.deploy_id,
        kind,
        command,
        image: from.image_to_run(work.image),
        timeout: work.migration_timeout,
        secret: work.secret.as_ref().map(|s| s.name.as_str()),
    };
    if let Some(pre) = work.pre_migrate_command {
        let _g = runner.group("pre-migrate-command (Job)");
        if !migrate::run(client, &job("pre-migrate", pre), from, runner, cancel).await? {
            return Ok(false);
        }
    }
    let _g = runner.group("Migration (Job)");
    migrate::run(client, &job("migrate", command), from, runner, cancel).await
}

/// What `r`'s container runs in the cluster now (`None` when unreadable).
async fn live_image(client: &kube::Client, r: &DeploymentRef, ns: &str) -> Option<String> {
    match r.kind {
        WorkloadKind::Deployment => {
            let d = Api::<Deployment>::namespaced(client.clone(), ns).get(&r.name).await.ok()?;
            apply::container_image(&d, r.container.as_deref())
        }
        kind => {
            let s = workloads::get(client, kind, ns, &r.name).await.ok()??;
            apply::template_image(&s.template, r.container.as_deref())
        }
    }
}

async fn rollback_mode(cx: Cluster<'_>) -> ClusterRun {
    let Cluster { client, spec, runner, cancel } = cx;
    let mut out = ClusterRun { stage: "rollback", ..Default::default() };
    let _g = runner.group("Rollback (kubectl rollout undo)");
    for r in &spec.deployments {
        let ns = namespace_of(spec, r);
        let object = ObjectRef::new(r.kind.as_str(), ns, &r.name);
        let started = Instant::now();
        if out.previous_image.is_none() {
            out.previous_image = live_image(client, r, ns).await;
        }
        // kubectl rollout undo: a Deployment's previous ReplicaSet, a
        // StatefulSet's or DaemonSet's second-newest ControllerRevision.
        let undone = tokio::select! {
            u = async {
                match r.kind {
                    WorkloadKind::Deployment => undo::undo(client, ns, &r.name).await,
                    kind => workloads::undo(client, kind, ns, &r.name, None).await,
                }
            } => u,
            _ = cancel.cancelled() => return ClusterRun { cancelled: true, ..out },
        };
        match undone {
            Ok(Undone::RolledBack { revision, template }) => {
                runner.line(&format!("{object}: rolled back to revision {revision}"));
                // The deployed container's image (not a sidecar listed first).
                if out.restored_image.is_none() {
                    out.restored_image = apply::template_image(&template, r.container.as_deref());
                }
            }
            Ok(Undone::Skipped { revision }) => runner.line(&format!(
                "{object}: skipped rollback (current template already matches revision {revision})"
            )),
            Err(e) => {
                // Not undone: the rollback failed, whatever runs there.
                let refused = Outcome::Failed(format!("refused: {}", e.reason()));
                out.units.push(Unit::new(object.to_string(), refused, started.elapsed()));
                out.error = Some(e);
                return out;
            }
        }
        let watched = match r.kind {
            WorkloadKind::Deployment => rollout::watch(client, ns, &r.name, runner, cancel).await,
            kind => workloads::watch(client, kind, ns, &r.name, None, runner, cancel).await,
        };
        match watched {
            Ok(Some(rolled)) => out.units.push(Unit::new(
                object.to_string(),
                Outcome::RolledBack(format!("rolled back: {}", summary(&rolled))),
                started.elapsed(),
            )),
            Ok(None) => return ClusterRun { cancelled: true, ..out },
            Err(e) => {
                let failed = Outcome::Failed(format!("failed: {}", e.reason()));
                out.units.push(Unit::new(object.to_string(), failed, started.elapsed()));
                out.error = Some(e);
                return out;
            }
        }
    }
    out.stage = "done";
    out
}

/// A mocked API server for the unit tests.
#[cfg(test)]
pub(crate) mod mock;
