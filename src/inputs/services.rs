//! What runs on a host: one service from inputs, or several from a
//! `services-file` in the workspace (an API, a REST API and a worker on one
//! host, switched together).

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
}

impl Service {
    pub fn container_name(&self, app: &str, colour: &str) -> String {
        if self.name.is_empty() { format!("{app}-{colour}") } else { format!("{app}-{}-{colour}", self.name) }
    }
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
    #[serde(default = "yes")]
    proxy: bool,
    upstream_file: Option<String>,
    upstream_name: Option<String>,
}

fn yes() -> bool {
    true
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

pub(super) fn from_file(text: &str, d: &Defaults, problems: &mut Vec<Problem>) -> Vec<Service> {
    let p = |message: String| Problem { input: "services-file".into(), message };
    let root: FileRoot = match serde_yaml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            problems.push(p(format!("is not a valid services file: {e}")));
            return vec![];
        }
    };
    if root.services.is_empty() {
        problems.push(p("lists no services".into()));
    }
    let mut out = Vec::new();
    let mut used_ports = std::collections::BTreeMap::new();
    for (i, s) in root.services.into_iter().enumerate() {
        let at = |m: String| p(format!("services[{i}] ({}): {m}", s.name));
        if let Err(e) = grammar::dns1123_label(&s.name) {
            problems.push(at(format!("name {e}")));
        }
        let image = match (&s.image, d.image) {
            (Some(i), _) => grammar::image(i).map_err(|e| problems.push(at(format!("image {e}")))).ok(),
            (None, Some(i)) => Some(i.clone()),
            (None, None) => None,
        };
        let (blue, green) = (s.blue_port.unwrap_or(0), s.green_port.unwrap_or(0));
        if s.proxy && (blue == 0 || green == 0 || blue == green) {
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
            None if s.proxy => d.health_path.clone(),
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
            version_path: if s.proxy { s.version_path.or_else(|| d.version_path.clone()) } else { None },
            env,
            command: s.command,
            restart_policy,
            behind_proxy: s.proxy,
            upstream_file,
        });
    }
    out
}
