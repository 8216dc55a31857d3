//! One redactor that knows every secret value and the forms the action derives
//! from them. Everything the action writes passes through [`Redactor::redact`].

use std::sync::{Arc, RwLock};

use base64::Engine as _;

/// What replaces a secret in any output.
pub const MASK: &str = "***";

/// Values shorter than this are not redacted inside other text: masking `a`
/// or `1` would shred every log line. The runner has the same rule.
const MIN_LEN: usize = 3;

/// Shared, cheaply cloneable set of secret patterns.
#[derive(Clone, Default)]
pub struct Redactor {
    patterns: Arc<RwLock<Vec<String>>>,
}

impl Redactor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a secret value. Returns the strings the runner must be told
    /// to mask (`::add-mask::`): the whole value, each of its lines, and for a
    /// JSON value every string leaf.
    pub fn add(&self, value: &str) -> Vec<String> {
        let mut masks = vec![value.to_string()];
        for line in value.lines() {
            let line = line.trim_end_matches('\r');
            if line != value && line.trim().len() >= MIN_LEN {
                masks.push(line.to_string());
            }
        }
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(value) {
            json_leaves(&json, &mut masks);
        }
        masks.retain(|m| m.len() >= MIN_LEN);
        masks.sort();
        masks.dedup();

        let mut derived = Vec::new();
        for m in &masks {
            derived.extend(derived_forms(m));
        }
        let mut patterns = self.patterns.write().expect("redactor lock");
        for p in masks.iter().chain(derived.iter()) {
            if p.len() >= MIN_LEN && !patterns.contains(p) {
                patterns.push(p.clone());
            }
        }
        // Longest first, so a value is replaced before any of its own lines.
        patterns.sort_by_key(|p| std::cmp::Reverse(p.len()));
        masks
    }

    /// Whether any secret is registered.
    pub fn is_empty(&self) -> bool {
        self.patterns.read().expect("redactor lock").is_empty()
    }

    /// Replaces every known secret form in `text` with [`MASK`].
    pub fn redact(&self, text: &str) -> String {
        let patterns = self.patterns.read().expect("redactor lock");
        if patterns.is_empty() {
            return text.to_string();
        }
        let mut out = text.to_string();
        for p in patterns.iter() {
            if out.contains(p.as_str()) {
                out = out.replace(p.as_str(), MASK);
            }
        }
        out
    }
}

fn json_leaves(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|i| json_leaves(i, out)),
        serde_json::Value::Object(map) => map.values().for_each(|i| json_leaves(i, out)),
        _ => {}
    }
}

/// The forms a secret can take on its way out: base64 (standard and URL-safe,
/// padded or not), percent-encoded, and JSON-escaped.
fn derived_forms(value: &str) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let mut forms = vec![
        STANDARD.encode(value),
        STANDARD_NO_PAD.encode(value),
        URL_SAFE.encode(value),
        URL_SAFE_NO_PAD.encode(value),
        url::form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>(),
        percent_encode_all(value),
    ];
    let json = serde_json::to_string(value).unwrap_or_default();
    forms.push(json.trim_matches('"').to_string());
    forms.retain(|f| f != value);
    forms
}

/// RFC 3986 encoding of everything but unreserved characters (what
/// `encodeURIComponent` and most URL builders produce).
fn percent_encode_all(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    #[test]
    fn redacts_value_lines_and_derived_forms() {
        let r = Redactor::new();
        let secret = "p@ss word/\"quoted\"\nsecond line";
        let masks = r.add(secret);
        assert!(masks.contains(&secret.to_string()));
        assert!(masks.contains(&"second line".to_string()));
        for form in [
            secret.to_string(),
            STANDARD.encode(secret),
            percent_encode_all(secret),
            serde_json::to_string(secret).unwrap(),
        ] {
            let out = r.redact(&format!("before {form} after"));
            assert!(!out.contains(form.trim_matches('"')), "{form} leaked in {out}");
            assert!(out.contains(MASK));
        }
    }

    #[test]
    fn json_leaves_are_masked() {
        let r = Redactor::new();
        let masks = r.add(r#"{"user":"admin-user","password":"hunter2-xyz"}"#);
        assert!(masks.contains(&"hunter2-xyz".to_string()));
        assert_eq!(r.redact("pw=hunter2-xyz"), "pw=***");
    }

    #[test]
    fn short_values_are_not_shredded() {
        let r = Redactor::new();
        r.add("a");
        assert_eq!(r.redact("a cat"), "a cat");
        assert!(r.is_empty());
    }
}
