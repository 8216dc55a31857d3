//! Rolling: units switch in batches of `max-parallel`, each batch observed
//! before the next starts.

use super::{Phase, Scope, Step};
use crate::inputs::RolloutSpec;

pub(super) fn phases(rollout: &RolloutSpec, units: usize) -> Vec<Phase> {
    let batch = rollout.max_parallel.max(1);
    let idx: Vec<usize> = (0..units).collect();
    let mut out = Vec::new();
    for chunk in idx.chunks(batch) {
        out.push(Phase::new(
            Scope::Units(chunk.to_vec()),
            vec![
                Step::Launch,
                Step::Verify,
                Step::Shift(100),
                Step::Observe(rollout.observe_window.min(rollout.canary_interval)),
            ],
        ));
    }
    out.push(Phase::new(Scope::All, vec![Step::Observe(rollout.observe_window)]));
    out
}
