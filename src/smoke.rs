//! Runs `smoke-tests` ([`crate::inputs::smoke`]): `path` tests on each
//! host (to the candidate before the switch, through nginx after it),
//! `url` tests once from the runner after the switch, `preview-url` tests
//! once before it. A failure names the test, the answer's status, its first
//! line (redacted) and its latency; every result goes in the summary.

use tokio::time::Instant;

use crate::error::Error;
use crate::inputs::smoke::{Aim, SmokeTest, secret_refs};
use crate::probe::{Probe, REQUEST_TIMEOUT, Request, Via, body_start};
use crate::runner::Runner;
use crate::secrets::SecretValue;
use crate::targets::{Release, Target};

/// The tests with their headers' secrets resolved.
pub struct Suite {
    tests: Vec<(SmokeTest, Vec<(http::HeaderName, SecretValue)>)>,
    /// The live `url` tests run once per deploy, however many hosts ask.
    live: tokio::sync::OnceCell<Result<(), String>>,
    client: reqwest::Client,
}

impl Suite {
    /// Fills `${NAME}` in headers from the app's secrets.
    ///
    /// # Errors
    /// `smoke_secret_missing` naming the test and the variable.
    pub fn new(tests: &[SmokeTest], secrets: &[(String, SecretValue)]) -> Result<Option<Suite>, Error> {
        if tests.is_empty() {
            return Ok(None);
        }
        let mut out = Vec::new();
        for t in tests {
            let mut headers = Vec::new();
            for (name, template) in &t.headers {
                let mut value = template.clone();
                for var in secret_refs(template) {
                    let Some((_, v)) = secrets.iter().find(|(k, _)| *k == var) else {
                        return Err(Error::SmokeSecretMissing {
                            message: format!(
                                "smoke test '{}' header {name} uses ${{{var}}}, which is not one of the app's secrets from SSM ({})",
                                t.name,
                                if secrets.is_empty() {
                                    "none were fetched".to_string()
                                } else {
                                    secrets.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", ")
                                }
                            ),
                        });
                    };
                    value = value.replace(&format!("${{{var}}}"), v.expose());
                }
                headers.push((name.clone(), SecretValue::new(value)));
            }
            out.push((t.clone(), headers));
        }
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent("deploy-action")
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Other(format!("http client: {e}")))?;
        Ok(Some(Suite { tests: out, live: Default::default(), client }))
    }

    /// The `path` tests, sent to `target` `via` the candidate or nginx.
    ///
    /// # Errors
    /// `smoke_test_failed` for the first failing test.
    pub async fn run_paths(
        &self,
        target: &dyn Target,
        release: &Release,
        via: Via,
        runner: &Runner,
    ) -> Result<(), Error> {
        let when = if via == Via::Candidate { "candidate" } else { "through nginx" };
        for (t, headers) in &self.tests {
            let Aim::Path(path) = &t.aim else { continue };
            let service = match &t.service {
                Some(s) => release.services.iter().position(|x| x.name == *s).unwrap_or(0),
                None => release.services.iter().position(|x| x.behind_proxy).unwrap_or(0),
            };
            let req = Request { method: t.method.clone(), path: path.clone(), headers: headers.clone() };
            let got = target.request(release, service, via, &req).await;
            let shown = format!("{} {path} ({when})", t.method);
            self.judge_and_record(t, &shown, got, Some(target.name()), runner)
                .map_err(|message| Error::Smoke { unit: target.name().into(), message })?;
        }
        Ok(())
    }

    /// The `preview-url` tests (before the switch) or the `url` tests
    /// (after it; once per deploy, every caller gets the same verdict).
    ///
    /// # Errors
    /// `smoke_test_failed` for the first failing test.
    pub async fn run_urls(&self, preview: bool, runner: &Runner) -> Result<(), Error> {
        let fail = |message| Error::Smoke { unit: "smoke-tests".into(), message };
        if preview {
            return self.urls(true, runner).await.map_err(fail);
        }
        self.live.get_or_init(|| self.urls(false, runner)).await.clone().map_err(fail)
    }

    async fn urls(&self, preview: bool, runner: &Runner) -> Result<(), String> {
        for (t, headers) in &self.tests {
            let Aim::Urls { live, preview: p } = &t.aim else { continue };
            let Some(url) = (if preview { p } else { live }) else { continue };
            let mut req = self.client.request(t.method.clone(), url.clone());
            for (k, v) in headers {
                req = req.header(k, v.expose());
            }
            let started = Instant::now();
            let got = match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let body = resp.text().await.unwrap_or_default();
                    Ok(Probe { status, latency: started.elapsed(), body, upstream: None })
                }
                Err(e) => Err(format!("{url}: {}", without_url(&e))),
            };
            let shown = format!("{} {url}{}", t.method, if preview { " (preview)" } else { "" });
            self.judge_and_record(t, &shown, got, None, runner)?;
        }
        Ok(())
    }

    fn judge_and_record(
        &self,
        t: &SmokeTest,
        shown: &str,
        got: Result<Probe, impl std::fmt::Display>,
        unit: Option<&str>,
        runner: &Runner,
    ) -> Result<(), String> {
        let check = format!("smoke test '{}'", t.name);
        match judge(t, &got, runner) {
            Ok(figure) => {
                runner.check(&check, unit, format!("{shown}: {figure}"), "passed");
                Ok(())
            }
            Err(why) => {
                runner.check(&check, unit, format!("{shown}: {why}"), "failed");
                Err(format!("smoke test '{}' failed: {shown}: {why}", t.name))
            }
        }
    }
}

#[async_trait::async_trait]
impl crate::targets::kubernetes::UrlChecks for Suite {
    async fn check_urls(&self, preview: bool, runner: &Runner) -> Result<(), String> {
        self.run_urls(preview, runner).await.map_err(|e| e.detail())
    }
}

/// reqwest's error text without the URL (it is shown beside it already).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(u) = e.url() {
        text = text.replace(&format!(" for url ({u})"), "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// The answer against the test: `Ok(figure)` or `Err(why)`, the body's
/// first line redacted before it is cut.
pub fn judge(
    t: &SmokeTest,
    got: &Result<Probe, impl std::fmt::Display>,
    runner: &Runner,
) -> Result<String, String> {
    let p = got.as_ref().map_err(|e| runner.redactor().redact(&e.to_string()))?;
    let ms = p.latency.as_millis();
    let start = body_start(runner.redactor(), &p.body);
    let answer = if start.is_empty() {
        format!("HTTP {} in {ms}ms", p.status)
    } else {
        format!("HTTP {} in {ms}ms: {start}", p.status)
    };
    let status_ok = match t.status {
        Some(s) => p.status == s,
        None => (200..300).contains(&p.status),
    };
    if !status_ok {
        let want = t.status.map_or("a 2xx status".to_string(), |s| format!("status {s}"));
        return Err(format!("{answer} (expected {want})"));
    }
    if let Some(b) = &t.body
        && !p.body.contains(b.as_str())
    {
        return Err(format!("{answer} (the body lacks {b:?})"));
    }
    if let Some(re) = &t.body_regex
        && !re.is_match(&p.body)
    {
        return Err(format!("{answer} (the body does not match /{}/)", re.as_str()));
    }
    if let Some(max) = t.max_latency
        && p.latency > max
    {
        return Err(format!("{answer} (slower than max-latency {}ms)", max.as_millis()));
    }
    Ok(format!("HTTP {} in {ms}ms", p.status))
}
