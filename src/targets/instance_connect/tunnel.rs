//! The endpoint's tunnel: what `aws ec2-instance-connect open-tunnel` does.
//! A WebSocket `GET wss://<endpoint dns>/openTunnel?instanceConnectEndpointId=…
//! &remotePort=…&privateIpAddress=…`, presigned with SigV4 (service
//! `ec2-instance-connect`, query parameters, 60 s, signed header `host`,
//! the empty body's hash), then the TCP stream to the instance's port as
//! binary frames both ways (at most 65 000 bytes each, as the CLI sends).
//! The stream handed to SSH is one end of an in-memory pipe; a task pumps
//! the other end to and from the WebSocket, and ends when either side does.

use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign};
use aws_sigv4::sign::v4;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};

/// The signing name of the endpoint's API.
pub const SERVICE: &str = "ec2-instance-connect";
/// How long a presigned URL is good for (the CLI's value).
pub const URL_LIFETIME: Duration = Duration::from_secs(60);
/// The largest frame sent.
const MAX_FRAME: usize = 65_000;

/// What could not be opened, and whether the endpoint refused (401/403:
/// the signature, the identity's rights) or something else failed.
#[derive(Debug)]
pub struct OpenError {
    pub refused: bool,
    pub message: String,
}

/// Where a tunnel goes.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// `wss://<endpoint dns>` normally; the `ec2-instance-connect` service
    /// endpoint override (`ws://` for plain HTTP) when one is set.
    pub base: &'a url::Url,
    pub endpoint_id: &'a str,
    pub private_ip: &'a str,
    pub port: u16,
}

impl Target<'_> {
    /// `host[:port]` as the URL names it: sent as `Host` and signed.
    pub fn host(&self) -> String {
        let host = self.base.host_str().unwrap_or_default();
        match self.base.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        }
    }
}

/// The presigned `openTunnel` URL for `to`, signed at `time`.
///
/// # Errors
/// The signer's refusal (unusable credentials or region).
pub fn presign(
    to: &Target<'_>,
    credentials: &aws_credential_types::Credentials,
    region: &str,
    time: SystemTime,
) -> Result<url::Url, String> {
    let mut url = to.base.join("/openTunnel").map_err(|e| e.to_string())?;
    url.query_pairs_mut()
        .append_pair("instanceConnectEndpointId", to.endpoint_id)
        .append_pair("remotePort", &to.port.to_string())
        .append_pair("privateIpAddress", to.private_ip);
    let identity = credentials.clone().into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(URL_LIFETIME);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SERVICE)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let host = to.host();
    let request = SignableRequest::new(
        "GET",
        url.as_str(),
        std::iter::once(("host", host.as_str())),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(request, &params).map_err(|e| e.to_string())?.into_parts();
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in instructions.params() {
            q.append_pair(k, v);
        }
    }
    Ok(url)
}

/// Opens the tunnel at `url` (presigned): TCP (and TLS for `wss`) and the
/// WebSocket handshake within `timeout`. Returns the stream to the
/// instance's port.
///
/// # Errors
/// [`OpenError`], `refused` when the endpoint answered 401 or 403.
pub async fn open(url: &url::Url, host: &str, timeout: Duration) -> Result<DuplexStream, OpenError> {
    let failed = |message: String| OpenError { refused: false, message };
    let mut request = url.as_str().into_client_request().map_err(|e| failed(e.to_string()))?;
    request.headers_mut().insert(
        "Host",
        http::HeaderValue::from_str(host).map_err(|e| failed(format!("bad host {host}: {e}")))?,
    );
    let name = url.host_str().unwrap_or_default().to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    let opened = async {
        let tcp = tokio::net::TcpStream::connect((name.as_str(), port))
            .await
            .map_err(|e| failed(format!("could not connect to {name}:{port}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        if url.scheme() == "wss" {
            let tls = tls_connector()
                .map_err(failed)?
                .connect(
                    rustls::pki_types::ServerName::try_from(name.clone())
                        .map_err(|e| failed(format!("bad endpoint name {name}: {e}")))?,
                    tcp,
                )
                .await
                .map_err(|e| failed(format!("TLS with {name}: {e}")))?;
            let (ws, _) = tokio_tungstenite::client_async(request, tls).await.map_err(handshake_error)?;
            Ok(pump(ws))
        } else {
            let (ws, _) = tokio_tungstenite::client_async(request, tcp).await.map_err(handshake_error)?;
            Ok(pump(ws))
        }
    };
    tokio::time::timeout(timeout, opened)
        .await
        .map_err(|_| failed(format!("no tunnel from {name}:{port} within {}s", timeout.as_secs())))?
}

fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err("no trusted root certificates found on this machine (set SSL_CERT_FILE)".into());
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)))
}

/// A refused handshake, with what the endpoint said (its body is a short
/// error message, never a secret of ours).
fn handshake_error(e: tungstenite::Error) -> OpenError {
    match e {
        tungstenite::Error::Http(response) => {
            let status = response.status();
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(300)]).trim().to_string())
                .unwrap_or_default();
            OpenError {
                refused: matches!(status.as_u16(), 401 | 403),
                message: format!(
                    "the endpoint answered {status}{}",
                    if body.is_empty() { String::new() } else { format!(": {body}") }
                ),
            }
        }
        other => OpenError { refused: false, message: format!("WebSocket handshake failed: {other}") },
    }
}

/// One end of a pipe whose other end a task carries over `ws`.
fn pump<S>(ws: tokio_tungstenite::WebSocketStream<S>) -> DuplexStream
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(4 * MAX_FRAME);
    tokio::spawn(async move {
        let (mut sink, mut frames) = ws.split();
        let (mut from_ssh, mut to_ssh) = tokio::io::split(theirs);
        let up = async {
            let mut buf = vec![0u8; MAX_FRAME];
            loop {
                match from_ssh.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if sink.send(Message::Binary(buf[..n].to_vec().into())).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = sink.send(Message::Close(None)).await;
        };
        let down = async {
            while let Some(frame) = frames.next().await {
                let data = match frame {
                    Ok(Message::Binary(b)) => b.to_vec(),
                    Ok(Message::Text(t)) => t.as_bytes().to_vec(),
                    Ok(Message::Close(_)) | Err(_) => break,
                    Ok(_) => continue,
                };
                if to_ssh.write_all(&data).await.is_err() {
                    break;
                }
            }
            let _ = to_ssh.shutdown().await;
        };
        tokio::select! {
            () = up => {}
            () = down => {}
        }
        tracing::debug!("instance connect tunnel ended");
    });
    ours
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The URL has the CLI's parameters and a query signature for the
    /// endpoint's host; the same inputs sign the same way.
    #[test]
    fn the_url_is_presigned_as_the_cli_presigns_it() {
        let base =
            url::Url::parse("wss://eice-0123.ec2-instance-connect-endpoint.us-east-1.amazonaws.com").unwrap();
        let to = Target { base: &base, endpoint_id: "eice-0123", private_ip: "10.0.1.5", port: 22 };
        let creds = aws_credential_types::Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let url = presign(&to, &creds, "us-east-1", t).unwrap();
        assert_eq!(url.path(), "/openTunnel");
        let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(q["instanceConnectEndpointId"], "eice-0123");
        assert_eq!(q["remotePort"], "22");
        assert_eq!(q["privateIpAddress"], "10.0.1.5");
        assert_eq!(q["X-Amz-Algorithm"], "AWS4-HMAC-SHA256");
        assert_eq!(q["X-Amz-Credential"], "AKIDEXAMPLE/20231114/us-east-1/ec2-instance-connect/aws4_request");
        assert_eq!(q["X-Amz-Expires"], "60");
        assert_eq!(q["X-Amz-SignedHeaders"], "host");
        // What the AWS CLI's signer (botocore's RequestSigner, as
        // eicesigner.py calls it) gives for the same URL, key and time.
        assert_eq!(q["X-Amz-Signature"], "ca52af4b240145cdae14d226d859ca58a502835c8ccfac26c86caca434386128");
        assert_eq!(url, presign(&to, &creds, "us-east-1", t).unwrap());
        let other = Target { private_ip: "10.0.1.6", ..to.clone() };
        let q2: std::collections::HashMap<String, String> =
            presign(&other, &creds, "us-east-1", t).unwrap().query_pairs().into_owned().collect();
        assert_ne!(q["X-Amz-Signature"], q2["X-Amz-Signature"], "the instance's address is signed");
    }

    #[test]
    fn the_signed_host_keeps_a_port_the_url_names() {
        let base = url::Url::parse("ws://127.0.0.1:5057").unwrap();
        let to = Target { base: &base, endpoint_id: "eice-1", private_ip: "127.0.0.7", port: 22 };
        assert_eq!(to.host(), "127.0.0.1:5057");
        let base = url::Url::parse("wss://eice-1.example").unwrap();
        assert_eq!(Target { base: &base, ..to }.host(), "eice-1.example");
    }
}
