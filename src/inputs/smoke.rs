//! `smoke-tests`: requests a person would make by hand after a deploy,
//! written down. Parsed and checked here, before anything is contacted;
//! run by [`crate::smoke`].

use std::time::Duration;

use serde::Deserialize;

use super::Problem;
use super::grammar;

/// Where a smoke test is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Aim {
    /// Hosts: to each candidate (before the switch) and through each
    /// host's nginx (after it).
    Path(String),
    /// Absolute URLs, sent once from the runner: `preview` before the
    /// switch (a Kubernetes preview Service's address), `live` after it
    /// (the environment's front door).
    Urls { live: Option<url::Url>, preview: Option<url::Url> },
}

/// One check, as validated.
#[derive(Debug, Clone)]
pub struct SmokeTest {
    pub name: String,
    pub method: http::Method,
    pub aim: Aim,
    /// The service of a `path` test (index into the services); 0 by default.
    pub service: Option<String>,
    /// `None`: any 2xx.
    pub status: Option<u16>,
    pub body: Option<String>,
    pub body_regex: Option<regex::Regex>,
    pub max_latency: Option<Duration>,
    /// Header values may name SSM secrets as `${NAME}` (the secret's
    /// variable name); they are filled in after the fetch.
    pub headers: Vec<(http::HeaderName, String)>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Raw {
    name: String,
    method: Option<String>,
    path: Option<String>,
    url: Option<String>,
    preview_url: Option<String>,
    service: Option<String>,
    status: Option<u16>,
    body: Option<String>,
    body_regex: Option<String>,
    max_latency: Option<String>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
}

/// The `${NAME}` references in a header value.
pub fn secret_refs(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(i) = rest.find("${") {
        let Some(j) = rest[i..].find('}') else { break };
        out.push(rest[i + 2..i + j].to_string());
        rest = &rest[i + j + 1..];
    }
    out
}

/// Parses the input (a YAML or JSON list); every problem is named.
// long: one independent check per field of a smoke test, each naming the test.
pub fn parse(text: &str, problems: &mut Vec<Problem>) -> Vec<SmokeTest> {
    let p = |m: String| Problem { input: "smoke-tests".into(), message: m };
    let raws: Vec<Raw> = match serde_yaml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            problems
                .push(p(format!("is not a list of smoke tests (name, path or url, status, body...): {e}")));
            return vec![];
        }
    };
    let mut out = Vec::new();
    for (i, r) in raws.into_iter().enumerate() {
        let at = |m: String| p(format!("[{i}] ({}): {m}", r.name));
        let before = problems.len();
        let url = |field: &str, v: &Option<String>, problems: &mut Vec<Problem>| {
            v.as_deref().and_then(|u| match url::Url::parse(u) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
                _ => {
                    problems.push(at(format!("{field} '{u}' must be an absolute http(s) URL")));
                    None
                }
            })
        };
        let (live, preview) = (url("url", &r.url, problems), url("preview-url", &r.preview_url, problems));
        let aim = match (&r.path, r.url.is_some() || r.preview_url.is_some()) {
            (Some(path), false) => match grammar::http_path(path) {
                Ok(path) => Some(Aim::Path(path)),
                Err(e) => {
                    problems.push(at(format!("path {e}")));
                    None
                }
            },
            (None, true) => Some(Aim::Urls { live, preview }),
            (Some(_), true) => {
                problems.push(at("give 'path' (each host) or 'url'/'preview-url' (once), not both".into()));
                None
            }
            (None, false) => {
                problems
                    .push(at("needs 'path' (sent to each host) or 'url' / 'preview-url' (sent once)".into()));
                None
            }
        };
        let method = match r.method.as_deref().unwrap_or("GET").to_ascii_uppercase().as_str() {
            m @ ("GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS") => {
                http::Method::from_bytes(m.as_bytes()).ok()
            }
            m => {
                problems
                    .push(at(format!("method '{m}' must be GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS")));
                None
            }
        };
        if r.status.is_some_and(|s| !(100..=599).contains(&s)) {
            problems.push(at("status must be an HTTP status code (100-599)".into()));
        }
        let body_regex = r.body_regex.as_deref().and_then(|re| {
            regex::Regex::new(re)
                .map_err(|e| problems.push(at(format!("body-regex does not compile: {e}"))))
                .ok()
        });
        let max_latency = r.max_latency.as_deref().and_then(|d| {
            grammar::duration(d).map_err(|e| problems.push(at(format!("max-latency {e}")))).ok()
        });
        let mut headers = Vec::new();
        for (k, v) in &r.headers {
            match http::HeaderName::from_bytes(k.as_bytes()) {
                Ok(h) => headers.push((h, v.clone())),
                Err(_) => problems.push(at(format!("header name '{k}' is not a valid HTTP header name"))),
            }
            for name in secret_refs(v) {
                if let Err(e) = grammar::env_name(&name) {
                    problems.push(at(format!("header {k}: ${{{name}}} {e}")));
                }
            }
        }
        if r.name.trim().is_empty() {
            problems.push(at("needs a name".into()));
        }
        if problems.len() > before {
            continue;
        }
        if let (Some(aim), Some(method)) = (aim, method) {
            out.push(SmokeTest {
                name: r.name,
                method,
                aim,
                service: r.service,
                status: r.status,
                body: r.body,
                body_regex,
                max_latency,
                headers,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_parses_and_every_problem_is_named() {
        let mut problems = vec![];
        let tests = parse(
            "- {name: home, path: /, status: 200, body: Welcome, max-latency: 2s}\n\
             - {name: api, url: 'https://shop.example/api', method: post, headers: {Authorization: 'Bearer ${SMOKE_TOKEN}'}}\n",
            &mut problems,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(tests.len(), 2);
        assert_eq!(tests[0].aim, Aim::Path("/".into()));
        assert_eq!(tests[1].method, http::Method::POST);
        assert_eq!(secret_refs(&tests[1].headers[0].1), ["SMOKE_TOKEN"]);

        let mut problems = vec![];
        parse(
            "- {name: a}\n- {name: b, path: /, url: 'https://x.example'}\n- {name: c, url: 'ftp://x'}\n\
             - {name: d, path: /, method: BREW, status: 999, body-regex: '(', max-latency: soon, headers: {'bad header': x, H: '${1X}'}}\n",
            &mut problems,
        );
        let text = problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n");
        for want in [
            "[0] (a): needs 'path'",
            "[1] (b): give 'path'",
            "[2] (c): url 'ftp://x' must be an absolute http(s) URL",
            "method 'BREW'",
            "status must be",
            "body-regex does not compile",
            "max-latency must be",
            "header name 'bad header'",
            "${1X}",
        ] {
            assert!(text.contains(want), "{want:?} not in:\n{text}");
        }
    }
}
