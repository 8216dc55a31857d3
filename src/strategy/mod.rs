//! Strategies decide the order of steps; targets do the mechanics.
//!
//! A strategy turns the inputs into [`Phase`]s. The pipeline runs phases one
//! after another; inside a phase every unit in scope runs the phase's steps in
//! order, units in parallel (bounded by `max-parallel`). Rollback is not a
//! step: the pipeline does it on any failure after launch.
//!
//! The same list drives both targets' blue-green: the hosts' fleet runs it
//! over the hosts, and a cluster (one unit: every Deployment switched
//! together) runs it step by step (`targets/kubernetes/bluegreen/run.rs`
//! says how it does each). A cluster's rolling update and canary do not
//! run these lists yet: the Deployment's own rolling update shifts traffic
//! while it launches and has no observe window (the inputs refuse
//! `observe-window` for it), and a cluster canary may stand below 100% for
//! a later `promote`; giving them the hosts' observe windows would change
//! what users get, so it waits for that decision.

mod blue_green;
mod canary;
mod rolling;

use std::time::Duration;

use crate::inputs::grammar::span;
use crate::inputs::{RolloutSpec, StrategyKind};

/// One thing done to a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Lock, registry login, pull. Traffic untouched.
    Prepare,
    /// One-off migration container (first unit only).
    Migrate,
    /// Start the candidate beside the live version.
    Launch,
    /// Wait until the candidate is healthy.
    Verify,
    /// Move this percentage of traffic to the candidate (100 = switch).
    Shift(u8),
    /// Watch health through the front door for this long.
    Observe(Duration),
    /// Drain for this long, then remove the old version.
    Retire(Duration),
}

impl Step {
    /// The stage name shown in the log, the timeline and statuses.
    pub fn stage(&self) -> &'static str {
        match self {
            Step::Prepare => "prepare",
            Step::Migrate => "migrate",
            Step::Launch => "launch",
            Step::Verify => "verify",
            Step::Shift(_) => "switch",
            Step::Observe(_) => "observe",
            Step::Retire(_) => "retire",
        }
    }

    /// Whether, once started, the step must finish even on cancellation:
    /// interrupting a proxy switch half-way is worse than finishing it.
    pub fn is_critical(&self) -> bool {
        matches!(self, Step::Shift(_))
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Shift(100) => write!(f, "switch traffic to the candidate"),
            Step::Shift(p) => write!(f, "shift {p}% of traffic to the candidate"),
            Step::Observe(d) => write!(f, "observe health through the proxy for {}", span(*d)),
            Step::Retire(d) => write!(f, "drain {}, then remove the old version", span(*d)),
            Step::Prepare => write!(f, "lock, log in to the registry, pull the image"),
            Step::Migrate => write!(f, "run the migration once"),
            Step::Launch => write!(f, "start the candidate colour"),
            Step::Verify => write!(f, "wait until the candidate is healthy"),
        }
    }
}

/// Which units a phase applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    /// The first unit: the barrier nobody passes until it succeeds.
    First,
    /// Every unit but the first.
    Rest,
    /// Units by index (a rolling batch).
    Units(Vec<usize>),
}

impl Scope {
    pub fn indices(&self, n: usize) -> Vec<usize> {
        match self {
            Scope::All => (0..n).collect(),
            Scope::First => (0..n.min(1)).collect(),
            Scope::Rest => (1..n).collect(),
            Scope::Units(u) => u.iter().copied().filter(|i| *i < n).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    pub scope: Scope,
    pub steps: Vec<Step>,
    /// Once this phase has finished, the new version serves: a later failure
    /// or cancellation no longer rolls back (retire is past the point of no
    /// return).
    pub commits: bool,
}

impl Phase {
    fn new(scope: Scope, steps: Vec<Step>) -> Self {
        Self { scope, steps, commits: false }
    }
}

/// The phases for a strategy over `units` units.
pub fn phases(kind: StrategyKind, rollout: &RolloutSpec, units: usize, migrate: bool) -> Vec<Phase> {
    let mut out = vec![Phase::new(Scope::All, vec![Step::Prepare])];
    if migrate {
        out.push(Phase::new(Scope::First, vec![Step::Migrate]));
    }
    out.extend(match kind {
        StrategyKind::BlueGreen => blue_green::phases(rollout, units),
        StrategyKind::Canary => canary::phases(rollout),
        StrategyKind::Rolling => rolling::phases(rollout, units),
    });
    if let Some(last_before_retire) = out.len().checked_sub(1) {
        out[last_before_retire].commits = true;
    }
    out.push(Phase::new(Scope::All, vec![Step::Retire(rollout.drain)]));
    out.retain(|p| !p.scope.indices(units).is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::OnHostFailure;

    pub(super) fn rollout() -> RolloutSpec {
        RolloutSpec {
            observe_window: Duration::from_secs(30),
            observe_failures: 3,
            drain: Duration::from_secs(5),
            canary_steps: vec![10, 50, 100],
            canary_interval: Duration::from_secs(60),
            max_parallel: 2,
            on_host_failure: OnHostFailure::RollbackAll,
            migration_timeout: Duration::from_secs(600),
        }
    }

    #[test]
    fn steps_show_spans_as_configured() {
        assert_eq!(
            Step::Retire(Duration::from_millis(500)).to_string(),
            "drain 500ms, then remove the old version"
        );
        assert_eq!(
            Step::Observe(Duration::from_secs(60)).to_string(),
            "observe health through the proxy for 60s"
        );
        assert_eq!(
            Step::Retire(Duration::from_millis(1500)).to_string(),
            "drain 1.5s, then remove the old version"
        );
    }

    #[test]
    fn blue_green_has_a_first_host_barrier() {
        let p = phases(StrategyKind::BlueGreen, &rollout(), 3, true);
        let scopes: Vec<&Scope> = p.iter().map(|p| &p.scope).collect();
        assert_eq!(
            scopes,
            [&Scope::All, &Scope::First, &Scope::First, &Scope::Rest, &Scope::All, &Scope::All]
        );
        assert_eq!(p[2].steps, [Step::Launch, Step::Verify, Step::Shift(100)]);
        assert_eq!(p[4].steps, [Step::Observe(Duration::from_secs(30))]);
        assert!(p[4].commits && !p[3].commits);
        assert_eq!(p[5].steps, [Step::Retire(Duration::from_secs(5))]);
    }

    #[test]
    fn one_host_has_no_rest_phase() {
        let p = phases(StrategyKind::BlueGreen, &rollout(), 1, false);
        assert!(p.iter().all(|p| p.scope != Scope::Rest));
        assert_eq!(p.len(), 4);
    }

    #[test]
    fn canary_shifts_in_steps_with_observation() {
        let p = phases(StrategyKind::Canary, &rollout(), 2, false);
        let shifts: Vec<Step> =
            p.iter().flat_map(|p| p.steps.clone()).filter(|s| matches!(s, Step::Shift(_))).collect();
        assert_eq!(shifts, [Step::Shift(10), Step::Shift(50), Step::Shift(100)]);
    }

    #[test]
    fn rolling_goes_in_batches() {
        let p = phases(StrategyKind::Rolling, &rollout(), 5, false);
        let batches: Vec<&Scope> =
            p.iter().filter(|p| p.steps.contains(&Step::Launch)).map(|p| &p.scope).collect();
        assert_eq!(batches, [&Scope::Units(vec![0, 1]), &Scope::Units(vec![2, 3]), &Scope::Units(vec![4])]);
    }
}
