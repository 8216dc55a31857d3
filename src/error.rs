//! The action's error type. Each variant carries what an operator needs to
//! act (input, host, parameter) and never a secret value; [`Error::reason`]
//! gives the stable code used in annotations, deployment statuses and the
//! job summary.

use std::time::Duration;

use crate::inputs::Problem;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{} input problem(s): {}", .0.len(), .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Inputs(Vec<Problem>),

    /// A host failed a step (or EC2 discovery did); the code comes
    /// from its kind. Boxed: it carries the host's name and the message.
    #[error(transparent)]
    Hosts(Box<crate::targets::hosts::HostError>),

    /// The candidate never became healthy.
    #[error("{unit}: {message}")]
    Unhealthy { unit: String, message: String },

    /// Health through the proxy failed during the observe window.
    #[error("{unit}: {message}")]
    ObserveFailed { unit: String, message: String },

    /// A smoke test failed on `unit` (`smoke-tests` for the `url` tests);
    /// the message names the test and the answer.
    #[error("{unit}: {message}")]
    Smoke { unit: String, message: String },

    /// A smoke test's header names a secret SSM did not return.
    #[error("smoke-tests: {message}")]
    SmokeSecretMissing { message: String },

    /// A host's step failed otherwise than [`Error::Hosts`] (a migration,
    /// a lock held by another run). Boxed like the others.
    #[error(transparent)]
    Target(Box<crate::targets::TargetError>),

    #[error(transparent)]
    Secrets(#[from] crate::secrets::SecretsError),

    #[error(transparent)]
    Github(#[from] crate::github::GithubError),

    /// A CloudWatch alarm or the Prometheus query said no, or could not
    /// be read (`rollback-alarms`, `analysis-query`).
    #[error(transparent)]
    Analysis(crate::analysis::AnalysisError),

    /// Boxed: the cluster's errors carry the object's full name.
    #[error(transparent)]
    Kubernetes(Box<crate::targets::kubernetes::KubeError>),

    #[error("{what} did not finish within {}s", .after.as_secs())]
    Deadline { what: String, after: Duration },

    #[error("cancelled by the runner (SIGINT/SIGTERM)")]
    Cancelled,

    /// `mode: rollback` without an image, and GitHub records no earlier
    /// successful deployment to this environment to take one from.
    #[error(
        "no earlier successful deployment to environment '{environment}' to roll back to; name the image to deploy with 'image'"
    )]
    NothingToRollBack { environment: String },

    #[error("{0}")]
    Other(String),
}

impl From<crate::targets::kubernetes::KubeError> for Error {
    fn from(e: crate::targets::kubernetes::KubeError) -> Self {
        match e {
            // The same error on every target.
            crate::targets::kubernetes::KubeError::Analysis(a) => a.into(),
            e => Error::Kubernetes(Box::new(e)),
        }
    }
}

impl From<crate::targets::TargetError> for Error {
    fn from(e: crate::targets::TargetError) -> Self {
        match e {
            crate::targets::TargetError::Host(h) => h.into(),
            e => Error::Target(Box::new(e)),
        }
    }
}

impl From<crate::targets::hosts::HostError> for Error {
    fn from(e: crate::targets::hosts::HostError) -> Self {
        Error::Hosts(Box::new(e))
    }
}

impl From<crate::analysis::AnalysisError> for Error {
    fn from(e: crate::analysis::AnalysisError) -> Self {
        match e {
            crate::analysis::AnalysisError::Cancelled => Error::Cancelled,
            e => Error::Analysis(e),
        }
    }
}

impl Error {
    /// Stable reason code.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Inputs(_) => "invalid_input",
            Error::Hosts(e) => e.reason(),
            Error::Unhealthy { .. } => "health_check_failed",
            Error::ObserveFailed { .. } => "observe_failed",
            Error::Smoke { .. } => "smoke_test_failed",
            Error::SmokeSecretMissing { .. } => "smoke_secret_missing",
            Error::Target(e) => e.reason(),
            Error::Secrets(e) => e.reason(),
            Error::Github(e) => e.reason(),
            Error::Analysis(e) => e.reason(),
            Error::Kubernetes(e) => e.reason(),
            Error::Deadline { .. } => "deadline_exceeded",
            Error::Cancelled => "cancelled",
            Error::NothingToRollBack { .. } => "nothing_to_roll_back",
            Error::Other(_) => "internal_error",
        }
    }

    /// The message without its `<unit>: ` prefix, to nest this error in
    /// another one of the same unit (which says the unit once).
    pub fn detail(&self) -> String {
        match self {
            Error::Hosts(e) => e.message.clone(),
            Error::Target(e) => e.detail(),
            Error::Smoke { message, .. }
            | Error::SmokeSecretMissing { message }
            | Error::Unhealthy { message, .. }
            | Error::ObserveFailed { message, .. } => message.clone(),
            e => e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoke_failures_keep_their_codes_and_text() {
        let e = Error::Smoke { unit: "web-1".into(), message: "smoke test 'home' failed: GET /".into() };
        assert_eq!(
            (e.reason(), e.to_string()),
            ("smoke_test_failed", "web-1: smoke test 'home' failed: GET /".into())
        );
        assert_eq!(e.detail(), "smoke test 'home' failed: GET /");
        let e = Error::SmokeSecretMissing { message: "smoke test 'api' header x-token uses ${TOKEN}".into() };
        assert_eq!(e.reason(), "smoke_secret_missing");
        assert_eq!(e.to_string(), "smoke-tests: smoke test 'api' header x-token uses ${TOKEN}");
        assert_eq!(e.detail(), "smoke test 'api' header x-token uses ${TOKEN}");
    }
}
