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
mod compact;
mod housekeeping;
mod migrate;
mod recover;
mod sled_store;
mod state;
pub mod store;
mod term;
#[cfg(test)]
pub(crate) mod testing;

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::record::{DeadLetter, Record, RecordError, ResumeToken};
pub use append::AppendOutcome;
pub use cap::CapOutcome;
pub use compact::{COMPACT_AT, Compaction};
pub use housekeeping::housekeeping;
pub use recover::{Recovery, open_or_recover};
pub use state::{SLOW_SYNC, SyncStats};
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
/// The highest sequence number ever journaled, kept in every append: the records
/// themselves may all be gone (retention), and sequence numbers must not restart
/// below a cursor.
const META_HEAD: &[u8] = b"head";

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
    /// The store opened, but shorter or older than the state file says it was:
    /// what was written after the damage is gone.
    #[error("journal at {path} is damaged: {detail}")]
    Damaged { path: PathBuf, detail: String },
    /// The state file (`state.rs`) could not be read or written.
    #[error("journal state file {path}: {source}")]
    State {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Compacting (or finishing an interrupted compaction) failed on the
    /// filesystem.
    #[error("compacting the journal at {path}: {source}")]
    Compact {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Moving a damaged journal aside failed.
    #[error("moving the damaged journal {path} aside: {source}")]
    MoveAside {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl JournalError {
    /// Whether the journal's files are damaged (an open can start over beside
    /// them), as opposed to unreachable (locked, read-only, full).
    pub fn is_damage(&self) -> bool {
        match self {
            JournalError::Damaged { .. } => true,
            JournalError::Store(e) => e.is_damage(),
            _ => false,
        }
    }

    /// Whether the disk refuses writes for now (full, read-only, failing I/O):
    /// nothing is acknowledged, and a later try may succeed.
    pub fn is_unwritable(&self) -> bool {
        !self.is_damage()
            && matches!(
                self,
                JournalError::Store(StoreError::Io { .. })
                    | JournalError::State { .. }
                    | JournalError::Compact { .. }
            )
    }

    /// The operating system's error, where there is one (ENOSPC, EROFS, …).
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            JournalError::Store(e) => e.io_kind(),
            JournalError::State { source, .. } | JournalError::Compact { source, .. } => {
                Some(source.kind())
            }
            _ => None,
        }
    }
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
    /// Replaced by a fresh open after a write failed (see [`Journal::ready`]).
    store: RwLock<Arc<dyn Store>>,
    /// How to open the store again; `None` for stores that cannot be reopened.
    reopen: Option<Reopen>,
    /// A write or sync failed: the store may be poisoned (sled keeps a failed
    /// write's error for every later call) and is reopened before the next write.
    failed: AtomicBool,
    /// The state file, outside the store (`state.rs`); `None` in tests in memory.
    /// Shared with the store's [`state::DamageWatch`], which marks it damaged.
    state: state::Shared,
    /// The first error of the writes failing now; `None` while writes succeed.
    unwritable: Mutex<Option<String>>,
    max_bytes: u64,
    /// Held for every write, so writes are serial. Holds the next sequence number.
    writer: Mutex<u64>,
    /// The highest journaled sequence number, for the shipper to wait on.
    head: watch::Sender<u64>,
    syncs: SyncStats,
    /// Bytes on disk the last compaction left (0: none yet).
    compacted_to: AtomicU64,
    /// Set while a compaction holds the writer lock.
    compacting: AtomicBool,
}

/// Opens a store in a directory: the journal's again after a failure, or a new
/// one to compact into (`compact.rs`).
type Reopen = Box<dyn Fn(&Path) -> Result<Arc<dyn Store>, StoreError> + Send + Sync>;

impl Journal {
    /// Opens (creating if needed) the journal under `settings.data_dir`, and
    /// checks it against its state file: a journal that came back shorter or older
    /// than it was is [`JournalError::Damaged`]. `evrelay run` opens through
    /// [`open_or_recover`], which sets a damaged journal aside.
    pub fn open(settings: &JournalSettings) -> Result<Self, JournalError> {
        let journal = Self::open_unverified(settings)?;
        journal.verify()?;
        Ok(journal)
    }

    /// Opens the journal without checking it against its state file: for
    /// inspecting one (`evrelay dump`), damaged or not. A panic inside the store
    /// (sled panics on some damaged files) is returned as damage.
    pub fn open_unverified(settings: &JournalSettings) -> Result<Self, JournalError> {
        compact::finish_interrupted(&settings.data_dir)?;
        let path = settings.data_dir.join(STORE_DIR);
        let cache = settings.cache_capacity_bytes;
        let state = state::shared(Some(state::StateFile::open(&settings.data_dir)?));
        let open = {
            let state = state.clone();
            move |at: &Path| -> Result<Arc<dyn Store>, StoreError> {
                let store: Arc<dyn Store> = Arc::new(sled_store::SledStore::open(at, cache)?);
                Ok(state::DamageWatch::wrap(store, state.clone()))
            }
        };
        let store = recover::unpanicked(&path, || open(&path)).map_err(|e| match e {
            JournalError::Store(StoreError::Locked(path)) => JournalError::Locked(path),
            other => other,
        })?;
        Self::build(store, path, settings.max_bytes, Some(Box::new(open)), state)
    }

    /// The journal kept in `store` (`path` names it in messages), with no state
    /// file and no reopening: for tests.
    #[cfg(test)]
    pub(crate) fn with_store(
        store: Box<dyn Store>,
        path: PathBuf,
        max_bytes: u64,
    ) -> Result<Self, JournalError> {
        Self::build(Arc::from(store), path, max_bytes, None, state::shared(None))
    }

    /// Migrated to this build's schema, durable on return.
    fn build(
        store: Arc<dyn Store>,
        path: PathBuf,
        max_bytes: u64,
        reopen: Option<Reopen>,
        state: state::Shared,
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
        let last = durable_head(store.as_ref())?;
        let (head, _) = watch::channel(last);
        let journal = Journal {
            inner: Arc::new(Inner {
                path,
                store: RwLock::new(store),
                reopen,
                failed: AtomicBool::new(false),
                state,
                unwritable: Mutex::new(None),
                max_bytes,
                writer: Mutex::new(last + 1),
                head,
                syncs: SyncStats::default(),
                compacted_to: AtomicU64::new(0),
                compacting: AtomicBool::new(false),
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

    fn store(&self) -> Arc<dyn Store> {
        self.inner
            .store
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Applies a batch; a failure marks the store for reopening.
    fn apply(&self, batch: Batch) -> Result<(), JournalError> {
        match self.store().apply(batch) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.failing(e)),
        }
    }

    /// Takes note of a failed write: the store is reopened before the next one,
    /// and the first error of the streak is kept ([`Journal::write_failure`]).
    fn failing(&self, e: StoreError) -> JournalError {
        if matches!(e, StoreError::Io { .. }) {
            self.inner.failed.store(true, Ordering::Release);
        }
        let e = JournalError::from(e);
        self.write_failed(&e);
        e
    }

    fn write_failed(&self, e: &JournalError) {
        let mut first = self.unwritable();
        if first.is_none() {
            tracing::error!(error = %e, path = %self.path().display(), "the journal cannot write: nothing new is acknowledged until it can (the watch holds its position and retries)");
            *first = Some(e.to_string());
        }
    }

    fn wrote(&self) {
        let mut first = self.unwritable();
        if let Some(was) = first.take() {
            tracing::info!(after = %was, "the journal writes again");
        }
    }

    fn unwritable(&self) -> MutexGuard<'_, Option<String>> {
        self.inner
            .unwritable
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The first error of the writes failing now (a full, read-only or failing
    /// disk); `None` while the journal writes.
    pub fn write_failure(&self) -> Option<String> {
        self.unwritable().clone()
    }

    /// Before a write: if an earlier write failed, opens the store again (sled
    /// keeps a failed write's error for every later call) and takes up the head it
    /// finds. The caller holds the writer lock.
    fn ready(&self, next_seq: &mut u64) -> Result<(), JournalError> {
        if !self.inner.failed.load(Ordering::Acquire) {
            return Ok(());
        }
        let Some(reopen) = &self.inner.reopen else {
            self.inner.failed.store(false, Ordering::Release);
            return Ok(());
        };
        // The old store goes first: it holds the directory's lock. Readers meet
        // `Unavailable` (retryable) until the new one is in.
        self.swap_store(Arc::new(store::Unavailable));
        if let Some(data_dir) = self.path().parent() {
            compact::finish_interrupted(data_dir)?;
        }
        let store = reopen(self.path()).map_err(|e| {
            // A reader may still hold the old store (and its lock) for a while.
            let e = match e {
                StoreError::Locked(path) => StoreError::Io {
                    what: "reopening",
                    path,
                    source: std::io::Error::new(
                        std::io::ErrorKind::WouldBlock,
                        "the old store is still held by a reader",
                    ),
                },
                other => other,
            };
            self.failing(e)
        })?;
        let last = durable_head(store.as_ref())?;
        self.swap_store(store);
        *next_seq = last + 1;
        self.inner.head.send_replace(last);
        self.inner.failed.store(false, Ordering::Release);
        tracing::info!(head = last, "journal reopened after a failed write");
        Ok(())
    }

    /// Puts `store` in place of the current one (the old one is dropped here
    /// unless a reader still holds it). The caller holds the writer lock.
    fn swap_store(&self, store: Arc<dyn Store>) {
        let old = std::mem::replace(
            &mut *self
                .inner
                .store
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
            store,
        );
        drop(old);
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
        self.commit(false, |_| {
            let key = shipped_key(sink);
            let old = self.meta_u64(key.as_bytes())?;
            let mut batch = Batch::default();
            batch.insert(Tree::Meta, key.as_bytes(), old.max(seq).to_be_bytes());
            for (seq, letter) in dead_letters {
                batch.insert(Tree::Dead, seq.to_be_bytes(), letter.encode());
            }
            self.apply(batch)?;
            self.prune_tokens(seq)
        })
    }

    /// One durable write. `write` runs under the writer lock (given the next
    /// sequence number); then the store it wrote to is synced (the same store,
    /// even if a failure elsewhere has it reopened meanwhile: a sync on a fresh
    /// store would prove nothing); then the state file records what the write
    /// left, as read under the lock, so it never claims more than the sync made
    /// durable. `force_state`: record even if one was recorded under 200 ms ago.
    pub(super) fn commit<T>(
        &self,
        force_state: bool,
        write: impl FnOnce(&mut u64) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        let durable = || {
            let (value, facts, store) = {
                let mut next_seq = self.writer();
                self.ready(&mut next_seq)?;
                let value = write(&mut next_seq)?;
                let facts = self.facts_due(force_state)?;
                (value, facts, self.store())
            };
            self.sync_store(&store)?;
            self.record_facts(facts)?;
            Ok(value)
        };
        durable().map_err(|e| self.unwritable_on_the_way(e))
    }

    /// An error met on the way to a durable write counts as the write failing, not
    /// only one from the write itself: once sled has failed a write in the
    /// background, its reads return that error too, and the first of the streak
    /// may come from a read under the writer lock.
    fn unwritable_on_the_way(&self, e: JournalError) -> JournalError {
        if e.is_unwritable() {
            if matches!(e, JournalError::Store(StoreError::Io { .. })) {
                self.inner.failed.store(true, Ordering::Release);
            }
            self.write_failed(&e);
        }
        e
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

    fn entries_after(&self, after: u64) -> store::Entries {
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

    /// The highest sequence number the store holds or has held, read from it.
    fn durable_head(&self) -> Result<u64, JournalError> {
        Ok(durable_head(self.store().as_ref())?)
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
    /// key in `meta` and syncs. While a compaction holds the writer, that is
    /// progress enough: the probe returns at once.
    pub fn probe(&self) -> Result<(), JournalError> {
        if self.inner.compacting.load(Ordering::Acquire) {
            return Ok(());
        }
        let now = jiff::Timestamp::now().as_millisecond();
        self.commit(false, |_| {
            let mut batch = Batch::default();
            batch.insert(Tree::Meta, META_PROBE, now.to_be_bytes());
            self.apply(batch)
        })
    }

    /// Makes everything durable and records it in the state file: for a clean
    /// stop, so that the next open checks against the very end.
    pub fn checkpoint(&self) -> Result<(), JournalError> {
        self.commit(true, |_| Ok(()))
    }

    /// Makes everything written so far durable, down to the device. Its duration
    /// is kept ([`Journal::sync_stats`]).
    pub fn sync(&self) -> Result<(), JournalError> {
        self.sync_store(&self.store())
    }

    fn sync_store(&self, store: &Arc<dyn Store>) -> Result<(), JournalError> {
        let started = Instant::now();
        let result = store.sync();
        self.inner.syncs.record(started.elapsed());
        match result {
            Ok(()) => {
                self.wrote();
                Ok(())
            }
            Err(e) => Err(self.failing(e)),
        }
    }

    /// How long syncs take: the last, and how many were slow.
    pub fn sync_stats(&self) -> &SyncStats {
        &self.inner.syncs
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

/// The highest sequence number the store has journaled: its last record, or the
/// recorded head if that is higher (the records after it were removed).
/// A cursor never passes the head, so the cursors count too: a journal from before
/// the head was kept, whose records retention has all removed.
fn durable_head(store: &dyn Store) -> Result<u64, StoreError> {
    let last = store.last(Tree::Events)?.map_or(0, |(k, _)| seq_of(&k));
    let recorded = store.get(Tree::Meta, META_HEAD)?.map_or(0, |v| seq_of(&v));
    let prefix = META_SHIPPED_PREFIX.as_bytes();
    let mut cursors = 0;
    for entry in store.range(Tree::Meta, Bound::Included(prefix), Bound::Unbounded) {
        let (key, value) = entry?;
        if !key.starts_with(prefix) {
            break;
        }
        cursors = cursors.max(seq_of(&value));
    }
    Ok(last.max(recorded).max(cursors))
}

fn seq_of(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(bytes.try_into().unwrap_or([0; 8]))
}

#[cfg(test)]
mod tests;
