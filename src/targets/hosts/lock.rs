//! The per-app deploy lock on a host: `mkdir <lock-dir>/<app>.lock` is
//! atomic, and an `owner` file inside says who holds it (deploy id, run URL,
//! image, since when).
//!
//! A lock belongs to a workflow *run*, not to one attempt of it: the deploy
//! id is `<run id>-<attempt>`, and a later attempt of the same run (GitHub's
//! "Re-run jobs" after the runner was lost mid-deploy) takes over what an
//! earlier attempt left, with a warning naming it: attempts of one run never
//! execute at once, so the earlier one is dead. Another run's lock is never
//! taken over silently: the error names its owner and its run, which the
//! pipeline asks GitHub about. A run GitHub reports as ended is dead too,
//! and its lock is taken over ([`acquire`] with `stale`), with a warning
//! naming it; `break-lock: true` removes any lock, for when GitHub cannot
//! say.

use std::time::{SystemTime, UNIX_EPOCH};

use super::error::{HostError, HostFailure};
use super::shell::{self, Privilege};
use super::ssh::Session;
use crate::runner::Runner;
use crate::targets::{LockHolder, StaleLock, TargetError};

/// Who takes the lock.
pub struct Owner<'a> {
    pub deploy_id: &'a str,
    pub run_url: &'a str,
    pub image: &'a str,
}

impl Owner<'_> {
    fn render(&self) -> String {
        format!(
            "deploy-id: {}\nrun: {}\nimage: {}\nsince: {}\n",
            self.deploy_id,
            self.run_url,
            self.image,
            utc_now()
        )
    }
}

/// The lock directory of `app`.
pub fn path(lock_dir: &str, app: &str) -> String {
    format!("{}/{app}.lock", lock_dir.trim_end_matches('/'))
}

/// How the lock was had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// Free, or ours already.
    Fresh,
    /// Taken over from a dead deploy (described): what it left on the host
    /// must be brought back to one known version before anything else.
    Over(String),
}

/// Takes the lock, or confirms we hold it already (same deploy id). A lock
/// of an earlier attempt of our run, of `stale`'s deploy, or any lock with
/// `break_lock`, is taken over.
///
/// # Errors
/// [`TargetError::Locked`] naming the owner; a [`HostError`] of kind
/// `lock_failed` when the directory cannot be created for another reason,
/// or an SSH one.
#[allow(clippy::too_many_arguments)]
pub async fn acquire(
    session: &Session,
    privilege: Privilege,
    unit: &str,
    lock_dir: &str,
    app: &str,
    owner: &Owner<'_>,
    break_lock: bool,
    stale: Option<&StaleLock>,
    runner: &Runner,
) -> Result<Taken, TargetError> {
    let dir = shell::value(unit, "lock-dir", lock_dir)?;
    let lock = path(dir, app);
    session.run(HostFailure::LockFailed, &privilege.wrap(&["mkdir", "-p", "--", dir]), None).await?;
    let mut taken = Taken::Fresh;
    for attempt in 0..2 {
        if session.exec(&privilege.wrap(&["mkdir", "--", &lock]), None).await?.success() {
            session
                .run(
                    HostFailure::LockFailed,
                    &privilege.wrap(&["tee", "--", &format!("{lock}/owner")]),
                    Some(owner.render().as_bytes()),
                )
                .await?;
            tracing::info!(host = unit, stage = "prepare", lock = %lock, "deploy lock taken");
            return Ok(taken);
        }
        if !session.exec(&privilege.wrap(&["test", "-d", &lock]), None).await?.success() {
            let message = format!("could not create the deploy lock {lock}");
            return Err(HostError::new(unit, HostFailure::LockFailed, message).into());
        }
        let held_by = read_owner(session, privilege, &lock).await;
        let holder = held_by.as_deref().and_then(|o| field(o, "deploy-id"));
        if holder == Some(owner.deploy_id) {
            return Ok(Taken::Fresh);
        }
        let who = describe(held_by.as_deref());
        let over = match holder {
            _ if attempt > 0 => None,
            Some(earlier) if same_run(earlier, owner.deploy_id) => Some((
                "deploy_lock_taken_over",
                format!(
                    "{unit}: taking over the deploy lock left by attempt {} of this run ({who}); that attempt is no longer running",
                    attempt_of(earlier)
                ),
            )),
            Some(dead) if stale.is_some_and(|s| s.holder.deploy_id == dead) => Some((
                "deploy_lock_stale",
                format!(
                    "{unit}: taking over the deploy lock of {who}: GitHub reports that run ended ({}) without releasing it",
                    stale.map_or("", |s| s.conclusion.as_str())
                ),
            )),
            _ if break_lock => Some((
                "deploy_lock_broken",
                format!("{unit}: breaking the deploy lock held by {who} (break-lock: true)"),
            )),
            _ => None,
        };
        if let Some((code, text)) = over {
            runner.warning(code, &text);
            remove_if_held(session, privilege, &lock, holder).await?;
            taken = Taken::Over(who);
            continue;
        }
        let holder = held_by.as_deref().and_then(|o| {
            Some(LockHolder {
                deploy_id: field(o, "deploy-id")?.to_string(),
                run_url: field(o, "run")?.to_string(),
            })
        });
        return Err(TargetError::Locked { unit: unit.to_string(), owner: who, holder });
    }
    Err(HostError::new(
        unit,
        HostFailure::LockFailed,
        format!("could not take the deploy lock {lock}: another deploy took it first"),
    )
    .into())
}

/// Removes the lock if `deploy_id` holds it. Best effort.
pub async fn release(
    session: &Session,
    privilege: Privilege,
    unit: &str,
    lock_dir: &str,
    app: &str,
    deploy_id: &str,
) {
    let lock = path(lock_dir, app);
    let held_by = read_owner(session, privilege, &lock).await;
    if held_by.as_deref().and_then(|o| field(o, "deploy-id")) != Some(deploy_id) {
        return;
    }
    match session.run(HostFailure::LockFailed, &privilege.wrap(&["rm", "-rf", "--", &lock]), None).await {
        Ok(_) => tracing::info!(host = unit, lock = %lock, "deploy lock released"),
        Err(e) => tracing::warn!(host = unit, lock = %lock, error = %e, "could not release the deploy lock"),
    }
}

/// Removes `lock` if `holder` (a deploy id) still holds it, in one command:
/// another deploy that took it meanwhile keeps it. `None`: whoever holds
/// it (a lock without an owner file, broken on purpose).
const REMOVE_IF_HELD: &str = r#"[ -z "$2" ] || [ "$(sed -n 's/^deploy-id: //p' -- "$1/owner" 2>/dev/null)" = "$2" ] || exit 0
rm -rf -- "$1""#;

async fn remove_if_held(
    session: &Session,
    privilege: Privilege,
    lock: &str,
    holder: Option<&str>,
) -> Result<(), HostError> {
    let argv = privilege.wrap(&["sh", "-c", REMOVE_IF_HELD, "remove-lock", lock, holder.unwrap_or("")]);
    session.run(HostFailure::LockFailed, &argv, None).await.map(|_| ())
}

async fn read_owner(session: &Session, privilege: Privilege, lock: &str) -> Option<String> {
    let owner = format!("{lock}/owner");
    let out = session.exec(&privilege.wrap(&["cat", "--", &owner]), None).await.ok()?;
    out.success().then_some(out.stdout)
}

/// Whether two deploy ids (`<run id>-<attempt>`) are attempts of one run.
pub fn same_run(a: &str, b: &str) -> bool {
    fn run(id: &str) -> &str {
        id.rsplit_once('-').map_or(id, |(run, _)| run)
    }
    run(a) == run(b)
}

fn attempt_of(id: &str) -> &str {
    id.rsplit_once('-').map_or("?", |(_, a)| a)
}

fn field<'a>(owner: &'a str, key: &str) -> Option<&'a str> {
    owner.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':').map(str::trim))
}

/// `deploy 123-1 (https://…/runs/123), image app:v2, since 2026-…Z`.
fn describe(owner: Option<&str>) -> String {
    let Some(o) = owner else {
        return "an unknown deploy (the lock has no owner file)".into();
    };
    let get = |k| field(o, k).unwrap_or("?");
    format!("deploy {} ({}), image {}, since {}", get("deploy-id"), get("run"), get("image"), get("since"))
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
fn utc_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    utc(secs)
}

fn utc(secs: u64) -> String {
    // Civil-from-days (H. Hinnant), for dates after 1970.
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_round_trips_into_the_message() {
        let o = Owner { deploy_id: "42-1", run_url: "https://gh/runs/42", image: "app:v2" }.render();
        assert_eq!(field(&o, "deploy-id"), Some("42-1"));
        let d = describe(Some(&o));
        assert!(d.starts_with("deploy 42-1 (https://gh/runs/42), image app:v2, since 20"), "{d}");
        assert_eq!(describe(None), "an unknown deploy (the lock has no owner file)");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_795_350_000), "2026-11-22T12:20:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn attempts_of_one_run_share_the_lock() {
        assert!(same_run("4242-1", "4242-2"));
        assert!(!same_run("4242-1", "4243-1"));
        assert!(!same_run("42-1", "4242-1"));
        assert_eq!(attempt_of("4242-3"), "3");
    }

    #[test]
    fn lock_paths() {
        assert_eq!(path("/var/lib/deploy-action/", "web"), "/var/lib/deploy-action/web.lock");
    }
}
