//! Which EC2 Instance Connect Endpoint reaches an instance: the named one
//! (it must be in the instance's VPC), else the one in the instance's
//! subnet, else the first of its VPC — the AWS CLI's `open-tunnel` rule.
//! Endpoints are described once per run (`DescribeInstanceConnectEndpoints`,
//! paginated, ready states only); the choice is a pure function.

use std::time::Duration;

use aws_sdk_ec2::types::Filter;

use crate::targets::hosts::{HostError, HostFailure};

/// States in which an endpoint opens tunnels (as the AWS CLI filters them).
pub const READY_STATES: [&str; 4] =
    ["create-complete", "update-in-progress", "update-failed", "update-complete"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub id: String,
    /// Where its tunnels are opened (`wss://<dns_name>/openTunnel`).
    pub dns_name: String,
    pub vpc_id: String,
    pub subnet_id: String,
}

/// The endpoint for an instance in `vpc_id`/`subnet_id`, among `ready` ones.
///
/// # Errors
/// What is missing, as a sentence naming the VPC (or the named endpoint).
pub fn choose<'a>(
    ready: &'a [Endpoint],
    named: Option<&str>,
    vpc_id: &str,
    subnet_id: &str,
) -> Result<&'a Endpoint, String> {
    if let Some(id) = named {
        let e = ready.iter().find(|e| e.id == id).ok_or_else(|| {
            format!("Instance Connect Endpoint {id} was not found ready in this region (check ec2-instance-connect-endpoint-id, the region, and that its state is create-complete)")
        })?;
        if e.vpc_id != vpc_id {
            return Err(format!(
                "Instance Connect Endpoint {id} is in {}, the instance in {vpc_id}: an endpoint reaches its own VPC only",
                e.vpc_id
            ));
        }
        return Ok(e);
    }
    ready
        .iter()
        .find(|e| e.vpc_id == vpc_id && e.subnet_id == subnet_id)
        .or_else(|| ready.iter().find(|e| e.vpc_id == vpc_id))
        .ok_or_else(|| {
            format!("no Instance Connect Endpoint is ready in {vpc_id}: create one (aws ec2 create-instance-connect-endpoint --subnet-id {subnet_id}) or name one with ec2-instance-connect-endpoint-id")
        })
}

/// Every ready endpoint of the region (or the named one), bounded by `timeout`.
///
/// # Errors
/// `ec2_describe_failed`, with the permission it needs.
pub async fn ready(
    ec2: &aws_sdk_ec2::Client,
    named: Option<&str>,
    timeout: Duration,
) -> Result<Vec<Endpoint>, HostError> {
    let failed = |why: String| {
        HostError::new(
            "ec2",
            HostFailure::Ec2DescribeFailed,
            format!(
                "DescribeInstanceConnectEndpoints failed: {why} (the AWS identity needs ec2:DescribeInstanceConnectEndpoints)"
            ),
        )
    };
    let mut req = ec2.describe_instance_connect_endpoints().filters(
        Filter::builder().name("state").set_values(Some(READY_STATES.map(String::from).to_vec())).build(),
    );
    if let Some(id) = named {
        req = req.instance_connect_endpoint_ids(id);
    }
    let all = async {
        let mut out = Vec::new();
        let mut pages = req.into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page
                .map_err(|e| failed(aws_smithy_types::error::display::DisplayErrorContext(&e).to_string()))?;
            for e in page.instance_connect_endpoints() {
                out.push(Endpoint {
                    id: e.instance_connect_endpoint_id().unwrap_or_default().to_string(),
                    dns_name: e.dns_name().unwrap_or_default().to_string(),
                    vpc_id: e.vpc_id().unwrap_or_default().to_string(),
                    subnet_id: e.subnet_id().unwrap_or_default().to_string(),
                });
            }
        }
        Ok(out)
    };
    tokio::time::timeout(timeout, all)
        .await
        .map_err(|_| failed(format!("no answer within {}s", timeout.as_secs())))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(id: &str, vpc: &str, subnet: &str) -> Endpoint {
        Endpoint {
            id: id.into(),
            dns_name: format!("{id}.example"),
            vpc_id: vpc.into(),
            subnet_id: subnet.into(),
        }
    }

    #[test]
    fn the_subnets_endpoint_first_then_the_vpcs_then_none() {
        let ready = [
            e("eice-a", "vpc-1", "subnet-1"),
            e("eice-b", "vpc-1", "subnet-2"),
            e("eice-c", "vpc-2", "subnet-3"),
        ];
        assert_eq!(choose(&ready, None, "vpc-1", "subnet-2").unwrap().id, "eice-b");
        assert_eq!(choose(&ready, None, "vpc-1", "subnet-9").unwrap().id, "eice-a");
        let no = choose(&ready, None, "vpc-9", "subnet-9").unwrap_err();
        assert!(no.contains("no Instance Connect Endpoint is ready in vpc-9"), "{no}");
    }

    #[test]
    fn a_named_endpoint_must_be_ready_and_in_the_instances_vpc() {
        let ready = [e("eice-a", "vpc-1", "subnet-1"), e("eice-c", "vpc-2", "subnet-3")];
        assert_eq!(choose(&ready, Some("eice-c"), "vpc-2", "subnet-1").unwrap().id, "eice-c");
        let other = choose(&ready, Some("eice-c"), "vpc-1", "subnet-1").unwrap_err();
        assert!(other.contains("eice-c is in vpc-2, the instance in vpc-1"), "{other}");
        let gone = choose(&ready, Some("eice-z"), "vpc-1", "subnet-1").unwrap_err();
        assert!(gone.contains("eice-z was not found ready"), "{gone}");
    }
}
