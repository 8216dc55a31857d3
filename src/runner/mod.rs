//! Runner integration: the one place that speaks the GitHub Actions runner's
//! protocol — log groups, annotations with reason codes, masks, step outputs,
//! the job summary, and relaying remote output without letting it inject
//! workflow commands. Everything written passes through the [`Redactor`].
//!
//! Outside Actions (`GITHUB_OUTPUT` / `GITHUB_STEP_SUMMARY` unset) outputs and
//! the summary are written to the log instead.

pub mod commands;
pub mod output;
pub mod summary;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub use commands::Level;

use crate::redact::Redactor;

type Sink = Arc<Mutex<Box<dyn Write + Send>>>;

/// Handle to the runner. Cheap to clone; all clones write to the same log.
#[derive(Clone)]
pub struct Runner {
    sink: Sink,
    redactor: Redactor,
    output_path: Option<PathBuf>,
    summary_path: Option<PathBuf>,
    /// What the checks of users' view found, for the summary's table.
    checks: summary::Checks,
}

impl Runner {
    /// A runner writing to stdout, with the file commands' paths the
    /// runner gives the container (`GITHUB_OUTPUT`, `GITHUB_STEP_SUMMARY`).
    pub fn stdout(output_path: Option<PathBuf>, summary_path: Option<PathBuf>, redactor: Redactor) -> Self {
        Self::new(Box::new(std::io::stdout()), redactor, output_path, summary_path)
    }

    pub fn new(
        out: Box<dyn Write + Send>,
        redactor: Redactor,
        output_path: Option<PathBuf>,
        summary_path: Option<PathBuf>,
    ) -> Self {
        Self {
            sink: Arc::new(Mutex::new(out)),
            redactor,
            output_path,
            summary_path,
            checks: Default::default(),
        }
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Writes raw lines (already formatted), atomically. Not redacted here:
    /// every caller in this file redacts each piece *before* formatting it
    /// (escaping `%` → `%25` or cutting a value would hide it from the
    /// redactor), so each byte is redacted exactly once.
    fn emit(&self, text: &str) {
        let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(sink, "{text}");
        let _ = sink.flush();
    }

    /// A plain log line.
    pub fn line(&self, text: &str) {
        let text = self.redactor.redact(text);
        // A plain line must not be read as a command: only our own builders
        // may start a line with `::`.
        if text.starts_with("::") {
            self.emit(&format!(" {text}"));
        } else {
            self.emit(&text);
        }
    }

    /// Opens a collapsible log group; it closes when the guard drops.
    pub fn group(&self, name: &str) -> Group {
        self.emit(&commands::group(&self.redactor.redact(name)));
        Group { runner: self.clone() }
    }

    pub fn annotate(&self, level: Level, reason: &str, message: &str) {
        // Redacted before the runner's escaping: `%` in a secret becomes
        // `%25` in the command, which no longer matches the value.
        let (reason, message) = (self.redactor.redact(reason), self.redactor.redact(message));
        self.emit(&commands::annotation(level, &reason, &message));
    }

    pub fn error(&self, reason: &str, message: &str) {
        self.annotate(Level::Error, reason, message);
    }

    pub fn warning(&self, reason: &str, message: &str) {
        self.annotate(Level::Warning, reason, message);
    }

    /// Registers a secret: it is masked by the runner from now on (whole and
    /// line by line, JSON leaves too) and redacted from everything we write.
    /// The `::add-mask::` lines are written unredacted, by necessity.
    pub fn add_secret(&self, value: &str) {
        let masks = self.redactor.add(value);
        let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        for m in masks {
            let _ = writeln!(sink, "{}", commands::add_mask(&m));
        }
        let _ = sink.flush();
    }

    /// Relays output produced elsewhere (a container's logs, a remote
    /// command) so that it cannot act as workflow commands.
    pub fn relay(&self, source: &str, text: &str) {
        if text.trim().is_empty() {
            return;
        }
        let redacted = self.redactor.redact(text);
        self.emit(&commands::relay_block(&self.redactor.redact(source), &redacted));
    }

    /// Sets a step output. Falls back to the log outside Actions.
    pub fn set_output(&self, name: &str, value: &str) {
        let value = self.redactor.redact(value);
        match &self.output_path {
            Some(path) => {
                let written = OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(path)
                    .and_then(|mut f| f.write_all(output::encode(name, &value).as_bytes()));
                if let Err(e) = written {
                    self.warning(
                        "output_write_failed",
                        &format!("could not write output {name} to GITHUB_OUTPUT: {e}"),
                    );
                }
            }
            None => self.line(&format!("output {name}={value}")),
        }
    }

    /// Records a check's figure for the summary's "What users saw" table
    /// (and the log): a smoke test, the traffic through nginx, an analysis.
    pub fn check(&self, check: &str, unit: Option<&str>, figure: String, verdict: &str) {
        self.check_line(check, unit, &figure, verdict);
        self.checks.push(check, unit, figure, verdict);
    }

    fn check_line(&self, check: &str, unit: Option<&str>, figure: &str, verdict: &str) {
        self.line(&format!(
            "{}{check}: {figure} ({verdict})",
            unit.map(|u| format!("{u}: ")).unwrap_or_default()
        ));
    }

    /// Records one of a series of readings (an analysis source read every
    /// interval): logged each time, one summary row per run of alike ones.
    pub fn check_reading(&self, check: &str, unit: Option<&str>, figure: String, verdict: &str) {
        self.check_line(check, unit, &figure, verdict);
        self.checks.push_reading(check, unit, figure, verdict);
    }

    /// Renders `report` into the job summary, every field redacted before
    /// the Markdown escaping (`|` → `\|`) and the size cut. The checks
    /// recorded with [`Self::check`] join the report's own.
    pub fn write_report(&self, report: &summary::Report) {
        let mut report = report.clone();
        report.checks.extend(self.checks.rows());
        self.write_summary(&summary::render(&report.redacted(&self.redactor)));
    }

    /// Appends already-redacted Markdown to the job summary. Falls back to
    /// the log.
    fn write_summary(&self, markdown: &str) {
        match &self.summary_path {
            Some(path) => {
                let written = OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(path)
                    .and_then(|mut f| f.write_all(markdown.as_bytes()));
                if let Err(e) = written {
                    self.warning("summary_write_failed", &format!("could not write the job summary: {e}"));
                }
            }
            None => {
                let _g = self.group("Summary");
                for l in markdown.lines() {
                    self.line(l);
                }
            }
        }
    }

    /// A writer for `tracing` that redacts and shares the runner's sink.
    pub fn log_writer(&self) -> LogWriter {
        LogWriter { runner: self.clone(), buf: Vec::new() }
    }
}

/// Closes a log group on drop.
#[must_use = "the group closes when this guard drops"]
pub struct Group {
    runner: Runner,
}

impl Drop for Group {
    fn drop(&mut self) {
        self.runner.emit(commands::END_GROUP);
    }
}

/// Line-buffered, redacting writer for the tracing subscriber.
pub struct LogWriter {
    runner: Runner,
    buf: Vec<u8>,
}

impl Write for LogWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let text = String::from_utf8_lossy(&self.buf).trim_end_matches('\n').to_string();
            self.buf.clear();
            for l in text.lines() {
                self.runner.line(l);
            }
        }
        Ok(())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Runner {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> Self::Writer {
        self.log_writer()
    }
}

/// An in-memory runner log for the crate's unit tests: clones share one
/// buffer, so a test hands one to a [`Runner`] and reads the other back.
#[cfg(test)]
pub(crate) mod memory {
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    pub struct Log(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Log {
        fn write(&mut self, d: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(d);
            Ok(d.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Log {
        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }

        /// A runner (no secrets known yet, no file commands) writing here.
        pub fn runner(&self) -> super::Runner {
            super::Runner::new(Box::new(self.clone()), super::Redactor::new(), None, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memory::Log as Buf;

    #[test]
    fn secrets_never_reach_the_log_except_as_masks() {
        let buf = Buf::default();
        let runner = buf.runner();
        runner.add_secret("s3cr3t-value");
        runner.line("connecting with s3cr3t-value");
        runner.relay("h1", "echo s3cr3t-value\n::error::injected");
        runner.set_output("x", "s3cr3t-value");
        let log = buf.text();
        assert_eq!(log.matches("s3cr3t-value").count(), 1, "{log}");
        assert!(log.starts_with("::add-mask::s3cr3t-value\n"));
        assert!(log.contains("connecting with ***"));
        assert!(log.contains("::stop-commands::"));
        assert!(log.contains("output x=***"));
    }

    #[test]
    fn plain_lines_cannot_be_commands() {
        let buf = Buf::default();
        let runner = buf.runner();
        runner.line("::error::not really");
        let log = buf.text();
        assert_eq!(log, " ::error::not really\n");
    }
}
