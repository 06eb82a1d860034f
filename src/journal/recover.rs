//! Opening a journal that may be damaged: a damaged journal is set aside (never
//! deleted), a fresh one takes its place, and a gap marker says what happened.
//!
//! Damaged means: the store refuses to open or panics opening (sled does, on some
//! damaged files), it reports its files inconsistent, it opens shorter or older than
//! the state file says it was ([`Journal::verify`]), or a run marked it damaged.
//! A locked, read-only, full or failing disk is not damage: nothing is moved, and
//! the open fails for the caller to report and retry.
//!
//! The damaged journal and its state file move to `<data_dir>/damaged-<unix
//! seconds>/`, itself a data dir (`evrelay dump --data-dir` reads it). The newest
//! [`KEEP_DAMAGED`] such copies are kept. The fresh journal resumes from the last
//! shipped-through token the state file recorded; when leading, the takeover then
//! prefers the mirrored token (`delivery::takeover`), so the loss window is bounded
//! by what the mirror last published.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use super::state::STATE_FILE;
use super::store::StoreError;
use super::{Journal, JournalError, JournalSettings, STORE_DIR};
use crate::record::{Gap, JournalState, Record, ResumeToken};

/// The damaged copies kept in the data dir; older ones are removed.
pub const KEEP_DAMAGED: usize = 2;

const DAMAGED_PREFIX: &str = "damaged-";

/// What an open did with a damaged journal.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// Where the damaged journal is now: a data dir of its own.
    pub moved_to: PathBuf,
    /// Why it was set aside.
    pub reason: String,
    /// What the state file said the damaged journal held; `None` without one.
    pub last_known: Option<JournalState>,
    /// The token the fresh journal resumes from; `None`: a fresh list (or the
    /// mirror's, when leading).
    pub resumed_from: Option<ResumeToken>,
}

/// Opens the journal; a damaged one is set aside and a fresh one opened in its
/// place (the [`Recovery`] says so). Errors that are not damage are returned.
pub fn open_or_recover(
    settings: &JournalSettings,
) -> Result<(Journal, Option<Recovery>), JournalError> {
    let reason = match Journal::open(settings) {
        Ok(journal) => return Ok((journal, None)),
        Err(e) if e.is_damage() => e.to_string(),
        Err(e) => return Err(e),
    };
    let dir = &settings.data_dir;
    let last_known = read_state(dir);
    let moved_to = set_aside(dir)?;
    prune_damaged(dir);
    let journal = Journal::open(settings)?;
    let resumed_from = last_known
        .filter(|s| s.shipped_rv > 0)
        .map(|s| ResumeToken {
            resource_version: s.shipped_rv.to_string(),
            timestamp_ms: s.shipped_time_ms,
        });
    let gap = Record::gap(
        Gap::JournalDamaged,
        serde_json::json!({
            "moved_to": moved_to.display().to_string(),
            "why": reason,
            "last_known_head": last_known.map(|s| s.head),
            "last_known_shipped": last_known.map(|s| s.shipped),
            "resumed_from": resumed_from.as_ref().map(|t| t.resource_version.as_str()),
        }),
    );
    journal.append(&[gap], resumed_from.as_ref())?;
    journal.checkpoint()?;
    Ok((
        journal,
        Some(Recovery {
            moved_to,
            reason,
            last_known,
            resumed_from,
        }),
    ))
}

/// The store's own `open`, with a panic taken as damage to the store at `path`
/// (sled panics on some damaged files). Only the store's open: a panic in
/// evrelay's own code (a migration) is a bug, not damage, and is not caught.
pub(super) fn unpanicked<T>(
    path: &Path,
    open: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, JournalError> {
    match std::panic::catch_unwind(AssertUnwindSafe(open)) {
        Ok(result) => Ok(result?),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            Err(JournalError::Damaged {
                path: path.to_path_buf(),
                detail: format!("the store panicked opening it: {what}"),
            })
        }
    }
}

/// The state file's contents, read without opening anything.
fn read_state(dir: &Path) -> Option<JournalState> {
    std::fs::read(dir.join(STATE_FILE))
        .ok()
        .and_then(|bytes| JournalState::read(&bytes))
}

/// Moves the store and its state file into a new `damaged-<time>` directory.
fn set_aside(dir: &Path) -> Result<PathBuf, JournalError> {
    let now = jiff::Timestamp::now().as_second();
    let mut target = dir.join(format!("{DAMAGED_PREFIX}{now}"));
    let mut n = 1;
    while target.exists() {
        target = dir.join(format!("{DAMAGED_PREFIX}{now}.{n}"));
        n += 1;
    }
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| JournalError::MoveAside { path, source }
    };
    std::fs::create_dir(&target).map_err(err(&target))?;
    for name in [STORE_DIR, STATE_FILE] {
        let from = dir.join(name);
        if from.exists() {
            std::fs::rename(&from, target.join(name)).map_err(err(&from))?;
        }
    }
    // The renames are durable once both directories are.
    for d in [&target, &dir.to_path_buf()] {
        std::fs::File::open(d)
            .and_then(|f| f.sync_all())
            .map_err(err(d))?;
    }
    Ok(target)
}

/// Removes all but the newest [`KEEP_DAMAGED`] damaged copies. A failure is
/// logged: the copies only cost space.
fn prune_damaged(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut copies: Vec<(i64, u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let stamp = name.strip_prefix(DAMAGED_PREFIX)?;
            let (secs, n) = stamp.split_once('.').unwrap_or((stamp, "0"));
            Some((secs.parse().ok()?, n.parse().ok()?, e.path()))
        })
        .collect();
    copies.sort();
    let excess = copies.len().saturating_sub(KEEP_DAMAGED);
    for (_, _, path) in copies.into_iter().take(excess) {
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::warn!(path = %path.display(), "removed an older damaged journal (the newest {KEEP_DAMAGED} are kept)")
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not remove an older damaged journal")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> JournalSettings {
        JournalSettings {
            data_dir: dir.to_path_buf(),
            cache_capacity_bytes: 1 << 20,
            ..JournalSettings::default()
        }
    }

    fn token(rv: &str) -> ResumeToken {
        ResumeToken {
            resource_version: rv.into(),
            timestamp_ms: 1_000,
        }
    }

    fn events(n: usize) -> Vec<Record> {
        (0..n)
            .map(|i| {
                let mut r = Record::gap(Gap::ResumeTokenExpired, serde_json::json!({}));
                r.header.kind = crate::record::RecordKind::Event;
                r.header.uid = format!("uid-{i}");
                r
            })
            .collect()
    }

    #[test]
    fn a_journal_that_opens_older_than_its_state_is_set_aside_and_resumed_from_the_shipped_token() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let snapshot = dir.path().join("snapshot");
        {
            let (j, recovery) = open_or_recover(&s).unwrap();
            assert!(recovery.is_none());
            j.append(&events(5), Some(&token("100"))).unwrap();
            j.mark_shipped("datadog", 5, &[]).unwrap();
            j.checkpoint().unwrap();
            // What a store that loses its later writes gives back: this moment.
            copy_dir(&dir.path().join(STORE_DIR), &snapshot);
            j.append(&events(10)[5..], Some(&token("200"))).unwrap();
            j.checkpoint().unwrap();
        }
        std::fs::remove_dir_all(dir.path().join(STORE_DIR)).unwrap();
        std::fs::rename(&snapshot, dir.path().join(STORE_DIR)).unwrap();

        let err = Journal::open(&s)
            .err()
            .expect("the rolled-back journal is refused");
        assert!(err.is_damage(), "{err}");
        assert!(
            err.to_string().contains("ends at record 5 but record 10"),
            "{err}"
        );

        let (j, recovery) = open_or_recover(&s).unwrap();
        let recovery = recovery.expect("set aside");
        assert!(recovery.moved_to.starts_with(dir.path()));
        assert_eq!(recovery.last_known.unwrap().head, 10);
        assert_eq!(
            recovery.resumed_from,
            Some(token("100")),
            "the shipped-through token"
        );
        assert_eq!(j.resume_token().unwrap(), Some(token("100")));
        let records: Vec<_> = j.iter().map(|r| r.unwrap().record.unwrap()).collect();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].header.reason, "JournalDamaged");

        // The damaged copy is a data dir `dump` can open, and it is unchanged.
        let old = Journal::open_unverified(&settings(&recovery.moved_to)).unwrap();
        assert_eq!(old.head(), 5);
        assert_eq!(old.expected_state().unwrap().head, 10);
        drop(old);
        drop(j);

        // A second start moves nothing.
        let (_, again) = open_or_recover(&s).unwrap();
        assert!(again.is_none(), "{again:?}");
    }

    #[test]
    fn damage_found_while_running_sets_the_journal_aside_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        {
            let (j, _) = open_or_recover(&s).unwrap();
            j.append(&events(3), Some(&token("7"))).unwrap();
            j.mark_damaged().unwrap();
        }
        let (_, recovery) = open_or_recover(&s).unwrap();
        let recovery = recovery.expect("set aside");
        assert!(
            recovery.reason.contains("an earlier run"),
            "{}",
            recovery.reason
        );
    }

    #[test]
    fn only_the_newest_damaged_copies_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        for stamp in ["damaged-100", "damaged-300", "damaged-200", "damaged-300.1"] {
            std::fs::create_dir(dir.path().join(stamp)).unwrap();
        }
        prune_damaged(dir.path());
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["damaged-300", "damaged-300.1"]);
    }

    #[test]
    fn a_locked_journal_is_not_damage_and_is_not_moved() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let (_held, _) = open_or_recover(&s).unwrap();
        let err = open_or_recover(&s).err().expect("locked");
        assert!(matches!(err, JournalError::Locked(_)), "{err}");
        assert!(dir.path().join(STORE_DIR).exists());
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }
}
