//! What can go wrong fetching secrets, and how an SDK error becomes one of
//! those. Every message names the parameter or path and the fix, and never
//! carries a value: the only text taken from AWS is the error code and, for
//! errors we do not recognise, the service's message (which describes the
//! request, and a request holds names only).

use std::time::Duration;

use aws_sdk_ssm::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

/// Failures fetching secrets. [`SecretsError::reason`] is the stable code.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("{0}")]
    Other(String),

    /// `GetParameters` listed these names in `InvalidParameters`, or
    /// `GetParameter` answered `ParameterNotFound`.
    #[error(
        "{} ssm parameter(s) named by input '{input}' not found in {region}: {}; check each name (case matters, and a name without a leading '/' is a top-level parameter) and the region",
        .names.len(), .names.join(", ")
    )]
    ParametersMissing { names: Vec<String>, region: String, input: &'static str },

    /// The caller may not make this SSM call on this resource.
    #[error(
        "access denied: {action} on {resource}; allow {action} on it in the IAM policy of the role the workflow uses"
    )]
    AccessDenied { action: &'static str, resource: String },

    /// SSM could not decrypt a SecureString because KMS refused. The action
    /// never falls back to reading without decryption.
    #[error(
        "cannot decrypt SecureString {}: kms:Decrypt is missing; allow kms:Decrypt on the parameter's KMS key for the role the workflow uses",
        .parameters.join(", ")
    )]
    KmsDecryptDenied { parameters: Vec<String> },

    /// No credential source produced credentials.
    #[error(
        "no AWS credentials for {what} ({detail}); configure them before this step, e.g. with aws-actions/configure-aws-credentials (for OIDC the job needs `permissions: id-token: write`)"
    )]
    CredentialsMissing { what: String, detail: String },

    /// AWS rejected the credentials (expired, revoked, wrong account).
    #[error(
        "AWS rejected the credentials for {what} ({code}); they are expired or invalid: refresh them with aws-actions/configure-aws-credentials (for OIDC the job needs `permissions: id-token: write`) and keep the role session longer than the deploy"
    )]
    CredentialsRejected { what: String, code: String },

    /// Still throttled after every retry.
    #[error(
        "{what} was throttled by SSM after {attempts} attempts; retry later, or raise the account's Parameter Store throughput"
    )]
    Throttled { what: String, attempts: u32 },

    /// SSM kept failing (5xx) after every retry.
    #[error("{what} failed with a server error (HTTP {status}) after {attempts} attempts; retry the deploy")]
    ServerError { what: String, status: u16, attempts: u32 },

    /// The operation (all its attempts) outlasted its deadline.
    #[error("{what} did not finish within {}s; check the network path to SSM (endpoint {endpoint})", .after.as_secs())]
    Timeout { what: String, after: Duration, endpoint: String },

    /// The request never reached SSM.
    #[error(
        "{what} could not reach SSM at {endpoint} ({detail}); check the region, the endpoint and the network"
    )]
    Unreachable { what: String, endpoint: String, detail: String },

    /// Any other error SSM answered with.
    #[error("{what} failed: {code}: {message}")]
    Service { what: String, code: String, message: String },

    /// Two parameters map to one environment variable.
    #[error(
        "ssm parameters {first} and {second} both map to the environment variable {name}; rename one, or list one under ssm-parameters with its own name"
    )]
    NameCollision { name: String, first: String, second: String },

    #[error("no AWS region: set the aws-region input or AWS_REGION")]
    RegionMissing,

    #[error("fetching secrets was cancelled")]
    Cancelled,
}

impl SecretsError {
    /// The same error, saying which input named the missing parameter.
    pub fn for_input(self, named_by: &'static str) -> Self {
        match self {
            SecretsError::ParametersMissing { names, region, .. } => {
                SecretsError::ParametersMissing { names, region, input: named_by }
            }
            e => e,
        }
    }

    /// Stable reason code for annotations, statuses and the summary.
    pub fn reason(&self) -> &'static str {
        match self {
            SecretsError::Other(_) => "secrets_failed",
            SecretsError::ParametersMissing { .. } => "ssm_parameters_missing",
            SecretsError::AccessDenied { .. } => "ssm_access_denied",
            SecretsError::KmsDecryptDenied { .. } => "kms_decrypt_denied",
            SecretsError::CredentialsMissing { .. } => "aws_credentials_missing",
            SecretsError::CredentialsRejected { .. } => "aws_credentials_invalid",
            SecretsError::Throttled { .. } => "ssm_throttled",
            SecretsError::ServerError { .. } => "ssm_server_error",
            SecretsError::Timeout { .. } => "ssm_timeout",
            SecretsError::Unreachable { .. } => "ssm_unreachable",
            SecretsError::Service { .. } => "ssm_request_failed",
            SecretsError::NameCollision { .. } => "ssm_name_collision",
            SecretsError::RegionMissing => "aws_region_missing",
            SecretsError::Cancelled => "cancelled",
        }
    }
}

/// What a failed call was doing, for the message.
pub(crate) struct CallContext<'a> {
    /// `ssm:GetParametersByPath`, ...
    pub action: &'static str,
    /// The path or names the call was about.
    pub resource: String,
    pub endpoint: &'a str,
    pub operation_timeout: Duration,
    pub max_attempts: u32,
}

impl CallContext<'_> {
    fn what(&self) -> String {
        format!("{} {}", self.action, self.resource)
    }
}

/// Codes AWS uses for credentials it does not accept.
const REJECTED_CREDENTIALS: &[&str] = &[
    "ExpiredTokenException",
    "ExpiredToken",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "IncompleteSignature",
    "SignatureDoesNotMatch",
];

/// Whether an `AccessDeniedException` came from KMS rather than IAM on SSM.
/// SSM passes KMS's refusal through: "The ciphertext refers to a customer
/// master key that does not exist, ... or you are not allowed to access.
/// (Service: AWSKMS; ...)" or "... is not authorized to perform: kms:Decrypt
/// ...".
pub(crate) fn is_kms_denial(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("awskms") || m.contains("kms:") || m.contains("ciphertext") || m.contains("kms key")
}

/// Classification of a failed SSM call before it becomes a [`SecretsError`]:
/// a KMS refusal needs more calls to name the parameter, so it is returned
/// apart.
pub(crate) enum Failure {
    KmsDenied,
    Error(SecretsError),
}

pub(crate) fn classify<E>(err: SdkError<E, HttpResponse>, ctx: &CallContext<'_>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let what = ctx.what();
    match &err {
        SdkError::TimeoutError(_) => {
            return Failure::Error(SecretsError::Timeout {
                what,
                after: ctx.operation_timeout,
                endpoint: ctx.endpoint.to_string(),
            });
        }
        SdkError::DispatchFailure(d) => {
            if let Some(detail) = credentials_problem(&err) {
                return Failure::Error(SecretsError::CredentialsMissing { what, detail });
            }
            if d.is_timeout() {
                return Failure::Error(SecretsError::Timeout {
                    what,
                    after: ctx.operation_timeout,
                    endpoint: ctx.endpoint.to_string(),
                });
            }
            return Failure::Error(SecretsError::Unreachable {
                what,
                endpoint: ctx.endpoint.to_string(),
                detail: chain(&err),
            });
        }
        SdkError::ConstructionFailure(_) => {
            let detail = credentials_problem(&err).unwrap_or_else(|| chain(&err));
            return Failure::Error(SecretsError::Other(format!("{what} could not be built: {detail}")));
        }
        _ => {}
    }
    let code = err.code().unwrap_or("").to_string();
    let message = err.message().unwrap_or("").to_string();
    let status = err.raw_response().map(|r| r.status().as_u16()).unwrap_or(0);
    if code == "AccessDeniedException" || code == "AccessDenied" {
        if is_kms_denial(&message) {
            return Failure::KmsDenied;
        }
        return Failure::Error(SecretsError::AccessDenied {
            action: ctx.action,
            resource: ctx.resource.clone(),
        });
    }
    if REJECTED_CREDENTIALS.contains(&code.as_str()) {
        return Failure::Error(SecretsError::CredentialsRejected { what, code });
    }
    if aws_runtime_throttling(&code) {
        return Failure::Error(SecretsError::Throttled { what, attempts: ctx.max_attempts });
    }
    if status >= 500 {
        return Failure::Error(SecretsError::ServerError { what, status, attempts: ctx.max_attempts });
    }
    let code = if code.is_empty() { format!("HTTP {status}") } else { code };
    let message = if message.is_empty() { "no message".to_string() } else { message };
    Failure::Error(SecretsError::Service { what, code, message })
}

fn aws_runtime_throttling(code: &str) -> bool {
    matches!(
        code,
        "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "RequestThrottledException"
            | "TooManyRequestsException"
    )
}

/// The credential provider's own words when credentials could not be
/// loaded, found by walking the error's sources.
fn credentials_problem(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    use aws_credential_types::provider::error::CredentialsError;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(c) = e.downcast_ref::<CredentialsError>() {
            let mut detail = c.to_string();
            if let Some(src) = std::error::Error::source(c) {
                detail = format!("{detail}: {src}");
            }
            return Some(detail);
        }
        cur = e.source();
    }
    None
}

/// The error and its sources on one line (connection errors, which hold
/// no values).
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kms_denials_are_told_apart_from_iam_denials() {
        assert!(is_kms_denial(
            "The ciphertext refers to a customer master key that does not exist, does not exist in this region, or you are not allowed to access. (Service: AWSKMS; Status Code: 400; Error Code: AccessDeniedException)"
        ));
        assert!(is_kms_denial(
            "User: arn:aws:iam::1:user/x is not authorized to perform: kms:Decrypt on resource: arn:aws:kms:us-east-1:1:key/k"
        ));
        assert!(!is_kms_denial(
            "User: arn:aws:iam::1:user/x is not authorized to perform: ssm:GetParametersByPath on resource: arn:aws:ssm:us-east-1:1:parameter/app"
        ));
    }

    #[test]
    fn messages_name_the_fix() {
        let e = SecretsError::KmsDecryptDenied { parameters: vec!["/app/key".into()] };
        assert!(e.to_string().contains("/app/key") && e.to_string().contains("kms:Decrypt"));
        let e = SecretsError::CredentialsMissing { what: "x".into(), detail: "none".into() };
        assert!(e.to_string().contains("id-token: write"));
        assert_eq!(e.reason(), "aws_credentials_missing");
    }
}
