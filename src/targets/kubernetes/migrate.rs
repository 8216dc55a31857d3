//! `migrate-command` on a cluster: a Job from the new image, with the pod
//! spec (env, `envFrom`, the app's Secret, service account, volumes) of
//! the first Deployment's container, run once (`backoffLimit: 0`,
//! `restartPolicy: Never`), watched to completion. A failure, a stuck pod
//! or the timeout stops the deploy before anything rolls, with the pod's
//! last log lines in the error (redacted on output like everything else).
//! The Job and its pod are deleted afterwards, whatever the outcome.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{EnvFromSource, Pod, PodTemplateSpec, SecretEnvSource};
use kube::api::{Api, DeleteParams, LogParams, PostParams, PropagationPolicy};
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;

use super::FIELD_MANAGER;
use super::apply::Current;
use super::error::{KubeError, ObjectRef};
use super::rollout::{check_watch_error, pod_failure};
use super::secret::{is_ours, labels};
use crate::runner::Runner;

/// Log lines of the failed pod quoted in the error.
const LOG_LINES: i64 = 20;

/// One migration run.
pub struct Migration<'a> {
    pub app: &'a str,
    /// `<run id>-<attempt>`: a re-run gets its own Job.
    pub deploy_id: &'a str,
    /// `migrate`, or `pre-migrate` for the command run before it.
    pub kind: &'a str,
    pub command: &'a [String],
    pub image: &'a str,
    pub timeout: Duration,
    /// The app's Secret for this deploy, if any.
    pub secret: Option<&'a str>,
}

/// The Job's name: `<app>-<kind>-<deploy id>`, cut to a DNS label.
pub fn job_name(app: &str, kind: &str, deploy_id: &str) -> String {
    let suffix = format!("-{kind}-{deploy_id}");
    let keep = 63usize.saturating_sub(suffix.len()).min(app.len());
    format!("{}{suffix}", app[..keep].trim_end_matches('-'))
}

/// The Job: the first Deployment's pod spec, its container running the
/// new image and the command; probes, ports and the Deployment's labels
/// dropped (a migration pod must never join the app's Service).
pub fn job(m: &Migration<'_>, from: &Current) -> Result<Job, KubeError> {
    let mut spec = from
        .deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .ok_or_else(|| KubeError::Config(format!("{} has no pod template", from.object)))?;
    let mut c = spec
        .containers
        .iter()
        .find(|c| c.name == from.container)
        .cloned()
        .ok_or_else(|| KubeError::Config(format!("{} lost container {}", from.object, from.container)))?;
    c.image = Some(m.image.into());
    c.command = Some(m.command.to_vec());
    c.args = None;
    c.readiness_probe = None;
    c.liveness_probe = None;
    c.startup_probe = None;
    c.lifecycle = None;
    c.ports = None;
    let mut env_from: Vec<EnvFromSource> =
        c.env_from.take().unwrap_or_default().into_iter().filter(|f| !refers_to_ours(m.app, f)).collect();
    if let Some(s) = m.secret {
        env_from.push(EnvFromSource {
            secret_ref: Some(SecretEnvSource { name: s.into(), optional: None }),
            ..Default::default()
        });
    }
    c.env_from = (!env_from.is_empty()).then_some(env_from);
    spec.containers = vec![c];
    spec.restart_policy = Some("Never".into());
    let name = job_name(m.app, m.kind, m.deploy_id);
    let labels = labels(m.app, "migration");
    let job = serde_json::json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": from.object.namespace, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": m.timeout.as_secs().max(1),
            // A safety net only: the action deletes the Job itself.
            "ttlSecondsAfterFinished": 3600,
            "template": PodTemplateSpec {
                metadata: Some(kube::api::ObjectMeta { labels: Some(labels.clone()), ..Default::default() }),
                spec: Some(spec),
            },
        },
    });
    serde_json::from_value(job).map_err(|e| KubeError::Config(format!("migration Job: {e}")))
}

fn refers_to_ours(app: &str, f: &EnvFromSource) -> bool {
    f.secret_ref.as_ref().is_some_and(|r| is_ours(app, &r.name))
}

/// Runs the migration Job to completion and deletes it.
///
/// # Errors
/// [`KubeError::Migration`] (failed, stuck pod or timed out) with the
/// pod's last log lines; API refusals. `Ok(false)` when cancelled (the Job
/// is deleted then too).
pub async fn run(
    client: &kube::Client,
    m: &Migration<'_>,
    from: &Current,
    runner: &Runner,
    cancel: &CancellationToken,
) -> Result<bool, KubeError> {
    let ns = from.object.namespace.as_str();
    let job = job(m, from)?;
    let name = job.metadata.name.clone().unwrap_or_default();
    let object = ObjectRef::new("job", ns, &name);
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let params = PostParams { dry_run: false, field_manager: Some(FIELD_MANAGER.into()) };
    match jobs.create(&params, &job).await {
        Ok(_) => {}
        // A Job of this very run left by a killed attempt: start afresh.
        Err(kube::Error::Api(e)) if e.code == 409 => {
            delete(&jobs, &name).await;
            wait_gone(&jobs, &name).await;
            jobs.create(&params, &job)
                .await
                .map_err(|e| KubeError::from_api(e, "create", "jobs", "batch", object.clone()))?;
        }
        Err(e) => return Err(KubeError::from_api(e, "create", "jobs", "batch", object)),
    }
    runner.line(&format!("{object}: running {} from {}", shown(m.command), m.image));
    let outcome = tokio::select! {
        o = watch(client, &object, runner) => Some(o),
        _ = tokio::time::sleep(m.timeout + Duration::from_secs(15)) => {
            Some(Err(failure(&object, "timeout", format!("did not finish within {}s", m.timeout.as_secs()))))
        }
        _ = cancel.cancelled() => None,
    };
    let result = match outcome {
        None => {
            runner.line(&format!("{object}: cancelled; deleting the Job"));
            Ok(false)
        }
        Some(Ok(())) => {
            runner.line(&format!("{object}: succeeded"));
            Ok(true)
        }
        Some(Err(mut e)) => {
            if let KubeError::Migration { logs, .. } = &mut e {
                *logs = last_logs(client, ns, &name).await;
            }
            Err(e)
        }
    };
    delete(&jobs, &name).await;
    result
}

pub(crate) fn shown(cmd: &[String]) -> String {
    serde_json::to_string(cmd).unwrap_or_default()
}

fn failure(object: &ObjectRef, reason: &str, message: String) -> KubeError {
    KubeError::Migration { object: object.clone(), reason: reason.into(), message, logs: String::new() }
}

/// Watches the Job (and its pods, for a pod that will never start) to its
/// end.
async fn watch(client: &kube::Client, object: &ObjectRef, runner: &Runner) -> Result<(), KubeError> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), &object.namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &object.namespace);
    let mut j_events =
        watcher(jobs, watcher::Config::default().fields(&format!("metadata.name={}", object.name)))
            .default_backoff()
            .boxed();
    let mut p_events = watcher(
        pods,
        watcher::Config::default().labels(&format!("batch.kubernetes.io/job-name={}", object.name)),
    )
    .default_backoff()
    .boxed();
    let mut last = String::new();
    loop {
        tokio::select! {
            ev = j_events.next() => match ev {
                None => return Err(failure(object, "watch", "the watch ended".into())),
                Some(Err(e)) => check_watch_error(&e, "jobs", "batch", object)?,
                Some(Ok(watcher::Event::Delete(_))) => return Err(failure(object, "deleted", "the Job was deleted".into())),
                Some(Ok(watcher::Event::Apply(j) | watcher::Event::InitApply(j))) => {
                    let conditions = j.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
                    let on = |t: &str| conditions.iter().find(|c| c.type_ == t && c.status == "True");
                    if on("Complete").is_some() {
                        return Ok(());
                    }
                    if let Some(c) = on("Failed").or_else(|| on("FailureTarget")) {
                        let reason = c.reason.clone().unwrap_or_else(|| "Failed".into());
                        let message = c.message.clone().unwrap_or_default();
                        return Err(failure(object, &reason, message));
                    }
                    let active = j.status.as_ref().and_then(|s| s.active).unwrap_or(0);
                    let now = if active > 0 { "running".to_string() } else { "waiting for its pod".to_string() };
                    if now != last {
                        runner.line(&format!("{object}: {now}"));
                        last = now;
                    }
                }
                Some(Ok(_)) => {}
            },
            ev = p_events.next() => match ev {
                None => {}
                Some(Err(e)) => check_watch_error(&e, "pods", "", object)?,
                Some(Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p))) => {
                    if let Some((reason, message)) = pod_failure(&p) {
                        let pod = p.metadata.name.unwrap_or_default();
                        return Err(failure(object, &reason, format!("pod {pod}: {message}")));
                    }
                }
                Some(Ok(_)) => {}
            },
        }
    }
}

/// The last lines the Job's pod wrote, or why there are none.
async fn last_logs(client: &kube::Client, ns: &str, job: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let lp = kube::api::ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"));
    let pod = match pods.list(&lp).await {
        Ok(l) => l.items.into_iter().next(),
        Err(e) => return format!("(no logs: cannot list the Job's pods: {e})"),
    };
    let Some(name) = pod.and_then(|p| p.metadata.name) else { return "(no logs: the Job has no pod)".into() };
    let params = LogParams { tail_lines: Some(LOG_LINES), ..Default::default() };
    match tokio::time::timeout(Duration::from_secs(10), pods.logs(&name, &params)).await {
        Ok(Ok(text)) if text.trim().is_empty() => format!("(pod {name} wrote nothing)"),
        Ok(Ok(text)) => text,
        Ok(Err(kube::Error::Api(s))) => format!("(no logs from pod {name}: {})", s.message),
        Ok(Err(e)) => format!("(no logs from pod {name}: {e})"),
        Err(_) => format!("(no logs from pod {name}: no answer within 10s)"),
    }
}

/// Deletes the Job and its pod (background propagation); best effort, a
/// leftover is cleaned by `ttlSecondsAfterFinished`.
async fn delete(jobs: &Api<Job>, name: &str) {
    let dp = DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..Default::default() };
    let sent = tokio::time::timeout(Duration::from_secs(4), jobs.delete(name, &dp)).await;
    if let Ok(Err(e)) = sent {
        tracing::warn!(job = name, error = %e, "could not delete the migration Job");
    }
}

async fn wait_gone(jobs: &Api<Job>, name: &str) {
    for _ in 0..50 {
        if matches!(jobs.get_opt(name).await, Ok(None)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_are_dns_labels() {
        assert_eq!(job_name("web", "migrate", "123-1"), "web-migrate-123-1");
        let long = job_name(&"a".repeat(63), "migrate", "12345678901-2");
        assert!(long.len() <= 63 && long.ends_with("-migrate-12345678901-2"), "{long}");
        // A cut never leaves a trailing dash before the suffix.
        assert_eq!(job_name("ab-cd", "migrate", &"9".repeat(51)), format!("ab-migrate-{}", "9".repeat(51)));
    }

    #[test]
    fn the_job_keeps_env_and_drops_what_would_make_it_serve() {
        let d: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"serviceAccountName": "web", "containers": [
                    {"name": "app", "image": "r/web:1", "args": ["serve"], "ports": [{"containerPort": 80}],
                     "readinessProbe": {"httpGet": {"port": 80}},
                     "env": [{"name": "MODE", "value": "prod"}],
                     "envFrom": [{"configMapRef": {"name": "cfg"}}, {"secretRef": {"name": "web-secrets-0123456789ab"}}]},
                    {"name": "sidecar", "image": "r/side:1"}]}}}
        }))
        .unwrap();
        let current = Current {
            object: ObjectRef::deployment("shop", "web"),
            kind: crate::inputs::WorkloadKind::Deployment,
            container: "app".into(),
            image: Some("r/web:1".into()),
            revision: None,
            live_template: d.spec.as_ref().map(|s| s.template.clone()),
            deployment: d,
            manifest: None,
            exists: true,
            wanted: None,
        };
        let cmd = vec!["./migrate".to_string(), "up".into()];
        let m = Migration {
            app: "web",
            deploy_id: "7-1",
            kind: "migrate",
            command: &cmd,
            image: "r/web:2",
            timeout: Duration::from_secs(300),
            secret: Some("web-secrets-fedcba987654"),
        };
        let j = serde_json::to_value(job(&m, &current).unwrap()).unwrap();
        let pod = &j["spec"]["template"]["spec"];
        assert_eq!(j["metadata"]["name"], "web-migrate-7-1");
        assert_eq!(j["spec"]["backoffLimit"], 0);
        assert_eq!(j["spec"]["activeDeadlineSeconds"], 300);
        assert_eq!(pod["restartPolicy"], "Never");
        assert_eq!(pod["serviceAccountName"], "web");
        assert_eq!(pod["containers"].as_array().unwrap().len(), 1);
        let c = &pod["containers"][0];
        assert_eq!(c["image"], "r/web:2");
        assert_eq!(c["command"], serde_json::json!(["./migrate", "up"]));
        assert!(c.get("args").is_none() && c.get("ports").is_none() && c.get("readinessProbe").is_none());
        assert_eq!(c["env"][0]["value"], "prod");
        assert_eq!(
            c["envFrom"],
            serde_json::json!([{"configMapRef": {"name": "cfg"}}, {"secretRef": {"name": "web-secrets-fedcba987654"}}])
        );
        // Never the app's labels: the pod must not join its Service.
        assert!(j["spec"]["template"]["metadata"]["labels"].get("app").is_none());
        assert_eq!(j["spec"]["template"]["metadata"]["labels"]["deploy-action/role"], "migration");
    }
}
