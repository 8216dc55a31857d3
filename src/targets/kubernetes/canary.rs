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
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::apply::{self, Current};
use super::error::{KubeError, ObjectRef};
use super::secret::MANAGED_BY;
use super::{ClusterRun, Deploy, FIELD_MANAGER, observe, rollout};
use crate::inputs::{CanaryTraffic, KubernetesSpec};
use crate::runner::Runner;
use crate::targets::wayback::WayBack;

pub const CANARY_OF: &str = "deploy-action/canary-of";
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

fn traffic_str(t: &CanaryTraffic) -> String {
    match t {
        CanaryTraffic::Replicas => "replicas".into(),
        CanaryTraffic::Ingress(n) => format!("ingress/{n}"),
        CanaryTraffic::HttpRoute(n) => format!("httproute/{n}"),
    }
}

fn parse_traffic(s: &str) -> Option<CanaryTraffic> {
    match s.split_once('/') {
        None if s == "replicas" => Some(CanaryTraffic::Replicas),
        Some(("ingress", n)) => Some(CanaryTraffic::Ingress(n.into())),
        Some(("httproute", n)) => Some(CanaryTraffic::HttpRoute(n.into())),
        _ => None,
    }
}

/// Canary replicas for `weight`% of `stable` replicas: by replica ratio the
/// canary is `weight` of all pods (stable kept whole); behind a weighted
/// router it needs `weight` of the capacity.
pub fn canary_replicas(traffic: &CanaryTraffic, stable: i32, weight: u8) -> i32 {
    let (n, w) = (stable.max(1) as f64, f64::from(weight));
    let c = match traffic {
        CanaryTraffic::Replicas if weight >= 100 => n,
        CanaryTraffic::Replicas => (n * w / (100.0 - w)).round(),
        _ => (n * w / 100.0).ceil(),
    };
    (c as i32).max(1)
}

/// How far the share the pods give may be from a step's weight before the
/// step is refused: 5 percentage points, or two fifths of the step when
/// that is more (25% beside 2 stable replicas is 1 pod of 3, 33%: kept;
/// 10% beside 1 is 1 of 2, 50%: refused).
fn share_tolerance(weight: u8) -> f64 {
    (f64::from(weight) * 0.4).max(5.0)
}

/// The share of all pods `canary_replicas` gives at `weight` beside
/// `stable` pods (`canary-traffic: replicas`).
pub fn real_share(stable: i32, weight: u8) -> (i32, f64) {
    let c = canary_replicas(&CanaryTraffic::Replicas, stable, weight);
    (c, 100.0 * f64::from(c) / f64::from(c + stable.max(1)))
}

/// The first step the replica counts cannot express within
/// [`share_tolerance`]: refused before any change, naming the real share
/// and how many stable replicas would express it. A weighted router
/// (ingress, HTTPRoute) weighs exactly: nothing to refuse.
pub fn inexpressible(
    traffic: &CanaryTraffic,
    stable: i32,
    steps: &[u8],
    object: &ObjectRef,
) -> Option<KubeError> {
    if !matches!(traffic, CanaryTraffic::Replicas) {
        return None;
    }
    let fits = |n: i32, w: u8| (real_share(n, w).1 - f64::from(w)).abs() <= share_tolerance(w);
    let w = steps.iter().copied().find(|w| *w < 100 && !fits(stable, *w))?;
    let (canary, real) = real_share(stable, w);
    let need = (1..=1000).find(|n| fits(*n, w)).unwrap_or(1000);
    Some(KubeError::CanaryShare {
        object: object.clone(),
        weight: w,
        stable: stable.max(1),
        canary,
        real,
        need,
    })
}

fn name_of(stable: &str) -> String {
    format!("{stable}-canary")
}

fn stable_labels(d: &Deployment) -> BTreeMap<String, String> {
    d.spec.as_ref().and_then(|s| s.selector.match_labels.clone()).unwrap_or_default()
}

/// The canary Deployment from the stable one's spec.
pub fn canary_deployment(
    stable: &Current,
    traffic: &CanaryTraffic,
    image: &str,
    env_from: Option<&[k8s_openapi::api::core::v1::EnvFromSource]>,
    replicas: i32,
    weight: u8,
) -> Value {
    let d = &stable.deployment;
    let mut spec = serde_json::to_value(d.spec.clone().unwrap_or_default()).unwrap_or_default();
    spec["replicas"] = replicas.into();
    if let Some(o) = spec.as_object_mut() {
        o.remove("paused");
    }
    let name = &stable.object.name;
    let selector: BTreeMap<String, String> = match traffic {
        // Same app labels: the one Service balances over all pods.
        CanaryTraffic::Replicas => {
            let mut s = stable_labels(d);
            s.insert(TRACK.into(), "canary".into());
            s
        }
        // Kept out of the stable Service: only the router sends it traffic.
        _ => BTreeMap::from([(CANARY_OF.to_string(), name.clone())]),
    };
    spec["selector"] = json!({"matchLabels": selector});
    let mut pod_labels: BTreeMap<String, String> = spec["template"]["metadata"]["labels"]
        .as_object()
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default();
    if !matches!(traffic, CanaryTraffic::Replicas) {
        for k in stable_labels(d).keys() {
            pod_labels.remove(k);
        }
    }
    pod_labels.extend(selector.clone());
    spec["template"]["metadata"]["labels"] = json!(pod_labels);
    if let Some(cs) = spec["template"]["spec"]["containers"].as_array_mut() {
        for c in cs.iter_mut().filter(|c| c["name"] == stable.container.as_str()) {
            c["image"] = image.into();
            if let Some(f) = env_from {
                c["envFrom"] = serde_json::to_value(f).unwrap_or_default();
            }
        }
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name_of(name),
            "namespace": stable.object.namespace,
            "labels": {MANAGED_BY.0: MANAGED_BY.1, CANARY_OF: name},
            "annotations": {WEIGHT: weight.to_string(), IMAGE: image, TRAFFIC: traffic_str(traffic)},
        },
        "spec": spec,
    })
}

struct Canary<'a> {
    client: &'a kube::Client,
    ns: String,
    stable: Current,
    /// The stable Service (the Deployment's name unless a services file
    /// names another): the weighted routers' stable backend.
    service: String,
    stable_replicas: i32,
    traffic: CanaryTraffic,
    /// See [`Steps::drain`].
    drain: Duration,
    runner: &'a Runner,
}

impl Canary<'_> {
    fn name(&self) -> String {
        name_of(&self.stable.object.name)
    }
    fn object(&self) -> ObjectRef {
        ObjectRef::deployment(&self.ns, &self.name())
    }
    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Applies the canary Deployment at `weight` and waits for it.
    async fn step(
        &self,
        image: &str,
        env_from: Option<&[k8s_openapi::api::core::v1::EnvFromSource]>,
        weight: u8,
        cancel: &CancellationToken,
    ) -> Result<bool, KubeError> {
        let replicas = canary_replicas(&self.traffic, self.stable_replicas, weight.min(99));
        let body = canary_deployment(&self.stable, &self.traffic, image, env_from, replicas, weight);
        self.deployments()
            .patch(&self.name(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
            .await
            .map_err(|e| KubeError::from_api(e, "patch", "deployments", "apps", self.object()))?;
        if rollout::watch(self.client, &self.ns, &self.name(), self.runner, cancel).await?.is_none() {
            return Ok(false);
        }
        if !matches!(self.traffic, CanaryTraffic::Replicas) {
            self.ensure_service().await?;
        }
        self.set_weight(weight).await?;
        let share = match self.traffic {
            CanaryTraffic::Replicas => {
                format!("{replicas} of {} pods", replicas + self.stable_replicas)
            }
            _ => format!("weight {weight}, {replicas} pod(s)"),
        };
        self.runner.line(&format!("canary at {weight}% ({share}) via {}", traffic_str(&self.traffic)));
        Ok(true)
    }

    /// The canary Service (weighted routers only): the stable Service's
    /// ports, the canary's pods.
    async fn ensure_service(&self) -> Result<(), KubeError> {
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.ns);
        let stable = &self.stable.object.name;
        let svc_ref = ObjectRef::new("service", &self.ns, &self.service);
        let s = services
            .get(&self.service)
            .await
            .map_err(|e| KubeError::from_api(e, "get", "services", "", svc_ref.clone()))?;
        let ports = s.spec.and_then(|s| s.ports).unwrap_or_default();
        let body = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": self.name(), "namespace": self.ns, "labels": {MANAGED_BY.0: MANAGED_BY.1, CANARY_OF: stable}},
            "spec": {"selector": {CANARY_OF: stable}, "ports": ports},
        });
        services
            .patch(&self.name(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
            .await
            .map(|_| ())
            .map_err(|e| {
                KubeError::from_api(
                    e,
                    "patch",
                    "services",
                    "",
                    ObjectRef::new("service", &self.ns, &self.name()),
                )
            })
    }

    /// Sends `weight`% to the canary (0: none; the router objects of the
    /// canary are removed at 0).
    async fn set_weight(&self, weight: u8) -> Result<(), KubeError> {
        let stable = self.service.clone();
        match &self.traffic {
            CanaryTraffic::Replicas => Ok(()),
            CanaryTraffic::Ingress(name) => {
                let api: Api<Ingress> = Api::namespaced(self.client.clone(), &self.ns);
                let canary_name = format!("{name}-canary");
                let object = ObjectRef::new("ingress", &self.ns, &canary_name);
                if weight == 0 {
                    return match api.delete(&canary_name, &DeleteParams::default()).await {
                        Ok(_) => Ok(()),
                        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                        Err(e) => {
                            Err(KubeError::from_api(e, "delete", "ingresses", "networking.k8s.io", object))
                        }
                    };
                }
                let main = api.get(name).await.map_err(|e| {
                    KubeError::from_api(
                        e,
                        "get",
                        "ingresses",
                        "networking.k8s.io",
                        ObjectRef::new("ingress", &self.ns, name),
                    )
                })?;
                let mut spec = serde_json::to_value(main.spec.unwrap_or_default()).unwrap_or_default();
                retarget(&mut spec, &stable, &self.name());
                if let Some(o) = spec.as_object_mut() {
                    o.remove("defaultBackend");
                }
                let body = json!({
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "Ingress",
                    "metadata": {
                        "name": canary_name,
                        "namespace": self.ns,
                        "labels": {MANAGED_BY.0: MANAGED_BY.1, CANARY_OF: stable},
                        "annotations": {
                            "nginx.ingress.kubernetes.io/canary": "true",
                            "nginx.ingress.kubernetes.io/canary-weight": weight.to_string(),
                        },
                    },
                    "spec": spec,
                });
                api.patch(&canary_name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
                    .await
                    .map(|_| ())
                    .map_err(|e| KubeError::from_api(e, "patch", "ingresses", "networking.k8s.io", object))
            }
            CanaryTraffic::HttpRoute(name) => {
                let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
                let ar = ApiResource::from_gvk_with_plural(&gvk, "httproutes");
                let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &self.ns, &ar);
                let object = ObjectRef::new("httproute", &self.ns, name);
                let route = api.get(name).await.map_err(|e| {
                    KubeError::from_api(e, "get", "httproutes", "gateway.networking.k8s.io", object.clone())
                })?;
                let mut rules = route.data["spec"]["rules"].clone();
                let mut found = false;
                for rule in rules.as_array_mut().into_iter().flatten() {
                    let Some(refs) = rule["backendRefs"].as_array_mut() else { continue };
                    let Some(stable_ref) = refs.iter().find(|r| r["name"] == stable.as_str()).cloned() else {
                        continue;
                    };
                    found = true;
                    refs.retain(|r| r["name"] != self.name().as_str());
                    for r in refs.iter_mut().filter(|r| r["name"] == stable.as_str()) {
                        r["weight"] = (100 - u32::from(weight)).into();
                    }
                    if weight > 0 {
                        let mut c = stable_ref;
                        c["name"] = self.name().into();
                        c["weight"] = u32::from(weight).into();
                        refs.push(c);
                    }
                }
                if !found {
                    return Err(KubeError::Config(format!("{object} has no backendRef to service {stable}")));
                }
                api.patch(name, &PatchParams::default(), &Patch::Merge(&json!({"spec": {"rules": rules}})))
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        KubeError::from_api(e, "patch", "httproutes", "gateway.networking.k8s.io", object)
                    })
            }
        }
    }

    /// Watches the canary for the interval (see [`observe::window`]).
    /// `Ok(false)`: cancelled.
    async fn observe(
        &self,
        interval: Duration,
        analysis: Option<&crate::analysis::Analysis>,
        cancel: &CancellationToken,
    ) -> Result<bool, KubeError> {
        let end = Instant::now() + interval;
        match observe::window(
            self.client,
            &[self.object()],
            end,
            "during the canary step",
            analysis,
            self.runner,
            cancel,
        )
        .await
        {
            Ok(()) => Ok(!cancel.is_cancelled()),
            Err(None) => Ok(false),
            Err(Some(e)) => Err(e),
        }
    }

    /// Weights back to the stable, the canary and its objects removed.
    /// Behind a weighted router the canary's pods are kept for `drain`
    /// after its weight went to 0 (a signal cuts the wait short): the
    /// router, endpoints and kube-proxy need time to stop sending there.
    /// By replica ratio its pods leave the Service as they terminate.
    async fn abort(&self, cancel: &CancellationToken) -> Result<(), KubeError> {
        self.set_weight(0).await?;
        if !matches!(self.traffic, CanaryTraffic::Replicas) && !self.drain.is_zero() && !cancel.is_cancelled()
        {
            self.runner.line(&format!(
                "{}: weight 0; draining for {}s before it is removed",
                self.object(),
                self.drain.as_secs()
            ));
            tokio::select! {
                () = tokio::time::sleep(self.drain) => {}
                () = cancel.cancelled() => self.runner.line("drain cut short: cancelled"),
            }
        }
        let dp = DeleteParams::background();
        let service = ObjectRef::new("service", &self.ns, &self.name());
        for (r, resource, group, object) in [
            (
                self.deployments().delete(&self.name(), &dp).await.map(|_| ()),
                "deployments",
                "apps",
                self.object(),
            ),
            (
                Api::<Service>::namespaced(self.client.clone(), &self.ns)
                    .delete(&self.name(), &dp)
                    .await
                    .map(|_| ()),
                "services",
                "",
                service,
            ),
        ] {
            match r {
                Ok(()) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(KubeError::from_api(e, "delete", resource, group, object)),
            }
        }
        self.runner.line(&format!("{}: removed; all traffic to {}", self.object(), self.stable.object));
        Ok(())
    }

    /// The stable takes the new template (a rolling update, watched), then
    /// the canary goes.
    async fn promote(
        &self,
        image: &str,
        env_from: Option<&[k8s_openapi::api::core::v1::EnvFromSource]>,
        cancel: &CancellationToken,
    ) -> Promotion {
        let applied =
            match apply::set_image(self.client, &self.stable, image, env_from, self.runner, false).await {
                Ok(changed) => changed,
                Err(e) => return Promotion::Failed { applied: self.stable_changed().await, error: Some(e) },
            };
        match rollout::watch(self.client, &self.ns, &self.stable.object.name, self.runner, cancel).await {
            Ok(Some(_)) => {
                self.runner.line(&format!("{}: promoted to {image}", self.stable.object));
                Promotion::Done { cleanup: self.abort(cancel).await.err() }
            }
            Ok(None) => Promotion::Failed { applied, error: None },
            Err(e) => Promotion::Failed { applied, error: Some(e) },
        }
    }

    /// Whether the stable's pod template is another than when it was read:
    /// after a refused apply, whether there is a revision to undo. Other
    /// spec changes meanwhile (an HPA scaling it) are not. Unreadable
    /// counts as changed, so the undo is tried.
    async fn stable_changed(&self) -> bool {
        match self.deployments().get_opt(&self.stable.object.name).await {
            Ok(Some(d)) => d.spec.map(|s| s.template) != self.stable.live_template,
            _ => true,
        }
    }
}

/// How a promotion ended.
enum Promotion {
    /// The stable runs the new version; `cleanup` is a failure to remove
    /// the canary afterwards (the promotion itself stands).
    Done { cleanup: Option<KubeError> },
    /// Failed (`error`) or cancelled (`None`); `applied` when the stable
    /// took the new template, so there is a revision to undo.
    Failed { applied: bool, error: Option<KubeError> },
}

/// Points every backend naming service `from` at `to`.
fn retarget(v: &mut Value, from: &str, to: &str) {
    match v {
        Value::Object(m) => {
            if m.get("name").and_then(Value::as_str) == Some(from) && m.contains_key("port") {
                m.insert("name".into(), to.into());
            }
            for x in m.values_mut() {
                retarget(x, from, to);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| retarget(x, from, to)),
        _ => {}
    }
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
pub async fn deploy(
    client: &kube::Client,
    spec: &KubernetesSpec,
    work: &Deploy<'_>,
    steps: &Steps,
    runner: &Runner,
    cancel: &CancellationToken,
) -> ClusterRun {
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
            out.units = vec![(unit, "unchanged".into(), Duration::ZERO)];
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
    match super::migrate_first(client, work, &c.stable, runner, cancel).await {
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
                out.units = vec![(unit, format!("canary aborted at {w}%"), started.elapsed())];
                return out;
            }
        }
    }
    if last < 100 {
        out.stage = "done";
        runner.line(&format!(
            "the canary stays at {last}%: run this action with mode 'promote' (or 'abort') to decide"
        ));
        out.units = vec![(
            unit,
            format!("canary at {last}% of {}, awaiting promote or abort", image),
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
            out.units = vec![(unit, format!("promoted to {image}"), started.elapsed())];
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
            out.units = vec![(unit, format!("unchanged; canary still at {weight}%"), started.elapsed())];
            return;
        }
    }
    // The stable back to what served first, then the canary out.
    let (outcome, undone) = match applied {
        true => super::undo_and_confirm(c.client, &c.ns, &c.stable.object.name, c.runner, &way).await,
        false => ("unchanged".into(), true),
    };
    let aborted = way.bound(Some(UNDO_WITHIN), c.abort(cancel)).await.is_some_and(|r| r.is_ok());
    out.rolled_back = undone && aborted;
    let removed = if aborted { "canary removed" } else { "canary not removed" };
    let outcome =
        if applied { format!("promotion {outcome}; {removed}") } else { format!("{outcome}; {removed}") };
    out.units = vec![(unit, outcome, started.elapsed())];
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
pub async fn decide(
    client: &kube::Client,
    spec: &KubernetesSpec,
    promote: bool,
    drain: Duration,
    runner: &Runner,
    cancel: &CancellationToken,
) -> ClusterRun {
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
                out.units = vec![(
                    c.stable.object.to_string(),
                    format!("canary of {image} aborted at {weight}%"),
                    started.elapsed(),
                )];
            }
            Err(e) => out.error = Some(e),
        }
    }
    out
}

/// `mode: plan` for a canary: the canary Deployment as a server-side dry
/// run, and the steps.
pub async fn plan(
    client: &kube::Client,
    spec: &KubernetesSpec,
    steps: &Steps,
    image: &str,
    runner: &Runner,
) -> Result<Vec<String>, KubeError> {
    let c = open(client, spec, steps.traffic.clone(), Duration::ZERO, runner).await?;
    if let Some(e) = inexpressible(&c.traffic, c.stable_replicas, &steps.steps, &c.stable.object) {
        return Err(e);
    }
    let image = c.stable.image_to_run(image);
    let first = steps.steps.first().copied().unwrap_or(100).min(99);
    let replicas = canary_replicas(&c.traffic, c.stable_replicas, first);
    let body = canary_deployment(&c.stable, &c.traffic, image, None, replicas, first);
    c.deployments()
        .patch(&c.name(), &PatchParams::apply(FIELD_MANAGER).force().dry_run(), &Patch::Apply(&body))
        .await
        .map_err(|e| KubeError::from_api(e, "patch", "deployments", "apps", c.object()))?;
    let mut lines = vec![format!(
        "{}: would be created beside {} with {image} ({replicas} replica(s) at {first}%), traffic via {}",
        c.object(),
        c.stable.object,
        traffic_str(&c.traffic)
    )];
    for w in steps.steps.iter().filter(|w| **w < 100) {
        lines.push(format!(
            "step {w}%: watched for {}s; a failure aborts (weights back, canary removed)",
            steps.interval.as_secs()
        ));
    }
    lines.push(match steps.steps.last() {
        Some(100) => format!(
            "then promote: {} takes {image} by a rolling update, the canary is removed",
            c.stable.object
        ),
        _ => "then stop: the canary stands until a run with mode 'promote' or 'abort'".into(),
    });
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn backends_are_retargeted() {
        let mut v = json!({"rules": [{"http": {"paths": [{"backend": {"service": {"name": "web", "port": {"number": 80}}}},
            {"backend": {"service": {"name": "other", "port": {"number": 80}}}}]}}]});
        retarget(&mut v, "web", "web-canary");
        assert_eq!(v["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"], "web-canary");
        assert_eq!(v["rules"][0]["http"]["paths"][1]["backend"]["service"]["name"], "other");
    }
}
