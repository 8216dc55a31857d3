//! The verdict on a rollout: kubectl's `rollout status` rules as a pure
//! function of the Deployment ([`status`]), the early pod-failure check as a
//! pure function of a Pod ([`pod_failure`]), and [`watch`], which feeds both
//! from watches (never sleep-polling).

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;

use super::error::{KubeError, ObjectRef};
use crate::runner::Runner;

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const HASH_LABEL: &str = "pod-template-hash";

/// What kubectl would print and whether it would stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Waiting(String),
    Done(String),
    Failed(String),
}

/// `kubectl rollout status` (`DeploymentStatusViewer.Status`, revision 0),
/// rule for rule and message for message.
pub fn status(d: &Deployment) -> Verdict {
    let name = d.metadata.name.as_deref().unwrap_or_default();
    let generation = d.metadata.generation.unwrap_or(0);
    let st = d.status.clone().unwrap_or_default();
    if generation <= st.observed_generation.unwrap_or(0) {
        let progressing = st.conditions.iter().flatten().find(|c| c.type_ == "Progressing");
        if progressing.is_some_and(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded")) {
            return Verdict::Failed(format!("deployment \"{name}\" exceeded its progress deadline"));
        }
        let (updated, replicas, available) =
            (st.updated_replicas.unwrap_or(0), st.replicas.unwrap_or(0), st.available_replicas.unwrap_or(0));
        if let Some(want) = d.spec.as_ref().and_then(|s| s.replicas)
            && updated < want
        {
            return Verdict::Waiting(format!(
                "Waiting for deployment \"{name}\" rollout to finish: {updated} out of {want} new replicas have been updated..."
            ));
        }
        if replicas > updated {
            return Verdict::Waiting(format!(
                "Waiting for deployment \"{name}\" rollout to finish: {} old replicas are pending termination...",
                replicas - updated
            ));
        }
        if available < updated {
            return Verdict::Waiting(format!(
                "Waiting for deployment \"{name}\" rollout to finish: {available} of {updated} updated replicas are available..."
            ));
        }
        return Verdict::Done(format!("deployment \"{name}\" successfully rolled out"));
    }
    Verdict::Waiting("Waiting for deployment spec update to be observed...".into())
}

/// Container states that will not heal by waiting: the kubelet only backs
/// off and retries them, so the progress deadline would be the first to say.
const FATAL_WAITING: [&str; 4] =
    ["CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError"];

/// How long a pod may fail to pull its image before that is fatal: the
/// kubelet tries again 10 s after a failed pull (`ErrImagePull`, then
/// `ImagePullBackOff` while it waits), so a registry blip heals within
/// one retry; a missing image or a refused login fails every retry.
pub const PULL_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

/// The pull failures seen, per pod, since when: one judges them fatal
/// only after [`PULL_GRACE`]; every other stuck state at once.
#[derive(Debug, Default)]
pub struct PullGrace {
    since: BTreeMap<String, tokio::time::Instant>,
}

impl PullGrace {
    /// Whether `reason` (from [`pod_failure`]) is fatal for `pod` at
    /// `now`; `Err(first)`: a pull failure still in its grace, `first`
    /// when it was first seen now (to say so once).
    pub fn judge(&mut self, pod: &str, reason: &str, now: tokio::time::Instant) -> Result<(), bool> {
        if !matches!(reason, "ErrImagePull" | "ImagePullBackOff") {
            return Ok(());
        }
        let first = !self.since.contains_key(pod);
        let since = *self.since.entry(pod.to_string()).or_insert(now);
        if now.duration_since(since) >= PULL_GRACE { Ok(()) } else { Err(first) }
    }

    /// Only the pods still failing keep their grace: one that pulls again
    /// (or is gone) starts a new grace if it fails later.
    pub fn keep_only(&mut self, failing: &std::collections::BTreeSet<String>) {
        self.since.retain(|pod, _| failing.contains(pod));
    }

    /// One pass over the new revision's pods (those `is_new` keeps, not
    /// being deleted: old ones may have been failing before this deploy,
    /// and they are on their way out): the first stuck past its grace
    /// fails `object`'s rollout; a pull failure in its grace is said once
    /// and judged again on the next pass; one no longer seen failing
    /// (healed, gone) is dropped.
    pub fn pass<'a>(
        &mut self,
        pods: impl IntoIterator<Item = &'a Pod>,
        is_new: impl Fn(&Pod) -> bool,
        object: &ObjectRef,
        runner: &Runner,
    ) -> Result<(), KubeError> {
        let mut failing = std::collections::BTreeSet::new();
        for p in pods {
            if !is_new(p) || p.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let pod = p.metadata.name.clone().unwrap_or_default();
            let Some((reason, message)) = pod_failure(p) else { continue };
            failing.insert(pod.clone());
            match self.judge(&pod, &reason, tokio::time::Instant::now()) {
                Ok(()) => {
                    runner.line(&format!("{object}: pod {pod} is in {reason}: {message}"));
                    return Err(KubeError::PodFailed { object: object.clone(), pod, reason, message });
                }
                Err(true) => runner.line(&format!(
                    "{object}: pod {pod} is in {reason}: {message}; the kubelet pulls again within {}s (a registry blip heals then)",
                    PULL_GRACE.as_secs()
                )),
                Err(false) => {}
            }
        }
        self.keep_only(&failing);
        Ok(())
    }

    /// When the earliest grace ends, to judge again then.
    pub fn next_deadline(&self) -> Option<tokio::time::Instant> {
        self.since.values().min().map(|t| *t + PULL_GRACE)
    }
}

/// The first container (init containers first) of `pod` stuck in a state
/// that will not heal: `(reason, message)`.
pub fn pod_failure(pod: &Pod) -> Option<(String, String)> {
    let st = pod.status.as_ref()?;
    let all = st.init_container_statuses.iter().flatten().chain(st.container_statuses.iter().flatten());
    for c in all {
        let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) else { continue };
        let Some(reason) = w.reason.as_deref().filter(|r| FATAL_WAITING.contains(r)) else { continue };
        let mut message = format!("container {}", c.name);
        if let Some(m) = w.message.as_deref().filter(|m| !m.is_empty()) {
            message.push_str(&format!(": {m}"));
        }
        if c.restart_count > 0 {
            message.push_str(&format!(" (restarted {} times)", c.restart_count));
        }
        return Some((reason.to_string(), message));
    }
    None
}

/// What a finished rollout reports for the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rolled {
    pub revision: String,
    pub ready: i32,
    pub replicas: i32,
}

impl Rolled {
    pub fn of(d: &Deployment) -> Self {
        let st = d.status.clone().unwrap_or_default();
        Self {
            revision: d
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION))
                .cloned()
                .unwrap_or_default(),
            ready: st.ready_replicas.unwrap_or(0),
            replicas: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(st.replicas.unwrap_or(0)),
        }
    }
}

/// Labels as a label selector string (`a=b,c=d`).
pub fn label_selector(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// A Deployment's selector as a label selector string: its `matchLabels`
/// (`a=b`) and its `matchExpressions` (`k in (a,b)`, `k notin (a)`, `k`,
/// `!k`), so that one selecting by expressions only still gets its pods
/// watched (early failure detection) and its ReplicaSets listed.
pub fn selector(d: &Deployment) -> Option<String> {
    selector_of(&d.spec.as_ref()?.selector)
}

/// A workload's label selector as a string (see [`selector`]).
pub fn selector_of(sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector) -> Option<String> {
    let mut parts: Vec<String> = sel.match_labels.iter().flatten().map(|(k, v)| format!("{k}={v}")).collect();
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            // An operator the API server would not have accepted.
            _ => return None,
        });
    }
    (!parts.is_empty()).then(|| parts.join(","))
}

/// Watches `name` until kubectl's verdict is reached, failing early when a
/// pod of the new ReplicaSet is stuck (see [`pod_failure`]). Logs kubectl's
/// message each time it changes. Bounded only by `cancel` (the run's
/// deadline and signals cancel it) and the Deployment's progress deadline.
///
/// # Errors
/// The failure, naming the Deployment (and the pod); `Ok(None)` when
/// cancelled.
pub async fn watch(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    runner: &Runner,
    cancel: &CancellationToken,
) -> Result<Option<Rolled>, KubeError> {
    watch_applied(client, namespace, name, None, runner, cancel).await
}

/// [`watch`], pinned to the pod template this run `applied`: kubectl's
/// `rollout status --revision=N`. Should the Deployment's template become
/// another while it is watched (someone ran `kubectl set image`, a GitOps
/// controller synced), the rollout that finishes is not the one this run
/// started, and it fails naming who changed what ([`taken_over`]).
///
/// # Errors
/// As [`watch`], and [`KubeError::TakenOver`].
// long: one select loop over the Deployment's, ReplicaSets' and pods' watches, judging each event as kubectl does.
pub async fn watch_applied(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    applied: Option<&PodTemplateSpec>,
    runner: &Runner,
    cancel: &CancellationToken,
) -> Result<Option<Rolled>, KubeError> {
    let object = ObjectRef::deployment(namespace, name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
    let mut d_events =
        watcher(deployments, watcher::Config::default().fields(&format!("metadata.name={name}")))
            .default_backoff()
            .boxed();
    // The pod watch starts once the selector is known (first Deployment event).
    let mut p_events: Option<futures::stream::BoxStream<'static, _>> = None;
    let mut pods_seen: BTreeMap<String, Pod> = BTreeMap::new();
    // The new ReplicaSet's pod-template-hash, per observed revision.
    let mut new_hash: Option<(String, String)> = None;
    let mut current: Option<Deployment> = None;
    let mut last_message = String::new();
    let mut pulls = PullGrace::default();
    loop {
        let regrade = pulls.next_deadline();
        tokio::select! {
            _ = cancel.cancelled() => return Ok(None),
            // A pull failure's grace ended with no event since: judge again.
            _ = async { match regrade { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {}
            ev = d_events.next() => {
                let d = match ev {
                    None => return Err(KubeError::Api { object, verb: "watch", message: "the watch ended".into() }),
                    Some(Err(e)) => {
                        check_watch_error(&e, "deployments", "apps", &object)?;
                        continue;
                    }
                    Some(Ok(watcher::Event::Delete(_))) => return Err(KubeError::Deleted { object }),
                    Some(Ok(watcher::Event::Apply(d) | watcher::Event::InitApply(d))) => d,
                    // The initial list held nothing: it is gone (waiting
                    // would only end at the run's deadline).
                    Some(Ok(watcher::Event::InitDone)) if current.is_none() => {
                        return Err(KubeError::Deleted { object });
                    }
                    Some(Ok(_)) => continue,
                };
                if let Some(want) = applied
                    && let Some(now) = d.spec.as_ref().map(|s| &s.template)
                    && now != want
                {
                    let e = taken_over(&d.metadata, want, now, object);
                    runner.line(&e.to_string());
                    return Err(e);
                }
                if p_events.is_none() && let Some(sel) = selector(&d) {
                    p_events = Some(watcher(pods.clone(), watcher::Config::default().labels(&sel)).default_backoff().boxed());
                }
                let verdict = status(&d);
                let message = match &verdict { Verdict::Waiting(m) | Verdict::Done(m) | Verdict::Failed(m) => m.clone() };
                if message != last_message {
                    runner.line(&format!("{object}: {message}"));
                    last_message = message;
                }
                match verdict {
                    Verdict::Done(_) => return Ok(Some(Rolled::of(&d))),
                    Verdict::Failed(message) => return Err(KubeError::ProgressDeadline { object, message }),
                    Verdict::Waiting(_) => {}
                }
                let observed = d.metadata.generation.unwrap_or(0) <= d.status.as_ref().and_then(|s| s.observed_generation).unwrap_or(0);
                let revision = d.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)).cloned();
                if observed && let Some(rev) = revision
                    && new_hash.as_ref().is_none_or(|(r, _)| *r != rev)
                    && let Some(hash) = new_rs_hash(&replica_sets, &d, &rev, &object).await?
                {
                    new_hash = Some((rev, hash));
                }
                current = Some(d);
            }
            ev = async { match p_events.as_mut() { Some(s) => s.next().await, None => std::future::pending().await } } => {
                match ev {
                    None => p_events = None,
                    Some(Err(e)) => check_watch_error(&e, "pods", "", &object)?,
                    Some(Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p))) => {
                        pods_seen.insert(p.metadata.name.clone().unwrap_or_default(), p);
                    }
                    Some(Ok(watcher::Event::Delete(p))) => {
                        pods_seen.remove(p.metadata.name.as_deref().unwrap_or_default());
                    }
                    Some(Ok(_)) => {}
                }
            }
        }
        // Only the new ReplicaSet's pods count.
        if let (Some((_, hash)), Some(_)) = (&new_hash, &current) {
            let is_new = |p: &Pod| p.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL)) == Some(hash);
            pulls.pass(pods_seen.values(), is_new, &object, runner)?;
        } else {
            pulls.keep_only(&std::collections::BTreeSet::new());
        }
    }
}

/// The template the watch was pinned to (`want`) is no longer the
/// Deployment's (`now`): who changed it (the newest field manager other
/// than this action holding fields under `spec.template`) and what (the
/// containers' images, else "its pod template").
pub fn taken_over(
    meta: &kube::api::ObjectMeta,
    want: &PodTemplateSpec,
    now: &PodTemplateSpec,
    object: ObjectRef,
) -> KubeError {
    let touches_template =
        |f: &serde_json::Value| f.get("f:spec").and_then(|s| s.get("f:template")).is_some();
    let by = meta
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() != Some(super::FIELD_MANAGER))
        .filter(|m| m.fields_v1.as_ref().is_some_and(|f| touches_template(&f.0)))
        .max_by_key(|m| m.time.as_ref().map(|t| t.0))
        .map(|m| {
            format!(
                "field manager {} ({}{})",
                m.manager.as_deref().unwrap_or("(unnamed)"),
                m.operation.as_deref().unwrap_or("write"),
                m.time.as_ref().map(|t| format!(" at {}", t.0)).unwrap_or_default()
            )
        })
        .unwrap_or_else(|| "another client (no field manager recorded)".into());
    let images = |t: &PodTemplateSpec| -> BTreeMap<String, String> {
        t.spec
            .iter()
            .flat_map(|s| &s.containers)
            .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
            .collect()
    };
    let (was, is) = (images(want), images(now));
    let changes: Vec<String> = was
        .iter()
        .filter_map(|(c, w)| {
            let n = is.get(c).map_or("(removed)", String::as_str);
            (n != w).then(|| format!("container {c} {w} → {n}"))
        })
        .collect();
    let change = if changes.is_empty() { "its pod template".to_string() } else { changes.join(", ") };
    KubeError::TakenOver { object, by, change }
}

/// A watch error is retried (with backoff) unless it is a denial, which
/// retrying cannot fix.
pub(super) fn check_watch_error(
    e: &watcher::Error,
    resource: &'static str,
    group: &'static str,
    object: &ObjectRef,
) -> Result<(), KubeError> {
    let api = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s)) => Some(s),
        _ => None,
    };
    match api {
        Some(s) if s.code == 403 => Err(KubeError::Forbidden {
            verb: if matches!(e, watcher::Error::InitialListFailed(_)) { "list" } else { "watch" },
            resource: resource.into(),
            group: group.into(),
            namespace: object.namespace.clone(),
            message: s.message.clone(),
        }),
        _ => {
            tracing::warn!(object = %object, error = %e, "watch interrupted; resuming");
            Ok(())
        }
    }
}

/// The pod-template-hash of the ReplicaSet of `revision` controlled by `d`.
async fn new_rs_hash(
    api: &Api<ReplicaSet>,
    d: &Deployment,
    revision: &str,
    object: &ObjectRef,
) -> Result<Option<String>, KubeError> {
    let mut lp = ListParams::default();
    if let Some(sel) = selector(d) {
        lp = lp.labels(&sel);
    }
    let list = super::paged::list_all(api, &lp)
        .await
        .map_err(|e| KubeError::from_api(e, "list", "replicasets", "apps", object.clone()))?;
    let uid = d.metadata.uid.as_deref();
    Ok(list.iter().find_map(|rs| {
        let controlled = rs
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid);
        let rev = rs.metadata.annotations.as_ref().and_then(|a| a.get(REVISION));
        (controlled && rev.map(String::as_str) == Some(revision))
            .then(|| rs.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL)).cloned())
            .flatten()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentSpec, DeploymentStatus};
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateWaiting, ContainerStatus, PodStatus};

    fn dep(
        generation: i64,
        observed: i64,
        want: i32,
        replicas: i32,
        updated: i32,
        available: i32,
    ) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.name = Some("web".into());
        d.metadata.generation = Some(generation);
        d.spec = Some(DeploymentSpec { replicas: Some(want), ..Default::default() });
        d.status = Some(DeploymentStatus {
            observed_generation: Some(observed),
            replicas: Some(replicas),
            updated_replicas: Some(updated),
            available_replicas: Some(available),
            ..Default::default()
        });
        d
    }

    fn waiting(s: &str) -> Verdict {
        Verdict::Waiting(format!("Waiting for deployment \"web\" rollout to finish: {s}..."))
    }

    // The cases of kubectl's rollout_status_test.go, in its order.
    #[test]
    fn kubectl_rules() {
        assert_eq!(status(&dep(0, 1, 1, 1, 0, 1)), waiting("0 out of 1 new replicas have been updated"));
        assert_eq!(status(&dep(1, 1, 1, 2, 1, 1)), waiting("1 old replicas are pending termination"));
        assert_eq!(status(&dep(1, 1, 2, 2, 2, 1)), waiting("1 of 2 updated replicas are available"));
        assert_eq!(
            status(&dep(1, 1, 1, 1, 1, 1)),
            Verdict::Done("deployment \"web\" successfully rolled out".into())
        );
        assert_eq!(
            status(&dep(2, 1, 1, 1, 1, 1)),
            Verdict::Waiting("Waiting for deployment spec update to be observed...".into())
        );
    }

    #[test]
    fn progress_deadline_fails_only_once_observed() {
        let mut d = dep(1, 1, 3, 3, 1, 0);
        d.status.as_mut().unwrap().conditions = Some(vec![DeploymentCondition {
            type_: "Progressing".into(),
            status: "False".into(),
            reason: Some("ProgressDeadlineExceeded".into()),
            ..Default::default()
        }]);
        assert_eq!(status(&d), Verdict::Failed("deployment \"web\" exceeded its progress deadline".into()));
        d.metadata.generation = Some(2);
        assert!(matches!(status(&d), Verdict::Waiting(_)));
    }

    #[test]
    fn selector_takes_labels_and_expressions() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
        let req = |key: &str, operator: &str, values: &[&str]| LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        };
        let mut d = dep(1, 1, 1, 1, 1, 1);
        d.spec.as_mut().unwrap().selector = LabelSelector {
            match_labels: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
            match_expressions: Some(vec![
                req("tier", "In", &["a", "b"]),
                req("track", "NotIn", &["canary"]),
                req("team", "Exists", &[]),
                req("old", "DoesNotExist", &[]),
            ]),
        };
        assert_eq!(selector(&d).unwrap(), "app=web,tier in (a,b),track notin (canary),team,!old");
        d.spec.as_mut().unwrap().selector.match_labels = None;
        assert!(selector(&d).unwrap().starts_with("tier in (a,b)"));
        d.spec.as_mut().unwrap().selector = LabelSelector::default();
        assert_eq!(selector(&d), None);
    }

    #[test]
    fn no_desired_count_skips_that_rule() {
        let mut d = dep(1, 1, 0, 1, 1, 1);
        d.spec.as_mut().unwrap().replicas = None;
        assert!(matches!(status(&d), Verdict::Done(_)));
    }

    fn pod(reason: &str, restarts: i32) -> Pod {
        Pod {
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: "app".into(),
                    restart_count: restarts,
                    state: Some(ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some(reason.into()),
                            message: Some("back-off".into()),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_pull_failure_is_fatal_only_after_its_grace() {
        let t0 = tokio::time::Instant::now();
        let mut g = PullGrace::default();
        assert_eq!(g.judge("web-1", "CrashLoopBackOff", t0), Ok(()), "not a pull: at once");
        assert_eq!(g.judge("web-1", "ErrImagePull", t0), Err(true), "first seen");
        assert_eq!(g.next_deadline(), Some(t0 + PULL_GRACE));
        assert_eq!(g.judge("web-1", "ImagePullBackOff", t0 + PULL_GRACE / 2), Err(false));
        assert_eq!(
            g.judge("web-1", "ImagePullBackOff", t0 + PULL_GRACE),
            Ok(()),
            "still failing after the grace"
        );
        // Healed, then failing again: a new grace.
        g.keep_only(&Default::default());
        assert_eq!(g.next_deadline(), None);
        assert_eq!(g.judge("web-1", "ErrImagePull", t0 + PULL_GRACE * 2), Err(true));
    }

    #[test]
    fn stuck_pods_are_named_and_waiting_ones_are_not() {
        assert_eq!(
            pod_failure(&pod("CrashLoopBackOff", 3)),
            Some(("CrashLoopBackOff".into(), "container app: back-off (restarted 3 times)".into()))
        );
        assert!(pod_failure(&pod("ImagePullBackOff", 0)).is_some());
        assert!(pod_failure(&pod("ContainerCreating", 0)).is_none());
        assert!(pod_failure(&Pod::default()).is_none());
    }
}
