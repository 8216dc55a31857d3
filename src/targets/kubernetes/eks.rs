//! `eks-cluster`: reaching an EKS cluster with no `aws` binary (a
//! container action has none, so a kubeconfig whose exec plugin runs `aws
//! eks get-token` fails with `executable aws not found`).
//!
//! The endpoint and CA come from the EKS API (`DescribeCluster`, the same
//! credential chain as SSM). The bearer token is what `aws eks get-token`
//! and aws-iam-authenticator make: `k8s-aws-v1.` and the base64url of a
//! presigned STS `GetCallerIdentity` URL whose signature covers the header
//! `x-k8s-aws-id: <cluster>`. The cluster's authenticator accepts a token
//! for 15 minutes from its signing time; the client renews it every
//! [`RENEW_EVERY`], so long rollouts keep their access.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign};
use aws_sigv4::sign::v4;
use base64::Engine;
use http::HeaderValue;
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::error::KubeError;
use crate::inputs::EksSpec;

/// What the token's signature binds the cluster name to.
pub const CLUSTER_ID_HEADER: &str = "x-k8s-aws-id";
/// The authenticator accepts a token for 15 minutes after it was signed.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Renewed well before that.
pub const RENEW_EVERY: Duration = Duration::from_secs(10 * 60);

/// The token for `cluster`, signed at `time` with `credentials` for the
/// regional STS endpoint of `region`.
///
/// # Errors
/// The signer's refusal (an unusable region or credentials).
pub fn token(
    credentials: &aws_credential_types::Credentials,
    cluster: &str,
    region: &str,
    time: SystemTime,
) -> Result<String, String> {
    let url = format!("https://sts.{region}.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15");
    let identity = credentials.clone().into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(Duration::from_secs(60));
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let request = SignableRequest::new(
        "GET",
        &url,
        std::iter::once((CLUSTER_ID_HEADER, cluster)),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(request, &params).map_err(|e| e.to_string())?.into_parts();
    let mut signed = url::Url::parse(&url).map_err(|e| e.to_string())?;
    {
        let mut q = signed.query_pairs_mut();
        for (k, v) in instructions.params() {
            q.append_pair(k, v);
        }
    }
    Ok(format!("k8s-aws-v1.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signed.as_str())))
}

/// The cluster's endpoint and CA, and a kube configuration (without
/// credentials: [`Renewing`] adds the token to every request).
///
/// # Errors
/// The EKS API's refusal or a cluster that is not `ACTIVE`.
pub async fn config(spec: &EksSpec, sdk: &aws_config::SdkConfig) -> Result<kube::Config, KubeError> {
    let eks = aws_sdk_eks::Client::new(sdk);
    let described = eks.describe_cluster().name(&spec.cluster).send().await.map_err(|e| {
        use aws_sdk_eks::error::ProvideErrorMetadata;
        let code = e.code().unwrap_or("error").to_string();
        let msg = e
            .message()
            .map(String::from)
            .unwrap_or_else(|| aws_sdk_eks::error::DisplayErrorContext(&e).to_string());
        KubeError::Config(format!(
            "EKS DescribeCluster {} in {}: {code}: {msg} (the AWS identity needs eks:DescribeCluster on it)",
            spec.cluster, spec.region
        ))
    })?;
    let cluster = described
        .cluster
        .ok_or_else(|| KubeError::Config(format!("EKS cluster {} was not described", spec.cluster)))?;
    let status = cluster.status.as_ref().map(|s| s.as_str().to_string()).unwrap_or_default();
    if status != "ACTIVE" {
        return Err(KubeError::Config(format!(
            "EKS cluster {} is {status}, not ACTIVE: its API cannot be reached now",
            spec.cluster
        )));
    }
    let endpoint = cluster
        .endpoint
        .ok_or_else(|| KubeError::Config(format!("EKS cluster {} has no endpoint yet", spec.cluster)))?;
    let ca = cluster.certificate_authority.and_then(|c| c.data).ok_or_else(|| {
        KubeError::Config(format!("EKS cluster {} has no certificate authority", spec.cluster))
    })?;
    // The kubeconfig `aws eks update-kubeconfig` writes, kept in memory
    // (the token is added to each request by [`Renewing`]).
    let kc: Kubeconfig = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": spec.cluster, "cluster": {"server": endpoint, "certificate-authority-data": ca}}],
        "users": [{"name": "eks", "user": {}}],
        "contexts": [{"name": spec.cluster, "context": {"cluster": spec.cluster, "user": "eks"}}],
        "current-context": spec.cluster,
    }))
    .map_err(|e| KubeError::Config(format!("EKS cluster {}: {e}", spec.cluster)))?;
    kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| KubeError::Config(format!("EKS cluster {} ({endpoint}): {e}", spec.cluster)))
}

/// The current `Authorization` value, renewed in the background.
#[derive(Clone)]
pub struct Renewing {
    current: Arc<RwLock<HeaderValue>>,
}

impl Renewing {
    /// Signs the first token now and renews it every [`RENEW_EVERY`] (a
    /// failed renewal is retried every 30 s; the old token stays in use
    /// until it expires).
    ///
    /// # Errors
    /// No credentials, or the first token cannot be signed.
    pub async fn start(spec: &EksSpec, sdk: &aws_config::SdkConfig) -> Result<Self, KubeError> {
        let provider = sdk.credentials_provider().ok_or_else(|| {
            KubeError::Config("eks-cluster: no AWS credentials (configure them, e.g. with aws-actions/configure-aws-credentials and OIDC)".into())
        })?;
        let (cluster, region) = (spec.cluster.clone(), spec.region.clone());
        let sign_now = move || {
            let (provider, cluster, region) = (provider.clone(), cluster.clone(), region.clone());
            async move {
                let creds = provider
                    .provide_credentials()
                    .await
                    .map_err(|e| format!("no AWS credentials for the EKS token: {e}"))?;
                bearer(&token(&creds, &cluster, &region, SystemTime::now())?)
            }
        };
        let first = sign_now().await.map_err(KubeError::Config)?;
        let me = Self { current: Arc::new(RwLock::new(first)) };
        let current = Arc::downgrade(&me.current);
        tokio::spawn(async move {
            let mut wait = RENEW_EVERY;
            loop {
                tokio::time::sleep(wait).await;
                let Some(slot) = current.upgrade() else { return };
                match sign_now().await {
                    Ok(v) => {
                        *slot.write().unwrap_or_else(|p| p.into_inner()) = v;
                        tracing::debug!("EKS token renewed");
                        wait = RENEW_EVERY;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "EKS token not renewed; retrying in 30s");
                        wait = Duration::from_secs(30);
                    }
                }
            }
        });
        Ok(me)
    }

    pub fn value(&self) -> HeaderValue {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The client layer that sets the header on every request.
    pub fn layer<B>(
        &self,
    ) -> tower::util::MapRequestLayer<impl FnMut(http::Request<B>) -> http::Request<B> + Clone + use<B>> {
        let me = self.clone();
        tower::util::MapRequestLayer::new(move |mut r: http::Request<B>| {
            r.headers_mut().insert(http::header::AUTHORIZATION, me.value());
            r
        })
    }
}

fn bearer(token: &str) -> Result<HeaderValue, String> {
    let mut v = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| e.to_string())?;
    v.set_sensitive(true);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(token: &str) -> url::Url {
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.strip_prefix("k8s-aws-v1.").expect("prefix"))
            .unwrap();
        url::Url::parse(std::str::from_utf8(&b).unwrap()).unwrap()
    }

    #[test]
    fn the_token_is_a_presigned_get_caller_identity_binding_the_cluster() {
        let creds = aws_credential_types::Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let t = token(&creds, "prod", "eu-west-1", at).unwrap();
        assert!(!t.contains('=') && !t.contains('+') && !t.contains('/'), "base64url without padding: {t}");
        let url = decode(&t);
        assert_eq!(url.host_str(), Some("sts.eu-west-1.amazonaws.com"));
        let q: std::collections::BTreeMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["Action"], "GetCallerIdentity");
        assert_eq!(q["Version"], "2011-06-15");
        assert_eq!(q["X-Amz-Algorithm"], "AWS4-HMAC-SHA256");
        assert_eq!(q["X-Amz-Credential"], "AKIDEXAMPLE/20231114/eu-west-1/sts/aws4_request");
        assert_eq!(q["X-Amz-Date"], "20231114T221320Z");
        assert_eq!(q["X-Amz-Expires"], "60");
        assert_eq!(q["X-Amz-SignedHeaders"], "host;x-k8s-aws-id");
        assert_eq!(q["X-Amz-Signature"].len(), 64);
        // The signature binds the cluster: another name, another token.
        let other = decode(&token(&creds, "staging", "eu-west-1", at).unwrap());
        let sig =
            |u: &url::Url| u.query_pairs().find(|(k, _)| k == "X-Amz-Signature").unwrap().1.into_owned();
        assert_ne!(sig(&url), sig(&other));
        // Deterministic for the same inputs (no hidden randomness).
        assert_eq!(t, token(&creds, "prod", "eu-west-1", at).unwrap());
    }

    #[test]
    fn a_session_token_is_signed_in() {
        let creds =
            aws_credential_types::Credentials::new("ASIA1", "secret", Some("sess".into()), None, "test");
        let url = decode(&token(&creds, "prod", "us-east-1", SystemTime::now()).unwrap());
        assert!(url.query_pairs().any(|(k, v)| k == "X-Amz-Security-Token" && v == "sess"), "{url}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_token_is_renewed_before_it_expires() {
        let sdk = aws_config::SdkConfig::builder()
            .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(
                aws_credential_types::Credentials::new("AKID", "secret", None, None, "test"),
            ))
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let spec = EksSpec { cluster: "c".into(), region: "us-east-1".into() };
        let r = Renewing::start(&spec, &sdk).await.unwrap();
        let first = r.value();
        assert!(first.is_sensitive());
        tokio::time::sleep(RENEW_EVERY - Duration::from_secs(5)).await;
        assert_eq!(r.value(), first);
        // Signed at a later (real) second: a different token.
        std::thread::sleep(Duration::from_millis(1100));
        tokio::time::sleep(Duration::from_secs(10)).await;
        tokio::task::yield_now().await;
        assert_ne!(
            r.value(),
            first,
            "renewed within {RENEW_EVERY:?}, before the {TOKEN_LIFETIME:?} lifetime"
        );
    }
}
