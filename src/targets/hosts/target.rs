//! [`Target`] for one host: the steps of a deploy as Docker calls, nginx
//! switches and probes (see the contract in [`crate::targets`]).

use std::time::Duration;

use async_trait::async_trait;

use super::containers::{
    self, LABEL_COLOUR, LABEL_CONFIG, LABEL_IMAGE, LABEL_ROLE, LABEL_SECRETS, LABEL_SERVICE,
};
use super::serving::colour_of_port;
use super::{HostError, HostFailure, HostTarget, access_log, lock, nginx, probe};
use crate::probe::{Probe, REQUEST_TIMEOUT, Request, Via};
use crate::targets::{LiveState, Release, StaleLock, Target, TargetError};

/// How long a retired container gets to finish its requests after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// A candidate being rolled back already has no traffic.
pub(super) const ROLLBACK_GRACE: Duration = Duration::from_secs(2);

/// Reads nginx's access log from an offset: `$1` file, `$2` offset, `$3`
/// most bytes. Prints `<size> <start>` (start 0 when the file is shorter
/// than the offset: rotated), then the bytes from there. A fixed script,
/// its values as arguments.
const READ_LOG: &str = r#"set -u
size=$(stat -c %s -- "$1") || exit 3
off=$2
[ "$size" -lt "$off" ] && off=0
echo "$size $off"
[ "$3" -gt 0 ] && [ "$size" -gt "$off" ] && tail -c +"$((off + 1))" -- "$1" | head -c "$3"
exit 0"#;
/// What one read of the access log takes at most (the rest, next round).
const READ_CAP: &str = "4194304";

fn other(colour: Option<&str>) -> &'static str {
    if colour == Some("blue") { "green" } else { "blue" }
}

impl HostTarget {
    pub(super) fn unit(&self) -> &str {
        &self.conn.name
    }

    /// Reads what serves now: running labelled containers, and for a
    /// proxied service the upstream file, which wins when both colours run.
    async fn live_state(&self) -> Result<LiveState, TargetError> {
        Ok(self.read_live().await?.0)
    }

    /// [`Self::live_state`], and the port each live container publishes
    /// (by service), from the same listing.
    async fn read_live(&self) -> Result<(LiveState, Vec<(String, u16)>), TargetError> {
        let all = containers::list(&self.docker, self.unit(), &self.conn.app).await?;
        let running: Vec<_> = all
            .iter()
            .filter(|c| {
                containers::is_running(c) && containers::label(c, LABEL_ROLE).unwrap_or("app") == "app"
            })
            .collect();
        let mut colours: Vec<&str> =
            running.iter().filter_map(|c| containers::label(c, LABEL_COLOUR)).collect();
        colours.sort_unstable();
        colours.dedup();

        let mut colour: Option<String> = None;
        if let Some(svc) = self.conn.services.iter().find(|s| s.behind_proxy)
            && let Some(serving) = self.serving_colour(svc).await
            && colours.contains(&serving)
        {
            colour = Some(serving.to_string());
        } else if let Some(svc) = self.conn.services.iter().find(|s| s.behind_proxy)
            && let Some(text) = nginx::read(&self.session, self.unit(), &svc.upstream_file).await?
        {
            colour = nginx::ports(&text)
                .into_iter()
                .filter(|(_, w)| *w > 0)
                .max_by_key(|(_, w)| *w)
                .and_then(|(p, _)| colour_of_port(svc, p))
                .filter(|c| colours.contains(c))
                .map(str::to_string);
        }
        if colour.is_none() {
            // No proxy to ask: the oldest running colour is the live one.
            colour = running
                .iter()
                .filter(|c| containers::label(c, LABEL_COLOUR).is_some())
                .min_by_key(|c| c.created.unwrap_or(i64::MAX))
                .and_then(|c| containers::label(c, LABEL_COLOUR))
                .map(str::to_string);
        }
        let Some(colour) = colour else { return Ok((LiveState::default(), Vec::new())) };
        let ports = containers::colour_ports(&running, &colour);
        let first = self.conn.services.first().map(|s| s.name.as_str()).unwrap_or("");
        let main = running
            .iter()
            .filter(|c| containers::label(c, LABEL_COLOUR) == Some(colour.as_str()))
            .find(|c| containers::label(c, LABEL_SERVICE).unwrap_or("") == first)
            .or_else(|| running.iter().find(|c| containers::label(c, LABEL_COLOUR) == Some(colour.as_str())));
        let live: Vec<_> =
            running.iter().filter(|c| containers::label(c, LABEL_COLOUR) == Some(colour.as_str())).collect();
        let labelled: Option<Vec<(&str, String)>> = live
            .iter()
            .map(|c| {
                let service = containers::label(c, LABEL_SERVICE).unwrap_or("");
                Some((service, containers::label(c, LABEL_CONFIG)?.to_string()))
            })
            .collect();
        let live = LiveState {
            config: labelled.map(|pairs| crate::targets::config_of(pairs.into_iter())),
            image: main.and_then(|c| {
                containers::label(c, LABEL_IMAGE).map(str::to_string).or_else(|| c.image.clone())
            }),
            secrets_fingerprint: main.and_then(|c| containers::label(c, LABEL_SECRETS)).map(str::to_string),
            leftovers: colours.iter().filter(|c| **c != colour).map(|c| c.to_string()).collect(),
            colour: Some(colour),
        };
        Ok((live, ports))
    }

    fn candidate(&self) -> Result<String, HostError> {
        self.state().candidate.clone().ok_or_else(|| {
            HostError::new(
                self.unit(),
                HostFailure::NoCandidate,
                "no candidate has been launched on this host in this run",
            )
        })
    }

    /// Takes the lock (see [`lock::acquire`]); when it was taken over from a
    /// dead deploy, converges what that deploy left before anything else.
    async fn lock_taking_over(
        &self,
        release: &Release,
        stale: Option<&StaleLock>,
    ) -> Result<(), TargetError> {
        let image = release.services.first().map(|s| s.image.full()).unwrap_or_default();
        let owner = lock::Owner { deploy_id: &release.deploy_id, run_url: &release.run_url, image: &image };
        let taken = lock::acquire(
            &self.session,
            self.conn.privilege,
            self.unit(),
            &self.conn.lock_dir,
            &release.app,
            &owner,
            self.conn.break_lock,
            stale,
            &self.runner,
        )
        .await?;
        self.state().locked_by = Some((release.app.clone(), release.deploy_id.clone()));
        if let lock::Taken::Over(dead) = taken {
            self.converge(release, &dead).await?;
        }
        Ok(())
    }

    /// Runs `cmd` once in a one-off container `<app>-<suffix>` from the new
    /// image with the app's env and secrets, its output relayed (and
    /// redacted), bounded by `migrate-timeout`.
    async fn one_off(
        &self,
        release: &Release,
        suffix: &str,
        what: &str,
        cmd: &[String],
    ) -> Result<(), TargetError> {
        let unit = self.unit();
        let Some(svc) = release.services.first() else { return Ok(()) };
        let name = format!("{}-{suffix}", release.app);
        // A migration another run started and that still runs is never
        // removed mid-way: that would cut a schema change in half.
        if let Some(owner) = containers::running_deploy(&self.docker, unit, &name).await?
            && owner != release.deploy_id
        {
            return Err(HostError::new(
                unit,
                HostFailure::MigrationRunning,
                format!(
                    "{name} from deploy {owner} is still running; wait for it to end (or stop it: docker rm -f {name}) and deploy again"
                ),
            )
            .into());
        }
        self.runner.line(&format!(
            "{unit}: running {what} in {name} (at most {}s): {}",
            self.conn.migration_timeout.as_secs(),
            cmd.join(" ")
        ));
        self.state().migrating = Some(name.clone());
        let run =
            containers::run_once(&self.docker, unit, &name, release, svc, cmd, self.conn.migration_timeout)
                .await;
        self.state().migrating = None;
        let run = run?;
        self.runner.relay(&format!("{unit} {suffix}"), &run.tail);
        if run.exit_code != 0 {
            return Err(TargetError::Migration {
                unit: unit.to_string(),
                message: format!(
                    "{}`{}` exited with status {}; its last lines:\n{}",
                    if suffix == "migrate" { String::new() } else { format!("{what} ") },
                    cmd.join(" "),
                    run.exit_code,
                    run.tail.trim_end()
                ),
            });
        }
        tracing::info!(host = unit, stage = suffix, "finished");
        Ok(())
    }
}

#[async_trait]
impl Target for HostTarget {
    fn name(&self) -> &str {
        &self.conn.name
    }

    async fn inspect(&self) -> Result<LiveState, TargetError> {
        self.live_state().await
    }

    async fn lock(&self, release: &Release) -> Result<(), TargetError> {
        self.lock_taking_over(release, None).await
    }

    async fn take_over_lock(&self, release: &Release, stale: &StaleLock) -> Result<(), TargetError> {
        self.lock_taking_over(release, Some(stale)).await
    }

    async fn prepare(&self, release: &Release) -> Result<(), TargetError> {
        let unit = self.unit();
        let held = self.state().locked_by.as_ref().is_some_and(|(_, id)| *id == release.deploy_id);
        if !held {
            self.lock(release).await?;
        }
        if let Some(path) = self.conn.access_log.as_deref() {
            // Read in the observe window: a wrong path must fail here, before
            // anything switches.
            let path = super::shell::value(unit, "nginx-access-log", path)?;
            let argv = self.conn.privilege.wrap(&["test", "-r", path]);
            if !self.session.exec(&argv, None).await?.success() {
                return Err(HostError::new(
                    unit,
                    HostFailure::AccessLogUnreadable,
                    format!(
                        "cannot read nginx's access log {path}, needed for max-error-rate / max-latency: set 'nginx-access-log' to where this host's nginx logs (its access_log directive)"
                    ),
                )
                .into());
            }
        }
        let mut pulled: Vec<String> = Vec::new();
        for svc in &release.services {
            let full = svc.image.full();
            if pulled.contains(&full) {
                continue;
            }
            self.runner.line(&format!("{unit}: pulling {full}"));
            let creds = containers::credentials(self.conn.registry.as_ref(), &svc.image);
            containers::pull(&self.docker, &self.runner, unit, &svc.image, creds, self.conn.long_timeout)
                .await?;
            pulled.push(full);
        }
        Ok(())
    }

    async fn migrate(&self, release: &Release) -> Result<(), TargetError> {
        if let Some(cmd) = &release.pre_migrate_command {
            self.one_off(release, "pre-migrate", "pre-migrate-command", cmd).await?;
        }
        match &release.migrate_command {
            Some(cmd) => self.one_off(release, "migrate", "the migration", cmd).await,
            None => Ok(()),
        }
    }

    async fn migrate_rollback(&self, release: &Release) -> Result<(), TargetError> {
        match &release.migrate_rollback_command {
            Some(cmd) => self.one_off(release, "migrate-rollback", "migrate-rollback-command", cmd).await,
            None => Ok(()),
        }
    }

    async fn launch(&self, release: &Release) -> Result<(), TargetError> {
        let unit = self.unit();
        let known = self.state().previous.clone();
        let (previous, live_ports) = match known {
            Some(p) => (p, self.state().live_ports.clone()),
            None => self.read_live().await?,
        };
        let candidate = other(previous.colour.as_deref());
        {
            let mut st = self.state();
            st.previous = Some(previous.clone());
            st.candidate = Some(candidate.to_string());
            st.live_ports = live_ports;
        }
        tracing::info!(host = unit, stage = "launch", colour = candidate, live = ?previous.colour, "starting the candidate");
        for svc in &release.services {
            let name = svc.container_name(&release.app, candidate);
            containers::start(&self.docker, unit, &name, containers::candidate_body(release, svc, candidate))
                .await?;
        }
        Ok(())
    }

    async fn probe(
        &self,
        release: &Release,
        service: usize,
        via: Via,
        path: &str,
    ) -> Result<Probe, TargetError> {
        let unit = self.unit();
        let svc = release
            .services
            .get(service)
            .ok_or_else(|| TargetError::Other(format!("service index {service} out of range")))?;
        match via {
            Via::Candidate => {
                let port = containers::port(svc, &self.candidate()?);
                Ok(probe::get(&self.session, unit, ("127.0.0.1", port), "localhost", path, self.conn.timeout)
                    .await?)
            }
            Via::FrontDoor => {
                let (host, port, header) = self.front_door(svc);
                Ok(probe::get(&self.session, unit, (host, port), &header, path, self.conn.timeout).await?)
            }
        }
    }

    async fn request(
        &self,
        release: &Release,
        service: usize,
        via: Via,
        req: &Request,
    ) -> Result<Probe, TargetError> {
        let svc = release
            .services
            .get(service)
            .ok_or_else(|| TargetError::Other(format!("service index {service} out of range")))?;
        let (host, port, header) = match via {
            Via::Candidate => {
                ("127.0.0.1", containers::port(svc, &self.candidate()?), "localhost".to_string())
            }
            Via::FrontDoor => self.front_door(svc),
        };
        Ok(probe::send(&self.session, self.unit(), (host, port), &header, req, REQUEST_TIMEOUT).await?)
    }

    async fn traffic(&self, release: &Release) -> Result<Option<access_log::Tally>, TargetError> {
        let Some(path) = self.conn.access_log.as_deref() else { return Ok(None) };
        let path = super::shell::value(self.unit(), "nginx-access-log", path)?;
        let (offset, first) = match &self.state().access {
            Some((o, _, _)) => (*o, false),
            None => (0, true),
        };
        let (off, cap) = (offset.to_string(), if first { "0" } else { READ_CAP });
        let argv = self.conn.privilege.wrap(&["sh", "-c", READ_LOG, "sh", path, &off, cap]);
        let out = self.session.run(HostFailure::AccessLogUnreadable, &argv, None).await?;
        let (head, data) = out.stdout.split_once('\n').unwrap_or((out.stdout.as_str(), ""));
        let Some((size, start)) =
            head.split_once(' ').and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
        else {
            return Err(HostError::new(
                self.unit(),
                HostFailure::AccessLogUnreadable,
                format!("reading {path}: unexpected answer"),
            )
            .into());
        };
        let ports: Vec<u16> = match self.state().candidate.clone() {
            Some(c) => {
                release.services.iter().filter(|s| s.behind_proxy).map(|s| containers::port(s, &c)).collect()
            }
            None => vec![],
        };
        let mut state = self.state();
        let (_, carry, tally) = state.access.get_or_insert_with(|| (size, String::new(), Default::default()));
        if first {
            return Ok(Some(tally.clone()));
        }
        if start == 0 && offset > 0 {
            // Rotated (the file is shorter than what was read): a new file.
            carry.clear();
        }
        carry.push_str(data);
        let whole = carry.rfind('\n').map_or(0, |i| i + 1);
        tally.add(&carry[..whole], &ports);
        carry.drain(..whole);
        let tally = tally.clone();
        if let Some(a) = state.access.as_mut() {
            a.0 = start + data.len() as u64;
        }
        Ok(Some(tally))
    }

    async fn candidate_running(&self, release: &Release, service: usize) -> Result<bool, TargetError> {
        let Some(svc) = release.services.get(service) else { return Ok(false) };
        let name = svc.container_name(&release.app, &self.candidate()?);
        Ok(containers::running(&self.docker, self.unit(), &name).await?)
    }

    async fn shift(&self, release: &Release, percent: u8) -> Result<(), TargetError> {
        let unit = self.unit();
        let candidate = self.candidate()?;
        let (live, live_ports) = {
            let st = self.state();
            (st.previous.as_ref().and_then(|p| p.colour.clone()), st.live_ports.clone())
        };
        let mut changes = Vec::new();
        for svc in release.services.iter().filter(|s| s.behind_proxy) {
            if !nginx::valid_name(&svc.upstream_name) {
                return Err(HostError::new(
                    unit,
                    HostFailure::InvalidUpstreamName,
                    format!("upstream name '{}' must be letters, digits and '_'", svc.upstream_name),
                )
                .into());
            }
            let live_port = live.as_deref().map(|c| {
                live_ports
                    .iter()
                    .find(|(name, _)| *name == svc.name)
                    .map_or(containers::port(svc, c), |(_, p)| *p)
            });
            let servers = nginx::servers(live_port, containers::port(svc, &candidate), percent);
            changes.push((svc.upstream_file.clone(), Some(nginx::render(&svc.upstream_name, &servers))));
        }
        if changes.is_empty() {
            // Workers only: nothing to switch.
            return Ok(());
        }
        tracing::info!(host = unit, stage = "switch", percent, colour = %candidate, "switching nginx");
        let before =
            nginx::apply(&self.session, unit, &self.conn.lock_dir, self.conn.privilege, &changes).await?;
        {
            let mut st = self.state();
            if st.saved_upstreams.is_none() {
                st.saved_upstreams = Some(before.clone());
            }
        }
        let other_same = self.colours_alike(release);
        if let Err(e) = self.verify_serving(release, &candidate, percent, other_same).await {
            tracing::warn!(host = unit, stage = "switch", error = %e, "switch not verified; restoring");
            if let Err(undo) =
                nginx::apply(&self.session, unit, &self.conn.lock_dir, self.conn.privilege, &before).await
            {
                return Err(nginx::restore_failed(e, &undo).into());
            }
            return Err(e.into());
        }
        self.runner.line(&format!("{unit}: {percent}% of traffic goes to {candidate}"));
        Ok(())
    }

    async fn retire(&self, release: &Release) -> Result<(), TargetError> {
        let unit = self.unit();
        let candidate = self.candidate()?;
        let previous = self.state().previous.clone().unwrap_or_default();
        let mut keep: Vec<String> = release.services.iter().map(|s| s.image.full()).collect();
        if let Some(old) = previous.colour.as_deref().filter(|c| *c != candidate) {
            let all = containers::list(&self.docker, unit, &release.app).await?;
            keep.extend(
                all.iter()
                    .filter(|c| containers::label(c, LABEL_COLOUR) == Some(old))
                    .filter_map(|c| containers::label(c, LABEL_IMAGE).map(str::to_string)),
            );
            for svc in &release.services {
                let name = svc.container_name(&release.app, old);
                containers::remove(&self.docker, unit, &name, STOP_GRACE).await?;
                tracing::info!(host = unit, stage = "retire", container = %name, "old version removed");
            }
        }
        self.state().retired = true;
        let mut repos: Vec<String> = release.services.iter().map(|s| s.image.name()).collect();
        repos.dedup();
        for repo in repos {
            containers::prune(&self.docker, unit, &repo, &keep).await;
        }
        Ok(())
    }

    async fn rollback(&self, release: &Release) -> Result<(), TargetError> {
        let unit = self.unit();
        let (saved, candidate, retired) = {
            let st = self.state();
            (st.saved_upstreams.clone(), st.candidate.clone(), st.retired)
        };
        if retired {
            return Err(HostError::new(
                unit,
                HostFailure::RollbackAfterRetire,
                "the previous version was already removed on this host; deploy its image again instead",
            )
            .into());
        }
        // A migration cut short by a cancellation: stopped, not left running
        // for the next deploy to find.
        let migrating = self.state().migrating.take();
        if let Some(name) = migrating {
            self.runner.line(&format!("{unit}: stopping the unfinished migration {name}"));
            containers::remove(&self.docker, unit, &name, ROLLBACK_GRACE).await?;
        }
        let previous = self.state().previous.clone();
        if let Some(saved) = saved {
            tracing::warn!(host = unit, stage = "rollback", "restoring the previous nginx configuration");
            nginx::apply(&self.session, unit, &self.conn.lock_dir, self.conn.privilege, &saved).await?;
            // `nginx -s reload` exits 0 even when nginx refuses the file:
            // prove the old colour answers before removing the candidate.
            if let Some(old) = previous.as_ref().and_then(|p| p.colour.clone())
                && let Err(e) = self.verify_serving(release, &old, 100, self.colours_alike(release)).await
            {
                return Err(HostError::new(
                    unit,
                    HostFailure::RollbackNotVerified,
                    format!(
                        "the previous nginx configuration was put back but could not be proven to serve {old}: {}; the candidate is kept running so that something answers",
                        e.message
                    ),
                )
                .into());
            }
        }
        if let Some(candidate) = candidate {
            let live = previous.as_ref().and_then(|p| p.colour.clone());
            // Never remove what served before this run.
            if live.as_deref() != Some(candidate.as_str()) {
                for svc in &release.services {
                    let name = svc.container_name(&release.app, &candidate);
                    containers::remove(&self.docker, unit, &name, ROLLBACK_GRACE).await?;
                }
            }
        }
        self.runner.line(&format!("{unit}: rolled back; the previous version serves"));
        Ok(())
    }

    async fn close(&self) {
        let locked_by = self.state().locked_by.take();
        if let Some((app, id)) = locked_by {
            lock::release(&self.session, self.conn.privilege, self.unit(), &self.conn.lock_dir, &app, &id)
                .await;
        }
        self.session.close().await;
    }
}
