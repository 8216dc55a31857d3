//! Canary: the candidate starts beside the live version everywhere, then
//! takes a growing share of traffic (weighted nginx servers), observed after
//! every step. Any failure returns all weight to the old version.

use super::{Phase, Scope, Step};
use crate::inputs::RolloutSpec;

pub(super) fn phases(rollout: &RolloutSpec) -> Vec<Phase> {
    let mut out = vec![Phase::new(Scope::All, vec![Step::Launch, Step::Verify])];
    for pct in &rollout.canary_steps {
        let watch = if *pct == 100 { rollout.observe_window } else { rollout.canary_interval };
        out.push(Phase::new(Scope::All, vec![Step::Shift(*pct)]));
        out.push(Phase::new(Scope::All, vec![Step::Observe(watch)]));
    }
    out
}
