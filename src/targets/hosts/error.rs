//! What can go wrong on a host, and in the EC2 discovery that finds the
//! hosts: one [`HostError`] naming the host, the kind of failure
//! ([`HostFailure`], whose [`HostFailure::reason`] is the stable code) and
//! the message an operator needs to act.
//!
//! One struct over a plain enum of kinds, not an enum of variants that each
//! repeat `unit` and `message`: a step names the kind it fails with up front
//! ([`super::ssh::Session::run`] takes one), and a failure nested in another
//! (the jump host's, a restore that failed too) keeps its kind while its
//! message grows.

/// A host failed a step. Displays as `<unit>: <message>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{unit}: {message}")]
pub struct HostError {
    /// The host as logs name it (`host`, `host:port`); `ec2` for discovery.
    pub unit: String,
    pub kind: HostFailure,
    /// One lower-case sentence, with the fix when it is known; never a
    /// secret value.
    pub message: String,
}

impl HostError {
    pub fn new(unit: &str, kind: HostFailure, message: impl Into<String>) -> Self {
        HostError { unit: unit.to_string(), kind, message: message.into() }
    }

    /// Stable reason code for annotations, statuses and the summary.
    pub fn reason(&self) -> &'static str {
        self.kind.reason()
    }
}

/// The kinds of host failure, one per reason code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostFailure {
    // SSH.
    /// TCP, the SSH handshake, or the jump host's forwarding.
    SshConnectFailed,
    SshAuthFailed,
    /// A channel (exec, unix socket, TCP) could not be opened or broke.
    SshChannelFailed,
    /// The command could not be sent (empty, or a NUL byte in it).
    SshCommandFailed,
    SshCommandTimeout,
    HostKeyUnknown,
    HostKeyMismatch,
    HostKeyRevoked,
    KnownHostsInvalid,
    SshKeyInvalid,
    SudoPasswordRequired,
    /// A path or name that would read as an option on a command line.
    InvalidRemoteValue,

    // Docker.
    DockerUnreachable,
    DockerFailed,
    RegistryAuthFailed,
    ImagePullFailed,
    ImagePullTimeout,
    ContainerStartFailed,
    ContainerRemoveFailed,

    // The rollout on the host.
    LockFailed,
    MigrationTimeout,
    /// Another run's migration container still runs.
    MigrationRunning,
    ProbeFailed,
    NoCandidate,
    InvalidUpstreamName,
    NginxConfigRejected,
    NginxReloadFailed,
    NginxReadFailed,
    NginxWriteFailed,
    SwitchNotVerified,
    SwitchNotVerifiable,
    /// The switch was not verified and `nginx -T` shows nginx does not
    /// include the upstream file the action wrote.
    NginxUpstreamNotIncluded,
    /// ... or includes it, but no `proxy_pass` names its upstream.
    NginxUpstreamNotProxied,
    /// What users were served through nginx broke `max-error-rate`.
    ErrorRateExceeded,
    /// ... or `max-latency`.
    LatencyExceeded,
    AccessLogUnreadable,
    RollbackNotVerified,
    RollbackAfterRetire,

    // EC2 discovery.
    NoInstancesFound,
    Ec2DescribeFailed,
    Ec2NoAddress,
    /// `ec2-host-keys: console-output`, and an instance's console output
    /// has no SSH host keys (or cannot be read).
    HostKeysUnavailable,

    // EC2 Instance Connect (`ec2-connect: instance-connect-endpoint`).
    /// No endpoint in the instance's subnet or VPC (or the named one is
    /// not there / not ready).
    InstanceConnectEndpointNotFound,
    /// SendSSHPublicKey refused or failed.
    InstanceConnectKeyRefused,
    /// The endpoint refused the tunnel's signature or the caller's rights
    /// (HTTP 401/403).
    InstanceConnectTunnelRefused,
    /// The tunnel could not be opened (network, another HTTP answer).
    InstanceConnectTunnelFailed,
}

impl HostFailure {
    /// Stable reason code. Tests, docs/troubleshooting.md and users match on
    /// these: never change one.
    pub fn reason(self) -> &'static str {
        match self {
            HostFailure::SshConnectFailed => "ssh_connect_failed",
            HostFailure::SshAuthFailed => "ssh_auth_failed",
            HostFailure::SshChannelFailed => "ssh_channel_failed",
            HostFailure::SshCommandFailed => "ssh_command_failed",
            HostFailure::SshCommandTimeout => "ssh_command_timeout",
            HostFailure::HostKeyUnknown => "host_key_unknown",
            HostFailure::HostKeyMismatch => "host_key_mismatch",
            HostFailure::HostKeyRevoked => "host_key_revoked",
            HostFailure::KnownHostsInvalid => "known_hosts_invalid",
            HostFailure::SshKeyInvalid => "ssh_key_invalid",
            HostFailure::SudoPasswordRequired => "sudo_password_required",
            HostFailure::InvalidRemoteValue => "invalid_remote_value",
            HostFailure::DockerUnreachable => "docker_unreachable",
            HostFailure::DockerFailed => "docker_failed",
            HostFailure::RegistryAuthFailed => "registry_auth_failed",
            HostFailure::ImagePullFailed => "image_pull_failed",
            HostFailure::ImagePullTimeout => "image_pull_timeout",
            HostFailure::ContainerStartFailed => "container_start_failed",
            HostFailure::ContainerRemoveFailed => "container_remove_failed",
            HostFailure::LockFailed => "lock_failed",
            HostFailure::MigrationTimeout => "migration_timeout",
            HostFailure::MigrationRunning => "migration_running",
            HostFailure::ProbeFailed => "probe_failed",
            HostFailure::NoCandidate => "no_candidate",
            HostFailure::InvalidUpstreamName => "invalid_upstream_name",
            HostFailure::NginxConfigRejected => "nginx_config_rejected",
            HostFailure::NginxReloadFailed => "nginx_reload_failed",
            HostFailure::NginxReadFailed => "nginx_read_failed",
            HostFailure::NginxWriteFailed => "nginx_write_failed",
            HostFailure::SwitchNotVerified => "switch_not_verified",
            HostFailure::SwitchNotVerifiable => "switch_not_verifiable",
            HostFailure::NginxUpstreamNotIncluded => "nginx_upstream_not_included",
            HostFailure::NginxUpstreamNotProxied => "nginx_upstream_not_used",
            HostFailure::ErrorRateExceeded => "error_rate_exceeded",
            HostFailure::LatencyExceeded => "latency_exceeded",
            HostFailure::AccessLogUnreadable => "access_log_unreadable",
            HostFailure::RollbackNotVerified => "rollback_not_verified",
            HostFailure::RollbackAfterRetire => "rollback_after_retire",
            HostFailure::NoInstancesFound => "no_instances_found",
            HostFailure::Ec2DescribeFailed => "ec2_describe_failed",
            HostFailure::Ec2NoAddress => "ec2_no_address",
            HostFailure::HostKeysUnavailable => "host_keys_unavailable",
            HostFailure::InstanceConnectEndpointNotFound => "instance_connect_endpoint_not_found",
            HostFailure::InstanceConnectKeyRefused => "instance_connect_key_refused",
            HostFailure::InstanceConnectTunnelRefused => "instance_connect_tunnel_refused",
            HostFailure::InstanceConnectTunnelFailed => "instance_connect_tunnel_failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::HostFailure::*;
    use super::*;

    /// Every kind with the code it has always had (README, users' filters).
    const CODES: &[(HostFailure, &str)] = &[
        (SshConnectFailed, "ssh_connect_failed"),
        (SshAuthFailed, "ssh_auth_failed"),
        (SshChannelFailed, "ssh_channel_failed"),
        (SshCommandFailed, "ssh_command_failed"),
        (SshCommandTimeout, "ssh_command_timeout"),
        (HostKeyUnknown, "host_key_unknown"),
        (HostKeyMismatch, "host_key_mismatch"),
        (HostKeyRevoked, "host_key_revoked"),
        (KnownHostsInvalid, "known_hosts_invalid"),
        (SshKeyInvalid, "ssh_key_invalid"),
        (SudoPasswordRequired, "sudo_password_required"),
        (InvalidRemoteValue, "invalid_remote_value"),
        (DockerUnreachable, "docker_unreachable"),
        (DockerFailed, "docker_failed"),
        (RegistryAuthFailed, "registry_auth_failed"),
        (ImagePullFailed, "image_pull_failed"),
        (ImagePullTimeout, "image_pull_timeout"),
        (ContainerStartFailed, "container_start_failed"),
        (ContainerRemoveFailed, "container_remove_failed"),
        (LockFailed, "lock_failed"),
        (MigrationTimeout, "migration_timeout"),
        (MigrationRunning, "migration_running"),
        (ProbeFailed, "probe_failed"),
        (NoCandidate, "no_candidate"),
        (InvalidUpstreamName, "invalid_upstream_name"),
        (NginxConfigRejected, "nginx_config_rejected"),
        (NginxReloadFailed, "nginx_reload_failed"),
        (NginxReadFailed, "nginx_read_failed"),
        (NginxWriteFailed, "nginx_write_failed"),
        (SwitchNotVerified, "switch_not_verified"),
        (NginxUpstreamNotIncluded, "nginx_upstream_not_included"),
        (NginxUpstreamNotProxied, "nginx_upstream_not_used"),
        (SwitchNotVerifiable, "switch_not_verifiable"),
        (ErrorRateExceeded, "error_rate_exceeded"),
        (LatencyExceeded, "latency_exceeded"),
        (AccessLogUnreadable, "access_log_unreadable"),
        (RollbackNotVerified, "rollback_not_verified"),
        (RollbackAfterRetire, "rollback_after_retire"),
        (NoInstancesFound, "no_instances_found"),
        (Ec2DescribeFailed, "ec2_describe_failed"),
        (Ec2NoAddress, "ec2_no_address"),
        (HostKeysUnavailable, "host_keys_unavailable"),
        (InstanceConnectEndpointNotFound, "instance_connect_endpoint_not_found"),
        (InstanceConnectKeyRefused, "instance_connect_key_refused"),
        (InstanceConnectTunnelRefused, "instance_connect_tunnel_refused"),
        (InstanceConnectTunnelFailed, "instance_connect_tunnel_failed"),
    ];

    #[test]
    fn every_kind_keeps_its_reason_code() {
        for (kind, code) in CODES {
            assert_eq!(kind.reason(), *code, "{kind:?}");
            let e = HostError::new("web-1", *kind, "it broke");
            assert_eq!(e.reason(), *code);
            assert_eq!(crate::Error::from(e).reason(), *code);
        }
        let mut codes: Vec<&str> = CODES.iter().map(|(_, c)| *c).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), CODES.len(), "two kinds share a code");
    }

    #[test]
    fn shows_the_host_then_the_message() {
        let e = HostError::new("10.0.0.5:2222", LockFailed, "could not create the deploy lock /x/app.lock");
        assert_eq!(e.to_string(), "10.0.0.5:2222: could not create the deploy lock /x/app.lock");
        let e = crate::Error::from(e);
        assert_eq!(e.to_string(), "10.0.0.5:2222: could not create the deploy lock /x/app.lock");
        assert_eq!(e.detail(), "could not create the deploy lock /x/app.lock", "nested without the host");
    }
}
