//! The analysis sources the tests control: a metric that the stack's real
//! Prometheus scrapes from a file this test rewrites
//! (scripts/stack/prometheus), and CloudWatch alarms in moto.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::action::unique_run_id;

/// A `PROMETHEUS_*` setting: from `.stack/env`, else from the file
/// `scripts/stack/prometheus` keeps beside it (an `up` of a checkout
/// without that script rewrites `.stack/env` without these lines).
fn prom_var(key: &str) -> String {
    if let Some(v) = super::stack().get(key) {
        return v.clone();
    }
    let file = PathBuf::from(super::stack_var("STACK_DIR")).join("prometheus/env");
    std::fs::read_to_string(&file)
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix(&format!("{key}=")).map(String::from)))
        .unwrap_or_else(|| {
            panic!("{key} missing from .stack/env: run scripts/stack/prometheus (or scripts/stack/up)")
        })
}

/// The Prometheus of the stack.
pub fn prometheus_url() -> String {
    prom_var("PROMETHEUS_URL")
}

/// One test's series, `deploy_action_test_value{test="<name>"}`, scraped
/// every second from its own file. Removed (file and target) when dropped.
pub struct Metric {
    pub name: String,
    file: PathBuf,
    target: PathBuf,
}

impl Metric {
    pub fn new(tag: &str, value: f64) -> Self {
        let name = format!("{tag}_{}", unique_run_id());
        let file = PathBuf::from(prom_var("PROMETHEUS_METRICS_DIR")).join(format!("{name}.txt"));
        let target = PathBuf::from(prom_var("PROMETHEUS_TARGETS_DIR")).join(format!("{name}.json"));
        let m = Metric { name, file, target };
        m.write_series(&[value]);
        let sd = serde_json::json!([{
            "targets": [prom_var("PROMETHEUS_METRICS_ADDR")],
            "labels": {"__metrics_path__": format!("/{}.txt", m.name), "test": m.name},
        }]);
        write_atomically(&m.target, &sd.to_string());
        m.wait_for(&format!("{value}"));
        m
    }

    /// The query of this test's series.
    pub fn query(&self) -> String {
        format!("deploy_action_test_value{{test=\"{}\"}}", self.name)
    }

    /// Serves `value` from now on (Prometheus sees it within a scrape).
    pub fn set(&self, value: f64) {
        self.write_series(&[value]);
    }

    /// Serves several series of the metric (one per value).
    pub fn write_series(&self, values: &[f64]) {
        let text: String = values
            .iter()
            .enumerate()
            .map(|(i, v)| match values.len() {
                1 => format!("deploy_action_test_value {v}\n"),
                _ => format!("deploy_action_test_value{{series=\"{i}\"}} {v}\n"),
            })
            .collect();
        write_atomically(&self.file, &text);
    }

    /// Waits until Prometheus answers the query with `value`.
    pub fn wait_for(&self, value: &str) {
        let end = Instant::now() + Duration::from_secs(30);
        let mut last = String::new();
        while Instant::now() < end {
            last = query(&self.query());
            if last.contains(&format!(",\"{value}\"]")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("Prometheus never answered {} = {value} (last: {last})", self.query());
    }
}

impl Drop for Metric {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.target);
        let _ = std::fs::remove_file(&self.file);
    }
}

fn write_atomically(path: &PathBuf, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Prometheus's raw answer to an instant query.
pub fn query(q: &str) -> String {
    let mut url = url::Url::parse(&format!("{}/api/v1/query", prometheus_url())).unwrap();
    url.query_pairs_mut().append_pair("query", q);
    let out =
        std::process::Command::new("curl").args(["-s", "--max-time", "3", url.as_str()]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CloudWatch client for the stack's moto.
pub async fn cloudwatch() -> aws_sdk_cloudwatch::Client {
    aws_sdk_cloudwatch::Client::new(&super::moto_config().await)
}

/// A metric alarm in moto, named `<tag>-<run id>`, in state OK.
pub async fn alarm(cw: &aws_sdk_cloudwatch::Client, tag: &str) -> String {
    use aws_sdk_cloudwatch::types::{ComparisonOperator, StateValue, Statistic};
    let name = format!("{tag}-{}", unique_run_id());
    cw.put_metric_alarm()
        .alarm_name(&name)
        .namespace("deploy-action/tests")
        .metric_name("errors")
        .statistic(Statistic::Sum)
        .period(60)
        .evaluation_periods(1)
        .threshold(1.0)
        .comparison_operator(ComparisonOperator::GreaterThanThreshold)
        .send()
        .await
        .expect("moto creates the alarm");
    set_alarm(cw, &name, StateValue::Ok, "test: fine").await;
    name
}

pub async fn set_alarm(
    cw: &aws_sdk_cloudwatch::Client,
    name: &str,
    state: aws_sdk_cloudwatch::types::StateValue,
    reason: &str,
) {
    cw.set_alarm_state()
        .alarm_name(name)
        .state_value(state)
        .state_reason(reason)
        .send()
        .await
        .expect("moto sets the state");
}

pub async fn delete_alarm(cw: &aws_sdk_cloudwatch::Client, name: &str) {
    let _ = cw.delete_alarms().alarm_names(name).send().await;
}

/// A reading as recorded: (source, figure without its time, verdict).
pub type Reading = (String, String, String);

fn without_time(figure: &str) -> String {
    regex::Regex::new(r" at \d\d:\d\d:\d\dZ$").unwrap().replace(figure, "").into_owned()
}

/// The analysis readings of the job summary's "What users saw".
pub fn readings_in_summary(summary: &str) -> Vec<Reading> {
    super::summary_table(summary, "### What users saw")
        .into_iter()
        .filter(|r| r.len() == 4 && r[2].contains(" at "))
        .map(|r| {
            // A run of alike readings is one row: "N readings alike, the last: …".
            let figure = r[2].split_once(" readings alike, the last: ").map_or(r[2].as_str(), |(_, f)| f);
            (r[0].clone(), without_time(figure), r[3].clone())
        })
        .collect()
}

/// The analysis readings of a log: `source: figure at 12:00:01Z (verdict)`.
pub fn readings_in_log(text: &str) -> Vec<Reading> {
    let line = regex::Regex::new(r"^(.*?): (.*) at \d\d:\d\d:\d\dZ \((.*)\)$").unwrap();
    text.lines()
        .filter_map(|l| line.captures(l))
        .map(|c| (c[1].to_string(), c[2].to_string(), c[3].to_string()))
        .collect()
}
