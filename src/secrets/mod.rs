//! Secrets from AWS SSM Parameter Store (see issue 5). This file holds the
//! types the rest of the action relies on.

use std::fmt;

/// A secret value that redacts itself in `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The value itself: only for handing it to where it is delivered.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(***)")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Failures fetching secrets (filled in by the SSM work).
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("{0}")]
    Other(String),
}

impl SecretsError {
    pub fn reason(&self) -> &'static str {
        "secrets_failed"
    }
}
