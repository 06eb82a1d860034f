//! Schema migrations, applied in order when a journal opens. The steps live under
//! `migrations/` at the top of the repository, one file per schema version; each
//! writes its new version in the same transaction as its changes, so a step killed
//! half-way leaves the old version and runs again at the next open.

use super::{META_SCHEMA, seq_of};

#[path = "../../../migrations/0002_shipped_tokens.rs"]
mod m0002;
#[path = "../../../migrations/0003_seen_buckets.rs"]
mod m0003;

/// The trees a step may touch.
pub(super) struct Trees<'a> {
    pub db: &'a sled::Db,
    pub events: &'a sled::Tree,
    pub seen: &'a sled::Tree,
    pub meta: &'a sled::Tree,
    pub tokens: &'a sled::Tree,
}

type Step = fn(&Trees<'_>) -> Result<(), sled::transaction::TransactionError<()>>;

/// Every step, by the version it migrates to, in order.
const STEPS: &[(u32, Step)] = &[(m0002::VERSION, m0002::step), (m0003::VERSION, m0003::step)];

/// Runs the steps after `from`, in order. Returns the versions applied.
pub(super) fn run(trees: &Trees<'_>, from: u32) -> Result<Vec<u32>, sled::Error> {
    let mut applied = Vec::new();
    for &(version, step) in STEPS.iter().filter(|(v, _)| *v > from) {
        step(trees).map_err(|e| match e {
            sled::transaction::TransactionError::Storage(e) => e,
            sled::transaction::TransactionError::Abort(()) => {
                unreachable!("migration steps never abort")
            }
        })?;
        tracing::info!(from = version - 1, to = version, "journal migrated");
        applied.push(version);
    }
    Ok(applied)
}

/// The newest schema the steps reach (what this build writes).
pub(super) const fn latest() -> u32 {
    STEPS[STEPS.len() - 1].0
}
