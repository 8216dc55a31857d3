//! What runs on a host: one service from inputs, or several from a
//! `services-file` in the workspace (an API, a REST API and a worker on one
//! host, switched together). On a cluster the same file lists the
//! Deployments and their Services ([`kube_from_file`]): one shape, the
//! fields that mean the same thing (`name`, `image`, `proxy`) shared, each
//! target refusing the fields only the other one uses.

use serde::Deserialize;

use super::Problem;
use super::grammar::{self, ImageRef};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    No,
    Always,
    UnlessStopped,
    OnFailure,
}

impl RestartPolicy {
    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "no" => Self::No,
            "always" => Self::Always,
            "unless-stopped" => Self::UnlessStopped,
            "on-failure" => Self::OnFailure,
            _ => return Err("must be one of: no, always, unless-stopped, on-failure".into()),
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::No => "no",
            Self::Always => "always",
            Self::UnlessStopped => "unless-stopped",
            Self::OnFailure => "on-failure",
        }
    }
}

/// One service deployed blue-green on each host.
#[derive(Debug, Clone)]
pub struct Service {
    /// Container names are `<app>-<name>-blue|green` (`<app>-blue|green` for
    /// the single service from inputs, whose name is empty).
    pub name: String,
    pub image: ImageRef,
    pub container_port: u16,
    pub blue_port: u16,
    pub green_port: u16,
    /// Checked on the candidate's port; `None` for a worker, which is judged
    /// by its container state.
    pub health_path: Option<String>,
    /// Asked through nginx after the switch to prove the new version answers.
    pub version_path: Option<String>,
    /// Non-secret environment (`KEY=VALUE`); SSM secrets are added at deploy.
    pub env: Vec<(String, String)>,
    pub command: Option<Vec<String>>,
    pub restart_policy: RestartPolicy,
    /// Sits behind nginx (an upstream file is switched) or not (a worker).
    pub behind_proxy: bool,
    /// The nginx upstream file this service's switch rewrites.
    pub upstream_file: String,
    /// The `upstream` block name inside that file.
    pub upstream_name: String,
    /// Where this service's own nginx server answers (`front-door` in a
    /// services file); the default (both parts `None`) is the `proxy-url`
    /// input with its own host as the `Host` header, as for one service.
    pub front_door: FrontDoor,
}

/// A proxied service's front door: the nginx `server` its users reach,
/// as the host reaches it. The switch is verified and the observe window
/// watches health here, so two services behind two `server` blocks each
/// prove their own version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrontDoor {
    /// Where to connect (`front-door.url`); `None`: the `proxy-url` input.
    /// Only its scheme, host and port are used.
    pub url: Option<url::Url>,
    /// The `Host` header sent (`front-door.host`: the server's
    /// `server_name`); `None`: the URL's own `host[:port]`.
    pub host: Option<String>,
}

impl FrontDoor {
    /// Where to connect from the host and the `Host` header to send, with
    /// `proxy_url` (the input) filling in what this door leaves out.
    pub fn resolve<'a>(&'a self, proxy_url: &'a url::Url) -> (&'a str, u16, String) {
        let url = self.url.as_ref().unwrap_or(proxy_url);
        let host = url.host_str().unwrap_or("127.0.0.1");
        let port = url.port_or_known_default().unwrap_or(80);
        let header = match (&self.host, url.port()) {
            (Some(h), _) => h.clone(),
            (None, Some(p)) => format!("{host}:{p}"),
            (None, None) => host.to_string(),
        };
        (host.trim_start_matches('[').trim_end_matches(']'), port, header)
    }

    /// How messages name it: `http://127.0.0.1/ (Host: rest.example.com)`.
    pub fn describe(&self, proxy_url: &url::Url) -> String {
        let url = self.url.as_ref().unwrap_or(proxy_url);
        match &self.host {
            Some(h) => format!("{url} (Host: {h})"),
            None => url.to_string(),
        }
    }
}

impl Service {
    pub fn container_name(&self, app: &str, colour: &str) -> String {
        if self.name.is_empty() { format!("{app}-{colour}") } else { format!("{app}-{}-{colour}", self.name) }
    }

    /// A fingerprint of what this service's container runs, apart from the
    /// secrets (fingerprinted on their own, from SSM versions): image,
    /// command, environment, ports, restart policy. A change to any of them
    /// is something to deploy even when the image is the same. It is kept
    /// on the host only (a container label), beside the environment itself.
    pub fn config_fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let canonical = serde_json::json!({
            "name": self.name,
            "image": self.image.full(),
            "command": self.command,
            "env": self.env,
            "ports": [self.container_port, self.blue_port, self.green_port],
            "restart": self.restart_policy.as_str(),
        });
        let digest = Sha256::digest(canonical.to_string().as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

/// `front-door:` of a services file entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFrontDoor {
    url: Option<String>,
    host: Option<String>,
}

/// A service as written in the services file (YAML or JSON).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct FileService {
    name: String,
    image: Option<String>,
    container_port: Option<u16>,
    blue_port: Option<u16>,
    green_port: Option<u16>,
    health_check_path: Option<String>,
    version_path: Option<String>,
    #[serde(default)]
    env: std::collections::BTreeMap<String, String>,
    command: Option<Vec<String>>,
    restart_policy: Option<String>,
    proxy: Option<bool>,
    upstream_file: Option<String>,
    upstream_name: Option<String>,
    front_door: Option<FileFrontDoor>,
    // Kubernetes only.
    deployment: Option<String>,
    container: Option<String>,
    service: Option<String>,
    preview_service: Option<String>,
}

impl FileService {
    /// The fields that only a host uses, set in this entry.
    fn host_fields(&self) -> Vec<&'static str> {
        [
            ("container-port", self.container_port.is_some()),
            ("blue-port", self.blue_port.is_some()),
            ("green-port", self.green_port.is_some()),
            ("health-check-path", self.health_check_path.is_some()),
            ("version-path", self.version_path.is_some()),
            ("env", !self.env.is_empty()),
            ("command", self.command.is_some()),
            ("restart-policy", self.restart_policy.is_some()),
            ("upstream-file", self.upstream_file.is_some()),
            ("upstream-name", self.upstream_name.is_some()),
            ("front-door", self.front_door.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }

    /// The fields that only a cluster uses, set in this entry.
    fn cluster_fields(&self) -> Vec<&'static str> {
        [
            ("deployment", self.deployment.is_some()),
            ("container", self.container.is_some()),
            ("service", self.service.is_some()),
            ("preview-service", self.preview_service.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRoot {
    services: Vec<FileService>,
}

/// Defaults every service inherits from the inputs.
pub(super) struct Defaults<'a> {
    pub app: &'a str,
    pub image: Option<&'a ImageRef>,
    pub container_port: u16,
    pub health_path: Option<String>,
    pub version_path: Option<String>,
    pub restart_policy: RestartPolicy,
}

fn problem(message: String) -> Problem {
    Problem { input: "services-file".into(), message }
}

/// The file's entries, or `None` (with the problem) when it does not parse.
fn parse(text: &str, problems: &mut Vec<Problem>) -> Option<Vec<FileService>> {
    // A list (or a scalar) at the top level is a common slip: name the
    // shape expected, once, rather than serde's `expected struct FileRoot`.
    let shape = match serde_yaml::from_str::<serde_yaml::Value>(text) {
        Ok(serde_yaml::Value::Sequence(_)) => Some("is a list at the top level"),
        Ok(serde_yaml::Value::Mapping(_)) | Err(_) => None,
        Ok(_) => Some("is not a mapping at the top level"),
    };
    if let Some(what) = shape {
        problems.push(problem(format!(
            "{what}; a services file is a mapping whose one key, 'services', holds the list (services:\n  - name: web\n  - name: api)"
        )));
        return None;
    }
    let root: FileRoot = match serde_yaml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            problems.push(problem(format!("is not a valid services file: {e}")));
            return None;
        }
    };
    if root.services.is_empty() {
        problems.push(problem("lists no services".into()));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, s) in root.services.iter().enumerate() {
        if let Err(e) = grammar::dns1123_label(&s.name) {
            problems.push(problem(format!("services[{i}] ({}): name {e}", s.name)));
        }
        if !seen.insert(s.name.as_str()) {
            problems.push(problem(format!("services[{i}] ({}): the name is used twice", s.name)));
        }
    }
    Some(root.services)
}

/// `fields`, set in an entry for the other target, as one problem.
fn refuse(at: impl Fn(String) -> Problem, fields: &[&str], target: &str, problems: &mut Vec<Problem>) {
    if !fields.is_empty() {
        problems.push(at(format!("{} only apply to target {target}", fields.join(", "))));
    }
}

/// The Deployments a cluster deploys, from a services file: per entry the
/// Deployment (`deployment`, default `name`), the `container`, its own
/// `image`, the live `service` (default: the Deployment's name; none with
/// `proxy: false`, a worker) and the `preview-service`.
pub(super) fn kube_from_file(text: &str, problems: &mut Vec<Problem>) -> Vec<super::DeploymentRef> {
    let Some(entries) = parse(text, problems) else { return vec![] };
    let mut out = Vec::new();
    for (i, s) in entries.into_iter().enumerate() {
        let at = |m: String| problem(format!("services[{i}] ({}): {m}", s.name));
        refuse(
            at,
            &s.host_fields(),
            "'hosts' and 'ec2' (a Deployment's pod spec lives in the cluster or its manifest)",
            problems,
        );
        let mut name_of = |field: &str, v: &Option<String>, check: fn(&str) -> Result<String, String>| {
            v.as_deref().and_then(|n| check(n).map_err(|e| problems.push(at(format!("{field} {e}")))).ok())
        };
        let deployment = name_of("deployment", &s.deployment, grammar::dns1123_subdomain);
        let container = name_of("container", &s.container, grammar::dns1123_label);
        let service = name_of("service", &s.service, grammar::dns1123_label);
        let preview = name_of("preview-service", &s.preview_service, grammar::dns1123_label);
        let image = s.image.as_deref().and_then(|i| {
            grammar::image(i).map(|i| i.full()).map_err(|e| problems.push(at(format!("image {e}")))).ok()
        });
        let proxy = s.proxy.unwrap_or(true);
        if !proxy && (service.is_some() || preview.is_some()) {
            problems.push(at("has 'proxy: false' (no Service) and names a Service".into()));
        }
        let r = super::DeploymentRef {
            kind: super::WorkloadKind::Deployment,
            name: deployment.unwrap_or_else(|| s.name.clone()),
            container,
            image,
            service,
            preview,
            worker: !proxy,
        };
        if out.iter().any(|o: &super::DeploymentRef| o.name == r.name) {
            problems.push(at(format!("Deployment '{}' is listed twice", r.name)));
        }
        out.push(r);
    }
    out
}

// long: one loop over a file's entries, each key of an entry checked in turn and named by the entry.
pub(super) fn from_file(text: &str, d: &Defaults, problems: &mut Vec<Problem>) -> Vec<Service> {
    let Some(entries) = parse(text, problems) else { return vec![] };
    let mut out = Vec::new();
    let mut used_ports = std::collections::BTreeMap::new();
    for (i, s) in entries.into_iter().enumerate() {
        let at = |m: String| problem(format!("services[{i}] ({}): {m}", s.name));
        refuse(at, &s.cluster_fields(), "'kubernetes'", problems);
        let proxy = s.proxy.unwrap_or(true);
        let image = match (&s.image, d.image) {
            (Some(i), _) => grammar::image(i).map_err(|e| problems.push(at(format!("image {e}")))).ok(),
            (None, Some(i)) => Some(i.clone()),
            (None, None) => None,
        };
        let (blue, green) = (s.blue_port.unwrap_or(0), s.green_port.unwrap_or(0));
        if proxy && (blue == 0 || green == 0 || blue == green) {
            problems.push(at(
                "blue-port and green-port are required for a proxied service and must differ".into()
            ));
        }
        for port in [blue, green].into_iter().filter(|p| *p != 0) {
            if let Some(other) = used_ports.insert(port, s.name.clone()) {
                problems.push(at(format!("port {port} is also used by service {other}")));
            }
        }
        let mut env = Vec::new();
        for (k, v) in &s.env {
            match grammar::env_name(k) {
                Ok(k) => env.push((k, v.clone())),
                Err(e) => problems.push(at(format!("env {e}"))),
            }
        }
        let health_path = match s.health_check_path.as_deref() {
            Some(path) => {
                grammar::http_path(path).map_err(|e| problems.push(at(format!("health-check-path {e}")))).ok()
            }
            None if proxy => d.health_path.clone(),
            None => None,
        };
        let restart_policy = match s.restart_policy.as_deref() {
            Some(r) => RestartPolicy::parse(r).unwrap_or_else(|e| {
                problems.push(at(format!("restart-policy {e}")));
                d.restart_policy
            }),
            None => d.restart_policy,
        };
        let upstream_file = s
            .upstream_file
            .clone()
            .unwrap_or_else(|| format!("/etc/nginx/conf.d/upstreams/{}-{}.conf", d.app, s.name));
        if let Err(e) = grammar::remote_path(&upstream_file) {
            problems.push(at(format!("upstream-file {e}")));
        }
        let front_door = match &s.front_door {
            Some(_) if !proxy => {
                problems.push(at("has 'proxy: false' (not behind nginx) and a front-door".into()));
                FrontDoor::default()
            }
            Some(f) => parse_front_door(f, &at, problems),
            None => FrontDoor::default(),
        };
        let Some(image) = image else {
            problems.push(at("has no image: set image here or the 'image' input".into()));
            continue;
        };
        out.push(Service {
            upstream_name: s
                .upstream_name
                .clone()
                .unwrap_or_else(|| format!("{}_{}", d.app, s.name).replace('-', "_")),
            name: s.name,
            image,
            container_port: s.container_port.unwrap_or(d.container_port),
            blue_port: blue,
            green_port: green,
            health_path,
            version_path: if proxy { s.version_path.or_else(|| d.version_path.clone()) } else { None },
            env,
            command: s.command,
            restart_policy,
            behind_proxy: proxy,
            upstream_file,
            front_door,
        });
    }
    out
}

/// A `front-door:` entry checked: an http(s) URL without a path (the
/// paths are `version-path` and `health-check-path`), a `Host` header
/// that is a host name or address with an optional port.
fn parse_front_door(
    f: &FileFrontDoor,
    at: &dyn Fn(String) -> Problem,
    problems: &mut Vec<Problem>,
) -> FrontDoor {
    if f.url.is_none() && f.host.is_none() {
        problems.push(at(
            "front-door names neither url nor host: give the url nginx answers on for this service, its server_name as host, or both".into(),
        ));
    }
    let url = f.url.as_deref().and_then(|u| match grammar::http_url(u) {
        Ok(url) if url.path() != "/" || url.query().is_some() => {
            problems.push(at(format!(
                "front-door url {u} has a path: give only scheme, host and port (the paths checked are version-path and health-check-path)"
            )));
            None
        }
        Ok(url) => Some(url),
        Err(e) => {
            problems.push(at(format!("front-door url {e}")));
            None
        }
    });
    let host = f.host.as_deref().and_then(|h| {
        let (name, port) = match h.rsplit_once(':') {
            Some((n, p)) if !n.contains(':') => (n, Some(p)),
            _ => (h, None),
        };
        let ok = grammar::host(name).is_ok() && port.is_none_or(|p| grammar::port(p).is_ok());
        if ok {
            Some(h.to_ascii_lowercase())
        } else {
            problems.push(at(format!(
                "front-door host '{h}' must be the Host header nginx matches (its server_name), a host name or address with an optional :port"
            )));
            None
        }
    });
    FrontDoor { url, host }
}

/// Two proxied services checked with the same request (front door, `Host`
/// and path) cannot both prove their switch: nginx answers one request
/// from one upstream, so the second always reads the first's version and
/// rolls back. Named before any contact, with the fix.
pub(super) fn one_answer_per_door(services: &[Service], proxy_url: &url::Url, problems: &mut Vec<Problem>) {
    let proxied: Vec<&Service> = services.iter().filter(|s| s.behind_proxy).collect();
    for (i, a) in proxied.iter().enumerate() {
        let key = |s: &Service| {
            let (host, port, header) = s.front_door.resolve(proxy_url);
            (host.to_string(), port, header, s.version_path.clone().or_else(|| s.health_path.clone()))
        };
        if let Some(b) = proxied[..i].iter().find(|b| key(b) == key(a)) {
            let path = a.version_path.as_deref().or(a.health_path.as_deref()).unwrap_or("/");
            problems.push(problem(format!(
                "services {} and {} are both checked at {path} through {}: nginx answers that request from one upstream, so one of them can never prove its switch; give {} its own front-door (the url and/or host of its nginx server) or its own version-path",
                b.name,
                a.name,
                a.front_door.describe(proxy_url),
                a.name
            )));
        }
    }
}
