//! [`Ssm`]: one SSM client per run, shared by the app's environment
//! ([`Ssm::fetch`]) and the single named secrets (SSH key, known_hosts,
//! registry password: [`Ssm::get`]).
//!
//! Retries are the SDK's standard mode (jittered exponential backoff; it
//! retries throttling, 5xx and timed-out attempts, never `AccessDenied`),
//! bounded by an attempt timeout and an operation timeout, which the SDK
//! leaves unset by default.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ssm::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ssm::types::{Parameter, ParameterStringFilter};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use futures::{StreamExt as _, TryStreamExt as _};
use tokio_util::sync::CancellationToken;

use super::SsmSpec;
use super::error::{CallContext, Failure, classify, is_kms_denial};
use super::set::{SecretSet, env_name, stamp};
use super::{SecretValue, SecretsError};
use crate::runner::Runner;

/// `GetParameters` takes at most this many names.
const CHUNK: usize = 10;
/// `GetParametersByPath` returns at most this many per page.
const PAGE: i32 = 10;
/// A path with more pages than this is treated as a server bug, not looped.
const MAX_PAGES: usize = 10_000;
/// How many SecureStrings we try one by one to name the one KMS refuses.
const MAX_PROBES: usize = 50;

/// Tuning for [`Ssm`]. The defaults suit a deploy: a throttled or flaky
/// call is retried for a while, a hung one is abandoned after
/// `attempt_timeout`, and no call outlives `operation_timeout`.
#[derive(Debug, Clone)]
pub struct SsmOptions {
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// Base of the jittered exponential backoff.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub connect_timeout: Duration,
    /// One HTTP attempt.
    pub attempt_timeout: Duration,
    /// One call, all attempts and backoff included.
    pub operation_timeout: Duration,
    /// Paths and chunks in flight at once.
    pub concurrency: usize,
    /// Connect and read timeout for the instance metadata service, which
    /// the credential chain tries last: off EC2 it must fail fast.
    pub imds_timeout: Duration,
}

impl Default for SsmOptions {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            attempt_timeout: Duration::from_secs(10),
            operation_timeout: Duration::from_secs(60),
            concurrency: 8,
            imds_timeout: Duration::from_secs(1),
        }
    }
}

/// The run's AWS configuration for `region`: the SDK's default credential
/// chain (environment keys, as aws-actions/configure-aws-credentials exports
/// them; web identity; shared config; then IMDS, which off EC2 must fail
/// within `imds_timeout`), and the endpoint settings of the environment
/// (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_<SERVICE>`). Every AWS client of
/// the run starts from this.
pub async fn sdk_config(region: &str, imds_timeout: Duration) -> SdkConfig {
    let region = Region::new(region.to_string());
    let imds = aws_config::imds::Client::builder()
        .connect_timeout(imds_timeout)
        .read_timeout(imds_timeout)
        .max_attempts(1)
        .build();
    let credentials =
        DefaultCredentialsChain::builder().region(region.clone()).imds_client(imds).build().await;
    aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .credentials_provider(credentials)
        .load()
        .await
}

/// A parameter as it arrived; its value is already masked.
struct Fetched {
    name: String,
    value: SecretValue,
    /// Version and last-modified date (see [`stamp`]).
    stamp: String,
}

/// What one unit of concurrent work brought back.
enum JobOutput<'a> {
    Path { prefix: &'a str, parameters: Vec<Fetched> },
    Names { found: HashMap<String, (SecretValue, String)>, missing: Vec<String> },
}

/// One SSM client for the run. Cheap to clone.
#[derive(Clone)]
pub struct Ssm {
    client: aws_sdk_ssm::Client,
    region: String,
    /// The endpoint set by `AWS_ENDPOINT_URL(_SSM)` or the profile, if any.
    endpoint_url: Option<String>,
    options: SsmOptions,
    endpoint_logged: Arc<AtomicBool>,
}

impl Ssm {
    /// A client for `region` with the SDK's default credential chain:
    /// environment keys (what aws-actions/configure-aws-credentials
    /// exports), web identity, shared config, then IMDS with a short timeout.
    pub async fn new(region: &str) -> Self {
        Self::with_options(region, SsmOptions::default()).await
    }

    pub async fn with_options(region: &str, options: SsmOptions) -> Self {
        Self::from_sdk_config(&sdk_config(region, options.imds_timeout).await, options)
    }

    /// A client from an already loaded configuration (tests point it at a
    /// local server with fixed credentials). Retry and timeouts come from
    /// `options`, whatever `sdk` says.
    pub fn from_sdk_config(sdk: &SdkConfig, options: SsmOptions) -> Self {
        let retry = RetryConfig::standard()
            .with_max_attempts(options.max_attempts.max(1))
            .with_initial_backoff(options.initial_backoff)
            .with_max_backoff(options.max_backoff);
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(options.connect_timeout)
            .operation_attempt_timeout(options.attempt_timeout)
            .operation_timeout(options.operation_timeout)
            .build();
        let config =
            aws_sdk_ssm::config::Builder::from(sdk).retry_config(retry).timeout_config(timeouts).build();
        Self {
            client: aws_sdk_ssm::Client::from_conf(config),
            region: sdk.region().map(|r| r.to_string()).unwrap_or_default(),
            endpoint_url: configured_endpoint(sdk),
            options,
            endpoint_logged: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The endpoint set through `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_SSM`
    /// (or the shared config), if any.
    pub fn endpoint_url(&self) -> Option<&str> {
        self.endpoint_url.as_deref()
    }

    /// Fetches everything `spec` names: each path recursively (every page),
    /// the explicit pairs in chunks of ten, concurrently up to
    /// [`SsmOptions::concurrency`]. Each value is registered with the runner
    /// the moment it arrives.
    ///
    /// # Errors
    ///
    /// Every missing explicit name at once ([`SecretsError::ParametersMissing`]),
    /// two parameters with one name ([`SecretsError::NameCollision`]), the
    /// first failed call otherwise, or [`SecretsError::Cancelled`].
    pub async fn fetch(
        &self,
        spec: &SsmSpec,
        runner: &Runner,
        cancel: &CancellationToken,
    ) -> Result<SecretSet, SecretsError> {
        self.log_endpoint(runner);
        let mut names: Vec<&str> = spec.parameters.iter().map(|(_, n)| n.as_str()).collect();
        names.sort_unstable();
        names.dedup();

        enum Job<'a> {
            Path(&'a str),
            Names(&'a [&'a str]),
        }
        let jobs: Vec<Job<'_>> =
            spec.paths.iter().map(|p| Job::Path(p)).chain(names.chunks(CHUNK).map(Job::Names)).collect();
        let work = futures::stream::iter(jobs.into_iter().enumerate())
            .map(|(i, job)| async move {
                let out = match job {
                    Job::Path(prefix) => self
                        .path(prefix, runner)
                        .await
                        .map(|parameters| JobOutput::Path { prefix, parameters }),
                    Job::Names(chunk) => self
                        .names(chunk, runner)
                        .await
                        .map(|(found, missing)| JobOutput::Names { found, missing }),
                };
                out.map(|o| (i, o))
            })
            .buffer_unordered(self.options.concurrency.max(1))
            .try_collect::<Vec<_>>();
        let mut outputs = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(SecretsError::Cancelled),
            r = work => r?,
        };
        // Job order, so the first of two colliding parameters is stable.
        outputs.sort_by_key(|(i, _)| *i);

        let mut set = SecretSet::new();
        let mut found_by_name = HashMap::new();
        let mut missing = Vec::new();
        for (_, out) in outputs {
            match out {
                JobOutput::Path { prefix, parameters } => {
                    for p in parameters {
                        set.insert(env_name(prefix, &p.name), p.name, p.value, p.stamp)?;
                    }
                }
                JobOutput::Names { found, missing: m } => {
                    found_by_name.extend(found);
                    missing.extend(m);
                }
            }
        }
        if !missing.is_empty() {
            missing.sort();
            return Err(SecretsError::ParametersMissing {
                names: missing,
                region: self.region.clone(),
                input: "ssm-parameters",
            });
        }
        for (env, name) in &spec.parameters {
            if let Some((value, stamp)) = found_by_name.get(name) {
                set.insert(env.clone(), name.clone(), value.clone(), stamp.clone())?;
            }
        }
        tracing::info!(variables = set.len(), paths = spec.paths.len(), "fetched secrets from ssm");
        Ok(set)
    }

    /// One named parameter (an SSH key, known_hosts, a registry password),
    /// decrypted and registered with the runner before it is returned.
    ///
    /// # Errors
    ///
    /// [`SecretsError::ParametersMissing`] when it does not exist,
    /// [`SecretsError::KmsDecryptDenied`], or the call's failure.
    pub async fn get(&self, name: &str, runner: &Runner) -> Result<SecretValue, SecretsError> {
        self.log_endpoint(runner);
        let res = self.client.get_parameter().name(name).with_decryption(true).send().await;
        let out = match res {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_parameter_not_found()) => {
                return Err(SecretsError::ParametersMissing {
                    names: vec![name.to_string()],
                    region: self.region.clone(),
                    input: "(a parameter name)",
                });
            }
            Err(e) => {
                return Err(match classify(e, &self.ctx("ssm:GetParameter", name.to_string())) {
                    Failure::KmsDenied => {
                        SecretsError::KmsDecryptDenied { parameters: vec![name.to_string()] }
                    }
                    Failure::Error(e) => e,
                });
            }
        };
        let value = out.parameter().and_then(Parameter::value).unwrap_or_default();
        runner.add_secret(value);
        Ok(SecretValue::new(value.to_string()))
    }

    /// Every parameter below `prefix`, following `NextToken` until it is
    /// absent: a page may be empty and still carry a token.
    async fn path(&self, prefix: &str, runner: &Runner) -> Result<Vec<Fetched>, SecretsError> {
        let mut fetched = Vec::new();
        let mut token: Option<String> = None;
        for page in 1..=MAX_PAGES {
            let res = self
                .client
                .get_parameters_by_path()
                .path(prefix)
                .recursive(true)
                .with_decryption(true)
                .max_results(PAGE)
                .set_next_token(token.take())
                .send()
                .await;
            let out = match res {
                Ok(out) => out,
                Err(e) => {
                    return Err(
                        match classify(e, &self.ctx("ssm:GetParametersByPath", prefix.to_string())) {
                            Failure::KmsDenied => {
                                let names = self.kms_denied_under(prefix, runner).await;
                                SecretsError::KmsDecryptDenied { parameters: or_path(names, prefix) }
                            }
                            Failure::Error(e) => e,
                        },
                    );
                }
            };
            fetched.extend(arrived(out.parameters(), runner));
            match out.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => {
                    tracing::debug!(
                        path = prefix,
                        pages = page,
                        parameters = fetched.len(),
                        "ssm path fetched"
                    );
                    return Ok(fetched);
                }
            }
        }
        Err(SecretsError::Other(format!(
            "ssm:GetParametersByPath {prefix} returned more than {MAX_PAGES} pages; is the endpoint really SSM?"
        )))
    }

    /// Up to ten names with one `GetParameters`: the values found, and the
    /// names SSM listed as invalid.
    async fn names(
        &self,
        names: &[&str],
        runner: &Runner,
    ) -> Result<(HashMap<String, (SecretValue, String)>, Vec<String>), SecretsError> {
        let res = self
            .client
            .get_parameters()
            .set_names(Some(names.iter().map(|n| n.to_string()).collect()))
            .with_decryption(true)
            .send()
            .await;
        let out = match res {
            Ok(out) => out,
            Err(e) => {
                return Err(match classify(e, &self.ctx("ssm:GetParameters", names.join(", "))) {
                    Failure::KmsDenied => {
                        let denied = self
                            .kms_denied_among(names.iter().map(|n| n.to_string()).collect(), runner)
                            .await;
                        SecretsError::KmsDecryptDenied {
                            parameters: if denied.is_empty() { vec![names.join(", ")] } else { denied },
                        }
                    }
                    Failure::Error(e) => e,
                });
            }
        };
        let found =
            arrived(out.parameters(), runner).into_iter().map(|f| (f.name, (f.value, f.stamp))).collect();
        Ok((found, out.invalid_parameters().to_vec()))
    }

    /// The SecureStrings under `prefix` that KMS will not decrypt for us.
    /// Names come from `DescribeParameters` (metadata, never values); if
    /// that is not allowed either, the path alone is reported.
    async fn kms_denied_under(&self, prefix: &str, runner: &Runner) -> Vec<String> {
        let path = if prefix.len() > 1 { prefix.trim_end_matches('/') } else { prefix };
        let filters = [
            ParameterStringFilter::builder().key("Path").option("Recursive").values(path).build(),
            ParameterStringFilter::builder().key("Type").option("Equals").values("SecureString").build(),
        ];
        let Ok(filters) = filters.into_iter().collect::<Result<Vec<_>, _>>() else { return Vec::new() };
        let mut names = Vec::new();
        let mut token = None;
        while names.len() < MAX_PROBES {
            let res = self
                .client
                .describe_parameters()
                .set_parameter_filters(Some(filters.clone()))
                .max_results(50)
                .set_next_token(token.take())
                .send()
                .await;
            let Ok(out) = res else { return Vec::new() };
            names.extend(out.parameters().iter().filter_map(|p| p.name().map(String::from)));
            match out.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        names.truncate(MAX_PROBES);
        self.kms_denied_among(names, runner).await
    }

    /// Reads each name alone to find the ones KMS refuses. Values that do
    /// arrive are masked like any other.
    async fn kms_denied_among(&self, names: Vec<String>, runner: &Runner) -> Vec<String> {
        let mut denied: Vec<String> = futures::stream::iter(names.into_iter().take(MAX_PROBES))
            .map(|name| async move {
                match self.client.get_parameter().name(&name).with_decryption(true).send().await {
                    Ok(out) => {
                        if let Some(v) = out.parameter().and_then(Parameter::value) {
                            runner.add_secret(v);
                        }
                        None
                    }
                    Err(e) if is_kms_error(&e) => Some(name),
                    Err(_) => None,
                }
            })
            .buffer_unordered(self.options.concurrency.max(1))
            .filter_map(|n| async move { n })
            .collect()
            .await;
        denied.sort();
        denied
    }

    fn ctx(&self, action: &'static str, resource: String) -> CallContext<'_> {
        CallContext {
            action,
            resource,
            endpoint: self.endpoint_url.as_deref().unwrap_or("the regional SSM endpoint"),
            operation_timeout: self.options.operation_timeout,
            max_attempts: self.options.max_attempts,
        }
    }

    /// Says once per client where requests go when the endpoint is not
    /// AWS's own: a deploy that reads secrets from a look-alike should not
    /// do so silently.
    fn log_endpoint(&self, runner: &Runner) {
        if let Some(url) = &self.endpoint_url
            && !self.endpoint_logged.swap(true, Ordering::Relaxed)
        {
            runner.line(&format!(
                "SSM endpoint: {url} (set by AWS_ENDPOINT_URL_SSM, AWS_ENDPOINT_URL or the AWS config)"
            ));
            tracing::info!(endpoint = %url, "ssm endpoint overridden");
        }
    }
}

/// Masks each value the moment its page arrives and keeps it.
fn arrived(parameters: &[Parameter], runner: &Runner) -> Vec<Fetched> {
    parameters
        .iter()
        .filter_map(|p| {
            let (name, value) = (p.name()?, p.value()?);
            runner.add_secret(value);
            Some(Fetched {
                name: name.to_string(),
                value: SecretValue::new(value.to_string()),
                stamp: stamp(p.version(), p.last_modified_date()),
            })
        })
        .collect()
}

fn or_path(names: Vec<String>, prefix: &str) -> Vec<String> {
    if names.is_empty() { vec![format!("under {prefix}")] } else { names }
}

fn is_kms_error<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
    matches!(e.code(), Some("AccessDeniedException" | "AccessDenied"))
        && e.message().is_some_and(is_kms_denial)
}

/// The endpoint the SSM client will use if one is configured, found the way
/// the SDK finds it: set in code, else `AWS_ENDPOINT_URL_SSM` / the profile's
/// `ssm.endpoint_url`, else `AWS_ENDPOINT_URL`.
fn configured_endpoint(sdk: &SdkConfig) -> Option<String> {
    if sdk.get_origin("endpoint_url").is_client_config() {
        return sdk.endpoint_url().map(String::from);
    }
    let key = aws_types::service_config::ServiceConfigKey::builder()
        .service_id("SSM")
        .env("AWS_ENDPOINT_URL")
        .profile("endpoint_url")
        .build()
        .ok()?;
    sdk.service_config().and_then(|c| c.load_config(key)).or_else(|| sdk.endpoint_url().map(String::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_set_in_config_is_the_one_reported() {
        let sdk = SdkConfig::builder().endpoint_url("http://127.0.0.1:5055").build();
        assert_eq!(configured_endpoint(&sdk).as_deref(), Some("http://127.0.0.1:5055"));
        assert_eq!(configured_endpoint(&SdkConfig::builder().build()), None);
    }

    #[tokio::test]
    async fn an_empty_spec_needs_no_aws() {
        let runner = Runner::new(Box::new(std::io::sink()), crate::redact::Redactor::new(), None, None);
        let set =
            crate::secrets::fetch(&SsmSpec::default(), &runner, &CancellationToken::new()).await.unwrap();
        assert!(set.is_empty());
    }
}
