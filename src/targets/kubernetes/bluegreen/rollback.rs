//! `mode: rollback` of a blue-green deploy: the colour kept at zero
//! brought back, proven, and every Service flipped to it.

use super::*;

/// `mode: rollback`: the old colour back up, every Service flipped to it,
/// the current colour to zero.
pub async fn rollback(
    client: &kube::Client,
    spec: &KubernetesSpec,
    timing: Timing,
    runner: &Runner,
    cancel: &CancellationToken,
) -> ClusterRun {
    let ns = spec.namespace.as_str();
    let mut out = ClusterRun { stage: "rollback", ..Default::default() };
    let started = Instant::now();
    let mut pairs = Vec::new();
    for r in spec.deployments.iter().filter(|r| !r.worker) {
        match read_pair(client, ns, r).await {
            Ok(p) if p.live.is_none() => {
                out.error = Some(KubeError::NoHistory { object: p.source.object.clone() });
                return out;
            }
            Ok(p) => pairs.push(p),
            Err(e) => {
                out.error = Some(e);
                return out;
            }
        }
    }
    // Swap the roles: the candidate is the colour at zero (or, right after
    // the first blue-green deploy, the source kept at zero).
    let _g = runner.group("Rollback: the previous colour back up, then the switch");
    for p in &pairs {
        if let Err(e) = scale(client, ns, &p.back_name(), p.replicas).await {
            out.error = Some(e);
            return out;
        }
    }
    let stop = cancel.child_token();
    for p in &pairs {
        match rollout::watch(client, ns, &p.back_name(), runner, &stop).await {
            Ok(Some(_)) => {}
            Ok(None) => return ClusterRun { cancelled: true, ..out },
            Err(e) => {
                out.error = Some(e);
                return out;
            }
        }
    }
    // Workers have no colours: `kubectl rollout undo` of those the deploy
    // being rolled back rolled, before any Service flips.
    let worker_refs: Vec<&DeploymentRef> = spec.deployments.iter().filter(|r| r.worker).collect();
    if let Some(p) = pairs.first().filter(|_| !worker_refs.is_empty()) {
        let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
        let id_of =
            |d: Option<Deployment>| d.and_then(|d| d.metadata.annotations?.get(workers::ROLLED_BY).cloned());
        let from = id_of(api.get_opt(&p.old_name()).await.ok().flatten());
        let back_to = id_of(api.get_opt(&p.back_name()).await.ok().flatten());
        match workers::roll_back(
            client,
            ns,
            &worker_refs,
            from.as_deref(),
            back_to.as_deref(),
            runner,
            cancel,
        )
        .await
        {
            Ok(rows) => out.units.extend(rows),
            Err(e) => {
                out.error = Some(e);
                return out;
            }
        }
    }
    // A signal before the flip: every Service still on the colour that
    // served (the one brought up stays up, unused).
    if cancel.is_cancelled() {
        return ClusterRun { cancelled: true, ..out };
    }
    if out.restored_image.is_none()
        && let Some(p) = pairs.first()
    {
        let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
        out.previous_image = p.old_image.clone();
        out.restored_image = api
            .get_opt(&p.back_name())
            .await
            .ok()
            .flatten()
            .and_then(|d| apply::container_image(&d, Some(&p.source.container)));
    }
    // The source brought back is selected by its ReplicaSet's hash, as on
    // the first deploy: its bare app labels would select the colours too.
    let mut targets = Vec::new();
    for p in &pairs {
        if p.candidate_existed {
            targets.push((selector_patch(p, Some(p.candidate), None), p.selector_for(p.candidate)));
            continue;
        }
        let hash = match serving_hash(client, p).await {
            Ok(Some(h)) => h,
            Ok(None) => {
                out.error =
                    Some(KubeError::Config(format!("{}: no pod of it became ready", p.source.object)));
                return out;
            }
            Err(e) => {
                out.error = Some(e);
                return out;
            }
        };
        let mut sel = source_labels(&p.source.deployment);
        sel.insert(HASH_LABEL.into(), hash.clone());
        targets.push((selector_patch(p, None, Some(&hash)), sel));
    }
    for (i, p) in pairs.iter().enumerate() {
        if let Err(e) = set_selector(client, &p.service_ref(), &targets[i].0).await {
            // Never half-switched: those already flipped go back.
            let flipped: Vec<&Pair> = pairs[..i].iter().collect();
            if !flip_back(client, &flipped, runner, &WayBack::new(cancel)).await {
                out.units.push((
                    p.source.object.to_string(),
                    "half-switched: see the errors".into(),
                    started.elapsed(),
                ));
            }
            out.error = Some(e);
            return out;
        }
        match p.candidate_existed {
            true => runner.line(&format!("{}: selector now {COLOUR}={}", p.service_ref(), p.candidate)),
            false => runner.line(&format!(
                "{}: selector now {}'s own pods ({HASH_LABEL}={}; it served before the first blue-green deploy)",
                p.service_ref(),
                p.source.object,
                targets[i].1.get(HASH_LABEL).map_or("", String::as_str)
            )),
        }
    }
    for (p, (_, selector)) in pairs.iter().zip(&targets) {
        if let Err(e) = verify_endpoints(client, &p.service_ref(), selector, runner).await {
            out.error = Some(e);
            return out;
        }
    }
    // The colour rolled back from served until the flip: it drains first.
    drain(timing.drain, "the colour rolled back from is scaled to 0", runner, cancel).await;
    for p in &pairs {
        if let Err(e) = scale(client, ns, &p.old_name(), 0).await {
            runner.warning(e.reason(), &format!("the colour rolled back from was not scaled down: {e}"));
        }
        out.units.push((
            p.source.object.to_string(),
            format!("{} live again, {} at 0", p.back_name(), p.old_name()),
            started.elapsed(),
        ));
    }
    out.stage = "done";
    out
}
