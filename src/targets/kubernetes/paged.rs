//! Lists read page by page. A namespace's ReplicaSets (ten old ones per
//! Deployment by default), Deployments or pods can be thousands of objects;
//! one unpaginated answer makes the API server build all of them in one
//! response. 500 a page, as kubectl asks, following `continue` to the end.

use kube::api::{Api, ListParams};
use serde::de::DeserializeOwned;

/// Objects per page (kubectl's `--chunk-size` default).
pub const PAGE: u32 = 500;

/// Every object `lp` selects, read `PAGE` at a time.
///
/// # Errors
/// The API's refusal of any page (an expired `continue` token included).
pub async fn list_all<K>(api: &Api<K>, lp: &ListParams) -> Result<Vec<K>, kube::Error>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut lp = lp.clone().limit(PAGE);
    let mut out = Vec::new();
    loop {
        let page = api.list(&lp).await?;
        out.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => lp = lp.continue_token(&token),
            _ => return Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use k8s_openapi::api::core::v1::ConfigMap;
    use serde_json::json;

    use super::*;

    /// A list of three in pages of two: both pages asked with the limit
    /// and the selector, the second with the first's `continue` token.
    #[tokio::test]
    async fn every_page_is_read_following_the_continue_token() {
        let asked: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = asked.clone();
        let server = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let query = req.uri().query().unwrap_or_default().to_string();
            log.lock().unwrap().push(query.clone());
            async move {
                let (names, next) = if query.contains("continue=page-2") {
                    (vec!["c"], "")
                } else {
                    (vec!["a", "b"], "page-2")
                };
                let items: Vec<_> = names.iter().map(|n| json!({"metadata": {"name": n}})).collect();
                let body = json!({"apiVersion": "v1", "kind": "ConfigMapList", "metadata": {"continue": next}, "items": items});
                Ok::<_, std::convert::Infallible>(http::Response::new(kube::client::Body::from(
                    serde_json::to_vec(&body).unwrap(),
                )))
            }
        });
        let api: Api<ConfigMap> = Api::namespaced(kube::Client::new(server, "default"), "shop");
        let all = list_all(&api, &ListParams::default().labels("app=web")).await.unwrap();
        let names: Vec<_> = all.iter().filter_map(|c| c.metadata.name.as_deref()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        let asked = asked.lock().unwrap();
        assert_eq!(asked.len(), 2, "{asked:?}");
        for q in asked.iter() {
            assert!(q.contains("limit=500") && q.contains("labelSelector=app%3Dweb"), "{q}");
        }
        assert!(!asked[0].contains("continue"), "{}", asked[0]);
        assert!(asked[1].contains("continue=page-2"), "{}", asked[1]);
    }
}
