//! Rollback the way `kubectl rollout undo` does (`DeploymentRollbacker`):
//! the previous revision's ReplicaSet template, minus `pod-template-hash`,
//! written back with one JSON patch of `/spec/template` and the
//! annotations. `replicas` is never written, so an HPA keeps owning it.
//! [`previous`] and [`patch`] are pure; [`undo`] does the calls.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::api::{Api, ListParams, Patch, PatchParams};
use tokio::time::Instant;

use super::FIELD_MANAGER;
use super::error::{KubeError, ObjectRef};
use super::rollout::{HASH_LABEL, REVISION, selector};

/// Annotations the Deployment keeps rather than taking the ReplicaSet's
/// (kubectl's `annotationsToSkip`).
const KEEP: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

/// The ReplicaSet to go back to among those controlled by `d`: the
/// second-highest revision (kubectl's `deploymentRevision` with
/// `toRevision == 0`) once the controller has made the newest one from
/// `d`'s template. While it has not (an undo sent right after an apply,
/// before the controller observed it), the newest ReplicaSet is what
/// served, and it is the one returned: kubectl's choice would go one
/// revision further back than what served before the apply.
///
/// # Errors
/// [`KubeError::NoHistory`] when there is no earlier revision.
pub fn previous<'a>(
    d: &Deployment,
    replica_sets: &'a [ReplicaSet],
    object: &ObjectRef,
) -> Result<&'a ReplicaSet, KubeError> {
    let uid = d.metadata.uid.as_deref();
    let mut revs: Vec<(i64, &ReplicaSet)> = replica_sets
        .iter()
        .filter(|rs| {
            rs.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
        })
        .filter_map(|rs| {
            // kubectl skips a ReplicaSet whose revision does not parse.
            let rev = rs.metadata.annotations.as_ref()?.get(REVISION)?.parse::<i64>().ok()?;
            Some((rev, rs))
        })
        .collect();
    revs.sort_by_key(|(r, _)| std::cmp::Reverse(*r));
    let current = d.spec.as_ref().map(|s| without_hash(&s.template));
    let newest_is_current = revs.first().is_some_and(|(_, rs)| {
        rs.spec.as_ref().and_then(|s| s.template.as_ref()).map(without_hash) == current
    });
    match revs.get(if newest_is_current { 1 } else { 0 }) {
        Some((_, rs)) => Ok(rs),
        None => Err(KubeError::NoHistory { object: object.clone() }),
    }
}

fn without_hash(t: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = t.clone();
    if let Some(l) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        l.remove(HASH_LABEL);
    }
    t
}

/// The JSON patch kubectl sends, or `None` when the template already
/// matches `rs` (kubectl's "skipped rollback").
///
/// # Errors
/// [`KubeError::Paused`] for a paused Deployment (checked after the
/// revision lookup, as kubectl does).
pub fn patch(
    d: &Deployment,
    rs: &ReplicaSet,
    object: &ObjectRef,
) -> Result<Option<json_patch::Patch>, KubeError> {
    if d.spec.as_ref().and_then(|s| s.paused) == Some(true) {
        return Err(KubeError::Paused { object: object.clone(), action: "rollback" });
    }
    let template = rs.spec.as_ref().and_then(|s| s.template.clone()).unwrap_or_default();
    let current = d.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    // kubectl's equalIgnoreHash: the hash label on either side is ignored.
    if without_hash(&template) == without_hash(&current) {
        return Ok(None);
    }
    let template = without_hash(&template);
    let empty = BTreeMap::new();
    let d_ann = d.metadata.annotations.as_ref().unwrap_or(&empty);
    let mut annotations: BTreeMap<String, String> =
        KEEP.iter().filter_map(|k| d_ann.get(*k).map(|v| (k.to_string(), v.clone()))).collect();
    for (k, v) in rs.metadata.annotations.as_ref().unwrap_or(&empty) {
        if !KEEP.contains(&k.as_str()) {
            annotations.insert(k.clone(), v.clone());
        }
    }
    let ops = serde_json::json!([
        {"op": "replace", "path": "/spec/template", "value": template},
        {"op": "replace", "path": "/metadata/annotations", "value": annotations},
    ]);
    serde_json::from_value(ops).map(Some).map_err(|e| KubeError::Api {
        object: object.clone(),
        verb: "patch",
        message: e.to_string(),
    })
}

/// What an undo did.
#[derive(Debug, Clone, PartialEq)]
pub enum Undone {
    /// Patched back to this revision's template (`template`, without the
    /// hash label: what the Deployment runs now).
    RolledBack { revision: String, template: Box<PodTemplateSpec> },
    /// The template already matched the previous revision.
    Skipped { revision: String },
}

fn revision_of(rs: &ReplicaSet) -> String {
    rs.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)).cloned().unwrap_or_default()
}

/// The Deployment and the ReplicaSets its selector matches.
async fn read(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    object: &ObjectRef,
) -> Result<(Deployment, Vec<ReplicaSet>), KubeError> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
    let d = deployments
        .get(name)
        .await
        .map_err(|e| KubeError::from_api(e, "get", "deployments", "apps", object.clone()))?;
    let mut lp = ListParams::default();
    if let Some(sel) = selector(&d) {
        lp = lp.labels(&sel);
    }
    let rss = super::paged::list_all(&replica_sets, &lp)
        .await
        .map_err(|e| KubeError::from_api(e, "list", "replicasets", "apps", object.clone()))?;
    Ok((d, rss))
}

/// Waits (bounded) until the controller has seen the Deployment's latest
/// spec, so that its ReplicaSets include the one our apply made. An undo
/// sent before that takes the "previous" revision to be the one before
/// the serving one: one revision too far back.
pub async fn observed(client: &kube::Client, object: &ObjectRef, within: Duration) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), &object.namespace);
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        match api.get_opt(&object.name).await {
            Ok(Some(d)) => {
                let want = d.metadata.generation.unwrap_or(0);
                if d.status.and_then(|s| s.observed_generation).unwrap_or(0) >= want {
                    return;
                }
            }
            _ => return,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `kubectl rollout undo deployment/<name>`.
///
/// # Errors
/// The API's refusal (named verb/resource), [`KubeError::NoHistory`] or
/// [`KubeError::Paused`].
pub async fn undo(client: &kube::Client, namespace: &str, name: &str) -> Result<Undone, KubeError> {
    let object = ObjectRef::deployment(namespace, name);
    let (d, rss) = read(client, namespace, name, &object).await?;
    let rs = previous(&d, &rss, &object)?;
    let revision = revision_of(rs);
    let Some(p) = patch(&d, rs, &object)? else { return Ok(Undone::Skipped { revision }) };
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    deployments
        .patch(name, &params, &Patch::<()>::Json(p))
        .await
        .map_err(|e| KubeError::from_api(e, "patch", "deployments", "apps", object.clone()))?;
    let template =
        Box::new(rs.spec.as_ref().and_then(|s| s.template.as_ref()).map(without_hash).unwrap_or_default());
    Ok(Undone::RolledBack { revision, template })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, ReplicaSetSpec};
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn template(image: &str, hash: Option<&str>) -> PodTemplateSpec {
        let mut labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
        if let Some(h) = hash {
            labels.insert(HASH_LABEL.into(), h.into());
        }
        PodTemplateSpec {
            metadata: Some(ObjectMeta { labels: Some(labels), ..Default::default() }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    fn rs(rev: &str, image: &str, owner: &str) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                annotations: Some(BTreeMap::from([
                    (REVISION.to_string(), rev.to_string()),
                    ("team".to_string(), format!("rs-{rev}")),
                ])),
                owner_references: Some(vec![OwnerReference {
                    uid: owner.into(),
                    controller: Some(true),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                template: Some(template(image, Some(&format!("h{rev}")))),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn dep(image: &str) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                uid: Some("u1".into()),
                annotations: Some(BTreeMap::from([
                    (REVISION.to_string(), "3".to_string()),
                    ("team".to_string(), "dep".to_string()),
                ])),
                ..Default::default()
            },
            spec: Some(DeploymentSpec { template: template(image, None), ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn second_highest_controlled_revision_wins() {
        let o = ObjectRef::deployment("ns", "web");
        let all =
            vec![rs("1", "a:1", "u1"), rs("3", "a:3", "u1"), rs("2", "a:2", "u1"), rs("9", "x", "other")];
        let p = previous(&dep("a:3"), &all, &o).unwrap();
        assert_eq!(p.metadata.annotations.as_ref().unwrap()[REVISION], "2");
        assert!(matches!(previous(&dep("a:3"), &all[1..2], &o), Err(KubeError::NoHistory { .. })));
    }

    /// An apply the controller has not observed yet: no ReplicaSet of
    /// its template is the newest, so the newest (what served) is the way
    /// back, not the one before it; also when the apply went back to an
    /// older revision's template.
    #[test]
    fn before_the_controller_observed_the_apply_the_newest_revision_is_the_way_back() {
        let o = ObjectRef::deployment("ns", "web");
        let all = vec![rs("1", "a:1", "u1"), rs("3", "a:3", "u1"), rs("2", "a:2", "u1")];
        for applied in ["a:4", "a:1"] {
            let p = previous(&dep(applied), &all, &o).unwrap();
            assert_eq!(p.metadata.annotations.as_ref().unwrap()[REVISION], "3", "{applied}");
            // Patched back to a:3's template.
            assert!(patch(&dep(applied), p, &o).unwrap().is_some());
        }
        // A single ReplicaSet that is not the template's: it is what served.
        assert_eq!(
            previous(&dep("a:4"), &all[1..2], &o).unwrap().metadata.annotations.as_ref().unwrap()[REVISION],
            "3"
        );
    }

    #[test]
    fn patch_is_kubectls() {
        let o = ObjectRef::deployment("ns", "web");
        let p = patch(&dep("a:3"), &rs("2", "a:2", "u1"), &o).unwrap().unwrap();
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v[0]["op"], "replace");
        assert_eq!(v[0]["path"], "/spec/template");
        assert_eq!(v[0]["value"]["spec"]["containers"][0]["image"], "a:2");
        assert!(v[0]["value"]["metadata"]["labels"].get(HASH_LABEL).is_none());
        assert_eq!(v[1]["path"], "/metadata/annotations");
        // The revision is the Deployment's; the rest come from the ReplicaSet.
        assert_eq!(v[1]["value"][REVISION], "3");
        assert_eq!(v[1]["value"]["team"], "rs-2");
        // No replicas anywhere: an HPA keeps owning them.
        assert!(!v.to_string().contains("replicas"));
    }

    #[test]
    fn same_template_is_skipped_and_paused_refused() {
        let o = ObjectRef::deployment("ns", "web");
        assert!(patch(&dep("a:2"), &rs("2", "a:2", "u1"), &o).unwrap().is_none());
        let mut d = dep("a:3");
        d.spec.as_mut().unwrap().paused = Some(true);
        assert!(matches!(patch(&d, &rs("2", "a:2", "u1"), &o), Err(KubeError::Paused { .. })));
    }
}
