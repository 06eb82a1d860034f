//! Schema 3 → 4: records are written in format 2, whose header adds the event's
//! `series` (count and last observed time, for events recorded through
//! `events.k8s.io/v1`; format in `src/record.rs`).
//!
//! Nothing on disk is rewritten: format-1 records are still read (as events
//! without a series), and the dedup index already keeps one count per uid, now the
//! count of whichever recorder counted. The step only writes the version, so that
//! a build that does not know format 2 refuses this journal instead of reading its
//! new records as damaged.

use super::{Batch, Store, StoreError, Tree};

pub(super) const VERSION: u32 = 4;

pub(super) fn step(store: &dyn Store) -> Result<(), StoreError> {
    let mut batch = Batch::default();
    batch.insert(Tree::Meta, super::META_SCHEMA, VERSION.to_be_bytes());
    store.apply(batch)
}
