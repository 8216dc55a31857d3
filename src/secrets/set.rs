//! The fetched secrets: environment names, where each came from, values.

use std::collections::BTreeMap;
use std::fmt;

use sha2::{Digest as _, Sha256};

use super::{SecretValue, SecretsError};

/// The environment variable name for a parameter found under `prefix`: the
/// path below the prefix, upper-cased, with every character outside
/// `[A-Z0-9_]` turned into `_` (`/myapp/prod/db/password` under
/// `/myapp/prod/` is `DB_PASSWORD`).
pub fn env_name(prefix: &str, parameter: &str) -> String {
    let below = parameter.strip_prefix(prefix).unwrap_or(parameter);
    below
        .trim_start_matches('/')
        .chars()
        .map(|c| {
            let c = c.to_ascii_uppercase();
            if c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' { c } else { '_' }
        })
        .collect()
}

#[derive(Clone)]
struct Entry {
    parameter: String,
    value: SecretValue,
    /// SSM's `Version` and `LastModifiedDate` of the parameter: metadata
    /// that changes on every rotation, and nothing derived from the value.
    stamp: String,
}

/// The rotation stamp of an SSM parameter (`<Version>@<LastModifiedDate>`).
pub fn stamp(version: i64, last_modified: Option<&aws_smithy_types::DateTime>) -> String {
    match last_modified {
        Some(t) => format!("{version}@{}.{:09}", t.secs(), t.subsec_nanos()),
        None => version.to_string(),
    }
}

/// Secrets by environment variable name, in name order. `Debug` shows the
/// names and their parameters, never a value.
#[derive(Clone, Default)]
pub struct SecretSet {
    entries: BTreeMap<String, Entry>,
}

impl SecretSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `name` = `value` from SSM parameter `parameter`, whose rotation
    /// stamp (see [`stamp`]) is `stamp`.
    ///
    /// # Errors
    ///
    /// [`SecretsError::NameCollision`] when another parameter already has
    /// this name. The same parameter under the same name again (a path and
    /// an explicit pair reaching one parameter) is not a collision.
    pub fn insert(
        &mut self,
        name: String,
        parameter: String,
        value: SecretValue,
        stamp: String,
    ) -> Result<(), SecretsError> {
        if let Some(existing) = self.entries.get(&name) {
            if existing.parameter == parameter {
                return Ok(());
            }
            let (first, second) = if existing.parameter < parameter {
                (existing.parameter.clone(), parameter)
            } else {
                (parameter, existing.parameter.clone())
            };
            return Err(SecretsError::NameCollision { name, first, second });
        }
        self.entries.insert(name, Entry { parameter, value, stamp });
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The environment variable names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    pub fn get(&self, name: &str) -> Option<&SecretValue> {
        self.entries.get(name).map(|e| &e.value)
    }

    /// The SSM parameter a name came from.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.entries.get(name).map(|e| e.parameter.as_str())
    }

    /// SHA-256, hex, over the sorted `name\0parameter\0stamp\0` triples:
    /// changes when a parameter is rotated (SSM bumps its `Version`), when
    /// a name moves to another parameter, or when one is added or removed.
    /// No secret-derived material goes in, so it can be published (deploy
    /// payload, step output, container label) without letting anyone test
    /// guesses at a weak value offline.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for (name, e) in &self.entries {
            for part in [name.as_str(), e.parameter.as_str(), e.stamp.as_str()] {
                h.update(part.as_bytes());
                h.update([0]);
            }
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The pairs to hand to the deployed app's environment, sorted by name.
    pub fn into_env(self) -> Vec<(String, SecretValue)> {
        self.entries.into_iter().map(|(n, e)| (n, e.value)).collect()
    }
}

impl fmt::Debug for SecretSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.entries.iter().map(|(n, e)| (n, &e.parameter))).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> SecretValue {
        SecretValue::new(s.to_string())
    }

    fn st(n: i64) -> String {
        stamp(n, Some(&aws_smithy_types::DateTime::from_secs(1_795_350_000 + n)))
    }

    #[test]
    fn names_follow_the_path_below_the_prefix() {
        assert_eq!(env_name("/myapp/prod/", "/myapp/prod/db/password"), "DB_PASSWORD");
        assert_eq!(env_name("/myapp/prod", "/myapp/prod/db/password"), "DB_PASSWORD");
        assert_eq!(env_name("/myapp/prod/", "/myapp/prod/redis-endpoint.v2"), "REDIS_ENDPOINT_V2");
        assert_eq!(env_name("/a/", "/a/Ünï"), "_N_");
    }

    #[test]
    fn collisions_name_both_parameters() {
        let mut s = SecretSet::new();
        s.insert("DB_URL".into(), "/app/db/url".into(), v("x"), st(1)).unwrap();
        s.insert("DB_URL".into(), "/app/db/url".into(), v("x"), st(1)).unwrap();
        let e = s.insert("DB_URL".into(), "/app/db-url".into(), v("y"), st(1)).unwrap_err();
        assert_eq!(e.reason(), "ssm_name_collision");
        let msg = e.to_string();
        assert!(msg.contains("/app/db/url") && msg.contains("/app/db-url") && !msg.contains(" y"), "{msg}");
    }

    #[test]
    fn fingerprint_is_order_free_follows_rotations_and_never_the_values() {
        let mut a = SecretSet::new();
        a.insert("B".into(), "/b".into(), v("2"), st(1)).unwrap();
        a.insert("A".into(), "/a".into(), v("1"), st(1)).unwrap();
        let mut b = SecretSet::new();
        b.insert("A".into(), "/a".into(), v("1"), st(1)).unwrap();
        b.insert("B".into(), "/b".into(), v("2"), st(1)).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 64);
        // A rotation: SSM's version moves.
        let mut c = SecretSet::new();
        c.insert("A".into(), "/a".into(), v("1"), st(1)).unwrap();
        c.insert("B".into(), "/b".into(), v("3"), st(2)).unwrap();
        assert_ne!(a.fingerprint(), c.fingerprint());
        // Same metadata, other values: the fingerprint cannot tell, so it
        // cannot be used to check a guessed value.
        let mut d = SecretSet::new();
        d.insert("A".into(), "/a".into(), v("guess-1"), st(1)).unwrap();
        d.insert("B".into(), "/b".into(), v("guess-2"), st(1)).unwrap();
        assert_eq!(a.fingerprint(), d.fingerprint());
        assert_eq!(a.names(), vec!["A", "B"]);
        assert!(!format!("{a:?}").contains('2'));
    }
}
