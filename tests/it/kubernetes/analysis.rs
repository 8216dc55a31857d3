//! The analysis sources on a cluster: kwok's pods carry no traffic, so the
//! figures come from what the test controls (a metric Prometheus scrapes
//! from a file, an alarm's state in moto). A breach in blue-green's
//! observe window flips every Service back; one during a canary step
//! aborts it, the weights back.

use std::process::Child;
use std::time::{Duration, Instant};

use aws_sdk_cloudwatch::types::StateValue;

use super::{Ns, assert_status, image_of};
use crate::support::analysis::{
    Metric, alarm, cloudwatch, delete_alarm, prometheus_url, readings_in_summary, set_alarm,
};

const COLOUR: &str = "deploy-action/colour";

/// Waits for `f` while the run goes on; panics if it ends first.
fn while_running(ns: &Ns, child: &mut Child, what: &str, mut f: impl FnMut() -> bool) {
    ns.until(90, what, || {
        assert!(child.try_wait().unwrap().is_none(), "the action ended before {what}");
        f()
    });
}

#[test]
fn kubernetes_blue_green_a_query_breach_in_the_window_flips_every_service_back() {
    let ns = Ns::new("bganalysis");
    for name in ["a", "b"] {
        ns.deployment(name, "example.invalid/web:v1", 2, 60);
        ns.service(name);
    }
    let before = [ns.endpoint_pods("a"), ns.endpoint_pods("b")];
    let metric = Metric::new("kube_bg", 0.01);
    let action = ns
        .blue_green("a:app,b:app", "example.invalid/web:v2")
        .input("observe-window", "60s")
        .input("prometheus-url", &prometheus_url())
        .input("analysis-query", &metric.query())
        .input("analysis-max", "0.1")
        .input("analysis-interval", "1s");
    let mut child = action.spawn();
    while_running(&ns, &mut child, "both Services on the new colour", || {
        ["a", "b"].iter().all(|s| ns.selector(s).get(COLOUR).and_then(|c| c.as_str()) == Some("blue"))
    });
    std::thread::sleep(Duration::from_secs(2));
    metric.set(0.5);
    let t0 = Instant::now();
    let run = action.finish(child.wait_with_output().unwrap());
    assert_status(&run, "failure", 1);
    assert!(t0.elapsed() < Duration::from_secs(20), "flipped back {:?} after the breach", t0.elapsed());
    let message = format!(
        "analysis query '{}' = 0.5, above analysis-max 0.1 during the observe window",
        metric.query()
    );
    assert!(run.stdout.contains(&message) && run.stdout.contains("analysis_breached"), "{}", run.stdout);
    for (name, pods) in ["a", "b"].iter().zip(&before) {
        assert!(ns.selector(name).get(COLOUR).is_none(), "service {name} back on its old pods");
        ns.until(30, "the old pods alone behind the Service", || ns.endpoint_pods(name) == *pods);
        assert!(ns.gone("deployment", &format!("{name}-blue")), "the candidate this run made is removed");
    }
    assert!(run.summary.contains("switched back"), "{}", run.summary);
    let rows = readings_in_summary(&run.summary);
    assert!(rows.iter().any(|r| r.1 == "0.01 (max 0.1)" && r.2 == "ok"), "{rows:?}");
    assert!(rows.iter().any(|r| r.1 == "0.5 (max 0.1)" && r.2 == "breach"), "{rows:?}");
}

#[test]
fn kubernetes_canary_an_alarm_during_a_step_aborts_and_the_weights_go_back() {
    let ns = Ns::new("canaryanalysis");
    ns.deployment("web", "example.invalid/web:v1", 2, 60);
    ns.service("web");
    ns.httproute("web");
    let weights = || ns.route_weights();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cw = rt.block_on(cloudwatch());
    let name = rt.block_on(alarm(&cw, "canary-5xx"));
    let action = ns
        .canary("20,100", "httproute/shop", "example.invalid/web:v2")
        .input("canary-interval", "60s")
        .moto()
        .input("rollback-alarms", &name)
        .input("analysis-interval", "1s");
    let mut child = action.spawn();
    while_running(&ns, &mut child, "the canary at 20%", || weights() == "web=80 web-canary=20");
    std::thread::sleep(Duration::from_secs(2));
    rt.block_on(set_alarm(&cw, &name, StateValue::Alarm, "canary 5xx above 1%"));
    let t0 = Instant::now();
    let run = action.finish(child.wait_with_output().unwrap());
    rt.block_on(delete_alarm(&cw, &name));
    assert_status(&run, "failure", 1);
    assert!(t0.elapsed() < Duration::from_secs(20), "aborted {:?} after the breach", t0.elapsed());
    let message = format!(
        "CloudWatch alarm '{name}' is ALARM during the observe window (threshold: any alarm in ALARM): canary 5xx above 1%"
    );
    assert!(run.stdout.contains(&message) && run.stdout.contains("alarm_breached"), "{}", run.stdout);
    assert_eq!(weights(), "web=100");
    assert!(ns.gone("deployment", "web-canary") && ns.gone("service", "web-canary"));
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v1", "never promoted");
    assert!(run.summary.contains("canary aborted at 20%"), "{}", run.summary);
    let rows = readings_in_summary(&run.summary);
    let source = format!("CloudWatch alarm '{name}'");
    assert!(rows.contains(&(source, "ALARM (ALARM rolls back)".into(), "breach".into())), "{rows:?}");
}
