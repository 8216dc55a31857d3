//! What share of the traffic a canary gets: the replicas for a weight, the
//! share those replicas really give, and a share they cannot express
//! (refused before any change); the traffic kind as the annotation says.

use super::*;

pub(super) fn traffic_str(t: &CanaryTraffic) -> String {
    match t {
        CanaryTraffic::Replicas => "replicas".into(),
        CanaryTraffic::Ingress(n) => format!("ingress/{n}"),
        CanaryTraffic::HttpRoute(n) => format!("httproute/{n}"),
    }
}

pub(super) fn parse_traffic(s: &str) -> Option<CanaryTraffic> {
    match s.split_once('/') {
        None if s == "replicas" => Some(CanaryTraffic::Replicas),
        Some(("ingress", n)) => Some(CanaryTraffic::Ingress(n.into())),
        Some(("httproute", n)) => Some(CanaryTraffic::HttpRoute(n.into())),
        _ => None,
    }
}

/// Canary replicas for `weight`% of `stable` replicas: by replica ratio the
/// canary is `weight` of all pods (stable kept whole); behind a weighted
/// router it needs `weight` of the capacity.
pub fn canary_replicas(traffic: &CanaryTraffic, stable: i32, weight: u8) -> i32 {
    let (n, w) = (stable.max(1) as f64, f64::from(weight));
    let c = match traffic {
        CanaryTraffic::Replicas if weight >= 100 => n,
        CanaryTraffic::Replicas => (n * w / (100.0 - w)).round(),
        _ => (n * w / 100.0).ceil(),
    };
    (c as i32).max(1)
}

/// How far the share the pods give may be from a step's weight before the
/// step is refused: 5 percentage points, or two fifths of the step when
/// that is more (25% beside 2 stable replicas is 1 pod of 3, 33%: kept;
/// 10% beside 1 is 1 of 2, 50%: refused).
pub(super) fn share_tolerance(weight: u8) -> f64 {
    (f64::from(weight) * 0.4).max(5.0)
}

/// The share of all pods `canary_replicas` gives at `weight` beside
/// `stable` pods (`canary-traffic: replicas`).
pub fn real_share(stable: i32, weight: u8) -> (i32, f64) {
    let c = canary_replicas(&CanaryTraffic::Replicas, stable, weight);
    (c, 100.0 * f64::from(c) / f64::from(c + stable.max(1)))
}

/// The first step the replica counts cannot express within
/// `share_tolerance`: refused before any change, naming the real share
/// and how many stable replicas would express it. A weighted router
/// (ingress, HTTPRoute) weighs exactly: nothing to refuse.
pub fn inexpressible(
    traffic: &CanaryTraffic,
    stable: i32,
    steps: &[u8],
    object: &ObjectRef,
) -> Option<KubeError> {
    if !matches!(traffic, CanaryTraffic::Replicas) {
        return None;
    }
    let fits = |n: i32, w: u8| (real_share(n, w).1 - f64::from(w)).abs() <= share_tolerance(w);
    let w = steps.iter().copied().find(|w| *w < 100 && !fits(stable, *w))?;
    let (canary, real) = real_share(stable, w);
    let need = (1..=1000).find(|n| fits(*n, w)).unwrap_or(1000);
    Some(KubeError::CanaryShare {
        object: object.clone(),
        weight: w,
        stable: stable.max(1),
        canary,
        real,
        need,
    })
}
