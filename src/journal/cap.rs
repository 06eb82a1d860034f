//! The byte cap: the journal never holds more than `max_bytes` of records; and
//! retention by age for shipped records. (What the store takes on disk for them is
//! bounded by compaction, `compact.rs`.)
//!
//! Past the cap, records are removed oldest first. The oldest records are the
//! shipped ones (the cursor only moves forward over a prefix), so shipped records go
//! before any pending one. A pending record removed is an event lost: it is counted
//! in `meta` and a gap marker is appended that names the range. Removing is done by
//! the appender itself, never by waiting for the shipper, so the watch is not held up.

use std::ops::Bound;

use super::store::{Batch, Tree};
use super::{
    Journal, JournalError, META_DROPPED_PENDING, META_EVICTED_SHIPPED, META_RECORD_BYTES,
    META_RECORD_COUNT, META_SHIPPED_PREFIX, seq_of,
};
use crate::record::{Gap, Record, RecordKind};

/// Trim to this share of the cap, so a full journal does not trim on every append.
const TRIM_TO_PERCENT: u64 = 90;

/// What one enforcement of the byte cap removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CapOutcome {
    /// Shipped records removed (no loss).
    pub evicted_shipped: u64,
    /// Pending records dropped (lost; a gap marker records it).
    pub dropped_pending: u64,
}

impl Journal {
    /// Makes room if the journal is past its cap. The caller holds the writer lock.
    pub(super) fn enforce_cap(&self, next_seq: &mut u64) -> Result<CapOutcome, JournalError> {
        let max_bytes = self.inner.max_bytes;
        let used = self.counters()?.record_bytes;
        if used <= max_bytes {
            return Ok(CapOutcome::default());
        }
        let target = max_bytes / 100 * TRIM_TO_PERCENT;
        let shipped = self.min_shipped_through()?;

        let mut outcome = CapOutcome::default();
        let mut victims = Vec::new();
        let mut freed = 0u64;
        let mut pending_range: Option<(u64, u64)> = None;
        for entry in self.store().iter(Tree::Events) {
            if used - freed <= target {
                break;
            }
            let (key, value) = entry?;
            let seq = seq_of(&key);
            if seq > shipped && is_gap(&value) {
                continue; // gap markers are the record of earlier losses: kept
            }
            if seq <= shipped {
                outcome.evicted_shipped += 1;
            } else {
                outcome.dropped_pending += 1;
                let (first, _) = pending_range.unwrap_or((seq, seq));
                pending_range = Some((first, seq));
            }
            freed += value.len() as u64;
            victims.push(seq);
        }

        self.remove(&victims, freed, outcome)?;

        if let Some((first, last)) = pending_range {
            tracing::warn!(
                dropped = outcome.dropped_pending,
                first_seq = first,
                last_seq = last,
                max_bytes,
                "journal full: dropped the oldest pending events (gap recorded); the intake is not keeping up"
            );
            self.append_locked(
                next_seq,
                &[full_gap(outcome.dropped_pending, first, last)],
                None,
            )?;
        } else {
            tracing::debug!(
                evicted = outcome.evicted_shipped,
                "journal at its cap: removed the oldest shipped records"
            );
        }
        Ok(outcome)
    }

    /// Removes shipped records received before `before_ms` (retention by age), oldest
    /// first, stopping at the first pending or newer record. Returns how many.
    pub fn expire_shipped(&self, before_ms: i64) -> Result<u64, JournalError> {
        let mut next_seq = self.writer();
        self.ready(&mut next_seq)?;
        let shipped = self.min_shipped_through()?;
        let mut victims = Vec::new();
        let mut freed = 0u64;
        let through = shipped.to_be_bytes();
        let range = self
            .store()
            .range(Tree::Events, Bound::Unbounded, Bound::Included(&through));
        for entry in range {
            let (key, value) = entry?;
            let received = Record::decode(&value).map(|r| r.header.received_at_ms);
            // A damaged record's age is unknown; past the cursor it is delivered
            // or given up, so it goes with its neighbours.
            if received.as_ref().is_ok_and(|at| *at >= before_ms) {
                break;
            }
            freed += value.len() as u64;
            victims.push(seq_of(&key));
        }
        if victims.is_empty() {
            return Ok(0);
        }
        let outcome = CapOutcome {
            evicted_shipped: victims.len() as u64,
            dropped_pending: 0,
        };
        self.remove(&victims, freed, outcome)?;
        Ok(outcome.evicted_shipped)
    }

    /// Removes `victims` (with their dead letters) and counts them, in one write.
    /// The caller holds the writer lock.
    fn remove(&self, victims: &[u64], freed: u64, outcome: CapOutcome) -> Result<(), JournalError> {
        let mut batch = Batch::default();
        for seq in victims {
            batch.remove(Tree::Events, seq.to_be_bytes());
            batch.remove(Tree::Dead, seq.to_be_bytes());
        }
        for (key, delta) in [
            (META_RECORD_BYTES, -(freed as i64)),
            (META_RECORD_COUNT, -(victims.len() as i64)),
            (META_EVICTED_SHIPPED, outcome.evicted_shipped as i64),
            (META_DROPPED_PENDING, outcome.dropped_pending as i64),
        ] {
            let new = self.meta_u64(key)?.saturating_add_signed(delta);
            batch.insert(Tree::Meta, key, new.to_be_bytes());
        }
        self.apply(batch)
    }

    /// The lowest shipped-through cursor over all sinks (0 when there is none).
    pub(super) fn min_shipped_through(&self) -> Result<u64, JournalError> {
        let prefix = META_SHIPPED_PREFIX.as_bytes();
        let mut min: Option<u64> = None;
        let range = self
            .store()
            .range(Tree::Meta, Bound::Included(prefix), Bound::Unbounded);
        for entry in range {
            let (key, value) = entry?;
            if !key.starts_with(prefix) {
                break;
            }
            let seq = seq_of(&value);
            min = Some(min.map_or(seq, |m: u64| m.min(seq)));
        }
        Ok(min.unwrap_or(0))
    }
}

fn is_gap(value: &[u8]) -> bool {
    Record::decode(value).is_ok_and(|r| r.header.kind == RecordKind::Gap)
}

/// The gap marker for pending records dropped under the cap.
fn full_gap(dropped: u64, first_seq: u64, last_seq: u64) -> Record {
    let mut gap = Record::gap(
        Gap::JournalFull,
        serde_json::json!({
            "dropped": dropped,
            "first_seq": first_seq,
            "last_seq": last_seq,
        }),
    );
    gap.header.count = u32::try_from(dropped).unwrap_or(u32::MAX);
    gap
}
