//! `mode: plan` of a blue-green deploy: what would change, by server-side
//! dry run.

use super::*;

/// `mode: plan` for blue-green: the steps, the candidates sent as a
/// server-side dry run.
pub async fn plan(
    client: &kube::Client,
    spec: &KubernetesSpec,
    app: &str,
    image: &str,
    runner: &Runner,
) -> Result<Vec<String>, KubeError> {
    let ns = spec.namespace.as_str();
    let mut lines = Vec::new();
    let worker_refs: Vec<&DeploymentRef> = spec.deployments.iter().filter(|r| r.worker).collect();
    for t in workers::read(client, ns, &worker_refs).await? {
        let image = t.image_to_run(image);
        let env_from = apply::env_from_as_is(&t, app);
        let changes = apply::set_image(client, &t, image, env_from.as_deref(), runner, true).await?;
        lines.push(if changes {
            format!("{}: worker, rolled in place to {image} once every candidate is available (no Service to flip)", t.object)
        } else {
            format!("{}: worker, already runs {image}: nothing to do", t.object)
        });
    }
    for r in spec.deployments.iter().filter(|r| !r.worker) {
        let p = read_pair(client, ns, r).await?;
        autoscaled(client, ns, std::slice::from_ref(&p)).await?;
        let image = p.source.image_to_run(image);
        let body = colour_deployment(&p.source, p.candidate, image, None, p.replicas, None);
        let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
        api.patch(
            &p.candidate_name(),
            &PatchParams::apply(FIELD_MANAGER).force().dry_run(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|e| {
            KubeError::from_api(
                e,
                "patch",
                "deployments",
                "apps",
                ObjectRef::deployment(ns, &p.candidate_name()),
            )
        })?;
        lines.push(format!(
            "deployment {ns}/{}: {} replica(s) of {image} (blue-green candidate){}; then {} flips to {COLOUR}={} once every candidate is available, its EndpointSlices checked; then {} scales to 0",
            p.candidate_name(),
            p.replicas,
            match p.preview.as_ref().and_then(|s| s.metadata.name.as_deref()) {
                Some(preview) => format!(", checked through service {ns}/{preview}"),
                None => String::new(),
            },
            p.service_ref(),
            p.candidate,
            p.old_name()
        ));
    }
    Ok(lines)
}
