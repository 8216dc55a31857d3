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
use super::{ClusterRun, Deploy, FIELD_MANAGER, workers};
use crate::inputs::{DeploymentRef, KubernetesSpec};
use crate::runner::Runner;
use crate::targets::wayback::WayBack;

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

/// One Deployment and its live Service.
struct Pair {
    source: Current,
    service: Service,
    preview: Option<Service>,
    /// The colour the live Service selects now (`None`: the source's pods).
    live: Option<&'static str>,
    candidate: &'static str,
    /// Whether the candidate colour's Deployment existed before this run
    /// (it holds an earlier release, put back on the way back); one this
    /// run created is deleted on the way back, so that `mode: rollback`
    /// never brings back a release that never served.
    candidate_existed: bool,
    /// On the first deploy (`live` is `None`): the pod-template-hash the
    /// live Service was pinned to, so a way back re-pins rather than
    /// letting the candidate's pods (same app labels) in.
    pin: std::sync::OnceLock<String>,
    replicas: i32,
    /// The image the serving Deployment runs.
    old_image: Option<String>,
}

impl Pair {
    fn ns(&self) -> &str {
        &self.source.object.namespace
    }
    fn name(&self) -> &str {
        &self.source.object.name
    }
    fn colour_name(&self, colour: &str) -> String {
        format!("{}-{colour}", self.name())
    }
    fn candidate_name(&self) -> String {
        self.colour_name(self.candidate)
    }
    /// In `mode: rollback`, the Deployment brought back: the colour at
    /// zero, or, right after the first blue-green deploy (no other colour
    /// yet), the source itself, kept at zero as the template.
    fn back_name(&self) -> String {
        if self.candidate_existed { self.candidate_name() } else { self.name().to_string() }
    }
    /// The Deployment serving now.
    fn old_name(&self) -> String {
        match self.live {
            Some(c) => self.colour_name(c),
            None => self.name().to_string(),
        }
    }
    fn service_ref(&self) -> ObjectRef {
        ObjectRef::new("service", self.ns(), self.service.metadata.name.as_deref().unwrap_or_default())
    }
    /// The source's selector labels plus the colour.
    fn selector_for(&self, colour: &str) -> BTreeMap<String, String> {
        let mut s = source_labels(&self.source.deployment);
        s.insert(COLOUR.into(), colour.into());
        s
    }
}

fn source_labels(d: &Deployment) -> BTreeMap<String, String> {
    d.spec.as_ref().and_then(|s| s.selector.match_labels.clone()).unwrap_or_default()
}

fn other(c: &str) -> &'static str {
    if c == "blue" { "green" } else { "blue" }
}

/// The colour Deployment from the source's spec: the colour in its
/// selector and pods, the image (and the app's Secret) in the container.
/// `deploy_id`: the deploy that makes it (`None` for a plan), kept in the
/// annotation [`workers::ROLLED_BY`] so that `mode: rollback` knows which
/// workers went with it.
pub fn colour_deployment(
    source: &Current,
    colour: &str,
    image: &str,
    env_from: Option<&[k8s_openapi::api::core::v1::EnvFromSource]>,
    replicas: i32,
    deploy_id: Option<&str>,
) -> serde_json::Value {
    let d = &source.deployment;
    let mut spec = serde_json::to_value(d.spec.clone().unwrap_or_default()).unwrap_or_default();
    spec["replicas"] = replicas.into();
    spec["selector"]["matchLabels"][COLOUR] = colour.into();
    spec["template"]["metadata"]["labels"][COLOUR] = colour.into();
    if let Some(o) = spec.as_object_mut() {
        o.remove("paused");
    }
    if let Some(cs) = spec["template"]["spec"]["containers"].as_array_mut() {
        for c in cs.iter_mut().filter(|c| c["name"] == source.container.as_str()) {
            c["image"] = image.into();
            if let Some(f) = env_from {
                c["envFrom"] = serde_json::to_value(f).unwrap_or_default();
            }
        }
    }
    let mut labels = d.metadata.labels.clone().unwrap_or_default();
    labels.insert(COLOUR.into(), colour.into());
    labels.insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
    let mut annotations = json!({"deploy-action/source": source.object.name});
    if let Some(id) = deploy_id {
        annotations[workers::ROLLED_BY] = id.into();
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": format!("{}-{colour}", source.object.name),
            "namespace": source.object.namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": spec,
    })
}

/// Reads the Deployment of `r` (the template) and its live Service.
async fn read_pair(client: &kube::Client, ns: &str, r: &DeploymentRef) -> Result<Pair, KubeError> {
    let source = apply::read(client, ns, r, None).await?;
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let name = source.object.name.clone();
    let get = |svc: String| {
        let services = services.clone();
        async move {
            let svc_ref = ObjectRef::new("service", ns, &svc);
            services
                .get_opt(&svc)
                .await
                .map_err(|e| KubeError::from_api(e, "get", "services", "", svc_ref.clone()))
                .map(|s| (s, svc_ref))
        }
    };
    let (service, svc_ref) = get(r.service_name().to_string()).await?;
    let service = service.ok_or_else(|| {
        KubeError::Config(match &r.service {
            Some(_) => format!("{svc_ref} not found: the services file names it as {}'s live Service", source.object),
            None => format!(
                "{svc_ref} not found: blue-green switches the Service named like the Deployment (or the one a services file names with 'service')"
            ),
        })
    })?;
    let selector = service.spec.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();
    let wanted = source_labels(&source.deployment);
    if selector.is_empty() || wanted.iter().any(|(k, v)| selector.get(k).is_some_and(|s| s != v)) {
        return Err(KubeError::Config(format!(
            "{svc_ref}: its selector {selector:?} does not select the pods of {} ({wanted:?})",
            source.object
        )));
    }
    shared_with_others(client, ns, &svc_ref, &selector, &source.object.name).await?;
    let live = match selector.get(COLOUR).map(String::as_str) {
        Some("blue") => Some("blue"),
        Some("green") => Some("green"),
        _ => None,
    };
    // The preview: the one the services file names (it must exist), else
    // `<service>-preview` if there is one.
    let (preview, preview_ref) =
        get(r.preview.clone().unwrap_or_else(|| format!("{}-preview", r.service_name()))).await?;
    if preview.is_none() && r.preview.is_some() {
        return Err(KubeError::Config(format!(
            "{preview_ref} not found: the services file names it as {}'s preview Service",
            source.object
        )));
    }
    // What serves now: the live colour's Deployment, else the source.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let get_colour = |c: &str| {
        let object = ObjectRef::deployment(ns, &format!("{name}-{c}"));
        let deployments = deployments.clone();
        async move {
            deployments
                .get_opt(&object.name)
                .await
                .map_err(|e| KubeError::from_api(e, "get", "deployments", "apps", object.clone()))
                .map(|d| (d, object))
        }
    };
    let serving = match live {
        Some(c) => match get_colour(c).await? {
            (Some(d), _) => d,
            (None, object) => {
                return Err(KubeError::Config(format!(
                    "{object} not found, yet {svc_ref} selects {COLOUR}={c}: restore it, or point the Service's selector back at {name}'s pods"
                )));
            }
        },
        None => source.deployment.clone(),
    };
    let replicas = serving.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(1);
    let old_image = apply::container_image(&serving, Some(&source.container));
    let candidate = live.map(other).unwrap_or("blue");
    let candidate_existed = get_colour(candidate).await?.0.is_some();
    Ok(Pair {
        source,
        service,
        preview,
        live,
        candidate,
        candidate_existed,
        pin: std::sync::OnceLock::new(),
        replicas,
        old_image,
    })
}

/// Refuses a Deployment that a HorizontalPodAutoscaler scales: blue-green
/// runs the colours at fixed replicas and keeps the source at zero, so the
/// HPA (which targets the source) would be switched off without a word.
async fn autoscaled(client: &kube::Client, ns: &str, pairs: &[Pair]) -> Result<(), KubeError> {
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    if pairs.is_empty() {
        return Ok(());
    }
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), ns);
    let list = super::paged::list_all(&api, &ListParams::default()).await.map_err(|e| {
        KubeError::from_api(
            e,
            "list",
            "horizontalpodautoscalers",
            "autoscaling",
            ObjectRef::new("horizontalpodautoscaler", ns, ""),
        )
    })?;
    for hpa in &list {
        let target = &hpa.spec.scale_target_ref;
        let scaled = pairs.iter().find(|p| {
            target.kind == "Deployment"
                && [p.name().to_string(), p.colour_name("blue"), p.colour_name("green")]
                    .contains(&target.name)
        });
        if let Some(p) = scaled {
            return Err(KubeError::Autoscaled {
                hpa: ObjectRef::new(
                    "horizontalpodautoscaler",
                    ns,
                    hpa.metadata.name.as_deref().unwrap_or_default(),
                ),
                deployment: p.source.object.clone(),
            });
        }
    }
    Ok(())
}

/// Refuses a live Service whose selector also selects the pods of another
/// Deployment (one not `source` nor its colours): the flip (and, on the
/// first deploy, the pin) narrows the selector to `source`'s pods, and the
/// other's pods would leave the Service's endpoints, an outage of something
/// this run does not deploy. The `pod-template-hash` pin is ours; a
/// Deployment at zero replicas has no pods to lose.
async fn shared_with_others(
    client: &kube::Client,
    ns: &str,
    service: &ObjectRef,
    selector: &BTreeMap<String, String>,
    source: &str,
) -> Result<(), KubeError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let list = super::paged::list_all(&api, &ListParams::default())
        .await
        .map_err(|e| KubeError::from_api(e, "list", "deployments", "apps", service.clone()))?;
    let ours = |n: &str| n == source || n == format!("{source}-blue") || n == format!("{source}-green");
    let selects = |d: &Deployment| {
        let labels =
            d.spec.as_ref().and_then(|s| s.template.metadata.as_ref()).and_then(|m| m.labels.as_ref());
        let Some(labels) = labels else { return false };
        selector.iter().filter(|(k, _)| *k != HASH_LABEL).all(|(k, v)| labels.get(k) == Some(v))
    };
    let others: Vec<String> = list
        .iter()
        .filter(|d| !d.metadata.name.as_deref().is_some_and(ours))
        .filter(|d| d.spec.as_ref().and_then(|s| s.replicas) != Some(0))
        .filter(|d| selects(d))
        .map(|d| ObjectRef::deployment(ns, d.metadata.name.as_deref().unwrap_or_default()).to_string())
        .collect();
    if others.is_empty() {
        return Ok(());
    }
    Err(KubeError::SharedService {
        service: service.clone(),
        deployment: ObjectRef::deployment(ns, source),
        others: others.join(", "),
    })
}

/// The pods a selector matches that are Ready and not being deleted.
async fn ready_pods_of(
    client: &kube::Client,
    ns: &str,
    selector: &BTreeMap<String, String>,
) -> Result<Vec<Pod>, KubeError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list =
        super::paged::list_all(&pods, &ListParams::default().labels(&rollout::label_selector(selector)))
            .await
            .map_err(|e| KubeError::from_api(e, "list", "pods", "", ObjectRef::new("pod", ns, "")))?;
    let ready = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    Ok(list.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none() && ready(p)).collect())
}

/// The ready pods a selector matches, by name.
async fn ready_pods(
    client: &kube::Client,
    ns: &str,
    selector: &BTreeMap<String, String>,
) -> Result<BTreeSet<String>, KubeError> {
    Ok(ready_pods_of(client, ns, selector).await?.into_iter().filter_map(|p| p.metadata.name).collect())
}

/// The pods a Service's EndpointSlices list as ready.
fn endpoint_pods(slices: &BTreeMap<String, EndpointSlice>) -> BTreeSet<String> {
    slices
        .values()
        .flat_map(|s| s.endpoints.iter().flatten())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .filter_map(|e| e.target_ref.as_ref().and_then(|t| t.name.clone()))
        .collect()
}

/// Waits (watching the Service's EndpointSlices) until they list exactly
/// the ready pods of `selector`. Returns how many.
async fn verify_endpoints(
    client: &kube::Client,
    service: &ObjectRef,
    selector: &BTreeMap<String, String>,
    runner: &Runner,
) -> Result<usize, KubeError> {
    let slices_api: Api<EndpointSlice> = Api::namespaced(client.clone(), &service.namespace);
    let cfg = watcher::Config::default().labels(&format!("kubernetes.io/service-name={}", service.name));
    let mut events = watcher(slices_api, cfg).default_backoff().boxed();
    let mut slices: BTreeMap<String, EndpointSlice> = BTreeMap::new();
    let deadline = Instant::now() + ENDPOINTS_WITHIN;
    let mut last = (BTreeSet::new(), BTreeSet::new());
    loop {
        let ev = tokio::select! {
            ev = events.next() => ev,
            _ = tokio::time::sleep_until(deadline) => {
                let (want, got) = last;
                return Err(KubeError::Api {
                    object: service.clone(),
                    verb: "verify",
                    message: format!(
                        "its EndpointSlices did not come to list exactly the ready pods {want:?} within {}s (they list {got:?})",
                        ENDPOINTS_WITHIN.as_secs()
                    ),
                });
            }
        };
        match ev {
            Some(Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s))) => {
                slices.insert(s.metadata.name.clone().unwrap_or_default(), s);
            }
            Some(Ok(watcher::Event::Delete(s))) => {
                slices.remove(s.metadata.name.as_deref().unwrap_or_default());
            }
            Some(Ok(watcher::Event::Init)) => slices.clear(),
            Some(Ok(watcher::Event::InitDone)) => {}
            Some(Err(e)) => {
                super::rollout::check_watch_error(&e, "endpointslices", "discovery.k8s.io", service)?;
                continue;
            }
            None => continue,
        }
        let got = endpoint_pods(&slices);
        let want = ready_pods(client, &service.namespace, selector).await?;
        if !want.is_empty() && got == want {
            runner.line(&format!(
                "{service}: its EndpointSlices list the {} ready pod(s) of the new colour, and no others",
                want.len()
            ));
            return Ok(want.len());
        }
        last = (want, got);
    }
}

/// Sets the Service's selector (a merge patch: `None` values remove keys).
async fn set_selector(
    client: &kube::Client,
    service: &ObjectRef,
    selector: &BTreeMap<String, Option<String>>,
) -> Result<(), KubeError> {
    let api: Api<Service> = Api::namespaced(client.clone(), &service.namespace);
    let patch = json!({"spec": {"selector": selector}});
    api.patch(&service.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|e| KubeError::from_api(e, "patch", "services", "", service.clone()))
}

/// The selector patch that makes the Service select `colour` (or, with
/// `None`, the source's pods of ReplicaSet `pin`).
fn selector_patch(p: &Pair, colour: Option<&str>, pin: Option<&str>) -> BTreeMap<String, Option<String>> {
    let mut s: BTreeMap<String, Option<String>> =
        source_labels(&p.source.deployment).into_iter().map(|(k, v)| (k, Some(v))).collect();
    s.insert(COLOUR.into(), colour.map(String::from));
    s.insert(HASH_LABEL.into(), pin.map(String::from));
    s
}

async fn scale(client: &kube::Client, ns: &str, name: &str, replicas: i32) -> Result<(), KubeError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let patch = json!({"spec": {"replicas": replicas}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|e| KubeError::from_api(e, "patch", "deployments", "apps", ObjectRef::deployment(ns, name)))
}

/// The pod-template-hash of the ReplicaSet whose pods serve for the
/// source (on the first deploy).
async fn serving_hash(client: &kube::Client, p: &Pair) -> Result<Option<String>, KubeError> {
    let pods = ready_pods_of(client, p.ns(), &source_labels(&p.source.deployment)).await?;
    let mut hashes: BTreeMap<String, usize> = BTreeMap::new();
    for pod in pods.iter().filter(|p| !p.metadata.labels.as_ref().is_some_and(|l| l.contains_key(COLOUR))) {
        if let Some(h) = pod.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL)) {
            *hashes.entry(h.clone()).or_default() += 1;
        }
    }
    Ok(hashes.into_iter().max_by_key(|(_, n)| *n).map(|(h, _)| h))
}

/// Runs the blue-green deploy of every Deployment together.
pub async fn deploy(
    client: &kube::Client,
    spec: &KubernetesSpec,
    work: &Deploy<'_>,
    timing: Timing,
    runner: &Runner,
    cancel: &CancellationToken,
) -> ClusterRun {
    let ns = spec.namespace.as_str();
    let mut out = ClusterRun { stage: "inspect", ..Default::default() };
    let started = Instant::now();
    // Read everything first; a missing Service or a selector that does not
    // fit changes nothing.
    let mut pairs = Vec::new();
    {
        let _g = runner
            .group(&format!("Read {} deployment(s) and their Services in {ns}", spec.deployments.len()));
        for r in spec.deployments.iter().filter(|r| !r.worker) {
            match read_pair(client, ns, r).await {
                Ok(p) => {
                    runner.line(&format!(
                        "{}: live {}, candidate {}, {} replica(s)",
                        p.service_ref(),
                        p.live.map_or_else(
                            || format!("{} (not yet blue-green)", p.name()),
                            |c| p.colour_name(c)
                        ),
                        p.candidate_name(),
                        p.replicas
                    ));
                    if out.previous_image.is_none() {
                        out.previous_image = p.old_image.clone();
                    }
                    pairs.push(p);
                }
                Err(e) => return ClusterRun { error: Some(e), rolled_back: true, ..out },
            }
        }
    }
    if let Err(e) = autoscaled(client, ns, &pairs).await {
        return ClusterRun { error: Some(e), rolled_back: true, ..out };
    }
    let worker_refs: Vec<&DeploymentRef> = spec.deployments.iter().filter(|r| r.worker).collect();
    let workers = match workers::read(client, ns, &worker_refs).await {
        Ok(w) => w,
        Err(e) => return ClusterRun { error: Some(e), rolled_back: true, ..out },
    };
    for w in &workers {
        runner.line(&format!(
            "{}: worker (no Service), runs {}; rolled in place once the candidates are ready",
            w.object,
            w.image.as_deref().unwrap_or("(no image)")
        ));
    }
    if let Some(s) = &work.secret {
        out.stage = "secrets";
        if let Err(e) = super::secret::ensure(client, ns, s, false).await {
            return unchanged(ClusterRun { error: Some(e), ..out }, &pairs);
        }
    }
    if let Some(first) = pairs.first() {
        out.stage = "migrate";
        match super::migrate_first(client, work, &first.source, runner, cancel).await {
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

/// The way back short of a flip, or once the Services went back: the
/// workers this run rolled undone first (they serve with the Services),
/// then, after `drain` (non-zero once the candidates took traffic), every
/// candidate to zero (serving nothing: the clean-up, last).
async fn back_out(
    client: &kube::Client,
    pairs: &[Pair],
    rolled: &[workers::Rolled],
    out: &mut ClusterRun,
    drain: Duration,
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
    drain_before_removal(drain, "the candidates are retired", runner, way.cancel()).await;
    retire_candidates(client, pairs, runner, way).await;
}

/// The drain on every way out of traffic: once a Service no longer selects
/// some pods, endpoints, kube-proxy and ingress controllers still send
/// them requests for a while, so they are kept `drain` before they are
/// removed or scaled down. A signal cuts the wait short (the way back's
/// budget goes to the clean-up, and the runner kills the job soon after).
pub(super) async fn drain_before_removal(
    drain: Duration,
    what: &str,
    runner: &Runner,
    cancel: &CancellationToken,
) {
    if drain.is_zero() {
        return;
    }
    if cancel.is_cancelled() {
        runner.line(&format!("no drain before {what}: cancelled"));
        return;
    }
    runner.line(&format!("draining for {}s before {what}", drain.as_secs()));
    tokio::select! {
        () = tokio::time::sleep(drain) => {}
        () = cancel.cancelled() => runner.line("drain cut short: cancelled"),
    }
}

/// Nothing of the pairs changed (or it was all put back): every row
/// `unchanged`, the run rolled back.
fn unchanged(mut out: ClusterRun, pairs: &[Pair]) -> ClusterRun {
    out.units =
        pairs.iter().map(|p| (p.source.object.to_string(), "unchanged".into(), Duration::ZERO)).collect();
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
    /// Steps 2 to 4: previews, the flip, smoke tests and the observe window,
    /// the old colour retired.
    async fn flip_and_observe(&self, mut out: ClusterRun, started: Instant) -> ClusterRun {
        let Flip { client, spec, work, timing, pairs, runner, way, .. } = *self;
        let cancel = way.cancel();
        let ns = spec.namespace.as_str();
        // 2. Previews.
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
            let checked = tokio::select! {
                r = checked => r,
                () = cancel.cancelled() => break,
            };
            if let Err(e) = checked {
                out.error = Some(e);
                return self.not_flipped(out).await;
            }
        }
        if cancel.is_cancelled() {
            out.cancelled = true;
            return self.not_flipped(out).await;
        }
        if let Err(e) = work.smoke(true, runner, cancel).await {
            out.error = Some(e);
            return self.not_flipped(out).await;
        }
        if cancel.is_cancelled() {
            out.cancelled = true;
            return self.not_flipped(out).await;
        }

        // 3. The flip, every Service, never cut half-way.
        out.stage = "switch";
        let flipped = {
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
        };
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
            if !timing.drain.is_zero() {
                runner.line(&format!("draining for {}s", timing.drain.as_secs()));
                tokio::select! {
                    _ = tokio::time::sleep(timing.drain) => {}
                    _ = cancel.cancelled() => {}
                }
            }
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
                (p.source.object.to_string(), note, started.elapsed())
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
        out.units = self
            .pairs
            .iter()
            .map(|p| (p.source.object.to_string(), "switched back".into(), started.elapsed()))
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

/// Flips every given Service back to what served before. Returns whether
/// all went back. After a signal, within the way back.
async fn flip_back(client: &kube::Client, pairs: &[&Pair], runner: &Runner, way: &WayBack<'_>) -> bool {
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
async fn retire_candidates(client: &kube::Client, pairs: &[Pair], runner: &Runner, way: &WayBack<'_>) {
    let all = async {
        for p in pairs {
            let name = p.candidate_name();
            let object = ObjectRef::deployment(p.ns(), &name);
            let off = if p.candidate_existed {
                match scale(client, p.ns(), &name, 0).await {
                    Ok(()) => super::undo::undo(client, p.ns(), &name).await.map(|u| {
                        if let super::undo::Undone::RolledBack { revision, .. } = u {
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
    drain_before_removal(timing.drain, "the colour rolled back from is scaled to 0", runner, cancel).await;
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

/// `mode: plan` for blue-green: the steps, the candidates sent as a
/// server-side dry run.
pub async fn plan(
    client: &kube::Client,
    spec: &KubernetesSpec,
    app: &str,
    image: &str,
    runner: &Runner,
) -> Result<Vec<String>, KubeError> {
    let ns = spec.namespace.as_str();
    let mut lines = Vec::new();
    let worker_refs: Vec<&DeploymentRef> = spec.deployments.iter().filter(|r| r.worker).collect();
    for t in workers::read(client, ns, &worker_refs).await? {
        let image = t.image_to_run(image);
        let env_from = apply::env_from_as_is(&t, app);
        let changes = apply::set_image(client, &t, image, env_from.as_deref(), runner, true).await?;
        lines.push(if changes {
            format!("{}: worker, rolled in place to {image} once every candidate is available (no Service to flip)", t.object)
        } else {
            format!("{}: worker, already runs {image}: nothing to do", t.object)
        });
    }
    for r in spec.deployments.iter().filter(|r| !r.worker) {
        let p = read_pair(client, ns, r).await?;
        autoscaled(client, ns, std::slice::from_ref(&p)).await?;
        let image = p.source.image_to_run(image);
        let body = colour_deployment(&p.source, p.candidate, image, None, p.replicas, None);
        let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
        api.patch(
            &p.candidate_name(),
            &PatchParams::apply(FIELD_MANAGER).force().dry_run(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|e| {
            KubeError::from_api(
                e,
                "patch",
                "deployments",
                "apps",
                ObjectRef::deployment(ns, &p.candidate_name()),
            )
        })?;
        lines.push(format!(
            "deployment {ns}/{}: {} replica(s) of {image} (blue-green candidate){}; then {} flips to {COLOUR}={} once every candidate is available, its EndpointSlices checked; then {} scales to 0",
            p.candidate_name(),
            p.replicas,
            match p.preview.as_ref().and_then(|s| s.metadata.name.as_deref()) {
                Some(preview) => format!(", checked through service {ns}/{preview}"),
                None => String::new(),
            },
            p.service_ref(),
            p.candidate,
            p.old_name()
        ));
    }
    Ok(lines)
}
