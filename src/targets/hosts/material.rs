//! The SSH material a deploy needs, checked before anything is contacted:
//! a private key that decodes, and `known_hosts` lines that parse. Values
//! given inline are checked with the other inputs; values read from SSM
//! right after the fetch, before the deployment is recorded.

use crate::inputs::Problem;
use crate::secrets::SecretValue;

use super::known_hosts::KnownHosts;

/// `key` decoded: an unencrypted OpenSSH or PEM private key. The one
/// decoder both the pre-flight check and the SSH session use.
///
/// # Errors
/// What is wrong with it, never any of its text.
pub fn decode_key(key: &SecretValue) -> Result<russh::keys::PrivateKey, String> {
    russh::keys::decode_secret_key(key.expose(), None).map_err(|e| {
        format!(
            "is not an unencrypted OpenSSH or PEM private key ({e}); paste the whole key file, from -----BEGIN to -----END"
        )
    })
}

/// Whether `key` decodes (see [`decode_key`]).
///
/// # Errors
/// As [`decode_key`].
pub fn check_key(key: &SecretValue) -> Result<(), String> {
    decode_key(key).map(drop)
}

/// Whether `text` is `known_hosts` text whose every line parses.
///
/// # Errors
/// The first malformed line, by number.
pub fn check_known_hosts(text: &SecretValue) -> Result<(), String> {
    let known = KnownHosts::parse(text.expose())?;
    if known.is_empty() {
        return Err(
            "has no host key; add the hosts' lines as `ssh-keyscan -t ed25519 HOST` prints them".into()
        );
    }
    Ok(())
}

/// The problems of `key` and `known_hosts`, each under the input it came
/// from.
pub fn problems(
    key: Option<(&str, &SecretValue)>,
    known_hosts: Option<(&str, &SecretValue)>,
) -> Vec<Problem> {
    let mut out = Vec::new();
    if let Some((input, key)) = key
        && let Err(message) = check_key(key)
    {
        out.push(Problem { input: input.into(), message });
    }
    if let Some((input, text)) = known_hosts
        && let Err(message) = check_known_hosts(text)
    {
        out.push(Problem { input: input.into(), message });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> SecretValue {
        SecretValue::new(s.into())
    }

    #[test]
    fn keys_and_known_hosts_are_parsed_not_trusted() {
        let p = problems(
            Some(("ssh-private-key", &v("not a key"))),
            Some(("ssh-known-hosts", &v("h1 ssh-ed25519 !!!"))),
        );
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0].input, "ssh-private-key");
        assert!(!p[0].message.contains("not a key"), "never echoes the value: {}", p[0].message);
        assert!(p[1].message.contains("line 1"), "{}", p[1].message);
        assert!(check_known_hosts(&v("# only a comment\n")).is_err());
        let good = "h1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
        assert!(check_known_hosts(&v(good)).is_ok());
    }
}
