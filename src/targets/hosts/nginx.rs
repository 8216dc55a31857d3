//! nginx upstream files: a pure renderer and parser, and the switch that
//! installs new files safely.
//!
//! The switch: write each new file to a temp file beside the live one (its
//! name does not end in `.conf`, so an `include *.conf` never sees it),
//! rename it over the live file (atomic), `nginx -t`, `nginx -s reload`. Any
//! failure puts every file back as it was and reloads. `nginx -s reload`
//! exits 0 even when the new configuration is refused by the master, so the
//! caller still verifies through the front door (see `HostTarget::shift`).
//!
//! Switches on one host are serialised (all apps) by a lock directory: a
//! new file sits live between the rename and `nginx -t`, and another
//! deploy's `nginx -t` in that window would judge it.

use std::sync::LazyLock;

use regex::Regex;

use super::ssh::{self, Session};
use crate::error::Error;

/// One `server` line of an upstream block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Server {
    pub port: u16,
    /// `None` for a single server (no weight needed).
    pub weight: Option<u8>,
}

/// The servers for sending `percent` of traffic to `candidate`, the rest to
/// `live` (if there is one). 100 (or no live version) = only the candidate.
pub fn servers(live: Option<u16>, candidate: u16, percent: u8) -> Vec<Server> {
    match live {
        Some(live) if percent < 100 && live != candidate => {
            if percent == 0 {
                return vec![Server { port: live, weight: None }];
            }
            vec![
                Server { port: live, weight: Some(100 - percent) },
                Server { port: candidate, weight: Some(percent) },
            ]
        }
        _ => vec![Server { port: candidate, weight: None }],
    }
}

/// Whether `name` can be an upstream name without changing the file's
/// meaning.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 128 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Renders the upstream file. The caller has checked `name` with
/// [`valid_name`].
pub fn render(name: &str, servers: &[Server]) -> String {
    let mut s = format!("# Written by deploy-action; rewritten on every switch.\nupstream {name} {{\n");
    for srv in servers {
        match srv.weight {
            Some(w) => s.push_str(&format!("    server 127.0.0.1:{} weight={w};\n", srv.port)),
            None => s.push_str(&format!("    server 127.0.0.1:{};\n", srv.port)),
        }
    }
    s.push_str("    keepalive 16;\n}\n");
    s
}

/// The `(port, weight)` of each loopback `server` line of an upstream file
/// (weight 1 when unset, 0 for `down`/`backup`).
pub fn ports(text: &str) -> Vec<(u16, u32)> {
    static SERVER: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?m)^\s*server\s+(?:127\.0\.0\.1|localhost|\[::1\]):(\d+)([^;]*);").expect("regex")
    });
    SERVER
        .captures_iter(text)
        .filter_map(|c| {
            let port = c[1].parse().ok()?;
            let params = &c[2];
            let weight = if params.split_whitespace().any(|p| p == "down" || p == "backup") {
                0
            } else {
                params.split_whitespace().find_map(|p| p.strip_prefix("weight=")?.parse().ok()).unwrap_or(1)
            };
            Some((port, weight))
        })
        .collect()
}

/// A file's content, `None` when it does not exist.
pub type Content = Option<String>;

/// Reads a remote file.
///
/// # Errors
/// `nginx_read_failed` when it exists but cannot be read.
pub async fn read(session: &Session, unit: &str, path: &str) -> Result<Content, Error> {
    let path = ssh::value(unit, "upstream-file", path)?;
    if !session.exec(&["test", "-e", path], None).await?.success() {
        return Ok(None);
    }
    Ok(Some(session.run("nginx_read_failed", &["cat", "--", path], None).await?.stdout))
}

/// Installs `changes` (path → new content; `None` removes the file), tests
/// and reloads nginx. On failure every file is put back and nginx reloaded
/// before the error returns.
///
/// Returns what each file held before, to undo the change later with
/// another `apply`.
///
/// # Errors
/// `nginx_config_rejected` (with `nginx -t`'s output), `nginx_reload_failed`,
/// `nginx_write_failed`, or an SSH error.
pub async fn apply(
    session: &Session,
    unit: &str,
    lock_dir: &str,
    changes: &[(String, Content)],
) -> Result<Vec<(String, Content)>, Error> {
    let guard = SwitchLock::take(session, unit, lock_dir).await?;
    let result = apply_locked(session, unit, changes).await;
    guard.release(session).await;
    result
}

async fn apply_locked(
    session: &Session,
    unit: &str,
    changes: &[(String, Content)],
) -> Result<Vec<(String, Content)>, Error> {
    let mut before = Vec::new();
    for (path, _) in changes {
        before.push((path.clone(), read(session, unit, path).await?));
    }
    let result = async {
        for (path, content) in changes {
            put(session, unit, path, content.as_deref()).await?;
        }
        let test = session.exec(&["nginx", "-t"], None).await?;
        if !test.success() {
            return Err(Error::unit(
                unit,
                "nginx_config_rejected",
                format!("nginx -t refused the new upstream configuration: {}", last_lines(&test.stderr, 5)),
            ));
        }
        session.run("nginx_reload_failed", &["nginx", "-s", "reload"], None).await?;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(host = unit, stage = "switch", error = %e, "restoring the previous nginx configuration");
        if let Err(undo) = restore_locked(session, unit, &before).await {
            tracing::error!(host = unit, stage = "switch", error = %undo, "could not restore the nginx configuration");
            return Err(restore_failed(unit, &e, &undo));
        }
        return Err(e);
    }
    Ok(before)
}

/// Puts files back as they were and reloads (no `nginx -t`: this content
/// was live before).
///
/// # Errors
/// An SSH error or a failed reload.
pub async fn restore(
    session: &Session,
    unit: &str,
    lock_dir: &str,
    files: &[(String, Content)],
) -> Result<(), Error> {
    let guard = SwitchLock::take(session, unit, lock_dir).await?;
    let result = restore_locked(session, unit, files).await;
    guard.release(session).await;
    result
}

async fn restore_locked(session: &Session, unit: &str, files: &[(String, Content)]) -> Result<(), Error> {
    for (path, content) in files {
        put(session, unit, path, content.as_deref()).await?;
    }
    session.run("nginx_reload_failed", &["nginx", "-s", "reload"], None).await?;
    Ok(())
}

/// The host-wide switch lock (`<lock-dir>/nginx-switch.lock`). A switch
/// takes seconds; one held longer than the command timeout was left by a
/// dead run and is broken.
struct SwitchLock {
    path: String,
}

impl SwitchLock {
    async fn take(session: &Session, unit: &str, lock_dir: &str) -> Result<SwitchLock, Error> {
        let dir = ssh::value(unit, "lock-dir", lock_dir)?;
        let path = format!("{}/nginx-switch.lock", dir.trim_end_matches('/'));
        session.run("lock_failed", &["mkdir", "-p", "--", dir], None).await?;
        let deadline = tokio::time::Instant::now() + session.timeout();
        loop {
            if session.exec(&["mkdir", "--", &path], None).await?.success() {
                return Ok(SwitchLock { path });
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(host = unit, lock = %path, "breaking a stale nginx switch lock");
                session.run("lock_failed", &["rm", "-rf", "--", &path], None).await?;
                continue;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    async fn release(self, session: &Session) {
        if let Err(e) = session.exec(&["rmdir", "--", &self.path], None).await {
            tracing::warn!(lock = %self.path, error = %e, "could not release the nginx switch lock");
        }
    }
}

/// Writes `content` to `path` atomically (temp file + rename), or removes it.
async fn put(session: &Session, unit: &str, path: &str, content: Option<&str>) -> Result<(), Error> {
    let path = ssh::value(unit, "upstream-file", path)?;
    let Some(content) = content else {
        session.run("nginx_write_failed", &["rm", "-f", "--", path], None).await?;
        return Ok(());
    };
    let (dir, file) = path.rsplit_once('/').unwrap_or(("", path));
    let dir = if dir.is_empty() { "/" } else { dir };
    let tmp = format!("{dir}/.{file}.deploy-tmp");
    session.run("nginx_write_failed", &["mkdir", "-p", "--", dir], None).await?;
    session.run("nginx_write_failed", &["tee", "--", &tmp], Some(content.as_bytes())).await?;
    session.run("nginx_write_failed", &["mv", "-f", "--", &tmp, path], None).await?;
    Ok(())
}

/// `e`, which a restore of the previous configuration should have undone,
/// and the restore's own failure: the host's proxy state is now unknown.
pub(super) fn restore_failed(unit: &str, e: &Error, undo: &Error) -> Error {
    Error::unit(
        unit,
        e.reason(),
        format!("{}; restoring the previous configuration also failed: {}", e.detail(), undo.detail()),
    )
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_switch_has_only_the_candidate() {
        let text = render("app_backend", &servers(Some(8081), 8082, 100));
        assert_eq!(
            text,
            "# Written by deploy-action; rewritten on every switch.\nupstream app_backend {\n    server 127.0.0.1:8082;\n    keepalive 16;\n}\n"
        );
        assert_eq!(ports(&text), vec![(8082, 1)]);
    }

    #[test]
    fn canary_weights_split_between_colours() {
        let s = servers(Some(8081), 8082, 10);
        assert_eq!(s, vec![Server { port: 8081, weight: Some(90) }, Server { port: 8082, weight: Some(10) }]);
        assert_eq!(ports(&render("b", &s)), vec![(8081, 90), (8082, 10)]);
        // Nothing live: the candidate takes everything whatever the step.
        assert_eq!(servers(None, 8082, 10), vec![Server { port: 8082, weight: None }]);
    }

    #[test]
    fn parses_hand_written_files() {
        let text = "upstream app_backend {\n    server 127.0.0.1:8081;\n  server localhost:8082 weight=3 max_fails=2;\n server 127.0.0.1:8083 backup;\n server 10.0.0.1:80;\n}\n";
        assert_eq!(ports(text), vec![(8081, 1), (8082, 3), (8083, 0)]);
    }

    #[test]
    fn names_cannot_inject_configuration() {
        assert!(valid_name("app_backend"));
        assert!(!valid_name("x { } server"));
        assert!(!valid_name(""));
    }
}
