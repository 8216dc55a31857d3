//! The objects a canary adds beside the stable Deployment: the canary
//! Deployment made from the stable's spec, and the router's backends
//! pointed at the canary Service.

use super::*;

pub(super) fn name_of(stable: &str) -> String {
    format!("{stable}-canary")
}

pub(super) fn stable_labels(d: &Deployment) -> BTreeMap<String, String> {
    d.spec.as_ref().and_then(|s| s.selector.match_labels.clone()).unwrap_or_default()
}

/// The stable's pod template labels, as the canary's pods carry them:
/// behind a weighted router without the stable Service's selector labels;
/// then the canary's own `selector` labels.
fn pod_labels(
    stable: &Deployment,
    traffic: &CanaryTraffic,
    selector: BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut labels = stable_pod_labels(stable);
    if !matches!(traffic, CanaryTraffic::Replicas) {
        for k in stable_labels(stable).keys() {
            labels.remove(k);
        }
    }
    labels.extend(selector);
    labels
}

/// The stable Deployment's pod template labels.
pub(super) fn stable_pod_labels(d: &Deployment) -> BTreeMap<String, String> {
    d.spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

/// The canary's pod labels beside `stable`, as [`canary_deployment`] sets them.
pub(super) fn canary_pod_labels(stable: &Current, traffic: &CanaryTraffic) -> BTreeMap<String, String> {
    pod_labels(&stable.deployment, traffic, canary_selector(stable, traffic))
}

/// The canary Deployment's selector: the stable's labels and the canary
/// track by replica ratio (the one Service balances over all pods); behind
/// a weighted router only `deploy-action/canary-of`, kept out of the
/// stable Service.
fn canary_selector(stable: &Current, traffic: &CanaryTraffic) -> BTreeMap<String, String> {
    match traffic {
        CanaryTraffic::Replicas => {
            let mut s = stable_labels(&stable.deployment);
            s.insert(TRACK.into(), "canary".into());
            s
        }
        _ => BTreeMap::from([(CANARY_OF.to_string(), stable.object.name.clone())]),
    }
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
    let selector = canary_selector(stable, traffic);
    spec["selector"] = json!({"matchLabels": selector});
    spec["template"]["metadata"]["labels"] = json!(pod_labels(d, traffic, selector));
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
