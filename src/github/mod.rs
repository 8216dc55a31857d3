//! GitHub Deployments: the record of every deploy (see issue 4).

/// Failures talking to the GitHub API.
#[derive(Debug, thiserror::Error)]
pub enum GithubError {
    #[error("{0}")]
    Other(String),
}

impl GithubError {
    pub fn reason(&self) -> &'static str {
        "github_api_failed"
    }
}
