//! `target: hosts` (and `ec2` after discovery): Docker Engine over SSH,
//! blue-green behind nginx. One [`HostTarget`] per host.
//!
//! # Layout
//! - [`ssh`] — the session: pinned host key, key auth, argv commands,
//!   channels to unix sockets and TCP ports on the host.
//! - [`known_hosts`] — parsing and matching the `ssh-known-hosts` input.
//! - [`docker`] — bollard over the session (a channel per request).
//! - [`containers`] — candidate bodies, pulls, one-off runs, removal, pruning.
//! - [`nginx`] — upstream rendering and the tested, reversible switch.
//! - [`lock`] — the per-app deploy lock directory.
//! - `converge` — after a lock taken over from a dead deploy: one colour
//!   again, proven through nginx, before anything else.
//! - [`material`] — the SSH key and known_hosts, checked before any contact.
//! - [`probe`] — HTTP GETs sent from the host.
//! - [`access_log`] — what users saw through nginx, from its access log.
//! - [`error`] — [`HostError`]: the host, a [`HostFailure`] kind with its
//!   stable reason code, and the message.
//!
//! # How a host runs an app
//! Each service runs as `<app>[-<service>]-blue|green`, published on
//! 127.0.0.1:<blue-port|green-port>. nginx's upstream file for the service
//! points at the live colour; a deploy starts the other colour, checks it,
//! rewrites the upstream file, and removes the old colour after draining.
//! Each proxied service's switch is proven, and its health watched, through
//! its own front door: its `front-door` in a services file (the nginx
//! `server` its users reach), else `proxy-url`.
//! What is live is read back from the host (container labels and the
//! upstream file), never remembered between runs.

pub mod access_log;
pub mod containers;
mod converge;
pub mod docker;
pub mod error;
pub mod known_hosts;
pub mod lock;
pub mod material;
pub mod nginx;
pub mod probe;
mod serving;
pub mod shell;
pub mod ssh;
mod target;

pub use error::{HostError, HostFailure};

use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;

use crate::inputs::{HostSpec, Inputs, Service};
use crate::runner::Runner;
use crate::secrets::SecretValue;
use crate::targets::{LiveState, TargetError};

/// Everything needed to reach and drive one host.
#[derive(Debug, Clone)]
pub struct HostConn {
    /// Shown in logs and errors: `host`, or `host:port` off port 22.
    pub name: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    /// Empty when `via` brings the key.
    pub private_key: SecretValue,
    /// `known_hosts` text; the host's key must be pinned in it.
    pub known_hosts: SecretValue,
    /// Bound on every SSH command, channel open and Docker API call.
    pub timeout: Duration,
    /// Bound on an image pull.
    pub long_timeout: Duration,
    /// Bound on the migration container (`migrate-timeout`).
    pub migration_timeout: Duration,
    pub docker_socket: String,
    /// The front door as seen from the host (nginx), e.g. `http://127.0.0.1:80`.
    pub proxy_url: url::Url,
    pub lock_dir: String,
    pub break_lock: bool,
    /// The bastion (`user`, `host`, `port`), if the host is reached through one.
    pub jump: Option<(String, String, u16)>,
    /// Another way in than TCP to `host:port` (an EC2 Instance Connect
    /// Endpoint's tunnel), with its own key made for the run.
    pub via: Option<Arc<dyn ssh::Via>>,
    /// Root runs privileged steps (nginx, the lock directory) itself; any
    /// other user through `sudo -n`, as stock EC2 images set up.
    pub privilege: shell::Privilege,
    /// Registry user and password, sent with each pull.
    pub registry: Option<(String, SecretValue)>,
    pub app: String,
    /// The services (for reading the live state back in `inspect`).
    pub services: Vec<Service>,
    /// nginx's access log on the host, read in the observe window when
    /// `max-error-rate` or `max-latency` is set.
    pub access_log: Option<String>,
}

impl HostConn {
    /// The connection settings for host `h` of a validated `inputs`.
    pub fn from_inputs(
        inputs: &Inputs,
        h: &HostSpec,
        private_key: SecretValue,
        known_hosts: SecretValue,
        registry: Option<(String, SecretValue)>,
    ) -> HostConn {
        let port = h.port.unwrap_or(inputs.ssh.port);
        let user = h.user.clone().unwrap_or_else(|| inputs.ssh.user.clone());
        HostConn {
            name: if port == 22 { h.host.clone() } else { format!("{}:{port}", h.host) },
            host: h.host.clone(),
            port,
            privilege: if user == "root" { shell::Privilege::Direct } else { shell::Privilege::Sudo },
            user,
            private_key,
            known_hosts,
            timeout: inputs.ssh.timeout,
            long_timeout: inputs.timeout.max(inputs.ssh.timeout),
            migration_timeout: inputs.rollout.migration_timeout,
            docker_socket: inputs.ssh.docker_socket.clone(),
            proxy_url: inputs.ssh.proxy_url.clone(),
            lock_dir: inputs.ssh.lock_dir.clone(),
            break_lock: inputs.ssh.break_lock,
            jump: inputs.ssh.jump.as_ref().map(|j| {
                (
                    j.user.clone().unwrap_or_else(|| inputs.ssh.user.clone()),
                    j.host.clone(),
                    j.port.unwrap_or(22),
                )
            }),
            via: None,
            registry,
            app: inputs.app.clone(),
            services: inputs.services.clone(),
            access_log: inputs.traffic.as_ref().map(|t| t.access_log.clone()),
        }
    }
}

/// What this run did on the host, so that rollback and retire undo or
/// finish exactly that.
#[derive(Debug, Default)]
struct State {
    /// The app and deploy id of the lock we took.
    locked_by: Option<(String, String)>,
    /// What served before the candidate (read at launch).
    previous: Option<LiveState>,
    /// The colour launched.
    candidate: Option<String>,
    /// The port each service's live container publishes (by service
    /// name), read at launch: a release may move the app to other ports,
    /// and a canary step must still send the live share where it listens.
    live_ports: Vec<(String, u16)>,
    /// Upstream files as they were before the first shift.
    saved_upstreams: Option<Vec<(String, nginx::Content)>>,
    /// The migration container this run started and has not seen end.
    migrating: Option<String>,
    retired: bool,
    /// Where the access log was read up to, the partial line after it,
    /// and what was counted since the first read.
    access: Option<(u64, String, access_log::Tally)>,
}

/// One host, driven over one SSH session.
pub struct HostTarget {
    conn: HostConn,
    session: Arc<ssh::Session>,
    docker: Docker,
    runner: Runner,
    state: std::sync::Mutex<State>,
}

impl HostTarget {
    /// Connects over SSH (host key pinned), then reaches the Docker Engine
    /// through the session.
    ///
    /// # Errors
    /// The SSH reasons of [`ssh::Session::connect`], `docker_unreachable`.
    pub async fn connect(conn: HostConn, runner: Runner) -> Result<HostTarget, TargetError> {
        for (what, v) in [("docker-socket", &conn.docker_socket), ("lock-dir", &conn.lock_dir)] {
            shell::value(&conn.name, what, v)?;
        }
        let session = Arc::new(
            ssh::Session::connect(ssh::Dial {
                name: &conn.name,
                host: &conn.host,
                port: conn.port,
                user: &conn.user,
                private_key: &conn.private_key,
                known_hosts: conn.known_hosts.expose(),
                timeout: conn.timeout,
                jump: conn.jump.as_ref().map(|(user, host, port)| ssh::End { host, port: *port, user }),
                via: conn.via.clone(),
            })
            .await?,
        );
        let docker = match docker::connect(
            &conn.name,
            session.clone(),
            &conn.docker_socket,
            conn.timeout,
            conn.privilege == shell::Privilege::Sudo,
        )
        .await
        {
            Ok(d) => d,
            Err(e) => {
                session.close().await;
                return Err(e.into());
            }
        };
        tracing::info!(host = %conn.name, "connected");
        Ok(HostTarget { conn, session, docker, runner, state: Default::default() })
    }

    /// The SSH session, for callers that need the host directly (tests).
    pub fn session(&self) -> &ssh::Session {
        &self.session
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}
