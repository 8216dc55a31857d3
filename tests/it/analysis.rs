//! Analysis during the observe window against the stack's real servers:
//! CloudWatch alarms in moto, a query on a real Prometheus scraping a
//! metric the test rewrites. The sources on their own first, then full
//! deploys of the built binary to the stack's hosts (the Kubernetes ones are
//! in `kubernetes/analysis.rs`).

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_cloudwatch::types::StateValue;
use deploy_action::analysis::{Analysis, Source, alarms::Alarms, prometheus::Query};
use deploy_action::inputs::QuerySpec;
use tokio_util::sync::CancellationToken;

use crate::deploy::hosts_action;
use crate::support::analysis::{
    Metric, alarm, cloudwatch, delete_alarm, prometheus_url, readings_in_log, readings_in_summary, set_alarm,
};
use crate::support::{Log, live_version, shared_app_lock, stack_var, summary_table, wait_until_serving};

fn query_source(query: &str, max: Option<f64>, min: Option<f64>) -> Box<dyn Source> {
    let spec = QuerySpec { url: prometheus_url().parse().unwrap(), query: query.into(), max, min };
    Box::new(Query::new(&spec).unwrap())
}

#[tokio::test]
async fn alarms_are_read_from_cloudwatch_and_a_missing_one_is_named() {
    let cw = cloudwatch().await;
    let (a, b) = (alarm(&cw, "api-5xx").await, alarm(&cw, "db-cpu").await);
    let log = Log::default();
    let sdk = crate::support::moto_config().await;
    let cancel = CancellationToken::new();

    let missing = format!("gone-{}", crate::support::action::unique_run_id());
    let source = Alarms::from_sdk_config(&sdk, vec![a.clone(), missing.clone()]);
    let analysis = Analysis::new(Duration::from_secs(1), vec![Box::new(source)], &log.runner());
    let e = analysis.preflight(&cancel).await.unwrap_err();
    assert_eq!(e.reason(), "alarm_not_found");
    assert_eq!(
        e.to_string(),
        format!(
            "CloudWatch alarm(s) '{missing}' not found in us-east-1: rollback-alarms must name existing alarms"
        )
    );

    let source = Alarms::from_sdk_config(&sdk, vec![a.clone(), b.clone()]);
    let analysis = Analysis::new(Duration::from_secs(1), vec![Box::new(source)], &log.runner());
    analysis.preflight(&cancel).await.unwrap();
    analysis.check(&cancel).await.unwrap();
    set_alarm(
        &cw,
        &b,
        StateValue::Alarm,
        "Threshold Crossed: 1 datapoint [7.0] was greater than the threshold (1.0)",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let e = analysis.check(&cancel).await.unwrap_err();
    assert_eq!(e.reason(), "alarm_breached");
    assert_eq!(
        e.to_string(),
        format!(
            "CloudWatch alarm '{b}' is ALARM during the observe window (threshold: any alarm in ALARM): Threshold Crossed: 1 datapoint [7.0] was greater than the threshold (1.0)"
        )
    );
    let rows = readings_in_log(&log.text());
    let row = |alarm: &str, figure: &str, verdict: &str| {
        (format!("CloudWatch alarm '{alarm}'"), figure.to_string(), verdict.to_string())
    };
    assert!(rows.contains(&row(&a, "OK (ALARM rolls back)", "ok, before the deploy")), "{rows:?}");
    assert!(rows.contains(&row(&b, "ALARM (ALARM rolls back)", "breach")), "{rows:?}");
    for n in [a, b] {
        delete_alarm(&cw, &n).await;
    }
}

#[tokio::test]
async fn a_query_is_judged_on_a_real_prometheus() {
    let metric = Metric::new("judged", 0.05);
    let log = Log::default();
    let cancel = CancellationToken::new();
    let analysis = Analysis::new(
        Duration::from_secs(1),
        vec![query_source(&metric.query(), Some(0.1), None)],
        &log.runner(),
    );
    analysis.preflight(&cancel).await.unwrap();
    analysis.check(&cancel).await.unwrap();
    metric.set(0.31);
    metric.wait_for("0.31");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let e = analysis.check(&cancel).await.unwrap_err();
    assert_eq!(e.reason(), "analysis_breached");
    assert_eq!(
        e.to_string(),
        format!(
            "analysis query '{}' = 0.31, above analysis-max 0.1 during the observe window",
            metric.query()
        )
    );
    let values: Vec<String> = readings_in_log(&log.text()).into_iter().map(|r| r.1).collect();
    assert_eq!(values.first().map(String::as_str), Some("0.05 (max 0.1)"));
    assert_eq!(values.last().map(String::as_str), Some("0.31 (max 0.1)"));
}

#[tokio::test]
async fn a_query_that_is_not_one_number_or_not_promql_is_named() {
    let metric = Metric::new("shape", 1.0);
    let log = Log::default();
    let cancel = CancellationToken::new();
    // Prometheus refuses it: fatal before the deploy.
    let analysis = Analysis::new(
        Duration::from_secs(1),
        vec![query_source("sum(rate(x[1m])", Some(1.0), None)],
        &log.runner(),
    );
    let e = analysis.preflight(&cancel).await.unwrap_err();
    assert_eq!(e.reason(), "analysis_query_invalid");
    assert!(
        e.to_string()
            .contains("refused analysis query 'sum(rate(x[1m])': bad_data: invalid parameter \"query\""),
        "{e}"
    );

    // No series: a warning before the deploy, failed readings during it.
    let none = format!("deploy_action_test_value{{test=\"{}\", series=\"none\"}}", metric.name);
    let analysis =
        Analysis::new(Duration::from_secs(1), vec![query_source(&none, Some(1.0), None)], &log.runner());
    analysis.preflight(&cancel).await.unwrap();
    assert!(
        log.text().contains("returned no series; a query must return one value: add `or vector(0)`"),
        "{}",
        log.text()
    );
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        analysis.check(&cancel).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let e = analysis.check(&cancel).await.unwrap_err();
    assert_eq!(e.reason(), "analysis_unavailable");
    assert!(e.to_string().contains("3 time(s) in a row"), "{e}");

    // Two series.
    metric.write_series(&[1.0, 2.0]);
    let end = Instant::now() + Duration::from_secs(20);
    let analysis = Analysis::new(
        Duration::from_secs(1),
        vec![query_source(&metric.query(), Some(5.0), None)],
        &log.runner(),
    );
    loop {
        analysis.preflight(&cancel).await.unwrap();
        if log.text().contains("it returned 2 series") {
            break;
        }
        assert!(Instant::now() < end, "{}", log.text());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(log.text().contains("aggregate them to one, e.g. sum(...) or max(...)"), "{}", log.text());
}

// ---------------------------------------------------------------------------
// Full deploys to the stack's hosts 1 and 2.

fn image(v: &str) -> String {
    stack_var(&format!("IMAGE_{}", v.to_uppercase()))
}

fn deploy_v1() {
    let run = hosts_action(2, &image("v1")).run();
    assert_eq!(run.code, Some(0), "deploy v1 failed:\n{}", run.stdout);
    assert_eq!((live_version(1), live_version(2)), ("v1".into(), "v1".into()));
}

#[test]
fn hosts_sources_within_their_thresholds_commit_and_every_figure_is_in_the_summary() {
    let _lock = shared_app_lock();
    deploy_v1();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cw = rt.block_on(cloudwatch());
    let name = rt.block_on(alarm(&cw, "api-5xx"));
    let metric = Metric::new("commit", 0.05);
    let run = hosts_action(2, &image("v2"))
        .moto()
        .input("rollback-alarms", &name)
        .input("prometheus-url", &prometheus_url())
        .input("analysis-query", &metric.query())
        .input("analysis-max", "0.1")
        .input("analysis-interval", "1s")
        .input("observe-window", "4s")
        .run();
    rt.block_on(delete_alarm(&cw, &name));
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert_eq!(run.output("status"), Some("success"));
    assert_eq!((live_version(1), live_version(2)), ("v2".into(), "v2".into()));
    let rows = readings_in_summary(&run.summary);
    let alarm_source = format!("CloudWatch alarm '{name}'");
    let query_source = format!("analysis query '{}'", metric.query());
    let row = |source: &str, figure: &str, verdict: &str| {
        (source.to_string(), figure.to_string(), verdict.to_string())
    };
    assert!(rows.contains(&row(&alarm_source, "OK (ALARM rolls back)", "ok, before the deploy")), "{rows:?}");
    assert!(rows.contains(&row(&query_source, "0.05 (max 0.1)", "ok, before the deploy")), "{rows:?}");
    // Read once per interval for both hosts together: about 5 readings in
    // a 4 s window, where each host reading for itself every 200 ms health
    // check would have made about 40.
    let window_readings =
        readings_in_log(&run.stdout).iter().filter(|r| r.0 == query_source && r.2 == "ok").count();
    assert!((3..=7).contains(&window_readings), "{window_readings} readings: {}", run.stdout);
    // The summary keeps them as one row.
    let alike: Vec<_> = summary_table(&run.summary, "### What users saw")
        .into_iter()
        .filter(|r| r[0] == query_source && r[3] == "ok")
        .collect();
    assert_eq!(alike.len(), 1, "{alike:?}");
    assert!(
        alike[0][2].starts_with(&format!("{window_readings} readings alike, the last: 0.05")),
        "{alike:?}"
    );
}

/// Runs `action` (a deploy of v2 to hosts 1 and 2 with a 30 s window),
/// waits until v2 serves, lets the window run a while, calls `breach`, and
/// returns the run and how long it went on after the breach.
fn breach_mid_window(
    action: crate::support::action::Action,
    breach: impl FnOnce(),
) -> (crate::support::action::Run, Duration) {
    let action = action.input("analysis-interval", "1s").input("observe-window", "30s");
    let mut child = action.spawn();
    wait_until_serving(1, "v2", &mut child, Duration::from_secs(60));
    wait_until_serving(2, "v2", &mut child, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    assert!(child.try_wait().unwrap().is_none(), "the window is still open");
    breach();
    let t0 = Instant::now();
    let run = action.finish(child.wait_with_output().unwrap());
    (run, t0.elapsed())
}

fn assert_rolled_back(run: &crate::support::action::Run, after: Duration, reason: &str, message: &str) {
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert_eq!(run.output("status"), Some("failure"));
    assert!(run.stdout.contains(reason) && run.stdout.contains(message), "{message}:\n{}", run.stdout);
    assert!(
        after < Duration::from_secs(15),
        "rolled back {after:?} after the breach, not at the window's end"
    );
    assert_eq!((live_version(1), live_version(2)), ("v1".into(), "v1".into()), "both hosts back on v1");
    let hosts = summary_table(&run.summary, "### Hosts");
    assert!(hosts.iter().all(|h| h[1] == "rolled back"), "{hosts:?}");
    assert!(run.summary.contains(reason) && run.summary.contains(message), "{}", run.summary);
}

#[test]
fn hosts_an_alarm_in_alarm_mid_window_rolls_every_host_back() {
    let _lock = shared_app_lock();
    deploy_v1();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cw = rt.block_on(cloudwatch());
    let name = rt.block_on(alarm(&cw, "api-5xx"));
    let action = hosts_action(2, &image("v2")).moto().input("rollback-alarms", &name);
    let (run, after) = breach_mid_window(action, || {
        rt.block_on(set_alarm(&cw, &name, StateValue::Alarm, "Threshold Crossed: 5xx above 1%"))
    });
    rt.block_on(delete_alarm(&cw, &name));
    let message = format!(
        "CloudWatch alarm '{name}' is ALARM during the observe window (threshold: any alarm in ALARM): Threshold Crossed: 5xx above 1%"
    );
    assert_rolled_back(&run, after, "alarm_breached", &message);
    let rows = readings_in_summary(&run.summary);
    let source = format!("CloudWatch alarm '{name}'");
    assert!(rows.contains(&(source.clone(), "OK (ALARM rolls back)".into(), "ok".into())), "{rows:?}");
    assert!(rows.contains(&(source, "ALARM (ALARM rolls back)".into(), "breach".into())), "{rows:?}");
}

#[test]
fn hosts_a_query_crossing_analysis_max_mid_window_rolls_every_host_back() {
    let _lock = shared_app_lock();
    deploy_v1();
    let metric = Metric::new("breach", 0.02);
    let action = hosts_action(2, &image("v2"))
        .input("prometheus-url", &prometheus_url())
        .input("analysis-query", &metric.query())
        .input("analysis-max", "0.1");
    let (run, after) = breach_mid_window(action, || metric.set(0.31));
    let message = format!(
        "analysis query '{}' = 0.31, above analysis-max 0.1 during the observe window",
        metric.query()
    );
    assert_rolled_back(&run, after, "analysis_breached", &message);
    let rows = readings_in_summary(&run.summary);
    assert!(rows.iter().any(|r| r.1 == "0.02 (max 0.1)" && r.2 == "ok"), "{rows:?}");
    assert!(rows.iter().any(|r| r.1 == "0.31 (max 0.1)" && r.2 == "breach"), "{rows:?}");
}

#[test]
fn hosts_an_alarm_already_in_alarm_stops_the_deploy_before_anything_changes() {
    let _lock = shared_app_lock();
    deploy_v1();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cw = rt.block_on(cloudwatch());
    let name = rt.block_on(alarm(&cw, "firing"));
    rt.block_on(set_alarm(&cw, &name, StateValue::Alarm, "already firing"));
    let run = hosts_action(2, &image("v2")).moto().input("rollback-alarms", &name).run();
    rt.block_on(delete_alarm(&cw, &name));
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert_eq!(run.output("status"), Some("failure"));
    assert!(
        run.stdout
            .contains(&format!("CloudWatch alarm '{name}' is ALARM before the deploy changed anything")),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("Connect to"), "no host was contacted:\n{}", run.stdout);
    assert_eq!((live_version(1), live_version(2)), ("v1".into(), "v1".into()));
    assert!(run.summary.contains("breach, before the deploy"), "{}", run.summary);
}

/// Every analysis input problem is named, with its input, before anything
/// is contacted: neither Prometheus, nor AWS, nor a host.
#[test]
fn analysis_inputs_are_checked_before_any_contact() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let contacts = Arc::new(AtomicUsize::new(0));
    let run = hosts_action(1, &image("v2"))
        .input("hosts", &format!("root@{addr}"))
        .env("AWS_ENDPOINT_URL", &format!("http://{addr}"))
        .input("prometheus-url", "prometheus:9090")
        .input("analysis-query", "sum(rate(http_requests_total{status=~\"5..\"}[1m]))")
        .input("analysis-max", "10%")
        .input("analysis-min", "lots")
        .input("analysis-interval", "100ms")
        .input("rollback-alarms", "api-5xx,api-5xx")
        .run();
    while listener.accept().is_ok() {
        contacts.fetch_add(1, Ordering::SeqCst);
    }
    assert_eq!(run.code, Some(2), "{}", run.stdout);
    for want in [
        // (An annotation writes `%` as `%25`.)
        "input 'analysis-max': '10%25' is not a number; analysis-max is a plain number like 0.1 or 250 (the query's value is compared as it is: write 0.1 for 10%25)",
        "input 'analysis-min': 'lots' is not a number",
        "input 'analysis-interval': must be at least 1s",
        "input 'rollback-alarms': 'api-5xx' is named twice",
        "input 'aws-region': is required for rollback-alarms",
        "input 'prometheus-url': must be an http:// or https:// URL, the Prometheus server's base URL like http://prometheus:9090",
    ] {
        assert!(run.stdout.contains(want), "{want}:\n{}", run.stdout);
    }
    assert_eq!(contacts.load(Ordering::SeqCst), 0, "nothing was contacted");
    assert!(readings_in_summary(&run.summary).is_empty(), "{}", run.summary);

    // `mode: plan` says what would be read, and reads nothing.
    let run = hosts_action(1, &image("v2"))
        .input("mode", "plan")
        .input("hosts", &format!("root@{addr}"))
        .env("AWS_ENDPOINT_URL", &format!("http://{addr}"))
        .input("aws-region", "eu-west-1")
        .input("prometheus-url", &format!("http://{addr}"))
        .input("analysis-query", "sum(rate(errors[1m]))")
        .input("analysis-max", "0.1")
        .input("rollback-alarms", "api-5xx")
        .run();
    while listener.accept().is_ok() {
        contacts.fetch_add(1, Ordering::SeqCst);
    }
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    let want = format!(
        "analysis: CloudWatch alarms 'api-5xx' (eu-west-1); query 'sum(rate(errors[1m]))' on http://{addr}/ (max 0.1); read before the deploy, then every 10s in each observe window"
    );
    assert!(run.stdout.contains(&want), "{want}:\n{}", run.stdout);
    assert_eq!(contacts.load(Ordering::SeqCst), 0, "nothing was contacted");
}

/// The two analysis examples of `docs/after-the-switch.md` are inputs the
/// action accepts, with the sources they say.
#[test]
fn the_readme_analysis_examples_are_valid_inputs() {
    let section = crate::support::doc_section(
        "docs/after-the-switch.md",
        "## Analysis during the observe window: CloudWatch alarms and a Prometheus query",
    );
    let blocks = yaml_blocks(&section);
    assert_eq!(blocks.len(), 2);
    let mut specs = Vec::new();
    for block in blocks {
        // `${{ ... }}` is the runner's to fill in.
        let inputs = snippet_inputs(block, |_, v| {
            let v = v.replace("${{ github.ref_name }}", "v1.2.3");
            if v.contains("${{") { "x".to_string() } else { v }
        });
        specs.push(inputs.analysis.expect("an analysis"));
    }
    assert_eq!(specs[0].alarms, ["shop-5xx-rate", "shop-p95-latency"]);
    assert_eq!(specs[0].interval, Duration::from_secs(15));
    let q = specs[0].query.as_ref().unwrap();
    assert!(q.query.starts_with("sum(rate(http_requests_total{job=\"shop\", code=~\"5..\"}[1m]))"));
    assert_eq!((q.max, q.min), (Some(0.1), None));
    assert_eq!(specs[1].alarms, ["scheduler-errors"]);
    assert_eq!(specs[1].query.as_ref().unwrap().max, Some(5.0));
}

/// The ```` ```yaml ```` blocks of a docs section.
pub(crate) fn yaml_blocks(section: &str) -> Vec<&str> {
    section.split("```yaml\n").skip(1).map(|b| &b[..b.find("```").unwrap()]).collect()
}

/// The inputs of the one deploy-action step of a workflow snippet, loaded as
/// the runner would give them; each value holding `${{ … }}` (the runner's
/// to fill in) is replaced by `fill(input, value)`.
pub(crate) fn snippet_inputs(
    block: &str,
    fill: impl Fn(&str, &str) -> String,
) -> deploy_action::inputs::Inputs {
    let yaml: serde_yaml::Value = serde_yaml::from_str(block).unwrap_or_else(|e| panic!("{e}\n{block}"));
    let mut steps = Vec::new();
    find_steps(&yaml, &mut steps);
    assert_eq!(steps.len(), 1, "{block}");
    let mut env = vec![
        ("GITHUB_REPOSITORY".to_string(), "acme/shop".to_string()),
        ("GITHUB_SHA".to_string(), crate::support::action::SHA.to_string()),
        ("GITHUB_WORKSPACE".to_string(), "/tmp".to_string()),
        ("AWS_REGION".to_string(), "eu-west-1".to_string()),
        ("INPUT_GITHUB-TOKEN".to_string(), "t".to_string()),
    ];
    for (k, v) in steps[0].as_mapping().unwrap() {
        let (k, v) = (k.as_str().unwrap(), v.as_str().unwrap());
        let v = if v.contains("${{") { fill(k, v) } else { v.to_string() };
        env.push((format!("INPUT_{}", k.to_uppercase()), v));
    }
    deploy_action::inputs::load(&deploy_action::inputs::Env::from_pairs(env))
        .unwrap_or_else(|p| panic!("{p:?}\n{block}"))
}

/// The `with:` of every step using deploy-action.
fn find_steps(v: &serde_yaml::Value, out: &mut Vec<serde_yaml::Value>) {
    match v {
        serde_yaml::Value::Mapping(m) => {
            if m.get("uses").and_then(|u| u.as_str()).is_some_and(|u| u.ends_with("/deploy-action@v1")) {
                out.push(m.get("with").cloned().unwrap());
            }
            m.values().for_each(|x| find_steps(x, out));
        }
        serde_yaml::Value::Sequence(s) => s.iter().for_each(|x| find_steps(x, out)),
        _ => {}
    }
}
