//! Strict grammars for input values. Each parser returns a message saying
//! what is allowed; the caller adds the input's name.
//!
//! Anything that could reach a command line or a remote API is checked here,
//! and no value that starts with `-` is accepted where it could be read as an
//! option (`-oProxyCommand=...`).

use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;

/// A parsed OCI image reference (`registry/repo/name:tag@sha256:...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host (with port), if the reference names one.
    pub registry: Option<String>,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    /// The reference with the registry and tag, as pulled.
    pub fn full(&self) -> String {
        let mut s = match &self.registry {
            Some(r) => format!("{r}/{}", self.repository),
            None => self.repository.clone(),
        };
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }

    /// Name without tag or digest (what `docker pull` calls the repository).
    pub fn name(&self) -> String {
        match &self.registry {
            Some(r) => format!("{r}/{}", self.repository),
            None => self.repository.clone(),
        }
    }

    /// The tag to pull, defaulting to `latest` when neither tag nor digest is set.
    pub fn tag_or_latest(&self) -> String {
        match (&self.tag, &self.digest) {
            (Some(t), _) => t.clone(),
            (None, Some(d)) => d.clone(),
            (None, None) => "latest".into(),
        }
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.full())
    }
}

// The grammar of github.com/distribution/reference.
static IMAGE: LazyLock<Regex> = LazyLock::new(|| {
    let alnum = "[a-z0-9]+";
    let sep = "(?:[._]|__|-+)";
    let component = format!("{alnum}(?:{sep}{alnum})*");
    let domain_component = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
    let domain = format!(r"(?:{domain_component}(?:\.{domain_component})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?");
    let tag = r"[\w][\w.-]{0,127}";
    let digest = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}";
    Regex::new(&format!(
        r"^(?:(?P<domain>{domain})/)?(?P<path>{component}(?:/{component})*)(?::(?P<tag>{tag}))?(?:@(?P<digest>{digest}))?$"
    ))
    .expect("image regex")
});

pub fn image(s: &str) -> Result<ImageRef, String> {
    const ALLOWED: &str =
        "an OCI image reference like registry.example.com/team/app:1.2.3 or app@sha256:<hex>";
    if s.len() > 255 + 128 + 80 || s.starts_with('-') {
        return Err(format!("must be {ALLOWED}"));
    }
    let caps = IMAGE.captures(s).ok_or_else(|| format!("must be {ALLOWED}"))?;
    let mut registry = caps.name("domain").map(|m| m.as_str().to_string());
    let mut repository = caps["path"].to_string();
    // `team/app` has no registry: the first component is a registry only if
    // it looks like a host (has a dot or a port, or is localhost).
    if let Some(r) = &registry
        && !(r.contains('.') || r.contains(':') || r == "localhost" || r.starts_with('['))
    {
        repository = format!("{r}/{repository}");
        registry = None;
    }
    if repository.len() > 255 {
        return Err("repository name must be at most 255 characters".into());
    }
    // The regex lets a registry-like first component through in any case;
    // when it turns out to be part of the repository it must be lower-case.
    if repository.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "has an upper-case repository name '{repository}': OCI repository names are lower-case (a registry host needs a '.' or a ':port')"
        ));
    }
    Ok(ImageRef {
        registry,
        repository,
        tag: caps.name("tag").map(|m| m.as_str().to_string()),
        digest: caps.name("digest").map(|m| m.as_str().to_string()),
    })
}

/// A span as a person writes it in an input, the inverse of [`duration`]
/// for the log and the plan: `500ms`, `2s`, `1.5s`.
pub fn span(d: Duration) -> String {
    match d.as_millis() {
        ms if ms < 1000 => format!("{ms}ms"),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        _ => format!("{:.1}s", d.as_secs_f64()),
    }
}

/// `90s`, `5m`, `1h30m`, `500ms`, or a bare number of seconds.
pub fn duration(s: &str) -> Result<Duration, String> {
    const ALLOWED: &str = "a duration like 90s, 5m, 1h30m or 500ms";
    if s.is_empty() {
        return Err(format!("must be {ALLOWED}"));
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    let mut any = false;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return Err(format!("must be {ALLOWED}"));
        }
        let n: u64 = rest[..digits].parse().map_err(|_| format!("must be {ALLOWED}"))?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else {
            return Err(format!("must be {ALLOWED}"));
        };
        rest = &rest[len..];
        total += unit * n as u32;
        any = true;
    }
    if !any {
        return Err(format!("must be {ALLOWED}"));
    }
    Ok(total)
}

pub fn port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err("must be a port number from 1 to 65535".into()),
    }
}

/// A DNS host name or an IPv4/IPv6 address.
pub fn host(s: &str) -> Result<String, String> {
    const ALLOWED: &str = "a host name (RFC 1123) or an IP address";
    if s.parse::<std::net::IpAddr>().is_ok() {
        return Ok(s.to_string());
    }
    static HOST: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$")
            .expect("regex")
    });
    if s.len() <= 253 && HOST.is_match(s) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!("must be {ALLOWED}"))
    }
}

/// A POSIX user name as sshd accepts it.
pub fn user(s: &str) -> Result<String, String> {
    static USER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[a-z_][a-z0-9_.-]{0,31}$").expect("regex"));
    if USER.is_match(s) {
        Ok(s.to_string())
    } else {
        Err("must be a user name ([a-z_][a-z0-9_.-]*, at most 32 characters)".into())
    }
}

/// A host of the `hosts` list: `[user@]host[:port]` (IPv6 in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

pub fn host_spec(s: &str) -> Result<HostSpec, String> {
    const ALLOWED: &str = "must be [user@]host[:port], e.g. deploy@10.0.1.5:22 or web-1.internal";
    if s.starts_with('-') {
        return Err(ALLOWED.into());
    }
    let (user_part, rest) = match s.split_once('@') {
        Some((u, r)) => (Some(user(u).map_err(|e| format!("user {e}"))?), r),
        None => (None, s),
    };
    let (host_part, port_part) = if let Some(r) = rest.strip_prefix('[') {
        let (h, after) = r.split_once(']').ok_or(ALLOWED)?;
        match after {
            "" => (h, None),
            a => (h, Some(a.strip_prefix(':').ok_or(ALLOWED)?)),
        }
    } else if rest.matches(':').count() == 1 {
        let (h, p) = rest.split_once(':').expect("one colon");
        (h, Some(p))
    } else {
        (rest, None)
    };
    let host = host(host_part).map_err(|e| format!("host {e}"))?;
    let port = port_part.map(port).transpose()?;
    Ok(HostSpec { user: user_part, host, port })
}

/// A DNS-1123 label: what Kubernetes and Docker accept as a name.
pub fn dns1123_label(s: &str) -> Result<String, String> {
    static LABEL: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").expect("regex"));
    if s.len() <= 63 && LABEL.is_match(s) {
        Ok(s.to_string())
    } else {
        Err("must be a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters".into())
    }
}

/// A DNS-1123 subdomain: what Kubernetes accepts as most object names
/// (Deployments among them).
pub fn dns1123_subdomain(s: &str) -> Result<String, String> {
    let ok = s.len() <= 253 && s.split('.').all(|l| dns1123_label(l).is_ok());
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "'{s}' must be a DNS-1123 subdomain: lower-case letters, digits, '-' and '.', each part starting and ending with a letter or digit, at most 253 characters"
        ))
    }
}

/// One item of `deployments`: `[kind/]name[:container]`, the kind a
/// Deployment unless `statefulset/` (`sts/`) or `daemonset/` (`ds/`).
pub fn deployment_ref(s: &str) -> Result<super::DeploymentRef, String> {
    let (name, container) = match s.split_once(':') {
        Some((n, c)) => (n.trim(), Some(c.trim())),
        None => (s.trim(), None),
    };
    let (kind, name) = match name.split_once('/') {
        Some((k, n)) => match super::WorkloadKind::of_prefix(k.trim()) {
            Some(kind) => (kind, n.trim()),
            None => {
                return Err(format!(
                    "'{k}' in '{s}' is not a workload kind: write deployment/<name>, statefulset/<name> or daemonset/<name> (or the name alone for a Deployment)"
                ));
            }
        },
        None => (super::WorkloadKind::Deployment, name),
    };
    let name = dns1123_subdomain(name)?;
    let container = match container {
        Some(c) => Some(
            dns1123_label(c)
                .map_err(|e| format!("container '{c}' in '{s}' {}", e.trim_start_matches("must")))?,
        ),
        None => None,
    };
    Ok(super::DeploymentRef { name, kind, container, ..Default::default() })
}

/// An environment variable name.
pub fn env_name(s: &str) -> Result<String, String> {
    static NAME: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[A-Za-z_][A-Za-z0-9_]*$").expect("regex"));
    if NAME.is_match(s) {
        Ok(s.to_string())
    } else {
        Err(format!("'{s}' is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)"))
    }
}

/// An SSM parameter name or path (`/app/prod/DB_PASSWORD`).
pub fn ssm_name(s: &str) -> Result<String, String> {
    static NAME: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^/?[a-zA-Z0-9_.\-/]{1,2047}$").expect("regex"));
    if NAME.is_match(s) && !s.starts_with('-') && !s.contains("//") {
        Ok(s.to_string())
    } else {
        Err(format!("'{s}' is not an SSM parameter name (letters, digits, '_', '.', '-', '/')"))
    }
}

/// An absolute path on a remote host without anything a shell or option
/// parser could misread.
pub fn remote_path(s: &str) -> Result<String, String> {
    static PATH: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^/[A-Za-z0-9_.\-/]*$").expect("regex"));
    if PATH.is_match(s) && !s.contains("/../") && !s.ends_with("/..") {
        Ok(s.to_string())
    } else {
        Err("must be an absolute path of letters, digits, '_', '.', '-' and '/'".into())
    }
}

/// An HTTP path for health and version checks.
pub fn http_path(s: &str) -> Result<String, String> {
    static PATH: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^/[A-Za-z0-9_.\-/~%?=&]*$").expect("regex"));
    if PATH.is_match(s) {
        Ok(s.to_string())
    } else {
        Err("must be an HTTP path starting with '/', like /health".into())
    }
}

pub fn http_url(s: &str) -> Result<url::Url, String> {
    match url::Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(u),
        _ => Err("must be an http:// or https:// URL".into()),
    }
}

pub fn boolean(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "on" => Ok(true),
        "false" | "no" | "0" | "off" => Ok(false),
        _ => Err("must be true or false".into()),
    }
}

/// Splits a list input on newlines and commas, trimming and dropping blanks.
pub fn list(s: &str) -> Vec<String> {
    s.split(['\n', ',']).map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect()
}

/// A strict list: a JSON array of strings (`["a", "b"]`, `[]`), or items
/// separated by commas or newlines. A value that opens a JSON array must be
/// one; an empty item between two commas (`a,,b`) is a typo, not nothing.
pub fn strict_list(s: &str) -> Result<Vec<String>, String> {
    let t = s.trim();
    if t.starts_with('[') {
        return serde_json::from_str::<Vec<String>>(t)
            .map_err(|e| format!("starts a JSON array but is not a JSON array of strings ({e})"));
    }
    let mut out = Vec::new();
    for line in t.lines() {
        let items: Vec<&str> = line.split(',').map(str::trim).collect();
        if items.len() > 1 && items.iter().any(|i| i.is_empty()) {
            return Err(format!(
                "'{}' has an empty item; separate items with one ',' or a newline",
                line.trim()
            ));
        }
        out.extend(items.into_iter().filter(|i| !i.is_empty()).map(String::from));
    }
    Ok(out)
}

/// A command as an argument vector: a JSON array of strings
/// (`["bin", "--flag"]`), or words split on whitespace. A value that opens a
/// JSON array must be a valid one: `["unterminated` or `[1,2]` is refused,
/// never run as words.
pub fn command(s: &str) -> Result<Vec<String>, String> {
    let t = s.trim();
    let argv = if t.starts_with('[') {
        serde_json::from_str::<Vec<String>>(t)
            .map_err(|e| format!("starts a JSON array but is not a JSON array of strings ({e}); write [\"bin\", \"arg\"] or plain words"))?
    } else {
        t.split_whitespace().map(String::from).collect()
    };
    match argv.first() {
        None => Err("is empty; give a command like [\"bin/migrate\"] or bin/migrate".into()),
        Some(first) if first.is_empty() => Err("starts with an empty program name".into()),
        Some(_) => Ok(argv),
    }
}

/// An AWS region name (`eu-west-1`, `us-gov-west-1`, `cn-north-1`).
pub fn aws_region(s: &str) -> Result<String, String> {
    static REGION: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^[a-z]{2,4}(-[a-z]+)+-[0-9]{1,2}$").expect("regex"));
    if REGION.is_match(s) {
        Ok(s.to_string())
    } else {
        Err(format!("'{s}' is not an AWS region name like eu-west-1 or us-gov-west-1"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images() {
        let i = image("127.0.0.1:5000/demo/app:v1").unwrap();
        assert_eq!(i.registry.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(i.repository, "demo/app");
        assert_eq!(i.tag.as_deref(), Some("v1"));
        let i = image("team/app").unwrap();
        assert_eq!((i.registry, i.repository.as_str()), (None, "team/app"));
        let d = format!("ghcr.io/o/app@sha256:{}", "a".repeat(64));
        assert_eq!(image(&d).unwrap().digest.unwrap(), format!("sha256:{}", "a".repeat(64)));
        for bad in [
            "",
            "-oProxyCommand=x",
            "App:Upper",
            "R/app:v1",
            "Team/app",
            "app:",
            "a b",
            "app:v1;rm",
            "app@sha256:zz",
        ] {
            assert!(image(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn strict_lists_commands_and_regions() {
        assert_eq!(strict_list("a, b\nc").unwrap(), vec!["a", "b", "c"]);
        assert_eq!(strict_list("[]").unwrap(), Vec::<String>::new());
        assert_eq!(strict_list(r#"["ci/test", "lint"]"#).unwrap(), vec!["ci/test", "lint"]);
        for bad in ["[", "a,,b", "[1,2]", r#"["a""#, ",a"] {
            assert!(strict_list(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(command(r#"["sh", "-c", "x y"]"#).unwrap(), vec!["sh", "-c", "x y"]);
        assert_eq!(command("bin/migrate --all").unwrap(), vec!["bin/migrate", "--all"]);
        for bad in [r#"["unterminated"#, "[1,2]", "[]", "", r#"[""]"#] {
            assert!(command(bad).is_err(), "{bad} accepted");
        }
        for ok in ["eu-west-1", "us-gov-west-1", "cn-north-1", "ap-southeast-5", "eu-isoe-west-1"] {
            assert!(aws_region(ok).is_ok(), "{ok} refused");
        }
        for bad in ["us east 1", "US-EAST-1", "useast1", "us-east-", "-us-east-1"] {
            assert!(aws_region(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(duration("30").unwrap(), Duration::from_secs(30));
        for bad in ["", "5x", "m", "-5s", "1.5s", "5 m"] {
            assert!(duration(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn hosts() {
        assert_eq!(
            host_spec("deploy@10.0.1.5:2222").unwrap(),
            HostSpec { user: Some("deploy".into()), host: "10.0.1.5".into(), port: Some(2222) }
        );
        assert_eq!(host_spec("[::1]:22").unwrap().host, "::1");
        assert_eq!(host_spec("web-1.internal").unwrap().port, None);
        for bad in ["-oProxyCommand=sh", "a@-x", "host:0", "host:99999", "bad_host", "x@y@z", "a b"] {
            assert!(host_spec(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn names() {
        assert!(dns1123_label("my-app").is_ok());
        assert!(dns1123_label("My_App").is_err());
        assert!(dns1123_label(&"a".repeat(64)).is_err());
        assert!(env_name("DATABASE_URL").is_ok());
        assert!(env_name("1X").is_err());
        assert!(ssm_name("/myapp/prod/DB").is_ok());
        assert!(ssm_name("-x").is_err());
        assert!(remote_path("/etc/nginx/conf.d/app.conf").is_ok());
        assert!(remote_path("/etc/../x").is_err());
        assert!(remote_path("relative").is_err());
        assert!(http_path("/health").is_ok());
        assert!(http_path("health").is_err());
    }

    #[test]
    fn deployment_refs_name_their_kind() {
        use super::super::WorkloadKind as K;
        for (input, kind, name, container) in [
            ("web", K::Deployment, "web", None),
            ("web:app", K::Deployment, "web", Some("app")),
            ("deploy/web", K::Deployment, "web", None),
            ("statefulset/db:pg", K::StatefulSet, "db", Some("pg")),
            ("sts/db", K::StatefulSet, "db", None),
            ("DaemonSet/agent", K::DaemonSet, "agent", None),
            ("ds/agent:collector", K::DaemonSet, "agent", Some("collector")),
        ] {
            let r = deployment_ref(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!((r.kind, r.name.as_str(), r.container.as_deref()), (kind, name, container), "{input}");
        }
        assert_eq!(deployment_ref("sts/db").unwrap().label(), "statefulset/db");
        assert_eq!(deployment_ref("web").unwrap().label(), "web");
        let e = deployment_ref("cronjob/nightly").unwrap_err();
        assert!(e.contains("'cronjob'") && e.contains("statefulset/<name>"), "{e}");
        assert!(deployment_ref("sts/Db").is_err());
        assert!(deployment_ref("sts/").is_err());
    }
}
