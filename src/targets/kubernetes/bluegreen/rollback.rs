//! `mode: rollback` of a blue-green deploy: the colour kept at zero
//! brought back, proven, and every Service flipped to it.

use super::*;

/// Where a stage of the rollback stopped: `Some` error, `None` a signal.
type Stopped = Option<KubeError>;

/// Each Service's selector patch, and the selector it makes.
type Selectors = Vec<(BTreeMap<String, Option<String>>, BTreeMap<String, String>)>;

/// `mode: rollback`: the old colour back up, every Service flipped to it,
/// the current colour to zero.
pub async fn rollback(cx: Cluster<'_>, timing: Timing) -> ClusterRun {
    let Cluster { client, spec, runner, cancel } = cx;
    let mut out = ClusterRun { stage: "rollback", ..Default::default() };
    let back = Back { client, ns: spec.namespace.as_str(), runner, cancel, started: Instant::now() };
    match back.run(spec, timing, &mut out).await {
        Ok(()) => out.stage = "done",
        Err(Some(e)) => out.error = Some(e),
        Err(None) => out.cancelled = true,
    }
    out
}

#[derive(Clone, Copy)]
struct Back<'a> {
    client: &'a kube::Client,
    ns: &'a str,
    runner: &'a Runner,
    cancel: &'a CancellationToken,
    started: Instant,
}

impl Back<'_> {
    async fn run(self, spec: &KubernetesSpec, timing: Timing, out: &mut ClusterRun) -> Result<(), Stopped> {
        let (client, ns, runner, cancel) = (self.client, self.ns, self.runner, self.cancel);
        let mut pairs = Vec::new();
        for r in spec.deployments.iter().filter(|r| !r.worker) {
            let p = read_pair(client, ns, r).await?;
            if p.live.is_none() {
                return Err(Some(KubeError::NoHistory { object: p.source.object.clone() }));
            }
            pairs.push(p);
        }
        // Swap the roles: the candidate is the colour at zero (or, right after
        // the first blue-green deploy, the source kept at zero).
        let _g = runner.group("Rollback: the previous colour back up, then the switch");
        for p in &pairs {
            scale(client, ns, &p.back_name(), p.replicas).await?;
        }
        let stop = cancel.child_token();
        for p in &pairs {
            rollout::watch(client, ns, &p.back_name(), runner, &stop).await?.ok_or(None)?;
        }
        // Workers have no colours: `kubectl rollout undo` of those the deploy
        // being rolled back rolled, before any Service flips.
        let worker_refs: Vec<&DeploymentRef> = spec.deployments.iter().filter(|r| r.worker).collect();
        if let Some(p) = pairs.first().filter(|_| !worker_refs.is_empty()) {
            out.units.extend(self.workers(p, &worker_refs).await?);
        }
        // A signal before the flip: every Service still on the colour that
        // served (the one brought up stays up, unused).
        if cancel.is_cancelled() {
            return Err(None);
        }
        if let Some(p) = pairs.first() {
            let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
            out.previous_image = p.old_image.clone();
            out.restored_image = api
                .get_opt(&p.back_name())
                .await
                .ok()
                .flatten()
                .and_then(|d| apply::container_image(&d, Some(&p.source.container)));
        }
        let targets = self.selectors(&pairs).await?;
        self.flip(&pairs, &targets, out).await?;
        for (p, (_, selector)) in pairs.iter().zip(&targets) {
            verify_endpoints(client, &p.service_ref(), selector, runner).await?;
        }
        // The colour rolled back from served until the flip: it drains first.
        drain(timing.drain, "the colour rolled back from is scaled to 0", runner, cancel).await;
        for p in &pairs {
            if let Err(e) = scale(client, ns, &p.old_name(), 0).await {
                runner.warning(e.reason(), &format!("the colour rolled back from was not scaled down: {e}"));
            }
            out.units.push(Unit::new(
                p.source.object.to_string(),
                Outcome::RolledBack(format!("{} live again, {} at 0", p.back_name(), p.old_name())),
                self.started.elapsed(),
            ));
        }
        Ok(())
    }

    /// The workers the deploy being rolled back rolled, undone: the rows.
    async fn workers(&self, p: &Pair, worker_refs: &[&DeploymentRef]) -> Result<Vec<Unit>, Stopped> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), self.ns);
        let id_of =
            |d: Option<Deployment>| d.and_then(|d| d.metadata.annotations?.get(workers::ROLLED_BY).cloned());
        let from = id_of(api.get_opt(&p.old_name()).await.ok().flatten());
        let back_to = id_of(api.get_opt(&p.back_name()).await.ok().flatten());
        let rows = workers::roll_back(
            self.client,
            self.ns,
            worker_refs,
            from.as_deref(),
            back_to.as_deref(),
            self.runner,
            self.cancel,
        )
        .await?;
        Ok(rows)
    }

    /// Each Service's selector patch and the selector it makes. The source
    /// brought back is selected by its ReplicaSet's hash, as on the first
    /// deploy: its bare app labels would select the colours too.
    async fn selectors(&self, pairs: &[Pair]) -> Result<Selectors, Stopped> {
        let mut targets = Vec::new();
        for p in pairs {
            if p.candidate_existed {
                targets.push((selector_patch(p, Some(p.candidate), None), p.selector_for(p.candidate)));
                continue;
            }
            let Some(hash) = serving_hash(self.client, p).await? else {
                return Err(Some(KubeError::Config(format!(
                    "{}: no pod of it became ready",
                    p.source.object
                ))));
            };
            let mut sel = source_labels(&p.source.deployment);
            sel.insert(HASH_LABEL.into(), hash.clone());
            targets.push((selector_patch(p, None, Some(&hash)), sel));
        }
        Ok(targets)
    }

    /// Every Service flipped; never half-switched: when one fails, those
    /// already flipped go back.
    async fn flip(&self, pairs: &[Pair], targets: &Selectors, out: &mut ClusterRun) -> Result<(), Stopped> {
        let runner = self.runner;
        for (i, p) in pairs.iter().enumerate() {
            if let Err(e) = set_selector(self.client, &p.service_ref(), &targets[i].0).await {
                let flipped: Vec<&Pair> = pairs[..i].iter().collect();
                if !flip_back(self.client, &flipped, runner, &WayBack::new(self.cancel)).await {
                    out.units.push(Unit::new(
                        p.source.object.to_string(),
                        Outcome::Failed("half-switched: see the errors".into()),
                        self.started.elapsed(),
                    ));
                }
                return Err(Some(e));
            }
            match p.candidate_existed {
                true => runner.line(&format!("{}: selector now {COLOUR}={}", p.service_ref(), p.candidate)),
                false => runner.line(&format!(
                    "{}: selector now {}'s own pods ({HASH_LABEL}={}; it served before the first blue-green deploy)",
                    p.service_ref(),
                    p.source.object,
                    targets[i].1.get(HASH_LABEL).map_or("", String::as_str)
                )),
            }
        }
        Ok(())
    }
}
