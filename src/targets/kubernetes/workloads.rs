//! StatefulSets and DaemonSets in a rolling deploy: read, judged exactly as
//! `kubectl rollout status` judges each kind (a StatefulSet's partition and
//! revisions, a DaemonSet's `updatedNumberScheduled`), their new pods
//! watched for failures that will not heal, and undone through their
//! ControllerRevisions as `kubectl rollout undo` does. Blue-green and
//! canary stay Deployment-only (refused with the inputs).
//!
//! [`sts_status`] and [`ds_status`] are pure; the rest does the calls.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};

use super::FIELD_MANAGER;
use super::error::{KubeError, ObjectRef};
use super::rollout::{PullGrace, Rolled, Verdict, selector_of, taken_over};
use super::undo::Undone;
use crate::inputs::WorkloadKind;
use crate::runner::Runner;
use tokio_util::sync::CancellationToken;

/// The label a StatefulSet's and a DaemonSet's pods carry: the
/// ControllerRevision they were made from (a StatefulSet's pods: its
/// name; a DaemonSet's: its hash).
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// How often the watch reads the object and its pods.
const POLL: Duration = Duration::from_millis(500);

/// A StatefulSet or DaemonSet as the watch and the undo see it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub meta: ObjectMeta,
    pub selector: LabelSelector,
    pub template: PodTemplateSpec,
    /// `kubectl rollout status`'s verdict.
    pub verdict: Verdict,
    /// The controller has seen the latest spec.
    pub observed: bool,
    /// `updateStrategy.type` is `OnDelete` (no rollout to judge).
    pub on_delete: bool,
    /// A StatefulSet's `status.updateRevision`.
    pub update_revision: Option<String>,
    pub rolled: Rolled,
}

impl Seen {
    /// The object in a Deployment's shape (metadata, selector, template,
    /// replicas): what the image apply and the messages read.
    pub fn as_deployment(&self) -> Deployment {
        Deployment {
            metadata: self.meta.clone(),
            spec: Some(k8s_openapi::api::apps::v1::DeploymentSpec {
                selector: self.selector.clone(),
                template: self.template.clone(),
                replicas: Some(self.rolled.replicas),
                ..Default::default()
            }),
            status: None,
        }
    }
}

/// kubectl's `StatefulSetStatusViewer.Status`, rule for rule and message
/// for message (an `OnDelete` StatefulSet is refused before any change).
pub fn sts_status(s: &StatefulSet) -> Verdict {
    let name = s.metadata.name.as_deref().unwrap_or_default();
    let spec = s.spec.clone().unwrap_or_default();
    let st = s.status.clone().unwrap_or_default();
    let strategy = spec.update_strategy.unwrap_or_default();
    if strategy.type_.as_deref().unwrap_or("RollingUpdate") != "RollingUpdate" {
        return Verdict::Failed(format!(
            "statefulset \"{name}\": rollout status is only available for RollingUpdate strategy type"
        ));
    }
    let observed = st.observed_generation.unwrap_or(0);
    if observed == 0 || s.metadata.generation.unwrap_or(0) > observed {
        return Verdict::Waiting("Waiting for statefulset spec update to be observed...".into());
    }
    let ready = st.ready_replicas.unwrap_or(0);
    if let Some(want) = spec.replicas
        && ready < want
    {
        return Verdict::Waiting(format!("Waiting for {} pods to be ready...", want - ready));
    }
    let updated = st.updated_replicas.unwrap_or(0);
    if let Some(ru) = strategy.rolling_update {
        if let (Some(want), Some(partition)) = (spec.replicas, ru.partition)
            && updated < want - partition
        {
            return Verdict::Waiting(format!(
                "Waiting for partitioned roll out to finish: {updated} out of {} new pods have been updated...",
                want - partition
            ));
        }
        return Verdict::Done(format!(
            "partitioned roll out complete: {updated} new pods have been updated..."
        ));
    }
    let (update, current) = (st.update_revision.unwrap_or_default(), st.current_revision.unwrap_or_default());
    if update != current {
        return Verdict::Waiting(format!(
            "waiting for statefulset rolling update to complete {updated} pods at revision {update}..."
        ));
    }
    Verdict::Done(format!(
        "statefulset rolling update complete {} pods at revision {current}...",
        st.current_replicas.unwrap_or(0)
    ))
}

/// kubectl's `DaemonSetStatusViewer.Status`, rule for rule and message for
/// message.
pub fn ds_status(d: &DaemonSet) -> Verdict {
    let name = d.metadata.name.as_deref().unwrap_or_default();
    let strategy = d.spec.as_ref().and_then(|s| s.update_strategy.clone()).unwrap_or_default();
    if strategy.type_.as_deref().unwrap_or("RollingUpdate") != "RollingUpdate" {
        return Verdict::Failed(format!(
            "daemon set \"{name}\": rollout status is only available for RollingUpdate strategy type"
        ));
    }
    let st = d.status.clone().unwrap_or_default();
    if d.metadata.generation.unwrap_or(0) <= st.observed_generation.unwrap_or(0) {
        let (updated, desired) = (st.updated_number_scheduled.unwrap_or(0), st.desired_number_scheduled);
        if updated < desired {
            return Verdict::Waiting(format!(
                "Waiting for daemon set \"{name}\" rollout to finish: {updated} out of {desired} new pods have been updated..."
            ));
        }
        let available = st.number_available.unwrap_or(0);
        if available < desired {
            return Verdict::Waiting(format!(
                "Waiting for daemon set \"{name}\" rollout to finish: {available} of {desired} updated pods are available..."
            ));
        }
        return Verdict::Done(format!("daemon set \"{name}\" successfully rolled out"));
    }
    Verdict::Waiting("Waiting for daemon set spec update to be observed...".into())
}

fn seen_sts(s: StatefulSet) -> Seen {
    let verdict = sts_status(&s);
    let spec = s.spec.clone().unwrap_or_default();
    let st = s.status.clone().unwrap_or_default();
    let observed = st.observed_generation.unwrap_or(0);
    Seen {
        observed: observed > 0 && s.metadata.generation.unwrap_or(0) <= observed,
        on_delete: spec.update_strategy.as_ref().and_then(|u| u.type_.as_deref()) == Some("OnDelete"),
        update_revision: st.update_revision.clone(),
        rolled: Rolled {
            revision: st.update_revision.clone().unwrap_or_default(),
            ready: st.ready_replicas.unwrap_or(0),
            replicas: spec.replicas.unwrap_or(1),
        },
        selector: spec.selector,
        template: spec.template,
        verdict,
        meta: s.metadata,
    }
}

fn seen_ds(d: DaemonSet) -> Seen {
    let verdict = ds_status(&d);
    let spec = d.spec.clone().unwrap_or_default();
    let st = d.status.clone().unwrap_or_default();
    Seen {
        observed: d.metadata.generation.unwrap_or(0) <= st.observed_generation.unwrap_or(0),
        on_delete: spec.update_strategy.as_ref().and_then(|u| u.type_.as_deref()) == Some("OnDelete"),
        update_revision: None,
        rolled: Rolled {
            revision: format!("generation {}", st.observed_generation.unwrap_or(0)),
            ready: st.number_ready,
            replicas: st.desired_number_scheduled,
        },
        selector: spec.selector,
        template: spec.template,
        verdict,
        meta: d.metadata,
    }
}

/// Reads a StatefulSet or DaemonSet (`None`: not there).
///
/// # Errors
/// The API's refusal, naming verb and resource.
pub async fn get(
    client: &kube::Client,
    kind: WorkloadKind,
    namespace: &str,
    name: &str,
) -> Result<Option<Seen>, KubeError> {
    let object = ObjectRef::new(kind.as_str(), namespace, name);
    let refused = |e| KubeError::from_api(e, "get", kind.resource(), "apps", object.clone());
    Ok(match kind {
        WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(refused)?
            .map(seen_sts),
        WorkloadKind::DaemonSet => Api::<DaemonSet>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(refused)?
            .map(seen_ds),
        WorkloadKind::Deployment => None,
    })
}

/// The ControllerRevisions `seen` controls, oldest first (kubectl's
/// `controlledHistory`, sorted by revision).
async fn history(
    client: &kube::Client,
    namespace: &str,
    seen: &Seen,
    object: &ObjectRef,
) -> Result<Vec<ControllerRevision>, KubeError> {
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), namespace);
    let mut lp = ListParams::default();
    if let Some(sel) = selector_of(&seen.selector) {
        lp = lp.labels(&sel);
    }
    let uid = seen.meta.uid.as_deref();
    let mut all: Vec<ControllerRevision> = super::paged::list_all(&api, &lp)
        .await
        .map_err(|e| KubeError::from_api(e, "list", "controllerrevisions", "apps", object.clone()))?
        .into_iter()
        .filter(|cr| {
            cr.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
        })
        .collect();
    all.sort_by_key(|cr| cr.revision);
    Ok(all)
}

/// The pod template a ControllerRevision restores (its data is the
/// strategic merge patch `{"spec":{"template":{..., "$patch":"replace"}}}`).
pub fn revision_template(cr: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = cr.data.as_ref()?.0.get("spec")?.get("template")?.clone();
    t.as_object_mut()?.remove("$patch");
    serde_json::from_value(t).ok()
}

/// The values of [`REVISION_LABEL`] the pods of `cr` carry: a
/// StatefulSet's pods its name, a DaemonSet's its hash label.
fn pod_revisions(cr: &ControllerRevision) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    out.extend(cr.metadata.name.clone());
    out.extend(cr.metadata.labels.as_ref().and_then(|l| l.get(REVISION_LABEL)).cloned());
    out
}

/// Watches a StatefulSet or DaemonSet until kubectl's verdict is reached,
/// failing early when a pod of the new revision is stuck (see
/// [`pod_failure`]; a pull failure after [`PULL_GRACE`]). Pinned to the
/// template this run `applied`, as Deployments are. Logs kubectl's message
/// each time it changes. Bounded by `cancel` (the run's `timeout` and
/// signals): these kinds have no progress deadline, and kubectl waits as
/// long as its `--timeout`.
///
/// # Errors
/// The failure, naming the object (and the pod); `Ok(None)` when
/// cancelled.
pub async fn watch(
    client: &kube::Client,
    kind: WorkloadKind,
    namespace: &str,
    name: &str,
    applied: Option<&PodTemplateSpec>,
    runner: &Runner,
    cancel: &CancellationToken,
) -> Result<Option<Rolled>, KubeError> {
    let object = ObjectRef::new(kind.as_str(), namespace, name);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut last_message = String::new();
    let mut pulls = PullGrace::default();
    // The new revision's pod labels, per generation observed.
    let mut new_pods: Option<(i64, BTreeSet<String>)> = None;
    loop {
        let seen = tokio::select! {
            _ = cancel.cancelled() => return Ok(None),
            s = get(client, kind, namespace, name) => s?.ok_or_else(|| KubeError::Deleted { object: object.clone() })?,
        };
        if let Some(want) = applied
            && seen.template != *want
        {
            let e = taken_over(&seen.meta, want, &seen.template, object);
            runner.line(&e.to_string());
            return Err(e);
        }
        let message = match &seen.verdict {
            Verdict::Waiting(m) | Verdict::Done(m) | Verdict::Failed(m) => m.clone(),
        };
        if message != last_message {
            runner.line(&format!("{object}: {message}"));
            last_message = message;
        }
        match &seen.verdict {
            Verdict::Done(_) => return Ok(Some(seen.rolled)),
            Verdict::Failed(message) => {
                return Err(KubeError::ProgressDeadline { object, message: message.clone() });
            }
            Verdict::Waiting(_) => {}
        }
        let generation = seen.meta.generation.unwrap_or(0);
        if seen.observed && new_pods.as_ref().is_none_or(|(g, _)| *g != generation) {
            // The newest revision is the template's once the controller
            // has observed it.
            let labels = match (&seen.update_revision, kind) {
                (Some(r), WorkloadKind::StatefulSet) => Some(BTreeSet::from([r.clone()])),
                _ => history(client, namespace, &seen, &object).await?.last().map(pod_revisions),
            };
            new_pods = labels.map(|l| (generation, l));
        }
        // Only the new revision's pods count.
        if let Some((_, labels)) = &new_pods {
            let list = pods_of(&pods, &seen, &object).await?;
            let is_new = |p: &Pod| {
                p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(REVISION_LABEL))
                    .is_some_and(|r| labels.contains(r))
            };
            pulls.pass(&list, is_new, &object, runner)?;
        } else {
            pulls.keep_only(&BTreeSet::new());
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(None),
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// The pods `seen`'s selector selects (every revision's).
async fn pods_of(pods: &Api<Pod>, seen: &Seen, object: &ObjectRef) -> Result<Vec<Pod>, KubeError> {
    let mut lp = ListParams::default();
    if let Some(sel) = selector_of(&seen.selector) {
        lp = lp.labels(&sel);
    }
    super::paged::list_all(pods, &lp)
        .await
        .map_err(|e| KubeError::from_api(e, "list", "pods", "", object.clone()))
}

/// `kubectl rollout undo statefulset/<name>` (or `daemonset/`): the
/// ControllerRevision's data written back as a strategic merge patch.
/// With `to` (the template before this run), the newest revision holding
/// that template (else the template itself); without, kubectl's choice:
/// the second-newest revision.
///
/// A StatefulSet's pods of the failed revision that are not ready are
/// then deleted, so that its controller makes them again from the
/// restored template: with `OrderedReady` it waits for a broken pod
/// forever rather than replace it (the "forced rollback" the Kubernetes
/// documentation asks of users).
///
/// # Errors
/// The API's refusal (named verb/resource), [`KubeError::NoHistory`].
pub async fn undo(
    client: &kube::Client,
    kind: WorkloadKind,
    namespace: &str,
    name: &str,
    to: Option<&PodTemplateSpec>,
) -> Result<Undone, KubeError> {
    let object = ObjectRef::new(kind.as_str(), namespace, name);
    let seen = get(client, kind, namespace, name)
        .await?
        .ok_or_else(|| KubeError::NotFound { object: object.clone() })?;
    let history = history(client, namespace, &seen, &object).await?;
    let chosen = match to {
        Some(t) => history.iter().rev().find(|cr| revision_template(cr).as_ref() == Some(t)),
        None if history.len() >= 2 => history.get(history.len() - 2),
        None => return Err(KubeError::NoHistory { object }),
    };
    let (patch, revision, template) = match (chosen, to) {
        (Some(cr), _) => (
            cr.data.as_ref().map(|d| d.0.clone()).unwrap_or_default(),
            cr.revision.to_string(),
            revision_template(cr).unwrap_or_default(),
        ),
        (None, Some(t)) => {
            // The revision was pruned (revisionHistoryLimit): the template
            // itself, as the revision would have written it.
            let mut v = serde_json::to_value(t).unwrap_or_default();
            v["$patch"] = "replace".into();
            (serde_json::json!({"spec": {"template": v}}), "(the one before this run)".to_string(), t.clone())
        }
        (None, None) => return Err(KubeError::NoHistory { object }),
    };
    if template == seen.template {
        return Ok(Undone::Skipped { revision });
    }
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    let refused = |e| KubeError::from_api(e, "patch", kind.resource(), "apps", object.clone());
    match kind {
        WorkloadKind::StatefulSet => {
            Api::<StatefulSet>::namespaced(client.clone(), namespace)
                .patch(name, &params, &Patch::Strategic(&patch))
                .await
                .map_err(refused)?;
        }
        _ => {
            Api::<DaemonSet>::namespaced(client.clone(), namespace)
                .patch(name, &params, &Patch::Strategic(&patch))
                .await
                .map_err(refused)?;
        }
    }
    if kind == WorkloadKind::StatefulSet
        && let Some(bad) = &seen.update_revision
    {
        replace_broken_pods(client, namespace, &seen, bad, &object).await?;
    }
    Ok(Undone::RolledBack { revision, template: Box::new(template) })
}

/// Deletes the StatefulSet's pods of revision `bad` that are not ready.
async fn replace_broken_pods(
    client: &kube::Client,
    namespace: &str,
    seen: &Seen,
    bad: &str,
    object: &ObjectRef,
) -> Result<(), KubeError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    for p in &pods_of(&pods, seen, object).await? {
        let of_bad =
            p.metadata.labels.as_ref().and_then(|l| l.get(REVISION_LABEL)).map(String::as_str) == Some(bad);
        let ready = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if !of_bad || ready || p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let pod = p.metadata.name.clone().unwrap_or_default();
        pods.delete(&pod, &DeleteParams::default())
            .await
            .map_err(|e| KubeError::from_api(e, "delete", "pods", "", object.clone()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        DaemonSetSpec, DaemonSetStatus, DaemonSetUpdateStrategy, RollingUpdateStatefulSetStrategy,
        StatefulSetSpec, StatefulSetStatus, StatefulSetUpdateStrategy,
    };

    fn sts(generation: i64, partition: Option<i32>, status: StatefulSetStatus) -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta {
                name: Some("db".into()),
                generation: Some(generation),
                ..Default::default()
            },
            spec: Some(StatefulSetSpec {
                replicas: Some(3),
                update_strategy: Some(StatefulSetUpdateStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: partition.map(|p| RollingUpdateStatefulSetStrategy {
                        partition: Some(p),
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            }),
            status: Some(status),
        }
    }

    #[test]
    fn a_statefulset_is_judged_as_kubectl_judges_it() {
        let st = |observed, ready, updated, cur: &str, upd: &str| StatefulSetStatus {
            observed_generation: Some(observed),
            ready_replicas: Some(ready),
            updated_replicas: Some(updated),
            current_replicas: Some(3),
            current_revision: Some(cur.into()),
            update_revision: Some(upd.into()),
            replicas: 3,
            ..Default::default()
        };
        assert_eq!(
            sts_status(&sts(2, Some(0), st(1, 3, 3, "a", "a"))),
            Verdict::Waiting("Waiting for statefulset spec update to be observed...".into())
        );
        assert_eq!(
            sts_status(&sts(2, Some(0), st(2, 2, 1, "a", "b"))),
            Verdict::Waiting("Waiting for 1 pods to be ready...".into())
        );
        // The server defaults rollingUpdate.partition to 0: kubectl judges
        // by the partition.
        assert_eq!(
            sts_status(&sts(2, Some(0), st(2, 3, 2, "a", "b"))),
            Verdict::Waiting(
                "Waiting for partitioned roll out to finish: 2 out of 3 new pods have been updated...".into()
            )
        );
        assert_eq!(
            sts_status(&sts(2, Some(2), st(2, 3, 1, "a", "b"))),
            Verdict::Done("partitioned roll out complete: 1 new pods have been updated...".into())
        );
        assert_eq!(
            sts_status(&sts(2, None, st(2, 3, 2, "a", "b"))),
            Verdict::Waiting(
                "waiting for statefulset rolling update to complete 2 pods at revision b...".into()
            )
        );
        assert_eq!(
            sts_status(&sts(2, None, st(2, 3, 3, "b", "b"))),
            Verdict::Done("statefulset rolling update complete 3 pods at revision b...".into())
        );
        let mut on_delete = sts(2, None, st(2, 3, 3, "b", "b"));
        on_delete.spec.as_mut().unwrap().update_strategy =
            Some(StatefulSetUpdateStrategy { type_: Some("OnDelete".into()), rolling_update: None });
        assert!(
            matches!(sts_status(&on_delete), Verdict::Failed(m) if m.contains("only available for RollingUpdate"))
        );
        assert!(seen_sts(on_delete).on_delete);
    }

    #[test]
    fn a_daemonset_is_judged_as_kubectl_judges_it() {
        let ds = |generation, observed, desired, updated, available| DaemonSet {
            metadata: ObjectMeta {
                name: Some("agent".into()),
                generation: Some(generation),
                ..Default::default()
            },
            spec: Some(DaemonSetSpec {
                update_strategy: Some(DaemonSetUpdateStrategy {
                    type_: Some("RollingUpdate".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: Some(DaemonSetStatus {
                observed_generation: Some(observed),
                desired_number_scheduled: desired,
                updated_number_scheduled: Some(updated),
                number_available: Some(available),
                ..Default::default()
            }),
        };
        assert_eq!(
            ds_status(&ds(3, 2, 3, 3, 3)),
            Verdict::Waiting("Waiting for daemon set spec update to be observed...".into())
        );
        assert_eq!(
            ds_status(&ds(3, 3, 3, 1, 3)),
            Verdict::Waiting(
                "Waiting for daemon set \"agent\" rollout to finish: 1 out of 3 new pods have been updated...".into()
            )
        );
        assert_eq!(
            ds_status(&ds(3, 3, 3, 3, 2)),
            Verdict::Waiting(
                "Waiting for daemon set \"agent\" rollout to finish: 2 of 3 updated pods are available..."
                    .into()
            )
        );
        assert_eq!(
            ds_status(&ds(3, 3, 3, 3, 3)),
            Verdict::Done("daemon set \"agent\" successfully rolled out".into())
        );
    }

    #[test]
    fn a_revision_restores_its_template_and_names_its_pods() {
        let cr: ControllerRevision = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db-5d8f", "labels": {"controller-revision-hash": "5d8f", "app": "db"}},
            "revision": 2,
            "data": {"spec": {"template": {"$patch": "replace", "metadata": {"labels": {"app": "db"}},
                "spec": {"containers": [{"name": "app", "image": "example.invalid/db:v1"}]}}}},
        }))
        .unwrap();
        let t = revision_template(&cr).unwrap();
        assert_eq!(
            super::super::apply::template_image(&t, Some("app")).as_deref(),
            Some("example.invalid/db:v1")
        );
        assert_eq!(pod_revisions(&cr), BTreeSet::from(["db-5d8f".to_string(), "5d8f".to_string()]));
    }
}
