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

/// Points every backend naming service `from` at `to`.
pub(super) fn retarget(v: &mut Value, from: &str, to: &str) {
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
