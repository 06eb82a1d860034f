//! Compaction: the store rewritten into a fresh directory, so its footprint on
//! disk comes back to what it holds.
//!
//! sled 0.34 does not give back the space of removed records at the rate a
//! journal at its cap removes them: churning records through a capped journal,
//! its files grew to 6.6x the cap after five turns and kept growing (BENCHMARKS.md,
//! "The journal on disk"). A byte cap on records alone therefore does not bound
//! the volume. When the store's bytes on disk pass [`COMPACT_AT`] times
//! `max_bytes`, housekeeping copies every tree into `journal.compacting/`, syncs
//! it, and swaps the directories:
//!
//! 1. `journal` → `journal.old`, 2. `journal.compacting` → `journal`, 3. the data
//!    dir synced, 4. `journal.old` removed.
//!
//! Writes wait for the copy (it holds the writer lock; at most `max_bytes` of
//! records and the dedup index). A crash at any step is finished at the next open
//! ([`finish_interrupted`]): a `journal.compacting` without the swap is removed; a
//! `journal.old` without a `journal` is renamed back; a `journal.old` beside a
//! `journal` is removed. The state file is untouched: the facts it records do not
//! change.

use std::path::Path;
use std::sync::Arc;

use super::store::{Batch, Store, Tree, Unavailable};
use super::{Journal, JournalError, STORE_DIR};

/// Compact once the store takes this many times `max_bytes` on disk.
pub const COMPACT_AT: u64 = 3;

const COMPACTING: &str = "journal.compacting";
const OLD: &str = "journal.old";

/// A batch of the copy: this many bytes of keys and values.
const COPY_BATCH_BYTES: usize = 4 << 20;

/// What one compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    pub before_bytes: u64,
    pub after_bytes: u64,
}

impl Journal {
    /// Compacts the store if it takes more than [`COMPACT_AT`] times `max_bytes`
    /// on disk (and more than twice what the last compaction left, so a journal
    /// whose live data is that large does not compact over and over).
    pub fn compact_if_large(&self) -> Result<Option<Compaction>, JournalError> {
        let size = self.size_on_disk()?;
        let floor = self
            .inner
            .compacted_to
            .load(std::sync::atomic::Ordering::Relaxed)
            .saturating_mul(2);
        if size <= (self.inner.max_bytes.saturating_mul(COMPACT_AT)).max(floor) {
            return Ok(None);
        }
        self.compact().map(Some)
    }

    /// Rewrites the store into a fresh directory and swaps it in (see the module
    /// documentation). Writes wait meanwhile.
    pub fn compact(&self) -> Result<Compaction, JournalError> {
        let Some(open) = &self.inner.reopen else {
            let size = self.size_on_disk()?;
            return Ok(Compaction {
                before_bytes: size,
                after_bytes: size,
            });
        };
        let started = std::time::Instant::now();
        let mut next_seq = self.writer();
        self.ready(&mut next_seq)?;
        self.sync()?;
        let source = self.store();
        let before_bytes = source.size_on_disk()?;
        let live = self.path().to_path_buf();
        let data_dir = live.parent().unwrap_or(Path::new(".")).to_path_buf();
        let fresh = data_dir.join(COMPACTING);
        let old = data_dir.join(OLD);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| JournalError::Compact { path, source }
        };
        if fresh.exists() {
            std::fs::remove_dir_all(&fresh).map_err(io(&fresh))?;
        }
        {
            let target = open(&fresh)?;
            copy(source.as_ref(), target.as_ref())?;
            target.sync()?;
        }
        drop(source);

        let mut slot = self
            .inner
            .store
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *slot = Arc::new(Unavailable);
        std::fs::rename(&live, &old).map_err(io(&live))?;
        std::fs::rename(&fresh, &live).map_err(io(&fresh))?;
        sync_dir(&data_dir).map_err(io(&data_dir))?;
        let store = open(&live).map_err(|e| self.failing(e))?;
        *slot = store;
        drop(slot);
        drop(next_seq);
        if let Err(e) = std::fs::remove_dir_all(&old) {
            tracing::warn!(path = %old.display(), error = %e, "could not remove the journal's old files after compacting");
        }
        let after_bytes = self.size_on_disk()?;
        self.inner
            .compacted_to
            .store(after_bytes, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            before_bytes,
            after_bytes,
            took = ?started.elapsed(),
            "journal compacted"
        );
        Ok(Compaction {
            before_bytes,
            after_bytes,
        })
    }
}

/// Copies every tree of `source` into `target`, in batches.
fn copy(source: &dyn Store, target: &dyn Store) -> Result<(), JournalError> {
    for tree in Tree::CURRENT {
        let mut batch = Batch::default();
        let mut bytes = 0;
        for entry in source.iter(tree) {
            let (key, value) = entry?;
            bytes += key.len() + value.len();
            batch.insert(tree, key, value);
            if bytes >= COPY_BATCH_BYTES {
                target.apply(std::mem::take(&mut batch))?;
                bytes = 0;
            }
        }
        if !batch.is_empty() {
            target.apply(batch)?;
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Finishes a compaction a crash interrupted (see the module documentation).
pub(super) fn finish_interrupted(data_dir: &Path) -> Result<(), JournalError> {
    let (live, fresh, old) = (
        data_dir.join(STORE_DIR),
        data_dir.join(COMPACTING),
        data_dir.join(OLD),
    );
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| JournalError::Compact { path, source }
    };
    if old.exists() {
        if live.exists() {
            std::fs::remove_dir_all(&old).map_err(io(&old))?;
        } else {
            tracing::warn!(
                "a compaction was interrupted before its swap: back to the journal it started from"
            );
            std::fs::rename(&old, &live).map_err(io(&old))?;
            sync_dir(data_dir).map_err(io(data_dir))?;
        }
    }
    if fresh.exists() {
        std::fs::remove_dir_all(&fresh).map_err(io(&fresh))?;
    }
    Ok(())
}
