//! nginx upstream files: a pure renderer and parser, and the switch that
//! installs new files safely.
//!
//! The switch ([`apply`]) is one fixed script in one SSH round trip: write
//! each new file beside the live one, rename it in (atomic), `nginx -t`,
//! reload; any failure puts every file back and reloads. `nginx -s reload`
//! exits 0 even when the master refuses the new configuration, so the
//! caller still verifies through the front door (see `HostTarget::shift`).
//!
//! Switches on one host are serialised (all apps) by a `flock` on
//! `<lock-dir>/nginx-switch.flock`: a new file sits live between the rename
//! and `nginx -t`, and another deploy's `nginx -t` in that window would
//! judge it. The kernel releases the lock when the script ends, so a dead
//! run or a dropped connection never leaves it held.

use std::sync::LazyLock;

use regex::Regex;

use super::error::{HostError, HostFailure};
use super::shell::{self, Privilege};
use super::ssh::Session;

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
pub async fn read(session: &Session, unit: &str, path: &str) -> Result<Content, HostError> {
    let path = shell::value(unit, "upstream-file", path)?;
    if !session.exec(&["test", "-e", path], None).await?.success() {
        return Ok(None);
    }
    Ok(Some(session.run(HostFailure::NginxReadFailed, &["cat", "--", path], None).await?.stdout))
}

/// The switch, as one fixed script run in one SSH round trip: its values
/// come as arguments and the new files' content on stdin, so nothing is
/// ever interpolated into a shell string.
///
/// `$1` lock file, `$2` seconds to wait for it, then `path length` pairs
/// (length `-` removes the file); stdin holds the new contents back to back.
///
/// Under the host-wide `flock` (released by the kernel when the script
/// ends, however it ends: no stale lock, no spin when the disk is full) it
/// prints each file's old content (`OLD <path> <base64>` or `OLD <path> -`),
/// writes the new ones beside the live ones (names that do not end in
/// `.conf`, so `include *.conf` never sees them), renames them in, runs
/// `nginx -t`, and reloads (`systemctl reload nginx` where systemd runs
/// nginx, else `nginx -s reload`). Any failure puts every file back and
/// reloads before it exits non-zero: 65 `nginx -t` refused, 66 reload
/// failed, 70/71 lock, 72 write.
const SWITCH: &str = r#"set -uf
lock=$1 wait=$2; shift 2
mkdir -p -- "${lock%/*}" || exit 70
exec 9>>"$lock" || { echo "cannot open the switch lock $lock" >&2; exit 70; }
flock -w "$wait" 9 || { echo "another switch held $lock for more than ${wait}s" >&2; exit 71; }
reload() {
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet nginx 2>/dev/null; then
    systemctl reload nginx
  else
    nginx -s reload
  fi
}
# Paths are validated by the caller (letters, digits, _ . - /): safe to split.
files= absent=
tidy() {
  for p in $files; do d=${p%/*}; b=${p##*/}; rm -f -- "${d:-/}/.$b.deploy-tmp" "${d:-/}/.$b.deploy-bak"; done
}
undo() {
  for p in $files; do
    d=${p%/*}; b=${p##*/}
    if [ -e "${d:-/}/.$b.deploy-bak" ]; then mv -f -- "${d:-/}/.$b.deploy-bak" "$p"; fi
  done
  for p in $absent; do rm -f -- "$p"; done
  tidy
  reload >/dev/null 2>&1
}
while [ $# -gt 1 ]; do
  p=$1 n=$2; shift 2; d=${p%/*}; b=${p##*/}; d=${d:-/}
  files="$files $p"
  mkdir -p -- "$d" || { tidy; exit 72; }
  rm -f -- "$d/.$b.deploy-bak" "$d/.$b.deploy-tmp"
  if [ -e "$p" ]; then
    printf 'OLD %s ' "$p"; base64 -w0 < "$p" || { tidy; exit 72; }; echo
    cp -p -- "$p" "$d/.$b.deploy-bak" || { tidy; exit 72; }
  else
    echo "OLD $p -"
    absent="$absent $p"
  fi
  if [ "$n" != - ]; then
    dd bs=1 count="$n" of="$d/.$b.deploy-tmp" 2>/dev/null || { tidy; exit 72; }
    [ "$(wc -c < "$d/.$b.deploy-tmp")" -eq "$n" ] || { echo "short write to $p" >&2; tidy; exit 72; }
  fi
done
for p in $files; do
  d=${p%/*}; b=${p##*/}; d=${d:-/}
  if [ -e "$d/.$b.deploy-tmp" ]; then
    mv -f -- "$d/.$b.deploy-tmp" "$p" || { undo; exit 72; }
  else
    rm -f -- "$p" || { undo; exit 72; }
  fi
done
if ! out=$(nginx -t 2>&1); then echo "$out" >&2; undo; exit 65; fi
if ! out=$(reload 2>&1); then echo "$out" >&2; undo; exit 66; fi
tidy
"#;

/// Installs `changes` (path → new content; `None` removes the file), tests
/// and reloads nginx, in one round trip (see `SWITCH`). On failure every
/// file is back as it was, and nginx reloaded, before the error returns.
///
/// Returns what each file held before, to undo the change later with
/// another `apply`.
///
/// # Errors
/// `nginx_config_rejected` (with `nginx -t`'s output), `nginx_reload_failed`,
/// `nginx_write_failed`, `lock_failed`, `sudo_password_required`, or an SSH
/// error.
pub async fn apply(
    session: &Session,
    unit: &str,
    lock_dir: &str,
    privilege: Privilege,
    changes: &[(String, Content)],
) -> Result<Vec<(String, Content)>, HostError> {
    let dir = shell::value(unit, "lock-dir", lock_dir)?;
    // A file for flock (older versions used a directory of another name).
    let lock = format!("{}/nginx-switch.flock", dir.trim_end_matches('/'));
    // The lock wait stays inside the command's own timeout.
    let wait = (session.timeout().as_secs() / 2).max(1).to_string();
    let mut args: Vec<String> = vec![lock, wait];
    let mut stdin = Vec::new();
    for (path, content) in changes {
        args.push(shell::value(unit, "upstream-file", path)?.to_string());
        match content {
            Some(c) => {
                args.push(c.len().to_string());
                stdin.extend_from_slice(c.as_bytes());
            }
            None => args.push("-".into()),
        }
    }
    let mut argv: Vec<&str> = vec!["sh", "-c", SWITCH, "deploy-action-switch"];
    argv.extend(args.iter().map(String::as_str));
    let out = session.exec(&privilege.wrap(&argv), Some(&stdin)).await?;
    if !out.success() {
        let detail = last_lines(&out.stderr, 5);
        let (kind, what) = match out.status {
            Some(65) => (HostFailure::NginxConfigRejected, "nginx -t refused the new upstream configuration"),
            Some(66) => (HostFailure::NginxReloadFailed, "nginx did not reload"),
            Some(70 | 71) => (HostFailure::LockFailed, "could not take the host's nginx switch lock"),
            _ if privilege == Privilege::Sudo && shell::wants_password(&out.stderr) => {
                return Err(shell::sudo_refused(unit));
            }
            _ => (HostFailure::NginxWriteFailed, "could not write the upstream files"),
        };
        return Err(HostError::new(
            unit,
            kind,
            format!("{what}: {detail}; the previous configuration is back"),
        ));
    }
    let mut before = Vec::new();
    for (path, _) in changes {
        let line = out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("OLD ")?.strip_prefix(path.as_str())?.strip_prefix(' '));
        let old = match line {
            Some("-") => None,
            Some(b64) => {
                use base64::Engine as _;
                let bytes = base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|e| {
                    HostError::new(
                        unit,
                        HostFailure::NginxReadFailed,
                        format!("the old content of {path} came back garbled ({e})"),
                    )
                })?;
                Some(String::from_utf8_lossy(&bytes).into_owned())
            }
            None => {
                return Err(HostError::new(
                    unit,
                    HostFailure::NginxReadFailed,
                    format!("the switch did not report the old content of {path}"),
                ));
            }
        };
        before.push((path.clone(), old));
    }
    Ok(before)
}

/// `e`, which a restore of the previous configuration should have undone,
/// and the restore's own failure: the host's proxy state is now unknown.
/// It keeps `e`'s kind.
pub(super) fn restore_failed(e: HostError, undo: &HostError) -> HostError {
    HostError {
        message: format!("{}; restoring the previous configuration also failed: {}", e.message, undo.message),
        ..e
    }
}

/// Why nginx's loaded configuration cannot send a service's traffic where
/// the switch put it, read from `nginx -T`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Miswired {
    /// No configuration file includes the upstream file: the upstream the
    /// action wrote is not in nginx at all. `instead`: upstream files of
    /// the same directory nginx does include (another app name's).
    NotIncluded { instead: Vec<String> },
    /// The file is included but no `proxy_pass` names its upstream;
    /// `proxied`: the upstreams the `proxy_pass` lines name.
    NotProxied { proxied: Vec<String> },
}

/// The files of an `nginx -T` dump: `(path, content)` for each
/// `# configuration file <path>:` section.
fn dump_files(dump: &str) -> Vec<(&str, String)> {
    let mut files: Vec<(&str, String)> = Vec::new();
    for line in dump.lines() {
        if let Some(path) = line.strip_prefix("# configuration file ").and_then(|r| r.strip_suffix(':')) {
            files.push((path, String::new()));
        } else if let Some((_, text)) = files.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    files
}

/// Whether nginx, as `nginx -T` dumped it, includes `file` and proxies to
/// `upstream`; `None` when it does both (or the dump is not one), so the
/// cause lies elsewhere.
pub fn miswired(dump: &str, file: &str, upstream: &str) -> Option<Miswired> {
    static PROXY_PASS: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?m)^[^#\n]*\bproxy_pass\s+https?://([A-Za-z0-9_.\-]+)").expect("regex")
    });
    static INCLUDE: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(?m)^[^#\n]*\binclude\s+([^;\s]+)\s*;").expect("regex"));
    let files = dump_files(dump);
    if files.is_empty() {
        return None;
    }
    if !files.iter().any(|(path, _)| *path == file) {
        let dir = file.rsplit_once('/').map_or("", |(d, _)| d);
        let mut instead: Vec<String> = files
            .iter()
            .flat_map(|(_, text)| INCLUDE.captures_iter(text).map(|c| c[1].to_string()).collect::<Vec<_>>())
            .filter(|inc| inc.rsplit_once('/').is_some_and(|(d, _)| d == dir) && inc != file)
            .collect();
        instead.dedup();
        return Some(Miswired::NotIncluded { instead });
    }
    let mut proxied: Vec<String> = files
        .iter()
        .flat_map(|(_, text)| PROXY_PASS.captures_iter(text).map(|c| c[1].to_string()).collect::<Vec<_>>())
        .collect();
    proxied.sort();
    proxied.dedup();
    if proxied.iter().any(|p| p == upstream) {
        return None;
    }
    Some(Miswired::NotProxied { proxied })
}

impl Miswired {
    pub fn kind(&self) -> HostFailure {
        match self {
            Miswired::NotIncluded { .. } => HostFailure::NginxUpstreamNotIncluded,
            Miswired::NotProxied { .. } => HostFailure::NginxUpstreamNotProxied,
        }
    }

    /// What is wrong and the line to add, for `file` holding `upstream`.
    pub fn explain(&self, file: &str, upstream: &str) -> String {
        match self {
            Miswired::NotIncluded { instead } => {
                let mut m = format!(
                    "nginx does not include {file}, the file the action writes `upstream {upstream}` to, so the switch never reached nginx: add `include {file};` to the http block (at the top of the conf file whose server has `proxy_pass http://{upstream};`)"
                );
                if !instead.is_empty() {
                    m.push_str(&format!(
                        "; nginx includes {} from that directory instead: if that is this app's, set the 'app' input (it defaults to the repository's name) or the upstream file to match",
                        instead.join(", ")
                    ));
                }
                m
            }
            Miswired::NotProxied { proxied } => {
                let names = if proxied.is_empty() { "nothing".to_string() } else { proxied.join(", ") };
                format!(
                    "nginx includes {file} but no proxy_pass names `{upstream}` (its proxy_pass lines name {names}): in the location of this service's server, set `proxy_pass http://{upstream};`"
                )
            }
        }
    }
}

/// `nginx -T` on the host (the whole loaded configuration, each file
/// under a `# configuration file <path>:` line); `None` when it cannot
/// be read (a diagnosis is a bonus, never a new failure).
pub async fn dump(session: &Session, privilege: Privilege) -> Option<String> {
    let out = session.exec(&privilege.wrap(&["nginx", "-T"]), None).await.ok()?;
    out.success().then_some(out.stdout)
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

    const DUMP: &str = "# configuration file /etc/nginx/nginx.conf:\nhttp {\n    include /etc/nginx/conf.d/*.conf;\n}\n\n# configuration file /etc/nginx/conf.d/app.conf:\ninclude /etc/nginx/conf.d/upstreams/app.conf;\nserver {\n    location / {\n        proxy_pass http://app_backend;\n        # proxy_pass http://commented_out;\n    }\n}\n\n# configuration file /etc/nginx/conf.d/upstreams/app.conf:\nupstream app_backend {\n    server 127.0.0.1:8081;\n}\n";

    #[test]
    fn an_upstream_file_nginx_does_not_include_is_named_with_the_line_to_add() {
        let m = miswired(DUMP, "/etc/nginx/conf.d/upstreams/shop.conf", "shop_backend").unwrap();
        assert_eq!(m, Miswired::NotIncluded { instead: vec!["/etc/nginx/conf.d/upstreams/app.conf".into()] });
        let text = m.explain("/etc/nginx/conf.d/upstreams/shop.conf", "shop_backend");
        assert!(text.contains("add `include /etc/nginx/conf.d/upstreams/shop.conf;`"), "{text}");
        assert!(text.contains("'app' input"), "{text}");
        assert_eq!(m.kind().reason(), "nginx_upstream_not_included");
    }

    #[test]
    fn an_included_upstream_no_proxy_pass_names_is_told_apart() {
        let m = miswired(DUMP, "/etc/nginx/conf.d/upstreams/app.conf", "shop_backend").unwrap();
        assert_eq!(m, Miswired::NotProxied { proxied: vec!["app_backend".into()] });
        let text = m.explain("/etc/nginx/conf.d/upstreams/app.conf", "shop_backend");
        assert!(
            text.contains("set `proxy_pass http://shop_backend;`") && text.contains("app_backend"),
            "{text}"
        );
        assert_eq!(m.kind().reason(), "nginx_upstream_not_used");
    }

    #[test]
    fn a_wired_upstream_or_no_dump_is_no_diagnosis() {
        assert_eq!(miswired(DUMP, "/etc/nginx/conf.d/upstreams/app.conf", "app_backend"), None);
        assert_eq!(miswired("nginx: [emerg] something", "/x.conf", "x"), None);
    }

    #[test]
    fn names_cannot_inject_configuration() {
        assert!(valid_name("app_backend"));
        assert!(!valid_name("x { } server"));
        assert!(!valid_name(""));
    }
}
