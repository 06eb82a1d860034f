//! Appending: a batch of records and the resume token after it, deduplicated
//! against the index of occurrences already journaled, in one atomic write.

use std::collections::HashMap;
use std::ops::Bound;

use super::store::{Batch, Tree};
use super::{
    CapOutcome, Journal, JournalError, META_HEAD, META_RECORD_BYTES, META_RECORD_COUNT, META_TOKEN,
};
use crate::delivery;
use crate::record::{Record, RecordKind, ResumeToken, SeenBucket};

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

impl Journal {
    /// Journals a batch and (optionally) the resume token that follows it, in one
    /// write, durable on return. Events already journaled as the same occurrence
    /// are skipped (see [`delivery::is_new_occurrence`]). If the batch takes the
    /// journal past its byte cap, the oldest records make room (see `cap.rs`).
    pub fn append(
        &self,
        records: &[Record],
        token: Option<&ResumeToken>,
    ) -> Result<AppendOutcome, JournalError> {
        let outcome = self.commit(false, |next_seq| {
            let mut outcome = self.append_locked(next_seq, records, token)?;
            outcome.cap = self.enforce_cap(next_seq)?;
            if outcome.cap != CapOutcome::default() {
                outcome.head = *next_seq - 1;
            }
            Ok(outcome)
        })?;
        if outcome.journaled > 0 {
            self.inner.head.send_replace(outcome.head);
        }
        Ok(outcome)
    }

    /// The write of [`Journal::append`]; the caller holds the writer lock and syncs.
    pub(super) fn append_locked(
        &self,
        next_seq: &mut u64,
        records: &[Record],
        token: Option<&ResumeToken>,
    ) -> Result<AppendOutcome, JournalError> {
        let store = self.store();
        let mut batch = Batch::default();
        let mut seq = *next_seq;
        let mut outcome = AppendOutcome::default();
        let mut added = 0u64;
        // The buckets this write touches, each read once and written once.
        let mut buckets = HashMap::<[u8; 2], SeenBucket>::new();
        for record in records {
            let h = &record.header;
            if h.kind == RecordKind::Event && !h.uid.is_empty() {
                let key = SeenBucket::key(&h.uid);
                let bucket = match buckets.entry(key) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        let stored = store.get(Tree::SeenBuckets, &key)?;
                        e.insert(stored.map(|v| SeenBucket::decode(&v)).unwrap_or_default())
                    }
                };
                if !delivery::is_new_occurrence(bucket.get(&h.uid), h) {
                    outcome.duplicates += 1;
                    continue;
                }
                bucket.set(&h.uid, delivery::seen(h));
            }
            let bytes = record.encode();
            added += bytes.len() as u64;
            batch.insert(Tree::Events, seq.to_be_bytes(), bytes);
            seq += 1;
            outcome.journaled += 1;
        }
        for (key, bucket) in &buckets {
            batch.insert(Tree::SeenBuckets, *key, bucket.encode());
        }
        if added > 0 {
            let total = self.meta_u64(META_RECORD_BYTES)?;
            batch.insert(Tree::Meta, META_RECORD_BYTES, (total + added).to_be_bytes());
            let count = self.meta_u64(META_RECORD_COUNT)?;
            let count = count + outcome.journaled as u64;
            batch.insert(Tree::Meta, META_RECORD_COUNT, count.to_be_bytes());
            batch.insert(Tree::Meta, META_HEAD, (seq - 1).to_be_bytes());
        }
        if let Some(token) = token {
            batch.insert(Tree::Meta, META_TOKEN, token.encode());
            batch.insert(Tree::Tokens, (seq - 1).to_be_bytes(), token.encode());
        }
        if !batch.is_empty() {
            self.apply(batch)?;
        }
        outcome.head = seq - 1;
        *next_seq = seq;
        Ok(outcome)
    }

    /// Records a resume token that carries no events (a bookmark). Not synced on its
    /// own: losing it only means resuming from an earlier, still valid token.
    pub fn set_token(&self, token: &ResumeToken) -> Result<(), JournalError> {
        let mut next_seq = self.writer();
        self.ready(&mut next_seq)?;
        let head = *next_seq - 1;
        let mut batch = Batch::default();
        batch.insert(Tree::Meta, META_TOKEN, token.encode());
        batch.insert(Tree::Tokens, head.to_be_bytes(), token.encode());
        self.apply(batch)
    }

    /// Forgets, from the dedup index, occurrences journaled before `before_ms`.
    /// Returns how many were forgotten. Keeps the index from growing forever; the
    /// horizon must exceed the API server's event TTL (`--event-ttl`, 1 h by
    /// default) so that a relist never returns an event the index forgot.
    pub fn forget_seen(&self, before_ms: i64) -> Result<usize, JournalError> {
        // A bucket is read and rewritten under the writer lock, so an occurrence
        // journaled meanwhile is never overwritten; in chunks, so appends wait for
        // one chunk at most.
        const CHUNK: u32 = 4096;
        let mut forgotten = 0;
        for first in (0..1u32 << 16).step_by(CHUNK as usize) {
            let from = (first as u16).to_be_bytes();
            let to = ((first + CHUNK - 1) as u16).to_be_bytes();
            let mut next_seq = self.writer();
            self.ready(&mut next_seq)?;
            let mut batch = Batch::default();
            let range = self.store().range(
                Tree::SeenBuckets,
                Bound::Included(&from),
                Bound::Included(&to),
            );
            for entry in range {
                let (key, value) = entry?;
                let mut bucket = SeenBucket::decode(&value);
                let gone = bucket.forget_before(before_ms);
                if bucket.is_empty() {
                    batch.remove(Tree::SeenBuckets, key);
                } else if gone > 0 {
                    batch.insert(Tree::SeenBuckets, key, bucket.encode());
                }
                forgotten += gone;
            }
            if !batch.is_empty() {
                self.apply(batch)?;
            }
        }
        Ok(forgotten)
    }

    /// Whether the dedup index knows no event at all (a new or emptied journal).
    pub fn seen_is_empty(&self) -> Result<bool, JournalError> {
        Ok(self
            .store()
            .iter(Tree::SeenBuckets)
            .next()
            .transpose()?
            .is_none())
    }
}
