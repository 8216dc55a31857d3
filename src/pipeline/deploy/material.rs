//! What a deploy brings: the judges (smoke tests, analysis), the secrets
//! from SSM, the image (named, or the last good one for `mode: rollback`)
//! and what the hosts need to pull it.

use super::*;

/// What judges the deploy besides the health checks: the smoke tests and
/// the analysis sources.
pub(super) struct Judges {
    pub(super) smoke: Option<Arc<crate::smoke::Suite>>,
    pub(super) analysis: Option<Arc<Analysis>>,
}

/// The analysis of a `mode: deploy` (`rollback-alarms`, `analysis-query`),
/// read once: an alarm that does not exist, a query the server refuses, a
/// source that cannot be read or a breach already there stops the run
/// before the record, with nothing changed. A rollback goes without: it is
/// what a team runs while its alarms fire.
///
/// # Errors
/// What stopped it.
pub(super) async fn start_analysis(ctx: &Ctx<'_>) -> Result<Option<Arc<Analysis>>, Error> {
    let Ctx { inputs, runner, cancel, .. } = *ctx;
    let Some(spec) = &inputs.analysis else { return Ok(None) };
    if inputs.mode != Mode::Deploy {
        runner.line(&format!(
            "analysis: not read in mode {} (rollback-alarms and analysis-query judge deploys)",
            format!("{:?}", inputs.mode).to_lowercase()
        ));
        return Ok(None);
    }
    let _g = runner.group("Analysis: read before the deploy");
    let analysis = Analysis::from_spec(spec, runner).await?;
    runner.line(&format!(
        "{}: read now, then every {}s during the observe window",
        analysis.describe(),
        analysis.interval().as_secs()
    ));
    analysis.preflight(cancel).await?;
    Ok(Some(analysis))
}

/// What the deploy needs from SSM: the app's secrets, and the SSH key,
/// known_hosts, registry password and webhook URLs (inline or by
/// parameter name).
pub(super) struct Material {
    pub(super) secrets: SecretSet,
    pub(super) key: Option<SecretValue>,
    pub(super) known_hosts: Option<SecretValue>,
    pub(super) registry_password: Option<SecretValue>,
    pub(super) slack_url: Option<SecretValue>,
    pub(super) notify_url: Option<SecretValue>,
}

/// Fetches (and masks) everything secret, then checks SSH material read
/// from SSM like an input: a bad value leaves no trace on GitHub or a host.
///
/// # Errors
/// The failure and the stage to report it under.
// long: each kind of secret material fetched, masked and checked in turn; every arm ends the run at its own stage.
pub(super) async fn resolve_secrets(ctx: &Ctx<'_>) -> Result<Material, (Error, &'static str)> {
    let Ctx { inputs, runner, cancel, .. } = *ctx;
    let ssm = match (inputs.needs_ssm(), inputs.ssm.region.as_deref()) {
        (false, _) => None,
        (true, Some(region)) => tokio::select! {
            ssm = Ssm::new(region) => Some(Arc::new(ssm)),
            _ = cancel.cancelled() => return Err((Error::Cancelled, "secrets")),
        },
        (true, None) => {
            return Err((crate::secrets::SecretsError::RegionMissing.into(), "secrets"));
        }
    };
    let secrets = match &ssm {
        Some(ssm) if !inputs.ssm.is_empty() => {
            let _g = runner.group("Secrets from SSM Parameter Store");
            match ssm.fetch(&inputs.ssm, runner, cancel).await {
                Ok(s) => {
                    runner.line(&format!("{} secret(s) for the app: {}", s.len(), s.names().join(", ")));
                    s
                }
                Err(e) => return Err((e.into(), "secrets")),
            }
        }
        _ => SecretSet::default(),
    };
    let resolve = |src: &Option<SecretSource>, input: &'static str| {
        let src = src.clone();
        let ssm = ssm.clone();
        let runner = runner.clone();
        async move {
            match src {
                None => Ok(None),
                Some(SecretSource::Inline(v)) => Ok(Some(v)),
                Some(SecretSource::Ssm(name)) => match ssm {
                    Some(ssm) => {
                        ssm.get(&name, &runner).await.map(Some).map_err(|e| e.for_input(input).into())
                    }
                    None => Err(Error::Other("SSM is not configured".into())),
                },
            }
        }
    };
    let (key, known_hosts, registry_password, slack_url, notify_url) = match tokio::try_join!(
        resolve(&inputs.ssh.private_key, "ssh-private-key-ssm"),
        resolve(&inputs.ssh.known_hosts, "ssh-known-hosts-ssm"),
        resolve(&inputs.registry.password, "registry-password-ssm"),
        resolve(&inputs.notify.slack, "slack-webhook-url-ssm"),
        resolve(&inputs.notify.webhook, "notify-url-ssm")
    ) {
        Ok(v) => v,
        Err(e) => return Err((e, "secrets")),
    };
    // Material read from SSM is checked like an input, before the record:
    // a bad value leaves no trace on GitHub or on a host.
    let from_ssm = |src: &Option<SecretSource>, v: &Option<SecretValue>, input: &'static str| match src {
        Some(SecretSource::Ssm(_)) => v.clone().map(|v| (input, v)),
        _ => None,
    };
    let key_ssm = from_ssm(&inputs.ssh.private_key, &key, "ssh-private-key-ssm");
    let known_ssm = from_ssm(&inputs.ssh.known_hosts, &known_hosts, "ssh-known-hosts-ssm");
    let mut problems = crate::targets::hosts::material::problems(
        key_ssm.as_ref().map(|(i, v)| (*i, v)),
        known_ssm.as_ref().map(|(i, v)| (*i, v)),
    );
    for (i, v) in [
        from_ssm(&inputs.notify.slack, &slack_url, "slack-webhook-url-ssm"),
        from_ssm(&inputs.notify.webhook, &notify_url, "notify-url-ssm"),
    ]
    .into_iter()
    .flatten()
    {
        problems.extend(crate::inputs::webhook_url_problem(i, v.expose()));
    }
    if !problems.is_empty() {
        return Err((Error::Inputs(problems), "validate"));
    }
    Ok(Material { secrets, key, known_hosts, registry_password, slack_url, notify_url })
}

/// The image to deploy (for `mode: rollback` without one, the last good
/// one), parsed, and the image GitHub records as live.
///
/// # Errors
/// The failure and the stage to report it under.
pub(super) async fn which_image(
    ctx: &Ctx<'_>,
) -> Result<(String, Option<crate::inputs::ImageRef>, Option<String>), (Error, &'static str)> {
    let Ctx { inputs, runner, .. } = *ctx;
    let github = ctx.github.as_ref();
    let previous_image = match github {
        Some(g) => g.live_image().await.unwrap_or_else(|e| {
            runner.warning(e.reason(), &format!("could not read the live deployment: {e}"));
            None
        }),
        None => None,
    };
    let image = match (&inputs.image, inputs.mode, github) {
        (Some(i), _, _) => i.full(),
        // A cluster rolls back to its previous ReplicaSet (`kubectl rollout
        // undo`): no image is needed; the restored one is reported after.
        (None, Mode::Rollback | Mode::Promote | Mode::Abort, _)
            if inputs.target == TargetKind::Kubernetes =>
        {
            String::new()
        }
        (None, Mode::Rollback, Some(g)) => match g.last_good_image().await {
            Ok(Some(i)) => {
                runner.line(&format!("rollback: redeploying the last good image {i}"));
                i
            }
            Ok(None) => {
                return Err((Error::NothingToRollBack { environment: inputs.environment.clone() }, "record"));
            }
            Err(e) => return Err((e.into(), "record")),
        },
        _ => return Err((Error::Other("no image to deploy".into()), "validate")),
    };
    let image_ref = match crate::inputs::grammar::image(&image) {
        _ if image.is_empty() => None,
        Ok(i) => Some(i),
        Err(e) => {
            return Err((Error::Other(format!("image {image} from the last good deployment {e}")), "record"));
        }
    };

    Ok((image, image_ref, previous_image))
}

/// What reaching the hosts takes (from the inputs or SSM).
pub(super) struct HostMaterial {
    pub(super) key: Option<SecretValue>,
    pub(super) known_hosts: Option<SecretValue>,
    pub(super) registry_password: Option<SecretValue>,
}
