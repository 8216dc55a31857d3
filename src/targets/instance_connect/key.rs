//! The run's SSH key: ed25519, made in memory when the run starts, pushed
//! to each instance for its deploy user with `SendSSHPublicKey` (valid 60 s
//! there), never written to a file, a log line or an output. Only the
//! public half is ever rendered as text.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_ec2instanceconnect::error::ProvideErrorMetadata;
use rand::RngCore;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{HashAlg, PrivateKey};

use crate::targets::hosts::{HostError, HostFailure};

/// How long the instance accepts a pushed key (EC2 Instance Connect's rule).
pub const KEY_LIFETIME: Duration = Duration::from_secs(60);

/// A pushed key is pushed again before a handshake once this much of its
/// lifetime has gone: the handshake itself takes up to `ssh-timeout`.
pub const PUSH_AGAIN_AFTER: Duration = Duration::from_secs(40);

/// The per-run key. Its `Debug` shows the public fingerprint only.
#[derive(Clone)]
pub struct RunKey(Arc<PrivateKey>);

impl std::fmt::Debug for RunKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RunKey(ed25519 {})", self.0.public_key().fingerprint(HashAlg::Sha256))
    }
}

impl RunKey {
    /// A fresh ed25519 key from the operating system's randomness (the
    /// thread RNG is seeded from it).
    pub fn generate() -> RunKey {
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        let pair = Ed25519Keypair::from_seed(&seed);
        seed.fill(0);
        RunKey(Arc::new(PrivateKey::from(pair)))
    }

    pub fn private(&self) -> Arc<PrivateKey> {
        self.0.clone()
    }

    /// The public key as an `authorized_keys` line (`ssh-ed25519 AAAA...`).
    pub fn public_line(&self) -> String {
        self.0.public_key().to_openssh().unwrap_or_default()
    }
}

/// Pushes `key` for `os_user` of `instance_id` with `SendSSHPublicKey`,
/// bounded by `timeout`.
///
/// # Errors
/// `instance_connect_key_refused`, with the service's code and the fix
/// when it is a known one.
pub async fn push(
    client: &aws_sdk_ec2instanceconnect::Client,
    unit: &str,
    instance_id: &str,
    os_user: &str,
    key: &RunKey,
    timeout: Duration,
) -> Result<(), HostError> {
    let refused = |why: String| {
        HostError::new(
            unit,
            HostFailure::InstanceConnectKeyRefused,
            format!("SendSSHPublicKey for {os_user} on {instance_id} failed: {why}"),
        )
    };
    let call = client
        .send_ssh_public_key()
        .instance_id(instance_id)
        .instance_os_user(os_user)
        .ssh_public_key(key.public_line())
        .send();
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Err(refused(format!("no answer within {}s", timeout.as_secs()))),
        Ok(Ok(out)) if out.success() => Ok(()),
        Ok(Ok(_)) => Err(refused("the service answered Success: false".into())),
        Ok(Err(e)) => {
            let code = e.code().unwrap_or("error").to_string();
            let message = e
                .message()
                .map(String::from)
                .unwrap_or_else(|| aws_smithy_types::error::display::DisplayErrorContext(&e).to_string());
            Err(refused(format!("{code}: {message}{}", hint(&code))))
        }
    }
}

/// What to do about a refusal the service names.
fn hint(code: &str) -> &'static str {
    match code {
        "AccessDeniedException" => {
            " (the AWS identity needs ec2-instance-connect:SendSSHPublicKey on the instance for this OS user: see docs/iam/instance-connect.json)"
        }
        "EC2InstanceNotFoundException" | "EC2InstanceStateInvalidException" => {
            " (the instance must exist and be running in this region)"
        }
        "EC2InstanceUnavailableException" | "ThrottlingException" | "ServiceException" => {
            " (the service is busy or the instance is unreachable; try again)"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_is_new_and_shows_only_its_public_half() {
        let (a, b) = (RunKey::generate(), RunKey::generate());
        assert_ne!(a.public_line(), b.public_line());
        assert!(a.public_line().starts_with("ssh-ed25519 AAAA"), "{}", a.public_line());
        let shown = format!("{a:?}");
        assert!(shown.starts_with("RunKey(ed25519 SHA256:"), "{shown}");
        let private = a.private().to_openssh(russh::keys::ssh_key::LineEnding::LF).unwrap();
        let body: String = private.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(!shown.contains(&body[..40]));
    }
}
