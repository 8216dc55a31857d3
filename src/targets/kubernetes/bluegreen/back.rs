//! The way back of a blue-green deploy: before the flip, the candidates
//! out; after it, every Service flipped back, drained, then the
//! candidates retired.

use super::*;

/// The way back short of a flip, or once the Services went back: the
/// workers this run rolled undone first (they serve with the Services),
/// then, after `drain` (non-zero once the candidates took traffic), every
/// candidate to zero (serving nothing: the clean-up, last).
pub(super) async fn back_out(
    client: &kube::Client,
    pairs: &[Pair],
    rolled: &[workers::Rolled],
    out: &mut ClusterRun,
    drain_for: Duration,
    runner: &Runner,
    way: &WayBack<'_>,
) {
    if !rolled.is_empty() {
        let _g = runner.group("Rollback: workers undone");
        let (back, rows) = workers::undo(client, rolled, runner, way).await;
        out.rolled_back &= back;
        out.units.extend(rows);
    }
    let _g = runner.group("Rollback: candidates to zero");
    drain(drain_for, "the candidates are retired", runner, way.cancel()).await;
    retire_candidates(client, pairs, runner, way).await;
}

/// Flips every given Service back to what served before. Returns whether
/// all went back. After a signal, within the way back.
pub(super) async fn flip_back(
    client: &kube::Client,
    pairs: &[&Pair],
    runner: &Runner,
    way: &WayBack<'_>,
) -> bool {
    let _g = runner.group("Rollback: every Service back to the old colour");
    let back = async {
        let mut ok = true;
        for p in pairs {
            // The first deploy: back to the pin, never to the bare app
            // labels, which the candidate's pods match too.
            let patch = match p.live {
                Some(c) => selector_patch(p, Some(c), None),
                None => selector_patch(p, None, p.pin.get().map(String::as_str)),
            };
            match set_selector(client, &p.service_ref(), &patch).await {
                Ok(()) => runner.line(&format!("{}: selector back to {}", p.service_ref(), p.old_name())),
                Err(e) => {
                    runner.error(e.reason(), &format!("switch back failed: {e}"));
                    ok = false;
                }
            }
        }
        ok
    };
    way.bound(Some(Duration::from_secs(60)), back).await.unwrap_or(false)
}

/// Every candidate off (best effort; the selectors never named them, or
/// have been flipped back): one that existed before this run is scaled to
/// zero and its template put back to the release it held (the colour at
/// zero is what `mode: rollback` brings back: never a release that failed
/// here); one this run created is deleted. Then, on the first deploy, the
/// pin is lifted from the Services (they select the source's pods again),
/// once no candidate pod is ready: lifted earlier, the bare app labels
/// would let the failed pods in.
pub(super) async fn retire_candidates(
    client: &kube::Client,
    pairs: &[Pair],
    runner: &Runner,
    way: &WayBack<'_>,
) {
    let all = async {
        for p in pairs {
            let name = p.candidate_name();
            let object = ObjectRef::deployment(p.ns(), &name);
            let off = if p.candidate_existed {
                match scale(client, p.ns(), &name, 0).await {
                    Ok(()) => super::super::undo::undo(client, p.ns(), &name).await.map(|u| {
                        if let super::super::undo::Undone::RolledBack { revision, .. } = u {
                            runner.line(&format!(
                                "{object}: at 0, back to the release it held (revision {revision})"
                            ));
                        }
                    }),
                    Err(e) => Err(e),
                }
            } else {
                let api: Api<Deployment> = Api::namespaced(client.clone(), p.ns());
                match api.delete(&name, &kube::api::DeleteParams::background()).await {
                    Ok(_) => {
                        runner.line(&format!("{object}: removed (created by this run, it never served)"));
                        Ok(())
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                    Err(e) => Err(KubeError::from_api(e, "delete", "deployments", "apps", object.clone())),
                }
            };
            if let Err(e) = off
                && !matches!(e, KubeError::NotFound { .. })
            {
                runner.warning(e.reason(), &format!("candidate {object} not retired: {e}"));
            }
        }
        for p in pairs.iter().filter(|p| p.live.is_none()) {
            let gone = async {
                loop {
                    match ready_pods_of(client, p.ns(), &p.selector_for(p.candidate)).await {
                        Ok(pods) if pods.is_empty() => return true,
                        Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                        Err(_) => return false,
                    }
                }
            };
            let gone = tokio::time::timeout(ENDPOINTS_WITHIN, gone).await.unwrap_or(false);
            let pin = p.pin.get().map_or("", String::as_str);
            if !gone {
                runner.warning(
                    "candidate_still_ready",
                    &format!(
                        "{}: left pinned to {HASH_LABEL}={pin}: {} still has ready pods; once it has none, remove that key from the Service's selector",
                        p.service_ref(),
                        p.candidate_name()
                    ),
                );
                continue;
            }
            if let Err(e) = set_selector(client, &p.service_ref(), &selector_patch(p, None, None)).await {
                runner.warning(e.reason(), &format!("the Service's pin was not lifted: {e}"));
            }
        }
    };
    if way.bound(Some(RETIRE_WITHIN), all).await.is_none() {
        runner.warning(
            "rollback_timeout",
            "candidates not all retired in time; a Service first adopted by this run may stay pinned to its pod-template-hash",
        );
    }
}
