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
