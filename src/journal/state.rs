//! The state file, `<data_dir>/journal.state`: what the journal should hold, kept
//! outside the store so that an open can check the store against it.
//!
//! sled, given damaged files, can open without an error holding only what was
//! written before the damage: older records, an older token, older cursors. Each
//! commit therefore also records, here, the head sequence, the lowest shipped-through
//! cursor, the resume token's resourceVersion, the shipped-through token and the
//! leadership epoch (format: [`JournalState`]). They are read under the writer lock
//! and written after the sync that makes them durable (`Journal::commit`), so the
//! file never claims more than is on disk; at most every
//! [`SAVE_EVERY`] unless a caller forces it, so it costs one small write per group
//! of commits. An open that finds the store behind it calls the journal damaged
//! ([`Journal::verify`]).
//!
//! A run that meets damage in the store (a read that fails its checksum) marks the
//! file `damaged`, so the next open sets the journal aside rather than trusting it.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::store::{Batch, Entries, Store, StoreError, Tree};
use super::{Journal, JournalError};
use crate::record::{JournalState, rv_number};

/// The state file's name inside the data dir.
pub(super) const STATE_FILE: &str = "journal.state";

/// The least time between two unforced writes of the state file.
const SAVE_EVERY: Duration = Duration::from_millis(200);

/// A sync slower than this is counted as slow ([`SyncStats::slow`]).
pub const SLOW_SYNC: Duration = Duration::from_secs(1);

/// The state file, shared by the journal and the store's [`DamageWatch`];
/// `None` for journals in memory.
pub(super) type Shared = Arc<Mutex<Option<StateFile>>>;

pub(super) fn shared(file: Option<StateFile>) -> Shared {
    Arc::new(Mutex::new(file))
}

fn lock(state: &Shared) -> MutexGuard<'_, Option<StateFile>> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The state file, open.
pub(super) struct StateFile {
    path: PathBuf,
    file: File,
    /// What the file holds; `None` for a new file (or one with no whole slot).
    last: Option<JournalState>,
    /// The slot `last` was read from or written to.
    slot: usize,
    written: Option<Instant>,
}

impl StateFile {
    /// Opens (creating if needed) the state file in `data_dir`.
    pub(super) fn open(data_dir: &Path) -> Result<StateFile, JournalError> {
        let path = data_dir.join(STATE_FILE);
        let err = |source| JournalError::State {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(data_dir).map_err(err)?;
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(err)?;
        if !existed {
            // The new name is durable only once its directory is synced.
            File::open(data_dir)
                .and_then(|dir| dir.sync_all())
                .map_err(err)?;
        }
        let mut bytes = Vec::with_capacity(2 * JournalState::SLOT);
        file.read_to_end(&mut bytes).map_err(err)?;
        let last = JournalState::read(&bytes);
        let slot = bytes
            .chunks(JournalState::SLOT)
            .position(|s| JournalState::decode(s) == last && last.is_some())
            .unwrap_or(1);
        Ok(StateFile {
            path,
            file,
            last,
            slot,
            written: None,
        })
    }

    /// What the file holds, if it holds anything.
    pub(super) fn last(&self) -> Option<JournalState> {
        self.last
    }

    /// Marks the journal damaged: the next open sets it aside.
    fn mark_damaged(&mut self) -> Result<(), JournalError> {
        if self.last.is_some_and(|s| s.damaged) {
            return Ok(());
        }
        let state = JournalState {
            damaged: true,
            ..self.last.unwrap_or_default()
        };
        self.write(state)
    }

    /// Writes `state` into the other slot, durably.
    fn write(&mut self, mut state: JournalState) -> Result<(), JournalError> {
        state.generation = self.last.map_or(1, |s| s.generation + 1);
        let slot = 1 - self.slot;
        let offset = (slot * JournalState::SLOT) as u64;
        self.file
            .write_all_at(&state.encode(), offset)
            .and_then(|()| self.file.sync_data())
            .map_err(|source| JournalError::State {
                path: self.path.clone(),
                source,
            })?;
        self.last = Some(state);
        self.slot = slot;
        self.written = Some(Instant::now());
        Ok(())
    }
}

impl Journal {
    /// What the store holds now, in the state file's terms.
    pub(super) fn facts(&self) -> Result<JournalState, JournalError> {
        let token = self.resume_token()?;
        let shipped = self.min_shipped_through()?;
        let shipped_token = self.token_at_or_below(shipped)?;
        Ok(JournalState {
            generation: 0,
            head: self.durable_head()?,
            shipped,
            resume_rv: token.map_or(0, |t| rv_number(&t.resource_version)),
            shipped_rv: shipped_token
                .as_ref()
                .map_or(0, |t| rv_number(&t.resource_version)),
            shipped_time_ms: shipped_token.map_or(0, |t| t.timestamp_ms),
            epoch: self.term()?.map_or(0, |t| t.epoch),
            damaged: false,
        })
    }

    /// Under the writer lock, after a write: what the state file should say once
    /// the write is synced; `None` when no record is due (one was made under
    /// [`SAVE_EVERY`] ago, unless `force`). Read without the state file's lock
    /// held: a read that meets damage takes that lock to mark it.
    pub(super) fn facts_due(&self, force: bool) -> Result<Option<JournalState>, JournalError> {
        {
            let guard = self.state_file();
            let Some(file) = guard.as_ref() else {
                return Ok(None);
            };
            if file.last.is_some_and(|last| last.damaged)
                || (!force && file.written.is_some_and(|at| at.elapsed() < SAVE_EVERY))
            {
                return Ok(None);
            }
        }
        self.facts().map(Some)
    }

    /// After the sync: records `facts` (from [`Journal::facts_due`]).
    pub(super) fn record_facts(&self, facts: Option<JournalState>) -> Result<(), JournalError> {
        let Some(facts) = facts else {
            return Ok(());
        };
        let mut guard = self.state_file();
        let Some(file) = guard.as_mut() else {
            return Ok(());
        };
        if file.last.is_some_and(|last| last.damaged) {
            return Ok(()); // kept until the next open sets the journal aside
        }
        if file.last.is_some_and(|last| {
            JournalState {
                generation: 0,
                ..last
            } == facts
        }) {
            return Ok(());
        }
        file.write(facts).inspect_err(|e| self.write_failed(e))
    }

    /// Marks the journal damaged in the state file: the next open sets it aside.
    /// Called when a read or write found the store's files damaged.
    pub fn mark_damaged(&self) -> Result<(), JournalError> {
        match self.state_file().as_mut() {
            Some(file) => file.mark_damaged(),
            None => Ok(()),
        }
    }

    /// What the state file says the journal held when last written; `None`
    /// without one (a journal from before state files, or in memory).
    pub fn expected_state(&self) -> Option<JournalState> {
        self.state_file().as_ref().and_then(StateFile::last)
    }

    /// Checks the store against the state file: a store that ends before the
    /// last recorded head, or whose cursor, token or term is older than recorded,
    /// lost writes it acknowledged, and is [`JournalError::Damaged`].
    pub fn verify(&self) -> Result<(), JournalError> {
        let Some(expected) = self.expected_state() else {
            return Ok(());
        };
        let damaged = |detail: String| JournalError::Damaged {
            path: self.path().to_path_buf(),
            detail,
        };
        if expected.damaged {
            return Err(damaged("an earlier run found its files damaged".to_owned()));
        }
        let found = self.facts()?;
        let mut problems = Vec::new();
        if found.head < expected.head {
            problems.push(format!(
                "it ends at record {} but record {} was written",
                found.head, expected.head
            ));
        }
        if found.shipped < expected.shipped {
            problems.push(format!(
                "its shipped-through cursor is {} but {} was recorded",
                found.shipped, expected.shipped
            ));
        }
        if found.epoch < expected.epoch {
            problems.push(format!(
                "its leadership epoch is {} but {} was recorded",
                found.epoch, expected.epoch
            ));
        }
        // A new term may adopt an older token; within one term it only moves on.
        if found.epoch == expected.epoch && found.resume_rv < expected.resume_rv {
            problems.push(format!(
                "its resume token is at resourceVersion {} but {} was recorded",
                found.resume_rv, expected.resume_rv
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(damaged(format!(
                "{} (state file {STATE_FILE})",
                problems.join("; ")
            )))
        }
    }

    fn state_file(&self) -> MutexGuard<'_, Option<StateFile>> {
        lock(&self.inner.state)
    }
}

/// A store that marks the state file damaged the first time it reports damage
/// (a checksum that fails, a log that does not parse): whatever the call that met
/// it does next, the next open sets the journal aside instead of trusting it.
pub(super) struct DamageWatch {
    inner: Arc<dyn Store>,
    state: Shared,
    marked: AtomicBool,
}

impl DamageWatch {
    pub(super) fn wrap(inner: Arc<dyn Store>, state: Shared) -> Arc<dyn Store> {
        Arc::new(DamageWatch {
            inner,
            state,
            marked: AtomicBool::new(false),
        })
    }

    fn check<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e) = &result
            && e.is_damage()
            && !self.marked.swap(true, Ordering::AcqRel)
        {
            tracing::error!(error = %e, "the journal's files are damaged: the next start sets them aside and starts a fresh journal");
            if let Some(file) = lock(&self.state).as_mut()
                && let Err(e) = file.mark_damaged()
            {
                tracing::error!(error = %e, "could not record the damage in the state file");
            }
        }
        result
    }
}

impl Store for DamageWatch {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.check(self.inner.get(tree, key))
    }

    fn range(&self, tree: Tree, from: Bound<&[u8]>, to: Bound<&[u8]>) -> Entries {
        let entries = self.inner.range(tree, from, to);
        let watch = DamageWatch {
            inner: self.inner.clone(),
            state: self.state.clone(),
            marked: AtomicBool::new(self.marked.load(Ordering::Acquire)),
        };
        Box::new(entries.map(move |entry| watch.check(entry)))
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        self.check(self.inner.apply(batch))
    }

    fn clear(&self, tree: Tree) -> Result<(), StoreError> {
        self.check(self.inner.clear(tree))
    }

    fn has_tree(&self, tree: Tree) -> Result<bool, StoreError> {
        self.check(self.inner.has_tree(tree))
    }

    fn drop_tree(&self, tree: Tree) -> Result<(), StoreError> {
        self.check(self.inner.drop_tree(tree))
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.check(self.inner.sync())
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.check(self.inner.size_on_disk())
    }
}

/// How long the journal's syncs take. A slow disk is reported, not fatal: it is
/// the process making no progress at all that liveness acts on.
#[derive(Debug, Default)]
pub struct SyncStats {
    last_micros: AtomicU64,
    slow: AtomicU64,
    total: AtomicU64,
}

impl SyncStats {
    pub(super) fn record(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.last_micros.store(micros, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
        if took >= SLOW_SYNC {
            self.slow.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How long the last sync took.
    pub fn last(&self) -> Duration {
        Duration::from_micros(self.last_micros.load(Ordering::Relaxed))
    }

    /// Syncs that took [`SLOW_SYNC`] or longer, since start.
    pub fn slow(&self) -> u64 {
        self.slow.load(Ordering::Relaxed)
    }

    /// Syncs since start.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}
