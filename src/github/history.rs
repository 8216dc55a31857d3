//! Pure decisions over an environment's past deployments: which one is
//! live, which is the last good one before it, which hold the deploy lock.
//! No I/O: the callers fetch, these decide, unit tests cover them.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// A deployment still `queued`/`in_progress`/`pending` after this long is
/// treated as abandoned (a run that died without a final status): a job
/// on GitHub-hosted runners cannot run longer.
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(6 * 3600);
/// A deployment with no status yet holds the lock this long: the run that
/// created it is about to post `queued` or `in_progress`.
pub(crate) const FRESH_WITHOUT_STATUS: Duration = Duration::from_secs(120);

/// One deployment of the environment and what its statuses say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub id: u64,
    pub image: Option<String>,
    /// Latest status state, if any.
    pub latest: Option<String>,
    /// A `success` status came before the latest one.
    pub succeeded_before: bool,
}

impl Entry {
    /// Live: its latest status is `success`.
    pub fn is_live(&self) -> bool {
        self.latest.as_deref() == Some("success")
    }

    /// Good: live, or made `inactive` after a success (replaced by a later
    /// deploy), never failed last.
    pub fn is_good(&self) -> bool {
        self.is_live() || (self.latest.as_deref() == Some("inactive") && self.succeeded_before)
    }

    /// From statuses newest first.
    pub fn new(id: u64, image: Option<String>, states_newest_first: &[&str]) -> Self {
        Self {
            id,
            image,
            latest: states_newest_first.first().map(|s| s.to_string()),
            succeeded_before: states_newest_first.iter().skip(1).any(|s| *s == "success"),
        }
    }
}

/// The live deployment: the newest (first) with an image whose latest
/// status is `success`.
pub(crate) fn live(newest_first: &[Entry]) -> Option<&Entry> {
    newest_first.iter().find(|e| e.image.is_some() && e.is_live())
}

/// The last good deployment before the live one, with an image other than
/// the live one's (redeploying what is live would not roll anything back).
///
/// With `complete: false` (more entries may follow) only a definite answer
/// is given: one found after the live one. With `complete: true` and no
/// live deployment, the newest good one.
pub(crate) fn last_good(newest_first: &[Entry], complete: bool) -> Option<&Entry> {
    let with_image = |e: &&Entry| e.image.is_some();
    match newest_first.iter().position(|e| e.image.is_some() && e.is_live()) {
        Some(i) => {
            let live_image = &newest_first[i].image;
            newest_first[i + 1..].iter().filter(with_image).find(|e| e.is_good() && &e.image != live_image)
        }
        None if complete => newest_first.iter().filter(with_image).find(|e| e.is_good()),
        None => None,
    }
}

/// A deployment that holds the lock on the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    pub id: u64,
    pub run_url: String,
    pub state: String,
}

/// A deployment to judge for the lock.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub id: u64,
    pub run_url: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Latest status: state and when.
    pub latest: Option<(String, DateTime<Utc>)>,
}

/// Whether `c` holds the lock against our deployment `own_id` made by
/// `own_run`.
///
/// Only deployments older than ours count (the lock goes in creation
/// order, so two runs never wait for each other), made by another run of
/// this action (a `run_url` in the payload: deployments GitHub creates for
/// jobs with `environment:` have none and would block their own job), still
/// `queued`/`in_progress`/`pending`, and not abandoned.
pub(crate) fn holder(c: &Candidate, own_id: u64, own_run: &str, now: DateTime<Utc>) -> Option<Holder> {
    if c.id >= own_id {
        return None;
    }
    let run_url = c.run_url.clone()?;
    if same_run(&run_url, own_run) {
        return None;
    }
    let age = |t: DateTime<Utc>| (now - t).to_std().unwrap_or_default();
    match &c.latest {
        Some((state, at))
            if matches!(state.as_str(), "queued" | "in_progress" | "pending") && age(*at) < STALE_AFTER =>
        {
            Some(Holder { id: c.id, run_url, state: state.clone() })
        }
        None if age(c.created_at) < FRESH_WITHOUT_STATUS => {
            Some(Holder { id: c.id, run_url, state: "created".into() })
        }
        _ => None,
    }
}

/// Two run URLs name the same run, whatever the attempt: an earlier attempt
/// of our own run is not running any more.
pub(crate) fn same_run(a: &str, b: &str) -> bool {
    run_of(a) == run_of(b)
}

/// A run URL without its attempt.
pub(crate) fn run_of(u: &str) -> String {
    let u = u.trim_end_matches('/');
    match u.rfind("/attempts/") {
        Some(i) => u[..i].to_string(),
        None => u.to_string(),
    }
}

/// Cuts a status description to GitHub's limit of 140 characters, on a
/// character boundary, marking the cut.
pub(crate) fn description(text: &str) -> String {
    const MAX: usize = 140;
    let text = text.trim();
    if text.chars().count() <= MAX {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(MAX - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(id: u64, image: &str, states: &[&str]) -> Entry {
        Entry::new(id, Some(image.to_string()), states)
    }

    #[test]
    fn last_good_is_the_newest_good_before_the_live_one() {
        // Newest first: a failed deploy, the live one, a replaced good one.
        let h = vec![
            e(5, "app:v5", &["failure", "in_progress"]),
            e(4, "app:v4", &["success", "in_progress"]),
            e(3, "app:v3", &["error"]),
            e(2, "app:v2", &["inactive", "success"]),
            e(1, "app:v1", &["inactive", "success"]),
        ];
        assert_eq!(live(&h).unwrap().id, 4);
        assert_eq!(last_good(&h, false).unwrap().id, 2);
        // Not decided before the live one is seen.
        assert_eq!(last_good(&h[..1], false), None);
    }

    #[test]
    fn last_good_skips_the_live_image_and_inactive_without_success() {
        let h = vec![
            e(4, "app:v4", &["success"]),
            e(3, "app:v4", &["inactive", "success"]),
            e(2, "app:v2", &["inactive", "in_progress"]),
            e(1, "app:v1", &["inactive", "success"]),
        ];
        assert_eq!(last_good(&h, true).unwrap().id, 1);
        let no_live = vec![e(2, "app:v2", &["failure"]), e(1, "app:v1", &["inactive", "success"])];
        assert_eq!(live(&no_live), None);
        assert_eq!(last_good(&no_live, false), None);
        assert_eq!(last_good(&no_live, true).unwrap().id, 1);
    }

    #[test]
    fn holders_are_older_running_deployments_of_other_runs() {
        let now = Utc::now();
        let run = "https://github.com/o/r/actions/runs/7/attempts/1";
        let other = "https://github.com/o/r/actions/runs/6/attempts/1";
        let c = |id, run_url: Option<&str>, latest: Option<(&str, i64)>| Candidate {
            id,
            run_url: run_url.map(str::to_string),
            created_at: now - chrono::Duration::seconds(600),
            latest: latest.map(|(s, ago)| (s.to_string(), now - chrono::Duration::seconds(ago))),
        };
        assert!(holder(&c(1, Some(other), Some(("in_progress", 10))), 9, run, now).is_some());
        assert!(holder(&c(1, Some(other), Some(("queued", 10))), 9, run, now).is_some());
        // Newer than ours, ours, an earlier attempt of our run, no run_url.
        assert!(holder(&c(10, Some(other), Some(("in_progress", 10))), 9, run, now).is_none());
        assert!(
            holder(
                &c(1, Some("https://github.com/o/r/actions/runs/7/attempts/2"), Some(("in_progress", 1))),
                9,
                run,
                now
            )
            .is_none()
        );
        assert!(holder(&c(1, None, Some(("in_progress", 10))), 9, run, now).is_none());
        // Finished, abandoned, created long ago without a status.
        assert!(holder(&c(1, Some(other), Some(("success", 10))), 9, run, now).is_none());
        assert!(holder(&c(1, Some(other), Some(("in_progress", 7 * 3600))), 9, run, now).is_none());
        assert!(holder(&c(1, Some(other), None), 9, run, now).is_none());
    }

    #[test]
    fn descriptions_are_cut_on_a_char_boundary() {
        assert_eq!(description("  short "), "short");
        let long = "é".repeat(200);
        let cut = description(&long);
        assert_eq!(cut.chars().count(), 140);
        assert!(cut.ends_with('…'));
    }
}
