//! Reaching the cluster: `eks-cluster` (see [`super::eks`]), else the
//! `kubeconfig` input (content, in memory only), else `KUBECONFIG`, else
//! the in-cluster service account.

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::error::KubeError;
use crate::inputs::{KubernetesSpec, Problem};

/// Checks done before any contact: the inline kubeconfig parses and names
/// the context asked for.
pub fn problems(spec: &KubernetesSpec) -> Vec<Problem> {
    let Some(text) = &spec.kubeconfig else { return Vec::new() };
    let problem = |m: String| vec![Problem { input: "kubeconfig".into(), message: m }];
    // The parser's message never quotes values (it names fields and lines).
    let kc = match Kubeconfig::from_yaml(text.expose()) {
        Ok(kc) => kc,
        Err(e) => return problem(format!("is not a kubeconfig: {e}")),
    };
    match (&spec.context, &kc.current_context) {
        (Some(want), _) if !kc.contexts.iter().any(|c| &c.name == want) => vec![Problem {
            input: "kube-context".into(),
            message: format!(
                "'{want}' is not a context of the kubeconfig (it has: {})",
                kc.contexts.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
            ),
        }],
        (None, None) => problem("has no current-context; set 'kube-context' to one of its contexts".into()),
        _ => Vec::new(),
    }
}

/// The credentials inside an inline kubeconfig, to mask before anything is
/// printed: tokens, passwords and client keys (certificates are public).
pub fn credentials(spec: &KubernetesSpec) -> Vec<String> {
    let Some(text) = &spec.kubeconfig else { return Vec::new() };
    let Ok(doc) = serde_yaml::from_str::<serde_yaml::Value>(text.expose()) else { return Vec::new() };
    let mut out = Vec::new();
    for user in doc.get("users").and_then(|u| u.as_sequence()).into_iter().flatten() {
        let Some(u) = user.get("user") else { continue };
        for key in ["token", "password", "client-key-data"] {
            if let Some(v) = u.get(key).and_then(|v| v.as_str()).filter(|v| !v.is_empty()) {
                out.push(v.to_string());
            }
        }
    }
    out
}

/// Builds the client. Nothing is sent until the first call.
///
/// # Errors
/// [`KubeError::Config`] when no configuration can be loaded.
pub async fn connect(spec: &KubernetesSpec) -> Result<Client, KubeError> {
    if let Some(eks) = &spec.eks {
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(eks.region.clone()))
            .load()
            .await;
        let config = super::eks::config(eks, &sdk).await?;
        let token = super::eks::Renewing::start(eks, &sdk).await?;
        let builder =
            kube::client::ClientBuilder::try_from(config).map_err(|e| KubeError::Connect(e.to_string()))?;
        return Ok(builder.with_layer(&token.layer()).build());
    }
    let options = KubeConfigOptions { context: spec.context.clone(), cluster: None, user: None };
    let config = match (&spec.kubeconfig, &spec.kubeconfig_env) {
        (Some(text), _) => {
            let kc = Kubeconfig::from_yaml(text.expose())
                .map_err(|e| KubeError::Config(format!("input 'kubeconfig': {e}")))?;
            Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| KubeError::Config(format!("input 'kubeconfig': {e}")))?
        }
        (None, Some(paths)) => {
            // KUBECONFIG may list several files, merged as kubectl does.
            let mut merged: Option<Kubeconfig> = None;
            for p in std::env::split_paths(paths) {
                let kc = Kubeconfig::read_from(&p)
                    .map_err(|e| KubeError::Config(format!("KUBECONFIG {}: {e}", p.display())))?;
                merged = Some(match merged {
                    None => kc,
                    Some(m) => m.merge(kc).map_err(|e| KubeError::Config(format!("KUBECONFIG: {e}")))?,
                });
            }
            let kc = merged.ok_or_else(|| KubeError::Config("KUBECONFIG names no file".into()))?;
            Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| KubeError::Config(format!("KUBECONFIG: {e}")))?
        }
        (None, None) => Config::incluster().map_err(|e| {
            KubeError::Config(format!(
                "no 'kubeconfig' input, no KUBECONFIG, and not inside a cluster ({e}); set 'kubeconfig'"
            ))
        })?,
    };
    Client::try_from(config).map_err(|e| KubeError::Connect(e.to_string()))
}
