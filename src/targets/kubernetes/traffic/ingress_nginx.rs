//! ingress-nginx: a canary Ingress (`<ingress>-canary`) with the main
//! Ingress's rules, its backends pointed at the canary Service, weighted by
//! the `nginx.ingress.kubernetes.io/canary-weight` annotation. At 0 the
//! canary Ingress is deleted.

use async_trait::async_trait;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};

use super::{Backends, CANARY_OF, Router};
use crate::targets::kubernetes::FIELD_MANAGER;
use crate::targets::kubernetes::error::{KubeError, ObjectRef};
use crate::targets::kubernetes::secret::MANAGED_BY;

const GROUP: &str = "networking.k8s.io";

pub struct IngressNginx<'a> {
    /// The main Ingress, whose rules send to the stable Service.
    pub name: &'a str,
    pub to: Backends<'a>,
}

#[async_trait]
impl Router for IngressNginx<'_> {
    async fn set_weight(&self, weight: u8) -> Result<(), KubeError> {
        let Backends { client, ns, stable, canary } = &self.to;
        let api: Api<Ingress> = Api::namespaced((*client).clone(), ns);
        let canary_name = format!("{}-canary", self.name);
        let object = ObjectRef::new("ingress", ns, &canary_name);
        if weight == 0 {
            return match api.delete(&canary_name, &DeleteParams::default()).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                Err(e) => Err(KubeError::from_api(e, "delete", "ingresses", GROUP, object)),
            };
        }
        let main = api.get(self.name).await.map_err(|e| {
            KubeError::from_api(e, "get", "ingresses", GROUP, ObjectRef::new("ingress", ns, self.name))
        })?;
        let mut spec = serde_json::to_value(main.spec.unwrap_or_default()).unwrap_or_default();
        retarget(&mut spec, stable, canary);
        if let Some(o) = spec.as_object_mut() {
            o.remove("defaultBackend");
        }
        let body = json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {
                "name": canary_name,
                "namespace": ns,
                "labels": {MANAGED_BY.0: MANAGED_BY.1, CANARY_OF: stable},
                "annotations": {
                    "nginx.ingress.kubernetes.io/canary": "true",
                    "nginx.ingress.kubernetes.io/canary-weight": weight.to_string(),
                },
            },
            "spec": spec,
        });
        api.patch(&canary_name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
            .await
            .map(|_| ())
            .map_err(|e| KubeError::from_api(e, "patch", "ingresses", GROUP, object))
    }
}

/// Points every backend naming service `from` at `to`.
fn retarget(v: &mut Value, from: &str, to: &str) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_are_retargeted() {
        let mut v = json!({"rules": [{"http": {"paths": [{"backend": {"service": {"name": "web", "port": {"number": 80}}}},
            {"backend": {"service": {"name": "other", "port": {"number": 80}}}}]}}]});
        retarget(&mut v, "web", "web-canary");
        assert_eq!(v["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"], "web-canary");
        assert_eq!(v["rules"][0]["http"]["paths"][1]["backend"]["service"]["name"], "other");
    }
}
