//! A PromQL instant query (`analysis-query`) read through Prometheus's HTTP
//! API (`GET <prometheus-url>/api/v1/query`), its value judged against
//! `analysis-max` / `analysis-min`.
//!
//! A reading must be one number: a scalar, or a vector of exactly one
//! series. No series, several series, a range vector or `NaN` is a reading
//! that cannot be judged (it counts toward the error limit), each with the
//! fix in its message. The server refusing the query (HTTP 400, `bad_data`)
//! is a settings error: fatal before the deploy.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::{AnalysisError, Figure, ReadError, Source, Verdict, When};
use crate::inputs::QuerySpec;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The query as messages quote it: whitespace collapsed, cut at 160 chars.
pub fn shown(query: &str) -> String {
    let one_line = query.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(160) {
        Some((at, _)) => format!("{}…", &one_line[..at]),
        None => one_line,
    }
}

/// `max 0.1`, `min 0.5`, `min 0.5, max 0.9`.
pub fn threshold(min: Option<f64>, max: Option<f64>) -> String {
    match (min, max) {
        (Some(lo), Some(hi)) => format!("min {lo}, max {hi}"),
        (Some(lo), None) => format!("min {lo}"),
        (None, Some(hi)) => format!("max {hi}"),
        (None, None) => String::new(),
    }
}

/// Judges one value (as Prometheus wrote it) against the bounds.
pub fn judge(query: &str, value: &str, min: Option<f64>, max: Option<f64>) -> Verdict {
    let Ok(v) = value.parse::<f64>() else {
        return Verdict::Unreadable(format!("'{value}' is not a number"));
    };
    if v.is_nan() {
        return Verdict::Unreadable(
            "the value is NaN (no data, e.g. a ratio over no requests); to read no data as 0, write (QUERY) >= 0 or vector(0)".into(),
        );
    }
    let bound = match (min, max) {
        (_, Some(hi)) if v > hi => format!("above analysis-max {hi}"),
        (Some(lo), _) if v < lo => format!("below analysis-min {lo}"),
        _ => return Verdict::Ok,
    };
    Verdict::Breach(AnalysisError::QueryBreached {
        query: shown(query),
        value: value.to_string(),
        bound,
        when: When::Window,
    })
}

/// The one value of a successful answer's `data`, or why there is none.
pub fn value_of(data: &Value) -> Result<String, String> {
    let sample = |v: &Value| v.get(1).and_then(Value::as_str).map(String::from);
    let result = &data["result"];
    match data["resultType"].as_str() {
        Some("scalar") => sample(result).ok_or_else(|| "the scalar has no value".into()),
        Some("vector") => {
            let series = result.as_array().map(Vec::as_slice).unwrap_or_default();
            match series {
                [] => Err("it returned no series; a query must return one value: add `or vector(0)` where no series means 0".into()),
                [one] => sample(&one["value"]).ok_or_else(|| "the series has no value".into()),
                many => Err(format!(
                    "it returned {} series (the first: {}); aggregate them to one, e.g. sum(...) or max(...)",
                    many.len(),
                    many[0]["metric"]
                )),
            }
        }
        Some("matrix") => {
            Err("it returned a range vector; use an instant query (e.g. rate(x[5m]), not x[5m])".into())
        }
        Some(other) => Err(format!("it returned a {other}, not a number")),
        None => Err("the answer has no resultType".into()),
    }
}

/// `analysis-query` on its server.
pub struct Query {
    client: reqwest::Client,
    /// The server's base URL, for messages.
    base: String,
    endpoint: url::Url,
    spec: QuerySpec,
}

impl Query {
    /// # Errors
    /// A client that cannot be built (no TLS roots).
    pub fn new(spec: &QuerySpec) -> Result<Self, AnalysisError> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(super::READ_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| AnalysisError::QueryInvalid {
                url: spec.url.to_string(),
                query: shown(&spec.query),
                message: format!("no HTTP client: {e}"),
            })?;
        let mut endpoint = spec.url.clone();
        endpoint.set_path(&format!("{}/api/v1/query", spec.url.path().trim_end_matches('/')));
        endpoint.query_pairs_mut().append_pair("query", &spec.query);
        Ok(Self { client, base: spec.url.to_string(), endpoint, spec: spec.clone() })
    }

    fn figure(&self, value: &str, verdict: Verdict) -> Figure {
        Figure {
            source: format!("analysis query '{}'", shown(&self.spec.query)),
            value: value.to_string(),
            threshold: threshold(self.spec.min, self.spec.max),
            verdict,
        }
    }
}

#[async_trait]
impl Source for Query {
    fn name(&self) -> String {
        format!("analysis query '{}' ({})", shown(&self.spec.query), threshold(self.spec.min, self.spec.max))
    }

    fn unavailable_code(&self) -> &'static str {
        "analysis_unavailable"
    }

    async fn read(&self) -> Result<Vec<Figure>, ReadError> {
        let answer = self.client.get(self.endpoint.clone()).send().await.map_err(|e| {
            ReadError::Failed(format!("cannot reach Prometheus at {}: {}", self.base, e.without_url()))
        })?;
        let status = answer.status();
        let text = answer.text().await.map_err(|e| {
            ReadError::Failed(format!(
                "Prometheus at {} did not finish its answer: {}",
                self.base,
                e.without_url()
            ))
        })?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let error = || match (body["errorType"].as_str(), body["error"].as_str()) {
            (Some(t), Some(e)) => format!("{t}: {e}"),
            _ => text.chars().take(200).collect(),
        };
        if status == reqwest::StatusCode::BAD_REQUEST {
            return Err(ReadError::Refused(AnalysisError::QueryInvalid {
                url: self.base.clone(),
                query: shown(&self.spec.query),
                message: error(),
            }));
        }
        if !status.is_success() || body["status"] != "success" {
            return Err(ReadError::Failed(format!(
                "Prometheus at {} answered HTTP {}: {}",
                self.base,
                status.as_u16(),
                error()
            )));
        }
        Ok(vec![match value_of(&body["data"]) {
            Ok(value) => {
                let verdict = judge(&self.spec.query, &value, self.spec.min, self.spec.max);
                self.figure(&value, verdict)
            }
            Err(why) => self.figure("-", Verdict::Unreadable(why)),
        }])
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn one_number_or_the_fix() {
        let scalar = json!({"resultType": "scalar", "result": [1700000000.1, "0.31"]});
        assert_eq!(value_of(&scalar).unwrap(), "0.31");
        let one = json!({"resultType": "vector", "result": [{"metric": {}, "value": [1.0, "2"]}]});
        assert_eq!(value_of(&one).unwrap(), "2");
        let none = json!({"resultType": "vector", "result": []});
        assert!(value_of(&none).unwrap_err().contains("or vector(0)"));
        let two = json!({"resultType": "vector", "result": [
            {"metric": {"job": "a"}, "value": [1.0, "2"]}, {"metric": {"job": "b"}, "value": [1.0, "3"]}]});
        let e = value_of(&two).unwrap_err();
        assert!(e.contains("2 series") && e.contains(r#"{"job":"a"}"#) && e.contains("sum(...)"), "{e}");
        let range = json!({"resultType": "matrix", "result": []});
        assert!(value_of(&range).unwrap_err().contains("range vector"));
    }

    #[test]
    fn bounds() {
        let q = "sum(rate(errors[1m]))";
        assert!(matches!(judge(q, "0.05", None, Some(0.1)), Verdict::Ok));
        assert!(matches!(judge(q, "0.1", None, Some(0.1)), Verdict::Ok), "the bound itself passes");
        let Verdict::Breach(e) = judge(q, "0.31", None, Some(0.1)) else { panic!() };
        assert_eq!(
            e.to_string(),
            "analysis query 'sum(rate(errors[1m]))' = 0.31, above analysis-max 0.1 during the observe window"
        );
        assert_eq!(e.reason(), "analysis_breached");
        let Verdict::Breach(e) = judge(q, "0.2", Some(0.5), Some(0.9)) else { panic!() };
        assert!(e.to_string().contains("= 0.2, below analysis-min 0.5"), "{e}");
        assert!(matches!(judge(q, "+Inf", None, Some(1.0)), Verdict::Breach(_)));
        assert!(matches!(judge(q, "NaN", None, Some(1.0)), Verdict::Unreadable(_)));
        assert_eq!(threshold(Some(0.5), Some(0.9)), "min 0.5, max 0.9");
    }

    #[test]
    fn long_queries_are_quoted_on_one_line() {
        assert_eq!(shown("sum(\n  rate(x[1m])\n)"), "sum( rate(x[1m]) )");
        assert!(shown(&"a".repeat(400)).ends_with('…'));
    }

    #[test]
    fn the_endpoint_keeps_a_path_prefix() {
        let spec =
            |u: &str| QuerySpec { url: u.parse().unwrap(), query: "a+b".into(), max: Some(1.0), min: None };
        let q = Query::new(&spec("http://h:9090/")).unwrap();
        assert_eq!(q.endpoint.as_str(), "http://h:9090/api/v1/query?query=a%2Bb");
        let q = Query::new(&spec("https://h/prometheus")).unwrap();
        assert_eq!(q.endpoint.as_str(), "https://h/prometheus/api/v1/query?query=a%2Bb");
    }
}
