//! The observe window on a cluster, one loop for blue-green's candidates
//! after the flip and for each canary step: every watched Deployment must
//! keep all its replicas available until the window ends, and the
//! `analysis` (CloudWatch alarms, the Prometheus query; read at the start,
//! then every interval) must hold. The first failure ends the window for
//! all.

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::{KubeError, ObjectRef};
use crate::analysis::{Analysis, AnalysisError};
use crate::runner::Runner;

/// Watches `watched` and the `analysis` until `end`. `when` says in the
/// failure which window it was ("after the switch", "during the canary
/// step"). `Err(None)`: cancelled.
pub async fn window(
    client: &kube::Client,
    watched: &[ObjectRef],
    end: Instant,
    when: &str,
    analysis: Option<&Analysis>,
    runner: &Runner,
    cancel: &CancellationToken,
) -> Result<(), Option<KubeError>> {
    let judged = async {
        match analysis {
            Some(a) => a.watch_until(end, cancel).await.map_err(analysis_failed),
            None => Ok(()),
        }
    };
    if end <= Instant::now() {
        return judged.await;
    }
    let watches = watched.iter().map(|object| async move {
        let api: Api<Deployment> = Api::namespaced(client.clone(), &object.namespace);
        let cfg = watcher::Config::default().fields(&format!("metadata.name={}", object.name));
        let mut events = watcher(api, cfg).default_backoff().boxed();
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(end) => return Ok(()),
                _ = cancel.cancelled() => return Err(None),
                ev = events.next() => {
                    if let Some(Ok(watcher::Event::Apply(d) | watcher::Event::InitApply(d))) = ev {
                        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                        let available = d.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0);
                        if available < want {
                            runner.line(&format!("{object}: {available} of {want} replicas available {when}"));
                            return Err(Some(KubeError::ProgressDeadline {
                                object: object.clone(),
                                message: format!("lost availability {when}: {available} of {want} replicas available"),
                            }));
                        }
                    }
                }
            }
        }
    });
    futures::future::try_join(futures::future::try_join_all(watches), judged).await.map(|_| ())
}

/// An analysis failure as the cluster's strategies return one: `None`
/// when cancelled.
pub fn analysis_failed(e: AnalysisError) -> Option<KubeError> {
    match e {
        AnalysisError::Cancelled => None,
        e => Some(KubeError::Analysis(e)),
    }
}
