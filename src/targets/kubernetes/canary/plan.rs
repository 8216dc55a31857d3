//! `mode: plan` of a canary: what would change, by server-side dry run.

use super::*;

/// `mode: plan` for a canary: the canary Deployment as a server-side dry
/// run, and the steps.
pub async fn plan(
    client: &kube::Client,
    spec: &KubernetesSpec,
    steps: &Steps,
    image: &str,
    runner: &Runner,
) -> Result<Vec<String>, KubeError> {
    let c = open(client, spec, steps.traffic.clone(), Duration::ZERO, runner).await?;
    if let Some(e) = inexpressible(&c.traffic, c.stable_replicas, &steps.steps, &c.stable.object) {
        return Err(e);
    }
    policies::check(&c).await?;
    let image = c.stable.image_to_run(image);
    let first = steps.steps.first().copied().unwrap_or(100).min(99);
    let replicas = canary_replicas(&c.traffic, c.stable_replicas, first);
    let body = canary_deployment(&c.stable, &c.traffic, image, None, replicas, first);
    c.deployments()
        .patch(&c.name(), &PatchParams::apply(FIELD_MANAGER).force().dry_run(), &Patch::Apply(&body))
        .await
        .map_err(|e| KubeError::from_api(e, "patch", "deployments", "apps", c.object()))?;
    let mut lines = vec![format!(
        "{}: would be created beside {} with {image} ({replicas} replica(s) at {first}%), traffic via {}",
        c.object(),
        c.stable.object,
        traffic_str(&c.traffic)
    )];
    for w in steps.steps.iter().filter(|w| **w < 100) {
        lines.push(format!(
            "step {w}%: watched for {}s; a failure aborts (weights back, canary removed)",
            steps.interval.as_secs()
        ));
    }
    lines.push(match steps.steps.last() {
        Some(100) => format!(
            "then promote: {} takes {image} by a rolling update, the canary is removed",
            c.stable.object
        ),
        _ => "then stop: the canary stands until a run with mode 'promote' or 'abort'".into(),
    });
    Ok(lines)
}
