//! The observe window on a cluster, for blue-green's candidates after the
//! flip and for each canary step: the shared window
//! ([`crate::targets::observe::window`]) reads, every round, that each
//! watched Deployment keeps all its replicas available, with the
//! `analysis` (CloudWatch alarms, the Prometheus query). The first failure
//! ends the window for all.

use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::{KubeError, ObjectRef};
use crate::analysis::Analysis;
use crate::runner::Runner;
use crate::targets::observe::{self, Source};

/// How often the Deployments are read in the window.
const EVERY: Duration = Duration::from_secs(1);

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
    let mut available: Vec<Available> = watched
        .iter()
        .map(|object| Available {
            api: Api::namespaced(client.clone(), &object.namespace),
            object: object.clone(),
            when,
            runner,
        })
        .collect();
    // A window already over reads the analysis alone: the Deployments
    // were just proven ready.
    let mut sources: Vec<&mut (dyn Source<KubeError> + '_)> = match end <= Instant::now() {
        true => vec![],
        false => available.iter_mut().map(|a| a as &mut (dyn Source<KubeError> + '_)).collect(),
    };
    observe::window(end, EVERY, analysis, KubeError::Analysis, &mut sources, cancel).await
}

/// One Deployment that must keep every replica it wants available.
struct Available<'a> {
    api: Api<Deployment>,
    object: ObjectRef,
    when: &'a str,
    runner: &'a Runner,
}

#[async_trait]
impl Source<KubeError> for Available<'_> {
    async fn read(&mut self, _last: bool) -> Result<(), KubeError> {
        // A read that fails is tried again next round (as a watch retries).
        let Ok(d) = self.api.get(&self.object.name).await else { return Ok(()) };
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let available = d.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0);
        if available < want {
            let (object, when) = (&self.object, self.when);
            self.runner.line(&format!("{object}: {available} of {want} replicas available {when}"));
            return Err(KubeError::ProgressDeadline {
                object: object.clone(),
                message: format!("lost availability {when}: {available} of {want} replicas available"),
            });
        }
        Ok(())
    }
}
