//! The generic webhook's payload: one flat JSON object per event, the same
//! fields every time (absent values are `null`), documented in
//! docs/notifications.md. Pure: a [`Notice`] in, bytes out.

use serde::Serialize;

use super::Notice;

/// The object POSTed to `notify-url`. Field names are the contract with
/// receivers: add fields, never rename or remove one.
#[derive(Debug, Serialize)]
struct Payload<'a> {
    /// `start`, `success`, `failure` or `rollback`.
    event: &'a str,
    environment: &'a str,
    app: &'a str,
    /// The image deployed (for `mode: rollback`, the one restored), when
    /// known: a cluster's rollback learns it only once it is done.
    image: Option<&'a str>,
    /// What served before, when known.
    previous_image: Option<&'a str>,
    /// `in_progress` for `start`; else the run's status: `success`,
    /// `failure` or `error`.
    outcome: &'a str,
    /// The stable reason code of a failure (as in the annotation and the
    /// deployment status); `null` otherwise.
    reason: Option<&'a str>,
    run_url: &'a str,
    summary_url: &'a str,
    deployment_id: Option<u64>,
    target: &'a str,
    strategy: &'a str,
    mode: &'a str,
    /// One human sentence (or the failure's message, redacted and cut).
    message: &'a str,
}

/// The JSON body for `n` (already redacted).
pub fn payload(n: &Notice) -> Vec<u8> {
    let p = Payload {
        event: n.event.as_str(),
        environment: &n.environment,
        app: &n.app,
        image: Some(n.image.as_str()).filter(|i| !i.is_empty()),
        previous_image: n.previous_image.as_deref(),
        outcome: &n.outcome,
        reason: n.reason.as_deref(),
        run_url: &n.run_url,
        summary_url: &n.summary_url,
        deployment_id: n.deployment_id,
        target: &n.target,
        strategy: &n.strategy,
        mode: &n.mode,
        message: &n.message,
    };
    serde_json::to_vec(&p).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::Event;
    use crate::notify::tests::notice;

    #[test]
    fn a_flat_object_with_every_documented_field() {
        let body: serde_json::Value = serde_json::from_slice(&payload(&notice(Event::Rollback))).unwrap();
        let obj = body.as_object().unwrap();
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "app",
                "deployment_id",
                "environment",
                "event",
                "image",
                "message",
                "mode",
                "outcome",
                "previous_image",
                "reason",
                "run_url",
                "strategy",
                "summary_url",
                "target"
            ]
        );
        assert!(obj.values().all(|v| !v.is_object() && !v.is_array()), "flat: {body}");
        assert_eq!(body["event"], "rollback");
        assert_eq!(body["outcome"], "failure");
        assert_eq!(body["reason"], "health_check_failed");
        assert_eq!(body["image"], "ghcr.io/acme/shop:1.4.2");
        assert_eq!(body["previous_image"], "ghcr.io/acme/shop:1.4.1");
        assert_eq!(body["deployment_id"], 42);
        assert_eq!(body["environment"], "production");
    }

    #[test]
    fn absent_values_are_null_not_missing() {
        let mut n = notice(Event::Start);
        n.previous_image = None;
        n.reason = None;
        n.deployment_id = None;
        n.image = String::new();
        let body: serde_json::Value = serde_json::from_slice(&payload(&n)).unwrap();
        for k in ["image", "previous_image", "reason", "deployment_id"] {
            assert!(body.get(k).is_some_and(|v| v.is_null()), "{k}: {body}");
        }
        assert_eq!(body["outcome"], "in_progress");
    }
}
