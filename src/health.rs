//! Health-check loops over [`Target::probe`]: wait for a healthy candidate,
//! and watch the front door during the observe window. Every loop has a
//! deadline and yields to cancellation.

use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::analysis::Analysis;
use crate::error::Error;
use crate::inputs::HealthSpec;
use crate::probe::{Probe, Via, body_start};
use crate::redact::Redactor;
use crate::runner::Runner;
use crate::targets::hosts::HostError;
use crate::targets::hosts::access_log::{self, Limits};
use crate::targets::observe::{self, Source};
use crate::targets::{Release, Target};

/// How often a long wait says where it is.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

fn judge(
    probe: &Result<Probe, impl std::fmt::Display>,
    max: Option<Duration>,
    redactor: &Redactor,
) -> Result<(), String> {
    match probe {
        Ok(p) if !(200..300).contains(&p.status) => match body_start(redactor, &p.body) {
            b if b.is_empty() => Err(format!("HTTP {}", p.status)),
            b => Err(format!("HTTP {}: {b}", p.status)),
        },
        Ok(p) => match max {
            Some(max) if p.latency > max => {
                Err(format!("answered in {}ms, over the {}ms limit", p.latency.as_millis(), max.as_millis()))
            }
            _ => Ok(()),
        },
        Err(e) => Err(e.to_string()),
    }
}

/// Waits until every service's candidate passes `spec.successes` checks in a
/// row within `spec.timeout`.
///
/// # Errors
/// [`Error::Unhealthy`] with the last failure, or [`Error::Cancelled`].
pub async fn wait_healthy(
    target: &dyn Target,
    release: &Release,
    spec: &HealthSpec,
    runner: &Runner,
    cancel: &CancellationToken,
) -> Result<(), Error> {
    for (idx, service) in release.services.iter().enumerate() {
        let started = Instant::now();
        let deadline = started + spec.timeout;
        let mut streak = 0;
        let mut last = String::from("no check finished");
        let mut said = started;
        while streak < spec.successes {
            let verdict = match &service.health_path {
                Some(path) => judge(
                    &target.probe(release, idx, Via::Candidate, path).await,
                    spec.max_response_time,
                    runner.redactor(),
                ),
                None => match target.candidate_running(release, idx).await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err("container is not running".into()),
                    Err(e) => Err(e.to_string()),
                },
            };
            match verdict {
                Ok(()) => streak += 1,
                Err(why) => {
                    streak = 0;
                    last = why;
                }
            }
            if streak >= spec.successes {
                break;
            }
            if Instant::now() >= deadline {
                return Err(Error::Unhealthy {
                    unit: target.name().to_string(),
                    message: format!(
                        "the candidate{} did not become healthy within {}s (last check: {last})",
                        svc(&service.name),
                        spec.timeout.as_secs()
                    ),
                });
            }
            if said.elapsed() >= PROGRESS_EVERY {
                said = Instant::now();
                runner.line(&format!(
                    "{}: waiting for the candidate{} to become healthy ({}s of {}s; last: {last})",
                    target.name(),
                    svc(&service.name),
                    started.elapsed().as_secs(),
                    spec.timeout.as_secs()
                ));
            }
            tokio::select! {
                _ = cancel.cancelled() => return Err(Error::Cancelled),
                _ = tokio::time::sleep(spec.interval) => {}
            }
        }
    }
    Ok(())
}

/// What the observe window watches.
pub struct Watch<'a> {
    pub window: Duration,
    /// Failed health checks in a row (of one service) that fail it.
    pub failures: u32,
    pub health: &'a HealthSpec,
    /// Limits on what users were served, from the unit's access log.
    pub traffic: Option<&'a Limits>,
    /// CloudWatch alarms and the Prometheus query, shared by every unit.
    pub analysis: Option<&'a Analysis>,
}

/// Judges what users were served through the unit since the window began
/// ([`Target::traffic`]); `last` records the figure for the summary.
async fn judge_traffic(
    target: &dyn Target,
    release: &Release,
    limits: &Limits,
    last: bool,
    runner: &Runner,
) -> Result<(), Error> {
    let unit = target.name();
    let Some(tally) = target.traffic(release).await? else { return Ok(()) };
    if let Some((kind, message)) = access_log::breach(&tally, limits) {
        runner.check("traffic through nginx", Some(unit), tally.describe(), "breach: rolled back");
        return Err(HostError::new(unit, kind, message).into());
    }
    if last {
        let verdict = if tally.requests < limits.min_requests {
            format!("not judged: fewer than min-requests ({})", limits.min_requests)
        } else {
            "within the limits".into()
        };
        runner.check("traffic through nginx", Some(unit), tally.describe(), &verdict);
    }
    Ok(())
}

/// Watches health through the front door for the window; `failures`
/// consecutive failures *of one service* fail the deploy. Each service keeps
/// its own streak: a healthy worker must not reset the count of a web
/// service that fails every check. With traffic limits, what users were
/// served through nginx since the window began is judged every round and
/// once more at its end; with `analysis`, its sources every round too.
///
/// # Errors
/// [`Error::ObserveFailed`], `error_rate_exceeded`, `latency_exceeded`,
/// [`Error::Analysis`], or [`Error::Cancelled`].
pub async fn observe(
    target: &dyn Target,
    release: &Release,
    watch: &Watch<'_>,
    runner: &Runner,
    cancel: &CancellationToken,
) -> Result<(), Error> {
    let end = Instant::now() + watch.window;
    if watch.traffic.is_some() {
        // Marks where the log stands: only what follows is counted.
        target.traffic(release).await?;
    }
    let mut door = FrontDoor {
        target,
        release,
        health: watch.health,
        failures: watch.failures,
        streaks: vec![0; release.services.len()],
        runner,
    };
    let mut traffic = watch.traffic.map(|limits| Traffic { target, release, limits, runner });
    let mut sources: Vec<&mut (dyn Source<Error> + '_)> = vec![&mut door];
    if let Some(t) = traffic.as_mut() {
        sources.push(t);
    }
    observe::window(end, watch.health.interval, watch.analysis, Error::from, &mut sources, cancel)
        .await
        .map_err(|e| e.unwrap_or(Error::Cancelled))
}

/// Each service's health through the front door (a worker's: its
/// container running), each with its own streak of failures.
struct FrontDoor<'a> {
    target: &'a dyn Target,
    release: &'a Release,
    health: &'a HealthSpec,
    failures: u32,
    streaks: Vec<u32>,
    runner: &'a Runner,
}

#[async_trait]
impl Source<Error> for FrontDoor<'_> {
    async fn read(&mut self, _last: bool) -> Result<(), Error> {
        let (target, release) = (self.target, self.release);
        for (idx, service) in release.services.iter().enumerate() {
            let verdict = match (&service.health_path, service.behind_proxy) {
                (Some(path), true) => judge(
                    &target.probe(release, idx, Via::FrontDoor, path).await,
                    self.health.max_response_time,
                    self.runner.redactor(),
                ),
                _ => match target.candidate_running(release, idx).await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err("container is not running".into()),
                    Err(e) => Err(e.to_string()),
                },
            };
            let streak = &mut self.streaks[idx];
            match verdict {
                Ok(()) => *streak = 0,
                Err(why) => {
                    *streak += 1;
                    if *streak >= self.failures {
                        return Err(Error::ObserveFailed {
                            unit: target.name().to_string(),
                            message: format!(
                                "{} health checks in a row failed through the proxy during the observe window{} (last: {why})",
                                *streak,
                                svc(&service.name)
                            ),
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

/// What users were served through nginx since the window began.
struct Traffic<'a> {
    target: &'a dyn Target,
    release: &'a Release,
    limits: &'a Limits,
    runner: &'a Runner,
}

#[async_trait]
impl Source<Error> for Traffic<'_> {
    async fn read(&mut self, last: bool) -> Result<(), Error> {
        judge_traffic(self.target, self.release, self.limits, last, self.runner).await
    }
}

fn svc(name: &str) -> String {
    if name.is_empty() { String::new() } else { format!(" of service {name}") }
}
