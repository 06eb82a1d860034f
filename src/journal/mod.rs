//! The journal: every event evrelay has seen, with the watch's resume token, on disk
//! before anything is forwarded.
//!
//! # Trees
//!
//! | tree     | key                          | value                                  |
//! |----------|------------------------------|----------------------------------------|
//! | `events` | sequence number, u64 BE      | a [`Record`] (format in `src/record.rs`) |
//! | `seen_buckets` | top 16 bits of CRC32C(uid), BE | each uid's last journaled count and time ([`SeenBucket`](crate::record::SeenBucket)) |
//! | `meta`   | fixed names (below)          | schema version, resume token, cursors, byte and drop counters, the term |
//! | `dead`   | sequence number, u64 BE      | a [`DeadLetter`]: why the intake refused that record for good |
//! | `tokens` | sequence number, u64 BE      | the [`ResumeToken`] written with the write that ended at that record |
//!
//! # Invariants
//!
//! 1. A batch of records and the resume token that follows them are one atomic
//!    write, synced to the device before [`Journal::append`] returns. The token
//!    therefore never points past a record that is not durable.
//! 2. Sequence numbers only grow; key order is arrival order.
//! 3. A sink's shipped-through cursor moves only forward, and only after the intake
//!    acknowledged every record up to it; it is durable before the shipper sends the
//!    next batch.
//! 4. Bounded: record bytes are counted in `meta` in the same writes that add or
//!    remove records. Past `max_bytes` the oldest shipped records go first, then the
//!    oldest pending ones; every pending drop is counted and leaves a gap marker.
//!    Appends never wait for the shipper, so the watch is never held up.
//! 5. The dedup index is updated in the same write as the records, so a record is
//!    journaled at most once per occurrence however often the API server sends it.
//! 6. A token filed in `tokens` under sequence `s` re-delivers, when watched from,
//!    every event journaled after `s`. The newest at or below a sink's cursor is the
//!    shipped-through token that the ConfigMap mirror publishes (`term.rs`).
//!
//! # Layers
//!
//! The policies (appending with dedup in `append.rs`, the byte cap in `cap.rs`,
//! terms in `term.rs`, migrations in `migrate.rs`) are written against the
//! [`Store`](store::Store) trait; `sled_store.rs` is the one file that knows sled.
//! Every write goes through one lock, so read-modify-writes (counters, dedup
//! buckets) need no isolation from the store. The methods block on disk I/O: async
//! code calls them through [`Journal::call`].

mod append;
mod cap;
mod housekeeping;
mod migrate;
mod sled_store;
pub mod store;
mod term;
#[cfg(test)]
pub(crate) mod testing;

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use crate::record::{DeadLetter, Record, RecordError, ResumeToken};
pub use append::AppendOutcome;
pub use cap::CapOutcome;
pub use housekeeping::housekeeping;
use store::{Batch, Store, StoreError, Tree};
pub use term::TermStart;

/// The journal schema this build writes. Older journals are migrated at open
/// (see `migrations/`); newer ones are refused.
pub const SCHEMA_VERSION: u32 = migrate::latest();

const META_SCHEMA: &[u8] = b"schema_version";
const META_TOKEN: &[u8] = b"resume_token";
const META_SHIPPED_PREFIX: &str = "shipped_through/";
/// Bytes of all records in `events`, kept in the writes that change them.
const META_RECORD_BYTES: &[u8] = b"record_bytes";
/// Records in `events`, kept in the writes that change them (counting the tree
/// walks it: a million records took seconds).
const META_RECORD_COUNT: &[u8] = b"record_count";
/// Pending records dropped by the byte cap, ever (each one a loss, and marked).
const META_DROPPED_PENDING: &[u8] = b"dropped_pending";
/// Shipped records removed by the byte cap, ever (no loss: they were delivered).
const META_EVICTED_SHIPPED: &[u8] = b"evicted_shipped";
/// Pending records given up at a takeover because the journal was stale, ever (no
/// loss: the new term re-collects them from the mirrored token).
const META_DROPPED_STALE: &[u8] = b"dropped_stale";
/// When the last health probe wrote (Unix ms); see [`Journal::probe`].
const META_PROBE: &[u8] = b"health_probe";
/// The leadership [`Term`](crate::record::Term) the journal was last written under.
const META_TERM: &[u8] = b"term";

/// The store's directory inside the data dir.
const STORE_DIR: &str = "journal";

/// Journal settings, checked (`journal:` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalSettings {
    /// Where the journal lives. In production a PVC mounted here, so a restarted pod
    /// resumes without a LIST and without resending.
    pub data_dir: PathBuf,
    /// Memory the store may use for its page cache. Set explicitly: sled's default
    /// is 1 GiB and it does not see cgroup limits.
    pub cache_capacity_bytes: u64,
    /// The most record bytes the journal holds. Past it the oldest shipped records
    /// are removed, then the oldest pending ones (each counted, and marked by a gap
    /// record).
    pub max_bytes: u64,
    /// How long the dedup index remembers an event. Longer than the API server's
    /// `--event-ttl`, so a relist never resends a forgotten event.
    pub seen_ttl: Duration,
    /// How long shipped records are kept for `replay`; `None`: until the byte cap
    /// needs the room. Pending records are never removed by age.
    pub retention: Option<Duration>,
}

impl Default for JournalSettings {
    fn default() -> Self {
        JournalSettings {
            data_dir: PathBuf::from("/var/lib/evrelay"),
            cache_capacity_bytes: 16 * 1024 * 1024,
            max_bytes: 512 * 1024 * 1024,
            seen_ttl: Duration::from_secs(2 * 3600),
            retention: Some(Duration::from_secs(3 * 24 * 3600)),
        }
    }
}

/// Why the journal could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The store failed: I/O, a full or read-only disk, or damage.
    #[error("journal store: {0}")]
    Store(#[from] StoreError),
    /// Another process has the journal open.
    #[error(
        "journal at {0} is in use by another process (a running evrelay?); stop it or dump a copy of the directory"
    )]
    Locked(PathBuf),
    /// The journal was written by a newer evrelay.
    #[error(
        "journal at {path} has schema version {found}, newer than this build's {SCHEMA_VERSION}; run a newer evrelay"
    )]
    SchemaTooNew { path: PathBuf, found: u32 },
    /// A value in `meta` does not decode.
    #[error("journal meta key {key}: {source}")]
    Meta {
        key: String,
        #[source]
        source: RecordError,
    },
    /// A journal call died before it finished (a bug: it panicked).
    #[error("a journal call did not finish: {0}")]
    Task(String),
}

/// A record read back with its sequence number. The record is an error where its
/// bytes are damaged: one bad record never hides the ones after it.
#[derive(Debug)]
pub struct StoredRecord {
    pub seq: u64,
    pub record: Result<Record, RecordError>,
}

/// Counters kept in `meta`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Counters {
    pub record_bytes: u64,
    pub dropped_pending: u64,
    pub evicted_shipped: u64,
    pub dropped_stale: u64,
}

/// The journal. Cheap to clone; every clone is the same journal.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    store: Box<dyn Store>,
    max_bytes: u64,
    /// Held for every write, so writes are serial. Holds the next sequence number.
    writer: Mutex<u64>,
    /// The highest journaled sequence number, for the shipper to wait on.
    head: watch::Sender<u64>,
}

impl Journal {
    /// Opens (creating if needed) the journal under `settings.data_dir`.
    pub fn open(settings: &JournalSettings) -> Result<Self, JournalError> {
        let path = settings.data_dir.join(STORE_DIR);
        let store = sled_store::SledStore::open(&path, settings.cache_capacity_bytes).map_err(
            |e| match e {
                StoreError::Locked(path) => JournalError::Locked(path),
                other => other.into(),
            },
        )?;
        Self::with_store(Box::new(store), path, settings.max_bytes)
    }

    /// The journal kept in `store` (`path` names it in messages): migrated to this
    /// build's schema, durable on return.
    pub(crate) fn with_store(
        store: Box<dyn Store>,
        path: PathBuf,
        max_bytes: u64,
    ) -> Result<Self, JournalError> {
        match store.get(Tree::Meta, META_SCHEMA)? {
            None => {
                let mut batch = Batch::default();
                batch.insert(Tree::Meta, META_SCHEMA, SCHEMA_VERSION.to_be_bytes());
                store.apply(batch)?;
            }
            Some(v) => {
                let found = u32::from_be_bytes(v.as_slice().try_into().unwrap_or([0xff; 4]));
                if found > SCHEMA_VERSION {
                    return Err(JournalError::SchemaTooNew { path, found });
                }
                migrate::run(store.as_ref(), found)?;
            }
        }
        let last = store.last(Tree::Events)?.map_or(0, |(k, _)| seq_of(&k));
        let (head, _) = watch::channel(last);
        let journal = Journal {
            inner: Arc::new(Inner {
                path,
                store,
                max_bytes,
                writer: Mutex::new(last + 1),
                head,
            }),
        };
        journal.sync()?;
        Ok(journal)
    }

    /// Runs blocking journal work off the async runtime: the one way async code
    /// reaches the journal.
    pub async fn call<T, F>(&self, work: F) -> Result<T, JournalError>
    where
        T: Send + 'static,
        F: FnOnce(&Journal) -> Result<T, JournalError> + Send + 'static,
    {
        let journal = self.clone();
        tokio::task::spawn_blocking(move || work(&journal))
            .await
            .map_err(|e| JournalError::Task(e.to_string()))?
    }

    /// Where the journal lives on disk.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }

    /// The write lock, holding the next sequence number.
    fn writer(&self) -> MutexGuard<'_, u64> {
        // A panic while holding it cannot leave a write half-applied (the store's
        // batches are atomic), so a poisoned lock is still good.
        self.inner
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The token the next watch resumes from; `None` on a new journal.
    pub fn resume_token(&self) -> Result<Option<ResumeToken>, JournalError> {
        self.decoded(Tree::Meta, META_TOKEN, "resume_token", ResumeToken::decode)
    }

    /// The value under `key` in `tree`, decoded; `None` when absent. `name` says
    /// which value in an error.
    fn decoded<T>(
        &self,
        tree: Tree,
        key: &[u8],
        name: &str,
        decode: impl Fn(&[u8]) -> Result<T, RecordError>,
    ) -> Result<Option<T>, JournalError> {
        let Some(bytes) = self.store().get(tree, key)? else {
            return Ok(None);
        };
        decode(&bytes)
            .map(Some)
            .map_err(|source| JournalError::Meta {
                key: name.to_owned(),
                source,
            })
    }

    /// A u64 kept in `meta` (0 when absent).
    fn meta_u64(&self, key: &[u8]) -> Result<u64, JournalError> {
        Ok(self.store().get(Tree::Meta, key)?.map_or(0, |v| seq_of(&v)))
    }

    /// The highest sequence number the sink has delivered (0: none).
    pub fn shipped_through(&self, sink: &str) -> Result<u64, JournalError> {
        self.meta_u64(shipped_key(sink).as_bytes())
    }

    /// The lowest shipped-through cursor of `sinks` (0 when there is none).
    pub fn lowest_shipped_through(&self, sinks: &[&str]) -> Result<u64, JournalError> {
        let mut lowest: Option<u64> = None;
        for sink in sinks {
            let through = self.shipped_through(sink)?;
            lowest = Some(lowest.map_or(through, |l| l.min(through)));
        }
        Ok(lowest.unwrap_or(0))
    }

    /// Moves the sink's cursor forward to `seq` (never backward) and records the
    /// batch's dead letters, in one durable write.
    pub fn mark_shipped(
        &self,
        sink: &str,
        seq: u64,
        dead_letters: &[(u64, DeadLetter)],
    ) -> Result<(), JournalError> {
        {
            let _writer = self.writer();
            let key = shipped_key(sink);
            let old = self.meta_u64(key.as_bytes())?;
            let mut batch = Batch::default();
            batch.insert(Tree::Meta, key.as_bytes(), old.max(seq).to_be_bytes());
            for (seq, letter) in dead_letters {
                batch.insert(Tree::Dead, seq.to_be_bytes(), letter.encode());
            }
            self.store().apply(batch)?;
            self.prune_tokens(seq)?;
        }
        self.sync()
    }

    /// Why the record at `seq` was dead-lettered, if it was.
    pub fn dead_letter(&self, seq: u64) -> Result<Option<DeadLetter>, JournalError> {
        let name = format!("dead/{seq}");
        self.decoded(Tree::Dead, &seq.to_be_bytes(), &name, DeadLetter::decode)
    }

    /// The number of dead-lettered records.
    pub fn dead_count(&self) -> Result<usize, JournalError> {
        let mut n = 0;
        for entry in self.store().iter(Tree::Dead) {
            entry?;
            n += 1;
        }
        Ok(n)
    }

    /// The byte and drop counters.
    pub fn counters(&self) -> Result<Counters, JournalError> {
        Ok(Counters {
            record_bytes: self.meta_u64(META_RECORD_BYTES)?,
            dropped_pending: self.meta_u64(META_DROPPED_PENDING)?,
            evicted_shipped: self.meta_u64(META_EVICTED_SHIPPED)?,
            dropped_stale: self.meta_u64(META_DROPPED_STALE)?,
        })
    }

    /// Up to `max_records` records after `after`, stopping early once `max_bytes` of
    /// record bytes are gathered (always at least one record).
    pub fn read_after(
        &self,
        after: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>, JournalError> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for entry in self.entries_after(after) {
            let (k, v) = entry?;
            if out.len() >= max_records || (!out.is_empty() && bytes + v.len() > max_bytes) {
                break;
            }
            bytes += v.len();
            out.push(stored(&k, &v));
        }
        Ok(out)
    }

    fn entries_after(&self, after: u64) -> store::Entries<'_> {
        let from = (after + 1).to_be_bytes();
        self.store()
            .range(Tree::Events, Bound::Included(&from), Bound::Unbounded)
    }

    /// Every record, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = Result<StoredRecord, JournalError>> + '_ {
        self.iter_after(0)
    }

    /// Every record after `after`, oldest first.
    pub fn iter_after(
        &self,
        after: u64,
    ) -> impl Iterator<Item = Result<StoredRecord, JournalError>> + '_ {
        self.entries_after(after)
            .map(|entry| Ok(entry.map(|(k, v)| stored(&k, &v))?))
    }

    /// The schema version recorded in the journal.
    pub fn schema_version(&self) -> Result<u32, JournalError> {
        Ok(self
            .store()
            .get(Tree::Meta, META_SCHEMA)?
            .map(|v| u32::from_be_bytes(v.as_slice().try_into().unwrap_or([0; 4])))
            .unwrap_or(0))
    }

    /// The number of records (events and gap markers).
    pub fn len(&self) -> usize {
        self.meta_u64(META_RECORD_COUNT).unwrap_or(0) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.head() == 0
    }

    /// Bytes the journal occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64, JournalError> {
        Ok(self.store().size_on_disk()?)
    }

    /// The highest journaled sequence number (0: none yet).
    pub fn head(&self) -> u64 {
        *self.inner.head.borrow()
    }

    /// Records journaled but not yet delivered to `sink`.
    pub fn pending(&self, sink: &str) -> Result<u64, JournalError> {
        Ok(self.head().saturating_sub(self.shipped_through(sink)?))
    }

    /// Follows the highest journaled sequence number.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.head.subscribe()
    }

    /// Proves the journal takes a durable write (a health check): writes a probe
    /// key in `meta` and syncs.
    pub fn probe(&self) -> Result<(), JournalError> {
        let now = jiff::Timestamp::now().as_millisecond();
        {
            let _writer = self.writer();
            let mut batch = Batch::default();
            batch.insert(Tree::Meta, META_PROBE, now.to_be_bytes());
            self.store().apply(batch)?;
        }
        self.sync()
    }

    /// Makes everything written so far durable, down to the device.
    pub fn sync(&self) -> Result<(), JournalError> {
        Ok(self.store().sync()?)
    }
}

fn shipped_key(sink: &str) -> String {
    format!("{META_SHIPPED_PREFIX}{sink}")
}

fn stored(key: &[u8], value: &[u8]) -> StoredRecord {
    StoredRecord {
        seq: seq_of(key),
        record: Record::decode(value),
    }
}

fn seq_of(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(bytes.try_into().unwrap_or([0; 8]))
}

#[cfg(test)]
mod tests;
