//! Host key pinning against `known_hosts` text (the `ssh-known-hosts` input),
//! with OpenSSH's matching rules: `host[,host2]` patterns with `*`, `?` and
//! `!negation`, `[host]:port` for ports other than 22, hashed `|1|salt|hash`
//! entries and the `@revoked` marker. `@cert-authority` lines are ignored:
//! host certificates are not accepted.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use russh::keys::{Algorithm, HashAlg, PublicKey};
use sha1::Sha1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    CertAuthority,
    Revoked,
}

#[derive(Debug, Clone)]
struct Entry {
    marker: Marker,
    patterns: String,
    key: PublicKey,
}

/// What the known hosts say about a presented key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Trusted,
    /// No line names this host.
    Unknown,
    /// Lines name this host, none with the presented key.
    Mismatch,
    /// The presented key is listed as `@revoked`.
    Revoked,
}

/// Parsed `known_hosts` text.
#[derive(Debug, Clone, Default)]
pub struct KnownHosts {
    entries: Vec<Entry>,
}

impl KnownHosts {
    /// Parses `known_hosts` text; blank lines and `#` comments are skipped.
    ///
    /// # Errors
    /// A message naming the first malformed line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let mut first = fields.next().unwrap_or_default();
            let marker = match first {
                "@revoked" => Marker::Revoked,
                "@cert-authority" => Marker::CertAuthority,
                m if m.starts_with('@') => return Err(format!("line {}: unknown marker {m}", i + 1)),
                _ => Marker::None,
            };
            if marker != Marker::None {
                first = fields.next().unwrap_or_default();
            }
            let (Some(_kind), Some(b64)) = (fields.next(), fields.next()) else {
                return Err(format!("line {}: expected 'host[,host2] key-type base64-key'", i + 1));
            };
            let key = russh::keys::parse_public_key_base64(b64)
                .map_err(|e| format!("line {}: the key does not parse ({e})", i + 1))?;
            entries.push(Entry { marker, patterns: first.to_string(), key });
        }
        Ok(Self { entries })
    }

    /// Whether no line pins a key.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Judges the key `host:port` presented.
    pub fn check(&self, host: &str, port: u16, key: &PublicKey) -> Verdict {
        let name = lookup_name(host, port);
        let matching: Vec<&Entry> =
            self.entries.iter().filter(|e| host_matches(&name, &e.patterns)).collect();
        // A revoked key stays revoked whatever other lines say.
        if matching.iter().any(|e| e.marker == Marker::Revoked && same_key(&e.key, key)) {
            return Verdict::Revoked;
        }
        let pinned: Vec<&&Entry> = matching.iter().filter(|e| e.marker == Marker::None).collect();
        if pinned.iter().any(|e| same_key(&e.key, key)) {
            return Verdict::Trusted;
        }
        let named = !pinned.is_empty();
        if named { Verdict::Mismatch } else { Verdict::Unknown }
    }

    /// Host key algorithms pinned for `host:port`, so that negotiation asks
    /// the server for a key we can check.
    pub fn algorithms(&self, host: &str, port: u16) -> Vec<Algorithm> {
        let name = lookup_name(host, port);
        let mut out = Vec::new();
        for e in self.entries.iter().filter(|e| e.marker == Marker::None && host_matches(&name, &e.patterns))
        {
            let algs = match e.key.algorithm() {
                Algorithm::Rsa { .. } => vec![
                    Algorithm::Rsa { hash: Some(HashAlg::Sha512) },
                    Algorithm::Rsa { hash: Some(HashAlg::Sha256) },
                ],
                a => vec![a],
            };
            for a in algs {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
        out
    }
}

fn same_key(a: &PublicKey, b: &PublicKey) -> bool {
    a.key_data() == b.key_data()
}

/// The name `known_hosts` records a host under.
pub fn lookup_name(host: &str, port: u16) -> String {
    if port == 22 { host.to_string() } else { format!("[{host}]:{port}") }
}

/// The line a user adds to pin `key` for `host:port`.
pub fn line_for(host: &str, port: u16, key: &PublicKey) -> String {
    let openssh = key.to_openssh().unwrap_or_else(|_| key.algorithm().as_str().to_string());
    // to_openssh() appends the comment, if any.
    let mut parts = openssh.split_whitespace();
    let (kind, b64) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    format!("{} {kind} {b64}", lookup_name(host, port))
}

fn host_matches(name: &str, patterns: &str) -> bool {
    let mut matched = false;
    for p in patterns.split(',') {
        if let Some(hashed) = p.strip_prefix("|1|") {
            if hashed_matches(name, hashed) {
                matched = true;
            }
        } else if let Some(neg) = p.strip_prefix('!') {
            if glob(neg.to_ascii_lowercase().as_bytes(), name.to_ascii_lowercase().as_bytes()) {
                return false;
            }
        } else if glob(p.to_ascii_lowercase().as_bytes(), name.to_ascii_lowercase().as_bytes()) {
            matched = true;
        }
    }
    matched
}

fn hashed_matches(name: &str, salt_and_hash: &str) -> bool {
    let Some((salt, hash)) = salt_and_hash.split_once('|') else { return false };
    let (Ok(salt), Ok(hash)) = (STANDARD.decode(salt), STANDARD.decode(hash)) else { return false };
    let Ok(mac) = Hmac::<Sha1>::new_from_slice(&salt) else { return false };
    mac.chain_update(name.as_bytes()).verify_slice(&hash).is_ok()
}

/// OpenSSH's `*` / `?` wildcard match.
fn glob(pat: &[u8], s: &[u8]) -> bool {
    match pat.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| glob(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && glob(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && glob(rest, &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIIY6QcZ2r5HUtuhWK4WqizGhsIIlE+WGz9w4ZE920DHf";
    const K2: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIOqkhDR23yxPXgAT3MgurNqzBaJGJN3rux97+Um/M+VK";

    fn key(b64: &str) -> PublicKey {
        russh::keys::parse_public_key_base64(b64).unwrap()
    }

    #[test]
    fn plain_and_port_entries() {
        let kh = KnownHosts::parse(&format!(
            "# comment\n\n10.0.0.5,web-1 ssh-ed25519 {K1}\n[10.0.0.6]:2222 ssh-ed25519 {K2}\n"
        ))
        .unwrap();
        assert_eq!(kh.check("10.0.0.5", 22, &key(K1)), Verdict::Trusted);
        assert_eq!(kh.check("web-1", 22, &key(K1)), Verdict::Trusted);
        assert_eq!(kh.check("10.0.0.5", 22, &key(K2)), Verdict::Mismatch);
        assert_eq!(kh.check("10.0.0.6", 2222, &key(K2)), Verdict::Trusted);
        assert_eq!(kh.check("10.0.0.6", 22, &key(K2)), Verdict::Unknown);
        assert_eq!(kh.check("10.0.0.7", 22, &key(K1)), Verdict::Unknown);
        assert_eq!(kh.algorithms("10.0.0.5", 22), vec![Algorithm::Ed25519]);
    }

    #[test]
    fn hashed_wildcards_and_revoked() {
        // `ssh-keygen -H` form for 10.0.0.5, computed here.
        let salt = [7u8; 20];
        let mac = Hmac::<Sha1>::new_from_slice(&salt).unwrap().chain_update(b"10.0.0.5").finalize();
        let hashed = format!("|1|{}|{}", STANDARD.encode(salt), STANDARD.encode(mac.into_bytes()));
        let kh = KnownHosts::parse(&format!(
            "{hashed} ssh-ed25519 {K1}\n*.internal,!db.internal ssh-ed25519 {K2}\n@revoked * ssh-ed25519 {K2}\n"
        ))
        .unwrap();
        assert_eq!(kh.check("10.0.0.5", 22, &key(K1)), Verdict::Trusted);
        assert_eq!(kh.check("10.0.0.9", 22, &key(K1)), Verdict::Unknown);
        assert_eq!(kh.check("web.internal", 22, &key(K2)), Verdict::Revoked);
        assert_eq!(kh.check("db.internal", 22, &key(K1)), Verdict::Unknown);
    }

    #[test]
    fn malformed_lines_are_named() {
        let e = KnownHosts::parse("host ssh-ed25519\n").unwrap_err();
        assert!(e.starts_with("line 1:"), "{e}");
        let e = KnownHosts::parse(&format!("ok ssh-ed25519 {K1}\nbad ssh-ed25519 !!!\n")).unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
    }

    #[test]
    fn the_fix_line_is_in_known_hosts_form() {
        assert_eq!(line_for("10.0.0.6", 2222, &key(K1)), format!("[10.0.0.6]:2222 ssh-ed25519 {K1}"));
    }
}
