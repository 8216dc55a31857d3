//! The analysis inputs: CloudWatch alarms (`rollback-alarms`) and a
//! Prometheus query (`prometheus-url`, `analysis-query`, `analysis-max`,
//! `analysis-min`), read every `analysis-interval` during the observe
//! window. Pure: strings in, an [`AnalysisSpec`] and every problem out.

use std::time::Duration;

use super::grammar as g;
use super::raw::RawInputs;
use super::{Problem, StrategyKind, TargetKind};

/// How often a source is read when `analysis-interval` is unset.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// `DescribeAlarms` takes at most 100 names in one call.
pub const MAX_ALARMS: usize = 100;

/// What the observe window reads besides the action's own health checks.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisSpec {
    pub interval: Duration,
    /// CloudWatch alarm names; any in `ALARM` rolls back.
    pub alarms: Vec<String>,
    /// The region of the alarms (`aws-region`, else `AWS_REGION`).
    pub region: Option<String>,
    pub query: Option<QuerySpec>,
}

/// A PromQL query and the bounds its value must stay within.
#[derive(Debug, Clone, PartialEq)]
pub struct QuerySpec {
    pub url: url::Url,
    pub query: String,
    pub max: Option<f64>,
    pub min: Option<f64>,
}

fn number(input: &str, s: &str) -> Result<f64, String> {
    let hint = if s.ends_with('%') {
        format!(" (the query's value is compared as it is: write {} for {s})", percent(s))
    } else {
        String::new()
    };
    match s.parse::<f64>() {
        Ok(n) if n.is_finite() => Ok(n),
        _ => Err(format!("'{s}' is not a number; {input} is a plain number like 0.1 or 250{hint}")),
    }
}

fn percent(s: &str) -> String {
    s.trim_end_matches('%').trim().parse::<f64>().map(|p| (p / 100.0).to_string()).unwrap_or("0.1".into())
}

/// Reads the analysis inputs. `region` is the run's AWS region (already
/// checked where `aws-region` is read). `None` when no source is set.
// long: one independent check per analysis input (alarms, the Prometheus query, its limits and interval), in action.yml's order.
pub fn read(
    raw: &RawInputs,
    region: Option<&str>,
    target: TargetKind,
    strategy: StrategyKind,
) -> (Option<AnalysisSpec>, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut problem = |input: &str, message: String| {
        problems.push(Problem { input: input.into(), message });
    };
    let interval = match raw.analysis_interval.as_deref().map(str::trim) {
        None => DEFAULT_INTERVAL,
        Some(s) => match g::duration(s) {
            Ok(d) if d >= Duration::from_secs(1) => d,
            Ok(_) => {
                problem("analysis-interval", "must be at least 1s".into());
                DEFAULT_INTERVAL
            }
            Err(e) => {
                problem("analysis-interval", e);
                DEFAULT_INTERVAL
            }
        },
    };

    let alarms = match raw.rollback_alarms.as_deref() {
        None => Vec::new(),
        Some(s) => match g::strict_list(s) {
            Ok(names) => {
                if names.is_empty() {
                    problem(
                        "rollback-alarms",
                        "names no alarm; list CloudWatch alarm names, one per line or comma-separated".into(),
                    );
                }
                if names.len() > MAX_ALARMS {
                    problem("rollback-alarms", format!("names {} alarms; at most {MAX_ALARMS}", names.len()));
                }
                for (i, n) in names.iter().enumerate() {
                    if n.chars().count() > 255 || n.chars().any(char::is_control) {
                        problem(
                            "rollback-alarms",
                            format!("'{n}' is not a CloudWatch alarm name (1-255 printable characters)"),
                        );
                    }
                    if names[..i].contains(n) {
                        problem("rollback-alarms", format!("'{n}' is named twice"));
                    }
                }
                names
            }
            Err(e) => {
                problem("rollback-alarms", e);
                Vec::new()
            }
        },
    };
    // An `aws-region` that does not parse is named where it is read.
    match region {
        None if !alarms.is_empty() && raw.aws_region.is_none() => problem(
            "aws-region",
            "is required for rollback-alarms (the alarms' region; or set AWS_REGION, e.g. with aws-actions/configure-aws-credentials)".into(),
        ),
        Some(r) if !alarms.is_empty() && raw.aws_region.is_none() => {
            if let Err(e) = g::aws_region(r) {
                problem("aws-region", format!("not set, and AWS_REGION from the environment: {e}"));
            }
        }
        _ => {}
    }

    let query = raw.analysis_query.as_deref().map(str::trim).filter(|q| !q.is_empty());
    let url = raw.prometheus_url.as_deref().map(str::trim).and_then(|u| match g::http_url(u) {
        Ok(url) if !url.username().is_empty() || url.password().is_some() => {
            problem(
                "prometheus-url",
                "must not carry credentials (this version sends no authentication to Prometheus)".into(),
            );
            None
        }
        Ok(url) if url.query().is_some() || url.fragment().is_some() => {
            problem(
                "prometheus-url",
                "must be the server's base URL, like http://prometheus:9090, without a query or fragment"
                    .into(),
            );
            None
        }
        Ok(url) => Some(url),
        Err(e) => {
            problem(
                "prometheus-url",
                format!("{e}, the Prometheus server's base URL like http://prometheus:9090"),
            );
            None
        }
    });
    let bound = |input: &str, v: &Option<String>, problem: &mut dyn FnMut(&str, String)| {
        v.as_deref().map(str::trim).and_then(|s| number(input, s).map_err(|e| problem(input, e)).ok())
    };
    let max = bound("analysis-max", &raw.analysis_max, &mut problem);
    let min = bound("analysis-min", &raw.analysis_min, &mut problem);
    if let (Some(lo), Some(hi)) = (min, max)
        && lo > hi
    {
        problem("analysis-min", format!("{lo} is above analysis-max {hi}: no value could pass"));
    }
    let any_bound = raw.analysis_max.is_some() || raw.analysis_min.is_some();
    match (query, raw.prometheus_url.is_some(), any_bound) {
        (None, false, false) => {}
        (None, _, _) => problem("analysis-query", "is required with prometheus-url, analysis-max or analysis-min (the PromQL whose value is judged)".into()),
        (Some(_), has_url, has_bound) => {
            if !has_url {
                problem("prometheus-url", "is required with analysis-query (the Prometheus server's base URL)".into());
            }
            if !has_bound {
                problem("analysis-max", "analysis-query needs analysis-max or analysis-min (or both): the bounds its value must stay within".into());
            }
        }
    }
    let query = match (query, url) {
        (Some(q), Some(url)) => Some(QuerySpec { url, query: q.to_string(), max, min }),
        _ => None,
    };

    // A rolling update on a cluster has no window to watch in.
    if (!alarms.is_empty() || query.is_some())
        && target == TargetKind::Kubernetes
        && strategy == StrategyKind::Rolling
    {
        let input = if alarms.is_empty() { "analysis-query" } else { "rollback-alarms" };
        problem(
            input,
            "needs an observe window: on target 'kubernetes' use strategy 'blue-green' or 'canary' (a rolling update has none)".into(),
        );
    }
    let spec = (!alarms.is_empty() || query.is_some()).then(|| AnalysisSpec {
        interval,
        alarms,
        region: region.map(String::from),
        query,
    });
    (spec, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&str, &str)]) -> RawInputs {
        let env = crate::inputs::Env::from_pairs(
            pairs.iter().map(|(k, v)| (format!("INPUT_{}", k.to_uppercase()), *v)),
        );
        crate::inputs::raw::read(&env).unwrap().0
    }

    fn problems(pairs: &[(&str, &str)], region: Option<&str>) -> Vec<String> {
        read(&raw(pairs), region, TargetKind::Hosts, StrategyKind::BlueGreen)
            .1
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    #[test]
    fn nothing_set_is_no_analysis() {
        let (spec, p) = read(&raw(&[]), None, TargetKind::Hosts, StrategyKind::BlueGreen);
        assert!(spec.is_none() && p.is_empty());
    }

    #[test]
    fn a_query_with_its_bounds() {
        let (spec, p) = read(
            &raw(&[
                ("prometheus-url", "http://prom:9090/"),
                ("analysis-query", " sum(rate(errors[1m])) "),
                ("analysis-max", "0.1"),
                ("analysis-interval", "5s"),
            ]),
            None,
            TargetKind::Hosts,
            StrategyKind::BlueGreen,
        );
        assert!(p.is_empty(), "{p:?}");
        let spec = spec.unwrap();
        assert_eq!(spec.interval, Duration::from_secs(5));
        let q = spec.query.unwrap();
        assert_eq!((q.query.as_str(), q.max, q.min), ("sum(rate(errors[1m]))", Some(0.1), None));
    }

    #[test]
    fn every_problem_is_named_with_its_input() {
        let p = problems(
            &[
                ("prometheus-url", "ftp://prom"),
                ("analysis-query", "up"),
                ("analysis-max", "10%"),
                ("analysis-min", "lots"),
                ("analysis-interval", "200ms"),
                ("rollback-alarms", "a,b,a"),
            ],
            None,
        );
        for want in [
            "input 'prometheus-url': must be an http:// or https:// URL",
            "input 'analysis-max': '10%' is not a number; analysis-max is a plain number like 0.1 or 250 (the query's value is compared as it is: write 0.1 for 10%)",
            "input 'analysis-min': 'lots' is not a number",
            "input 'analysis-interval': must be at least 1s",
            "input 'rollback-alarms': 'a' is named twice",
            "input 'aws-region': is required for rollback-alarms",
        ] {
            assert!(p.iter().any(|x| x.starts_with(want)), "{want}: {p:?}");
        }
    }

    #[test]
    fn a_query_needs_a_server_and_a_bound_and_a_bound_needs_a_query() {
        let p = problems(&[("analysis-query", "up")], None);
        assert!(p.iter().any(|x| x.starts_with("input 'prometheus-url': is required")), "{p:?}");
        assert!(p.iter().any(|x| x.starts_with("input 'analysis-max': analysis-query needs")), "{p:?}");
        let p = problems(&[("analysis-max", "1")], None);
        assert!(p.iter().any(|x| x.starts_with("input 'analysis-query': is required")), "{p:?}");
        let p = problems(
            &[
                ("prometheus-url", "http://u:pw@prom"),
                ("analysis-query", "up"),
                ("analysis-min", "2"),
                ("analysis-max", "1"),
            ],
            None,
        );
        assert!(p.iter().any(|x| x.contains("must not carry credentials")), "{p:?}");
        assert!(p.iter().any(|x| x.starts_with("input 'analysis-min': 2 is above analysis-max 1")), "{p:?}");
    }

    #[test]
    fn alarms_take_the_run_region_and_need_a_window_on_a_cluster() {
        let (spec, p) = read(
            &raw(&[("rollback-alarms", "api-5xx\ndb cpu")]),
            Some("eu-west-1"),
            TargetKind::Hosts,
            StrategyKind::Rolling,
        );
        assert!(p.is_empty(), "{p:?}");
        let spec = spec.unwrap();
        assert_eq!(spec.alarms, ["api-5xx", "db cpu"]);
        assert_eq!((spec.region.as_deref(), spec.interval), (Some("eu-west-1"), DEFAULT_INTERVAL));
        let (_, p) = read(
            &raw(&[("rollback-alarms", "a")]),
            Some("eu-west-1"),
            TargetKind::Kubernetes,
            StrategyKind::Rolling,
        );
        assert!(p[0].to_string().starts_with("input 'rollback-alarms': needs an observe window"), "{p:?}");
        // A JSON array keeps a comma inside a name.
        let (spec, _) = read(
            &raw(&[("rollback-alarms", r#"["p99, api"]"#)]),
            Some("eu-west-1"),
            TargetKind::Kubernetes,
            StrategyKind::Canary,
        );
        assert_eq!(spec.unwrap().alarms, ["p99, api"]);
    }
}
