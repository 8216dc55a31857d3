//! The raw read: `INPUT_*` and `GITHUB_*` variables into strings, with envy
//! and serde. No validation happens here; see [`super::validate`].
//!
//! The runner upper-cases input ids and keeps hyphens (`health-check-path`
//! arrives as `INPUT_HEALTH-CHECK-PATH`); envy lower-cases names after the
//! prefix, so the kebab-case field names match. The runner also sets every
//! declared input, with an empty string when it has no value: empty means
//! unset.

use serde::Deserialize;

/// Every input the action declares in `action.yml`, as text. A test keeps
/// this list and `action.yml` identical.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RawInputs {
    // What and where.
    pub target: Option<String>,
    pub mode: Option<String>,
    pub image: Option<String>,
    pub app: Option<String>,
    pub environment: Option<String>,
    pub environment_url: Option<String>,
    pub strategy: Option<String>,
    pub timeout: Option<String>,
    // The service (one from inputs, or several from a file).
    pub services_file: Option<String>,
    pub container_port: Option<String>,
    pub blue_port: Option<String>,
    pub green_port: Option<String>,
    pub env: Option<String>,
    pub command: Option<String>,
    pub restart_policy: Option<String>,
    pub migrate_command: Option<String>,
    pub pre_migrate_command: Option<String>,
    pub migrate_rollback_command: Option<String>,
    pub migrate_timeout: Option<String>,
    pub migration_timeout: Option<String>,
    // Health, switch, observe, drain.
    pub health_check_path: Option<String>,
    pub health_check_timeout: Option<String>,
    pub health_check_interval: Option<String>,
    pub health_check_successes: Option<String>,
    pub health_check_max_latency: Option<String>,
    pub health_check_max_response_time: Option<String>,
    pub version_path: Option<String>,
    pub observe_window: Option<String>,
    pub observe_failures: Option<String>,
    pub max_error_rate: Option<String>,
    pub max_latency: Option<String>,
    pub min_requests: Option<String>,
    pub nginx_access_log: Option<String>,
    pub smoke_tests: Option<String>,
    pub drain_time: Option<String>,
    pub canary_steps: Option<String>,
    pub canary_interval: Option<String>,
    // Analysis during the observe window.
    pub rollback_alarms: Option<String>,
    pub prometheus_url: Option<String>,
    pub analysis_query: Option<String>,
    pub analysis_max: Option<String>,
    pub analysis_min: Option<String>,
    pub analysis_interval: Option<String>,
    // Fleet.
    pub max_parallel: Option<String>,
    pub on_host_failure: Option<String>,
    // Hosts and SSH.
    pub hosts: Option<String>,
    pub ssh_user: Option<String>,
    pub ssh_port: Option<String>,
    pub ssh_private_key: Option<String>,
    pub ssh_private_key_ssm: Option<String>,
    pub ssh_known_hosts: Option<String>,
    pub ssh_known_hosts_ssm: Option<String>,
    pub ssh_timeout: Option<String>,
    pub ssh_jump_host: Option<String>,
    pub docker_socket: Option<String>,
    pub nginx_upstream_file: Option<String>,
    pub proxy_url: Option<String>,
    pub lock_dir: Option<String>,
    pub break_lock: Option<String>,
    // Registry.
    pub registry_username: Option<String>,
    pub registry_password: Option<String>,
    pub registry_password_ssm: Option<String>,
    // EC2.
    pub ec2_instance_ids: Option<String>,
    pub ec2_filters: Option<String>,
    pub ec2_address: Option<String>,
    pub ec2_connect: Option<String>,
    pub ec2_host_keys: Option<String>,
    pub ec2_instance_connect_endpoint_id: Option<String>,
    pub aws_region: Option<String>,
    // Kubernetes.
    pub kubeconfig: Option<String>,
    pub kube_context: Option<String>,
    pub namespace: Option<String>,
    pub deployments: Option<String>,
    pub manifests: Option<String>,
    pub eks_cluster: Option<String>,
    pub canary_traffic: Option<String>,
    // Secrets from SSM.
    pub ssm_paths: Option<String>,
    pub ssm_parameters: Option<String>,
    // GitHub Deployments.
    pub github_token: Option<String>,
    pub github_deployments: Option<String>,
    pub deployment_id: Option<String>,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub required_contexts: Option<String>,
    pub production_environment: Option<String>,
    pub transient_environment: Option<String>,
    pub deactivate_previous: Option<String>,
    pub lock_timeout: Option<String>,
    pub fail_on_status_error: Option<String>,
    // Notifications.
    pub slack_webhook_url: Option<String>,
    pub slack_webhook_url_ssm: Option<String>,
    pub notify_url: Option<String>,
    pub notify_url_ssm: Option<String>,
}

/// The `GITHUB_*` context the runner gives every step.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawContext {
    pub github_repository: Option<String>,
    pub github_sha: Option<String>,
    pub github_ref: Option<String>,
    pub github_ref_name: Option<String>,
    pub github_run_id: Option<String>,
    pub github_run_attempt: Option<String>,
    pub github_server_url: Option<String>,
    pub github_api_url: Option<String>,
    pub github_event_name: Option<String>,
    pub github_actor: Option<String>,
    pub github_workflow: Option<String>,
    pub github_workspace: Option<String>,
    pub github_job: Option<String>,
}

/// Reads both from an environment snapshot.
pub fn read(env: &super::Env) -> Result<(RawInputs, RawContext), String> {
    let pairs = || env.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.to_string(), v.to_string()));
    let inputs: RawInputs = envy::prefixed("INPUT_")
        .from_iter(pairs().filter(|(k, _)| k.starts_with("INPUT_")))
        .map_err(|e| e.to_string())?;
    let context: RawContext =
        envy::from_iter(pairs().filter(|(k, _)| k.starts_with("GITHUB_"))).map_err(|e| e.to_string())?;
    Ok((inputs, context))
}

/// The default `action.yml` declares for `input`, if any. The runner sets
/// every declared input, a default one included, so a value equal to its
/// default may not have been written in the workflow: checks that refuse
/// an input for what it is set *with* (another target's, a services file)
/// must not refuse it for that.
pub fn declared_default(input: &str) -> Option<&'static str> {
    use std::collections::BTreeMap;
    use std::sync::LazyLock;
    static DEFAULTS: LazyLock<BTreeMap<String, String>> = LazyLock::new(|| {
        #[derive(Deserialize)]
        struct Declared {
            default: Option<serde_yaml::Value>,
        }
        #[derive(Deserialize)]
        struct ActionYml {
            inputs: BTreeMap<String, Declared>,
        }
        let action: ActionYml = serde_yaml::from_str(include_str!("../../action.yml"))
            .unwrap_or(ActionYml { inputs: BTreeMap::new() });
        action
            .inputs
            .into_iter()
            .filter_map(|(name, d)| {
                let text = match d.default? {
                    serde_yaml::Value::String(s) => s,
                    serde_yaml::Value::Number(n) => n.to_string(),
                    serde_yaml::Value::Bool(b) => b.to_string(),
                    _ => return None,
                };
                Some((name, text))
            })
            .collect()
    });
    DEFAULTS.get(input).map(String::as_str)
}

/// The names of every field of [`RawInputs`], as the runner names inputs.
pub fn declared_fields() -> &'static [&'static str] {
    serde_aux::serde_introspection::serde_introspect::<RawInputs>()
}

#[cfg(test)]
mod tests {
    /// The runner parses `${{ }}` in every string of `action.yml` and refuses
    /// the whole file ("Unrecognized named-value: 'secrets'", act: "expressions
    /// are not allowed here") when one stands outside the fields it evaluates:
    /// an input's `default`, `runs.args`, `runs.env` (and the `pre-if` /
    /// `post-if` conditions). Descriptions, above all, must not hold one, even
    /// as example text.
    #[test]
    fn action_yml_holds_expressions_only_where_the_runner_evaluates_them() {
        let doc: serde_yaml::Value =
            serde_yaml::from_str(include_str!("../../action.yml")).expect("action.yml parses");
        let mut found = Vec::new();
        walk(&doc, "", &mut found);
        let misplaced: Vec<_> = found.iter().filter(|p| !evaluated(p)).collect();
        assert!(misplaced.is_empty(), "`${{{{` outside an evaluated field of action.yml: {misplaced:?}");
        // The walk sees the one expression action.yml must have.
        assert!(found.contains(&"inputs.github-token.default".to_string()), "{found:?}");
    }

    #[test]
    fn the_rule_refuses_an_expression_in_a_description() {
        let doc: serde_yaml::Value = serde_yaml::from_str(
            "inputs:\n  key:\n    description: 'Pass `${{ secrets.KEY }}`.'\n    default: ${{ github.token }}\nruns:\n  using: docker\n  image: x\n  env:\n    A: ${{ inputs.key }}\n  args: ['${{ inputs.key }}']\n",
        )
        .unwrap();
        let mut found = Vec::new();
        walk(&doc, "", &mut found);
        let misplaced: Vec<_> = found.iter().filter(|p| !evaluated(p)).cloned().collect();
        assert_eq!(misplaced, vec!["inputs.key.description".to_string()]);
        assert_eq!(found.len(), 4, "{found:?}");
    }

    /// The fields the runner evaluates, by path.
    fn evaluated(path: &str) -> bool {
        let parts: Vec<&str> = path.split('.').collect();
        matches!(parts.as_slice(), ["inputs", _, "default"] | ["runs", "args", _] | ["runs", "env", _])
            || matches!(parts.as_slice(), ["runs", "pre-if" | "post-if"])
    }

    /// Every string (keys included) that holds `${{`, by its dotted path.
    fn walk(v: &serde_yaml::Value, path: &str, found: &mut Vec<String>) {
        let join = |k: &str| if path.is_empty() { k.to_string() } else { format!("{path}.{k}") };
        match v {
            serde_yaml::Value::String(s) if s.contains("${{") => found.push(path.to_string()),
            serde_yaml::Value::Mapping(m) => {
                for (k, v) in m {
                    let key = match k {
                        serde_yaml::Value::String(s) => s.clone(),
                        other => serde_yaml::to_string(other).unwrap_or_default().trim().to_string(),
                    };
                    if key.contains("${{") {
                        found.push(join(&key));
                    }
                    walk(v, &join(&key), found);
                }
            }
            serde_yaml::Value::Sequence(s) => {
                for (i, v) in s.iter().enumerate() {
                    walk(v, &join(&i.to_string()), found);
                }
            }
            serde_yaml::Value::Tagged(t) => walk(&t.value, path, found),
            _ => {}
        }
    }

    #[test]
    fn the_defaults_are_read_from_action_yml() {
        assert_eq!(super::declared_default("ssh-port"), Some("22"));
        assert_eq!(super::declared_default("blue-port"), Some("8081"));
        assert_eq!(super::declared_default("ec2-address"), Some("private-ip"));
        assert_eq!(super::declared_default("hosts"), None);
    }
}
