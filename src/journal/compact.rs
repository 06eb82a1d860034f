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
//! 0. the copy synced, a marker file written into it, 1. `journal` →
//!    `journal.old`, 2. `journal.compacting` → `journal`, 3. the data dir synced,
//!    4. `journal.old` removed, then the marker.
//!
//! Writes wait for the copy (it holds the writer lock; at most `max_bytes` of
//! records and the dedup index); the health probe counts a compaction as progress.
//! A crash at any step is finished at the next open, or the next reopen
//! ([`finish_interrupted`]): a `journal.compacting` is removed; a `journal.old`
//! without a `journal` is renamed back; a `journal.old` beside a marked `journal`
//! is removed. The state file is untouched: the facts it records do not change.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::store::{Batch, Store, Tree, Unavailable};
use super::{Journal, JournalError, STORE_DIR};

/// Compact once the store takes this many times `max_bytes` on disk.
pub const COMPACT_AT: u64 = 3;

const COMPACTING: &str = "journal.compacting";
const OLD: &str = "journal.old";
const DISCARDED: &str = "journal.discarded";
/// Written into a copy once it is whole and synced.
const COMPLETE: &str = "evrelay-compaction-complete";

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
            .load(Ordering::Relaxed)
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
        self.inner.compacting.store(true, Ordering::Release);
        let result = self.compact_locked(open);
        self.inner.compacting.store(false, Ordering::Release);
        drop(next_seq);
        let (before_bytes, after_bytes) = result?;
        self.inner
            .compacted_to
            .store(after_bytes, Ordering::Relaxed);
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

    /// The copy and the swap; the caller holds the writer lock.
    fn compact_locked(&self, open: &super::Reopen) -> Result<(u64, u64), JournalError> {
        let source = self.store();
        let before_bytes = source.size_on_disk()?;
        let live = self.path().to_path_buf();
        let data_dir = live.parent().unwrap_or(Path::new(".")).to_path_buf();
        let (fresh, old) = (data_dir.join(COMPACTING), data_dir.join(OLD));
        if fresh.exists() {
            std::fs::remove_dir_all(&fresh).map_err(io(&fresh))?;
        }
        {
            let target = open(&fresh)?;
            copy(source.as_ref(), target.as_ref())?;
            target.sync()?;
        }
        drop(source);
        // The copy is whole and durable: say so inside it, for a crash after the swap.
        std::fs::File::create(fresh.join(COMPLETE))
            .and_then(|f| f.sync_all())
            .map_err(io(&fresh))?;
        for dir in [fresh.join("blobs"), fresh.clone()] {
            if dir.exists() {
                sync_dir(&dir).map_err(io(&dir))?;
            }
        }

        // The old store goes first: it holds the directory's lock.
        self.swap_store(Arc::new(Unavailable));
        let swapped = std::fs::rename(&live, &old).and_then(|()| {
            std::fs::rename(&fresh, &live).inspect_err(|_| {
                // Put the journal back where it was before reporting.
                let _ = std::fs::rename(&old, &live);
            })
        });
        let synced = sync_dir(&data_dir);
        if swapped.is_err() {
            // Never open an empty store in the journal's place: whatever the
            // renames left, the journal goes back first (or nothing is opened,
            // and the next write tries again).
            self.inner.failed.store(true, Ordering::Release);
            finish_interrupted(&data_dir)?;
        }
        let store = open(&live).map_err(|e| self.failing(e))?;
        self.inner.failed.store(false, Ordering::Release);
        self.swap_store(store);
        swapped.map_err(io(&live))?;
        synced.map_err(io(&data_dir))?;
        if let Err(e) = std::fs::remove_dir_all(&old) {
            tracing::warn!(path = %old.display(), error = %e, "could not remove the journal's old files after compacting");
        } else {
            let _ = std::fs::remove_file(live.join(COMPLETE));
        }
        Ok((before_bytes, self.size_on_disk()?))
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + use<> {
    let path = path.to_path_buf();
    move |source| JournalError::Compact { path, source }
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
    if old.exists() {
        if live.join(COMPLETE).exists() {
            // Swapped: the journal is the whole copy; the old files can go.
            std::fs::remove_dir_all(&old).map_err(io(&old))?;
            let _ = std::fs::remove_file(live.join(COMPLETE));
        } else if live.exists() {
            // Not a finished copy in the journal's place (never expected): keep
            // both, the old one back in place.
            let discarded = data_dir.join(DISCARDED);
            tracing::error!(kept = %discarded.display(), "a journal that is not a finished compaction was found beside the one it would replace: the original goes back, the other is kept aside");
            if discarded.exists() {
                std::fs::remove_dir_all(&discarded).map_err(io(&discarded))?;
            }
            std::fs::rename(&live, &discarded).map_err(io(&live))?;
            std::fs::rename(&old, &live).map_err(io(&old))?;
            sync_dir(data_dir).map_err(io(data_dir))?;
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
