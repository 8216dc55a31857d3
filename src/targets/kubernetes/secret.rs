//! The app's secrets from SSM on a cluster: one immutable Secret per
//! secret set, named after the set's fingerprint (`<app>-secrets-<12 hex>`:
//! SSM names, versions and dates, never values), and referenced from the
//! pod template by `envFrom`. A rotation makes a new Secret, so the
//! template changes and the pods roll; every earlier revision keeps its own
//! Secret, so `rollout undo` restores the values it ran with. Superseded
//! Secrets are deleted once no ReplicaSet or Deployment refers to them.
//!
//! The values travel once, in the body of the Secret's create call to the
//! API server: the delivery to the app, as the Docker API call is for hosts.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{PodSpec, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};

use super::FIELD_MANAGER;
use super::error::{KubeError, ObjectRef};
use crate::secrets::SecretValue;

/// Labels on every object the action creates beside the Deployments.
pub const APP_LABEL: &str = "deploy-action/app";
pub const ROLE_LABEL: &str = "deploy-action/role";
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", FIELD_MANAGER);

/// The secret set of one deploy, as it goes to the cluster.
#[derive(Debug, Clone)]
pub struct AppSecret {
    pub name: String,
    pub app: String,
    pub data: Vec<(String, SecretValue)>,
}

impl AppSecret {
    /// `None` when the run has no secrets.
    pub fn new(app: &str, fingerprint: Option<&str>, data: &[(String, SecretValue)]) -> Option<Self> {
        let fp = fingerprint.filter(|_| !data.is_empty())?;
        Some(Self { name: name(app, fp), app: app.into(), data: data.to_vec() })
    }
}

/// The Secret's name for `app` and a fingerprint.
pub fn name(app: &str, fingerprint: &str) -> String {
    format!("{app}-secrets-{}", &fingerprint[..fingerprint.len().min(12)])
}

/// Whether `name` is one of the action's Secrets for `app`.
pub fn is_ours(app: &str, name: &str) -> bool {
    name.strip_prefix(app)
        .and_then(|r| r.strip_prefix("-secrets-"))
        .is_some_and(|h| h.len() == 12 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

pub fn labels(app: &str, role: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (APP_LABEL.into(), app.into()),
        (ROLE_LABEL.into(), role.into()),
        (MANAGED_BY.0.into(), MANAGED_BY.1.into()),
    ])
}

/// Creates the Secret unless it exists (same name, same fingerprint: the
/// same values; it is immutable). With `dry_run`, asks the server only.
///
/// # Errors
/// The API's refusal (a forbidden `create secrets` names the Role rule).
pub async fn ensure(
    client: &kube::Client,
    namespace: &str,
    s: &AppSecret,
    dry_run: bool,
) -> Result<bool, KubeError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let object = ObjectRef::new("secret", namespace, &s.name);
    let body = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(s.name.clone()),
            namespace: Some(namespace.into()),
            labels: Some(labels(&s.app, "secrets")),
            ..Default::default()
        },
        immutable: Some(true),
        type_: Some("Opaque".into()),
        data: Some(
            s.data.iter().map(|(k, v)| (k.clone(), ByteString(v.expose().as_bytes().to_vec()))).collect(),
        ),
        ..Default::default()
    };
    let params = PostParams { dry_run, field_manager: Some(FIELD_MANAGER.into()) };
    match api.create(&params, &body).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(KubeError::from_api(e, "create", "secrets", "", object)),
    }
}

/// The Secrets a pod spec refers to (env, envFrom, volumes).
pub fn referenced(spec: &PodSpec) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for c in spec.containers.iter().chain(spec.init_containers.iter().flatten()) {
        for f in c.env_from.iter().flatten() {
            if let Some(r) = &f.secret_ref {
                out.insert(r.name.clone());
            }
        }
        for e in c.env.iter().flatten() {
            if let Some(r) = e.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()) {
                out.insert(r.name.clone());
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(n) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            out.insert(n);
        }
    }
    out
}

/// Deletes `app`'s Secrets that nothing in the namespace refers to: no
/// Deployment or ReplicaSet, and no ControllerRevision (a StatefulSet's or
/// DaemonSet's every revision, its live template included). The revision
/// history keeps its own. Returns the names deleted; when a list is
/// refused, deletes nothing.
///
/// # Errors
/// The API's refusal to list or delete.
pub async fn collect_garbage(
    client: &kube::Client,
    namespace: &str,
    app: &str,
) -> Result<Vec<String>, KubeError> {
    let ns_ref = |kind, name: &str| ObjectRef::new(kind, namespace, name);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let selector = format!("{APP_LABEL}={app},{ROLE_LABEL}=secrets");
    let ours = secrets
        .list_metadata(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| KubeError::from_api(e, "list", "secrets", "", ns_ref("secret", "")))?;
    let mut in_use = BTreeSet::new();
    let rs: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
    for r in super::paged::list_all(&rs, &ListParams::default())
        .await
        .map_err(|e| KubeError::from_api(e, "list", "replicasets", "apps", ns_ref("replicaset", "")))?
    {
        if let Some(s) = r.spec.and_then(|s| s.template).and_then(|t| t.spec) {
            in_use.extend(referenced(&s));
        }
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    for d in super::paged::list_all(&deployments, &ListParams::default())
        .await
        .map_err(|e| KubeError::from_api(e, "list", "deployments", "apps", ns_ref("deployment", "")))?
    {
        if let Some(s) = d.spec.and_then(|s| s.template.spec) {
            in_use.extend(referenced(&s));
        }
    }
    let revisions: Api<ControllerRevision> = Api::namespaced(client.clone(), namespace);
    for r in super::paged::list_all(&revisions, &ListParams::default()).await.map_err(|e| {
        KubeError::from_api(e, "list", "controllerrevisions", "apps", ns_ref("controllerrevision", ""))
    })? {
        // The revision's data: `{"spec": {"template": {...}}}`.
        if let Some(spec) = r.data.as_ref().map(|d| &d.0["spec"]["template"]["spec"])
            && let Ok(s) = serde_json::from_value::<PodSpec>(spec.clone())
        {
            in_use.extend(referenced(&s));
        }
    }
    let mut deleted = Vec::new();
    for s in ours {
        let Some(name) = s.metadata.name else { continue };
        if in_use.contains(&name) || !is_ours(app, &name) {
            continue;
        }
        match secrets.delete(&name, &DeleteParams::default()).await {
            Ok(_) => deleted.push(name),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(KubeError::from_api(e, "delete", "secrets", "", ns_ref("secret", &name))),
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_fingerprint_and_only_ours_match() {
        let n = name("web", "0123456789abcdef0123");
        assert_eq!(n, "web-secrets-0123456789ab");
        assert!(is_ours("web", &n));
        assert!(!is_ours("web", "web-secrets-db"));
        assert!(!is_ours("web", "webx-secrets-0123456789ab"));
        assert!(!is_ours("we", &n));
    }

    #[test]
    fn no_secret_without_values() {
        assert!(AppSecret::new("web", Some("ab"), &[]).is_none());
        let v = [("A".to_string(), SecretValue::new("x".into()))];
        assert!(AppSecret::new("web", None, &v).is_none());
        assert_eq!(
            AppSecret::new("web", Some("abcdef0123456789"), &v).unwrap().name,
            "web-secrets-abcdef012345"
        );
    }

    #[test]
    fn references_are_found_in_env_env_from_and_volumes() {
        let spec: PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [{"name": "a", "envFrom": [{"secretRef": {"name": "s1"}}, {"configMapRef": {"name": "c"}}],
                "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s2", "key": "k"}}}]}],
            "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "s3"}}]}],
            "volumes": [{"name": "v", "secret": {"secretName": "s4"}}]
        }))
        .unwrap();
        assert_eq!(referenced(&spec).into_iter().collect::<Vec<_>>(), ["s1", "s2", "s3", "s4"]);
    }
}
