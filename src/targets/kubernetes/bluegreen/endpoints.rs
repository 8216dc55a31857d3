//! What the endpoint controller computed: ready pods, a Service's
//! EndpointSlices verified against them, the selector set, a colour scaled.

use super::*;

/// The pods a selector matches that are Ready and not being deleted.
pub(super) async fn ready_pods_of(
    client: &kube::Client,
    ns: &str,
    selector: &BTreeMap<String, String>,
) -> Result<Vec<Pod>, KubeError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = super::super::paged::list_all(
        &pods,
        &ListParams::default().labels(&rollout::label_selector(selector)),
    )
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
pub(super) async fn ready_pods(
    client: &kube::Client,
    ns: &str,
    selector: &BTreeMap<String, String>,
) -> Result<BTreeSet<String>, KubeError> {
    Ok(ready_pods_of(client, ns, selector).await?.into_iter().filter_map(|p| p.metadata.name).collect())
}

/// The pods a Service's EndpointSlices list as ready.
pub(super) fn endpoint_pods(slices: &BTreeMap<String, EndpointSlice>) -> BTreeSet<String> {
    slices
        .values()
        .flat_map(|s| s.endpoints.iter().flatten())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .filter_map(|e| e.target_ref.as_ref().and_then(|t| t.name.clone()))
        .collect()
}

/// Waits (watching the Service's EndpointSlices) until they list exactly
/// the ready pods of `selector`. Returns how many.
pub(super) async fn verify_endpoints(
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
                super::super::rollout::check_watch_error(&e, "endpointslices", "discovery.k8s.io", service)?;
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
pub(super) async fn set_selector(
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
pub(super) fn selector_patch(
    p: &Pair,
    colour: Option<&str>,
    pin: Option<&str>,
) -> BTreeMap<String, Option<String>> {
    let mut s: BTreeMap<String, Option<String>> =
        source_labels(&p.source.deployment).into_iter().map(|(k, v)| (k, Some(v))).collect();
    s.insert(COLOUR.into(), colour.map(String::from));
    s.insert(HASH_LABEL.into(), pin.map(String::from));
    s
}

pub(super) async fn scale(
    client: &kube::Client,
    ns: &str,
    name: &str,
    replicas: i32,
) -> Result<(), KubeError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let patch = json!({"spec": {"replicas": replicas}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|e| KubeError::from_api(e, "patch", "deployments", "apps", ObjectRef::deployment(ns, name)))
}

/// The pod-template-hash of the ReplicaSet whose pods serve for the
/// source (on the first deploy).
pub(super) async fn serving_hash(client: &kube::Client, p: &Pair) -> Result<Option<String>, KubeError> {
    let pods = ready_pods_of(client, p.ns(), &source_labels(&p.source.deployment)).await?;
    let mut hashes: BTreeMap<String, usize> = BTreeMap::new();
    for pod in pods.iter().filter(|p| !p.metadata.labels.as_ref().is_some_and(|l| l.contains_key(COLOUR))) {
        if let Some(h) = pod.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL)) {
            *hashes.entry(h.clone()).or_default() += 1;
        }
    }
    Ok(hashes.into_iter().max_by_key(|(_, n)| *n).map(|(h, _)| h))
}
