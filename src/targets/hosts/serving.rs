//! How a host proves which colour serves: its loopback ports probed
//! directly, the front door asked through nginx (`X-Upstream-Addr`), and
//! the proof after a switch that the candidate takes the traffic.

use std::time::Duration;

use tokio::time::Instant;

use super::{HostError, HostFailure, HostTarget, containers, nginx, probe};
use crate::inputs::Service;
use crate::probe::{Probe, Via, body_start};
use crate::targets::{Release, Target};

/// After a full switch, this many answers in a row must come from the
/// candidate (old nginx workers finish their keep-alive connections first).
const SWITCH_STREAK: u32 = 3;

pub(super) fn colour_of_port(service: &Service, port: u16) -> Option<&'static str> {
    if port == 0 {
        None
    } else if port == service.blue_port {
        Some("blue")
    } else if port == service.green_port {
        Some("green")
    } else {
        None
    }
}

impl HostTarget {
    /// GETs `path` from the host's loopback `port` (a colour's container).
    pub(super) async fn probe_port(&self, port: u16, path: &str) -> Result<Probe, HostError> {
        probe::get(&self.session, self.unit(), ("127.0.0.1", port), "localhost", path, self.conn.timeout)
            .await
    }

    /// Proves through the front door that `colour` now takes the traffic of
    /// every proxied service (`percent` of it; 100 = all).
    ///
    /// The proof must be unique to that colour, not the version text (a
    /// redeploy after a secret rotation answers the same on both colours):
    /// the backend nginx reports in `X-Upstream-Addr` (the setup in docs/hosts.md
    /// adds it) must be the colour's port, [`SWITCH_STREAK`] times in a row
    /// for a full switch. Without that header, the answer must match what
    /// the colour answers directly, and `other_same` (both colours run the
    /// same image) makes that no proof at all: `switch_not_verifiable`.
    // long: one retry loop per service with the two proofs (upstream address, or the answer compared) and their failure messages side by side.
    pub(super) async fn verify_serving(
        &self,
        release: &Release,
        colour: &str,
        percent: u8,
        other_same: bool,
    ) -> Result<(), HostError> {
        let bound = self.conn.timeout.max(Duration::from_secs(10));
        let redactor = self.runner.redactor();
        for (idx, svc) in release.services.iter().enumerate().filter(|(_, s)| s.behind_proxy) {
            let Some(path) = svc.version_path.as_deref().or(svc.health_path.as_deref()) else { continue };
            let port = containers::port(svc, colour);
            let direct = self.probe_port(port, path).await?;
            let expected = direct.body.trim().to_string();
            let compare = svc.version_path.is_some();
            let need = if percent >= 100 { SWITCH_STREAK } else { 1 };
            let deadline = Instant::now() + bound;
            let (mut streak, mut last) = (0, String::from("no answer yet"));
            let mut saw_header = false;
            while streak < need {
                match self.probe(release, idx, Via::FrontDoor, path).await {
                    Ok(p) if (200..300).contains(&p.status) => match p.upstream_port() {
                        Some(got) if got == port => {
                            saw_header = true;
                            streak += 1;
                        }
                        Some(got) => {
                            saw_header = true;
                            if percent >= 100 {
                                streak = 0;
                            }
                            last = format!("answered by 127.0.0.1:{got}, not {colour} on :{port}");
                        }
                        None if other_same => {
                            return Err(HostError::new(
                                self.unit(),
                                HostFailure::SwitchNotVerifiable,
                                format!(
                                    "both colours run the same image, so {path} through {} cannot tell which one answers; add `add_header X-Upstream-Addr $upstream_addr always;` to the location that proxies to {} (see docs/hosts.md)",
                                    self.door_name(svc),
                                    svc.upstream_name
                                ),
                            ));
                        }
                        None if !compare || p.body.trim() == expected => streak += 1,
                        None => {
                            if percent >= 100 {
                                streak = 0;
                            }
                            last = format!("HTTP {} {:?}", p.status, body_start(redactor, &p.body));
                        }
                    },
                    Ok(p) => {
                        if percent >= 100 {
                            streak = 0;
                        }
                        last = format!("HTTP {} {:?}", p.status, body_start(redactor, &p.body));
                    }
                    Err(e) => {
                        streak = 0;
                        last = e.to_string();
                    }
                }
                if streak >= need {
                    break;
                }
                if Instant::now() >= deadline {
                    // Tell a configuration that never reaches nginx (the
                    // file not included, another upstream proxied) from
                    // one nginx refused, with the line to add.
                    if let Some(dump) = nginx::dump(&self.session, self.conn.privilege).await
                        && let Some(m) = nginx::miswired(&dump, &svc.upstream_file, &svc.upstream_name)
                    {
                        return Err(HostError::new(
                            self.unit(),
                            m.kind(),
                            format!(
                                "{path} through {} did not answer from {colour} (:{port}) within {}s (last: {last}): {}",
                                self.door_name(svc),
                                bound.as_secs(),
                                m.explain(&svc.upstream_file, &svc.upstream_name)
                            ),
                        ));
                    }
                    return Err(HostError::new(
                        self.unit(),
                        HostFailure::SwitchNotVerified,
                        format!(
                            "{path} through {} did not answer from {colour} (:{port}, {:?}) within {}s (last: {last}); nginx may have refused the new configuration",
                            self.door_name(svc),
                            body_start(redactor, &expected),
                            bound.as_secs()
                        ),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tracing::info!(
                host = self.unit(),
                stage = "switch",
                service = %svc.name,
                door = %self.door_name(svc),
                path,
                colour,
                port,
                by_upstream = saw_header,
                "front door verified"
            );
        }
        Ok(())
    }

    /// Whether the colour that served before runs the release's image too
    /// (a redeploy after a secret rotation): then the two answer alike, and
    /// only the backend nginx names tells them apart.
    pub(super) fn colours_alike(&self, release: &Release) -> bool {
        self.state().previous.as_ref().is_some_and(|p| {
            p.colour.is_some()
                && p.image.as_deref() == release.services.first().map(|s| s.image.full()).as_deref()
        })
    }

    /// `svc`'s front door as the host reaches it: address, port, `Host`
    /// header (its own `front-door`, else the `proxy-url` input).
    pub(super) fn front_door<'a>(&'a self, svc: &'a Service) -> (&'a str, u16, String) {
        svc.front_door.resolve(&self.conn.proxy_url)
    }

    /// How messages name `svc`'s front door.
    pub(super) fn door_name(&self, svc: &Service) -> String {
        svc.front_door.describe(&self.conn.proxy_url)
    }

    /// Which colour nginx actually sends traffic to, asked through the
    /// front door (`X-Upstream-Addr`), not read from the upstream file: a
    /// run that died between the rename and the reload leaves a file that
    /// names a colour nginx never loaded. `None` when nginx does not say.
    pub(super) async fn serving_colour(&self, svc: &Service) -> Option<&'static str> {
        let path = svc.version_path.as_deref().or(svc.health_path.as_deref())?;
        let (host, port, header) = self.front_door(svc);
        let p = probe::get(&self.session, self.unit(), (host, port), &header, path, self.conn.timeout)
            .await
            .ok()?;
        colour_of_port(svc, p.upstream_port()?)
    }
}
