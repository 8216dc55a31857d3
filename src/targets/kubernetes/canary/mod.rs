//! `strategy: canary` on a cluster: a canary Deployment `web-canary` beside
//! the stable `web`, taking a share of the traffic step by step
//! (`canary-steps`), each step watched for `canary-interval`; then promote
//! (the stable Deployment takes the new template by a rolling update, the
//! canary is removed) or abort (the canary to zero and removed, the weights
//! back). Steps that end before 100 stop there: a later job decides with
//! `mode: promote` or `mode: abort`, reading where the canary stands from
//! the annotations this action wrote on `web-canary`, not from a previous
//! job.
//!
//! Traffic (`canary-traffic`):
//! - `replicas`: the canary's pods carry the stable's labels, so the one
//!   Service sends them a share equal to their part of all ready pods;
//! - `ingress/<name>`: an ingress-nginx canary Ingress `<name>-canary`
//!   (`nginx.ingress.kubernetes.io/canary-weight`) sending the share to a
//!   Service `web-canary`;
//! - `httproute/<name>`: the Gateway API HTTPRoute's `backendRefs` weights,
//!   stable `web` and `web-canary`.
//!
//! With a weighted router the canary pods must not join the stable
//! Service: they carry `deploy-action/canary-of: web` instead of the
//! stable's selector labels.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::apply::{self, Current};
use super::error::{KubeError, ObjectRef};
use super::secret::MANAGED_BY;
use super::{Cluster, ClusterRun, Deploy, FIELD_MANAGER, observe, rollout};
use crate::inputs::{CanaryTraffic, KubernetesSpec};
use crate::runner::Runner;
use crate::targets::unit::{Outcome, Unit};
use crate::targets::wayback::{WayBack, drain};

mod objects;
mod plan;
mod policies;
mod share;
mod standing;

pub use objects::canary_deployment;
use objects::*;
pub use plan::plan;
use share::*;
pub use share::{canary_replicas, inexpressible, real_share};
use standing::*;

pub use super::traffic::CANARY_OF;
pub const TRACK: &str = "deploy-action/track";
/// Annotations on the canary Deployment: where it stands.
pub const WEIGHT: &str = "deploy-action/canary-weight";
pub const IMAGE: &str = "deploy-action/canary-image";
pub const TRAFFIC: &str = "deploy-action/canary-traffic";
/// How long an abort or a promotion's undo may take without a signal
/// (after one, the run's way back bounds it).
const UNDO_WITHIN: Duration = Duration::from_secs(60);

/// The canary settings of a deploy.
#[derive(Debug, Clone)]
pub struct Steps {
    pub steps: Vec<u8>,
    pub interval: Duration,
    pub traffic: CanaryTraffic,
    /// `drain-time`: how long a weighted router's canary keeps its pods
    /// after its weight went to 0, before it is removed.
    pub drain: Duration,
}

async fn open<'a>(
    client: &'a kube::Client,
    spec: &KubernetesSpec,
    traffic: CanaryTraffic,
    drain: Duration,
    runner: &'a Runner,
) -> Result<Canary<'a>, KubeError> {
    let r = spec.deployments.first().ok_or_else(|| KubeError::Config("no Deployment named".into()))?;
    let stable = apply::read(client, &spec.namespace, r, None).await?;
    let stable_replicas = stable.deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(1);
    let service = r.service_name().to_string();
    Ok(Canary {
        client,
        ns: spec.namespace.clone(),
        stable,
        service,
        stable_replicas,
        traffic,
        drain,
        runner,
    })
}

/// Where a canary stands, from its annotations.
async fn standing(c: &Canary<'_>) -> Result<Option<(u8, String, CanaryTraffic)>, KubeError> {
    let d = c
        .deployments()
        .get_opt(&c.name())
        .await
        .map_err(|e| KubeError::from_api(e, "get", "deployments", "apps", c.object()))?;
    Ok(d.and_then(|d| {
        let a = d.metadata.annotations?;
        Some((a.get(WEIGHT)?.parse().ok()?, a.get(IMAGE)?.clone(), parse_traffic(a.get(TRAFFIC)?)?))
    }))
}

/// `mode: deploy` with canary steps.
// long: the canary's steps in order (open, each weight step observed, promote), each with its way back.
pub async fn deploy(cx: Cluster<'_>, work: &Deploy<'_>, steps: &Steps) -> ClusterRun {
    let Cluster { client, spec, runner, cancel } = cx;
    let mut out = ClusterRun { stage: "inspect", ..Default::default() };
    let started = Instant::now();
    let c = match open(client, spec, steps.traffic.clone(), steps.drain, runner).await {
        Ok(c) => c,
        Err(e) => return ClusterRun { error: Some(e), rolled_back: true, ..out },
    };
    out.previous_image = c.stable.image.clone();
    let unit = c.stable.object.to_string();
    match standing(&c).await {
        Ok(Some((w, image, _))) if w > 0 => {
            out.error = Some(KubeError::CanaryStanding { object: c.object(), image, weight: w });
            out.rolled_back = true;
            out.units = vec![Unit::unchanged(unit)];
            return out;
        }
        Ok(_) => {}
        Err(e) => return ClusterRun { error: Some(e), rolled_back: true, ..out },
    }
    // A step the replica counts cannot express (10% of 1 replica is 50%)
    // is refused before anything changes.
    if let Some(e) = inexpressible(&c.traffic, c.stable_replicas, &steps.steps, &c.stable.object) {
        return ClusterRun { error: Some(e), rolled_back: true, ..out };
    }
    // A NetworkPolicy of the stable's that would miss the canary's pods
    // (a weighted router's) is refused before anything changes, too.
    if let Err(e) = policies::check(&c).await {
        return ClusterRun { error: Some(e), rolled_back: true, ..out };
    }
    // The promotion's apply as a server-side dry run first: a field another
    // tool applies is refused now, not after the migration and every step.
    {
        let env_from = apply::env_from(&c.stable, work.app, work.secret.as_ref().map(|s| s.name.as_str()));
        let image = c.stable.image_to_run(work.image);
        if let Err(e) = apply::set_image(client, &c.stable, image, env_from.as_deref(), runner, true).await {
            return ClusterRun { error: Some(e), rolled_back: true, ..out };
        }
    }
    if let Some(s) = &work.secret
        && let Err(e) = super::secret::ensure(client, &c.ns, s, false).await
    {
        return ClusterRun { error: Some(e), rolled_back: true, ..out };
    }
    out.stage = "migrate";
    match super::migrate_first(cx, work, &c.stable).await {
        Ok(true) => out.migrated = work.migrate_command.and(Some(c.stable.object.name.clone())),
        Ok(false) => return ClusterRun { cancelled: true, rolled_back: true, ..out },
        Err(e) => return ClusterRun { error: Some(e), rolled_back: true, ..out },
    }
    let env_from = apply::env_from(&c.stable, work.app, work.secret.as_ref().map(|s| s.name.as_str()));
    let image = c.stable.image_to_run(work.image);
    out.stage = "canary";
    let last = steps.steps.last().copied().unwrap_or(100);
    for &w in steps.steps.iter().filter(|w| **w < 100) {
        let _g = runner.group(&format!("Canary step {w}%"));
        let ok = match c.step(image, env_from.as_deref(), w, cancel).await {
            Ok(true) => c.observe(steps.interval, work.analysis, cancel).await,
            other => other,
        };
        match ok {
            Ok(true) => {}
            Ok(false) | Err(_) => {
                out.error = ok.err();
                out.cancelled = out.error.is_none();
                let _g = runner.group("Abort: all traffic back to the stable version");
                let way = WayBack::new(cancel);
                out.rolled_back =
                    way.bound(Some(UNDO_WITHIN), c.abort(cancel)).await.is_some_and(|r| r.is_ok());
                let aborted = Outcome::back(out.rolled_back, format!("canary aborted at {w}%"));
                out.units = vec![Unit::new(unit, aborted, started.elapsed())];
                return out;
            }
        }
    }
    if last < 100 {
        out.stage = "done";
        runner.line(&format!(
            "the canary stays at {last}%: run this action with mode 'promote' (or 'abort') to decide"
        ));
        out.units = vec![Unit::new(
            unit,
            Outcome::Standing(format!("canary at {last}% of {}, awaiting promote or abort", image)),
            started.elapsed(),
        )];
        return out;
    }
    out.stage = "promote";
    let _g = runner.group("Promote: the stable Deployment takes the new version");
    let promotion = c.promote(image, env_from.as_deref(), cancel).await;
    finish_promote(&c, promotion, image, &mut out, None, cancel, started).await;
    out
}

/// How a promotion that reached its end is reported: `Ok` with the unit's
/// outcome when the stable runs the new version (a canary left behind is
/// the run's error, not undone), else the failed promotion's way back.
async fn finish_promote(
    c: &Canary<'_>,
    promotion: Promotion,
    image: &str,
    out: &mut ClusterRun,
    keep_standing: Option<u8>,
    cancel: &CancellationToken,
    started: Instant,
) {
    let unit = c.stable.object.to_string();
    match promotion {
        Promotion::Done { cleanup } => {
            out.stage = "done";
            out.units =
                vec![Unit::new(unit, Outcome::Deployed(format!("promoted to {image}")), started.elapsed())];
            if let Some(e) = cleanup {
                c.runner.line(&format!(
                    "{}: promoted, but the canary {} could not be removed; delete it by hand or run mode 'abort'",
                    c.stable.object,
                    c.object()
                ));
                out.error = Some(e);
            }
        }
        Promotion::Failed { applied, error } => {
            finish_failed_promote(c, out, applied, error, keep_standing, cancel, started).await;
        }
    }
}

/// A promotion that failed or was cancelled. When the stable took the new
/// template it is rolled back as kubectl would; when it never did (the
/// apply was refused) it is left alone, since an undo would take it one
/// revision further back than it ran. The canary is removed, except by a
/// `mode: promote` whose refused apply changed nothing (`keep_standing`,
/// the canary's weight): the canary stands as it stood, to promote again
/// once the cause is fixed, or abort.
async fn finish_failed_promote(
    c: &Canary<'_>,
    out: &mut ClusterRun,
    applied: bool,
    error: Option<KubeError>,
    keep_standing: Option<u8>,
    cancel: &CancellationToken,
    started: Instant,
) {
    let way = WayBack::new(cancel);
    out.cancelled = cancel.is_cancelled();
    out.error = error.or(out.error.take());
    if out.error.is_none() && !out.cancelled {
        out.error = Some(KubeError::Config("the promotion did not finish".into()));
    }
    let unit = c.stable.object.to_string();
    if !applied {
        c.runner
            .line(&format!("{}: unchanged (the promotion was refused before any change)", c.stable.object));
        if let Some(weight) = keep_standing {
            c.runner.line(&format!(
                "{}: still at {weight}%: fix the cause and run mode 'promote' again, or 'abort'",
                c.object()
            ));
            out.rolled_back = true;
            let standing = Outcome::Standing(format!("unchanged; canary still at {weight}%"));
            out.units = vec![Unit::new(unit, standing, started.elapsed())];
            return;
        }
    }
    // The stable back to what served first, then the canary out.
    let stable = match applied {
        true => super::undo_and_confirm(c.client, &c.ns, &c.stable.object.name, c.runner, &way).await,
        false => Outcome::Unchanged(String::new()),
    };
    let undone = stable.left_nothing();
    let aborted = way.bound(Some(UNDO_WITHIN), c.abort(cancel)).await.is_some_and(|r| r.is_ok());
    out.rolled_back = undone && aborted;
    let removed = if aborted { "canary removed" } else { "canary not removed" };
    let note =
        if applied { format!("promotion {stable}; {removed}") } else { format!("{stable}; {removed}") };
    out.units = vec![Unit::new(unit, Outcome::back(out.rolled_back, note), started.elapsed())];
}

/// Whether a canary stands beside the one Deployment of `spec` (its
/// weight, image): `mode: rollback` then means "take the canary away", not
/// an undo of the stable Deployment, which the canary run never touched.
/// A Deployment that cannot be read answers `None` (the rollback itself
/// reports it).
pub async fn standing_beside(client: &kube::Client, spec: &KubernetesSpec) -> Option<(u8, String)> {
    if spec.deployments.len() != 1 {
        return None;
    }
    let r = spec.deployments.first()?;
    let object = ObjectRef::deployment(&spec.namespace, &name_of(&r.name));
    let api: Api<Deployment> = Api::namespaced(client.clone(), &object.namespace);
    let d = api.get_opt(&object.name).await.ok().flatten()?;
    let a = d.metadata.annotations?;
    let weight: u8 = a.get(WEIGHT)?.parse().ok()?;
    Some((weight, a.get(IMAGE)?.clone()))
}

/// `mode: promote` / `mode: abort`: decided from the canary's annotations.
pub async fn decide(cx: Cluster<'_>, promote: bool, drain: Duration) -> ClusterRun {
    let Cluster { client, spec, runner, cancel } = cx;
    let mut out = ClusterRun { stage: if promote { "promote" } else { "abort" }, ..Default::default() };
    let started = Instant::now();
    let probe = match open(client, spec, CanaryTraffic::Replicas, drain, runner).await {
        Ok(c) => c,
        Err(e) => return ClusterRun { error: Some(e), ..out },
    };
    let (weight, image, traffic) = match standing(&probe).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            out.error = Some(KubeError::NoCanary {
                object: probe.object(),
                action: if promote { "promote" } else { "abort" },
            });
            return out;
        }
        Err(e) => return ClusterRun { error: Some(e), ..out },
    };
    let c = Canary { traffic, ..probe };
    runner.line(&format!("{}: canary of {image} at {weight}% via {}", c.object(), traffic_str(&c.traffic)));
    out.previous_image = c.stable.image.clone();
    let _g = runner.group(if promote { "Promote" } else { "Abort" });
    if promote {
        // The canary's own pod spec goes to the stable (image and envFrom).
        let env_from: Option<Vec<_>> = c
            .deployments()
            .get_opt(&c.name())
            .await
            .ok()
            .flatten()
            .and_then(|d| {
                d.spec?.template.spec?.containers.into_iter().find(|x| x.name == c.stable.container)?.env_from
            })
            .filter(|f| !f.is_empty());
        let promotion = c.promote(&image, env_from.as_deref(), cancel).await;
        if matches!(promotion, Promotion::Done { .. }) {
            out.restored_image = Some(image.clone());
        }
        finish_promote(&c, promotion, &image, &mut out, Some(weight), cancel, started).await;
    } else {
        match c.abort(cancel).await {
            Ok(()) => {
                out.stage = "done";
                out.restored_image = c.stable.image.clone();
                out.units = vec![Unit::new(
                    c.stable.object.to_string(),
                    Outcome::RolledBack(format!("canary of {image} aborted at {weight}%")),
                    started.elapsed(),
                )];
            }
            Err(e) => out.error = Some(e),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::kubernetes::mock;

    /// A canary abort behind ingress-nginx, against a mocked API server:
    /// the canary Ingress (its weight) goes first, the drain is honoured,
    /// and only then the canary Deployment and Service; a signal cuts the
    /// drain short, not the removal.
    #[tokio::test]
    async fn an_abort_takes_the_weight_away_first_then_drains_then_removes_the_canary() {
        for (drain, signal_after) in
            [(Duration::from_millis(400), None), (Duration::from_secs(30), Some(200))]
        {
            let (client, server) = mock::server(|_, _| mock::status());
            let log = crate::runner::memory::Log::default();
            let runner = log.runner();
            let canary = Canary {
                client: &client,
                ns: "shop".into(),
                stable: mock::current("shop", "web", "shop:1"),
                service: "web".into(),
                stable_replicas: 3,
                traffic: CanaryTraffic::Ingress("web".into()),
                drain,
                runner: &runner,
            };
            let cancel = CancellationToken::new();
            if let Some(ms) = signal_after {
                let cancel = cancel.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    cancel.cancel();
                });
            }
            let started = Instant::now();
            canary.abort(&cancel).await.unwrap_or_else(|e| panic!("{e}: {}", log.text()));
            drop(canary);
            drop(client);
            let calls = server.await.unwrap();
            assert_eq!(
                mock::said(&calls),
                [
                    "DELETE /apis/networking.k8s.io/v1/namespaces/shop/ingresses/web-canary",
                    "DELETE /apis/apps/v1/namespaces/shop/deployments/web-canary",
                    "DELETE /api/v1/namespaces/shop/services/web-canary",
                ]
            );
            let waited = calls[1].at - calls[0].at;
            match signal_after {
                None => assert!(waited >= drain, "removed {waited:?} after the weight went, drain {drain:?}"),
                Some(ms) => assert!(
                    calls[1].at - started >= Duration::from_millis(ms) && waited < Duration::from_secs(2),
                    "a signal at {ms}ms: removed {waited:?} after the weight went"
                ),
            }
        }
    }

    #[test]
    fn replicas_for_a_weight() {
        let r = CanaryTraffic::Replicas;
        // 1 canary beside 9 stable pods is 10%; beside 4, 20%.
        assert_eq!(canary_replicas(&r, 9, 10), 1);
        assert_eq!(canary_replicas(&r, 4, 20), 1);
        assert_eq!(canary_replicas(&r, 2, 50), 2);
        assert_eq!(canary_replicas(&r, 3, 1), 1, "never zero");
        let i = CanaryTraffic::Ingress("web".into());
        assert_eq!(canary_replicas(&i, 4, 10), 1);
        assert_eq!(canary_replicas(&i, 4, 50), 2);
    }

    #[test]
    fn a_share_the_replicas_cannot_express_is_refused_with_the_replicas_that_would() {
        let o = ObjectRef::deployment("ns", "web");
        let r = CanaryTraffic::Replicas;
        // 10% of 1 replica: 1 canary pod beside 1 is 50%; 6 stable give 1 of 7.
        match inexpressible(&r, 1, &[10, 100], &o) {
            Some(KubeError::CanaryShare { weight: 10, canary: 1, stable: 1, real, need: 6, .. }) => {
                assert!((real - 50.0).abs() < 0.01)
            }
            other => panic!("{other:?}"),
        }
        assert!(inexpressible(&r, 3, &[25, 100], &o).is_none());
        assert!(inexpressible(&r, 2, &[25], &o).is_none(), "1 of 3 for 25%");
        assert!(inexpressible(&r, 9, &[10, 50], &o).is_none());
        assert!(inexpressible(&r, 1, &[50], &o).is_none());
        // A weighted router weighs exactly.
        assert!(inexpressible(&CanaryTraffic::Ingress("web".into()), 1, &[10], &o).is_none());
    }

    #[test]
    fn traffic_round_trips_through_the_annotation() {
        for t in [
            CanaryTraffic::Replicas,
            CanaryTraffic::Ingress("a".into()),
            CanaryTraffic::HttpRoute("r".into()),
        ] {
            assert_eq!(parse_traffic(&traffic_str(&t)), Some(t));
        }
        assert_eq!(parse_traffic("nginx/x"), None);
    }
}
