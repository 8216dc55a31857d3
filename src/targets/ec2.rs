//! `target: ec2`: finds running instances through the EC2 API
//! (`DescribeInstances`, paginated) and hands their addresses to the hosts
//! target. Credentials and the endpoint come from the usual AWS chain
//! (`AWS_ENDPOINT_URL` included, which is how tests reach moto).

use aws_sdk_ec2::types::{Filter, Instance};

use crate::inputs::{AddressKind, Ec2Spec, HostSpec};
use crate::targets::hosts::{HostError, HostFailure};

/// The EC2 filters for `spec`: `Role=web` means the tag `Role`; a key that
/// already says `tag:` is kept. Only running instances are wanted.
pub fn filters(spec: &Ec2Spec) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = spec
        .filters
        .iter()
        .map(|(k, v)| {
            let key = if k.starts_with("tag:") { k.clone() } else { format!("tag:{k}") };
            (key, v.clone())
        })
        .collect();
    out.push(("instance-state-name".into(), vec!["running".into()]));
    out
}

/// Describes the filter for messages: `ids i-1,i-2; tag:Role=web|api`.
fn describe(spec: &Ec2Spec) -> String {
    let mut parts = Vec::new();
    if !spec.instance_ids.is_empty() {
        parts.push(format!("instance ids {}", spec.instance_ids.join(",")));
    }
    parts.extend(filters(spec).iter().map(|(k, v)| format!("{k}={}", v.join("|"))));
    parts.join("; ")
}

/// Running instances matching `spec`, as hosts to deploy to, ordered by
/// instance id so that the first-host barrier is stable between runs.
///
/// `region` may be empty: the AWS chain's region is used then.
///
/// # Errors
/// [`HostError`] (unit `ec2`) of kind `ec2_describe_failed`,
/// `no_instances_found` (naming the filter), or `ec2_no_address` when an
/// instance has no address of the requested kind.
pub async fn discover(
    spec: &Ec2Spec,
    region: &str,
    default_user: &str,
    default_port: u16,
) -> Result<Vec<HostSpec>, HostError> {
    discover_with(&sdk_config(region).await, spec, default_user, default_port).await
}

/// The AWS SDK configuration from the usual chain, in `region` if given.
pub async fn sdk_config(region: &str) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if !region.is_empty() {
        loader = loader.region(aws_config::Region::new(region.to_string()));
    }
    loader.load().await
}

/// [`discover`] with an SDK configuration given (tests point it at moto).
///
/// # Errors
/// As [`discover`].
pub async fn discover_with(
    config: &aws_config::SdkConfig,
    spec: &Ec2Spec,
    default_user: &str,
    default_port: u16,
) -> Result<Vec<HostSpec>, HostError> {
    instances(config, spec)
        .await?
        .iter()
        .map(|i| {
            let id = i.instance_id().unwrap_or("(no id)");
            let addr = match spec.address {
                AddressKind::PrivateIp => i.private_ip_address(),
                AddressKind::PublicIp => i.public_ip_address(),
                AddressKind::PublicDns => i.public_dns_name(),
            }
            .filter(|a| !a.is_empty())
            .ok_or_else(|| {
                HostError::new(
                    "ec2",
                    HostFailure::Ec2NoAddress,
                    format!(
                        "instance {id} has no {} (set ec2-address to one it has)",
                        address_name(spec.address)
                    ),
                )
            })?;
            Ok(HostSpec {
                user: Some(default_user.to_string()),
                host: addr.to_string(),
                port: Some(default_port),
            })
        })
        .collect()
}

/// The running instances matching `spec`, ordered by id.
///
/// # Errors
/// `ec2_describe_failed`, or `no_instances_found` naming the filter.
pub async fn instances(config: &aws_config::SdkConfig, spec: &Ec2Spec) -> Result<Vec<Instance>, HostError> {
    let client = aws_sdk_ec2::Client::new(config);

    let mut req = client.describe_instances();
    for id in &spec.instance_ids {
        req = req.instance_ids(id);
    }
    for (name, values) in filters(spec) {
        req = req.filters(Filter::builder().name(name).set_values(Some(values)).build());
    }
    let mut pages = req.into_paginator().send();
    let mut instances: Vec<Instance> = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            HostError::new(
                "ec2",
                HostFailure::Ec2DescribeFailed,
                format!(
                    "DescribeInstances failed: {} (check the region, the credentials and ec2:DescribeInstances permission)",
                    aws_smithy_types::error::display::DisplayErrorContext(&e)
                ),
            )
        })?;
        for r in page.reservations() {
            instances.extend(r.instances().iter().cloned());
        }
    }
    if instances.is_empty() {
        return Err(HostError::new(
            "ec2",
            HostFailure::NoInstancesFound,
            format!("no running EC2 instance matches {}", describe(spec)),
        ));
    }
    instances.sort_by(|a, b| a.instance_id().cmp(&b.instance_id()));
    instances.dedup_by(|a, b| a.instance_id() == b.instance_id());
    Ok(instances)
}

/// The lines cloud-init prints around an instance's SSH host keys in its
/// console output at first boot.
const KEYS_BEGIN: &str = "-----BEGIN SSH HOST KEY KEYS-----";
const KEYS_END: &str = "-----END SSH HOST KEY KEYS-----";

/// `ec2-host-keys: console-output`: known_hosts lines for `hosts` (as
/// [`discover`] found them), each host's keys read from its instance's
/// console output (GetConsoleOutput, under the run's AWS identity: the
/// host itself vouches for nothing), every call bounded by `timeout`.
///
/// # Errors
/// `host_keys_unavailable` naming the instance when its console output
/// cannot be read or holds no host keys; `ec2_describe_failed`.
pub async fn console_host_keys(
    config: &aws_config::SdkConfig,
    spec: &Ec2Spec,
    hosts: &[HostSpec],
    timeout: std::time::Duration,
) -> Result<String, HostError> {
    let client = aws_sdk_ec2::Client::new(config);
    let by_address: Vec<(String, String)> = instances(config, spec)
        .await?
        .iter()
        .filter_map(|i| {
            let addr = match spec.address {
                AddressKind::PrivateIp => i.private_ip_address(),
                AddressKind::PublicIp => i.public_ip_address(),
                AddressKind::PublicDns => i.public_dns_name(),
            }?;
            Some((addr.to_string(), i.instance_id()?.to_string()))
        })
        .collect();
    let reads = hosts.iter().map(|h| {
        let client = client.clone();
        let id = by_address.iter().find(|(a, _)| *a == h.host).map(|(_, id)| id.clone());
        async move {
            let unavailable = |why: String| HostError::new(&h.host, HostFailure::HostKeysUnavailable, why);
            let id = id.ok_or_else(|| unavailable(format!("{}: no running instance has this address any more", h.host)))?;
            let call = client.get_console_output().instance_id(&id).send();
            let out = match tokio::time::timeout(timeout, call).await {
                Err(_) => return Err(unavailable(format!("{id}: GetConsoleOutput did not answer within {}s", timeout.as_secs()))),
                Ok(Err(e)) => {
                    return Err(unavailable(format!(
                        "{id}: GetConsoleOutput failed: {} (the AWS identity needs ec2:GetConsoleOutput on the instance: see docs/iam/console-host-keys.json)",
                        aws_smithy_types::error::display::DisplayErrorContext(&e)
                    )));
                }
                Ok(Ok(o)) => o,
            };
            use base64::Engine as _;
            let text = out
                .output()
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let keys = host_keys_in(&text);
            if keys.is_empty() {
                return Err(unavailable(format!(
                    "{id}: its console output holds no SSH host keys (cloud-init prints them between {KEYS_BEGIN} and {KEYS_END} at first boot; EC2 keeps only recent output): pin its key in 'ssh-known-hosts' instead"
                )));
            }
            let name = match h.port {
                Some(p) if p != 22 => format!("[{}]:{p}", h.host),
                _ => h.host.clone(),
            };
            Ok(keys.iter().map(|k| format!("{name} {k}\n")).collect::<String>())
        }
    });
    Ok(futures::future::try_join_all(reads).await?.concat())
}

/// The `type base64` host keys between cloud-init's markers (the last
/// block, if the instance booted more than once), comments dropped.
fn host_keys_in(console: &str) -> Vec<String> {
    let Some(start) = console.rfind(KEYS_BEGIN) else { return vec![] };
    let rest = &console[start + KEYS_BEGIN.len()..];
    let Some(end) = rest.find(KEYS_END) else { return vec![] };
    rest[..end]
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let (kind, key) = (parts.next()?, parts.next()?);
            let known = kind.starts_with("ssh-") || kind.starts_with("ecdsa-sha2-");
            (known && key.len() > 16 && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)))
                .then(|| format!("{kind} {key}"))
        })
        .collect()
}

fn address_name(kind: AddressKind) -> &'static str {
    match kind {
        AddressKind::PrivateIp => "private IP address",
        AddressKind::PublicIp => "public IP address",
        AddressKind::PublicDns => "public DNS name",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The statement users add for `ec2-host-keys: console-output` grants
    /// the one call made, on instances only, and the docs link it.
    #[test]
    fn the_console_host_keys_policy_grants_the_call_made() {
        let policy: serde_json::Value =
            serde_json::from_str(include_str!("../../docs/iam/console-host-keys.json")).unwrap();
        let statements = policy["Statement"].as_array().unwrap();
        assert_eq!(statements.len(), 1);
        assert_eq!(statements[0]["Action"], "ec2:GetConsoleOutput");
        assert!(statements[0]["Resource"].as_str().unwrap().contains(":instance/"));
        assert!(include_str!("../../docs/aws.md").contains("(iam/console-host-keys.json)"));
    }

    #[test]
    fn host_keys_are_read_between_cloud_inits_markers() {
        let console = "boot...\n-----BEGIN SSH HOST KEY KEYS-----\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOLD root@old\n-----END SSH HOST KEY KEYS-----\n\
            reboot\nci-info: something\r\n-----BEGIN SSH HOST KEY KEYS-----\r\n\
            ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAI root@ip-10-0-1-5\r\n\
            ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINEW root@ip-10-0-1-5\r\n\
            not a key line\r\nssh-rsa short\r\n-----END SSH HOST KEY KEYS-----\r\nlogin:";
        assert_eq!(
            host_keys_in(console),
            [
                "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAI",
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINEW",
            ]
        );
        assert!(host_keys_in("no markers here").is_empty());
        assert!(
            host_keys_in("-----BEGIN SSH HOST KEY KEYS-----\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI")
                .is_empty()
        );
    }

    #[test]
    fn tag_filters_and_running_only() {
        let spec = Ec2Spec {
            instance_ids: vec!["i-0123456789abcdef0".into()],
            filters: vec![
                ("Role".into(), vec!["web".into(), "api".into()]),
                ("tag:Env".into(), vec!["prod".into()]),
            ],
            address: AddressKind::PrivateIp,
            connect: crate::inputs::Ec2Connect::Ssh,
            console_host_keys: false,
        };
        assert_eq!(
            filters(&spec),
            vec![
                ("tag:Role".to_string(), vec!["web".to_string(), "api".to_string()]),
                ("tag:Env".to_string(), vec!["prod".to_string()]),
                ("instance-state-name".to_string(), vec!["running".to_string()]),
            ]
        );
        assert_eq!(
            describe(&spec),
            "instance ids i-0123456789abcdef0; tag:Role=web|api; tag:Env=prod; instance-state-name=running"
        );
    }
}
