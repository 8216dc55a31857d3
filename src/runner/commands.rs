//! Pure builders for the runner's workflow commands (`::name props::data`),
//! with the escaping the runner expects.

/// Escapes a command's data part the way `@actions/core` does.
pub fn escape_data(s: &str) -> String {
    s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

/// Escapes a property value (`title=...`).
pub fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// Severity of an annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Warning,
    Notice,
}

impl Level {
    fn command(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Notice => "notice",
        }
    }
}

/// `::error title=deploy-action (reason)::message` — the reason code is a
/// stable identifier users can search for and match in tooling.
pub fn annotation(level: Level, reason: &str, message: &str) -> String {
    format!(
        "::{} title={}::{}",
        level.command(),
        escape_property(&format!("deploy-action ({reason})")),
        escape_data(message)
    )
}

pub fn add_mask(value: &str) -> String {
    format!("::add-mask::{}", escape_data(value))
}

pub fn group(name: &str) -> String {
    format!("::group::{}", escape_data(name))
}

pub const END_GROUP: &str = "::endgroup::";

/// A fresh token that is not contained in `text`.
pub fn fresh_token(prefix: &str, text: &str) -> String {
    loop {
        let token = format!("{prefix}{:032x}", rand::random::<u128>());
        if !text.contains(&token) {
            return token;
        }
    }
}

/// Wraps text relayed from a remote host so that no line of it can act as a
/// workflow command: `::stop-commands::TOKEN` … `::TOKEN::`.
pub fn relay_block(source: &str, text: &str) -> String {
    let token = fresh_token("da-relay-", text);
    let mut out = format!("::stop-commands::{token}\n");
    for line in text.lines() {
        out.push_str(&format!("[{source}] {line}\n"));
    }
    out.push_str(&format!("::{token}::"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_actions_core() {
        assert_eq!(escape_data("50%\r\nx"), "50%25%0D%0Ax");
        assert_eq!(escape_property("a:b,c"), "a%3Ab%2Cc");
        assert_eq!(add_mask("l1\nl2"), "::add-mask::l1%0Al2");
    }

    #[test]
    fn annotation_carries_reason() {
        assert_eq!(
            annotation(Level::Error, "health_check_failed", "no answer\non :8081"),
            "::error title=deploy-action (health_check_failed)::no answer%0Aon :8081"
        );
    }

    #[test]
    fn relay_neutralises_commands() {
        let block = relay_block("host-1", "::error::pwned\nok");
        let lines: Vec<&str> = block.lines().collect();
        let token = lines[0].strip_prefix("::stop-commands::").unwrap();
        assert_eq!(lines.last().unwrap(), &format!("::{token}::"));
        assert_eq!(lines[1], "[host-1] ::error::pwned");
    }
}
