//! After a deploy lock taken over from a dead deploy (a killed attempt of
//! this run, a run GitHub reports as ended, or `break-lock`): the host
//! brought back to one known colour before anything else. The dead deploy
//! may have left both colours running, nginx's traffic split between them
//! mid-canary, or an upstream file renamed in but never loaded.
//!
//! [`decide`] is the judgement, pure; [`HostTarget::converge`] reads the
//! host, applies it, proves it through nginx as a switch is proven, and
//! only then removes the other colour.

use bollard::models::ContainerSummary;

use super::containers::{self, LABEL_COLOUR, LABEL_IMAGE, LABEL_ROLE, LABEL_SERVICE};
use super::serving::colour_of_port;
use super::target::ROLLBACK_GRACE;
use super::{HostTarget, nginx};
use crate::inputs::Service;
use crate::targets::{Release, TargetError};

/// The colour to keep, and whether nginx must be told to send it all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keep {
    pub colour: String,
    pub rewrite: bool,
}

/// Which colour a host keeps.
///
/// - `running`: the colours with running app containers, oldest first;
/// - `weighted`: the colours the first proxied service's upstream file
///   sends traffic to (running or not); `None` when no service is behind
///   nginx;
/// - `serving`: the colour that answered through nginx, when it said
///   (`X-Upstream-Addr`).
///
/// A split file keeps the oldest colour, which served before the dead
/// deploy began (its candidate was never committed). Otherwise what nginx
/// serves wins over the file (a file renamed in without a reload names a
/// colour nginx never loaded); without that answer, the colour the file
/// names, if it runs; else the oldest. nginx is rewritten unless its file
/// already names the kept colour alone.
pub fn decide(running: &[&str], weighted: Option<&[&str]>, serving: Option<&str>) -> Option<Keep> {
    let oldest = *running.first()?;
    let Some(weighted) = weighted else {
        return Some(Keep { colour: oldest.into(), rewrite: false });
    };
    let runs = |c: &&str| running.contains(c);
    let colour = match (weighted, serving.filter(runs)) {
        ([_, _, ..], _) => oldest,
        (_, Some(serving)) => serving,
        ([only], None) if runs(only) => only,
        _ => oldest,
    };
    Some(Keep { colour: colour.into(), rewrite: weighted != [colour] })
}

fn colour_of(c: &ContainerSummary) -> Option<&str> {
    containers::label(c, LABEL_COLOUR)
}

impl HostTarget {
    /// See the module docs. `dead` describes the deploy that died.
    ///
    /// The ports are the ones the running containers publish, not this
    /// release's (a release may move a service to other ports). When the
    /// rewritten nginx cannot be proven, the files are put back as they
    /// were and nothing is removed.
    // long: one repair, step by step (read, choose the colour, rewrite nginx, prove it, remove the rest), each step needing the previous one's values.
    pub(super) async fn converge(&self, release: &Release, dead: &str) -> Result<(), TargetError> {
        let unit = self.conn.name.as_str();
        let all = containers::list(&self.docker, unit, &self.conn.app).await?;
        let mut running: Vec<&ContainerSummary> = all
            .iter()
            .filter(|c| {
                containers::is_running(c) && containers::label(c, LABEL_ROLE).unwrap_or("app") == "app"
            })
            .filter(|c| colour_of(c).is_some())
            .collect();
        running.sort_by_key(|c| c.created.unwrap_or(i64::MAX));
        let mut colours: Vec<&str> = Vec::new();
        for c in running.iter().filter_map(|c| colour_of(c)) {
            if !colours.contains(&c) {
                colours.push(c);
            }
        }
        // Each proxied service as the containers run it: their own ports.
        let container_of = |svc: &Service, colour: &str| {
            running.iter().copied().find(|c| {
                colour_of(c) == Some(colour) && containers::label(c, LABEL_SERVICE).unwrap_or("") == svc.name
            })
        };
        let actual: Vec<Service> = release
            .services
            .iter()
            .filter(|s| s.behind_proxy)
            .map(|s| Service {
                blue_port: container_of(s, "blue").and_then(containers::published).unwrap_or(s.blue_port),
                green_port: container_of(s, "green").and_then(containers::published).unwrap_or(s.green_port),
                ..s.clone()
            })
            .collect();
        let mut files = Vec::new();
        for svc in &actual {
            let text = nginx::read(&self.session, unit, &svc.upstream_file).await?.unwrap_or_default();
            let weighted: Vec<&'static str> = nginx::ports(&text)
                .into_iter()
                .filter(|(_, w)| *w > 0)
                .filter_map(|(p, _)| colour_of_port(svc, p))
                .collect();
            files.push(weighted);
        }
        let serving = match actual.first() {
            Some(svc) => self.serving_colour(svc).await,
            None => None,
        };
        let Some(keep) = decide(&colours, files.first().map(Vec::as_slice), serving) else { return Ok(()) };
        let changes: Vec<(String, nginx::Content)> = actual
            .iter()
            .zip(&files)
            .filter(|(_, weighted)| keep.rewrite || weighted.as_slice() != [keep.colour.as_str()])
            .map(|(svc, _)| {
                let servers = nginx::servers(None, containers::port(svc, &keep.colour), 100);
                (svc.upstream_file.clone(), Some(nginx::render(&svc.upstream_name, &servers)))
            })
            .collect();
        if !changes.is_empty() {
            self.runner.line(&format!(
                "{unit}: nginx's upstream was left split between colours, or naming another than the one serving; sending all traffic to {}",
                keep.colour
            ));
            let before =
                nginx::apply(&self.session, unit, &self.conn.lock_dir, self.conn.privilege, &changes).await?;
            // Both colours run one image for some service: only the backend
            // nginx names can tell them apart.
            let alike = actual.iter().any(|svc| {
                let image =
                    |colour| container_of(svc, colour).and_then(|c| containers::label(c, LABEL_IMAGE));
                let other = if keep.colour == "blue" { "green" } else { "blue" };
                image(&keep.colour).is_some() && image(&keep.colour) == image(other)
            });
            let proof = Release { services: actual.clone(), ..release.clone() };
            if let Err(e) = self.verify_serving(&proof, &keep.colour, 100, alike).await {
                if let Err(undo) =
                    nginx::apply(&self.session, unit, &self.conn.lock_dir, self.conn.privilege, &before).await
                {
                    return Err(nginx::restore_failed(e, &undo).into());
                }
                return Err(e.into());
            }
        }
        let kept_image = running
            .iter()
            .find(|c| colour_of(c) == Some(keep.colour.as_str()))
            .and_then(|c| containers::label(c, LABEL_IMAGE))
            .unwrap_or("?")
            .to_string();
        let mut removed = Vec::new();
        for c in running.iter().filter(|c| colour_of(c) != Some(keep.colour.as_str())) {
            let name = containers::name_of(c).to_string();
            containers::remove(&self.docker, unit, &name, ROLLBACK_GRACE).await?;
            removed.push(name);
        }
        if !removed.is_empty() || !changes.is_empty() {
            self.runner.line(&format!(
                "{unit}: brought back to one colour after {dead}: {} ({kept_image}) serves; removed {}",
                keep.colour,
                if removed.is_empty() { "nothing".to_string() } else { removed.join(", ") }
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep(colour: &str, rewrite: bool) -> Option<Keep> {
        Some(Keep { colour: colour.into(), rewrite })
    }

    #[test]
    fn a_split_keeps_the_colour_that_served_before() {
        // Oldest first: blue served before the dead canary started green.
        let both = ["blue", "green"];
        assert_eq!(decide(&both, Some(&["blue", "green"]), Some("green")), keep("blue", true));
        assert_eq!(decide(&both, Some(&["green", "blue"]), None), keep("blue", true));
    }

    #[test]
    fn what_nginx_serves_wins_over_the_file() {
        let both = ["blue", "green"];
        // A finished switch: file and nginx agree on green.
        assert_eq!(decide(&both, Some(&["green"]), Some("green")), keep("green", false));
        // Renamed in, never reloaded: the file names green, blue answers.
        assert_eq!(decide(&both, Some(&["green"]), Some("blue")), keep("blue", true));
        // No X-Upstream-Addr: the file, when the colour it names runs.
        assert_eq!(decide(&both, Some(&["green"]), None), keep("green", false));
    }

    #[test]
    fn one_colour_left_gets_nginx_back_when_the_file_names_another() {
        // The dead deploy's candidate exited, nginx still splits to it.
        assert_eq!(decide(&["blue"], Some(&["blue", "green"]), Some("blue")), keep("blue", true));
        assert_eq!(decide(&["blue"], Some(&["green"]), None), keep("blue", true));
        assert_eq!(decide(&["blue"], Some(&["blue"]), Some("blue")), keep("blue", false));
        assert_eq!(decide(&["green"], Some(&[]), None), keep("green", true));
    }

    #[test]
    fn workers_only_keep_the_oldest_and_an_empty_host_nothing() {
        assert_eq!(decide(&["green", "blue"], None, None), keep("green", false));
        assert_eq!(decide(&[], Some(&["blue"]), Some("blue")), None);
    }
}
