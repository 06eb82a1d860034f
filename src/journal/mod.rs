//! The journal: every event evrelay has seen, with the watch's resume token, on disk
//! before anything is forwarded.
//!
//! # Trees (sled)
//!
//! | tree     | key                          | value                                  |
//! |----------|------------------------------|----------------------------------------|
//! | `events` | sequence number, u64 BE      | a [`Record`] (format in `record.rs`)   |
//! | `seen_buckets` | top 16 bits of CRC32C(uid), BE | each uid's last journaled count and time (`SeenBucket`) |
//! | `meta`   | fixed names (see `store.rs`) | schema version, resume token, cursors, byte and drop counters |
//! | `dead`   | sequence number, u64 BE      | a [`DeadLetter`]: why the intake refused that record for good |
//! | `tokens` | sequence number, u64 BE      | the [`ResumeToken`] written with the write that ended at that record |
//!
//! `meta` also holds the leadership [`Term`] (epoch, holder) the journal was last
//! written under.
//!
//! # Invariants
//!
//! 1. A batch of records and the resume token that follows them are written in one
//!    sled transaction, then flushed and `fdatasync`ed before [`Journal::append`]
//!    returns. The token therefore never points past a record that is not durable.
//! 2. Sequence numbers only grow; key order is arrival order.
//! 3. A sink's shipped-through cursor moves only forward, and only after the intake
//!    acknowledged every record up to it; it is durable before the shipper sends the
//!    next batch.
//! 4. Bounded: record bytes are counted in `meta` in the same transactions that add or
//!    remove records. Past `max_bytes` the oldest shipped records go first, then the
//!    oldest pending ones; every pending drop is counted and leaves a gap marker.
//!    Appends never wait for the shipper, so the watch is never held up.
//! 5. The dedup index (`seen_buckets`) is updated in the same transaction as the records, so a record
//!    is journaled at most once per occurrence however often the API server sends it.
//! 6. A token filed in `tokens` under sequence `s` re-delivers, when watched from,
//!    every event journaled after `s`. The newest at or below a sink's cursor is the
//!    shipped-through token that the ConfigMap mirror publishes (`store/term.rs`).

mod record;
mod store;

pub(crate) use record::Seen;
pub use record::{
    DeadLetter, FORMAT_VERSION, Header, Record, RecordError, RecordKind, ResumeToken, Term,
};
pub use store::{
    AppendOutcome, CapOutcome, Counters, Journal, JournalConfig, JournalError, SCHEMA_VERSION,
    StoredRecord, TermStart,
};
