//! `ec2-connect: instance-connect-endpoint`: reaching private EC2
//! instances with no SSH key stored anywhere and no port open to the
//! internet. Each host's SSH session runs inside an EC2 Instance Connect
//! Endpoint's WebSocket tunnel to the instance's private IP, and logs in
//! with a key made for the run and pushed for the deploy user with
//! `SendSSHPublicKey` just before each handshake. Host keys are still
//! pinned by `ssh-known-hosts`.
//!
//! # Layout
//! - [`key`] — the run's ed25519 key and `SendSSHPublicKey`.
//! - [`endpoint`] — which endpoint reaches an instance.
//! - [`tunnel`] — the presigned `openTunnel` WebSocket as a byte stream.
//!
//! [`Tunnel`] is the hosts target's [`Via`]: the SSH session asks it for a
//! new stream when the endpoint closed the last one (endpoints limit a
//! tunnel's life), and it pushes the key again when the last push is
//! older than [`key::PUSH_AGAIN_AFTER`].
//!
//! # Endpoints in tests
//! With the `ec2-instance-connect` service endpoint overridden
//! (`AWS_ENDPOINT_URL_EC2_INSTANCE_CONNECT`, as the SDK reads it for
//! `SendSSHPublicKey`), tunnels go there too (`http` → `ws`, `https` →
//! `wss`) instead of to the endpoint's DNS name: that is how the local
//! stack's endpoint is reached.

pub mod endpoint;
pub mod key;
pub mod tunnel;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::ProvideCredentials;
use tokio::time::Instant;

use crate::targets::hosts::ssh::{Io, Via};
use crate::targets::hosts::{HostError, HostFailure};
pub use endpoint::Endpoint;
pub use key::RunKey;

/// Every AWS action this way in calls: the documented policy
/// (`docs/iam/instance-connect.json`) grants exactly these.
pub const IAM_ACTIONS: [&str; 4] = [
    "ec2:DescribeInstances",
    "ec2:DescribeInstanceConnectEndpoints",
    "ec2-instance-connect:SendSSHPublicKey",
    "ec2-instance-connect:OpenTunnel",
];

/// The environment variable that overrides the service's endpoint.
pub const ENDPOINT_ENV: &str = "AWS_ENDPOINT_URL_EC2_INSTANCE_CONNECT";

/// What every tunnel of the run shares: the clients, the identity that
/// signs, the run's key.
pub struct Access {
    client: aws_sdk_ec2instanceconnect::Client,
    credentials: aws_credential_types::provider::SharedCredentialsProvider,
    region: String,
    /// The service endpoint override, where tunnels go instead (tests).
    base: Option<url::Url>,
    key: RunKey,
}

impl Access {
    /// From the SDK configuration the EC2 discovery used; `endpoint_override`
    /// is the value of [`ENDPOINT_ENV`], if set.
    ///
    /// # Errors
    /// A sentence when the configuration has no credentials or region, or
    /// the override is not an http(s) URL.
    pub fn new(sdk: &aws_config::SdkConfig, endpoint_override: Option<&str>) -> Result<Access, String> {
        let credentials = sdk
            .credentials_provider()
            .ok_or("no AWS credentials to sign the Instance Connect tunnel with")?;
        let region = sdk.region().map(|r| r.to_string()).ok_or("no AWS region (set aws-region)")?;
        let base = match endpoint_override.map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(raw) => {
                let mut u = url::Url::parse(raw).map_err(|e| format!("{ENDPOINT_ENV} '{raw}': {e}"))?;
                let scheme = match u.scheme() {
                    "http" => "ws",
                    "https" => "wss",
                    other => {
                        return Err(format!("{ENDPOINT_ENV} '{raw}': scheme {other} is not http or https"));
                    }
                };
                u.set_scheme(scheme).map_err(|()| format!("{ENDPOINT_ENV} '{raw}': cannot use it"))?;
                Some(u)
            }
        };
        Ok(Access {
            client: aws_sdk_ec2instanceconnect::Client::new(sdk),
            credentials,
            region,
            base,
            key: RunKey::generate(),
        })
    }

    pub fn key(&self) -> &RunKey {
        &self.key
    }
}

/// One instance's way in: its endpoint, address and deploy user.
pub struct Tunnel {
    access: Arc<Access>,
    /// The host as logs name it.
    unit: String,
    instance_id: String,
    os_user: String,
    private_ip: String,
    port: u16,
    endpoint: Endpoint,
    timeout: Duration,
    /// When the key was last accepted for this instance.
    pushed: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} via {} as {}", self.instance_id, self.endpoint.id, self.os_user)
    }
}

/// What the discovery knows of an instance that a tunnel needs.
#[derive(Debug, Clone)]
pub struct Instance {
    pub id: String,
    pub private_ip: String,
    pub vpc_id: String,
    pub subnet_id: String,
}

impl Tunnel {
    /// `unit` is the host's name in logs; `timeout` bounds each call.
    pub fn new(
        access: Arc<Access>,
        unit: &str,
        instance: &Instance,
        os_user: &str,
        port: u16,
        endpoint: Endpoint,
        timeout: Duration,
    ) -> Tunnel {
        Tunnel {
            access,
            unit: unit.to_string(),
            instance_id: instance.id.clone(),
            os_user: os_user.to_string(),
            private_ip: instance.private_ip.clone(),
            port,
            endpoint,
            timeout,
            pushed: Mutex::new(None),
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn base(&self) -> Result<url::Url, HostError> {
        match &self.access.base {
            Some(b) => Ok(b.clone()),
            None => url::Url::parse(&format!("wss://{}", self.endpoint.dns_name)).map_err(|e| {
                HostError::new(
                    &self.unit,
                    HostFailure::InstanceConnectTunnelFailed,
                    format!(
                        "endpoint {} has an unusable DNS name '{}': {e}",
                        self.endpoint.id, self.endpoint.dns_name
                    ),
                )
            }),
        }
    }

    async fn push_if_stale(&self) -> Result<(), HostError> {
        let last = *self.pushed.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < key::PUSH_AGAIN_AFTER) {
            return Ok(());
        }
        key::push(
            &self.access.client,
            &self.unit,
            &self.instance_id,
            &self.os_user,
            &self.access.key,
            self.timeout,
        )
        .await?;
        *self.pushed.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        tracing::debug!(host = %self.unit, instance = %self.instance_id, "run key pushed");
        Ok(())
    }
}

#[async_trait::async_trait]
impl Via for Tunnel {
    fn key(&self) -> Arc<russh::keys::PrivateKey> {
        self.access.key.private()
    }

    async fn open(&self) -> Result<Box<dyn Io>, HostError> {
        let base = self.base()?;
        let to = tunnel::Target {
            base: &base,
            endpoint_id: &self.endpoint.id,
            private_ip: &self.private_ip,
            port: self.port,
        };
        let fail = |kind, message: String| HostError::new(&self.unit, kind, message);
        let credentials = tokio::time::timeout(self.timeout, self.access.credentials.provide_credentials())
            .await
            .map_err(|_| {
                fail(HostFailure::InstanceConnectTunnelFailed, "no AWS credentials within the timeout".into())
            })?
            .map_err(|e| {
                fail(
                    HostFailure::InstanceConnectTunnelFailed,
                    format!("no AWS credentials to sign the tunnel: {e}"),
                )
            })?;
        let url =
            tunnel::presign(&to, &credentials, &self.access.region, SystemTime::now()).map_err(|e| {
                fail(HostFailure::InstanceConnectTunnelFailed, format!("could not sign the tunnel: {e}"))
            })?;
        let stream = tunnel::open(&url, &to.host(), self.timeout).await.map_err(|e| {
            if e.refused {
                fail(
                    HostFailure::InstanceConnectTunnelRefused,
                    format!(
                        "Instance Connect Endpoint {} refused the tunnel to {}:{}: {} (the AWS identity needs ec2-instance-connect:OpenTunnel on the endpoint, and a signature with the right credentials, region and clock)",
                        self.endpoint.id, self.private_ip, self.port, e.message
                    ),
                )
            } else {
                fail(
                    HostFailure::InstanceConnectTunnelFailed,
                    format!(
                        "could not open a tunnel through Instance Connect Endpoint {} to {}:{}: {}",
                        self.endpoint.id, self.private_ip, self.port, e.message
                    ),
                )
            }
        })?;
        // The key last, just before the handshake it is for.
        self.push_if_stale().await?;
        Ok(Box::new(stream))
    }
}

/// The running instances `spec` finds, each with its tunnel: their
/// endpoints described once, a key made for the run.
///
/// # Errors
/// `ec2_describe_failed`, `no_instances_found`, `ec2_no_address` (an
/// instance with no private IP), `instance_connect_endpoint_not_found`
/// (naming every instance without one), `instance_connect_tunnel_failed`
/// (no credentials or region to sign with).
pub async fn discover(
    spec: &crate::inputs::Ec2Spec,
    region: &str,
    user: &str,
    port: u16,
    named: Option<&str>,
    timeout: Duration,
) -> Result<Vec<(crate::inputs::HostSpec, Arc<Tunnel>)>, HostError> {
    let sdk = crate::targets::ec2::sdk_config(region).await;
    let endpoint_override = std::env::var(ENDPOINT_ENV).ok();
    discover_with(&sdk, endpoint_override.as_deref(), spec, user, port, named, timeout).await
}

/// [`discover`] with the SDK configuration and the service endpoint
/// override given (tests).
///
/// # Errors
/// As [`discover`].
pub async fn discover_with(
    sdk: &aws_config::SdkConfig,
    endpoint_override: Option<&str>,
    spec: &crate::inputs::Ec2Spec,
    user: &str,
    port: u16,
    named: Option<&str>,
    timeout: Duration,
) -> Result<Vec<(crate::inputs::HostSpec, Arc<Tunnel>)>, HostError> {
    let instances = crate::targets::ec2::instances(sdk, spec).await?;
    let ready = endpoint::ready(&aws_sdk_ec2::Client::new(sdk), named, timeout).await?;
    let access = Arc::new(
        Access::new(sdk, endpoint_override)
            .map_err(|e| HostError::new("ec2", HostFailure::InstanceConnectTunnelFailed, e))?,
    );
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for i in &instances {
        let id = i.instance_id().unwrap_or("(no id)").to_string();
        let Some(ip) = i.private_ip_address().filter(|a| !a.is_empty()) else {
            return Err(HostError::new(
                "ec2",
                HostFailure::Ec2NoAddress,
                format!("instance {id} has no private IP address for the Instance Connect Endpoint to reach"),
            ));
        };
        let instance = Instance {
            id: id.clone(),
            private_ip: ip.to_string(),
            vpc_id: i.vpc_id().unwrap_or_default().to_string(),
            subnet_id: i.subnet_id().unwrap_or_default().to_string(),
        };
        match endpoint::choose(&ready, named, &instance.vpc_id, &instance.subnet_id) {
            Ok(e) => {
                let host = crate::inputs::HostSpec {
                    user: Some(user.to_string()),
                    host: ip.to_string(),
                    port: Some(port),
                };
                let unit = if port == 22 { ip.to_string() } else { format!("{ip}:{port}") };
                out.push((
                    host,
                    Arc::new(Tunnel::new(access.clone(), &unit, &instance, user, port, e.clone(), timeout)),
                ));
            }
            Err(why) => missing.push(format!("{id}: {why}")),
        }
    }
    if !missing.is_empty() {
        return Err(HostError::new("ec2", HostFailure::InstanceConnectEndpointNotFound, missing.join("; ")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The policy users copy grants what the code calls, no more, and
    /// keeps the key to one OS user and the tunnel to port 22.
    #[test]
    fn the_documented_policy_grants_exactly_what_is_called() {
        let policy: serde_json::Value =
            serde_json::from_str(include_str!("../../../docs/iam/instance-connect.json")).unwrap();
        let statements = policy["Statement"].as_array().unwrap();
        let mut granted: Vec<String> = statements
            .iter()
            .flat_map(|s| match &s["Action"] {
                serde_json::Value::String(a) => vec![a.clone()],
                v => v.as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect(),
            })
            .collect();
        granted.sort();
        let mut called: Vec<String> = IAM_ACTIONS.iter().map(|a| a.to_string()).collect();
        called.sort();
        assert_eq!(granted, called);
        let of = |action: &str| statements.iter().find(|s| s["Action"] == action).unwrap();
        let push = of("ec2-instance-connect:SendSSHPublicKey");
        assert!(push["Condition"]["StringEquals"]["ec2:osuser"].is_string(), "{push}");
        assert!(push["Resource"].as_str().unwrap().contains(":instance/"), "{push}");
        let tunnel = of("ec2-instance-connect:OpenTunnel");
        assert_eq!(tunnel["Condition"]["NumericEquals"]["ec2-instance-connect:remotePort"], "22");
        assert!(
            tunnel["Resource"].as_str().unwrap().contains(":instance-connect-endpoint/eice-"),
            "{tunnel}"
        );
        assert!(include_str!("../../../docs/aws.md").contains("(iam/instance-connect.json)"));
    }

    #[test]
    fn an_endpoint_override_carries_the_tunnels_too() {
        let sdk = aws_config::SdkConfig::builder()
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(
                aws_credential_types::Credentials::new("AKID", "secret", None, None, "test"),
            ))
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let a = Access::new(&sdk, Some("http://127.0.0.1:5057")).unwrap();
        assert_eq!(a.base.as_ref().unwrap().as_str(), "ws://127.0.0.1:5057/");
        let a = Access::new(&sdk, Some("https://eice.internal.example")).unwrap();
        assert_eq!(a.base.as_ref().unwrap().as_str(), "wss://eice.internal.example/");
        assert!(Access::new(&sdk, None).unwrap().base.is_none());
        assert!(Access::new(&sdk, Some("ftp://x")).is_err());
    }
}
