//! What a deploy brings and tells: registry credentials, SSM secrets,
//! notifications and the GitHub record.

use super::*;

pub(super) fn registry_and_ssm(
    c: &mut Check,
    raw: &RawInputs,
    env: &Env,
    target: TargetKind,
    ssh: &SshSpec,
    notify: &NotifySpec,
) -> (RegistryAuth, SsmSpec) {
    let registry = RegistryAuth {
        username: raw.registry_username.clone(),
        password: c.secret(
            "registry-password",
            &raw.registry_password,
            "registry-password-ssm",
            &raw.registry_password_ssm,
        ),
    };
    if registry.username.is_some() != registry.password.is_some() {
        c.problem(
            "registry-username",
            "set both 'registry-username' and 'registry-password' (or 'registry-password-ssm'), or neither",
        );
    }
    let ssm_paths: Vec<String> = raw.ssm_paths.as_deref().map(g::list).unwrap_or_default();
    for p in &ssm_paths {
        if let Err(e) = g::ssm_name(p) {
            c.problem("ssm-paths", e);
        } else if !p.starts_with('/') {
            c.problem("ssm-paths", format!("'{p}' must start with '/' (a path like /myapp/prod/)"));
        }
    }
    let ssm_parameters = raw
        .ssm_parameters
        .as_deref()
        .map(|t| pairs("ssm-parameters", &t.replace(',', "\n"), c, g::ssm_name))
        .unwrap_or_default();
    let ssm = SsmSpec {
        paths: ssm_paths,
        parameters: ssm_parameters,
        region: match &raw.aws_region {
            Some(_) => c.parse("aws-region", &raw.aws_region, g::aws_region),
            None => {
                env.get("AWS_REGION").or_else(|| env.get("AWS_DEFAULT_REGION")).map(|r| r.trim().to_string())
            }
        },
    };
    // One rule for "this run talks to AWS"; the pipeline asks the same
    // question through `Inputs::needs_ssm`.
    let needs_aws = target == TargetKind::Ec2
        || !ssm.is_empty()
        || [&ssh.private_key, &ssh.known_hosts, &registry.password, &notify.slack, &notify.webhook]
            .iter()
            .any(|s| matches!(s, Some(SecretSource::Ssm(_))));
    if needs_aws
        && raw.aws_region.is_none()
        && let Some(Err(e)) = ssm.region.as_deref().map(g::aws_region)
    {
        c.problem("aws-region", format!("not set, and AWS_REGION from the environment: {e}"));
    }
    if needs_aws && ssm.region.is_none() {
        c.problem("aws-region", "is required for EC2 and SSM (or set AWS_REGION, e.g. with aws-actions/configure-aws-credentials)");
    }

    (registry, ssm)
}

/// `slack-webhook-url` and `notify-url`, inline or by SSM name. An inline
/// URL is checked here; one read from SSM right after the fetch
/// ([`webhook_url_problem`]). The problem never quotes the value.
pub(super) fn notifications(c: &mut Check, raw: &RawInputs) -> NotifySpec {
    let mut source = |inline_name: &str, inline: &Option<String>, ssm_name: &str, ssm: &Option<String>| {
        let s = c.secret(inline_name, inline, ssm_name, ssm);
        if let Some(SecretSource::Inline(v)) = &s
            && let Some(problem) = webhook_url_problem(inline_name, v.expose())
        {
            c.problems.push(problem);
            return None;
        }
        s
    };
    NotifySpec {
        slack: source(
            "slack-webhook-url",
            &raw.slack_webhook_url,
            "slack-webhook-url-ssm",
            &raw.slack_webhook_url_ssm,
        ),
        webhook: source("notify-url", &raw.notify_url, "notify-url-ssm", &raw.notify_url_ssm),
    }
}

/// Why `value` is not a webhook URL `input` can take, without quoting it
/// (it is a secret): `None` for an http(s) URL with a host.
pub fn webhook_url_problem(input: &str, value: &str) -> Option<Problem> {
    g::http_url(value.trim()).err().map(|e| Problem {
        input: input.into(),
        message: format!("{e} (the value is a secret and is not shown)"),
    })
}

pub(super) fn github(c: &mut Check, raw: &RawInputs, ctx: &RawContext, b: &Basics) -> (GithubSpec, Context) {
    let (mode, image, target) = (b.mode, &b.image, b.target);
    let repository = ctx.github_repository.clone().unwrap_or_default();
    let (owner, repo) = match repository.split_once('/') {
        Some((o, r)) if !o.is_empty() && !r.is_empty() && !r.contains('/') => (o.to_string(), r.to_string()),
        _ => {
            c.problem(
                "GITHUB_REPOSITORY",
                "must be owner/repo (the runner sets it; set it yourself outside Actions)",
            );
            (String::new(), String::new())
        }
    };
    let sha = ctx.github_sha.clone().unwrap_or_default();
    if !regex::Regex::new("^[0-9a-f]{40}$").expect("regex").is_match(&sha) {
        c.problem("GITHUB_SHA", "must be a 40-character commit SHA (the runner sets it)");
    }
    let github_enabled = c.or("github-deployments", &raw.github_deployments, true, g::boolean);
    let git_ref = raw.git_ref.clone().unwrap_or_else(|| sha.clone());
    if git_ref.starts_with('-')
        || git_ref.contains("..")
        || git_ref.chars().any(|ch| ch.is_whitespace() || ch.is_control())
    {
        c.problem("ref", "must be a branch, tag or commit SHA");
    }
    let token = raw.github_token.clone().map(SecretValue::new);
    if github_enabled && token.is_none() && mode != Mode::Plan {
        c.problem("github-token", "is required to record the deployment (it defaults to ${{ github.token }}; or set github-deployments: false)");
    }
    // Kubernetes rolls back to the previous ReplicaSet (as `kubectl rollout
    // undo`): it needs no image from GitHub.
    if mode == Mode::Rollback && image.is_none() && !github_enabled && target != TargetKind::Kubernetes {
        c.problem("image", "mode 'rollback' without an image reads the last good image from GitHub Deployments; enable github-deployments or name the image");
    }
    let github = GithubSpec {
        enabled: github_enabled,
        token,
        deployment_id: c.parse("deployment-id", &raw.deployment_id, |s| {
            s.parse::<u64>().map_err(|_| "must be a deployment id (a number)".to_string())
        }),
        git_ref,
        required_contexts: c.parse("required-contexts", &raw.required_contexts, g::strict_list),
        production_environment: c.parse("production-environment", &raw.production_environment, g::boolean),
        transient_environment: c.or("transient-environment", &raw.transient_environment, false, g::boolean),
        deactivate_previous: c.or("deactivate-previous", &raw.deactivate_previous, true, g::boolean),
        lock_timeout: c.or("lock-timeout", &raw.lock_timeout, Duration::from_secs(600), g::duration),
        fail_on_status_error: c.or("fail-on-status-error", &raw.fail_on_status_error, false, g::boolean),
    };
    let server_url = ctx.github_server_url.clone().unwrap_or_else(|| "https://github.com".into());
    let api_url = ctx.github_api_url.clone().unwrap_or_else(|| "https://api.github.com".into());
    for (name, v) in [("GITHUB_SERVER_URL", &server_url), ("GITHUB_API_URL", &api_url)] {
        if g::http_url(v).is_err() {
            c.problem(name, "must be an http(s) URL");
        }
    }
    let context = Context {
        owner,
        repo,
        sha,
        git_ref: ctx.github_ref.clone(),
        run_id: ctx.github_run_id.clone().unwrap_or_else(|| "0".into()),
        run_attempt: ctx.github_run_attempt.clone().unwrap_or_else(|| "1".into()),
        server_url,
        api_url,
        event_name: ctx.github_event_name.clone(),
        actor: ctx.github_actor.clone(),
        workspace: ctx.github_workspace.clone().unwrap_or_else(|| ".".into()).into(),
    };

    (github, context)
}

#[cfg(test)]
mod tests {
    use crate::inputs::SecretSource;
    use crate::inputs::given::Given;

    #[test]
    fn registry_credentials_come_in_pairs_and_ssm_names_are_paths() {
        let p = Given::hosts().set("registry-username", "deploy").problems();
        assert_eq!(
            p,
            [
                "registry-username: set both 'registry-username' and 'registry-password' (or 'registry-password-ssm'), or neither"
            ]
        );
        let i = Given::hosts()
            .set("registry-username", "deploy")
            .set("registry-password-ssm", "/shop/registry")
            .ok();
        assert!(matches!(i.registry.password, Some(SecretSource::Ssm(ref n)) if n == "/shop/registry"));
        let p = Given::hosts().set("ssm-paths", "/shop/prod/, shop/staging/").problems();
        assert_eq!(p, ["ssm-paths: 'shop/staging/' must start with '/' (a path like /myapp/prod/)"]);
        let i = Given::hosts().set("ssm-parameters", "DB_URL=/shop/db, API_KEY=/shop/key").ok();
        assert_eq!(i.ssm.parameters.len(), 2);
    }

    #[test]
    fn aws_is_asked_for_a_region_only_when_the_run_talks_to_it() {
        // Hosts with inline secrets talk to no AWS API: no region needed.
        assert_eq!(Given::hosts().unset("aws-region").problems(), Vec::<String>::new());
        // One secret from SSM: the region is needed, from the input or
        // from the job's AWS_REGION.
        let ssm =
            Given::hosts().unset("aws-region").set("ssh-private-key", "").set("ssh-private-key-ssm", "/k");
        let p = ssm.problems();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("aws-region: is required for EC2 and SSM"), "{p:?}");
        let i = ssm.clone().env("AWS_REGION", "us-east-2").ok();
        assert_eq!(i.ssm.region.as_deref(), Some("us-east-2"));
        let p = ssm.env("AWS_REGION", "mars-1").problems();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("aws-region: not set, and AWS_REGION from the environment: "), "{p:?}");
    }

    #[test]
    fn a_webhook_is_checked_without_quoting_it() {
        let p =
            Given::hosts().set("slack-webhook-url", "hooks.slack.com/services/T0/B0/secret-part").problems();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("slack-webhook-url: ") && p[0].contains("not shown"), "{p:?}");
        assert!(!p[0].contains("secret-part"), "the value is a secret: {p:?}");
    }

    #[test]
    fn the_github_record_needs_a_token_and_the_runners_context() {
        let record = || Given::hosts().set("github-deployments", "true");
        let p = record().problems();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("github-token: is required to record the deployment"), "{p:?}");
        // A plan records nothing.
        assert_eq!(record().set("mode", "plan").problems(), Vec::<String>::new());
        let p = record()
            .set("github-token", "t")
            .env("GITHUB_SHA", "main")
            .env("GITHUB_REPOSITORY", "shop")
            .set("ref", "--upload-pack=x")
            .problems();
        assert_eq!(
            p,
            [
                "GITHUB_REPOSITORY: must be owner/repo (the runner sets it; set it yourself outside Actions)",
                "GITHUB_SHA: must be a 40-character commit SHA (the runner sets it)",
                "ref: must be a branch, tag or commit SHA",
            ]
        );
        // A rollback with no image and no record has nowhere to find one;
        // a cluster undoes to its previous ReplicaSet instead.
        let p = Given::hosts().unset("image").set("mode", "rollback").problems();
        assert!(p.iter().any(|p| p.starts_with("image: mode 'rollback' without an image reads")), "{p:?}");
        let back = Given::kubernetes().unset("image").set("mode", "rollback");
        assert_eq!(back.problems(), Vec::<String>::new());
    }
}
