//! How a cluster does each [`Step`] of a blue-green deploy, in the order
//! the strategy's one list gives them ([`crate::strategy::phases`], the
//! same list the hosts' fleet runs, over the one unit a cluster is), and
//! what the way back undoes after each.
//!
//! | step | on the cluster |
//! |---|---|
//! | Prepare | read every Deployment, Service and worker; the app's Secret |
//! | Migrate | the migration Job (and the pre-migration one) |
//! | Launch | pin a first deploy's Service; apply every candidate colour |
//! | Verify | every candidate rolled out (kubectl's verdict); the workers rolled in place; the previews' endpoints; the preview smoke tests |
//! | Shift(100) | every live Service's selector flipped; their endpoints proven |
//! | Observe | the `url` smoke tests; the observe window |
//! | Retire | the drain, then the old colour scaled to zero |

use super::*;
use crate::strategy::Step;

/// What the way back has to undo, given how far the run got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Undo {
    /// Nothing read yet: no rows.
    Nothing,
    /// Read, nothing changed: every row `unchanged`.
    Unchanged,
    /// The workers rolled so far undone, the candidates to zero; no
    /// selector changed.
    Candidates,
    /// The first `n` Services flipped: back first, then the workers, the
    /// drain, and the candidates to zero.
    Flipped(usize),
}

/// Why a step stopped the run: an error, or (`None`) a signal.
pub(super) type Stopped = Option<KubeError>;

/// One blue-green deploy on a cluster: what it works on, and what it has
/// changed so far.
pub(super) struct Run<'a> {
    cx: Cluster<'a>,
    work: &'a Deploy<'a>,
    timing: Timing,
    way: WayBack<'a>,
    started: Instant,
    pub(super) out: ClusterRun,
    pub(super) undo: Undo,
    worker_refs: Vec<&'a DeploymentRef>,
    pairs: Vec<Pair>,
    workers: Vec<Current>,
    /// The workers this run rolled, undone on every way back.
    rolled: Vec<workers::Rolled>,
}

impl<'a> Run<'a> {
    pub(super) fn new(cx: Cluster<'a>, work: &'a Deploy<'a>, timing: Timing) -> Self {
        Run {
            cx,
            work,
            timing,
            way: WayBack::new(cx.cancel),
            started: Instant::now(),
            out: ClusterRun { stage: "inspect", ..Default::default() },
            undo: Undo::Nothing,
            worker_refs: cx.spec.deployments.iter().filter(|r| r.worker).collect(),
            pairs: Vec::new(),
            workers: Vec::new(),
            rolled: Vec::new(),
        }
    }

    /// Does `step` (see the table above).
    pub(super) async fn step(&mut self, step: &Step) -> Result<(), Stopped> {
        match step {
            Step::Prepare => self.prepare().await,
            Step::Migrate => self.migrate().await,
            Step::Launch => self.launch().await,
            Step::Verify => self.verify().await,
            Step::Shift(_) => self.switch().await,
            Step::Observe(window) => self.observe(*window).await,
            Step::Retire(drain_for) => {
                self.retire(*drain_for).await;
                Ok(())
            }
        }
    }

    /// Every pair and worker read and checked (a missing Service or a
    /// selector that does not fit changes nothing), then the app's Secret.
    async fn prepare(&mut self) -> Result<(), Stopped> {
        let Cluster { client, spec, runner, .. } = self.cx;
        let (pairs, workers) = read_all(client, spec, &self.worker_refs, runner, &mut self.out).await?;
        (self.pairs, self.workers) = (pairs, workers);
        self.undo = Undo::Unchanged;
        if let Some(s) = &self.work.secret {
            self.out.stage = "secrets";
            super::super::secret::ensure(client, &spec.namespace, s, false).await?;
        }
        Ok(())
    }

    /// The migration Job from the first Deployment's pod spec.
    async fn migrate(&mut self) -> Result<(), Stopped> {
        let Some(first) = self.pairs.first() else { return Ok(()) };
        self.out.stage = "migrate";
        match super::super::migrate_first(self.cx, self.work, &first.source).await {
            Ok(true) => {
                self.out.migrated = self.work.migrate_command.and(Some(first.source.object.name.clone()));
                Ok(())
            }
            Ok(false) => Err(None),
            Err(e) => Err(Some(e)),
        }
    }

    /// Every candidate applied; on the first deploy the live Service is
    /// pinned to the source's serving ReplicaSet first.
    async fn launch(&mut self) -> Result<(), Stopped> {
        let Cluster { client, runner, .. } = self.cx;
        self.out.stage = "candidate";
        self.undo = Undo::Candidates;
        let _g = runner.group("Candidates (the new colour, not serving)");
        apply_candidates(client, &self.pairs, self.work, runner).await?;
        Ok(())
    }

    /// Every candidate rolled out; then the workers rolled in place; then
    /// each preview Service pointed at its candidate, its endpoints proven,
    /// and the smoke tests through the previews.
    async fn verify(&mut self) -> Result<(), Stopped> {
        let Cluster { client, spec, runner, cancel } = self.cx;
        {
            let _g = runner.group("Candidates rolled out (kubectl's verdict)");
            watch_candidates(client, &self.pairs, runner, cancel).await?;
        }
        if !self.workers.is_empty() {
            self.out.stage = "workers";
            let n = self.workers.len();
            let _g = runner.group(&format!("Workers (no Service to flip): {n} rolled in place"));
            let roll = workers::roll(client, &spec.namespace, &self.worker_refs, self.work, runner, cancel);
            match roll.await {
                Ok(rolled) => self.rolled = rolled,
                Err((e, changed)) => {
                    self.rolled = changed;
                    return Err(e);
                }
            }
        }
        self.previews().await
    }

    /// Each preview Service to its candidate, its endpoints proven, then
    /// the smoke tests through the previews.
    async fn previews(&self) -> Result<(), Stopped> {
        let Cluster { client, spec, runner, cancel } = self.cx;
        let ns = spec.namespace.as_str();
        for p in self.pairs.iter().filter(|p| p.preview.is_some()) {
            let preview = p.preview.as_ref().and_then(|s| s.metadata.name.clone()).unwrap_or_default();
            let pv = ObjectRef::new("service", ns, &preview);
            let _g = runner.group(&format!("Preview {pv}"));
            let sel: BTreeMap<String, Option<String>> =
                p.selector_for(p.candidate).into_iter().map(|(k, v)| (k, Some(v))).collect();
            let checked = async {
                set_selector(client, &pv, &sel).await?;
                verify_endpoints(client, &pv, &p.selector_for(p.candidate), runner).await
            };
            // A signal ends the wait for the preview's endpoints at once.
            tokio::select! {
                r = checked => { r?; }
                () = cancel.cancelled() => return Err(None),
            };
        }
        Ok(self.work.smoke(true, runner, cancel).await?)
    }

    /// Every live Service to the new colour (all of them, never cut
    /// half-way), then each one's endpoints proven.
    async fn switch(&mut self) -> Result<(), Stopped> {
        let Cluster { client, runner, cancel, .. } = self.cx;
        self.out.stage = "switch";
        let _g = runner.group("Switch: every live Service to the new colour");
        for (n, p) in self.pairs.iter().enumerate() {
            let patch = selector_patch(p, Some(p.candidate), None);
            set_selector(client, &p.service_ref(), &patch).await?;
            runner.line(&format!("{}: selector now {COLOUR}={}", p.service_ref(), p.candidate));
            self.undo = Undo::Flipped(n + 1);
        }
        for p in &self.pairs {
            let (service, selector) = (p.service_ref(), p.selector_for(p.candidate));
            tokio::select! {
                v = verify_endpoints(client, &service, &selector, runner) => v?,
                // After a signal: back at once, unverified.
                _ = cancel.cancelled() => return Err(None),
            };
        }
        Ok(())
    }

    /// The smoke tests on the live address, then every candidate watched
    /// through the window (see [`super::super::observe::window`]).
    async fn observe(&mut self, window: Duration) -> Result<(), Stopped> {
        let Cluster { client, runner, cancel, .. } = self.cx;
        self.out.stage = "observe";
        self.work.smoke(false, runner, cancel).await?;
        let _g = runner.group(&format!("Observe {}s", window.as_secs()));
        let watched: Vec<ObjectRef> =
            self.pairs.iter().map(|p| ObjectRef::deployment(p.ns(), &p.candidate_name())).collect();
        let end = Instant::now() + window;
        let analysis = self.work.analysis;
        super::super::observe::window(client, &watched, end, "after the switch", analysis, runner, cancel)
            .await
    }

    /// Past the commit point: after the drain, the old colour scaled to
    /// zero (kept for a flip back); superseded secrets removed.
    async fn retire(&mut self, drain_for: Duration) {
        let Cluster { client, spec, runner, cancel } = self.cx;
        let ns = spec.namespace.as_str();
        self.out.stage = "retire";
        {
            let _g = runner.group("Retire the old colour");
            drain(drain_for, "the old colour is scaled to 0", runner, cancel).await;
            for p in &self.pairs {
                match scale(client, ns, &p.old_name(), 0).await {
                    Ok(()) => runner.line(&format!(
                        "deployment {ns}/{}: scaled to 0 (kept for a flip back)",
                        p.old_name()
                    )),
                    Err(e) => runner.warning(e.reason(), &format!("the old colour was not scaled down: {e}")),
                }
            }
        }
        self.out.stage = "done";
        if self.work.secret.is_some()
            && let Ok(gone) = super::super::secret::collect_garbage(client, ns, self.work.app).await
            && !gone.is_empty()
        {
            runner.line(&format!("removed superseded secret(s): {}", gone.join(", ")));
        }
    }

    /// Every step done: one row per Deployment, then the workers'.
    pub(super) fn done(self) -> ClusterRun {
        let mut out = self.out;
        out.units = self
            .pairs
            .iter()
            .map(|p| {
                let note =
                    format!("{} live ({} replica(s)), {} at 0", p.candidate_name(), p.replicas, p.old_name());
                Unit::new(p.source.object.to_string(), Outcome::Deployed(note), self.started.elapsed())
            })
            .collect();
        out.units.extend(workers::rows(&self.rolled));
        out
    }

    /// The way back from where the run stopped (`error`, or `None` for a
    /// signal): before any flip, the workers undone and the candidates to
    /// zero; after it, the flipped Services back first, then the workers,
    /// the drain, and the candidates to zero.
    pub(super) async fn way_back(self, error: Stopped) -> ClusterRun {
        let Run { cx, timing, way, started, mut out, undo, pairs, rolled, .. } = self;
        let (client, runner) = (cx.client, cx.runner);
        out.cancelled = error.is_none();
        out.error = error;
        match undo {
            Undo::Nothing => ClusterRun { rolled_back: true, ..out },
            Undo::Unchanged => unchanged(out, &pairs),
            Undo::Candidates => {
                let mut out = unchanged(out, &pairs);
                back_out(client, &pairs, &rolled, &mut out, Duration::ZERO, runner, &way).await;
                out
            }
            Undo::Flipped(n) => {
                let flipped: Vec<&Pair> = pairs.iter().take(n).collect();
                out.rolled_back = flip_back(client, &flipped, runner, &way).await;
                let back = match out.rolled_back {
                    true => Outcome::RolledBack("switched back".into()),
                    false => Outcome::Failed("not switched back: see the errors".into()),
                };
                out.units = pairs
                    .iter()
                    .map(|p| Unit::new(p.source.object.to_string(), back.clone(), started.elapsed()))
                    .collect();
                // Candidates that took traffic drain before they go.
                back_out(client, &pairs, &rolled, &mut out, timing.drain, runner, &way).await;
                out
            }
        }
    }
}
