//! Blue-green: the first unit switches alone (the barrier), then the rest in
//! parallel; everyone is observed, then the old colour retires.

use super::{Phase, Scope, Step};
use crate::inputs::RolloutSpec;

pub(super) fn phases(rollout: &RolloutSpec, _units: usize) -> Vec<Phase> {
    let switch = vec![Step::Launch, Step::Verify, Step::Shift(100)];
    vec![
        Phase::new(Scope::First, switch.clone()),
        Phase::new(Scope::Rest, switch),
        Phase::new(Scope::All, vec![Step::Observe(rollout.observe_window)]),
    ]
}
