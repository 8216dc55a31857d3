//! Request and response bodies, as GitHub's REST API description spells
//! them (`repos/create-deployment`, `repos/create-deployment-status`). Our
//! own structs rather than octocrab's models: its builders do not expose
//! `auto_merge`, `required_contexts` or `production_environment`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `POST /repos/{owner}/{repo}/deployments`.
#[derive(Debug, Serialize)]
pub(crate) struct NewDeployment<'a> {
    #[serde(rename = "ref")]
    pub git_ref: &'a str,
    pub task: &'a str,
    /// Always sent, always false: the API default merges the default branch
    /// into the ref being deployed.
    pub auto_merge: bool,
    /// Omitted: GitHub checks every status context of the commit. Empty:
    /// no check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_contexts: Option<&'a [String]>,
    pub environment: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub production_environment: Option<bool>,
    pub transient_environment: bool,
    pub description: &'a str,
    pub payload: Value,
}

/// `POST /repos/{owner}/{repo}/deployments/{id}/statuses`.
#[derive(Debug, Serialize)]
pub(crate) struct NewStatus<'a> {
    pub state: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment_url: Option<&'a str>,
    pub description: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_inactive: Option<bool>,
}

/// The parts of a deployment we read.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Deployment {
    pub id: u64,
    pub url: String,
    #[serde(default)]
    pub environment: Option<String>,
    #[serde(default)]
    pub payload: Value,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub production_environment: Option<bool>,
    #[serde(default)]
    pub transient_environment: Option<bool>,
}

impl Deployment {
    /// The payload as an object. GitHub returns what was sent; a string
    /// holding JSON (older clients send that) is read as JSON.
    fn payload_field(&self, key: &str) -> Option<String> {
        let field = |v: &Value| v.get(key).and_then(Value::as_str).map(str::to_string);
        match &self.payload {
            Value::String(s) => serde_json::from_str::<Value>(s).ok().as_ref().and_then(field),
            other => field(other),
        }
        .filter(|s| !s.is_empty())
    }

    /// `payload.image`: what this deployment shipped.
    pub fn image(&self) -> Option<String> {
        self.payload_field("image")
    }

    /// `payload.run_url`: the run that made it.
    pub fn run_url(&self) -> Option<String> {
        self.payload_field("run_url")
    }
}

/// The parts of a deployment status we read.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Status {
    pub state: String,
    pub created_at: DateTime<Utc>,
}
