//! `strategy: rolling` on a cluster, stage by stage: every workload read
//! (nothing changed yet), what must come before the images (dry run, the
//! manifests' objects, the Secret, the migration), the images applied,
//! every rollout watched to kubectl's verdict, the smoke tests; then done,
//! or every change undone as `kubectl rollout undo` would.

use super::*;

/// A rolling deploy, stage by stage: read every workload (nothing changed
/// yet), everything that must come before the images (dry run, manifests'
/// objects, the Secret, the migration), the images applied, every rollout
/// watched to its verdict, the smoke tests; then either done or every
/// change undone as `kubectl rollout undo` would.
pub(super) async fn deploy(cx: Cluster<'_>, work: &Deploy<'_>) -> ClusterRun {
    let Cluster { client, spec, runner, cancel } = cx;
    let mut out = ClusterRun { stage: "inspect", ..Default::default() };
    let Some(targets) = read_targets(cx, &mut out).await else { return out };
    if !before_the_images(cx, work, &targets, &mut out).await {
        return unchanged(out, &targets);
    }

    out.stage = "apply";
    let (_, after) = others(spec);
    let (changed, applied) = apply_images(cx, work, &targets, &mut out).await;
    if out.error.is_none() && !cancel.is_cancelled() && !after.is_empty() {
        let _g = runner.group(&format!("Apply {} more object(s) from the manifests", after.len()));
        // Cancelled: the check after the rollout's turns back what changed.
        if let Err(e) = apply_all(client, &after, &spec.namespace, runner, cancel).await {
            out.error = Some(e);
        }
    }

    let mut verdicts = Vec::new();
    if out.error.is_none() && !cancel.is_cancelled() {
        out.stage = "rollout";
        verdicts = watch_all(cx, &targets, &applied).await;
        out.error = verdicts.iter().find_map(|(r, _)| r.as_ref().err().cloned());
    }
    // The live address answers as the smoke tests expect, or it all goes back.
    if out.error.is_none() && !cancel.is_cancelled() {
        out.stage = "smoke";
        if let Err(e) = work.smoke(false, runner, cancel).await {
            out.error = Some(e);
        }
    }
    out.cancelled = cancel.is_cancelled() && out.error.is_none();
    if out.error.is_none() && !out.cancelled {
        return succeeded(cx, work, &targets, &verdicts, out).await;
    }
    if changed.is_empty() {
        return unchanged(out, &targets);
    }
    undo_changed(cx, &targets, &changed, &verdicts, out).await
}

/// Every workload named, read before anything changes: a missing one
/// (without a manifest to create it), a paused one or one without the
/// container stops the deploy here. `None`: stopped (`out` says why).
pub(super) async fn read_targets(cx: Cluster<'_>, out: &mut ClusterRun) -> Option<Vec<apply::Current>> {
    let Cluster { client, spec, runner, cancel } = cx;
    let ns = spec.namespace.as_str();
    let mut targets = Vec::new();
    let _g = runner.group(&format!("Read {} deployment(s) in {ns}", spec.deployments.len()));
    for r in &spec.deployments {
        let got = tokio::select! {
            g = apply::read(client, ns, r, manifest_of(spec, r)) => g,
            _ = cancel.cancelled() => {
                out.cancelled = true;
                return None;
            }
        };
        let t = match got {
            Ok(t) => t,
            Err(e) => {
                out.error = Some(e);
                return None;
            }
        };
        if !t.exists {
            runner.line(&format!("{}: not in the cluster yet; the manifest creates it", t.object));
            targets.push(t);
            continue;
        }
        if t.object.namespace != ns {
            runner.line(&format!(
                "{}: the manifest sets metadata.namespace {} (the 'namespace' input is {ns}): applied, judged and undone in {}",
                t.object, t.object.namespace, t.object.namespace
            ));
        }
        runner.line(&format!(
            "{}: container {} runs {}, revision {}",
            t.object,
            t.container,
            t.image.as_deref().unwrap_or("(no image)"),
            t.revision.as_deref().unwrap_or("none")
        ));
        if out.previous_image.is_none() {
            out.previous_image = t.image.clone();
        }
        targets.push(t);
    }
    Some(targets)
}

/// A run that changed no workload: every one `unchanged`, nothing to undo.
pub(super) fn unchanged(mut out: ClusterRun, targets: &[apply::Current]) -> ClusterRun {
    out.units = targets.iter().map(|t| Unit::unchanged(t.object.to_string())).collect();
    out.rolled_back = true;
    out
}

/// What must hold or exist before any image changes: every image apply as
/// a server-side dry run (a field another tool applies, or a Role without
/// `patch`, is refused here, before anything changes), the manifests'
/// objects that workloads refer to, the app's Secret in each namespace a
/// workload lives in, and the migration. `false`: stopped (`out` says
/// why); no workload changed.
pub(super) async fn before_the_images(
    cx: Cluster<'_>,
    work: &Deploy<'_>,
    targets: &[apply::Current],
    out: &mut ClusterRun,
) -> bool {
    let Cluster { client, spec, runner, cancel } = cx;
    for t in targets.iter().filter(|t| t.exists) {
        let env_from = apply::env_from(t, work.app, work.secret.as_ref().map(|s| s.name.as_str()));
        let checked = tokio::select! {
            c = apply::set_image(client, t, t.image_to_run(work.image), env_from.as_deref(), runner, true) => c,
            _ = cancel.cancelled() => {
                out.cancelled = true;
                return false;
            }
        };
        if let Err(e) = checked {
            out.error = Some(e);
            return false;
        }
    }

    // The manifests' objects that workloads refer to (Namespace, RBAC,
    // ConfigMaps, Services...), before the migration needs them.
    let (before, _) = others(spec);
    if !before.is_empty() {
        out.stage = "apply";
        let _g = runner.group(&format!("Apply {} object(s) from the manifests", before.len()));
        if !went_on(out, apply_all(client, &before, &spec.namespace, runner, cancel).await) {
            return false;
        }
    }

    // The app's Secret, before any template refers to it: in each
    // namespace a rolled Deployment lives in (a manifest may set its own).
    if let Some(s) = &work.secret {
        out.stage = "secrets";
        for sns in namespaces_of(targets) {
            let _g = runner.group(&format!("Secret {sns}/{} ({} value(s) from SSM)", s.name, s.data.len()));
            match secret::ensure(client, sns, s, false).await {
                Ok(true) => runner.line(&format!("secret {sns}/{}: created (immutable)", s.name)),
                Ok(false) => runner.line(&format!("secret {sns}/{}: exists (same secret versions)", s.name)),
                Err(e) => {
                    out.error = Some(e);
                    return false;
                }
            }
        }
    }

    // The migration, before anything rolls.
    if let Some(first) = targets.first() {
        out.stage = "migrate";
        if !went_on(out, migrate_first(cx, work, first).await) {
            return false;
        }
        out.migrated = work.migrate_command.and(Some(first.object.name.clone()));
    }
    true
}

/// A step that ends `Ok(true)` (done), `Ok(false)` (cancelled) or with an
/// error, recorded in `out`: whether the deploy goes on.
fn went_on(out: &mut ClusterRun, step: Result<bool, KubeError>) -> bool {
    match step {
        Ok(true) => true,
        Ok(false) => {
            out.cancelled = true;
            false
        }
        Err(e) => {
            out.error = Some(e);
            false
        }
    }
}

/// The template each apply left, by target: the rollout its watch pins.
pub(super) type Applied = Vec<Option<k8s_openapi::api::core::v1::PodTemplateSpec>>;

/// Sets each workload's image by server-side apply, stopping at the first
/// failure (in `out`) or a signal. Returns the workloads whose template
/// changed (the ones to undo) and the template each apply left.
pub(super) async fn apply_images<'t>(
    cx: Cluster<'_>,
    work: &Deploy<'_>,
    targets: &'t [apply::Current],
    out: &mut ClusterRun,
) -> (Vec<&'t apply::Current>, Applied) {
    let Cluster { client, runner, cancel, .. } = cx;
    let mut changed = Vec::new();
    let mut applied: Applied = vec![None; targets.len()];
    let _g = runner.group(&format!("Set the image (server-side apply, field manager {FIELD_MANAGER})"));
    for (i, t) in targets.iter().enumerate() {
        if cancel.is_cancelled() {
            break;
        }
        let env_from = apply::env_from(t, work.app, work.secret.as_ref().map(|s| s.name.as_str()));
        let image = t.image_to_run(work.image);
        match apply::set_image_applied(client, t, image, env_from.as_deref(), runner, false).await {
            Ok((true, template)) => {
                applied[i] = template;
                changed.push(t);
            }
            Ok((false, template)) => {
                applied[i] = template;
                runner.line(&format!("{}: already runs {image}", t.object));
            }
            Err(e) => {
                out.error = Some(e);
                break;
            }
        }
    }
    (changed, applied)
}

/// One rollout's verdict and how long it took to reach it.
pub(super) type Verdict = (Result<Option<Rolled>, KubeError>, Duration);

/// Watches every rollout at once, each pinned to the template this run
/// applied, as `kubectl rollout status` judges its kind; the first failure
/// stops the others.
pub(super) async fn watch_all(
    cx: Cluster<'_>,
    targets: &[apply::Current],
    applied: &Applied,
) -> Vec<Verdict> {
    let Cluster { client, runner, cancel, .. } = cx;
    let _g = runner.group("Rollout");
    let stop = cancel.child_token();
    let watches = targets.iter().zip(applied).map(|(t, pinned)| {
        let stop = stop.clone();
        async move {
            let started = Instant::now();
            let (ns, name) = (&t.object.namespace, &t.object.name);
            let r = match t.kind {
                WorkloadKind::Deployment => {
                    rollout::watch_applied(client, ns, name, pinned.as_ref(), runner, &stop).await
                }
                kind => workloads::watch(client, kind, ns, name, pinned.as_ref(), runner, &stop).await,
            };
            if r.is_err() {
                stop.cancel();
            }
            (r, started.elapsed())
        }
    });
    futures::future::join_all(watches).await
}

/// Every rollout succeeded: the Secrets no revision uses any more are
/// removed (a failure there fails nothing), and each workload's verdict is
/// its unit's note.
pub(super) async fn succeeded(
    cx: Cluster<'_>,
    work: &Deploy<'_>,
    targets: &[apply::Current],
    verdicts: &[Verdict],
    mut out: ClusterRun,
) -> ClusterRun {
    let Cluster { client, runner, .. } = cx;
    out.stage = "done";
    if work.secret.is_some() || targets.iter().any(|t| apply::env_from_as_is(t, work.app).is_some()) {
        for sns in namespaces_of(targets) {
            match secret::collect_garbage(client, sns, work.app).await {
                Ok(gone) if !gone.is_empty() => {
                    runner.line(&format!("removed superseded secret(s): {}", gone.join(", ")))
                }
                Ok(_) => {}
                Err(e) => runner.warning(e.reason(), &format!("superseded secrets not removed: {e}")),
            }
        }
    }
    out.units = targets
        .iter()
        .zip(verdicts)
        .map(|(t, (r, d))| {
            let outcome = match r {
                Ok(Some(r)) => Outcome::Deployed(format!("rolled out: {}", summary(r))),
                _ => Outcome::Failed("unknown".into()),
            };
            Unit::new(t.object.to_string(), outcome, *d)
        })
        .collect();
    out
}

/// Failure or cancellation: undoes what this run changed, as kubectl
/// would, within the way back after a signal. A workload someone else took
/// over is left as they set it; one this run created has no revision to
/// go back to. `rolled_back` only when every change was undone.
pub(super) async fn undo_changed(
    cx: Cluster<'_>,
    targets: &[apply::Current],
    changed: &[&apply::Current],
    verdicts: &[Verdict],
    mut out: ClusterRun,
) -> ClusterRun {
    let Cluster { client, runner, cancel, .. } = cx;
    let msg = match &out.error {
        Some(e) => format!("rolling back after: {e}"),
        None => "cancelled: rolling back".into(),
    };
    let _g = runner.group("Rollback (kubectl rollout undo)");
    runner.line(&msg);
    let way = WayBack::new(cancel);
    let mut all_undone = true;
    for t in targets {
        let was_changed = changed.iter().any(|c| c.object == t.object);
        if !was_changed {
            out.units.push(Unit::unchanged(t.object.to_string()));
            continue;
        }
        let taken = verdicts.iter().zip(targets).find_map(|((r, _), vt)| match r {
            Err(e @ KubeError::TakenOver { by, .. }) if vt.object == t.object => Some((e, by)),
            _ => None,
        });
        if let Some((e, by)) = taken {
            // Someone else's template now: an undo would undo their change.
            runner.warning(e.reason(), &format!("{}: not rolled back: left as {by} set it", t.object));
            let theirs = Outcome::Unchanged(format!("changed by {by}; left as it is"));
            out.units.push(Unit::new(t.object.to_string(), theirs, Duration::ZERO));
            all_undone = false;
            continue;
        }
        if !t.exists {
            // Nothing ran before it: there is no revision to go back to.
            runner.warning(
                "rollback_not_possible",
                &format!(
                    "{}: created by this run, no earlier revision to roll back to; left as it is",
                    t.object
                ),
            );
            out.units.push(Unit::new(
                t.object.to_string(),
                Outcome::Failed("created, failing: no earlier revision".into()),
                Duration::ZERO,
            ));
            // The new version still runs there: not all went back.
            all_undone = false;
            continue;
        }
        let started = Instant::now();
        let outcome = match t.kind {
            WorkloadKind::Deployment => {
                undo_and_confirm(client, &t.object.namespace, &t.object.name, runner, &way).await
            }
            _ => undo_workload_and_confirm(client, t, runner, &way).await,
        };
        all_undone &= matches!(outcome, Outcome::RolledBack(_));
        out.units.push(Unit::new(t.object.to_string(), outcome, started.elapsed()));
    }
    out.rolled_back = all_undone;
    out
}
