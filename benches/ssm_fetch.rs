//! Fetching 1,000 parameters from moto (the local stack's SSM): the action's
//! secrets stage against the AWS CLI doing the same, and against the floor
//! of (pages × moto's per-request time) measured in the same run. Prints
//! figures; asserts nothing about time.
//!
//! Run with the stack up: `cargo bench --bench ssm_fetch`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_ssm::types::ParameterType;
use deploy_action::inputs::SsmSpec;
use deploy_action::redact::Redactor;
use deploy_action::runner::Runner;
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

const PARAMS: usize = 1000;
const RUNS: usize = 5;
const PREFIX: &str = "/bench/ssm-fetch";
/// `GetParametersByPath` returns at most ten per page.
const PAGE: usize = 10;

fn stack_env(root: &std::path::Path) -> HashMap<String, String> {
    let path = root.join(".stack/env");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("the local stack is not up ({}: {e}); run scripts/stack/up", path.display())
    });
    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.trim().into(), v.trim().into())).collect()
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1}ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let env = stack_env(&root);
    const AWS_VARS: [&str; 5] = [
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
    ];
    for k in AWS_VARS {
        let v = env.get(k).unwrap_or_else(|| panic!("{k} missing from .stack/env"));
        // SAFETY: no other thread exists yet; the runtime starts below.
        unsafe { std::env::set_var(k, v) };
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(run(root, env));
}

async fn run(root: PathBuf, env: HashMap<String, String>) {
    let region = env["AWS_REGION"].clone();
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let client = aws_sdk_ssm::Client::new(&sdk);
    seed(&client).await;

    // moto's own time per request: one page of ten, decrypted.
    let mut per_request = Vec::new();
    for _ in 0..30 {
        let t = Instant::now();
        client
            .get_parameters_by_path()
            .path(format!("{PREFIX}/"))
            .recursive(true)
            .with_decryption(true)
            .max_results(PAGE as i32)
            .send()
            .await
            .expect("one page");
        per_request.push(t.elapsed());
    }
    let per_request = median(per_request);
    let pages = PARAMS.div_ceil(PAGE);

    let spec = SsmSpec { paths: vec![format!("{PREFIX}/")], parameters: vec![], region: Some(region) };
    let mut action = Vec::new();
    for _ in 0..RUNS {
        let runner = Runner::new(Box::new(std::io::sink()), Redactor::new(), None, None);
        let t = Instant::now();
        let set =
            deploy_action::secrets::fetch(&spec, &runner, &CancellationToken::new()).await.expect("fetch");
        action.push(t.elapsed());
        assert_eq!(set.len(), PARAMS, "fetched everything");
    }

    let aws = root.join(".stack/venv/bin/aws");
    let mut cli = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let status = Command::new(&aws)
            .args([
                "ssm",
                "get-parameters-by-path",
                "--path",
                &format!("{PREFIX}/"),
                "--recursive",
                "--with-decryption",
            ])
            .args(["--endpoint-url", &env["AWS_ENDPOINT_URL"], "--output", "json"])
            .stdout(Stdio::null())
            .status()
            .expect("run the aws cli from .stack/venv");
        cli.push(t.elapsed());
        assert!(status.success(), "aws cli failed");
    }

    let (a, c) = (median(action.clone()), median(cli.clone()));
    let floor = per_request * pages as u32;
    println!("ssm_fetch: {PARAMS} parameters under {PREFIX}/, {pages} pages, {RUNS} runs each");
    println!(
        "  action secrets::fetch   median {:>9}   runs {:?}",
        ms(a),
        action.iter().map(|d| ms(*d)).collect::<Vec<_>>()
    );
    println!(
        "  aws ssm get-parameters-by-path median {:>9}   runs {:?}",
        ms(c),
        cli.iter().map(|d| ms(*d)).collect::<Vec<_>>()
    );
    println!("  ratio cli / action      {:.2}x", c.as_secs_f64() / a.as_secs_f64());
    println!(
        "  floor {pages} pages x {} (moto median per page request) = {}; action / floor {:.2}x",
        ms(per_request),
        ms(floor),
        a.as_secs_f64() / floor.as_secs_f64()
    );
}

/// Puts the 1,000 parameters (idempotent: same names, overwritten).
async fn seed(client: &aws_sdk_ssm::Client) {
    let results: Vec<_> = futures::stream::iter(0..PARAMS)
        .map(|i| {
            let client = client.clone();
            async move {
                let kind = if i % 2 == 0 { ParameterType::SecureString } else { ParameterType::String };
                client
                    .put_parameter()
                    .name(format!("{PREFIX}/svc{}/group-{}/param.{i}", i % 7, i % 11))
                    .value(format!("bench-value-{i}-{}", "x".repeat(i % 64)))
                    .r#type(kind)
                    .overwrite(true)
                    .send()
                    .await
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for r in results {
        r.expect("seed parameter");
    }
}
