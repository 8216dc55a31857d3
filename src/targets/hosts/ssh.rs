//! One SSH session per host (russh): connect with a timeout, the host key
//! pinned against the `ssh-known-hosts` input, public-key authentication, then
//! commands given as argument vectors and channels to a unix socket (the
//! Docker Engine) or a TCP port on the host (probes).
//!
//! A host may also be reached over another transport ([`Via`]: an EC2
//! Instance Connect Endpoint's tunnel) with a key that transport brings;
//! when that transport closes, the next channel opened dials it again.
//!
//! SSH `exec` takes one command string that the remote shell splits, so each
//! argument is single-quoted here; nothing is ever interpolated into a shell
//! snippet.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::ChannelMsg;
use russh::client::{self, Handle, Msg};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};

use super::error::{HostError, HostFailure};
use super::known_hosts::{self, KnownHosts, Verdict};
use super::shell::{command_line, sudo_refused, wants_password};
use crate::secrets::SecretValue;

/// Output of a remote command is capped: we read status files, not logs.
const MAX_OUTPUT: usize = 1 << 20;

/// A bidirectional byte stream over an SSH channel.
pub type Stream = russh::ChannelStream<Msg>;

/// Any byte stream an SSH session can run over.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Io for T {}

/// Another way to a host's sshd than TCP to its address: a stream made
/// on demand (an Instance Connect Endpoint's tunnel), and the key to log
/// in with (made for the run, pushed to the host by [`Via::open`]).
#[async_trait::async_trait]
pub trait Via: std::fmt::Debug + Send + Sync {
    /// The key to authenticate with.
    fn key(&self) -> Arc<russh::keys::PrivateKey>;
    /// A fresh stream to the host's sshd, ready for the handshake (the key
    /// accepted by the host for at least the handshake's time). Bounded by
    /// its own timeouts.
    ///
    /// # Errors
    /// A [`HostError`] naming what refused or failed.
    async fn open(&self) -> Result<Box<dyn Io>, HostError>;
}

/// Where and how to connect.
pub struct Dial<'a> {
    /// Unit name used in errors (`web-1 (10.0.0.5)`).
    pub name: &'a str,
    pub host: &'a str,
    pub port: u16,
    pub user: &'a str,
    pub private_key: &'a SecretValue,
    pub known_hosts: &'a str,
    pub timeout: Duration,
    /// A bastion to reach the host through (`ssh-jump-host`).
    pub jump: Option<End<'a>>,
    /// Another transport, bringing its own key (`private_key` is then
    /// unused); dialled again when it closes.
    pub via: Option<Arc<dyn Via>>,
}

/// What a remote command did.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// Exit status; `None` when the command died by a signal.
    pub status: Option<u32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
}

/// Why the handler refused the server's key (and which key it was).
type Refusal = Arc<Mutex<Option<(Verdict, Option<PublicKey>)>>>;

/// The russh client handler: checks the server's key against the pins and
/// records why it refused, so the error can say how to fix it.
struct Pinning {
    known: KnownHosts,
    host: String,
    port: u16,
    refused: Refusal,
}

impl client::Handler for Pinning {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let (verdict, key) = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                (self.known.check(&self.host, self.port, key), Some(key.clone()))
            }
            // Host certificates would need @cert-authority support.
            PublicKeyOrCertificate::Certificate(_) => (Verdict::Unknown, None),
        };
        if verdict == Verdict::Trusted {
            return Ok(true);
        }
        *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = Some((verdict, key));
        Ok(false)
    }
}

/// An authenticated SSH session to one host. Cheap to share behind an `Arc`;
/// every channel is opened through `&self`.
pub struct Session {
    name: String,
    /// Swapped for a new one when a [`Via`] transport closed and was dialled again.
    handle: Mutex<Arc<Handle<Pinning>>>,
    /// The bastion's session, when the host is reached through one: kept
    /// as long as the host's, which runs inside one of its channels.
    jump: Option<Handle<Pinning>>,
    timeout: Duration,
    redial: Option<Redial>,
}

/// What dialling a [`Via`] again takes; one redial at a time.
struct Redial {
    via: Arc<dyn Via>,
    known: KnownHosts,
    host: String,
    port: u16,
    user: String,
    lock: tokio::sync::Mutex<()>,
}

/// One end of an SSH hop: where, and as whom.
pub struct End<'a> {
    pub host: &'a str,
    pub port: u16,
    pub user: &'a str,
}

/// Connects to `end` (over TCP, or over `stream`: a channel of a jump
/// host), checks its key against `known`, and authenticates with `key`.
// long: the SSH handshake in protocol order (connect, pin the host key, authenticate), each step's failure named where it happens.
async fn handshake(
    unit: &str,
    known: &KnownHosts,
    key: &Arc<russh::keys::PrivateKey>,
    end: &End<'_>,
    timeout: Duration,
    stream: Option<Box<dyn Io>>,
) -> Result<Handle<Pinning>, HostError> {
    let mut preferred = russh::Preferred::default();
    let mut algs = known.algorithms(end.host, end.port);
    for a in preferred.key.iter() {
        if !algs.contains(a) {
            algs.push(a.clone());
        }
    }
    preferred.key = algs.into();
    let config = Arc::new(client::Config {
        preferred,
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 4,
        nodelay: true,
        ..Default::default()
    });
    let refused: Refusal = Arc::new(Mutex::new(None));
    let handler = Pinning {
        known: known.clone(),
        host: end.host.to_string(),
        port: end.port,
        refused: refused.clone(),
    };
    let connected = match stream {
        None => tokio::time::timeout(timeout, client::connect(config, (end.host, end.port), handler)).await,
        Some(s) => tokio::time::timeout(timeout, client::connect_stream(config, s, handler)).await,
    };
    let mut handle = match connected {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            let refused = refused.lock().unwrap_or_else(|p| p.into_inner()).take();
            return Err(match refused {
                Some((verdict, key)) => host_key_error(unit, end.host, end.port, verdict, key.as_ref()),
                None => HostError::new(
                    unit,
                    HostFailure::SshConnectFailed,
                    format!("could not connect to {}:{} over SSH: {e}", end.host, end.port),
                ),
            });
        }
        Err(_) => {
            return Err(HostError::new(
                unit,
                HostFailure::SshConnectFailed,
                format!(
                    "could not connect to {}:{} over SSH within {}s (check the address, port and firewall)",
                    end.host,
                    end.port,
                    timeout.as_secs()
                ),
            ));
        }
    };
    let auth = async {
        let hash = if key.algorithm().is_rsa() {
            handle.best_supported_rsa_hash().await?.flatten().or(Some(HashAlg::Sha256))
        } else {
            None
        };
        handle.authenticate_publickey(end.user, PrivateKeyWithHashAlg::new(key.clone(), hash)).await
    };
    let auth_failed = |why: String| {
        HostError::new(
            unit,
            HostFailure::SshAuthFailed,
            format!("SSH authentication as {} failed: {why}", end.user),
        )
    };
    match tokio::time::timeout(timeout, auth).await {
        Ok(Ok(r)) if r.success() => Ok(handle),
        Ok(Ok(_)) => Err(auth_failed(
            "the server refused the key (is its public key in the user's authorized_keys?)".into(),
        )),
        Ok(Err(e)) => Err(auth_failed(e.to_string())),
        Err(_) => Err(auth_failed(format!("no answer within {}s", timeout.as_secs()))),
    }
}

impl Session {
    /// Connects, checks the host key, and authenticates.
    ///
    /// # Errors
    /// [`HostError`] of kind `known_hosts_invalid`, `ssh_key_invalid`,
    /// `ssh_connect_failed`, `host_key_unknown`, `host_key_mismatch`,
    /// `host_key_revoked` or `ssh_auth_failed`; the jump host's failures
    /// keep their kind.
    pub async fn connect(d: Dial<'_>) -> Result<Session, HostError> {
        let unit = d.name;
        let known = KnownHosts::parse(d.known_hosts).map_err(|e| {
            HostError::new(unit, HostFailure::KnownHostsInvalid, format!("input 'ssh-known-hosts' {e}"))
        })?;
        let target = End { host: d.host, port: d.port, user: d.user };
        if let Some(via) = &d.via {
            let stream = via.open().await?;
            let handle = handshake(unit, &known, &via.key(), &target, d.timeout, Some(stream)).await?;
            tracing::debug!(host = unit, via = ?via, "ssh session established");
            return Ok(Session {
                name: unit.to_string(),
                handle: Mutex::new(Arc::new(handle)),
                jump: None,
                timeout: d.timeout,
                redial: Some(Redial {
                    via: via.clone(),
                    known,
                    host: d.host.to_string(),
                    port: d.port,
                    user: d.user.to_string(),
                    lock: tokio::sync::Mutex::new(()),
                }),
            });
        }
        let key = Arc::new(super::material::decode_key(d.private_key).map_err(|e| {
            HostError::new(unit, HostFailure::SshKeyInvalid, format!("input 'ssh-private-key' {e}"))
        })?);
        let (jump, handle) = match &d.jump {
            None => (None, handshake(unit, &known, &key, &target, d.timeout, None).await?),
            Some(j) => {
                // The bastion: its own key pinned in the same known_hosts.
                let jh = handshake(unit, &known, &key, j, d.timeout, None).await.map_err(|e| HostError {
                    message: format!("jump host {}:{}: {}", j.host, j.port, e.message),
                    ..e
                })?;
                let ch = tokio::time::timeout(
                    d.timeout,
                    jh.channel_open_direct_tcpip(d.host, u32::from(d.port), "127.0.0.1", 0),
                )
                .await
                .map_err(|_| {
                    HostError::new(
                        unit,
                        HostFailure::SshConnectFailed,
                        format!("the jump host {}:{} did not open a connection to {}:{} within {}s", j.host, j.port, d.host, d.port, d.timeout.as_secs()),
                    )
                })?
                .map_err(|e| {
                    HostError::new(
                        unit,
                        HostFailure::SshConnectFailed,
                        format!("the jump host {}:{} could not reach {}:{} ({e}); does it allow TCP forwarding to it?", j.host, j.port, d.host, d.port),
                    )
                })?;
                let h = handshake(unit, &known, &key, &target, d.timeout, Some(Box::new(ch.into_stream())))
                    .await?;
                (Some(jh), h)
            }
        };
        tracing::debug!(host = unit, via_jump = jump.is_some(), "ssh session established");
        Ok(Session {
            name: unit.to_string(),
            handle: Mutex::new(Arc::new(handle)),
            jump,
            timeout: d.timeout,
            redial: None,
        })
    }

    fn current(&self) -> Arc<Handle<Pinning>> {
        self.handle.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The session to open a channel on: the current one, or, when its
    /// [`Via`] transport closed (an endpoint ends tunnels), a new one
    /// dialled now. A channel that was open when the transport closed has
    /// failed already; the steps after it (a way back) go on here.
    ///
    /// # Errors
    /// The redial's failure ([`Via::open`], the handshake).
    async fn live(&self) -> Result<Arc<Handle<Pinning>>, HostError> {
        let handle = self.current();
        let Some(r) = &self.redial else { return Ok(handle) };
        if !handle.is_closed() {
            return Ok(handle);
        }
        let _one = r.lock.lock().await;
        let handle = self.current();
        if !handle.is_closed() {
            return Ok(handle);
        }
        tracing::info!(host = %self.name, "the tunnel to the host closed; opening a new one");
        let stream = r.via.open().await?;
        let end = End { host: &r.host, port: r.port, user: &r.user };
        let new =
            Arc::new(handshake(&self.name, &r.known, &r.via.key(), &end, self.timeout, Some(stream)).await?);
        *self.handle.lock().unwrap_or_else(|p| p.into_inner()) = new.clone();
        Ok(new)
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs `argv` (quoted argument by argument), feeding `stdin` if given,
    /// within the session's command timeout.
    ///
    /// # Errors
    /// `ssh_command_timeout`, or `ssh_channel_failed` when the session
    /// broke. A non-zero exit status is not an error here (see [`Self::run`]).
    pub async fn exec(&self, argv: &[&str], stdin: Option<&[u8]>) -> Result<Output, HostError> {
        self.exec_within(argv, stdin, self.timeout).await
    }

    pub async fn exec_within(
        &self,
        argv: &[&str],
        stdin: Option<&[u8]>,
        limit: Duration,
    ) -> Result<Output, HostError> {
        let line =
            command_line(argv).map_err(|e| HostError::new(&self.name, HostFailure::SshCommandFailed, e))?;
        let program = argv.first().copied().unwrap_or_default();
        let started = std::time::Instant::now();
        let handle = self.live().await?;
        let result = tokio::time::timeout(limit, exec_inner(&handle, &line, stdin)).await;
        tracing::debug!(host = %self.name, program, ms = started.elapsed().as_millis() as u64, "ssh exec");
        match result {
            Ok(r) => r.map_err(|e| {
                HostError::new(
                    &self.name,
                    HostFailure::SshChannelFailed,
                    format!("running {program} over SSH failed: {}", self.why(&e)),
                )
            }),
            Err(_) => Err(HostError::new(
                &self.name,
                HostFailure::SshCommandTimeout,
                format!("{program} did not finish within {}s", limit.as_secs()),
            )),
        }
    }

    /// Like [`Self::exec`], but a non-zero exit is an error of `kind`,
    /// carrying the command's stderr.
    ///
    /// # Errors
    /// As [`Self::exec`], plus `kind` on a non-zero exit
    /// (`sudo_password_required` when it was sudo asking for a password).
    pub async fn run(
        &self,
        kind: HostFailure,
        argv: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<Output, HostError> {
        let out = self.exec(argv, stdin).await?;
        if out.success() {
            return Ok(out);
        }
        if argv.first() == Some(&"sudo") && wants_password(&out.stderr) {
            return Err(sudo_refused(&self.name));
        }
        let code = out.status.map_or_else(|| "a signal".to_string(), |c| format!("exit status {c}"));
        Err(HostError::new(
            &self.name,
            kind,
            format!("`{}` failed with {code}: {}", argv.join(" "), out.stderr.trim()),
        ))
    }
}

async fn exec_inner(
    handle: &Handle<Pinning>,
    line: &str,
    stdin: Option<&[u8]>,
) -> Result<Output, russh::Error> {
    let mut ch = handle.channel_open_session().await?;
    ch.exec(true, line).await?;
    if let Some(data) = stdin {
        ch.data(data).await?;
    }
    ch.eof().await?;
    let (mut out, mut err, mut status) = (Vec::new(), Vec::new(), None);
    while let Some(msg) = ch.wait().await {
        match msg {
            ChannelMsg::Data { data } if out.len() < MAX_OUTPUT => out.extend_from_slice(&data),
            ChannelMsg::ExtendedData { data, ext: 1 } if err.len() < MAX_OUTPUT => {
                err.extend_from_slice(&data)
            }
            ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            ChannelMsg::Failure => {
                err.extend_from_slice(b"the server refused to run the command");
                break;
            }
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    Ok(Output {
        status,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
    })
}

impl Session {
    /// A stream to a unix socket on the host (`direct-streamlocal`).
    ///
    /// # Errors
    /// `ssh_channel_failed` when sshd refuses (no such socket, or
    /// `AllowStreamLocalForwarding no`).
    pub async fn open_unix(&self, path: &str) -> Result<Stream, HostError> {
        let handle = self.live().await?;
        let ch = tokio::time::timeout(self.timeout, handle.channel_open_direct_streamlocal(path))
            .await
            .map_err(|_| self.channel_timeout(path))?
            .map_err(|e| {
                HostError::new(
                    &self.name,
                    HostFailure::SshChannelFailed,
                    format!("could not reach unix socket {path} through SSH: {} (does it exist, and does sshd allow stream-local forwarding?)", self.why(&e)),
                )
            })?;
        Ok(ch.into_stream())
    }

    /// A byte stream to a command's stdin and stdout on the host (an `exec`
    /// channel): `sudo -n docker system dial-stdio` reaches an engine whose
    /// socket the SSH user may not open itself.
    ///
    /// # Errors
    /// `ssh_channel_failed`.
    pub async fn open_exec(&self, argv: &[&str]) -> Result<Stream, HostError> {
        let line =
            command_line(argv).map_err(|e| HostError::new(&self.name, HostFailure::SshCommandFailed, e))?;
        let handle = self.live().await?;
        let open = async {
            let ch = handle.channel_open_session().await?;
            ch.exec(true, line.as_str()).await?;
            Ok::<_, russh::Error>(ch)
        };
        let ch = tokio::time::timeout(self.timeout, open)
            .await
            .map_err(|_| self.channel_timeout(argv.first().copied().unwrap_or_default()))?
            .map_err(|e| {
                HostError::new(
                    &self.name,
                    HostFailure::SshChannelFailed,
                    format!("could not run {} over SSH: {}", argv.join(" "), self.why(&e)),
                )
            })?;
        Ok(ch.into_stream())
    }

    /// A stream to `host:port` as seen from the host (`direct-tcpip`).
    ///
    /// # Errors
    /// `ssh_channel_failed` when nothing listens there or sshd refuses TCP
    /// forwarding.
    pub async fn open_tcp(&self, host: &str, port: u16) -> Result<Stream, HostError> {
        let handle = self.live().await?;
        let ch = tokio::time::timeout(
            self.timeout,
            handle.channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0),
        )
        .await
        .map_err(|_| self.channel_timeout(&format!("{host}:{port}")))?
        .map_err(|e| {
            HostError::new(
                &self.name,
                HostFailure::SshChannelFailed,
                format!("could not connect to {host}:{port} from the host: {}", self.why(&e)),
            )
        })?;
        Ok(ch.into_stream())
    }

    /// A channel error, said plainly when the cause is a lost connection
    /// (russh then only reports "Channel send error").
    fn why(&self, e: &russh::Error) -> String {
        if self.current().is_closed() { format!("the SSH connection was lost ({e})") } else { e.to_string() }
    }

    fn channel_timeout(&self, what: &str) -> HostError {
        HostError::new(
            &self.name,
            HostFailure::SshChannelFailed,
            format!("opening a channel to {what} took more than {}s", self.timeout.as_secs()),
        )
    }

    /// Closes the session. Best effort.
    pub async fn close(&self) {
        let _ = self.current().disconnect(russh::Disconnect::ByApplication, "deploy finished", "en").await;
        if let Some(j) = &self.jump {
            let _ = j.disconnect(russh::Disconnect::ByApplication, "deploy finished", "en").await;
        }
    }
}

fn host_key_error(unit: &str, host: &str, port: u16, verdict: Verdict, key: Option<&PublicKey>) -> HostError {
    let fingerprint =
        key.map(|k| k.fingerprint(HashAlg::Sha256).to_string()).unwrap_or_else(|| "(a certificate)".into());
    let line = key.map(|k| known_hosts::line_for(host, port, k)).unwrap_or_default();
    let name = known_hosts::lookup_name(host, port);
    match verdict {
        Verdict::Mismatch => HostError::new(
            unit,
            HostFailure::HostKeyMismatch,
            format!(
                "the host key of {name} ({fingerprint}) does not match the one pinned in 'ssh-known-hosts'; \
                 if the host was rebuilt, verify the new key out of band and replace its line with: {line}"
            ),
        ),
        Verdict::Revoked => HostError::new(
            unit,
            HostFailure::HostKeyRevoked,
            format!("the host key of {name} ({fingerprint}) is marked @revoked in 'ssh-known-hosts'"),
        ),
        Verdict::Unknown | Verdict::Trusted => HostError::new(
            unit,
            HostFailure::HostKeyUnknown,
            format!(
                "{name} is not in 'ssh-known-hosts' (or its 'ssh-known-hosts-ssm' parameter); verify its key ({fingerprint}) out of band \
                 (e.g. ssh-keyscan from a trusted network) and add the line: {line}"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every host key message names the input that exists.
    #[test]
    fn host_key_errors_name_the_ssh_known_hosts_input() {
        let key = PublicKey::from_openssh(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
        )
        .unwrap();
        for verdict in [Verdict::Mismatch, Verdict::Revoked, Verdict::Unknown] {
            let e = host_key_error("web-1", "10.0.0.5", 22, verdict, Some(&key));
            assert!(e.message.contains("'ssh-known-hosts'"), "{}", e.message);
            assert!(!e.message.contains(" 'known-hosts'"), "{}", e.message);
        }
    }
}
