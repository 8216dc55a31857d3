//! The host's Docker Engine reached through the SSH session: every API
//! request opens a `direct-streamlocal` channel to the engine's unix socket
//! and speaks HTTP/1.1 on it (bollard's custom transport), so nothing
//! listens locally. For a deploy user who may not open the socket (a stock
//! EC2 user outside the `docker` group), the channel is an exec of
//! `sudo -n docker system dial-stdio` instead: a byte relay to the same
//! socket, still the Engine API end to end.

use std::sync::Arc;
use std::time::Duration;

use bollard::{BollardRequest, ClientVersion, Docker};
use http::header::{HOST, HeaderValue};
use hyper_util::rt::TokioIo;

use super::error::{HostError, HostFailure};
use super::ssh::Session;

/// The oldest Engine API we speak (Docker 20.10); negotiation only lowers it.
const API_VERSION: ClientVersion = ClientVersion { major_version: 1, minor_version: 41 };

/// How a request reaches the engine.
#[derive(Clone)]
enum Route {
    /// `direct-streamlocal` to the socket, opened by sshd as the SSH user.
    Socket(String),
    /// `sudo -n docker -H unix://<socket> system dial-stdio` on an exec
    /// channel: for a deploy user outside the `docker` group.
    Sudo(String),
}

/// A bollard client whose requests travel over `session` to `socket`. With
/// `sudo`, an engine the SSH user may not reach directly is reached through
/// `sudo -n docker system dial-stdio` (the Docker CLI on the host only
/// relays bytes; every call is still the Engine API from here).
///
/// # Errors
/// `docker_unreachable` when the engine does not answer `/version`;
/// `sudo_password_required`.
pub async fn connect(
    unit: &str,
    session: Arc<Session>,
    socket: &str,
    timeout: Duration,
    sudo: bool,
) -> Result<Docker, HostError> {
    let direct = client(unit, session.clone(), Route::Socket(socket.to_string()), timeout)?;
    let first = match direct.negotiate_version().await {
        Ok(d) => return Ok(d),
        Err(e) => e,
    };
    if !sudo {
        return Err(HostError::new(
            unit,
            HostFailure::DockerUnreachable,
            format!(
                "the Docker Engine did not answer through the SSH session: {first} (is dockerd running, and docker-socket right?)"
            ),
        ));
    }
    tracing::info!(host = unit, error = %first, "the docker socket is not the SSH user's; trying sudo -n docker system dial-stdio");
    // sudo's own complaint goes to stderr, which the byte stream below
    // would not show: ask it plainly first (`run` names a password prompt).
    let asked = session.run(HostFailure::DockerUnreachable, &["sudo", "-n", "true"], None).await;
    if let Err(e) = asked {
        return Err(match e.kind {
            HostFailure::DockerUnreachable => HostError {
                message: format!(
                    "the Docker Engine did not answer as the SSH user ({first}), and {}",
                    e.message
                ),
                ..e
            },
            _ => e,
        });
    }
    let via_sudo = client(unit, session, Route::Sudo(socket.to_string()), timeout)?;
    via_sudo.negotiate_version().await.map_err(|e| {
        HostError::new(
            unit,
            HostFailure::DockerUnreachable,
            format!(
                "the Docker Engine did not answer: as the SSH user ({first}), nor through sudo -n docker system dial-stdio ({e}); add the user to the docker group, or allow it passwordless sudo for docker"
            ),
        )
    })
}

fn client(unit: &str, session: Arc<Session>, route: Route, timeout: Duration) -> Result<Docker, HostError> {
    let transport = move |req: BollardRequest| {
        let session = session.clone();
        let route = route.clone();
        async move {
            let io =
                |e: HostError| bollard::errors::Error::IOError { err: std::io::Error::other(e.to_string()) };
            let stream = match &route {
                Route::Socket(socket) => session.open_unix(socket).await.map_err(io)?,
                Route::Sudo(socket) => {
                    let host = format!("unix://{socket}");
                    session
                        .open_exec(&["sudo", "-n", "--", "docker", "-H", &host, "system", "dial-stdio"])
                        .await
                        .map_err(io)?
                }
            };
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            // The connection lives as long as the response body is read.
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "docker connection ended with an error");
                }
            });
            let (mut parts, body) = req.into_parts();
            // One request per connection: send the origin form and a Host
            // header (the Engine, a Go server, rejects HTTP/1.1 without one).
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
            parts.uri = path.parse().map_err(|e: http::uri::InvalidUri| bollard::errors::Error::IOError {
                err: std::io::Error::other(e.to_string()),
            })?;
            parts.headers.insert(HOST, HeaderValue::from_static("docker"));
            Ok(sender.send_request(http::Request::from_parts(parts, body)).await?)
        }
    };
    let secs = timeout.as_secs().max(1);
    Docker::connect_with_custom_transport(transport, Some("http://docker"), secs, &API_VERSION).map_err(|e| {
        HostError::new(
            unit,
            HostFailure::DockerUnreachable,
            format!("could not set up the Docker client: {e}"),
        )
    })
}

/// Whether a bollard error is the Engine's 404.
pub fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(e, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. })
}

/// The Engine's message without bollard's wrapping.
pub fn message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}
