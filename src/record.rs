//! The journal's on-disk format: one record, and the values kept beside the
//! records (resume token, term, dead letters, the dedup index). The trees they live
//! in are listed in `src/journal/mod.rs`; this file is the byte-level format, and
//! nothing in it knows where the bytes are stored.
//!
//! A record is the value stored under its sequence number in the `events` tree:
//!
//! ```text
//! +---------+--------------------+-------------------+---------------------------+
//! | version | header (postcard)  | CRC32C, u32 LE    | raw event JSON, to the end |
//! | 1 byte  | self-delimiting    | over all the rest |                           |
//! +---------+--------------------+-------------------+---------------------------+
//! ```
//!
//! - `version` is [`FORMAT_VERSION`] (2) for records this build writes; version 1
//!   records (before the series fields) are still read. Any other value is refused
//!   with [`RecordError::UnknownVersion`], never guessed at. A new version comes
//!   with a schema migration under `migrations/`, so that an older build refuses
//!   the journal instead of misreading it.
//! - The header is [`Header`] in postcard's specified wire format. Its fields are
//!   appended to, never reordered; version 1 ends at `received_at_ms`.
//! - The checksum covers the version byte, the header and the raw bytes, so a torn or
//!   bit-flipped record is detected wherever the damage is.
//! - The raw bytes are the event exactly as the API server sent it (k8s-openapi types
//!   do not survive postcard), or, for a gap marker, a small JSON object describing it.

use serde::{Deserialize, Serialize};

/// The format version written by this build.
pub const FORMAT_VERSION: u8 = 2;
/// The format before the series fields, still read.
const FORMAT_V1: u8 = 1;

/// The checksum is 4 bytes, little-endian.
const CRC_LEN: usize = 4;

/// What a record stands for. Stored as postcard's varint discriminant: append only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordKind {
    /// A Kubernetes event (one occurrence: a new uid, or a count that went up).
    Event,
    /// A place where events may have been lost (a relist after an expired token,
    /// a drop under the disk cap). The raw part says why.
    Gap,
}

/// The flat, fixed part of a record: what `dump`, dedup and filters need without
/// parsing the event's JSON. Do not reorder fields; add new ones at the end only
/// together with a format version bump.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub kind: RecordKind,
    /// The event's `metadata.uid`.
    pub uid: String,
    /// The event's `metadata.resourceVersion`.
    pub resource_version: String,
    /// The event's `metadata.namespace` (empty for cluster-scoped objects' events
    /// recorded in `default`, as the API server files them).
    pub namespace: String,
    /// `involvedObject.kind`.
    pub involved_kind: String,
    /// `involvedObject.name`.
    pub involved_name: String,
    pub reason: String,
    /// `type`: Normal, Warning, or whatever the reporter wrote.
    pub event_type: String,
    /// `count`, 0 when the event has none (events recorded through
    /// `events.k8s.io/v1`, which count in `series` instead).
    pub count: u32,
    /// `firstTimestamp`, Unix milliseconds.
    pub first_timestamp_ms: Option<i64>,
    /// The last time it occurred, Unix milliseconds: the later of `lastTimestamp`
    /// and `series.lastObservedTime`, else `eventTime`, else `firstTimestamp`,
    /// else the object's creation.
    pub last_timestamp_ms: Option<i64>,
    /// When evrelay read it from the API server, Unix milliseconds.
    pub received_at_ms: i64,
    // Version 2 from here.
    /// `series.count`, 0 when the event has no series.
    pub series_count: u32,
    /// `series.lastObservedTime`, Unix milliseconds.
    pub series_last_observed_ms: Option<i64>,
}

impl Header {
    /// How many times the event occurred, whichever recorder counted: `count`
    /// (core/v1) or `series.count` (events.k8s.io/v1).
    pub fn occurrences(&self) -> u32 {
        self.count.max(self.series_count)
    }
}

/// A version-1 header: [`Header`] without the series fields.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct HeaderV1 {
    kind: RecordKind,
    uid: String,
    resource_version: String,
    namespace: String,
    involved_kind: String,
    involved_name: String,
    reason: String,
    event_type: String,
    count: u32,
    first_timestamp_ms: Option<i64>,
    last_timestamp_ms: Option<i64>,
    received_at_ms: i64,
}

impl From<HeaderV1> for Header {
    fn from(h: HeaderV1) -> Header {
        Header {
            kind: h.kind,
            uid: h.uid,
            resource_version: h.resource_version,
            namespace: h.namespace,
            involved_kind: h.involved_kind,
            involved_name: h.involved_name,
            reason: h.reason,
            event_type: h.event_type,
            count: h.count,
            first_timestamp_ms: h.first_timestamp_ms,
            last_timestamp_ms: h.last_timestamp_ms,
            received_at_ms: h.received_at_ms,
            series_count: 0,
            series_last_observed_ms: None,
        }
    }
}

impl Header {
    /// A header with every field empty but the kind and the receive time.
    pub fn blank(kind: RecordKind, received_at_ms: i64) -> Self {
        Header {
            kind,
            uid: String::new(),
            resource_version: String::new(),
            namespace: String::new(),
            involved_kind: String::new(),
            involved_name: String::new(),
            reason: String::new(),
            event_type: String::new(),
            count: 0,
            first_timestamp_ms: None,
            last_timestamp_ms: None,
            received_at_ms,
            series_count: 0,
            series_last_observed_ms: None,
        }
    }
}

/// Why a gap marker was written: where events may be missing, or were given up.
/// Its name is the gap record's `reason` (and `dump`'s); [`Gap::label`] is the
/// metrics' label for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Gap {
    /// The resume token expired (410 Gone) and a relist followed: events that
    /// expired in between may be missing.
    ResumeTokenExpired,
    /// The byte cap dropped pending events: a loss, counted.
    JournalFull,
    /// A takeover gave up a stale journal's pending records; the new term
    /// re-collects them from the mirrored token (not a loss).
    StaleBacklogDropped,
    /// The journal was found damaged and set aside; a fresh one resumed from the
    /// last shipped-through token known. Events between it and the damage may be
    /// missing or sent twice.
    JournalDamaged,
}

impl Gap {
    /// The `reason` written in the gap record.
    pub fn name(self) -> &'static str {
        match self {
            Gap::ResumeTokenExpired => "ResumeTokenExpired",
            Gap::JournalFull => "JournalFull",
            Gap::StaleBacklogDropped => "StaleBacklogDropped",
            Gap::JournalDamaged => "JournalDamaged",
        }
    }

    /// The metrics' label value.
    pub fn label(self) -> &'static str {
        match self {
            Gap::ResumeTokenExpired => "resume_token_expired",
            Gap::JournalFull => "journal_full",
            Gap::StaleBacklogDropped => "stale_backlog",
            Gap::JournalDamaged => "journal_damaged",
        }
    }
}

impl Record {
    /// A gap marker for `cause`; `detail` (JSON) says what range it covers, and
    /// gets the cause's name as `reason`.
    pub fn gap(cause: Gap, mut detail: serde_json::Value) -> Self {
        if let Some(map) = detail.as_object_mut() {
            map.insert("reason".into(), cause.name().into());
        }
        let now = jiff::Timestamp::now().as_millisecond();
        let mut header = Header::blank(RecordKind::Gap, now);
        header.reason = cause.name().to_owned();
        header.last_timestamp_ms = Some(now);
        Record {
            header,
            raw: serde_json::to_vec(&detail).expect("JSON values serialize"),
        }
    }
}

/// A header and the raw bytes it describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub header: Header,
    pub raw: Vec<u8>,
}

/// Why bytes read from the journal are not a record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// The value is empty: not even a version byte.
    #[error("empty record")]
    Empty,
    /// Written by a format this build does not know (a newer evrelay, or damage).
    #[error(
        "record format version {0} is not known to this build (it reads version {FORMAT_VERSION}); \
         run the evrelay version that wrote this journal, or a newer one"
    )]
    UnknownVersion(u8),
    /// The header does not decode.
    #[error("record header does not decode: {0}")]
    Header(String),
    /// The record ends before its checksum.
    #[error("record is truncated")]
    Truncated,
    /// The bytes are not the ones that were written.
    #[error("record checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
}

impl Record {
    /// Encodes the record into its on-disk bytes.
    pub fn encode(&self) -> Vec<u8> {
        let header = postcard::to_stdvec(&self.header).expect("a header always serializes");
        let mut out = Vec::with_capacity(1 + header.len() + CRC_LEN + self.raw.len());
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&header);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&out), &self.raw);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&self.raw);
        out
    }

    /// Decodes and verifies on-disk bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let bad = |e: postcard::Error| RecordError::Header(e.to_string());
        let (header, rest) = match bytes.first() {
            None => return Err(RecordError::Empty),
            Some(&FORMAT_VERSION) => {
                postcard::take_from_bytes::<Header>(&bytes[1..]).map_err(bad)?
            }
            Some(&FORMAT_V1) => {
                let (v1, rest) = postcard::take_from_bytes::<HeaderV1>(&bytes[1..]).map_err(bad)?;
                (v1.into(), rest)
            }
            Some(&v) => return Err(RecordError::UnknownVersion(v)),
        };
        if rest.len() < CRC_LEN {
            return Err(RecordError::Truncated);
        }
        let header_end = bytes.len() - rest.len();
        let (crc, raw) = rest.split_at(CRC_LEN);
        let stored = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
        let computed = crc32c::crc32c_append(crc32c::crc32c(&bytes[..header_end]), raw);
        if stored != computed {
            return Err(RecordError::Checksum { stored, computed });
        }
        Ok(Record {
            header,
            raw: raw.to_vec(),
        })
    }
}

/// Where the watch resumes: the API server's resourceVersion and the newest event
/// time journaled with it. Stored in `meta` as JSON (small, and readable in a hex dump).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeToken {
    /// The resourceVersion to pass to the next watch, as the API server wrote it.
    pub resource_version: String,
    /// The newest event timestamp journaled up to this token, Unix milliseconds.
    /// A relist onto an empty journal keeps only events newer than this.
    pub timestamp_ms: i64,
}

impl ResumeToken {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a token always serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        serde_json::from_slice(bytes).map_err(|e| RecordError::Header(e.to_string()))
    }
}

/// The leadership term a journal was last written under: the epoch the replica
/// claimed in the token ConfigMap, and its identity. Stored in `meta` as JSON. A new
/// leader compares it with the ConfigMap to know whether its journal is current
/// (see `delivery::takeover`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Term {
    pub epoch: u64,
    pub holder: String,
}

impl Term {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a term always serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        serde_json::from_slice(bytes).map_err(|e| RecordError::Header(e.to_string()))
    }
}

/// Why the intake refused a record for good, stored in the `dead` tree under the
/// record's sequence number (JSON). The record itself stays in `events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The intake's status for the request that carried this record alone.
    pub status: Option<u16>,
    /// The start of the intake's answer, or what evrelay itself found wrong.
    pub reason: String,
    /// When it was dead-lettered, Unix milliseconds.
    pub at_ms: i64,
}

impl DeadLetter {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a dead letter always serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        serde_json::from_slice(bytes).map_err(|e| RecordError::Header(e.to_string()))
    }
}

/// What the dedup index holds for an event uid: enough to tell a new occurrence
/// (a higher count) from the same one delivered twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub count: u32,
    pub last_timestamp_ms: Option<i64>,
    /// When this occurrence was journaled; entries older than the dedup horizon
    /// are forgotten (the API server has expired those events by then).
    pub journaled_at_ms: i64,
}

impl Seen {
    /// Reads a schema-2 entry (one per uid), for the schema-3 migration.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        postcard::from_bytes(bytes).ok()
    }
}

/// One key of the `seen_buckets` tree (schema 3): the [`Seen`] entries of every
/// uid that hashes to it.
///
/// - Key: 2 bytes, the top 16 bits of CRC32C(uid), big-endian (see [`SeenBucket::key`]).
/// - Value: postcard of `Vec<(uid, Seen)>`, sorted by uid.
///
/// Buckets, not one key per uid: sled keeps an in-memory entry per leaf of 8–16
/// keys however small they are, so one key per uid cost memory for every uid
/// before anything was read (BENCHMARKS.md has the figures). With 65 536 buckets
/// the cost is bounded; the price is rewriting a bucket (about 15 entries at a
/// million uids) with each occurrence.
/// A bucket that does not decode reads as empty: its events are journaled again
/// (a duplicate at worst, never a loss).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenBucket(Vec<(String, Seen)>);

impl SeenBucket {
    /// The `seen_buckets` key of `uid`'s bucket.
    pub fn key(uid: &str) -> [u8; 2] {
        let top = crc32c::crc32c(uid.as_bytes()) >> 16;
        (top as u16).to_be_bytes()
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("always serializes")
    }

    pub fn decode(bytes: &[u8]) -> Self {
        postcard::from_bytes(bytes).unwrap_or_default()
    }

    pub fn get(&self, uid: &str) -> Option<&Seen> {
        let at = self.0.binary_search_by(|(u, _)| u.as_str().cmp(uid)).ok()?;
        Some(&self.0[at].1)
    }

    pub fn set(&mut self, uid: &str, seen: Seen) {
        match self.0.binary_search_by(|(u, _)| u.as_str().cmp(uid)) {
            Ok(at) => self.0[at].1 = seen,
            Err(at) => self.0.insert(at, (uid.to_owned(), seen)),
        }
    }

    /// Drops the entries journaled before `before_ms`; returns how many.
    pub fn forget_before(&mut self, before_ms: i64) -> usize {
        let len = self.0.len();
        self.0.retain(|(_, s)| s.journaled_at_ms >= before_ms);
        len - self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What the journal should hold, kept outside the store in `<data_dir>/journal.state`
/// so that an open can tell a store that came back shorter or older than it was
/// (sled, given damaged files, can open "fine" with only what came before the
/// damage).
///
/// The file is two slots of [`JournalState::SLOT`] bytes; each write goes to the
/// slot the other one is not in and is synced, so a torn write leaves the other
/// slot whole. A slot:
///
/// ```text
/// +-------+---------+-----+------------+------+---------+-----------+------------+--------------+-------+-------+--------+
/// | magic | version | pad | generation | head | shipped | resume rv | shipped rv | shipped time | epoch | flags | CRC32C |
/// | EVST  | 1 byte  | 3   | u64 LE     | u64  | u64     | u64       | u64        | i64 ms       | u64   | u64   | u32 LE |
/// +-------+---------+-----+------------+------+---------+-----------+------------+--------------+-------+-------+--------+
/// ```
///
/// resourceVersions are stored as numbers (the API server's are decimal; 0: none
/// or not a number). The slot with the higher generation whose CRC holds wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JournalState {
    pub generation: u64,
    /// The highest sequence number journaled.
    pub head: u64,
    /// The lowest shipped-through cursor of the sinks.
    pub shipped: u64,
    /// The resume token's resourceVersion.
    pub resume_rv: u64,
    /// The shipped-through token: from where a fresh journal loses nothing shipped.
    pub shipped_rv: u64,
    pub shipped_time_ms: i64,
    /// The leadership epoch the journal was written under.
    pub epoch: u64,
    /// The store reported damage while running: the next open sets it aside
    /// without trusting it.
    pub damaged: bool,
}

impl JournalState {
    pub const SLOT: usize = 128;
    const MAGIC: &'static [u8; 4] = b"EVST";
    const VERSION: u8 = 1;
    const BODY: usize = 4 + 1 + 3 + 8 * 8;

    /// The slot's bytes.
    pub fn encode(&self) -> [u8; Self::SLOT] {
        let mut out = [0u8; Self::SLOT];
        out[..4].copy_from_slice(Self::MAGIC);
        out[4] = Self::VERSION;
        let fields = [
            self.generation,
            self.head,
            self.shipped,
            self.resume_rv,
            self.shipped_rv,
            self.shipped_time_ms as u64,
            self.epoch,
            u64::from(self.damaged),
        ];
        for (i, f) in fields.iter().enumerate() {
            out[8 + i * 8..16 + i * 8].copy_from_slice(&f.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out[..Self::BODY]);
        out[Self::BODY..Self::BODY + 4].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// A slot's state, if the slot is whole.
    pub fn decode(slot: &[u8]) -> Option<JournalState> {
        if slot.len() < Self::BODY + 4 || &slot[..4] != Self::MAGIC || slot[4] != Self::VERSION {
            return None;
        }
        let crc = u32::from_le_bytes(slot[Self::BODY..Self::BODY + 4].try_into().ok()?);
        if crc != crc32c::crc32c(&slot[..Self::BODY]) {
            return None;
        }
        let field = |i: usize| u64::from_le_bytes(slot[8 + i * 8..16 + i * 8].try_into().unwrap());
        Some(JournalState {
            generation: field(0),
            head: field(1),
            shipped: field(2),
            resume_rv: field(3),
            shipped_rv: field(4),
            shipped_time_ms: field(5) as i64,
            epoch: field(6),
            damaged: field(7) & 1 == 1,
        })
    }

    /// The state a file of two slots holds: the whole slot of the later generation.
    pub fn read(file: &[u8]) -> Option<JournalState> {
        file.chunks(Self::SLOT)
            .take(2)
            .filter_map(JournalState::decode)
            .max_by_key(|s| s.generation)
    }
}

/// A resourceVersion as the state file keeps it: the number, or 0.
pub fn rv_number(rv: &str) -> u64 {
    rv.parse().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            header: Header {
                kind: RecordKind::Event,
                uid: "0f6c3b8e-1d2a-4c55-9e0b-2b3c4d5e6f70".into(),
                resource_version: "12345".into(),
                namespace: "payments".into(),
                involved_kind: "Pod".into(),
                involved_name: "api-7d9f".into(),
                reason: "BackOff".into(),
                event_type: "Warning".into(),
                count: 7,
                first_timestamp_ms: Some(1_700_000_000_000),
                last_timestamp_ms: Some(1_700_000_060_000),
                received_at_ms: 1_700_000_060_123,
                series_count: 0,
                series_last_observed_ms: None,
            },
            raw: br#"{"kind":"Event","message":"Back-off restarting failed container \u00e9"}"#
                .to_vec(),
        }
    }

    #[test]
    fn a_version_1_record_is_read_without_series() {
        let r = sample();
        let h = &r.header;
        let v1 = HeaderV1 {
            kind: h.kind,
            uid: h.uid.clone(),
            resource_version: h.resource_version.clone(),
            namespace: h.namespace.clone(),
            involved_kind: h.involved_kind.clone(),
            involved_name: h.involved_name.clone(),
            reason: h.reason.clone(),
            event_type: h.event_type.clone(),
            count: h.count,
            first_timestamp_ms: h.first_timestamp_ms,
            last_timestamp_ms: h.last_timestamp_ms,
            received_at_ms: h.received_at_ms,
        };
        let mut bytes = vec![FORMAT_V1];
        bytes.extend(postcard::to_stdvec(&v1).unwrap());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes), &r.raw);
        bytes.extend(crc.to_le_bytes());
        bytes.extend(&r.raw);
        assert_eq!(Record::decode(&bytes).unwrap(), r);
    }

    #[test]
    fn series_survive_encoding_and_count_as_occurrences() {
        let mut r = sample();
        r.header.count = 0;
        r.header.series_count = 9;
        r.header.series_last_observed_ms = Some(1_700_000_090_000);
        assert_eq!(Record::decode(&r.encode()).unwrap(), r);
        assert_eq!(r.header.occurrences(), 9);
    }

    #[test]
    fn a_state_slot_round_trips_and_a_torn_one_is_ignored() {
        let state = JournalState {
            generation: 7,
            head: 221,
            shipped: 150,
            resume_rv: 2019,
            shipped_rv: 1999,
            shipped_time_ms: 1_700_000_000_000,
            epoch: 3,
            damaged: true,
        };
        let slot = state.encode();
        assert_eq!(JournalState::decode(&slot), Some(state));
        let older = JournalState {
            generation: 6,
            ..state
        };
        let mut file = [older.encode(), slot].concat();
        assert_eq!(
            JournalState::read(&file),
            Some(state),
            "the later generation"
        );
        file[JournalState::SLOT + 20] ^= 1;
        assert_eq!(
            JournalState::read(&file),
            Some(older),
            "a torn slot is passed over"
        );
        assert_eq!(JournalState::read(&[]), None);
    }

    #[test]
    fn round_trip() {
        let r = sample();
        let bytes = r.encode();
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(Record::decode(&bytes).unwrap(), r);
    }

    #[test]
    fn round_trip_empty_raw_and_gap() {
        let mut r = sample();
        r.header.kind = RecordKind::Gap;
        r.raw.clear();
        assert_eq!(Record::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn any_flipped_bit_is_detected() {
        let bytes = sample().encode();
        for i in 1..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x10;
            assert!(
                Record::decode(&damaged).is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn checksum_mismatch_is_reported_as_such() {
        let mut bytes = sample().encode();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        assert!(matches!(
            Record::decode(&bytes),
            Err(RecordError::Checksum { .. })
        ));
    }

    #[test]
    fn unknown_version_is_refused_clearly() {
        let mut bytes = sample().encode();
        bytes[0] = 9;
        let err = Record::decode(&bytes).unwrap_err();
        assert_eq!(err, RecordError::UnknownVersion(9));
        assert!(err.to_string().contains("version 9"));
    }

    #[test]
    fn truncation_and_empty_are_errors() {
        assert_eq!(Record::decode(&[]), Err(RecordError::Empty));
        let bytes = sample().encode();
        for cut in 1..bytes.len() - sample().raw.len() {
            assert!(Record::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn token_round_trip() {
        let t = ResumeToken {
            resource_version: "981".into(),
            timestamp_ms: 1_700_000_000_000,
        };
        assert_eq!(ResumeToken::decode(&t.encode()).unwrap(), t);
    }

    #[test]
    fn a_seen_bucket_keeps_its_uids_apart_and_survives_encoding() {
        let seen = |count, at| Seen {
            count,
            last_timestamp_ms: Some(at),
            journaled_at_ms: at,
        };
        let mut bucket = SeenBucket::default();
        bucket.set("b", seen(1, 10));
        bucket.set("a", seen(2, 20));
        bucket.set("b", seen(3, 30));
        let bucket = SeenBucket::decode(&bucket.encode());
        assert_eq!(bucket.get("a"), Some(&seen(2, 20)));
        assert_eq!(bucket.get("b"), Some(&seen(3, 30)));
        assert_eq!(bucket.get("c"), None);
        let mut pruned = bucket.clone();
        assert_eq!(pruned.forget_before(25), 1);
        assert_eq!(
            (pruned.get("a"), pruned.get("b")),
            (None, Some(&seen(3, 30)))
        );
        assert_eq!(pruned.forget_before(i64::MAX), 1);
        assert!(pruned.is_empty());
        // Bytes that do not decode read as an empty bucket (journaled again: a
        // duplicate at worst), not an error that would stop the watch.
        assert!(SeenBucket::decode(&[0xff; 3]).is_empty());
        // The key is the uid's hash, so one uid always lands in one bucket.
        assert_eq!(SeenBucket::key("a"), SeenBucket::key("a"));
    }
}
