//! Reaching the hosts: their names, EC2 discovery, the SSH sessions, and
//! every unit's lock (a stale one taken over once GitHub reports its run
//! ended).

use super::*;

/// The units' names for the plan (hosts; instances found through EC2).
pub(in crate::pipeline) async fn unit_names(inputs: &Inputs, runner: &Runner) -> Result<Vec<String>, Error> {
    if let Some(k) = &inputs.kubernetes {
        return Ok(crate::targets::kubernetes::unit_names(k));
    }
    Ok(host_specs(inputs, runner).await?.iter().map(host_label).collect())
}

pub(super) fn host_label(h: &HostSpec) -> String {
    match h.port {
        Some(p) if p != 22 => format!("{}:{p}", h.host),
        _ => h.host.clone(),
    }
}

pub(super) async fn host_specs(inputs: &Inputs, runner: &Runner) -> Result<Vec<HostSpec>, Error> {
    match inputs.target {
        TargetKind::Hosts => Ok(inputs.hosts.clone()),
        TargetKind::Ec2 => {
            let spec = inputs.ec2.as_ref().ok_or_else(|| Error::Other("ec2 settings missing".into()))?;
            let region = inputs.ssm.region.clone().unwrap_or_default();
            let _g = runner.group("Find EC2 instances");
            let hosts = ec2::discover(spec, &region, &inputs.ssh.user, inputs.ssh.port).await?;
            runner.line(&format!(
                "found {} running instance(s): {}",
                hosts.len(),
                hosts.iter().map(host_label).collect::<Vec<_>>().join(", ")
            ));
            Ok(hosts)
        }
        TargetKind::Kubernetes => Err(Error::Other("a cluster has no hosts".into())),
    }
}

/// The hosts to deploy to, each with its way in when it is not TCP to
/// its address (`ec2-connect: instance-connect-endpoint`).
pub(super) async fn reach(
    inputs: &Inputs,
    runner: &Runner,
) -> Result<Vec<(HostSpec, Option<Arc<dyn crate::targets::hosts::ssh::Via>>)>, Error> {
    let endpoint = inputs.ec2.as_ref().and_then(|spec| match &spec.connect {
        crate::inputs::Ec2Connect::Endpoint { id } => Some((spec, id.as_deref())),
        crate::inputs::Ec2Connect::Ssh => None,
    });
    let Some((spec, named)) = endpoint else {
        return Ok(host_specs(inputs, runner).await?.into_iter().map(|h| (h, None)).collect());
    };
    let region = inputs.ssm.region.clone().unwrap_or_default();
    let _g = runner.group("Find EC2 instances and their Instance Connect Endpoints");
    let found = crate::targets::instance_connect::discover(
        spec,
        &region,
        &inputs.ssh.user,
        inputs.ssh.port,
        named,
        inputs.ssh.timeout,
    )
    .await?;
    runner.line(&format!(
        "found {} running instance(s): {}",
        found.len(),
        found.iter().map(|(h, t)| format!("{} ({t:?})", host_label(h))).collect::<Vec<_>>().join(", ")
    ));
    Ok(found.into_iter().map(|(h, t)| (h, Some(t as Arc<dyn crate::targets::hosts::ssh::Via>))).collect())
}

/// Every unit's lock. A lock held by another run is taken over when GitHub
/// reports that run as ended (it died holding it: the runner lost, the job
/// killed); while it runs, or when GitHub cannot say, the lock stands.
pub(super) async fn lock_all(
    units: &[Arc<dyn Target>],
    release: &Release,
    github: Option<&Deployments>,
    runner: &Runner,
    cancel: &CancellationToken,
) -> Vec<Result<(), Error>> {
    let mut results: Vec<Result<(), Error>> =
        futures::future::join_all(units.iter().map(|u| u.lock(release)))
            .await
            .into_iter()
            .map(|r| r.map_err(Error::from))
            .collect();
    let Some(github) = github else { return results };
    let mut verdicts: HashMap<String, RunState> = HashMap::new();
    for (u, result) in units.iter().zip(results.iter_mut()) {
        let Err(Error::Target(e)) = &*result else { continue };
        let TargetError::Locked { holder: Some(holder), .. } = &**e else { continue };
        let holder = holder.clone();
        if !verdicts.contains_key(&holder.run_url) {
            let state = github.run_state(&holder.run_url, cancel).await;
            match &state {
                _ if cancel.is_cancelled() => {}
                RunState::Unknown(why) | RunState::Hidden(why) => {
                    runner.line(&format!("whether {} has ended could not be read: {why}", holder.run_url))
                }
                RunState::Active => runner
                    .line(&format!("GitHub reports {} still running: wait for it to finish", holder.run_url)),
                RunState::Completed { .. } => {}
            }
            verdicts.insert(holder.run_url.clone(), state);
        }
        if let Some(RunState::Completed { conclusion }) = verdicts.get(&holder.run_url) {
            let stale = StaleLock { holder, conclusion: conclusion.clone() };
            *result = u.take_over_lock(release, &stale).await.map_err(Error::from);
        }
    }
    results
}

pub(super) async fn close_all(units: &[Arc<dyn Target>]) {
    futures::future::join_all(units.iter().map(|u| u.close())).await;
}
