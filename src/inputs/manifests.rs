//! `manifests`: files or globs in the workspace, multi-document YAML. Read
//! and checked with the other inputs, before anything is contacted: every
//! pattern must match a file, every document must be an object with
//! `apiVersion`, `kind` and `metadata.name`, none may appear twice, and the
//! image must have somewhere to go.

use std::path::{Component, Path};

use serde::Deserialize;
use serde_json::Value;

/// One document of a manifest file.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// `path#n` (the n-th document, from 1), for messages.
    pub source: String,
    pub object: Value,
}

impl Manifest {
    pub fn kind(&self) -> &str {
        self.object["kind"].as_str().unwrap_or_default()
    }
    pub fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or_default()
    }
    pub fn namespace(&self) -> Option<&str> {
        self.object["metadata"]["namespace"].as_str()
    }
    pub fn api_version(&self) -> &str {
        self.object["apiVersion"].as_str().unwrap_or_default()
    }
    pub fn is_deployment(&self) -> bool {
        self.kind() == "Deployment" && self.api_version() == "apps/v1"
    }
    /// A Deployment, StatefulSet or DaemonSet (`apps/v1`): what a rolling
    /// deploy sets the image of and judges.
    pub fn workload_kind(&self) -> Option<super::WorkloadKind> {
        super::WorkloadKind::of_manifest(self.api_version(), self.kind())
    }
    /// The names and images of a workload's containers.
    pub fn containers(&self) -> Vec<(String, String)> {
        self.object["spec"]["template"]["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["name"].as_str().unwrap_or_default().into(),
                    c["image"].as_str().unwrap_or_default().into(),
                )
            })
            .collect()
    }
}

/// Where an object goes in the apply order: what others refer to first
/// (Namespace, CRDs, ServiceAccounts and RBAC, ConfigMaps and Secrets and
/// the custom resources that make Secrets, storage, Services), then the
/// workloads ([`WORKLOAD`]), then what refers to workloads (HPAs,
/// PodDisruptionBudgets, Ingresses, the rest).
pub fn rank(kind: &str) -> u8 {
    match kind {
        "Namespace" => 0,
        "CustomResourceDefinition" => 1,
        "ServiceAccount" | "ResourceQuota" | "LimitRange" | "PriorityClass" => 2,
        "ClusterRole" | "Role" => 3,
        "ClusterRoleBinding" | "RoleBinding" => 4,
        // What the Secret-making resources below refer to: external-secrets'
        // stores, cert-manager's issuers.
        "ConfigMap" | "Secret" | "SecretStore" | "ClusterSecretStore" | "Issuer" | "ClusterIssuer" => 5,
        // Resources whose controllers write the Secrets pods mount or read
        // (sealed-secrets, external-secrets, cert-manager), before the
        // migration and the workloads that use them; then storage.
        "SealedSecret" | "ExternalSecret" | "ClusterExternalSecret" | "PushSecret" | "Certificate" => 6,
        "StorageClass" | "PersistentVolume" | "PersistentVolumeClaim" => 6,
        "Service" => 7,
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" | "CronJob" | "Pod" => WORKLOAD,
        _ => 9,
    }
}

/// The rank of workloads: applied after the migration.
pub const WORKLOAD: u8 = 8;

/// Reads every pattern under `workspace`, in apply order (stable within a
/// rank: the order of the files and documents), and every problem found,
/// each naming the file and document (the objects read despite them are
/// returned too, so later checks can name their problems as well).
pub fn load(workspace: &Path, patterns: &[String]) -> (Vec<Manifest>, Vec<String>) {
    let mut problems = Vec::new();
    let mut out: Vec<Manifest> = Vec::new();
    for p in patterns {
        if Path::new(p).is_absolute() || Path::new(p).components().any(|c| c == Component::ParentDir) {
            problems.push(format!("'{p}' must be a path inside the workspace (relative, without '..')"));
            continue;
        }
        let full = workspace.join(p);
        let mut files: Vec<_> = match glob::glob(&full.to_string_lossy()) {
            Ok(paths) => paths.filter_map(Result::ok).filter(|f| f.is_file()).collect(),
            Err(e) => {
                problems.push(format!("'{p}' is not a valid glob: {e}"));
                continue;
            }
        };
        files.sort();
        if files.is_empty() {
            problems.push(format!("'{p}' matches no file in the workspace ({})", workspace.display()));
        }
        for f in files {
            let shown = f.strip_prefix(workspace).unwrap_or(&f).display().to_string();
            match std::fs::read_to_string(&f) {
                Ok(text) => parse(&shown, &text, &mut out, &mut problems),
                Err(e) => problems.push(format!("{shown}: cannot be read: {e}")),
            }
        }
    }
    for (i, m) in out.iter().enumerate() {
        if let Some(first) = out[..i]
            .iter()
            .find(|o| o.kind() == m.kind() && o.name() == m.name() && o.namespace() == m.namespace())
        {
            problems.push(format!("{}: {} {} is also in {}", m.source, m.kind(), m.name(), first.source));
        }
    }
    if out.is_empty() && problems.is_empty() {
        problems.push("name no object".into());
    }
    out.sort_by_key(|m| rank(m.kind()));
    (out, problems)
}

fn parse(file: &str, text: &str, out: &mut Vec<Manifest>, problems: &mut Vec<String>) {
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let source = format!("{file}#{}", i + 1);
        // The parser's messages name lines and columns, never values.
        let value = match serde_yaml::Value::deserialize(doc) {
            Ok(serde_yaml::Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("{source}: is not YAML: {e}"));
                return;
            }
        };
        let object: Value = match serde_json::to_value(&value) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("{source}: cannot be read as an object: {e}"));
                continue;
            }
        };
        let m = Manifest { source: source.clone(), object };
        let missing: Vec<&str> = [
            ("apiVersion", m.object["apiVersion"].is_string()),
            ("kind", m.object["kind"].is_string()),
            ("metadata.name", m.object["metadata"]["name"].is_string()),
        ]
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(f, _)| f)
        .collect();
        if !missing.is_empty() {
            problems.push(format!("{source}: is not a Kubernetes object (no {})", missing.join(", ")));
            continue;
        }
        if m.kind().ends_with("List") {
            problems.push(format!("{source}: a {} is not applied; list its items as documents", m.kind()));
            continue;
        }
        out.push(m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let p = d.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        d
    }

    #[test]
    fn documents_are_read_in_dependency_order() {
        let d = dir(&[
            (
                "k8s/app.yaml",
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\n---\n",
            ),
            ("k8s/config.yml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\n"),
            ("k8s/ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n"),
            (
                "k8s/hpa.yaml",
                "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: web}\n",
            ),
        ]);
        let (m, problems) = load(d.path(), &["k8s/*.yaml".into(), "k8s/config.yml".into()]);
        assert!(problems.is_empty(), "{problems:?}");
        let kinds: Vec<&str> = m.iter().map(|m| m.kind()).collect();
        assert_eq!(kinds, ["Namespace", "ConfigMap", "Service", "Deployment", "HorizontalPodAutoscaler"]);
        assert_eq!(m[3].source, "k8s/app.yaml#1");
        assert!(m[3].is_deployment());
    }

    /// The custom resources that make the Secrets a workload reads go
    /// before it (and before the migration, which runs at the workloads'
    /// rank): after the stores or issuers they name.
    #[test]
    fn secret_making_custom_resources_go_before_the_workloads() {
        let d = dir(&[(
            "k8s/app.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n---\napiVersion: bitnami.com/v1alpha1\nkind: SealedSecret\nmetadata: {name: web-db}\n---\napiVersion: external-secrets.io/v1beta1\nkind: ExternalSecret\nmetadata: {name: web-api}\n---\napiVersion: external-secrets.io/v1beta1\nkind: SecretStore\nmetadata: {name: aws}\n---\napiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: web}\n",
        )]);
        let (m, problems) = load(d.path(), &["k8s/app.yaml".into()]);
        assert!(problems.is_empty(), "{problems:?}");
        let kinds: Vec<&str> = m.iter().map(|m| m.kind()).collect();
        assert_eq!(kinds, ["SecretStore", "SealedSecret", "ExternalSecret", "Deployment", "ServiceMonitor"]);
        assert!(rank("SealedSecret") < WORKLOAD && rank("Certificate") < WORKLOAD);
    }

    #[test]
    fn every_problem_is_named_at_once() {
        let d = dir(&[
            ("a.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\n---\nkind: Service\n"),
            ("b.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\n"),
            ("c.yaml", "apiVersion: v1\nkind: List\nmetadata: {name: l}\nitems: []\n"),
            ("bad.yaml", "a: [unclosed\n"),
        ]);
        let (_, e) = load(d.path(), &["*.yaml".into(), "none/*.yaml".into(), "../x.yaml".into()]);
        let all = e.join("\n");
        for want in [
            "a.yaml#2: is not a Kubernetes object (no apiVersion, metadata.name)",
            "b.yaml#1: ConfigMap cfg is also in a.yaml#1",
            "c.yaml#1: a List is not applied",
            "bad.yaml#1: is not YAML",
            "'none/*.yaml' matches no file",
            "'../x.yaml' must be a path inside the workspace",
        ] {
            assert!(all.contains(want), "{want} missing from:\n{all}");
        }
    }
}
