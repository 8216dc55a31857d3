//! One canary against its stable Deployment ([`Canary`]): each step
//! applied and watched, the weight set through the router, the window
//! observed, the promotion and the abort.

use super::*;
use crate::targets::kubernetes::traffic::{Backends, Router, router};

pub(super) struct Canary<'a> {
    pub(super) client: &'a kube::Client,
    pub(super) ns: String,
    pub(super) stable: Current,
    /// The stable Service (the Deployment's name unless a services file
    /// names another): the weighted routers' stable backend.
    pub(super) service: String,
    pub(super) stable_replicas: i32,
    pub(super) traffic: CanaryTraffic,
    /// See [`Steps::drain`].
    pub(super) drain: Duration,
    pub(super) runner: &'a Runner,
}

impl Canary<'_> {
    pub(super) fn name(&self) -> String {
        name_of(&self.stable.object.name)
    }
    pub(super) fn object(&self) -> ObjectRef {
        ObjectRef::deployment(&self.ns, &self.name())
    }
    pub(super) fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Applies the canary Deployment at `weight` and waits for it.
    pub(super) async fn step(
        &self,
        image: &str,
        env_from: Option<&[k8s_openapi::api::core::v1::EnvFromSource]>,
        weight: u8,
        cancel: &CancellationToken,
    ) -> Result<bool, KubeError> {
        let replicas = canary_replicas(&self.traffic, self.stable_replicas, weight.min(99));
        let body = canary_deployment(&self.stable, &self.traffic, image, env_from, replicas, weight);
        self.deployments()
            .patch(&self.name(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
            .await
            .map_err(|e| KubeError::from_api(e, "patch", "deployments", "apps", self.object()))?;
        if rollout::watch(self.client, &self.ns, &self.name(), self.runner, cancel).await?.is_none() {
            return Ok(false);
        }
        if self.router().weighted() {
            self.ensure_service().await?;
        }
        self.set_weight(weight).await?;
        let share = match self.traffic {
            CanaryTraffic::Replicas => {
                format!("{replicas} of {} pods", replicas + self.stable_replicas)
            }
            _ => format!("weight {weight}, {replicas} pod(s)"),
        };
        self.runner.line(&format!("canary at {weight}% ({share}) via {}", traffic_str(&self.traffic)));
        Ok(true)
    }

    /// The canary Service (weighted routers only): the stable Service's
    /// ports, the canary's pods.
    pub(super) async fn ensure_service(&self) -> Result<(), KubeError> {
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.ns);
        let stable = &self.stable.object.name;
        let svc_ref = ObjectRef::new("service", &self.ns, &self.service);
        let s = services
            .get(&self.service)
            .await
            .map_err(|e| KubeError::from_api(e, "get", "services", "", svc_ref.clone()))?;
        let ports = s.spec.and_then(|s| s.ports).unwrap_or_default();
        let body = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": self.name(), "namespace": self.ns, "labels": {MANAGED_BY.0: MANAGED_BY.1, CANARY_OF: stable}},
            "spec": {"selector": {CANARY_OF: stable}, "ports": ports},
        });
        services
            .patch(&self.name(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
            .await
            .map(|_| ())
            .map_err(|e| {
                KubeError::from_api(
                    e,
                    "patch",
                    "services",
                    "",
                    ObjectRef::new("service", &self.ns, &self.name()),
                )
            })
    }

    /// The traffic back end this canary moves its share through.
    pub(super) fn router(&self) -> Box<dyn Router + '_> {
        let to = Backends { client: self.client, ns: &self.ns, stable: &self.service, canary: self.name() };
        router(&self.traffic, to)
    }

    /// Sends `weight`% to the canary (0: none; the router objects of the
    /// canary are removed at 0).
    pub(super) async fn set_weight(&self, weight: u8) -> Result<(), KubeError> {
        self.router().set_weight(weight).await
    }

    /// Watches the canary for the interval (see [`observe::window`]).
    /// `Ok(false)`: cancelled.
    pub(super) async fn observe(
        &self,
        interval: Duration,
        analysis: Option<&crate::analysis::Analysis>,
        cancel: &CancellationToken,
    ) -> Result<bool, KubeError> {
        let end = Instant::now() + interval;
        match observe::window(
            self.client,
            &[self.object()],
            end,
            "during the canary step",
            analysis,
            self.runner,
            cancel,
        )
        .await
        {
            Ok(()) => Ok(!cancel.is_cancelled()),
            Err(None) => Ok(false),
            Err(Some(e)) => Err(e),
        }
    }

    /// Weights back to the stable, the canary and its objects removed.
    /// Behind a weighted router the canary's pods are kept for `drain`
    /// after its weight went to 0 (a signal cuts the wait short): the
    /// router, endpoints and kube-proxy need time to stop sending there.
    /// By replica ratio its pods leave the Service as they terminate.
    pub(super) async fn abort(&self, cancel: &CancellationToken) -> Result<(), KubeError> {
        self.set_weight(0).await?;
        if self.router().weighted() {
            let before = format!("{} is removed (its weight is 0)", self.object());
            drain(self.drain, &before, self.runner, cancel).await;
        }
        let dp = DeleteParams::background();
        let service = ObjectRef::new("service", &self.ns, &self.name());
        for (r, resource, group, object) in [
            (
                self.deployments().delete(&self.name(), &dp).await.map(|_| ()),
                "deployments",
                "apps",
                self.object(),
            ),
            (
                Api::<Service>::namespaced(self.client.clone(), &self.ns)
                    .delete(&self.name(), &dp)
                    .await
                    .map(|_| ()),
                "services",
                "",
                service,
            ),
        ] {
            match r {
                Ok(()) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(KubeError::from_api(e, "delete", resource, group, object)),
            }
        }
        self.runner.line(&format!("{}: removed; all traffic to {}", self.object(), self.stable.object));
        Ok(())
    }

    /// The stable takes the new template (a rolling update, watched), then
    /// the canary goes.
    pub(super) async fn promote(
        &self,
        image: &str,
        env_from: Option<&[k8s_openapi::api::core::v1::EnvFromSource]>,
        cancel: &CancellationToken,
    ) -> Promotion {
        let applied =
            match apply::set_image(self.client, &self.stable, image, env_from, self.runner, false).await {
                Ok(changed) => changed,
                Err(e) => return Promotion::Failed { applied: self.stable_changed().await, error: Some(e) },
            };
        match rollout::watch(self.client, &self.ns, &self.stable.object.name, self.runner, cancel).await {
            Ok(Some(_)) => {
                self.runner.line(&format!("{}: promoted to {image}", self.stable.object));
                Promotion::Done { cleanup: self.abort(cancel).await.err() }
            }
            Ok(None) => Promotion::Failed { applied, error: None },
            Err(e) => Promotion::Failed { applied, error: Some(e) },
        }
    }

    /// Whether the stable's pod template is another than when it was read:
    /// after a refused apply, whether there is a revision to undo. Other
    /// spec changes meanwhile (an HPA scaling it) are not. Unreadable
    /// counts as changed, so the undo is tried.
    pub(super) async fn stable_changed(&self) -> bool {
        match self.deployments().get_opt(&self.stable.object.name).await {
            Ok(Some(d)) => d.spec.map(|s| s.template) != self.stable.live_template,
            _ => true,
        }
    }
}

/// How a promotion ended.
pub(super) enum Promotion {
    /// The stable runs the new version; `cleanup` is a failure to remove
    /// the canary afterwards (the promotion itself stands).
    Done { cleanup: Option<KubeError> },
    /// Failed (`error`) or cancelled (`None`); `applied` when the stable
    /// took the new template, so there is a revision to undo.
    Failed { applied: bool, error: Option<KubeError> },
}
