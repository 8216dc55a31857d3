//! Setting the image by server-side apply under [`FIELD_MANAGER`]: the
//! applied object holds only the container's name and image (and its
//! `envFrom` when the app's Secret is involved), so the action owns exactly
//! those fields and nothing else (never `replicas`).

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{EnvFromSource, PodTemplateSpec, SecretEnvSource};
use kube::api::{Api, DynamicObject, ObjectMeta, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::Scope;

use super::FIELD_MANAGER;
use super::error::{KubeError, ObjectRef};
use super::rollout::REVISION;
use super::secret::is_ours;
use super::workloads;
use crate::inputs::manifests::Manifest;
use crate::inputs::{DeploymentRef, WorkloadKind};
use crate::runner::Runner;

/// A workload as read before the deploy.
#[derive(Debug, Clone)]
pub struct Current {
    pub object: ObjectRef,
    /// A Deployment, or (rolling only) a StatefulSet or DaemonSet, whose
    /// metadata, selector and template `deployment` holds in a
    /// Deployment's shape.
    pub kind: WorkloadKind,
    /// The container whose image is set.
    pub container: String,
    /// What the container runs in the cluster now (`None` if not created).
    pub image: Option<String>,
    pub revision: Option<String>,
    /// The live pod template before this run (`None` if not created):
    /// whether an apply changed it, so that there is something to undo.
    pub live_template: Option<PodTemplateSpec>,
    /// The live object; with `manifests`, the manifest's spec under the
    /// live metadata (or the manifest alone when `exists` is false).
    pub deployment: Deployment,
    /// The manifest applied whole (with the image set), if `manifests`.
    pub manifest: Option<serde_json::Value>,
    /// Whether the Deployment existed before this run.
    pub exists: bool,
    /// The image a services file gives this Deployment; `None`: the run's.
    pub wanted: Option<String>,
}

impl Current {
    /// The image this Deployment is to run: its own, else `run_image`.
    pub fn image_to_run<'a>(&'a self, run_image: &'a str) -> &'a str {
        self.wanted.as_deref().unwrap_or(run_image)
    }
}

/// The image of `container` (or the first container).
pub fn container_image(d: &Deployment, container: Option<&str>) -> Option<String> {
    template_image(&d.spec.as_ref()?.template, container)
}

/// The image of `container` (or the first container) in a pod template.
pub fn template_image(t: &PodTemplateSpec, container: Option<&str>) -> Option<String> {
    let containers = &t.spec.as_ref()?.containers;
    let c = match container {
        Some(n) => containers.iter().find(|c| c.name == n)?,
        None => containers.first()?,
    };
    c.image.clone()
}

/// Reads the Deployment and picks the container.
///
/// # Errors
/// Missing Deployment or container, a paused Deployment (it would never
/// roll), or the API's refusal.
pub async fn read(
    client: &kube::Client,
    namespace: &str,
    r: &DeploymentRef,
    manifest: Option<&Manifest>,
) -> Result<Current, KubeError> {
    let namespace = manifest.and_then(|m| m.namespace()).unwrap_or(namespace);
    if r.kind != WorkloadKind::Deployment {
        return read_other(client, namespace, r, manifest).await;
    }
    let object = ObjectRef::deployment(namespace, &r.name);
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let live = api
        .get_opt(&r.name)
        .await
        .map_err(|e| KubeError::from_api(e, "get", "deployments", "apps", object.clone()))?;
    if let Some(d) = &live
        && d.spec.as_ref().and_then(|s| s.paused) == Some(true)
    {
        return Err(KubeError::Paused { object, action: "deploy to" });
    }
    let exists = live.is_some();
    let live_template = live.as_ref().and_then(|d| d.spec.as_ref()).map(|s| s.template.clone());
    let revision = live.as_ref().and_then(|d| d.metadata.annotations.as_ref()?.get(REVISION).cloned());
    let d = match (live, manifest) {
        (Some(d), None) => d,
        (None, None) => {
            return Err(match other_kind(client, namespace, &r.name).await {
                Some(kind) => {
                    KubeError::NotADeployment { object: ObjectRef::new(kind, namespace, &r.name), kind }
                }
                None => KubeError::NotFound { object },
            });
        }
        (live, Some(m)) => shaped(m, live.map(|l| (l.metadata, l.status)))?,
    };
    current(r, object, WorkloadKind::Deployment, d, live_template, revision, manifest, exists)
}

/// A manifest's workload in a Deployment's shape (its selector, template
/// and replicas), under the live metadata and status when it exists.
fn shaped(
    m: &Manifest,
    live: Option<(ObjectMeta, Option<k8s_openapi::api::apps::v1::DeploymentStatus>)>,
) -> Result<Deployment, KubeError> {
    // A StatefulSet or DaemonSet read as a Deployment: the fields they
    // share (metadata, selector, template, replicas); the rest is ignored.
    let mut object = m.object.clone();
    object["kind"] = "Deployment".into();
    let mut d: Deployment = serde_json::from_value(object)
        .map_err(|e| KubeError::Config(format!("{}: not a {}: {e}", m.source, m.kind())))?;
    if let Some((meta, status)) = live {
        d.metadata = meta;
        d.status = status;
    }
    Ok(d)
}

/// [`read`] for a StatefulSet or DaemonSet (rolling deploys only).
async fn read_other(
    client: &kube::Client,
    namespace: &str,
    r: &DeploymentRef,
    manifest: Option<&Manifest>,
) -> Result<Current, KubeError> {
    let object = ObjectRef::new(r.kind.as_str(), namespace, &r.name);
    let live = workloads::get(client, r.kind, namespace, &r.name).await?;
    // The manifest's strategy when it sets one; else the live one, which an
    // apply that leaves the field out keeps.
    let on_delete = match (&live, manifest.map(|m| &m.object["spec"]["updateStrategy"]["type"])) {
        (_, Some(t)) if t.is_string() => t == "OnDelete",
        (Some(s), _) => s.on_delete,
        (None, _) => false,
    };
    if on_delete {
        return Err(KubeError::OnDelete { object });
    }
    let exists = live.is_some();
    let live_template = live.as_ref().map(|s| s.template.clone());
    let revision = live.as_ref().map(|s| s.rolled.revision.clone()).filter(|r| !r.is_empty());
    let d = match (live, manifest) {
        (Some(s), None) => s.as_deployment(),
        (None, None) => return Err(KubeError::NotFound { object }),
        (live, Some(m)) => shaped(m, live.map(|s| (s.meta, None)))?,
    };
    current(r, object, r.kind, d, live_template, revision, manifest, exists)
}

/// The container to set, and the [`Current`] of it.
#[allow(clippy::too_many_arguments)] // the parts read above, assembled once
fn current(
    r: &DeploymentRef,
    object: ObjectRef,
    kind: WorkloadKind,
    d: Deployment,
    live_template: Option<PodTemplateSpec>,
    revision: Option<String>,
    manifest: Option<&Manifest>,
    exists: bool,
) -> Result<Current, KubeError> {
    let names: Vec<String> = d
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    let container = match &r.container {
        Some(c) if names.contains(c) => c.clone(),
        Some(c) => {
            return Err(KubeError::NoSuchContainer { object, container: c.clone(), containers: names });
        }
        None => match names.first() {
            Some(c) => c.clone(),
            None => {
                return Err(KubeError::NoSuchContainer {
                    object,
                    container: "(any)".into(),
                    containers: names,
                });
            }
        },
    };
    Ok(Current {
        // The cluster's image, not the manifest's placeholder.
        image: live_template.as_ref().and_then(|t| template_image(t, Some(&container))),
        live_template,
        revision,
        kind,
        object,
        container,
        deployment: d,
        manifest: manifest.map(|m| m.object.clone()),
        exists,
        wanted: r.image.clone(),
    })
}

/// When no Deployment has the name: the workload kind that has it
/// (`StatefulSet`, `DaemonSet`), so the message says what was found
/// rather than sending a user looking for a typo. A kind the Role may not
/// read answers `None`.
async fn other_kind(client: &kube::Client, namespace: &str, name: &str) -> Option<&'static str> {
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    if matches!(sts.get_opt(name).await, Ok(Some(_))) {
        return Some("StatefulSet");
    }
    let ds: Api<DaemonSet> = Api::namespaced(client.clone(), namespace);
    if matches!(ds.get_opt(name).await, Ok(Some(_))) {
        return Some("DaemonSet");
    }
    None
}

/// The minimal apply configuration: the container's name (its merge key)
/// and image, and its `envFrom` when the action's Secret is involved.
pub fn apply_patch(t: &Current, image: &str, env_from: Option<&[EnvFromSource]>) -> serde_json::Value {
    let env_from = env_from.map(|f| serde_json::to_value(f).unwrap_or_default());
    if let Some(m) = &t.manifest {
        // The whole manifest, the image (and envFrom) set in the container.
        let mut m = m.clone();
        m["metadata"]["namespace"] = t.object.namespace.clone().into();
        if let Some(cs) = m["spec"]["template"]["spec"]["containers"].as_array_mut() {
            for c in cs.iter_mut().filter(|c| c["name"] == t.container.as_str()) {
                c["image"] = image.into();
                if let Some(f) = &env_from {
                    c["envFrom"] = f.clone();
                }
            }
        }
        return m;
    }
    let mut c = serde_json::json!({"name": t.container, "image": image});
    if let Some(f) = env_from {
        c["envFrom"] = f;
    }
    serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": t.kind.as_str(),
        "metadata": {"name": t.object.name, "namespace": t.object.namespace},
        "spec": {"template": {"spec": {"containers": [c]}}},
    })
}

fn current_env_from(t: &Current) -> Vec<EnvFromSource> {
    t.deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.iter().find(|c| c.name == t.container))
        .and_then(|c| c.env_from.clone())
        .unwrap_or_default()
}

/// The container's `envFrom` to apply: the entries of others kept in
/// place, the action's Secret (`secret`) last, earlier ones of the action
/// dropped. The list is atomic (whoever applies it owns all of it), so it
/// is applied only when the action's Secret is or was in it; `None` leaves
/// the field alone.
pub fn env_from(t: &Current, app: &str, secret: Option<&str>) -> Option<Vec<EnvFromSource>> {
    let now = current_env_from(t);
    let ours = |f: &EnvFromSource| f.secret_ref.as_ref().is_some_and(|r| is_ours(app, &r.name));
    if secret.is_none() && !now.iter().any(ours) {
        return None;
    }
    let mut out: Vec<EnvFromSource> = now.into_iter().filter(|f| !ours(f)).collect();
    if let Some(s) = secret {
        out.push(EnvFromSource {
            secret_ref: Some(SecretEnvSource { name: s.into(), optional: None }),
            ..Default::default()
        });
    }
    Some(out)
}

/// For a plan without secrets read: the `envFrom` as it is, when the
/// action's Secret is in it (so the dry run does not report its removal).
pub fn env_from_as_is(t: &Current, app: &str) -> Option<Vec<EnvFromSource>> {
    let now = current_env_from(t);
    now.iter().any(|f| f.secret_ref.as_ref().is_some_and(|r| is_ours(app, &r.name))).then_some(now)
}

/// The managers named by a conflict's causes, and the fields.
fn conflicts(s: &kube::core::Status) -> (Vec<String>, Vec<String>) {
    let causes = s.details.as_ref().map(|d| d.causes.as_slice()).unwrap_or_default();
    let managers = causes.iter().filter_map(|c| c.message.split('"').nth(1).map(String::from)).fold(
        Vec::new(),
        |mut v, m| {
            if !v.contains(&m) {
                v.push(m);
            }
            v
        },
    );
    (managers, causes.iter().map(|c| c.field.clone()).filter(|f| !f.is_empty()).collect())
}

/// Whether `manager` holds fields by `Apply` (a declarative owner such as
/// a GitOps controller) rather than only by imperative `Update`s.
fn applies(meta: &ObjectMeta, manager: &str) -> bool {
    meta.managed_fields
        .iter()
        .flatten()
        .any(|m| m.manager.as_deref() == Some(manager) && m.operation.as_deref() == Some("Apply"))
}

/// Sets the image (or, with `dry_run`, asks the server what setting it
/// would do: `dryRun=All`, nothing persisted). Returns whether the
/// template changes (a new rollout).
///
/// A conflict with a manager that *applies* the image (another declarative
/// owner) is an error naming it: forcing would start a tug of war. Fields
/// last written by imperative updates (`kubectl create`, `kubectl set
/// image`, client-side apply, our own undo) are taken over, as `kubectl set
/// image` would overwrite them.
///
/// # Errors
/// [`KubeError::Conflict`] naming the manager and field; API refusals.
pub async fn set_image(
    client: &kube::Client,
    t: &Current,
    image: &str,
    env_from: Option<&[EnvFromSource]>,
    runner: &Runner,
    dry_run: bool,
) -> Result<bool, KubeError> {
    set_image_applied(client, t, image, env_from, runner, dry_run).await.map(|(changed, _)| changed)
}

/// [`set_image`], also returning the pod template the apply left (as the
/// API server stored it): the rollout this run started, which the watch
/// pins ([`super::rollout::watch_applied`]).
///
/// # Errors
/// As [`set_image`].
pub async fn set_image_applied(
    client: &kube::Client,
    t: &Current,
    image: &str,
    env_from: Option<&[EnvFromSource]>,
    runner: &Runner,
    dry_run: bool,
) -> Result<(bool, Option<PodTemplateSpec>), KubeError> {
    let ns = t.object.namespace.as_str();
    let patch = apply_patch(t, image, env_from);
    let before = if t.exists { t.deployment.metadata.generation.unwrap_or(0) } else { 0 };
    let target = Target { object: &t.object, resource: t.kind.resource(), group: "apps" };
    let live = t.exists.then_some(&t.deployment.metadata);
    // The applied object's generation and pod template, whatever its kind.
    let (after, template) = match t.kind {
        WorkloadKind::Deployment => {
            let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
            let a = apply_taking_over(&api, &target, &patch, live, runner, dry_run).await?;
            (a.metadata.generation, a.spec.map(|s| s.template))
        }
        WorkloadKind::StatefulSet => {
            let api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
            let a = apply_taking_over(&api, &target, &patch, live, runner, dry_run).await?;
            (a.metadata.generation, a.spec.map(|s| s.template))
        }
        WorkloadKind::DaemonSet => {
            let api: Api<DaemonSet> = Api::namespaced(client.clone(), ns);
            let a = apply_taking_over(&api, &target, &patch, live, runner, dry_run).await?;
            (a.metadata.generation, a.spec.map(|s| s.template))
        }
    };
    let after = after.unwrap_or(0);
    if !dry_run {
        match t.exists {
            true => runner.line(&format!(
                "{}: container {} set to {image} (generation {before} → {after})",
                t.object, t.container
            )),
            false => runner.line(&format!("{}: created, container {} runs {image}", t.object, t.container)),
        }
    }
    // Changed when the pod template is another: a new revision to undo. A
    // spec change elsewhere (replicas by an HPA, a manifest's strategy)
    // moves the generation, not the template, and leaves nothing to undo.
    let changed = !t.exists || template.as_ref() != t.live_template.as_ref();
    Ok((changed, template))
}

/// What an apply writes to, for messages.
struct Target<'a> {
    object: &'a ObjectRef,
    resource: &'a str,
    group: &'a str,
}

/// Server-side apply of `patch`; a conflict with a manager that *applies*
/// the field is an error naming it, one with imperative updates only is
/// taken over (forced), as `kubectl set image` or `kubectl apply` would
/// overwrite them. `live` is the object's metadata when known (else read on
/// a conflict).
async fn apply_taking_over<K>(
    api: &Api<K>,
    t: &Target<'_>,
    patch: &serde_json::Value,
    live: Option<&ObjectMeta>,
    runner: &Runner,
    dry_run: bool,
) -> Result<K, KubeError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let refused = |e| KubeError::from_api(e, "patch", t.resource, t.group, t.object.clone());
    let mut params = PatchParams::apply(FIELD_MANAGER);
    if dry_run {
        params = params.dry_run();
    }
    let name = t.object.name.as_str();
    match api.patch(name, &params, &Patch::Apply(patch)).await {
        Ok(d) => Ok(d),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let (managers, fields) = conflicts(&s);
            let read;
            let meta = match live {
                Some(m) => Some(m),
                None => {
                    read = api.get_opt(name).await.ok().flatten();
                    read.as_ref().map(|o| o.meta())
                }
            };
            // The action's own undo writes by Update under the same name:
            // that is not another owner.
            let declarative = |m: &String| m != FIELD_MANAGER && meta.is_some_and(|meta| applies(meta, m));
            if managers.is_empty() || managers.iter().any(declarative) {
                let named = if managers.is_empty() { s.message.clone() } else { managers.join(", ") };
                return Err(KubeError::Conflict {
                    object: t.object.clone(),
                    managers: named,
                    fields: if fields.is_empty() { "the image".into() } else { fields.join(", ") },
                });
            }
            runner.line(&format!(
                "{}: {} {} from imperative update(s) by {}",
                t.object,
                if dry_run { "would take over" } else { "taking over" },
                fields.join(", "),
                managers.join(", ")
            ));
            api.patch(name, &params.clone().force(), &Patch::Apply(patch)).await.map_err(refused)
        }
        Err(e) => Err(refused(e)),
    }
}

/// Applies one object of the manifests as written (namespaced kinds
/// without a namespace go to `namespace`), with the same conflict rules as
/// the image. Returns the object as users name it.
///
/// # Errors
/// An unknown kind (no such API on the server), a conflict, a refusal.
pub async fn apply_object(
    client: &kube::Client,
    m: &Manifest,
    namespace: &str,
    runner: &Runner,
    dry_run: bool,
) -> Result<ObjectRef, KubeError> {
    let (group, version) = match m.api_version().split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", m.api_version()),
    };
    let gvk = GroupVersionKind::gvk(group, version, m.kind());
    let ns = m.namespace().unwrap_or(namespace);
    let object = ObjectRef::new(m.kind(), ns, m.name());
    let (ar, caps) = kube::discovery::pinned_kind(client, &gvk).await.map_err(|e| match e {
        kube::Error::Api(s) if s.code == 403 => {
            KubeError::from_api(kube::Error::Api(s), "get", "(discovery)", group, object.clone())
        }
        e => KubeError::Config(format!(
            "{}: {} {} is not served by this cluster ({e})",
            m.source,
            m.api_version(),
            m.kind()
        )),
    })?;
    let mut body = m.object.clone();
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => {
            body["metadata"]["namespace"] = ns.into();
            Api::namespaced_with(client.clone(), ns, &ar)
        }
        Scope::Cluster => Api::all_with(client.clone(), &ar),
    };
    let object = match caps.scope {
        Scope::Namespaced => object,
        Scope::Cluster => ObjectRef::new(m.kind(), "", m.name()),
    };
    let target = Target { object: &object, resource: &ar.plural, group };
    apply_taking_over(&api, &target, &body, None, runner, dry_run).await?;
    Ok(object)
}
