//! What went wrong talking to GitHub, in words an operator can act on, and
//! how an answer that is not 2xx maps to it ([`classify`]).
//!
//! Messages are one lower-case sentence naming the operation and, when the
//! fix is known, the input or permission to change. They never carry the
//! token: nothing here sees a request's headers.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use http::HeaderMap;

/// Failures talking to the GitHub API.
#[derive(Debug, thiserror::Error)]
pub enum GithubError {
    #[error(
        "no github-token was given (it defaults to ${{{{ github.token }}}}); set it, or github-deployments: false"
    )]
    MissingToken,

    #[error("GITHUB_API_URL '{url}' cannot be used: {problem}")]
    ApiUrl { url: String, problem: String },

    /// 202: GitHub merged the default branch into the ref and created no
    /// deployment. We send `auto_merge: false`, so this means a proxy or an
    /// old GitHub Enterprise Server ignored it.
    #[error(
        "{what}: github merged the default branch into {git_ref} instead of creating a deployment ({message}); nothing was deployed, run the workflow again to deploy the merged commit"
    )]
    MergeHappened { what: String, git_ref: String, message: String },

    #[error(
        "{what}: github could not merge the default branch into {git_ref} ({message}); update the branch and run again"
    )]
    MergeConflict { what: String, git_ref: String, message: String },

    #[error(
        "{what}: commit status checks failed for {git_ref} ({contexts}); make them pass, or list only the contexts that must pass in the required-contexts input (an empty list skips the check)"
    )]
    StatusChecksFailed { what: String, git_ref: String, contexts: String },

    /// 422, naming the field GitHub rejected.
    #[error("{what}: github rejected {detail}")]
    Validation { what: String, detail: String },

    #[error(
        "{what}: the token is not allowed to do this ({message}); give the job `permissions: deployments: write`, or pass a github-token that has it"
    )]
    PermissionDenied { what: String, message: String },

    #[error("{what}: github rejected the token (401 {message}); check the github-token input")]
    BadCredentials { what: String, message: String },

    #[error("{what}: {hint}")]
    NotFound { what: String, hint: String },

    /// 5xx or no answer, after retrying within the budget.
    #[error("{what}: github did not answer successfully ({detail})")]
    Unavailable { what: String, detail: String },

    /// Rate limited, and the wait asked for does not fit in the budget.
    #[error("{what}: rate limited by github ({detail})")]
    RateLimited { what: String, detail: String },

    #[error(
        "environment {environment} is being deployed by another run ({run_url}, deployment {deployment_id}); {waited}; wait for that run, raise lock-timeout, or put the deploy jobs in one concurrency: group (if that run has ended, give the job `permissions: actions: read` so the action can see it)"
    )]
    LockedByOtherRun { environment: String, run_url: String, deployment_id: u64, waited: String },

    #[error("{what}: cancelled by the runner")]
    Cancelled { what: String },

    /// An answer this action does not expect (a status GitHub does not
    /// document for the call, a body that does not parse).
    #[error("{what}: unexpected answer from github ({detail})")]
    Unexpected { what: String, detail: String },

    #[error("{0}")]
    Other(String),
}

impl GithubError {
    /// Stable reason code for annotations, statuses and the job summary.
    pub fn reason(&self) -> &'static str {
        match self {
            GithubError::MissingToken | GithubError::BadCredentials { .. } => "github_bad_credentials",
            GithubError::ApiUrl { .. } => "github_invalid_api_url",
            GithubError::MergeHappened { .. } => "github_merge_happened",
            GithubError::MergeConflict { .. } => "github_merge_conflict",
            GithubError::StatusChecksFailed { .. } => "github_status_checks_failed",
            GithubError::Validation { .. } => "github_validation_failed",
            GithubError::PermissionDenied { .. } => "github_permission_denied",
            GithubError::NotFound { .. } => "github_not_found",
            GithubError::Unavailable { .. } => "github_unavailable",
            GithubError::RateLimited { .. } => "github_rate_limited",
            GithubError::LockedByOtherRun { .. } => "github_locked_by_other_run",
            GithubError::Cancelled { .. } => "cancelled",
            GithubError::Unexpected { .. } | GithubError::Other(_) => "github_api_failed",
        }
    }

    /// Worth asking again after a wait: GitHub was down or asked us to slow
    /// down. Everything else will get the same answer.
    pub fn is_retryable(&self) -> bool {
        matches!(self, GithubError::Unavailable { .. } | GithubError::RateLimited { .. })
    }
}

/// What a call was doing, for messages and for reading its failures.
#[derive(Debug, Clone)]
pub(crate) struct Op {
    /// "creating the deployment of main to production", ...
    pub what: String,
    /// `owner/repo`.
    pub repository: String,
    /// The ref being deployed, for create calls.
    pub git_ref: Option<String>,
    /// The deployment the call is about, if any.
    pub deployment: Option<u64>,
}

/// GitHub's error body: `message`, sometimes `errors` (objects or strings).
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    errors: Vec<Value>,
}

/// An answer, with its body read.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }

    /// The body as `T`; a body that does not parse is an unexpected answer.
    pub fn json<T: serde::de::DeserializeOwned>(&self, op: &Op) -> Result<T, GithubError> {
        serde_json::from_str(&self.body).map_err(|e| GithubError::Unexpected {
            what: op.what.clone(),
            detail: format!("{} with a body that does not parse: {e}", self.status),
        })
    }
}

/// Maps an answer that is not 2xx to the error it means.
pub(crate) fn classify(op: &Op, reply: &Reply) -> GithubError {
    let body: ErrorBody = serde_json::from_str(&reply.body).unwrap_or_default();
    let message = body.message.clone().unwrap_or_else(|| short(&reply.body));
    let what = op.what.clone();
    let git_ref = op.git_ref.clone().unwrap_or_default();
    let lower = message.to_lowercase();
    match reply.status {
        401 => GithubError::BadCredentials { what, message },
        403 | 429 if reply.status == 429 || lower.contains("rate limit") || is_exhausted(reply) => {
            GithubError::RateLimited { what, detail: format!("{} {message}", reply.status) }
        }
        403 => GithubError::PermissionDenied { what, message },
        404 => {
            let hint = match op.deployment {
                Some(id) => format!(
                    "repository {} or deployment {id} not found (404); check GITHUB_REPOSITORY, the deployment-id input, and that the token can read the repository",
                    op.repository
                ),
                None => format!(
                    "repository {} not found (404); check GITHUB_REPOSITORY and that the token can read the repository",
                    op.repository
                ),
            };
            GithubError::NotFound { what, hint }
        }
        409 if lower.contains("status check") || has_contexts(&body) => {
            GithubError::StatusChecksFailed { what, git_ref, contexts: contexts(&body) }
        }
        409 => GithubError::MergeConflict { what, git_ref, message },
        422 => GithubError::Validation { what, detail: validation_detail(&body, &message) },
        500..=599 => GithubError::Unavailable { what, detail: format!("{} {message}", reply.status) },
        status => GithubError::Unexpected { what, detail: format!("{status} {message}") },
    }
}

/// `x-ratelimit-remaining: 0`: the primary rate limit is spent.
fn is_exhausted(reply: &Reply) -> bool {
    reply.header("x-ratelimit-remaining").is_some_and(|v| v.trim() == "0")
}

fn has_contexts(body: &ErrorBody) -> bool {
    body.errors.iter().any(|e| e.get("contexts").is_some())
}

/// `ci/test: failure, lint: pending` from `errors[].contexts`.
fn contexts(body: &ErrorBody) -> String {
    let list: Vec<String> = body
        .errors
        .iter()
        .filter_map(|e| e.get("contexts")?.as_array())
        .flatten()
        .map(|c| {
            let name = c.get("context").and_then(Value::as_str).unwrap_or("?");
            match c.get("state").and_then(Value::as_str) {
                Some(state) => format!("{name}: {state}"),
                None => name.to_string(),
            }
        })
        .collect();
    if list.is_empty() { "no context named".to_string() } else { list.join(", ") }
}

/// "field 'environment': ..." for each entry of `errors[]`, else the message.
fn validation_detail(body: &ErrorBody, message: &str) -> String {
    let parts: Vec<String> = body
        .errors
        .iter()
        .map(|e| match e {
            Value::String(s) => s.clone(),
            _ => {
                let text = e
                    .get("message")
                    .and_then(Value::as_str)
                    .or_else(|| e.get("code").and_then(Value::as_str))
                    .unwrap_or("invalid");
                match e.get("field").and_then(Value::as_str) {
                    Some(field) => format!("field '{field}': {text}"),
                    None => text.to_string(),
                }
            }
        })
        .collect();
    if !parts.is_empty() {
        return parts.join("; ");
    }
    if message.starts_with("No ref found") || message.starts_with("No commit found") {
        return format!("field 'ref': {message} (check the ref input; it defaults to GITHUB_SHA)");
    }
    message.to_string()
}

/// A body that is not GitHub's JSON (a proxy's HTML page): its start only.
fn short(body: &str) -> String {
    let text = body.trim();
    if text.is_empty() {
        return "no message".to_string();
    }
    let cut: String = text.chars().take(120).collect();
    if cut.len() < text.len() { format!("{cut}…") } else { cut }
}

/// Seconds, for messages.
pub(crate) fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64().ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op() -> Op {
        Op {
            what: "creating the deployment".into(),
            repository: "octo/app".into(),
            git_ref: Some("main".into()),
            deployment: None,
        }
    }

    fn reply(status: u16, body: &str) -> Reply {
        Reply { status, headers: http::HeaderMap::new(), body: body.into() }
    }

    #[test]
    fn status_checks_name_the_input_and_the_contexts() {
        let e = classify(
            &op(),
            &reply(
                409,
                r#"{"message":"Conflict: Commit status checks failed for main.","errors":[{"contexts":[{"context":"ci/test","state":"failure"}],"field":"required_contexts"}]}"#,
            ),
        );
        assert_eq!(e.reason(), "github_status_checks_failed");
        let m = e.to_string();
        assert!(m.contains("required-contexts") && m.contains("ci/test: failure"), "{m}");
    }

    #[test]
    fn validation_names_the_field() {
        let e = classify(
            &op(),
            &reply(
                422,
                r#"{"message":"Validation Failed","errors":[{"resource":"Deployment","code":"custom","field":"environment","message":"bad name"}]}"#,
            ),
        );
        assert_eq!(e.to_string(), "creating the deployment: github rejected field 'environment': bad name");
        let e = classify(&op(), &reply(422, r#"{"message":"No ref found for: gone"}"#));
        assert!(e.to_string().contains("field 'ref'"), "{e}");
    }

    #[test]
    fn forbidden_is_permissions_unless_it_is_a_rate_limit() {
        let e = classify(&op(), &reply(403, r#"{"message":"Resource not accessible by integration"}"#));
        assert_eq!(e.reason(), "github_permission_denied");
        assert!(e.to_string().contains("permissions: deployments: write"));
        let e = classify(&op(), &reply(403, r#"{"message":"You have exceeded a secondary rate limit."}"#));
        assert!(e.is_retryable());
        let mut r = reply(403, r#"{"message":"API rate limit exceeded"}"#);
        r.headers.insert("x-ratelimit-remaining", "0".parse().unwrap());
        assert_eq!(classify(&op(), &r).reason(), "github_rate_limited");
    }

    #[test]
    fn other_answers() {
        assert_eq!(
            classify(&op(), &reply(401, r#"{"message":"Bad credentials"}"#)).reason(),
            "github_bad_credentials"
        );
        assert_eq!(
            classify(&op(), &reply(409, r#"{"message":"Conflict merging main into x."}"#)).reason(),
            "github_merge_conflict"
        );
        let e = classify(&op(), &reply(404, r#"{"message":"Not Found"}"#));
        assert!(e.to_string().contains("repository octo/app not found"), "{e}");
        let e = classify(&op(), &reply(502, "<html>bad gateway</html>"));
        assert!(e.is_retryable() && e.to_string().contains("502 <html>"), "{e}");
        assert!(GithubError::MissingToken.to_string().contains("${{ github.token }}"));
    }
}
