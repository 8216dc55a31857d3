//! A mocked API server for `kube::Client` in unit tests (kube-rs over
//! `tower-test`, as controller-rs tests its reconciler): every request is
//! answered by a function of its method and path and recorded in order,
//! so a test can pin which call comes when.

use http::{Method, Request, Response};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{Value, json};

use super::apply::Current;
use super::error::ObjectRef;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// One call the server answered: method, path, body, and when.
#[derive(Debug)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub body: Value,
    pub at: Instant,
}

/// A client whose every request `answer` answers (with 200), and the task
/// that serves it; the task ends, with every call in order, once the
/// client and its clones are dropped.
pub fn server(answer: fn(&Method, &str) -> Value) -> (kube::Client, JoinHandle<Vec<Call>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        let mut calls = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let path = parts.uri.path().to_string();
            let reply = answer(&parts.method, &path);
            calls.push(Call { method: parts.method.to_string(), path, body, at: Instant::now() });
            let response = Response::builder().status(200).body(Body::from(reply.to_string().into_bytes()));
            send.send_response(response.expect("a response"));
        }
        calls
    });
    (kube::Client::new(service, "default"), server)
}

/// `METHOD /path` of each call.
pub fn said(calls: &[Call]) -> Vec<String> {
    calls.iter().map(|c| format!("{} {}", c.method, c.path)).collect()
}

/// What a delete answers.
pub fn status() -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "status": "Success", "metadata": {}})
}

/// An object of `kind` named as the path's last segment.
pub fn named(api_version: &str, kind: &str, path: &str) -> Value {
    let name = path.rsplit('/').next().unwrap_or_default();
    json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}})
}

/// The Deployment `ns/name` as a run reads it: selected and labelled
/// `app: <name>`, one container `app` running `image`.
pub fn current(ns: &str, name: &str, image: &str) -> Current {
    let labels = json!({"app": name});
    let deployment = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "app", "image": image}]}}
        }
    }))
    .expect("a Deployment");
    Current {
        object: ObjectRef::deployment(ns, name),
        kind: crate::inputs::WorkloadKind::Deployment,
        container: "app".into(),
        image: Some(image.into()),
        revision: Some("1".into()),
        live_template: None,
        deployment,
        manifest: None,
        exists: true,
        wanted: None,
    }
}
