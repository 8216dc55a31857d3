//! The deploy itself: the hosts' fleet through the strategy's phases, or
//! the cluster's run, each mapped to the run's status.

use std::future::Future;

use super::*;
use crate::targets::hosts::ssh::Via;

pub(super) async fn deploy_units(
    ctx: &Ctx<'_>,
    release: &Arc<Release>,
    material: HostMaterial,
    judges: Judges,
) -> Run {
    if let Some(k) = &ctx.inputs.kubernetes {
        return cluster_units(ctx, k, release, &judges).await;
    }
    let hosts = Hosts { ctx, release };
    hosts.deploy(material, judges).await.unwrap_or_else(|stopped| stopped)
}

/// A run that stopped before the fleet started: nothing changed.
fn stopped(status: Status, error: Error, stage: &'static str) -> Run {
    Run {
        status,
        error: Some(error),
        stage,
        image: None,
        previous_image: None,
        units: vec![],
        rolled_back: false,
    }
}

/// The hosts' stages before and around the fleet: discover, pin the host
/// keys, connect, lock, decide whether anything is to do, run the phases.
/// `Err`: the run stopped at a stage (its `Run` says which and why).
#[derive(Clone, Copy)]
struct Hosts<'a> {
    ctx: &'a Ctx<'a>,
    release: &'a Arc<Release>,
}

impl Hosts<'_> {
    async fn deploy(self, material: HostMaterial, judges: Judges) -> Result<Run, Run> {
        let Hosts { ctx, release } = self;
        let Ctx { inputs, runner, cancel, .. } = *ctx;
        let github = ctx.github.as_ref();
        let HostMaterial { key, known_hosts, registry_password } = material;
        let t = Instant::now();
        let specs = self.or_cancelled("discover", reach(inputs, runner)).await?;
        let specs = specs.map_err(|e| stopped(Status::Failure, e, "discover"))?;
        let known_hosts = self.console_host_keys(&specs, known_hosts).await?;
        // Through Instance Connect the run's own key logs in (no stored one).
        let key = key
            .or_else(|| specs.iter().any(|(_, via)| via.is_some()).then(|| SecretValue::new(String::new())));
        let (Some(key), Some(known_hosts)) = (key, known_hosts) else {
            return Err(stopped(
                Status::Failure,
                Error::Other("ssh-private-key and ssh-known-hosts are required".into()),
                "connect",
            ));
        };
        let registry = inputs.registry.username.clone().zip(registry_password);
        let units = self.connect(&specs, &key, &known_hosts, &registry).await?;
        ctx.stage("connect", t, true, format!("{} host(s)", units.len()));

        // Every host's lock first: whether there is anything to do is decided
        // while no other deploy can be switching (a run reading "already live"
        // before another run's switch would record a version that is not live).
        let t = Instant::now();
        let locks = tokio::select! {
            r = lock_all(&units, release, github, runner, cancel) => r,
            _ = cancel.cancelled() => {
                close_all(&units).await;
                return Err(stopped(Status::Error, Error::Cancelled, "lock"));
            }
        };
        if let Some(e) = locks.into_iter().find_map(Result::err) {
            close_all(&units).await;
            return Err(stopped(Status::Failure, e, "lock"));
        }
        ctx.stage("lock", t, true, format!("{} host(s)", units.len()));

        let (all_live, previous_image) = self.live_everywhere(&units).await;
        if all_live {
            runner.line("the same image and secrets are already live on every host: nothing to do");
            close_all(&units).await;
            // Nothing changed: what was live before is what is live now.
            return Ok(Run {
                status: Status::Success,
                error: None,
                stage: "done",
                image: None,
                previous_image,
                units: units
                    .iter()
                    .map(|u| {
                        Unit::new(u.name(), UnitOutcome::Deployed("already live".into()), Duration::ZERO)
                    })
                    .collect(),
                rolled_back: false,
            });
        }
        Ok(self.fleet(&units, judges, previous_image).await)
    }

    /// `fut`, or the run stopped at `stage` when cancelled first.
    async fn or_cancelled<T>(&self, stage: &'static str, fut: impl Future<Output = T>) -> Result<T, Run> {
        tokio::select! {
            r = fut => Ok(r),
            _ = self.ctx.cancel.cancelled() => Err(stopped(Status::Error, Error::Cancelled, stage)),
        }
    }

    /// `ec2-host-keys: console-output`: each instance's keys, as AWS has
    /// them, pinned beside any stored lines (a bastion's).
    async fn console_host_keys(
        &self,
        specs: &[(HostSpec, Option<Arc<dyn Via>>)],
        known_hosts: Option<SecretValue>,
    ) -> Result<Option<SecretValue>, Run> {
        let (inputs, runner) = (self.ctx.inputs, self.ctx.runner);
        let Some(spec) = inputs.ec2.as_ref().filter(|e| e.console_host_keys) else { return Ok(known_hosts) };
        let hosts: Vec<HostSpec> = specs.iter().map(|(h, _)| h.clone()).collect();
        let read = async {
            let _g = runner.group("Read the instances' host keys from their console output");
            let config = ec2::sdk_config(inputs.ssm.region.as_deref().unwrap_or_default()).await;
            let lines = ec2::console_host_keys(&config, spec, &hosts, inputs.ssh.timeout).await?;
            runner.line(&format!(
                "pinned {} host key(s) of {} instance(s), from GetConsoleOutput",
                lines.lines().count(),
                hosts.len()
            ));
            Ok::<_, crate::targets::hosts::HostError>(lines)
        };
        match self.or_cancelled("discover", read).await? {
            Ok(l) => {
                let stored = known_hosts.as_ref().map(|k| k.expose().to_string()).unwrap_or_default();
                Ok(Some(SecretValue::new(format!("{stored}\n{l}"))))
            }
            Err(e) => Err(stopped(Status::Failure, e.into(), "discover")),
        }
    }

    /// Every host at once; the first failure named (each one logged), and
    /// the hosts reached closed again.
    async fn connect(
        &self,
        specs: &[(HostSpec, Option<Arc<dyn Via>>)],
        key: &SecretValue,
        known_hosts: &SecretValue,
        registry: &Option<(String, SecretValue)>,
    ) -> Result<Vec<Arc<dyn Target>>, Run> {
        let runner = self.ctx.runner;
        let _g = runner.group(&format!("Connect to {} host(s)", specs.len()));
        let connects = specs.iter().map(|(h, via)| {
            let mut conn =
                HostConn::from_inputs(self.ctx.inputs, h, key.clone(), known_hosts.clone(), registry.clone());
            conn.via = via.clone();
            let runner = runner.clone();
            async move { HostTarget::connect(conn, runner).await }
        });
        let results = self.or_cancelled("connect", futures::future::join_all(connects)).await?;
        let mut units: Vec<Arc<dyn Target>> = Vec::new();
        let mut first_err = None;
        for r in results {
            match r {
                Ok(u) => units.push(Arc::new(u)),
                Err(e) => {
                    runner.error(e.reason(), &e.to_string());
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            close_all(&units).await;
            return Err(stopped(Status::Failure, e.into(), "connect"));
        }
        Ok(units)
    }

    /// Re-runs: whether the same image and secrets already serve on every
    /// host (nothing to do), and the image that served before.
    async fn live_everywhere(&self, units: &[Arc<dyn Target>]) -> (bool, Option<String>) {
        let (inputs, runner, release) = (self.ctx.inputs, self.ctx.runner, self.release);
        let mut all_live = inputs.mode != Mode::Rollback;
        let mut previous_image = None;
        for u in units {
            let live = match u.inspect().await {
                Ok(live) => live,
                Err(e) => {
                    runner.warning(e.reason(), &format!("could not read what runs on {}: {e}", u.name()));
                    all_live = false;
                    continue;
                }
            };
            if previous_image.is_none() {
                previous_image = live.image.clone();
            }
            runner.line(&format!(
                "{}: live {} ({})",
                u.name(),
                live.image.as_deref().unwrap_or("nothing"),
                live.colour.as_deref().unwrap_or("no colour")
            ));
            let same_image =
                release.services.iter().all(|s| live.image.as_deref() == Some(s.image.full().as_str()));
            // The same image with another command, env or port is a
            // change too (a config-only deploy).
            let same_config = live.config.as_deref() == Some(release.config().as_str());
            if same_image && !same_config {
                runner.line(&format!(
                    "{}: the live containers run {} with another command, environment or ports (or from before this was recorded); deploying",
                    u.name(),
                    live.image.as_deref().unwrap_or("?")
                ));
            }
            all_live &= same_image && same_config && live.secrets_fingerprint == release.secrets_fingerprint;
            if !live.leftovers.is_empty() {
                // A re-run converges the host: the deploy replaces the leftover.
                runner.line(&format!(
                    "{}: {} of {} also runs, left by an interrupted deploy; deploying to replace it",
                    u.name(),
                    live.leftovers.join(", "),
                    inputs.app
                ));
                all_live = false;
            }
        }
        (all_live, previous_image)
    }

    /// The strategy's phases over the hosts, and the run's status from the
    /// fleet's report.
    async fn fleet(&self, units: &[Arc<dyn Target>], judges: Judges, previous_image: Option<String>) -> Run {
        let inputs = self.ctx.inputs;
        let phases =
            strategy::phases(inputs.strategy, &inputs.rollout, units.len(), inputs.migrate_command.is_some());
        let cfg = Arc::new(FleetConfig {
            health: inputs.health.clone(),
            rollout: inputs.rollout.clone(),
            traffic: inputs.traffic.as_ref().map(|t| t.limits),
            smoke: judges.smoke,
            analysis: judges.analysis,
        });
        let report =
            fleet::run(units, &phases, self.release.clone(), cfg, self.ctx.runner, self.ctx.cancel).await;
        close_all(units).await;
        self.ctx.stages(report.timeline);
        let cancelled = matches!(report.error, Some(Error::Cancelled));
        // keep-going: the hosts that failed are each back on their previous
        // version when none is in an unknown state.
        let kept_going_back = inputs.rollout.on_host_failure == crate::inputs::OnHostFailure::KeepGoing
            && report.units.iter().all(|u| !matches!(u.outcome, UnitOutcome::Failed(_)));
        let status = super::super::Ended {
            failed: report.error.is_some() && !cancelled,
            cancelled,
            committed: report.committed,
            nothing_left: report.rolled_back || kept_going_back,
        }
        .status();
        let stage = report.failed_stage.unwrap_or("done");
        let error = if report.committed { None } else { report.error };
        Run {
            status,
            error,
            stage,
            image: None,
            previous_image,
            units: report.units,
            rolled_back: report.rolled_back,
        }
    }
}

/// `target: kubernetes`: the cluster does the rolling; its result mapped to
/// the run's (the same statuses as hosts: failure when rolled back, error
/// when the state is unknown or the run was cancelled).
pub(super) async fn cluster_units(
    ctx: &Ctx<'_>,
    spec: &crate::inputs::KubernetesSpec,
    release: &Release,
    judges: &Judges,
) -> Run {
    let Ctx { inputs, runner, cancel, .. } = *ctx;
    use crate::targets::kubernetes;
    let t = Instant::now();
    let image = inputs.image.as_ref().map(|i| i.full());
    let work = image.as_deref().map(|image| kubernetes::Deploy {
        image,
        app: &release.app,
        deploy_id: &release.deploy_id,
        secret: kubernetes::secret::AppSecret::new(
            &release.app,
            release.secrets_fingerprint.as_deref(),
            &release.secret_env,
        ),
        migrate_command: release.migrate_command.as_deref(),
        pre_migrate_command: release.pre_migrate_command.as_deref(),
        migrate_rollback_command: release.migrate_rollback_command.as_deref(),
        migration_timeout: inputs.rollout.migration_timeout,
        smoke: judges.smoke.as_deref().map(|s| s as &dyn crate::targets::kubernetes::UrlChecks),
        analysis: judges.analysis.as_deref(),
    });
    let k = kubernetes::run(
        spec,
        inputs.mode,
        super::super::kube_strategy(inputs),
        work.as_ref(),
        runner,
        cancel,
    )
    .await;
    // Someone else's template runs now, as they set it: this deploy failed,
    // and there is nothing of it left to undo.
    let theirs = matches!(
        k.error,
        Some(
            kubernetes::KubeError::Paused { .. }
                | kubernetes::KubeError::NoHistory { .. }
                | kubernetes::KubeError::TakenOver { .. }
        )
    );
    let status = super::super::Ended {
        failed: k.error.is_some(),
        cancelled: k.cancelled,
        // A cluster's deploy is done when its run returns without error.
        committed: false,
        nothing_left: k.rolled_back
            || theirs
            || k.units.iter().all(|u| matches!(u.outcome, UnitOutcome::Unchanged(_))),
    }
    .status();
    ctx.stage(k.stage, t, status == Status::Success, format!("{} deployment(s)", spec.deployments.len()));
    let error = match (k.error, k.cancelled) {
        (Some(e), _) => Some(Error::from(e)),
        (None, true) => Some(Error::Cancelled),
        (None, false) => None,
    };
    Run {
        status,
        error,
        stage: k.stage,
        image: k.restored_image,
        previous_image: k.previous_image,
        units: k.units,
        rolled_back: k.rolled_back,
    }
}
