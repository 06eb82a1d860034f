//! The sled store behind [`Journal`]: trees, transactions, group commit, fsync.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use tokio::sync::watch;

use super::record::{DeadLetter, Record, RecordError, RecordKind, ResumeToken, Seen, SeenBucket};
use crate::delivery;

/// The journal schema this build writes. Older journals are migrated at open
/// (see `migrations/`); newer ones are refused.
pub const SCHEMA_VERSION: u32 = migrate::latest();

const TREE_EVENTS: &str = "events";
/// The dedup index by uid bucket (schema 3; schema 2 had a tree `seen` keyed by uid).
const TREE_SEEN: &str = "seen_buckets";
const TREE_META: &str = "meta";
const TREE_DEAD: &str = "dead";
const TREE_TOKENS: &str = "tokens";

const META_SCHEMA: &[u8] = b"schema_version";
const META_TOKEN: &[u8] = b"resume_token";
const META_SHIPPED_PREFIX: &str = "shipped_through/";
/// Bytes of all records in `events`, kept in the transactions that change them.
const META_RECORD_BYTES: &[u8] = b"record_bytes";
/// Records in `events`, kept in the transactions that change them (sled's own
/// `len` walks the whole tree).
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
/// The leadership [`Term`] the journal was last written under.
const META_TERM: &[u8] = b"term";

/// The sled directory inside the data dir; sled keeps its log in `db` under it.
const SLED_DIR: &str = "journal";
const SLED_DB_FILE: &str = "db";
/// sled writes values over a quarter of a segment (512 KiB by default) to files of
/// their own under `blobs/`, and never fsyncs them. Records this large make the
/// append fsync those files too. Kept below sled's threshold to be safe.
const SLED_BLOB_THRESHOLD: usize = 64 * 1024;

/// Journal settings (`journal:` in the config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// Where the journal lives. In production a PVC mounted here, so a restarted pod
    /// resumes without a LIST and without resending.
    pub data_dir: PathBuf,
    /// Memory sled may use for its page cache. Set explicitly: sled's default is
    /// 1 GiB and it does not see cgroup limits.
    pub cache_capacity_bytes: u64,
    /// The most record bytes the journal holds. Past it the oldest shipped records
    /// are removed, then the oldest pending ones (each counted, and marked by a gap
    /// record). sled needs up to about 3x this on disk: size the PVC for that.
    pub max_bytes: u64,
    /// How long the dedup index remembers an event. Must exceed the API server's
    /// `--event-ttl` (1 h by default), so a relist never resends a forgotten event.
    pub seen_ttl_seconds: u64,
    /// How long shipped records are kept for `replay` (0: until the byte cap
    /// needs the room). Pending records are never removed by age.
    pub retention_seconds: u64,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            data_dir: PathBuf::from("/var/lib/evrelay"),
            cache_capacity_bytes: 16 * 1024 * 1024,
            max_bytes: 512 * 1024 * 1024,
            seen_ttl_seconds: 2 * 3600,
            retention_seconds: 3 * 24 * 3600,
        }
    }
}

/// Why the journal could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// sled failed (I/O, or damage it detected).
    #[error("journal store at {path}: {source}")]
    Store {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    /// Flushing to the device failed: what was written may not be durable.
    #[error("journal fsync at {path}: {source}")]
    Sync {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Another process has the journal open (sled holds an exclusive lock).
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
}

/// A record read back with its sequence number. The record is an error where its
/// bytes are damaged: one bad record never hides the ones after it.
#[derive(Debug)]
pub struct StoredRecord {
    pub seq: u64,
    pub record: Result<Record, RecordError>,
}

/// What one [`Journal::append`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AppendOutcome {
    /// Records written (new occurrences and gap markers).
    pub journaled: usize,
    /// Events skipped because the same occurrence is already journaled.
    pub duplicates: usize,
    /// The highest sequence number in the journal after the append (0: empty).
    pub head: u64,
    /// What the byte cap removed to make room.
    pub cap: CapOutcome,
}

/// What one enforcement of the byte cap removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CapOutcome {
    /// Shipped records removed (no loss).
    pub evicted_shipped: u64,
    /// Pending records dropped (lost; a gap marker records it).
    pub dropped_pending: u64,
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
///
/// Its methods block on disk I/O: call them from `spawn_blocking` in async code.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    db: sled::Db,
    events: sled::Tree,
    seen: sled::Tree,
    meta: sled::Tree,
    dead: sled::Tree,
    /// Resume tokens by the last sequence number they cover (see `term.rs`).
    tokens: sled::Tree,
    max_bytes: u64,
    /// sled's log file, for the fdatasync that sled 0.34 does not do itself.
    db_file: File,
    /// The next sequence number; held for the whole append so appends are serial.
    next_seq: Mutex<u64>,
    /// The highest journaled sequence number, for the shipper to wait on.
    head: watch::Sender<u64>,
    /// Blob files already fsynced (see [`SLED_BLOB_THRESHOLD`]).
    synced_blobs: Mutex<std::collections::HashSet<std::ffi::OsString>>,
}

impl Journal {
    /// Opens (creating if needed) the journal under `config.data_dir`.
    pub fn open(config: &JournalConfig) -> Result<Self, JournalError> {
        let path = config.data_dir.join(SLED_DIR);
        let store_err = |source| JournalError::Store {
            path: path.clone(),
            source,
        };
        let db = open_sled(config, &path)?;
        let events = db.open_tree(TREE_EVENTS).map_err(store_err)?;
        let seen = db.open_tree(TREE_SEEN).map_err(store_err)?;
        let meta = db.open_tree(TREE_META).map_err(store_err)?;
        let dead = db.open_tree(TREE_DEAD).map_err(store_err)?;
        let tokens = db.open_tree(TREE_TOKENS).map_err(store_err)?;
        let db_file = File::open(path.join(SLED_DB_FILE)).map_err(|source| JournalError::Sync {
            path: path.clone(),
            source,
        })?;

        match meta.get(META_SCHEMA).map_err(store_err)? {
            None => {
                meta.insert(META_SCHEMA, &SCHEMA_VERSION.to_be_bytes())
                    .map_err(store_err)?;
            }
            Some(v) => {
                let found = u32::from_be_bytes(v.as_ref().try_into().unwrap_or([0xff; 4]));
                if found > SCHEMA_VERSION {
                    return Err(JournalError::SchemaTooNew { path, found });
                }
                let trees = migrate::Trees {
                    db: &db,
                    events: &events,
                    seen: &seen,
                    meta: &meta,
                    tokens: &tokens,
                };
                if !migrate::run(&trees, found).map_err(store_err)?.is_empty() {
                    db.flush().map_err(store_err)?;
                }
            }
        }

        let last = events
            .last()
            .map_err(store_err)?
            .map(|(k, _)| seq_of(&k))
            .unwrap_or(0);
        let (head, _) = watch::channel(last);
        let journal = Journal {
            inner: Arc::new(Inner {
                path,
                db,
                events,
                seen,
                meta,
                dead,
                tokens,
                max_bytes: config.max_bytes,
                db_file,
                next_seq: Mutex::new(last + 1),
                head,
                synced_blobs: Mutex::default(),
            }),
        };
        journal.sync()?;
        Ok(journal)
    }

    /// Where the journal lives on disk.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Journals a batch and (optionally) the resume token that follows it, in one
    /// transaction, durable on return. Events already journaled as the same occurrence
    /// are skipped (see [`delivery::is_new_occurrence`]). If the batch takes the
    /// journal past its byte cap, the oldest records make room (see `cap.rs`).
    pub fn append(
        &self,
        records: &[Record],
        token: Option<&ResumeToken>,
    ) -> Result<AppendOutcome, JournalError> {
        let mut next_seq = self.inner.next_seq.lock().expect("journal lock poisoned");
        let mut outcome = self.append_locked(&mut next_seq, records, token)?;
        outcome.cap = self.enforce_cap(&mut next_seq)?;
        if outcome.cap != CapOutcome::default() {
            outcome.head = *next_seq - 1;
        }
        drop(next_seq);
        self.sync()?;
        if records.iter().any(|r| r.raw.len() >= SLED_BLOB_THRESHOLD) {
            self.sync_blobs()?;
        }
        if outcome.journaled > 0 {
            self.inner.head.send_replace(outcome.head);
        }
        Ok(outcome)
    }

    /// The transaction of [`Journal::append`]; the caller holds the sequence lock and syncs.
    fn append_locked(
        &self,
        next_seq: &mut u64,
        records: &[Record],
        token: Option<&ResumeToken>,
    ) -> Result<AppendOutcome, JournalError> {
        let inner = &*self.inner;
        let result = (&inner.events, &inner.seen, &inner.meta, &inner.tokens).transaction(
            |(events, seen, meta, tokens)| {
                let mut seq = *next_seq;
                let mut outcome = AppendOutcome::default();
                let mut added = 0u64;
                // The buckets this write touches, each read once and written once.
                let mut buckets = std::collections::HashMap::<[u8; 2], SeenBucket>::new();
                for record in records {
                    let h = &record.header;
                    if h.kind == RecordKind::Event && !h.uid.is_empty() {
                        let key = SeenBucket::key(&h.uid);
                        let bucket = match buckets.entry(key) {
                            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                            std::collections::hash_map::Entry::Vacant(e) => {
                                let stored = seen.get(key)?;
                                e.insert(stored.map(|v| SeenBucket::decode(&v)).unwrap_or_default())
                            }
                        };
                        if !delivery::is_new_occurrence(bucket.get(&h.uid), h) {
                            outcome.duplicates += 1;
                            continue;
                        }
                        let now = Seen {
                            count: h.count,
                            last_timestamp_ms: h.last_timestamp_ms,
                            journaled_at_ms: h.received_at_ms,
                        };
                        bucket.set(&h.uid, now);
                    }
                    let bytes = record.encode();
                    added += bytes.len() as u64;
                    events.insert(&seq.to_be_bytes(), bytes)?;
                    seq += 1;
                    outcome.journaled += 1;
                }
                for (key, bucket) in &buckets {
                    seen.insert(key, bucket.encode())?;
                }
                if added > 0 {
                    let total = meta
                        .get(META_RECORD_BYTES)?
                        .map(|v| seq_of(&v))
                        .unwrap_or(0);
                    meta.insert(META_RECORD_BYTES, &(total + added).to_be_bytes())?;
                    let count = meta
                        .get(META_RECORD_COUNT)?
                        .map(|v| seq_of(&v))
                        .unwrap_or(0);
                    let new = count + outcome.journaled as u64;
                    meta.insert(META_RECORD_COUNT, &new.to_be_bytes())?;
                }
                if let Some(token) = token {
                    meta.insert(META_TOKEN, token.encode())?;
                    tokens.insert(&(seq - 1).to_be_bytes(), token.encode())?;
                }
                outcome.head = seq - 1;
                Ok::<_, ConflictableTransactionError<()>>(outcome)
            },
        );
        let outcome = result.map_err(|e| self.tx_err(e))?;
        *next_seq = outcome.head + 1;
        Ok(outcome)
    }

    /// Records a resume token that carries no events (a bookmark). Not synced on its
    /// own: losing it only means resuming from an earlier, still valid token.
    pub fn set_token(&self, token: &ResumeToken) -> Result<(), JournalError> {
        let next_seq = self.inner.next_seq.lock().expect("journal lock poisoned");
        let head = *next_seq - 1;
        let inner = &*self.inner;
        (&inner.meta, &inner.tokens)
            .transaction(|(meta, tokens)| {
                meta.insert(META_TOKEN, token.encode())?;
                tokens.insert(&head.to_be_bytes(), token.encode())?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e| self.tx_err(e))?;
        Ok(())
    }

    /// The token the next watch resumes from; `None` on a new journal.
    pub fn resume_token(&self) -> Result<Option<ResumeToken>, JournalError> {
        self.decode_from(
            &self.inner.meta,
            META_TOKEN,
            "resume_token",
            ResumeToken::decode,
        )
    }

    /// The value under `key` in `tree`, decoded; `None` when absent. `name` says
    /// which value in an error.
    fn decode_from<T>(
        &self,
        tree: &sled::Tree,
        key: &[u8],
        name: &str,
        decode: impl Fn(&[u8]) -> Result<T, RecordError>,
    ) -> Result<Option<T>, JournalError> {
        let Some(bytes) = tree.get(key).map_err(|e| self.store_err(e))? else {
            return Ok(None);
        };
        decode(&bytes)
            .map(Some)
            .map_err(|source| JournalError::Meta {
                key: name.to_owned(),
                source,
            })
    }

    /// The highest sequence number the sink has delivered (0: none).
    pub fn shipped_through(&self, sink: &str) -> Result<u64, JournalError> {
        let key = format!("{META_SHIPPED_PREFIX}{sink}");
        Ok(self
            .inner
            .meta
            .get(key.as_bytes())
            .map_err(|e| self.store_err(e))?
            .map(|v| seq_of(&v))
            .unwrap_or(0))
    }

    /// Moves the sink's cursor forward to `seq` (never backward) and records the
    /// batch's dead letters, in one durable write.
    pub fn mark_shipped(
        &self,
        sink: &str,
        seq: u64,
        dead_letters: &[(u64, DeadLetter)],
    ) -> Result<(), JournalError> {
        let key = format!("{META_SHIPPED_PREFIX}{sink}");
        let inner = &*self.inner;
        (&inner.meta, &inner.dead)
            .transaction(|(meta, dead)| {
                let old = meta.get(key.as_bytes())?.map(|v| seq_of(&v)).unwrap_or(0);
                meta.insert(key.as_bytes(), &old.max(seq).to_be_bytes())?;
                for (seq, letter) in dead_letters {
                    dead.insert(&seq.to_be_bytes(), letter.encode())?;
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e| self.tx_err(e))?;
        self.prune_tokens(seq)?;
        self.sync()
    }

    /// Why the record at `seq` was dead-lettered, if it was.
    pub fn dead_letter(&self, seq: u64) -> Result<Option<DeadLetter>, JournalError> {
        let name = format!("dead/{seq}");
        self.decode_from(
            &self.inner.dead,
            &seq.to_be_bytes(),
            &name,
            DeadLetter::decode,
        )
    }

    /// Forgets, from the dedup index, occurrences journaled before `before_ms`.
    /// Returns how many were forgotten. Keeps the index from growing forever; the
    /// horizon must exceed the API server's event TTL (`--event-ttl`, 1 h by
    /// default) so that a relist never returns an event the index forgot.
    pub fn forget_seen(&self, before_ms: i64) -> Result<usize, JournalError> {
        // A bucket is read and rewritten under the append lock, so an occurrence
        // journaled meanwhile is never overwritten; in chunks, so appends wait for
        // one chunk at most.
        const CHUNK: u32 = 4096;
        let mut forgotten = 0;
        for first in (0..1u32 << 16).step_by(CHUNK as usize) {
            let range = (first as u16).to_be_bytes()..=((first + CHUNK - 1) as u16).to_be_bytes();
            let _appends = self.inner.next_seq.lock().expect("journal lock poisoned");
            let mut batch = sled::Batch::default();
            for item in self.inner.seen.range(range) {
                let (key, value) = item.map_err(|e| self.store_err(e))?;
                let mut bucket = SeenBucket::decode(&value);
                let gone = bucket.forget_before(before_ms);
                if bucket.is_empty() {
                    batch.remove(key);
                } else if gone > 0 {
                    batch.insert(key, bucket.encode());
                }
                forgotten += gone;
            }
            self.inner
                .seen
                .apply_batch(batch)
                .map_err(|e| self.store_err(e))?;
        }
        Ok(forgotten)
    }

    /// Whether the dedup index knows no event at all (a new or emptied journal).
    pub fn seen_is_empty(&self) -> bool {
        self.inner.seen.is_empty()
    }

    /// The number of dead-lettered records.
    pub fn dead_count(&self) -> usize {
        self.inner.dead.len()
    }

    /// The byte and drop counters.
    pub fn counters(&self) -> Result<Counters, JournalError> {
        let get = |key: &[u8]| -> Result<u64, JournalError> {
            Ok(self
                .inner
                .meta
                .get(key)
                .map_err(|e| self.store_err(e))?
                .map(|v| seq_of(&v))
                .unwrap_or(0))
        };
        Ok(Counters {
            record_bytes: get(META_RECORD_BYTES)?,
            dropped_pending: get(META_DROPPED_PENDING)?,
            evicted_shipped: get(META_EVICTED_SHIPPED)?,
            dropped_stale: get(META_DROPPED_STALE)?,
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
        for item in self.inner.events.range((after + 1).to_be_bytes()..) {
            let (k, v) = item.map_err(|e| self.store_err(e))?;
            if out.len() >= max_records || (!out.is_empty() && bytes + v.len() > max_bytes) {
                break;
            }
            bytes += v.len();
            out.push(StoredRecord {
                seq: seq_of(&k),
                record: Record::decode(&v),
            });
        }
        Ok(out)
    }

    /// Every record, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = Result<StoredRecord, JournalError>> + '_ {
        self.inner.events.iter().map(|item| {
            let (k, v) = item.map_err(|e| self.store_err(e))?;
            Ok(StoredRecord {
                seq: seq_of(&k),
                record: Record::decode(&v),
            })
        })
    }

    /// Every record after `after`, oldest first.
    pub fn iter_after(
        &self,
        after: u64,
    ) -> impl Iterator<Item = Result<StoredRecord, JournalError>> + '_ {
        self.inner
            .events
            .range((after + 1).to_be_bytes()..)
            .map(|item| {
                let (k, v) = item.map_err(|e| self.store_err(e))?;
                Ok(StoredRecord {
                    seq: seq_of(&k),
                    record: Record::decode(&v),
                })
            })
    }

    /// The schema version recorded in the journal.
    pub fn schema_version(&self) -> Result<u32, JournalError> {
        Ok(self
            .inner
            .meta
            .get(META_SCHEMA)
            .map_err(|e| self.store_err(e))?
            .map(|v| u32::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 4])))
            .unwrap_or(0))
    }

    /// The number of records (events and gap markers).
    pub fn len(&self) -> usize {
        self.inner
            .meta
            .get(META_RECORD_COUNT)
            .ok()
            .flatten()
            .map_or(0, |v| seq_of(&v) as usize)
    }

    pub fn is_empty(&self) -> bool {
        self.inner.events.is_empty()
    }

    /// Bytes the journal occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64, JournalError> {
        self.inner.db.size_on_disk().map_err(|e| self.store_err(e))
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
        self.inner
            .meta
            .insert(META_PROBE, &now.to_be_bytes())
            .map_err(|e| self.store_err(e))?;
        self.sync()
    }

    /// Makes everything written so far durable: sled's flush writes its log with
    /// `sync_file_range`, which does not flush the device cache; fdatasync does.
    pub fn sync(&self) -> Result<(), JournalError> {
        self.inner.db.flush().map_err(|e| self.store_err(e))?;
        self.inner
            .db_file
            .sync_data()
            .map_err(|source| JournalError::Sync {
                path: self.inner.path.clone(),
                source,
            })
    }

    /// fsyncs the blob files sled wrote since the last call, and their directory.
    fn sync_blobs(&self) -> Result<(), JournalError> {
        let dir = self.inner.path.join("blobs");
        let sync_err = |source| JournalError::Sync {
            path: dir.clone(),
            source,
        };
        let mut synced = self.inner.synced_blobs.lock().expect("blob set poisoned");
        let mut present = std::collections::HashSet::new();
        for entry in std::fs::read_dir(&dir).map_err(sync_err)? {
            let name = entry.map_err(sync_err)?.file_name();
            if !synced.contains(&name) {
                File::open(dir.join(&name))
                    .and_then(|f| f.sync_data())
                    .map_err(sync_err)?;
            }
            present.insert(name);
        }
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(sync_err)?;
        *synced = present;
        Ok(())
    }

    fn tx_err(&self, e: TransactionError<()>) -> JournalError {
        match e {
            TransactionError::Storage(source) => self.store_err(source),
            TransactionError::Abort(()) => unreachable!("evrelay's transactions never abort"),
        }
    }

    fn store_err(&self, source: sled::Error) -> JournalError {
        JournalError::Store {
            path: self.inner.path.clone(),
            source,
        }
    }
}

/// How long `open` waits for sled's lock. A journal dropped in this process
/// releases it only once sled's background threads finish, a few milliseconds
/// later; another process holding it is reported after this wait.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

fn open_sled(config: &JournalConfig, path: &Path) -> Result<sled::Db, JournalError> {
    let started = std::time::Instant::now();
    loop {
        let result = sled::Config::new()
            .path(path)
            .cache_capacity(config.cache_capacity_bytes)
            .open();
        match result {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(io))
                if io.kind() == std::io::ErrorKind::WouldBlock
                    || io.to_string().contains("could not acquire lock") =>
            {
                if started.elapsed() >= LOCK_WAIT {
                    return Err(JournalError::Locked(path.to_path_buf()));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(source) => {
                return Err(JournalError::Store {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    }
}

fn seq_of(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(bytes.try_into().unwrap_or([0; 8]))
}

mod cap;
mod migrate;
mod term;
pub use term::TermStart;
#[cfg(test)]
mod tests;
