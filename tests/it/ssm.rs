//! SSM Parameter Store through the real SDK against moto from the local
//! stack (`AWS_ENDPOINT_URL` in `.stack/env`), and through [`fault_proxy`]
//! in front of it for throttling, 5xx, hangs and denials. Each test seeds
//! its own unique path prefix, so tests run in parallel.

mod fault_proxy;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, future};
use aws_sdk_ssm::types::ParameterType;
use deploy_action::inputs::SsmSpec;
use deploy_action::runner::Runner;
use deploy_action::runner::commands::escape_data;
use deploy_action::secrets::{SecretSet, SecretsError, Ssm, SsmOptions};
use fault_proxy::{Fault, FaultProxy, Rule};
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

use crate::support::{Log, stack_var};

// ---------------------------------------------------------------- helpers

fn moto() -> String {
    stack_var("AWS_ENDPOINT_URL")
}

fn region() -> String {
    stack_var("AWS_REGION")
}

async fn sdk_config(endpoint: &str) -> SdkConfig {
    let creds = Credentials::new(
        stack_var("AWS_ACCESS_KEY_ID"),
        stack_var("AWS_SECRET_ACCESS_KEY"),
        None,
        None,
        "stack",
    );
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region()))
        .endpoint_url(endpoint)
        .credentials_provider(creds)
        .load()
        .await
}

/// Short backoff and deadlines so fault tests take seconds.
fn fast() -> SsmOptions {
    SsmOptions {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        attempt_timeout: Duration::from_secs(1),
        operation_timeout: Duration::from_secs(6),
        ..SsmOptions::default()
    }
}

async fn ssm_at(endpoint: &str, options: SsmOptions) -> Ssm {
    Ssm::from_sdk_config(&sdk_config(endpoint).await, options)
}

/// A prefix no other test (or earlier run) uses.
fn unique_prefix(tag: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("/it-ssm/{tag}-{}-{nanos}", std::process::id())
}

struct Param {
    name: String,
    value: String,
    secure: bool,
}

fn param(name: String, value: impl Into<String>, secure: bool) -> Param {
    Param { name, value: value.into(), secure }
}

/// Writes parameters straight to moto, concurrently.
async fn seed(params: &[Param]) {
    let client = aws_sdk_ssm::Client::new(&sdk_config(&moto()).await);
    let results: Vec<_> = futures::stream::iter(params)
        .map(|p| {
            let client = client.clone();
            async move {
                let kind = if p.secure { ParameterType::SecureString } else { ParameterType::String };
                client.put_parameter().name(&p.name).value(&p.value).r#type(kind).overwrite(true).send().await
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for r in results {
        r.expect("seed parameter in moto");
    }
}

fn runner() -> (Runner, Log) {
    let buf = Log::default();
    (buf.runner(), buf)
}

fn spec(paths: &[String], parameters: &[(&str, &str)]) -> SsmSpec {
    SsmSpec {
        paths: paths.to_vec(),
        parameters: parameters.iter().map(|(e, n)| (e.to_string(), n.to_string())).collect(),
        region: Some(region()),
    }
}

async fn fetch(ssm: &Ssm, spec: &SsmSpec) -> (Result<SecretSet, SecretsError>, Log) {
    let (runner, buf) = runner();
    let r = ssm.fetch(spec, &runner, &CancellationToken::new()).await;
    (r, buf)
}

const PEM: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\n\
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n\
QyNTUxOQAAACBnHq0Zl7o3oQm0T2rbbN1xJ8pJ9kz6w5cQ1Q2Yd0v8XwAAAJgq3s9kKt7P\n\
ZAAAAAtzc2gtZWQyNTUxOQAAACBnHq0Zl7o3oQm0T2rbbN1xJ8pJ9kz6w5cQ1Q2Yd0v8Xw\n\
-----END OPENSSH PRIVATE KEY-----\n";

const JSON_BLOB: &str =
    r#"{"user":"svc-deploy","password":"p@ss\"w0rd%20&x=1","nested":{"token":"tok-7f3a9c"},"n":3}"#;

/// Values chosen to break naive handling: multi-line, JSON, unicode,
/// workflow-command look-alikes, percent signs, SSM's 4 KiB limit.
fn tricky_values(tag: &str) -> Vec<(&'static str, String, bool)> {
    vec![
        ("unicode/greeting", format!("héllo wörld — 你好 🌍 {tag}"), true),
        ("tls/deploy-key.pem", PEM.replace("Xw\n-----END", &format!("{tag}\n-----END")), true),
        ("config/json", JSON_BLOB.replace("tok-7f3a9c", &format!("tok-{tag}")), true),
        ("looks/like-command", format!("::error::gotcha {tag}"), false),
        ("percent/value", format!("100%-sure %0A {tag}"), true),
        ("limits/max-ascii", format!("{tag}{}", "A1b2C3d4".repeat(512))[..4096].to_string(), false),
        ("limits/max-secure", format!("{tag}{}", "z9Y8x7W6".repeat(512))[..4096].to_string(), true),
        (
            "limits/max-unicode",
            format!("{tag}{}", "é".repeat(2048))[..4096 - tag.len() % 2].to_string(),
            true,
        ),
    ]
}

// ------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssm_fetches_a_thousand_parameters_across_nested_paths() {
    let prefix = unique_prefix("thousand");
    let tag = "k1k";
    let mut params = Vec::new();
    let mut expected = Vec::new();
    for (rel, value, secure) in tricky_values(tag) {
        let env = deploy_action::secrets::env_name("/", rel);
        params.push(param(format!("{prefix}/app/{rel}"), value.clone(), secure));
        expected.push((env, value));
    }
    while params.len() < 1000 {
        let i = params.len();
        let (root, rel) = if i % 5 == 0 {
            ("worker", format!("queue-{}/param.{i}", i % 3))
        } else {
            ("app", format!("svc{}/group-{}/param.{i}", i % 7, i % 11))
        };
        let value = format!("value-{i}-{}", rand_hex());
        expected.push((deploy_action::secrets::env_name("/", &rel), value.clone()));
        params.push(param(format!("{prefix}/{root}/{rel}"), value, i % 2 == 0));
    }
    seed(&params).await;

    let ssm = ssm_at(&moto(), SsmOptions::default()).await;
    let started = Instant::now();
    let (set, log) = fetch(&ssm, &spec(&[format!("{prefix}/app/"), format!("{prefix}/worker")], &[])).await;
    let set = set.expect("fetch");
    eprintln!("fetched {} parameters in {:?}", set.len(), started.elapsed());

    assert_eq!(set.len(), 1000);
    for (env, value) in &expected {
        assert_eq!(set.get(env).map(|v| v.expose()), Some(value.as_str()), "{env}");
    }
    assert!(set.names().contains(&"SVC5_GROUP_1_PARAM_12".to_string()));
    assert!(set.names().contains(&"QUEUE_2_PARAM_995".to_string()));
    assert_eq!(set.get("UNICODE_GREETING").unwrap().expose(), format!("héllo wörld — 你好 🌍 {tag}"));
    assert_eq!(set.get("TLS_DEPLOY_KEY_PEM").unwrap().expose().lines().count(), 5);
    assert_eq!(set.get("LIMITS_MAX_SECURE").unwrap().expose().len(), 4096);
    let digest = set.fingerprint();
    assert_eq!(digest.len(), 64);
    let log = log.text();
    assert!(log.contains(&format!("SSM endpoint: {}", moto())), "endpoint not logged");
    for (_, value) in &expected {
        assert!(log.contains(&format!("::add-mask::{}\n", escape_data(value))), "no mask for a value");
    }
    // Same parameters, same digest; and into_env hands over every pair.
    let env = set.into_env();
    assert_eq!(env.len(), 1000);
    assert!(env.windows(2).all(|w| w[0].0 < w[1].0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssm_every_value_is_masked_on_arrival_and_appears_nowhere_else() {
    let prefix = unique_prefix("mask");
    let tag = "m4sk";
    let values = tricky_values(tag);
    let params: Vec<Param> =
        values.iter().map(|(rel, v, s)| param(format!("{prefix}/{rel}"), v.clone(), *s)).collect();
    seed(&params).await;
    let ssm = ssm_at(&moto(), fast()).await;
    let (runner, buf) = runner();
    let set = ssm
        .fetch(&spec(std::slice::from_ref(&prefix), &[]), &runner, &CancellationToken::new())
        .await
        .expect("fetch");
    let single = ssm.get(&format!("{prefix}/tls/deploy-key.pem"), &runner).await.expect("get");
    assert_eq!(single.expose(), set.get("TLS_DEPLOY_KEY_PEM").unwrap().expose());

    // Everything that might carry a value on its way out goes through the
    // runner: debug output, errors, a careless log line, relayed output.
    runner.line(&format!("secrets: {set:?} digest={} single={single:?}", set.fingerprint()));
    for (_, v, _) in &values {
        runner.line(&format!("careless: {v}"));
        runner.relay("host-1", &format!("app printed {v}"));
    }

    let log = buf.text();
    let (masks, rest): (Vec<&str>, Vec<&str>) = log.lines().partition(|l| l.starts_with("::add-mask::"));
    let rest = rest.join("\n");
    for (rel, v, _) in &values {
        assert!(masks.contains(&format!("::add-mask::{}", escape_data(v)).as_str()), "{rel}: no mask line");
        assert!(!rest.contains(v.as_str()), "{rel}: value leaked");
        for line in v.lines().filter(|l| l.trim().len() >= 3) {
            assert!(
                masks.contains(&format!("::add-mask::{}", escape_data(line)).as_str()),
                "{rel}: line not masked"
            );
            assert!(!rest.contains(line), "{rel}: a line of the value leaked");
        }
    }
    for leaf in ["svc-deploy", "p@ss\"w0rd%20&x=1", &format!("tok-{tag}")] {
        assert!(
            masks.contains(&format!("::add-mask::{}", escape_data(leaf)).as_str()),
            "JSON leaf {leaf} not masked"
        );
        assert!(!rest.contains(leaf), "JSON leaf {leaf} leaked");
    }
    assert!(rest.contains("careless: ***"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssm_explicit_pairs_keep_their_names_and_every_missing_name_is_listed() {
    let prefix = unique_prefix("pairs");
    let params: Vec<Param> =
        (0..23).map(|i| param(format!("{prefix}/p{i:02}"), format!("pv-{i}-secret"), i % 2 == 1)).collect();
    seed(&params).await;
    let ssm = ssm_at(&moto(), fast()).await;

    let names: Vec<(String, String)> =
        (0..23).map(|i| (format!("Custom_{i}"), format!("{prefix}/p{i:02}"))).collect();
    let pairs: Vec<(&str, &str)> = names.iter().map(|(e, n)| (e.as_str(), n.as_str())).collect();
    let (set, _) = fetch(&ssm, &spec(&[], &pairs)).await;
    let set = set.expect("fetch pairs");
    assert_eq!(set.len(), 23);
    assert_eq!(set.get("Custom_7").unwrap().expose(), "pv-7-secret");
    assert_eq!(set.parameter("Custom_7"), Some(format!("{prefix}/p07").as_str()));

    // Three missing names, one in each chunk of ten.
    let missing = [format!("{prefix}/p00-gone"), format!("{prefix}/p10-gone"), format!("{prefix}/p99-gone")];
    let mut with_missing = pairs.clone();
    for (i, m) in missing.iter().enumerate() {
        with_missing.insert(i * 11, (["GONE_A", "GONE_B", "GONE_C"][i], m.as_str()));
    }
    let (r, log) = fetch(&ssm, &spec(&[], &with_missing)).await;
    let err = r.expect_err("missing names must fail");
    assert_eq!(err.reason(), "ssm_parameters_missing");
    let msg = err.to_string();
    for m in &missing {
        assert!(msg.contains(m.as_str()), "{m} not listed in: {msg}");
    }
    assert!(!msg.contains("pv-"), "a value in the error: {msg}");
    assert!(!log.text().contains("::error"), "fetch itself writes no annotation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssm_two_parameters_with_one_name_are_an_error_naming_both() {
    let prefix = unique_prefix("collide");
    seed(&[
        param(format!("{prefix}/app/db-url"), "postgres://a", true),
        param(format!("{prefix}/app/db_url"), "postgres://b", true),
        param(format!("{prefix}/other/x"), "x-value", false),
    ])
    .await;
    let ssm = ssm_at(&moto(), fast()).await;
    let (r, _) = fetch(&ssm, &spec(&[format!("{prefix}/app/")], &[])).await;
    let err = r.expect_err("collision");
    assert_eq!(err.reason(), "ssm_name_collision");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{prefix}/app/db-url")) && msg.contains(&format!("{prefix}/app/db_url")),
        "{msg}"
    );
    assert!(msg.contains("DB_URL") && !msg.contains("postgres://"), "{msg}");

    // An explicit pair taking a name a path parameter already has.
    let x = format!("{prefix}/other/x");
    let (r, _) = fetch(&ssm, &spec(&[format!("{prefix}/other")], &[("X", "/nowhere/else")])).await;
    assert_eq!(r.expect_err("missing").reason(), "ssm_parameters_missing");
    let (r, _) = fetch(&ssm, &spec(&[format!("{prefix}/other")], &[("X", &x)])).await;
    assert_eq!(r.expect("same parameter, same name is fine").len(), 1);
}

// ----------------------------------------------------------------- faults

/// Fifteen parameters (two pages) under a fresh prefix, and a proxy.
async fn faulty(tag: &str, rules: Vec<Rule>) -> (String, FaultProxy) {
    let prefix = unique_prefix(tag);
    let mut params: Vec<Param> =
        (0..14).map(|i| param(format!("{prefix}/app/k{i}"), format!("{tag}-v{i}"), i % 2 == 0)).collect();
    params.push(param(format!("{prefix}/app/locked"), format!("{tag}-locked-value"), true));
    seed(&params).await;
    (prefix, FaultProxy::start(&moto(), rules).await)
}

const BY_PATH: &str = "GetParametersByPath";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssm_throttling_and_server_errors_are_retried_until_they_pass() {
    let (prefix, proxy) = faulty(
        "retry",
        vec![Rule::times(BY_PATH, Fault::Throttle, 2), Rule::times(BY_PATH, Fault::ServerError, 1)],
    )
    .await;
    let opts = fast();
    let ssm = ssm_at(proxy.url(), opts.clone()).await;
    let started = Instant::now();
    let (r, _) = fetch(&ssm, &spec(&[format!("{prefix}/app")], &[])).await;
    let set = r.expect("three faults are fewer than four attempts");
    assert_eq!(set.len(), 15);
    assert_eq!(proxy.count(BY_PATH), 3 + 2, "three failed attempts, then two pages");
    assert!(started.elapsed() < opts.operation_timeout, "took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssm_an_empty_page_with_a_token_is_followed() {
    let (prefix, proxy) =
        faulty("empty-page", vec![Rule::times(BY_PATH, Fault::EmptyPageWithToken, 1)]).await;
    let ssm = ssm_at(proxy.url(), fast()).await;
    let (r, _) = fetch(&ssm, &spec(&[format!("{prefix}/app")], &[])).await;
    assert_eq!(r.expect("fetch").len(), 15);
    assert_eq!(proxy.count(BY_PATH), 1 + 2, "the empty page, then two real ones");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssm_throttling_past_max_attempts_fails_as_throttled() {
    let (prefix, proxy) = faulty("throttled", vec![Rule::always(BY_PATH, Fault::Throttle)]).await;
    let ssm = ssm_at(proxy.url(), fast()).await;
    let (r, _) = fetch(&ssm, &spec(&[format!("{prefix}/app")], &[])).await;
    let err = r.expect_err("always throttled");
    assert_eq!(err.reason(), "ssm_throttled", "{err}");
    assert!(err.to_string().contains(&format!("{prefix}/app")), "{err}");
    assert_eq!(proxy.count(BY_PATH), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssm_server_errors_past_max_attempts_fail_clearly() {
    let (prefix, proxy) =
        faulty("fivehundred", vec![Rule::always("GetParameters", Fault::ServerError)]).await;
    let ssm = ssm_at(proxy.url(), fast()).await;
    let name = format!("{prefix}/app/k1");
    let (r, _) = fetch(&ssm, &spec(&[], &[("K1", &name)])).await;
    let err = r.expect_err("always 500");
    assert_eq!(err.reason(), "ssm_server_error", "{err}");
    assert!(err.to_string().contains(&name), "{err}");
    assert_eq!(proxy.count("GetParameters"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssm_a_hung_attempt_is_abandoned_and_retried() {
    let (prefix, proxy) = faulty("hang-once", vec![Rule::times(BY_PATH, Fault::Hang, 1)]).await;
    let opts = fast();
    let ssm = ssm_at(proxy.url(), opts.clone()).await;
    let started = Instant::now();
    let (r, _) = fetch(&ssm, &spec(&[format!("{prefix}/app")], &[])).await;
    assert_eq!(r.expect("second attempt answers").len(), 15);
    let took = started.elapsed();
    assert!(took >= opts.attempt_timeout && took < opts.operation_timeout, "took {took:?}");
    assert_eq!(proxy.count(BY_PATH), 1 + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssm_a_server_that_never_answers_fails_within_the_deadline() {
    let (prefix, proxy) = faulty("hang", vec![Rule::always(BY_PATH, Fault::Hang)]).await;
    let opts = SsmOptions { operation_timeout: Duration::from_secs(3), ..fast() };
    let ssm = ssm_at(proxy.url(), opts.clone()).await;
    let started = Instant::now();
    let (r, _) = fetch(&ssm, &spec(&[format!("{prefix}/app")], &[])).await;
    let took = started.elapsed();
    let err = r.expect_err("never answers");
    assert_eq!(err.reason(), "ssm_timeout", "{err}");
    assert!(took < opts.operation_timeout + Duration::from_secs(1), "took {took:?}");
    assert!(err.to_string().contains(proxy.url()), "names the endpoint: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssm_access_denied_is_not_retried() {
    let (prefix, proxy) = faulty("denied", vec![Rule::always(BY_PATH, Fault::AccessDenied)]).await;
    let ssm = ssm_at(proxy.url(), fast()).await;
    let (r, _) = fetch(&ssm, &spec(&[format!("{prefix}/app")], &[])).await;
    let err = r.expect_err("denied");
    assert_eq!(err.reason(), "ssm_access_denied");
    let msg = err.to_string();
    assert!(msg.contains("ssm:GetParametersByPath") && msg.contains(&format!("{prefix}/app")), "{msg}");
    assert_eq!(proxy.count(BY_PATH), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssm_kms_denial_names_the_parameter_and_kms_decrypt() {
    // SSM refuses the whole page when one SecureString on it cannot be
    // decrypted; reading that one parameter alone is refused too.
    let (prefix, proxy) = faulty(
        "kms",
        vec![
            Rule::always(BY_PATH, Fault::KmsDenied),
            Rule::always("GetParameters", Fault::KmsDenied).when_body_has("locked"),
            Rule::always("GetParameter", Fault::KmsDenied).when_body_has("locked"),
        ],
    )
    .await;
    let ssm = ssm_at(proxy.url(), fast()).await;
    let locked = format!("{prefix}/app/locked");

    let (r, log) = fetch(&ssm, &spec(&[format!("{prefix}/app/")], &[])).await;
    let err = r.expect_err("kms denied");
    assert_eq!(err.reason(), "kms_decrypt_denied", "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&locked) && msg.contains("kms:Decrypt"), "{msg}");
    assert!(!msg.contains(&format!("{prefix}/app/k0")), "only the refused one: {msg}");
    assert!(!msg.contains("-v0") && !msg.contains("locked-value"), "{msg}");
    assert_eq!(proxy.count(BY_PATH), 1, "not retried");
    let log = log.text();
    assert!(log.contains("::add-mask::kms-v0"), "probed values are masked");
    assert!(!log.lines().any(|l| !l.starts_with("::add-mask::") && l.contains("kms-v")), "{log}");

    let (r, _) = fetch(&ssm, &spec(&[], &[("A", &format!("{prefix}/app/k1")), ("L", &locked)])).await;
    let err = r.expect_err("kms denied");
    assert_eq!(err.reason(), "kms_decrypt_denied");
    assert!(err.to_string().contains(&locked) && !err.to_string().contains("app/k1"), "{err}");

    let (runner, _) = runner();
    let err = ssm.get(&locked, &runner).await.expect_err("kms denied");
    assert_eq!(err.reason(), "kms_decrypt_denied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssm_expired_credentials_say_what_to_configure() {
    let (prefix, proxy) = faulty("expired", vec![Rule::always(BY_PATH, Fault::ExpiredToken)]).await;
    let ssm = ssm_at(proxy.url(), fast()).await;
    let (r, _) = fetch(&ssm, &spec(&[format!("{prefix}/app")], &[])).await;
    let err = r.expect_err("expired");
    assert_eq!(err.reason(), "aws_credentials_invalid", "{err}");
    let msg = err.to_string();
    assert!(msg.contains("configure-aws-credentials") && msg.contains("id-token: write"), "{msg}");
}

#[derive(Debug)]
struct NoCredentials;

impl ProvideCredentials for NoCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::ready(Err(CredentialsError::not_loaded(
            "no providers in chain provided credentials",
        )))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssm_missing_credentials_say_what_to_configure() {
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region()))
        .endpoint_url(moto())
        .credentials_provider(NoCredentials)
        .load()
        .await;
    let ssm = Ssm::from_sdk_config(&sdk, fast());
    let (r, _) = fetch(&ssm, &spec(&["/it-ssm/nothing".to_string()], &[])).await;
    let err = r.expect_err("no credentials");
    assert_eq!(err.reason(), "aws_credentials_missing", "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("aws-actions/configure-aws-credentials") && msg.contains("id-token: write"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssm_cancellation_stops_a_fetch_promptly() {
    let (prefix, proxy) = faulty("cancel", vec![Rule::always(BY_PATH, Fault::Hang)]).await;
    let ssm = ssm_at(proxy.url(), SsmOptions { attempt_timeout: Duration::from_secs(30), ..fast() }).await;
    let (runner, _) = runner();
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.cancel();
    });
    let started = Instant::now();
    let err =
        ssm.fetch(&spec(&[format!("{prefix}/app")], &[]), &runner, &cancel).await.expect_err("cancelled");
    assert_eq!(err.reason(), "cancelled");
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssm_concurrency_is_bounded() {
    let (prefix, proxy) = faulty("bound", vec![]).await;
    let ssm = ssm_at(proxy.url(), SsmOptions { concurrency: 2, ..fast() }).await;
    // One path (two pages) and two chunks of names: three jobs, two at a time.
    let names: Vec<(String, String)> =
        (0..14).map(|i| (format!("E{i}"), format!("{prefix}/app/k{i}"))).collect();
    let pairs: Vec<(&str, &str)> = names.iter().map(|(e, n)| (e.as_str(), n.as_str())).collect();
    let (r, _) = fetch(&ssm, &spec(&[format!("{prefix}/app/")], &pairs)).await;
    assert_eq!(r.expect("fetch").len(), 15 + 14);
    assert!(proxy.max_in_flight() <= 2, "in flight: {}", proxy.max_in_flight());
}

fn rand_hex() -> String {
    format!("{:016x}", rand::random::<u64>())
}
