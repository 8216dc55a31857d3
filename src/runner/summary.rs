//! The job summary: what went where, with which strategy, a timeline of
//! stages, and the outcome. Pure: builds Markdown from a [`Report`].

use std::time::Duration;

/// Hard ceiling the runner enforces on one step's summary (1 MiB); we keep
/// well below it.
pub const MAX_SUMMARY_BYTES: usize = 1024 * 1024 - 4096;

/// One row of the timeline.
#[derive(Debug, Clone)]
pub struct StageTiming {
    pub stage: String,
    pub unit: Option<String>,
    pub duration: Duration,
    pub ok: bool,
    pub note: String,
}

/// One check of what users see (smoke tests, traffic through nginx,
/// analysis), for the summary: every figure, not only breaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRow {
    pub check: String,
    /// The host or object it was taken on; `None`: the whole deploy.
    pub unit: Option<String>,
    pub figure: String,
    pub verdict: String,
}

/// The rows collected while a deploy runs, shared by the units' tasks.
#[derive(Debug, Clone, Default)]
pub struct Checks(std::sync::Arc<std::sync::Mutex<Vec<CheckRow>>>);

impl Checks {
    pub fn push(&self, check: &str, unit: Option<&str>, figure: String, verdict: &str) {
        let row =
            CheckRow { check: check.into(), unit: unit.map(String::from), figure, verdict: verdict.into() };
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(row);
    }

    /// Like [`Self::push`], but a reading with the same verdict as the last
    /// row of the same check replaces it (counting them): a long observe
    /// window's readings stay one row each way they went.
    pub fn push_reading(&self, check: &str, unit: Option<&str>, figure: String, verdict: &str) {
        let mut rows = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let last = rows.iter_mut().rev().find(|r| r.check == check && r.unit.as_deref() == unit);
        match last {
            Some(r) if r.verdict == verdict => {
                let n = r
                    .figure
                    .split_once(" readings alike, the last: ")
                    .map_or(1, |(n, _)| n.parse().unwrap_or(1));
                r.figure = format!("{} readings alike, the last: {figure}", n + 1);
            }
            _ => rows.push(CheckRow {
                check: check.into(),
                unit: unit.map(String::from),
                figure,
                verdict: verdict.into(),
            }),
        }
    }

    pub fn rows(&self) -> Vec<CheckRow> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// What the units of a report are, for its table's heading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UnitKind {
    #[default]
    Host,
    /// `target: kubernetes`: one row per Deployment.
    Deployment,
}

/// Everything a person needs at a glance.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub title: String,
    pub facts: Vec<(String, String)>,
    pub unit_kind: UnitKind,
    pub units: Vec<(String, String, Duration)>,
    pub timeline: Vec<StageTiming>,
    pub checks: Vec<CheckRow>,
    pub outcome: String,
    pub reason: Option<String>,
    pub message: Option<String>,
}

impl Report {
    /// The same report with every string passed through `redactor`: done
    /// before [`render`], whose escaping and cut would hide a value.
    pub fn redacted(&self, redactor: &crate::redact::Redactor) -> Report {
        let r = |s: &String| redactor.redact(s);
        Report {
            title: r(&self.title),
            facts: self.facts.iter().map(|(k, v)| (r(k), r(v))).collect(),
            unit_kind: self.unit_kind,
            units: self.units.iter().map(|(u, o, d)| (r(u), r(o), *d)).collect(),
            timeline: self
                .timeline
                .iter()
                .map(|t| StageTiming {
                    stage: r(&t.stage),
                    unit: t.unit.as_ref().map(r),
                    note: r(&t.note),
                    ..t.clone()
                })
                .collect(),
            checks: self
                .checks
                .iter()
                .map(|c| CheckRow {
                    check: r(&c.check),
                    unit: c.unit.as_ref().map(r),
                    figure: r(&c.figure),
                    verdict: r(&c.verdict),
                })
                .collect(),
            outcome: r(&self.outcome),
            reason: self.reason.as_ref().map(r),
            message: self.message.as_ref().map(r),
        }
    }
}

pub fn render(report: &Report) -> String {
    let mut md = format!("## {}\n\n", report.title);
    let icon = if report.outcome == "success" || report.outcome == "planned" { "✅" } else { "❌" };
    md.push_str(&format!("**Outcome:** {icon} `{}`", report.outcome));
    if let Some(reason) = &report.reason {
        md.push_str(&format!(" — reason `{reason}`"));
    }
    md.push_str("\n\n");
    if let Some(msg) = &report.message {
        md.push_str(&format!("> {}\n\n", msg.replace('\n', "\n> ")));
    }
    md.push_str("| | |\n|---|---|\n");
    for (k, v) in &report.facts {
        md.push_str(&format!("| {} | {} |\n", cell(k), cell(v)));
    }
    if !report.units.is_empty() {
        let (heading, column) = match report.unit_kind {
            UnitKind::Host => ("Hosts", "host"),
            UnitKind::Deployment => ("Deployments", "deployment"),
        };
        md.push_str(&format!("\n### {heading}\n\n| {column} | outcome | time |\n|---|---|---|\n"));
        for (unit, outcome, d) in &report.units {
            md.push_str(&format!("| {} | {} | {} |\n", cell(unit), cell(outcome), secs(*d)));
        }
    }
    if !report.checks.is_empty() {
        md.push_str("\n### What users saw\n\n| check | where | figure | verdict |\n|---|---|---|---|\n");
        for c in &report.checks {
            md.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                cell(&c.check),
                cell(c.unit.as_deref().unwrap_or("all")),
                cell(&c.figure),
                cell(&c.verdict)
            ));
        }
    }
    if !report.timeline.is_empty() {
        md.push_str("\n### Timeline\n\n| stage | where | time | result |\n|---|---|---|---|\n");
        for t in &report.timeline {
            md.push_str(&format!(
                "| {} | {} | {} | {}{} |\n",
                cell(&t.stage),
                cell(t.unit.as_deref().unwrap_or("all")),
                secs(t.duration),
                if t.ok { "ok" } else { "failed" },
                if t.note.is_empty() { String::new() } else { format!(" — {}", cell(&t.note)) }
            ));
        }
    }
    truncate(md)
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn truncate(mut md: String) -> String {
    if md.len() > MAX_SUMMARY_BYTES {
        let mut cut = MAX_SUMMARY_BYTES - 64;
        while !md.is_char_boundary(cut) {
            cut -= 1;
        }
        md.truncate(cut);
        md.push_str("\n\n_(summary truncated)_\n");
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_under_the_limit() {
        let report = Report {
            title: "t".into(),
            timeline: (0..100_000)
                .map(|i| StageTiming {
                    stage: format!("stage {i}"),
                    unit: None,
                    duration: Duration::from_millis(i),
                    ok: true,
                    note: "x".repeat(20),
                })
                .collect(),
            ..Default::default()
        };
        let md = render(&report);
        assert!(md.len() <= MAX_SUMMARY_BYTES);
        assert!(md.ends_with("_(summary truncated)_\n"));
    }
}
