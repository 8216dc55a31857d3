//! The Slack incoming-webhook payload: `text`, a plain one-line fallback
//! (what notifications and old clients show), and Block Kit `blocks` — a
//! `section` with the headline and the message, a `section` of `fields`
//! (environment, app, images, outcome, reason), and a `context` with the
//! links. Pure: a [`Notice`] in, bytes out.
//!
//! Slack reads `&`, `<` and `>` as markup in `mrkdwn` (and in `text`), so
//! every value is escaped; Slack's limits (3000 characters in a section,
//! 2000 in a field) are kept by cutting the message.

use serde_json::{Value, json};

use super::{Event, Notice};

/// A section's text may be 3000 characters; the headline and the quote
/// marks take some.
const MESSAGE_MAX: usize = 2500;
/// A field may be 2000 characters; images and names are far shorter.
const FIELD_MAX: usize = 1900;

/// The JSON body for `n` (already redacted).
pub fn payload(n: &Notice) -> Vec<u8> {
    serde_json::to_vec(&blocks(n)).unwrap_or_default()
}

fn blocks(n: &Notice) -> Value {
    let (app, env) = (esc(&n.app), esc(&n.environment));
    let (icon, headline) = match n.event {
        Event::Start => (":rocket:", format!("Deploying *{app}* to *{env}*")),
        Event::Success => (":white_check_mark:", format!("Deployed *{app}* to *{env}*")),
        Event::Failure => (":x:", format!("Deploy of *{app}* to *{env}* failed")),
        Event::Rollback => {
            (":leftwards_arrow_with_hook:", format!("Deploy of *{app}* to *{env}* rolled back"))
        }
    };
    let mut section = format!("{icon} {headline}");
    if !n.message.is_empty() {
        let quoted: Vec<String> =
            cut(&n.message, MESSAGE_MAX).lines().map(|l| format!("> {}", esc(l))).collect();
        section.push('\n');
        section.push_str(&quoted.join("\n"));
    }
    let mut fields = vec![
        field("Environment", &n.environment),
        field("App", &n.app),
        field("Image", &code_or_unknown(Some(&n.image))),
        field("Previous image", &code_or_unknown(n.previous_image.as_deref())),
        field("Outcome", &n.outcome),
    ];
    if let Some(r) = &n.reason {
        fields.push(field("Reason", &format!("`{r}`")));
    }
    if let Some(id) = n.deployment_id {
        fields.push(field("Deployment", &id.to_string()));
    }
    let context = format!(
        "<{}|Run> · <{}|Job summary> · {} {} · mode {}",
        n.run_url,
        n.summary_url,
        esc(&n.target),
        esc(&n.strategy),
        esc(&n.mode)
    );
    json!({
        "text": fallback(n),
        "blocks": [
            { "type": "section", "text": { "type": "mrkdwn", "text": section } },
            { "type": "section", "fields": fields },
            { "type": "context", "elements": [ { "type": "mrkdwn", "text": context } ] },
        ],
    })
}

/// The plain one-line text: `deploy-action: shop → production: rolled
/// back (health_check_failed) — ghcr.io/acme/shop:1.4.2`.
fn fallback(n: &Notice) -> String {
    let what = match n.event {
        Event::Start => "deploying".to_string(),
        Event::Success => "deployed".to_string(),
        Event::Failure => "failed".to_string(),
        Event::Rollback => "rolled back".to_string(),
    };
    let why = n.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
    let image = if n.image.is_empty() { String::new() } else { format!(" — {}", n.image) };
    let line = format!("deploy-action: {} → {}: {what}{why}{image}", n.app, n.environment);
    esc(&line.replace(['\n', '\r'], " "))
}

fn field(label: &str, value: &str) -> Value {
    json!({ "type": "mrkdwn", "text": format!("*{label}*\n{}", esc(&cut(value, FIELD_MAX))) })
}

/// An image as code, or `unknown` (a cluster's rollback learns the image
/// it restored only once it is done; the first deploy has no previous one).
fn code_or_unknown(image: Option<&str>) -> String {
    match image {
        Some(i) if !i.is_empty() => format!("`{i}`"),
        _ => "unknown".into(),
    }
}

/// Slack's three markup characters, as its docs ask.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// At most `max` characters of `s` (on a character boundary), marked when cut.
fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::tests::notice;

    fn body(n: &Notice) -> Value {
        serde_json::from_slice(&payload(n)).unwrap()
    }

    #[test]
    fn every_event_has_text_and_blocks_of_known_types() {
        for event in [Event::Start, Event::Success, Event::Failure, Event::Rollback] {
            let b = body(&notice(event));
            let text = b["text"].as_str().expect("text is a string");
            assert!(!text.is_empty() && !text.contains('\n'), "{text}");
            let blocks = b["blocks"].as_array().expect("blocks is an array");
            let types: Vec<&str> = blocks.iter().map(|b| b["type"].as_str().unwrap()).collect();
            assert_eq!(types, ["section", "section", "context"], "{event:?}");
            assert_eq!(blocks[0]["text"]["type"], "mrkdwn");
            assert!(blocks[1]["fields"].as_array().unwrap().len() <= 10, "Slack allows 10 fields");
            assert!(blocks[2]["elements"][0]["text"].as_str().unwrap().contains("|Job summary>"));
        }
    }

    #[test]
    fn the_fallback_and_fields_carry_the_facts() {
        let b = body(&notice(Event::Rollback));
        let text = b["text"].as_str().unwrap();
        assert_eq!(
            text,
            "deploy-action: shop → production: rolled back (health_check_failed) — ghcr.io/acme/shop:1.4.2"
        );
        let fields = b["blocks"][1]["fields"].to_string();
        for want in ["ghcr.io/acme/shop:1.4.1", "health_check_failed", "failure", "42", "production"] {
            assert!(fields.contains(want), "{want} in {fields}");
        }
        let section = b["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(
            section.starts_with(":leftwards_arrow_with_hook: Deploy of *shop* to *production* rolled back")
        );
        assert!(section.contains("\n> verify failed: web-1: unhealthy"), "{section}");
        let context = b["blocks"][2]["elements"][0]["text"].as_str().unwrap();
        assert!(
            context.contains("<https://github.com/acme/shop/actions/runs/7/attempts/1|Run>"),
            "{context}"
        );
    }

    #[test]
    fn an_unknown_image_says_so() {
        let mut n = notice(Event::Start);
        n.image = String::new();
        n.previous_image = None;
        let b = body(&n);
        assert_eq!(b["text"], "deploy-action: shop → production: deploying (health_check_failed)");
        let fields: Vec<&str> = b["blocks"][1]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["text"].as_str().unwrap())
            .collect();
        assert!(
            fields.contains(&"*Image*\nunknown") && fields.contains(&"*Previous image*\nunknown"),
            "{fields:?}"
        );
    }

    #[test]
    fn markup_is_escaped_and_long_messages_are_cut() {
        let mut n = notice(Event::Failure);
        n.message = format!("<!channel> a & b {}", "x".repeat(5000));
        let b = body(&n);
        let section = b["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(section.contains("&lt;!channel&gt; a &amp; b"), "{section}");
        assert!(!section.contains("<!channel>"));
        assert!(section.chars().count() <= 3000, "{}", section.chars().count());
        assert!(section.ends_with('…'));
    }
}
