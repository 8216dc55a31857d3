//! The order of a blue-green way back, pinned against a mocked API server
//! (kube-rs over `tower-test`, as controller-rs tests its reconciler):
//! every Service back first, the drain honoured, the candidates removed
//! last; a signal cuts the drain short but not the clean-up. The real
//! cluster's tests (`tests/it/kubernetes/bluegreen.rs`) check the same
//! through the binary; these say which call comes when.

use super::*;
use crate::targets::kubernetes::mock::{self, Call};

/// `shop/web` served by its blue colour through Service `web`; the green
/// candidate was created by this run.
fn web() -> Pair {
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"selector": {"app": "web", COLOUR: "blue"}}
    }))
    .unwrap();
    Pair {
        source: mock::current("shop", "web", "shop:1"),
        service,
        preview: None,
        live: Some("blue"),
        candidate: "green",
        candidate_existed: false,
        pin: std::sync::OnceLock::new(),
        replicas: 2,
        old_image: Some("shop:1".into()),
    }
}

/// Flips back, then backs out with `drain`, `cancel` firing after
/// `signal_after` (if any); the calls the server saw.
async fn way_back(drain: Duration, signal_after: Option<Duration>) -> Vec<Call> {
    let (client, server) = mock::server(|method, path| match *method {
        http::Method::DELETE => mock::status(),
        _ => mock::named("v1", "Service", path),
    });
    let log = crate::runner::memory::Log::default();
    let runner = log.runner();
    let cancel = CancellationToken::new();
    if let Some(after) = signal_after {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            cancel.cancel();
        });
    }
    let way = WayBack::new(&cancel);
    let pairs = [web()];
    assert!(flip_back(&client, &[&pairs[0]], &runner, &way).await, "{}", log.text());
    let mut out = ClusterRun::default();
    back_out(&client, &pairs, &[], &mut out, drain, &runner, &way).await;
    drop(client);
    server.await.unwrap()
}

#[tokio::test]
async fn after_the_flip_the_services_go_back_first_then_the_drain_then_the_candidate_goes() {
    let drain = Duration::from_millis(400);
    let calls = way_back(drain, None).await;
    assert_eq!(
        mock::said(&calls),
        [
            "PATCH /api/v1/namespaces/shop/services/web",
            "DELETE /apis/apps/v1/namespaces/shop/deployments/web-green",
        ]
    );
    // The Service selects the colour that served again.
    assert_eq!(calls[0].body["spec"]["selector"], json!({"app": "web", COLOUR: "blue", HASH_LABEL: null}));
    // Nothing removed before the traffic had drained from it.
    let waited = calls[1].at - calls[0].at;
    assert!(waited >= drain, "the candidate went {waited:?} after the flip back, drain {drain:?}");
}

#[tokio::test]
async fn a_signal_cuts_the_drain_short_but_the_candidate_is_still_removed_within_the_way_back() {
    let started = Instant::now();
    let calls = way_back(Duration::from_secs(30), Some(Duration::from_millis(200))).await;
    assert_eq!(
        mock::said(&calls),
        [
            "PATCH /api/v1/namespaces/shop/services/web",
            "DELETE /apis/apps/v1/namespaces/shop/deployments/web-green",
        ]
    );
    let took = calls[1].at - started;
    assert!(
        took >= Duration::from_millis(200) && took < crate::targets::wayback::WAY_BACK,
        "removed {took:?} after the start: not cut short by the signal at 200ms"
    );
}
