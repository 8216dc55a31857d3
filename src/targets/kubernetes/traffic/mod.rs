//! How a canary's share of traffic is set: one file per traffic back end
//! behind [`Router`], as Argo Rollouts keeps one folder per router. Adding
//! one (Istio, an ALB) is a new file here and an arm in [`router`].
//!
//! - [`replicas`]: the share is the canary's pods among the stable
//!   Service's (no object of its own to set);
//! - [`ingress_nginx`]: a canary Ingress beside the main one, weighted by
//!   ingress-nginx's `canary-weight` annotation;
//! - [`gateway_api`]: the stable and canary `backendRefs` of an HTTPRoute.

mod gateway_api;
mod ingress_nginx;
mod replicas;

use async_trait::async_trait;

use super::error::KubeError;
use crate::inputs::CanaryTraffic;

/// The label on every canary object (its Deployment's pods, its Service,
/// a router's canary objects) naming the stable Deployment it is a canary of.
pub const CANARY_OF: &str = "deploy-action/canary-of";

/// Where the traffic goes: the stable Service and the canary's own.
pub struct Backends<'a> {
    pub client: &'a kube::Client,
    pub ns: &'a str,
    /// The stable Service (the Deployment's name unless a services file
    /// names another).
    pub stable: &'a str,
    /// The canary's Service, `<deployment>-canary` (weighted routers only).
    pub canary: String,
}

/// One way of moving a canary's share of the traffic.
#[async_trait]
pub trait Router: Send + Sync {
    /// Sends `weight`% of the traffic to the canary. At 0 the router's
    /// canary objects are removed (or its canary backend dropped): all
    /// traffic is the stable's again.
    ///
    /// # Errors
    /// The API server's refusal, naming the object; a route that has no
    /// backend for the stable Service.
    async fn set_weight(&self, weight: u8) -> Result<(), KubeError>;

    /// Whether the router splits by weight: the canary then has its own
    /// Service, and its pods keep serving for `drain-time` after the
    /// weight went to 0. By replica ratio they leave the stable Service
    /// as they terminate.
    fn weighted(&self) -> bool {
        true
    }
}

/// The router `traffic` names, over `to`.
pub fn router<'a>(traffic: &'a CanaryTraffic, to: Backends<'a>) -> Box<dyn Router + 'a> {
    match traffic {
        CanaryTraffic::Replicas => Box::new(replicas::Replicas),
        CanaryTraffic::Ingress(name) => Box::new(ingress_nginx::IngressNginx { name, to }),
        CanaryTraffic::HttpRoute(name) => Box::new(gateway_api::HttpRoute { name, to }),
    }
}
