//! One Deployment and its live Service ([`Pair`]): read, checked (an HPA
//! scaling it, a Service shared with Deployments this run does not
//! deploy), and the colour Deployments made from it.

use super::*;

/// One Deployment and its live Service.
pub(super) struct Pair {
    pub(super) source: Current,
    pub(super) service: Service,
    pub(super) preview: Option<Service>,
    /// The colour the live Service selects now (`None`: the source's pods).
    pub(super) live: Option<&'static str>,
    pub(super) candidate: &'static str,
    /// Whether the candidate colour's Deployment existed before this run
    /// (it holds an earlier release, put back on the way back); one this
    /// run created is deleted on the way back, so that `mode: rollback`
    /// never brings back a release that never served.
    pub(super) candidate_existed: bool,
    /// On the first deploy (`live` is `None`): the pod-template-hash the
    /// live Service was pinned to, so a way back re-pins rather than
    /// letting the candidate's pods (same app labels) in.
    pub(super) pin: std::sync::OnceLock<String>,
    pub(super) replicas: i32,
    /// The image the serving Deployment runs.
    pub(super) old_image: Option<String>,
}

impl Pair {
    pub(super) fn ns(&self) -> &str {
        &self.source.object.namespace
    }
    pub(super) fn name(&self) -> &str {
        &self.source.object.name
    }
    pub(super) fn colour_name(&self, colour: &str) -> String {
        format!("{}-{colour}", self.name())
    }
    pub(super) fn candidate_name(&self) -> String {
        self.colour_name(self.candidate)
    }
    /// In `mode: rollback`, the Deployment brought back: the colour at
    /// zero, or, right after the first blue-green deploy (no other colour
    /// yet), the source itself, kept at zero as the template.
    pub(super) fn back_name(&self) -> String {
        if self.candidate_existed { self.candidate_name() } else { self.name().to_string() }
    }
    /// The Deployment serving now.
    pub(super) fn old_name(&self) -> String {
        match self.live {
            Some(c) => self.colour_name(c),
            None => self.name().to_string(),
        }
    }
    pub(super) fn service_ref(&self) -> ObjectRef {
        ObjectRef::new("service", self.ns(), self.service.metadata.name.as_deref().unwrap_or_default())
    }
    /// The source's selector labels plus the colour.
    pub(super) fn selector_for(&self, colour: &str) -> BTreeMap<String, String> {
        let mut s = source_labels(&self.source.deployment);
        s.insert(COLOUR.into(), colour.into());
        s
    }
}

pub(super) fn source_labels(d: &Deployment) -> BTreeMap<String, String> {
    d.spec.as_ref().and_then(|s| s.selector.match_labels.clone()).unwrap_or_default()
}

pub(super) fn other(c: &str) -> &'static str {
    if c == "blue" { "green" } else { "blue" }
}

/// The colour Deployment from the source's spec: the colour in its
/// selector and pods, the image (and the app's Secret) in the container.
/// `deploy_id`: the deploy that makes it (`None` for a plan), kept in the
/// annotation [`workers::ROLLED_BY`] so that `mode: rollback` knows which
/// workers went with it.
pub fn colour_deployment(
    source: &Current,
    colour: &str,
    image: &str,
    env_from: Option<&[k8s_openapi::api::core::v1::EnvFromSource]>,
    replicas: i32,
    deploy_id: Option<&str>,
) -> serde_json::Value {
    let d = &source.deployment;
    let mut spec = serde_json::to_value(d.spec.clone().unwrap_or_default()).unwrap_or_default();
    spec["replicas"] = replicas.into();
    spec["selector"]["matchLabels"][COLOUR] = colour.into();
    spec["template"]["metadata"]["labels"][COLOUR] = colour.into();
    if let Some(o) = spec.as_object_mut() {
        o.remove("paused");
    }
    if let Some(cs) = spec["template"]["spec"]["containers"].as_array_mut() {
        for c in cs.iter_mut().filter(|c| c["name"] == source.container.as_str()) {
            c["image"] = image.into();
            if let Some(f) = env_from {
                c["envFrom"] = serde_json::to_value(f).unwrap_or_default();
            }
        }
    }
    let mut labels = d.metadata.labels.clone().unwrap_or_default();
    labels.insert(COLOUR.into(), colour.into());
    labels.insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
    let mut annotations = json!({"deploy-action/source": source.object.name});
    if let Some(id) = deploy_id {
        annotations[workers::ROLLED_BY] = id.into();
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": format!("{}-{colour}", source.object.name),
            "namespace": source.object.namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": spec,
    })
}

/// Reads the Deployment of `r` (the template) and its live Service.
// long: reads and checks one pair (Deployment, live Service, colours, preview) before anything changes; each refusal is named where its value is read.
pub(super) async fn read_pair(client: &kube::Client, ns: &str, r: &DeploymentRef) -> Result<Pair, KubeError> {
    let source = apply::read(client, ns, r, None).await?;
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let name = source.object.name.clone();
    let get = |svc: String| {
        let services = services.clone();
        async move {
            let svc_ref = ObjectRef::new("service", ns, &svc);
            services
                .get_opt(&svc)
                .await
                .map_err(|e| KubeError::from_api(e, "get", "services", "", svc_ref.clone()))
                .map(|s| (s, svc_ref))
        }
    };
    let (service, svc_ref) = get(r.service_name().to_string()).await?;
    let service = service.ok_or_else(|| {
        KubeError::Config(match &r.service {
            Some(_) => format!("{svc_ref} not found: the services file names it as {}'s live Service", source.object),
            None => format!(
                "{svc_ref} not found: blue-green switches the Service named like the Deployment (or the one a services file names with 'service')"
            ),
        })
    })?;
    let selector = service.spec.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();
    let wanted = source_labels(&source.deployment);
    if selector.is_empty() || wanted.iter().any(|(k, v)| selector.get(k).is_some_and(|s| s != v)) {
        return Err(KubeError::Config(format!(
            "{svc_ref}: its selector {selector:?} does not select the pods of {} ({wanted:?})",
            source.object
        )));
    }
    shared_with_others(client, ns, &svc_ref, &selector, &source.object.name).await?;
    let live = match selector.get(COLOUR).map(String::as_str) {
        Some("blue") => Some("blue"),
        Some("green") => Some("green"),
        _ => None,
    };
    // The preview: the one the services file names (it must exist), else
    // `<service>-preview` if there is one.
    let (preview, preview_ref) =
        get(r.preview.clone().unwrap_or_else(|| format!("{}-preview", r.service_name()))).await?;
    if preview.is_none() && r.preview.is_some() {
        return Err(KubeError::Config(format!(
            "{preview_ref} not found: the services file names it as {}'s preview Service",
            source.object
        )));
    }
    // What serves now: the live colour's Deployment, else the source.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let get_colour = |c: &str| {
        let object = ObjectRef::deployment(ns, &format!("{name}-{c}"));
        let deployments = deployments.clone();
        async move {
            deployments
                .get_opt(&object.name)
                .await
                .map_err(|e| KubeError::from_api(e, "get", "deployments", "apps", object.clone()))
                .map(|d| (d, object))
        }
    };
    let serving = match live {
        Some(c) => match get_colour(c).await? {
            (Some(d), _) => d,
            (None, object) => {
                return Err(KubeError::Config(format!(
                    "{object} not found, yet {svc_ref} selects {COLOUR}={c}: restore it, or point the Service's selector back at {name}'s pods"
                )));
            }
        },
        None => source.deployment.clone(),
    };
    let replicas = serving.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(1);
    let old_image = apply::container_image(&serving, Some(&source.container));
    let candidate = live.map(other).unwrap_or("blue");
    let candidate_existed = get_colour(candidate).await?.0.is_some();
    Ok(Pair {
        source,
        service,
        preview,
        live,
        candidate,
        candidate_existed,
        pin: std::sync::OnceLock::new(),
        replicas,
        old_image,
    })
}

/// Refuses a Deployment that a HorizontalPodAutoscaler scales: blue-green
/// runs the colours at fixed replicas and keeps the source at zero, so the
/// HPA (which targets the source) would be switched off without a word.
pub(super) async fn autoscaled(client: &kube::Client, ns: &str, pairs: &[Pair]) -> Result<(), KubeError> {
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    if pairs.is_empty() {
        return Ok(());
    }
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), ns);
    let list = super::super::paged::list_all(&api, &ListParams::default()).await.map_err(|e| {
        KubeError::from_api(
            e,
            "list",
            "horizontalpodautoscalers",
            "autoscaling",
            ObjectRef::new("horizontalpodautoscaler", ns, ""),
        )
    })?;
    for hpa in &list {
        let target = &hpa.spec.scale_target_ref;
        let scaled = pairs.iter().find(|p| {
            target.kind == "Deployment"
                && [p.name().to_string(), p.colour_name("blue"), p.colour_name("green")]
                    .contains(&target.name)
        });
        if let Some(p) = scaled {
            return Err(KubeError::Autoscaled {
                hpa: ObjectRef::new(
                    "horizontalpodautoscaler",
                    ns,
                    hpa.metadata.name.as_deref().unwrap_or_default(),
                ),
                deployment: p.source.object.clone(),
            });
        }
    }
    Ok(())
}

/// Refuses a live Service whose selector also selects the pods of another
/// Deployment (one not `source` nor its colours): the flip (and, on the
/// first deploy, the pin) narrows the selector to `source`'s pods, and the
/// other's pods would leave the Service's endpoints, an outage of something
/// this run does not deploy. The `pod-template-hash` pin is ours; a
/// Deployment at zero replicas has no pods to lose.
pub(super) async fn shared_with_others(
    client: &kube::Client,
    ns: &str,
    service: &ObjectRef,
    selector: &BTreeMap<String, String>,
    source: &str,
) -> Result<(), KubeError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let list = super::super::paged::list_all(&api, &ListParams::default())
        .await
        .map_err(|e| KubeError::from_api(e, "list", "deployments", "apps", service.clone()))?;
    let ours = |n: &str| n == source || n == format!("{source}-blue") || n == format!("{source}-green");
    let selects = |d: &Deployment| {
        let labels =
            d.spec.as_ref().and_then(|s| s.template.metadata.as_ref()).and_then(|m| m.labels.as_ref());
        let Some(labels) = labels else { return false };
        selector.iter().filter(|(k, _)| *k != HASH_LABEL).all(|(k, v)| labels.get(k) == Some(v))
    };
    let others: Vec<String> = list
        .iter()
        .filter(|d| !d.metadata.name.as_deref().is_some_and(ours))
        .filter(|d| d.spec.as_ref().and_then(|s| s.replicas) != Some(0))
        .filter(|d| selects(d))
        .map(|d| ObjectRef::deployment(ns, d.metadata.name.as_deref().unwrap_or_default()).to_string())
        .collect();
    if others.is_empty() {
        return Ok(());
    }
    Err(KubeError::SharedService {
        service: service.clone(),
        deployment: ObjectRef::deployment(ns, source),
        others: others.join(", "),
    })
}
