//! What a cluster deploy does, in order, for `mode: plan`: one list per
//! strategy, as [`super::run`] dispatches them, so a blue-green plan never
//! shows the rolling steps again.

use crate::inputs::grammar::span;
use crate::inputs::{CanaryTraffic, Inputs, KubernetesSpec, StrategyKind};
use crate::strategy::{self, Step};

/// The steps of this run, as the plan prints them. A blue-green's are the
/// strategy's own list ([`crate::strategy::phases`] over the one unit a
/// cluster is), each step said as the cluster does it: the list its run
/// follows, so the plan cannot disagree with it.
pub fn plan(inputs: &Inputs, spec: &KubernetesSpec) -> Vec<String> {
    let mut out = vec![
        "check every permission the run and its way back need (SelfSubjectAccessReview), before any change"
            .to_string(),
    ];
    if inputs.strategy == StrategyKind::BlueGreen {
        let phases = strategy::phases(inputs.strategy, &inputs.rollout, 1, inputs.migrate_command.is_some());
        for step in phases.iter().flat_map(|p| &p.steps) {
            out.extend(blue_green(step, inputs, spec));
        }
        out.push("on any failure or cancellation: before the flip, the candidates to zero; after it, every Service flipped back, drained, then the candidates to zero".into());
        return with_migrate_back(out, inputs);
    }
    out.push(read(spec));
    if !spec.manifests.is_empty() {
        out.push(format!(
            "apply the {} manifest object(s) by server-side apply (field manager deploy-action)",
            spec.manifests.len()
        ));
    }
    out.extend(migrations(inputs));
    match inputs.strategy {
        StrategyKind::Canary => canary(&mut out, inputs, spec),
        _ => rolling(&mut out),
    }
    with_migrate_back(out, inputs)
}

fn read(spec: &KubernetesSpec) -> String {
    let names = spec.deployments.iter().map(|d| d.name.as_str()).collect::<Vec<_>>().join(", ");
    format!("read each of {names} (missing, paused or without the container: stop, nothing changed)")
}

fn migrations(inputs: &Inputs) -> Vec<String> {
    let mut out = Vec::new();
    if inputs.pre_migrate_command.is_some() {
        out.push("run the pre-migration Job from the new image; its failure stops the deploy".into());
    }
    if inputs.migrate_command.is_some() {
        out.push(format!(
            "run the migration Job from the new image (bounded by {}); its failure stops the deploy before any Deployment changes",
            span(inputs.rollout.migration_timeout)
        ));
    }
    out
}

fn with_migrate_back(mut out: Vec<String>, inputs: &Inputs) -> Vec<String> {
    if inputs.migrate_rollback_command.is_some() {
        out.push("after a way back past the migration: run migrate-rollback-command as a Job".into());
    }
    out
}

fn rolling(out: &mut Vec<String>) {
    out.push("set each container's image by server-side apply (field manager deploy-action), pinning the revision applied".into());
    out.push("watch each rollout to kubectl rollout status's verdict; fail early on stuck new pods or a template someone else changed".into());
    out.push(
        "on any failure or cancellation: kubectl rollout undo of every Deployment this run changed".into(),
    );
}

/// One step of a blue-green deploy as the cluster does it
/// (`bluegreen/run.rs`).
fn blue_green(step: &Step, inputs: &Inputs, spec: &KubernetesSpec) -> Vec<String> {
    match step {
        Step::Prepare => vec![read(spec)],
        Step::Migrate => migrations(inputs),
        Step::Launch => vec!["apply the candidate colour of each (web-blue or web-green: the one its Service does not select) with the new image".into()],
        Step::Verify => {
            let mut out = vec!["watch each candidate to every replica available (kubectl rollout status's verdict)".to_string()];
            if spec.deployments.iter().any(|d| d.worker) {
                out.push("roll each worker (no Service) in place, undone with any way back".into());
            }
            if spec.deployments.iter().any(|d| d.preview.is_some()) {
                out.push("point each preview Service at its candidate; its EndpointSlices must list exactly the candidate's ready pods".into());
            }
            out
        }
        Step::Shift(_) => vec!["flip every live Service's selector to the candidate colour together; each Service's EndpointSlices must then list exactly the candidate's ready pods".into()],
        Step::Observe(window) => vec![format!("observe the candidates for {}", span(*window))],
        Step::Retire(drain) => vec![format!(
            "drain {}, then scale the old colour to zero (kept for an instant flip back)",
            span(*drain)
        )],
    }
}

fn canary(out: &mut Vec<String>, inputs: &Inputs, spec: &KubernetesSpec) {
    let router = match &spec.canary_traffic {
        CanaryTraffic::Replicas => "by replica ratio behind the one Service".to_string(),
        CanaryTraffic::Ingress(i) => format!("through the ingress-nginx canary Ingress {i}-canary"),
        CanaryTraffic::HttpRoute(r) => format!("through the weights of HTTPRoute {r}"),
    };
    out.push(
        "apply the canary Deployment (<name>-canary) with the new image; watch it to every replica available"
            .into(),
    );
    let steps = &inputs.rollout.canary_steps;
    for pct in steps {
        let watch = if *pct == 100 { inputs.rollout.observe_window } else { inputs.rollout.canary_interval };
        out.push(format!("send {pct}% of the traffic to the canary {router}; observe for {}", span(watch)));
    }
    if steps.last() == Some(&100) {
        out.push(format!(
            "promote: the stable Deployment takes the canary's template (watched to its verdict); drain {}, then remove the canary",
            span(inputs.rollout.drain)
        ));
    } else {
        out.push("stop there: a later job decides with mode 'promote' or 'abort'".into());
    }
    out.push(format!(
        "on any failure or cancellation: the canary's share back to the stable Deployment, drain {}, then remove the canary",
        span(inputs.rollout.drain)
    ));
}
