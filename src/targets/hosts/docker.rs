//! The host's Docker Engine reached through the SSH session: every API
//! request opens a `direct-streamlocal` channel to the engine's unix socket
//! and speaks HTTP/1.1 on it (bollard's custom transport), so nothing
//! listens locally and no `docker` CLI runs on the host.

use std::sync::Arc;
use std::time::Duration;

use bollard::{BollardRequest, ClientVersion, Docker};
use http::header::{HOST, HeaderValue};
use hyper_util::rt::TokioIo;

use super::ssh::Session;
use crate::error::Error;

/// The oldest Engine API we speak (Docker 20.10); negotiation only lowers it.
const API_VERSION: ClientVersion = ClientVersion { major_version: 1, minor_version: 41 };

/// A bollard client whose requests travel over `session` to `socket`.
///
/// # Errors
/// `docker_unreachable` when the engine does not answer `/version`.
pub async fn connect(
    unit: &str,
    session: Arc<Session>,
    socket: &str,
    timeout: Duration,
) -> Result<Docker, Error> {
    let socket = socket.to_string();
    let transport = move |req: BollardRequest| {
        let session = session.clone();
        let socket = socket.clone();
        async move {
            let stream = session
                .open_unix(&socket)
                .await
                .map_err(|e| bollard::errors::Error::IOError { err: std::io::Error::other(e.to_string()) })?;
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
    let docker = Docker::connect_with_custom_transport(transport, Some("http://docker"), secs, &API_VERSION)
        .map_err(|e| {
            Error::unit(unit, "docker_unreachable", format!("could not set up the Docker client: {e}"))
        })?;
    docker.negotiate_version().await.map_err(|e| {
        Error::unit(
            unit,
            "docker_unreachable",
            format!("the Docker Engine did not answer through the SSH session: {e} (is dockerd running, and docker-socket right?)"),
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
