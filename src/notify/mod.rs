//! Deploy notifications: a Slack incoming webhook (`slack-webhook-url`) and
//! a generic JSON webhook (`notify-url`) are told when a deploy starts,
//! succeeds, fails or rolls back.
//!
//! - [`slack`] and [`webhook`] build the payloads from a [`Notice`] (pure).
//! - [`deliver`] posts one payload: a timeout per request, a few attempts
//!   with backoff on what may pass, a budget over all of it.
//! - [`Notifier`] holds the run's facts and its webhooks, and sends.
//!
//! A notification never changes the deploy: a delivery that fails is a
//! `notify_failed` warning, never an error or another exit code (which is
//! why [`deliver::NotifyError`] is not part of [`crate::Error`]). The start
//! is sent in the background, so a slow receiver never holds the deploy;
//! the final event waits for it, so receivers see them in order.
//!
//! Nothing secret travels: every string of a [`Notice`] passes through the
//! runner's redactor before it is serialised (error messages may quote a
//! migration's output or a health answer, which the runner only redacts on
//! its own output), and the webhook URLs, secrets themselves, are never
//! logged: a log line names "slack webhook" or "notify webhook" and the host.

pub mod deliver;
pub mod slack;
pub mod webhook;

use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::inputs::{Inputs, Mode};
use crate::redact::Redactor;
use crate::runner::Runner;
use crate::secrets::SecretValue;
use deliver::{Delivery, Policy};

/// What a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The deploy begins (its GitHub deployment is `in_progress`).
    Start,
    /// The new version serves.
    Success,
    /// The deploy failed and the action could not say the previous version
    /// serves everywhere (an early failure, or an unknown state).
    Failure,
    /// The deploy failed and every unit was kept on or put back to the
    /// previous version.
    Rollback,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Start => "start",
            Event::Success => "success",
            Event::Failure => "failure",
            Event::Rollback => "rollback",
        }
    }
}

/// One message, the same facts for both webhooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub event: Event,
    pub environment: String,
    pub app: String,
    pub image: String,
    pub previous_image: Option<String>,
    /// `in_progress` for the start; else the run's status.
    pub outcome: String,
    pub reason: Option<String>,
    pub run_url: String,
    pub summary_url: String,
    pub deployment_id: Option<u64>,
    pub target: String,
    pub strategy: String,
    pub mode: String,
    pub message: String,
}

/// A message may quote a failure at length (a migration's last 20 lines);
/// receivers get the start of it, the summary has the rest.
const MESSAGE_MAX: usize = 3000;

impl Notice {
    /// Every string redacted, *then* the message cut: a cut first could
    /// split a secret and hide it from the redactor.
    pub fn redacted(&self, r: &Redactor) -> Notice {
        let red = |s: &String| r.redact(s);
        let message = r.redact(&self.message);
        let message = match message.char_indices().nth(MESSAGE_MAX) {
            Some((i, _)) => format!("{}…", &message[..i]),
            None => message,
        };
        Notice {
            event: self.event,
            environment: red(&self.environment),
            app: red(&self.app),
            image: red(&self.image),
            previous_image: self.previous_image.as_ref().map(red),
            outcome: red(&self.outcome),
            reason: self.reason.as_ref().map(red),
            run_url: red(&self.run_url),
            summary_url: red(&self.summary_url),
            deployment_id: self.deployment_id,
            target: red(&self.target),
            strategy: red(&self.strategy),
            mode: red(&self.mode),
            message,
        }
    }
}

/// What changes from one event of a run to the next.
#[derive(Debug, Clone)]
pub struct Moment {
    pub event: Event,
    pub outcome: &'static str,
    pub reason: Option<&'static str>,
    pub image: String,
    pub previous_image: Option<String>,
    pub deployment_id: Option<u64>,
    pub message: String,
}

/// Which webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Slack,
    Webhook,
}

impl Kind {
    /// How the log names it (never by its URL).
    fn name(self) -> &'static str {
        match self {
            Kind::Slack => "slack webhook",
            Kind::Webhook => "notify webhook",
        }
    }
}

struct Sink {
    kind: Kind,
    url: SecretValue,
    /// The URL's host, the most a log line says about it.
    host: String,
}

/// The run's webhooks and facts. With no webhook configured, every method
/// does nothing.
pub struct Notifier {
    sinks: Arc<Vec<Sink>>,
    http: reqwest::Client,
    runner: Runner,
    /// The facts every message of this run shares (event-specific fields
    /// are filled from a [`Moment`]).
    base: Notice,
    /// The same for every retry of one event, so a receiver can drop
    /// duplicates: `<run id>-<attempt>-<event>`.
    delivery_prefix: String,
    start: Mutex<Option<JoinHandle<()>>>,
}

impl Notifier {
    /// A notifier for these webhook URLs (already validated and masked).
    /// The parts of a URL that are credentials on their own — its path and
    /// query (Slack's `/services/T…/B…/…`), a password — are masked too, so
    /// no error text can show them even without the rest.
    pub fn new(
        inputs: &Inputs,
        runner: &Runner,
        slack: Option<SecretValue>,
        webhook: Option<SecretValue>,
    ) -> Self {
        let mut sinks = Vec::new();
        for (kind, url) in [(Kind::Slack, slack), (Kind::Webhook, webhook)] {
            let Some(url) = url else { continue };
            let trimmed = url.expose().trim().to_string();
            runner.add_secret(&trimmed);
            let host = match url::Url::parse(&trimmed) {
                Ok(u) => {
                    let tail = &u[url::Position::BeforePath..];
                    if tail.len() >= 16 {
                        runner.add_secret(tail);
                    }
                    if let Some(p) = u.password() {
                        runner.add_secret(p);
                    }
                    u.host_str().unwrap_or("").to_string()
                }
                Err(_) => String::new(),
            };
            sinks.push(Sink { kind, url: SecretValue::new(trimmed), host });
        }
        // No redirects: a POST must not be turned into a GET elsewhere, nor
        // the payload sent to an address nobody configured.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("deploy-action/", env!("CARGO_PKG_VERSION")))
            .build();
        let http = match http {
            Ok(h) => h,
            Err(e) => {
                if !sinks.is_empty() {
                    runner.warning("notify_failed", &format!("notifications are off: no HTTP client ({e})"));
                }
                sinks.clear();
                reqwest::Client::new()
            }
        };
        let ctx = &inputs.context;
        let base = Notice {
            event: Event::Start,
            environment: inputs.environment.clone(),
            app: inputs.app.clone(),
            image: String::new(),
            previous_image: None,
            outcome: String::new(),
            reason: None,
            run_url: ctx.run_url(),
            summary_url: ctx.summary_url(),
            deployment_id: None,
            target: inputs.target.as_str().into(),
            strategy: inputs.strategy.as_str().into(),
            mode: mode_name(inputs.mode).into(),
            message: String::new(),
        };
        Notifier {
            sinks: Arc::new(sinks),
            http,
            runner: runner.clone(),
            base,
            delivery_prefix: format!("{}-{}", ctx.run_id, ctx.run_attempt),
            start: Mutex::new(None),
        }
    }

    /// Whether any webhook is configured.
    pub fn is_active(&self) -> bool {
        !self.sinks.is_empty()
    }

    /// The redacted message for `m`.
    fn notice(&self, m: Moment) -> Notice {
        Notice {
            event: m.event,
            image: m.image,
            previous_image: m.previous_image,
            outcome: m.outcome.into(),
            reason: m.reason.map(String::from),
            deployment_id: m.deployment_id,
            message: m.message,
            ..self.base.clone()
        }
        .redacted(self.runner.redactor())
    }

    /// Sends the start in the background: the deploy goes on meanwhile.
    pub fn start(&self, m: Moment) {
        if !self.is_active() {
            return;
        }
        let notice = self.notice(m);
        let job = self.job();
        let task = tokio::spawn(async move { job.send(&notice, &Policy::NORMAL).await });
        *self.start.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
    }

    /// Sends the final event, once the start has arrived or given up. After
    /// a cancellation — before or during this call — a start still in
    /// flight is dropped and the final event gets one short try
    /// ([`Policy::CANCELLED`]): the runner will not wait.
    pub async fn finish(&self, m: Moment, cancel: &CancellationToken) {
        if !self.is_active() {
            return;
        }
        let start = self.start.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut task) = start {
            // Bounded by its own policy's budget; the sleep is a second bound.
            tokio::select! {
                _ = &mut task => {}
                _ = cancel.cancelled() => task.abort(),
                _ = tokio::time::sleep(Policy::NORMAL.budget) => task.abort(),
            }
        }
        let notice = self.notice(m);
        let job = self.job();
        if cancel.is_cancelled() {
            return job.send(&notice, &Policy::CANCELLED).await;
        }
        tokio::select! {
            _ = job.send(&notice, &Policy::NORMAL) => {}
            // A signal mid-send: start over with the short try (a receiver
            // may see the delivery twice, under the same delivery id).
            _ = cancel.cancelled() => job.send(&notice, &Policy::CANCELLED).await,
        }
    }

    fn job(&self) -> Job {
        Job {
            sinks: self.sinks.clone(),
            http: self.http.clone(),
            runner: self.runner.clone(),
            delivery_prefix: self.delivery_prefix.clone(),
        }
    }
}

/// What a send needs, owned, so the start can run on its own task.
struct Job {
    sinks: Arc<Vec<Sink>>,
    http: reqwest::Client,
    runner: Runner,
    delivery_prefix: String,
}

impl Job {
    /// Every webhook at once; each failure a warning.
    async fn send(&self, n: &Notice, policy: &Policy) {
        let id = format!("{}-{}", self.delivery_prefix, n.event.as_str());
        let sends = self.sinks.iter().map(|sink| {
            let body = match sink.kind {
                Kind::Slack => slack::payload(n),
                Kind::Webhook => webhook::payload(n),
            };
            let headers = vec![
                ("x-deploy-action-event", n.event.as_str().to_string()),
                ("x-deploy-action-delivery", id.clone()),
            ];
            async move {
                let d = Delivery { url: sink.url.expose(), body, headers };
                // A second bound over the policy's own, for anything it misses.
                let bound = policy.budget + std::time::Duration::from_millis(200);
                let result = match tokio::time::timeout(bound, deliver::post(&self.http, &d, policy)).await {
                    Ok(r) => r,
                    Err(_) => Err((deliver::NotifyError::Timeout(policy.budget), 0)),
                };
                self.report(sink, n.event, result);
            }
        });
        futures::future::join_all(sends).await;
    }

    fn report(&self, sink: &Sink, event: Event, result: Result<u32, (deliver::NotifyError, u32)>) {
        let (name, host, event) = (sink.kind.name(), sink.host.as_str(), event.as_str());
        match result {
            Ok(attempts) => {
                tracing::info!(notify = name, host, event, attempts, "notification delivered");
            }
            Err((e, attempts)) => {
                // The answer's start is remote text: redacted here, not only
                // when the runner writes it.
                let e = self.runner.redactor().redact(&e.to_string());
                self.runner.warning(
                    "notify_failed",
                    &format!(
                        "{name} ({host}): the {event} notification was not delivered after {attempts} attempt(s): {e}; the deploy is not affected"
                    ),
                );
            }
        }
    }
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Deploy => "deploy",
        Mode::Plan => "plan",
        Mode::Rollback => "rollback",
        Mode::Promote => "promote",
        Mode::Abort => "abort",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A rolled-back deploy's message, the fixture of the payload tests.
    pub(crate) fn notice(event: Event) -> Notice {
        Notice {
            event,
            environment: "production".into(),
            app: "shop".into(),
            image: "ghcr.io/acme/shop:1.4.2".into(),
            previous_image: Some("ghcr.io/acme/shop:1.4.1".into()),
            outcome: if event == Event::Start { "in_progress" } else { "failure" }.into(),
            reason: Some("health_check_failed".into()),
            run_url: "https://github.com/acme/shop/actions/runs/7/attempts/1".into(),
            summary_url: "https://github.com/acme/shop/actions/runs/7/attempts/1".into(),
            deployment_id: Some(42),
            target: "hosts".into(),
            strategy: "blue-green".into(),
            mode: "deploy".into(),
            message: "verify failed: web-1: unhealthy".into(),
        }
    }

    #[test]
    fn a_secret_anywhere_in_a_notice_reaches_no_payload_in_any_form() {
        use base64::Engine as _;
        let r = Redactor::new();
        let secret = "p@ss w0rd/\"q\"&<x>\nsecond-line-of-it";
        r.add(secret);
        let mut n = notice(Event::Rollback);
        n.message = format!(
            "migrate failed: last log lines: {secret} | b64 {} | url {} | json {}",
            base64::engine::general_purpose::STANDARD.encode(secret),
            url::form_urlencoded::byte_serialize(secret.as_bytes()).collect::<String>(),
            serde_json::to_string(secret).unwrap()
        );
        n.image = format!("ghcr.io/acme/shop:{secret}");
        let n = n.redacted(&r);
        for body in [slack::payload(&n), webhook::payload(&n)] {
            let text = String::from_utf8(body).unwrap();
            for form in [
                secret.to_string(),
                "second-line-of-it".to_string(),
                base64::engine::general_purpose::STANDARD.encode(secret),
                serde_json::to_string(secret).unwrap().trim_matches('"').to_string(),
                url::form_urlencoded::byte_serialize(secret.as_bytes()).collect(),
            ] {
                assert!(!text.contains(&form), "{form} in {text}");
            }
            assert!(text.contains("***"), "{text}");
        }
    }

    #[test]
    fn a_long_message_is_cut_after_redaction() {
        let r = Redactor::new();
        let secret = "z".repeat(40) + "-tail";
        r.add(&secret);
        let mut n = notice(Event::Failure);
        // The secret straddles the cut: a cut first would leave its head.
        n.message = "a".repeat(MESSAGE_MAX - 10) + &secret;
        let n = n.redacted(&r);
        assert!(!n.message.contains("zzzzzzzzzz"), "{}", &n.message[n.message.len() - 30..]);
        assert!(n.message.chars().count() <= MESSAGE_MAX + 1);
    }

    use crate::runner::memory::Log;

    fn moment(event: Event) -> Moment {
        Moment {
            event,
            outcome: "success",
            reason: None,
            image: "ghcr.io/acme/shop:2".into(),
            previous_image: None,
            deployment_id: None,
            message: String::new(),
        }
    }

    /// A signal while the final event waits for a start stuck on a silent
    /// receiver: the start is dropped and the final event gets its one short
    /// try, so the whole stays within the runner's grace.
    #[tokio::test]
    async fn a_signal_while_the_start_is_in_flight_cuts_everything_short() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook/silent-receiver", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let env = crate::inputs::Env::from_pairs([
            ("INPUT_TARGET", "hosts"),
            ("INPUT_ENVIRONMENT", "production"),
            ("INPUT_IMAGE", "ghcr.io/acme/shop:2"),
            ("INPUT_HOSTS", "root@127.0.0.2"),
            ("INPUT_SSH-PRIVATE-KEY", "key"),
            ("INPUT_SSH-KNOWN-HOSTS", "known"),
            ("INPUT_GITHUB-DEPLOYMENTS", "false"),
            ("GITHUB_REPOSITORY", "acme/shop"),
            ("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567"),
        ]);
        let inputs = crate::inputs::load(&env).unwrap();
        let log = Log::default();
        let runner = log.runner();
        let n = Notifier::new(&inputs, &runner, None, Some(SecretValue::new(url)));
        n.start(moment(Event::Start));
        let cancel = CancellationToken::new();
        let signal = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            signal.cancel();
        });
        let t = std::time::Instant::now();
        n.finish(moment(Event::Success), &cancel).await;
        let took = t.elapsed();
        assert!(took < std::time::Duration::from_millis(2300), "{took:?}");
        let text = log.text();
        assert!(
            text.contains("notify webhook (127.0.0.1): the success notification was not delivered after 1 attempt(s): no answer within 1.5s"),
            "{text}"
        );
        assert!(
            !text.lines().filter(|l| !l.starts_with("::add-mask::")).any(|l| l.contains("silent-receiver")),
            "{text}"
        );
    }

    #[test]
    fn event_names_are_the_documented_ones() {
        let names: Vec<&str> = [Event::Start, Event::Success, Event::Failure, Event::Rollback]
            .iter()
            .map(|e| e.as_str())
            .collect();
        assert_eq!(names, ["start", "success", "failure", "rollback"]);
    }
}
