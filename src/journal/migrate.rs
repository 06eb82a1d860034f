//! Schema migrations, applied in order when a journal opens. The steps live under
//! `migrations/` at the top of the repository, one file per schema version, written
//! against the [`Store`] trait; each writes its new version only once its changes
//! are durable, so a step killed half-way leaves the old version and runs again at
//! the next open.

use super::store::{Batch, Store, StoreError, Tree};
use super::{META_SCHEMA, seq_of};

#[path = "../../migrations/0002_shipped_tokens.rs"]
mod m0002;
#[path = "../../migrations/0003_seen_buckets.rs"]
mod m0003;
#[path = "../../migrations/0004_record_series.rs"]
mod m0004;

type Step = fn(&dyn Store) -> Result<(), StoreError>;

/// Every step, by the version it migrates to, in order.
const STEPS: &[(u32, Step)] = &[
    (m0002::VERSION, m0002::step),
    (m0003::VERSION, m0003::step),
    (m0004::VERSION, m0004::step),
];

/// Runs the steps after `from`, in order, and syncs. Returns the versions applied.
pub(super) fn run(store: &dyn Store, from: u32) -> Result<Vec<u32>, StoreError> {
    let mut applied = Vec::new();
    for &(version, step) in STEPS.iter().filter(|(v, _)| *v > from) {
        step(store)?;
        tracing::info!(from = version - 1, to = version, "journal migrated");
        applied.push(version);
    }
    if !applied.is_empty() {
        store.sync()?;
    }
    Ok(applied)
}

/// The newest schema the steps reach (what this build writes).
pub(super) const fn latest() -> u32 {
    STEPS[STEPS.len() - 1].0
}
