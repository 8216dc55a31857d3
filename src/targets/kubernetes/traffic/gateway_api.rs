//! Gateway API: the HTTPRoute's rules that send to the stable Service get
//! a second `backendRef` to the canary Service; the two weights add up to
//! 100. At 0 the canary's backendRef is dropped.

use async_trait::async_trait;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};

use super::{Backends, Router};
use crate::targets::kubernetes::error::{KubeError, ObjectRef};

const GROUP: &str = "gateway.networking.k8s.io";

pub struct HttpRoute<'a> {
    pub name: &'a str,
    pub to: Backends<'a>,
}

#[async_trait]
impl Router for HttpRoute<'_> {
    async fn set_weight(&self, weight: u8) -> Result<(), KubeError> {
        let Backends { client, ns, stable, canary } = &self.to;
        let gvk = GroupVersionKind::gvk(GROUP, "v1", "HTTPRoute");
        let ar = ApiResource::from_gvk_with_plural(&gvk, "httproutes");
        let api: Api<DynamicObject> = Api::namespaced_with((*client).clone(), ns, &ar);
        let object = ObjectRef::new("httproute", ns, self.name);
        let route = api
            .get(self.name)
            .await
            .map_err(|e| KubeError::from_api(e, "get", "httproutes", GROUP, object.clone()))?;
        let mut rules = route.data["spec"]["rules"].clone();
        if !reweigh(&mut rules, stable, canary, weight) {
            return Err(KubeError::Config(format!("{object} has no backendRef to service {stable}")));
        }
        api.patch(self.name, &PatchParams::default(), &Patch::Merge(&json!({"spec": {"rules": rules}})))
            .await
            .map(|_| ())
            .map_err(|e| KubeError::from_api(e, "patch", "httproutes", GROUP, object))
    }
}

/// In every rule that sends to `stable`: its weight `100 - weight`, and a
/// `canary` backendRef like it at `weight` (none at 0). `false` when no
/// rule sends to `stable`.
fn reweigh(rules: &mut Value, stable: &str, canary: &str, weight: u8) -> bool {
    let mut found = false;
    for rule in rules.as_array_mut().into_iter().flatten() {
        let Some(refs) = rule["backendRefs"].as_array_mut() else { continue };
        let Some(stable_ref) = refs.iter().find(|r| r["name"] == stable).cloned() else {
            continue;
        };
        found = true;
        refs.retain(|r| r["name"] != canary);
        for r in refs.iter_mut().filter(|r| r["name"] == stable) {
            r["weight"] = (100 - u32::from(weight)).into();
        }
        if weight > 0 {
            let mut c = stable_ref;
            c["name"] = canary.into();
            c["weight"] = u32::from(weight).into();
            refs.push(c);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_weights_add_up_and_zero_drops_the_canary() {
        let mut rules = json!([
            {"backendRefs": [{"name": "web", "port": 80}]},
            {"backendRefs": [{"name": "other", "port": 80}]},
        ]);
        assert!(reweigh(&mut rules, "web", "web-canary", 10));
        assert_eq!(
            rules[0]["backendRefs"],
            json!([{"name": "web", "port": 80, "weight": 90}, {"name": "web-canary", "port": 80, "weight": 10}])
        );
        assert_eq!(rules[1]["backendRefs"], json!([{"name": "other", "port": 80}]));
        assert!(reweigh(&mut rules, "web", "web-canary", 50));
        assert_eq!(rules[0]["backendRefs"].as_array().map(Vec::len), Some(2));
        assert_eq!(rules[0]["backendRefs"][1]["weight"], 50);
        assert!(reweigh(&mut rules, "web", "web-canary", 0));
        assert_eq!(rules[0]["backendRefs"], json!([{"name": "web", "port": 80, "weight": 100}]));
        assert!(!reweigh(&mut rules, "api", "api-canary", 10));
    }
}
