//! What users saw through nginx since the switch, from nginx's own access
//! log on the host: no agent, no metrics system. Pure: bytes in, a
//! [`Tally`] out; the host target reads the bytes (see `HostTarget`).
//!
//! Each line's status comes from the stock `combined` format (and any
//! format that starts like it). Timing comes from the keys docs/after-the-switch.md's
//! `log_format deploy_action` adds (`rt=$request_time`,
//! `urt=$upstream_response_time`, `ua=$upstream_addr`); without them the
//! tally has counts and no latency. The action's own probes (User-Agent
//! `deploy-action`) are not users and are left out.

use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;

use super::error::HostFailure;

/// The action's own User-Agent (its probes through nginx).
pub const OWN_AGENT: &str = "deploy-action";

/// One request as the log line tells it.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub status: u16,
    /// `rt=` (else `urt=`), when the format carries it.
    pub seconds: Option<f64>,
    /// The upstream ports (`ua=127.0.0.1:8082`; several when nginx retried).
    pub upstream_ports: Vec<u16>,
    pub own: bool,
}

/// Parses one line; `None` when it does not start like `combined`.
pub fn parse(line: &str) -> Option<Line> {
    // $remote_addr - $remote_user [$time_local] "$request" $status $bytes "$referer" "$agent"
    static COMBINED: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r#"^\S+ \S+ \S+ \[[^\]]*\] "[^"]*" (\d{3}) \S+(?: "[^"]*" "([^"]*)")?"#).expect("regex")
    });
    // nginx joins several upstreams' values with ", " (and " : " across an
    // internal redirect).
    static KEY: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(?:^| )(rt|urt|ua)=([^\s,]+(?:(?:, | : )[^\s,]+)*)").expect("regex"));
    let m = COMBINED.captures(line)?;
    let status = m[1].parse().ok()?;
    let own = m.get(2).is_some_and(|a| a.as_str() == OWN_AGENT);
    let rest = &line[m.get(0)?.end()..];
    let (mut rt, mut urt, mut ports) = (None, None, Vec::new());
    for k in KEY.captures_iter(rest) {
        match &k[1] {
            "rt" => rt = k[2].parse::<f64>().ok(),
            // Several upstreams tried: "0.004, 0.010" or "0.004 : 0.010"; the
            // last one answered.
            "urt" => urt = k[2].rsplit([',', ':']).next().and_then(|v| v.trim().parse::<f64>().ok()),
            _ => {
                ports = k[2]
                    .split([',', ' ', ':'])
                    .filter_map(|p| p.trim().parse::<u16>().ok())
                    .filter(|p| *p > 0)
                    .collect()
            }
        }
    }
    Some(Line { status, seconds: rt.or(urt), upstream_ports: ports, own })
}

/// The requests counted so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    pub requests: u64,
    pub errors: u64,
    /// Every timing seen (seconds), for the p95.
    seconds: Vec<f64>,
    /// Lines that were not in a known format.
    pub unparsed: u64,
}

impl Tally {
    /// Adds whole lines of `text`; `ports` (the candidate's) keeps only the
    /// requests it served when lines name their upstream.
    pub fn add(&mut self, text: &str, ports: &[u16]) {
        for raw in text.lines().filter(|l| !l.trim().is_empty()) {
            let Some(l) = parse(raw) else {
                self.unparsed += 1;
                continue;
            };
            if l.own || (!l.upstream_ports.is_empty() && !l.upstream_ports.iter().any(|p| ports.contains(p)))
            {
                continue;
            }
            self.requests += 1;
            if l.status >= 500 {
                self.errors += 1;
            }
            if let Some(s) = l.seconds {
                self.seconds.push(s);
            }
        }
    }

    /// The 5xx share, 0..1.
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 { 0.0 } else { self.errors as f64 / self.requests as f64 }
    }

    /// The 95th percentile of the timings, when the format carries them.
    pub fn p95(&self) -> Option<Duration> {
        if self.seconds.is_empty() {
            return None;
        }
        // Judged every round over every timing so far: a selection, not a sort.
        let mut s = self.seconds.clone();
        let at = (((s.len() as f64) * 0.95).ceil() as usize).clamp(1, s.len()) - 1;
        let (_, p95, _) = s.select_nth_unstable_by(at, f64::total_cmp);
        Some(Duration::from_secs_f64(p95.max(0.0)))
    }

    /// One line for the log and the summary.
    pub fn describe(&self) -> String {
        let latency = match self.p95() {
            Some(p) => format!("p95 {}ms", p.as_millis()),
            None => "no timing in the log format".into(),
        };
        format!(
            "{} request(s), {} 5xx ({:.1}%), {latency}",
            self.requests,
            self.errors,
            self.error_rate() * 100.0
        )
    }
}

pub use crate::inputs::Limits;

/// Why the tally breaks a limit: `(kind, message)`; `None` when it holds
/// or there are too few requests to judge.
pub fn breach(t: &Tally, l: &Limits) -> Option<(HostFailure, String)> {
    if t.requests < l.min_requests {
        return None;
    }
    if let Some(max) = l.max_error_rate
        && t.error_rate() > max
    {
        return Some((
            HostFailure::ErrorRateExceeded,
            format!(
                "{} of {} requests through nginx answered 5xx ({:.1}%), above max-error-rate {:.1}%",
                t.errors,
                t.requests,
                t.error_rate() * 100.0,
                max * 100.0
            ),
        ));
    }
    if let (Some(max), Some(p95)) = (l.max_latency, t.p95())
        && p95 > max
    {
        return Some((
            HostFailure::LatencyExceeded,
            format!(
                "p95 latency through nginx was {}ms over {} requests, above max-latency {}ms",
                p95.as_millis(),
                t.requests,
                max.as_millis()
            ),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMBINED: &str =
        r#"127.0.0.1 - - [02/Dec/2026:02:10:00 +0000] "GET /orders?id=1 HTTP/1.1" 502 157 "-" "wrk/4.2""#;
    const OURS: &str = r#"127.0.0.1 - - [02/Dec/2026:02:10:00 +0000] "GET / HTTP/1.1" 200 12 "-" "curl/8" rt=0.250 urt=0.248 ua=127.0.0.1:8082"#;

    #[test]
    fn the_stock_combined_format_gives_status_and_no_timing() {
        let l = parse(COMBINED).unwrap();
        assert_eq!((l.status, l.seconds, l.own), (502, None, false));
        assert!(l.upstream_ports.is_empty());
    }

    #[test]
    fn the_recommended_format_gives_timing_and_the_upstream() {
        let l = parse(OURS).unwrap();
        assert_eq!((l.status, l.seconds, l.upstream_ports.clone()), (200, Some(0.25), vec![8082]));
        let retried = r#"1.2.3.4 - - [x] "GET / HTTP/1.1" 200 1 "-" "a" urt=0.004, 0.900 ua=127.0.0.1:8081, 127.0.0.1:8082"#;
        let l = parse(retried).unwrap();
        assert_eq!((l.seconds, l.upstream_ports), (Some(0.9), vec![8081, 8082]));
        assert!(parse("not a log line").is_none());
        assert!(parse(&OURS.replace("\"curl/8\"", "\"deploy-action\"")).unwrap().own);
    }

    #[test]
    fn a_tally_counts_users_of_the_candidate_only() {
        let mut t = Tally::default();
        let other_backend = OURS.replace("8082", "8081");
        let own = OURS.replace("\"curl/8\"", "\"deploy-action\"");
        let text = [COMBINED, OURS, &other_backend, &own, "garbage"].join("\n");
        t.add(&text, &[8082]);
        // COMBINED names no upstream: counted; the other backend and our
        // own probe are not.
        assert_eq!((t.requests, t.errors, t.unparsed), (2, 1, 1));
        assert_eq!(t.p95(), Some(Duration::from_millis(250)));
    }

    #[test]
    fn limits_judge_only_past_min_requests() {
        let mut t = Tally::default();
        for i in 0..10 {
            t.add(&if i < 3 { COMBINED.to_string() } else { COMBINED.replace(" 502 ", " 200 ") }, &[]);
        }
        let l = Limits { max_error_rate: Some(0.10), max_latency: None, min_requests: 20 };
        assert_eq!(breach(&t, &l), None, "10 requests are below min-requests");
        let (reason, msg) = breach(&t, &Limits { min_requests: 10, ..l }).unwrap();
        assert_eq!(reason, HostFailure::ErrorRateExceeded);
        assert!(msg.contains("3 of 10") && msg.contains("30.0%") && msg.contains("10.0%"), "{msg}");
        let mut slow = Tally::default();
        for ms in [100, 200, 6000, 7000] {
            slow.add(&OURS.replace("rt=0.250", &format!("rt={}", ms as f64 / 1000.0)), &[8082]);
        }
        let l =
            Limits { max_error_rate: Some(0.1), max_latency: Some(Duration::from_secs(5)), min_requests: 1 };
        let (reason, msg) = breach(&slow, &l).unwrap();
        assert_eq!(reason, HostFailure::LatencyExceeded);
        assert!(msg.contains("7000ms") && msg.contains("5000ms"), "{msg}");
    }
}
