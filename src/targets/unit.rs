//! How one unit of a deploy ended (a host, a workload, a migration Job): one
//! type for every target, so that the summary, the `hosts` output and the
//! run's status ([`crate::pipeline::Ended`]) read the same thing whichever
//! target ran. A leaf: it imports nothing of ours.

use std::time::Duration;

/// How one unit ended. The note is the summary's text for it (`rolled out:
/// revision 3, 2/2 ready`); an empty note shows the kind's own word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The new version serves there.
    Deployed(String),
    /// Put back on the version it ran before (or its migration undone).
    RolledBack(String),
    /// This run left it as it was: nothing changed there, or someone
    /// else's later change was kept as they set it.
    Unchanged(String),
    /// A canary stands at a share beside it, for a later `promote` or
    /// `abort` to decide.
    Standing(String),
    /// It failed, and which version it runs is not known for certain.
    Failed(String),
}

impl Outcome {
    /// The kind's own word, shown when the note is empty.
    fn word(&self) -> &'static str {
        match self {
            Outcome::Deployed(_) => "deployed",
            Outcome::RolledBack(_) => "rolled back",
            Outcome::Unchanged(_) => "unchanged",
            Outcome::Standing(_) => "canary standing",
            Outcome::Failed(_) => "failed (state unknown)",
        }
    }

    fn note(&self) -> &str {
        match self {
            Outcome::Deployed(n)
            | Outcome::RolledBack(n)
            | Outcome::Unchanged(n)
            | Outcome::Standing(n)
            | Outcome::Failed(n) => n,
        }
    }

    /// The same kind with its note rewritten (`worker rolled back: …`).
    #[must_use]
    pub fn map_note(self, f: impl FnOnce(String) -> String) -> Self {
        let note = f(self.to_string());
        match self {
            Outcome::Deployed(_) => Outcome::Deployed(note),
            Outcome::RolledBack(_) => Outcome::RolledBack(note),
            Outcome::Unchanged(_) => Outcome::Unchanged(note),
            Outcome::Standing(_) => Outcome::Standing(note),
            Outcome::Failed(_) => Outcome::Failed(note),
        }
    }

    /// Nothing of this deploy is left serving there.
    pub fn left_nothing(&self) -> bool {
        matches!(self, Outcome::RolledBack(_) | Outcome::Unchanged(_))
    }

    /// Put back on the previous version, or (`ok == false`) failed with
    /// its state unknown: the two ways a way back ends for one unit.
    pub fn back(ok: bool, note: String) -> Self {
        if ok { Outcome::RolledBack(note) } else { Outcome::Failed(note) }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.note() {
            "" => f.write_str(self.word()),
            note => f.write_str(note),
        }
    }
}

/// One row of the run's report: the unit, how it ended, how long it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// A host's name, or a cluster object as `deployment ns/name`.
    pub name: String,
    pub outcome: Outcome,
    pub took: Duration,
}

impl Unit {
    pub fn new(name: impl Into<String>, outcome: Outcome, took: Duration) -> Self {
        Self { name: name.into(), outcome, took }
    }

    /// A unit this run did not change, with no time spent on it.
    pub fn unchanged(name: impl Into<String>) -> Self {
        Self::new(name, Outcome::Unchanged(String::new()), Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_is_shown_else_the_kind_s_word() {
        assert_eq!(Outcome::Deployed(String::new()).to_string(), "deployed");
        assert_eq!(Outcome::Failed(String::new()).to_string(), "failed (state unknown)");
        assert_eq!(
            Outcome::RolledBack("rolled back: revision 2, 2/2 ready".into()).to_string(),
            "rolled back: revision 2, 2/2 ready"
        );
        let worker =
            Outcome::back(false, "rollback failed: forbidden".into()).map_note(|n| format!("worker {n}"));
        assert_eq!(worker, Outcome::Failed("worker rollback failed: forbidden".into()));
    }

    #[test]
    fn only_what_went_back_or_never_changed_leaves_nothing() {
        assert!(Outcome::RolledBack(String::new()).left_nothing());
        assert!(Unit::unchanged("web-1").outcome.left_nothing());
        assert!(!Outcome::Deployed(String::new()).left_nothing());
        assert!(!Outcome::Standing("canary at 50%".into()).left_nothing());
        assert!(!Outcome::Failed(String::new()).left_nothing());
    }
}
