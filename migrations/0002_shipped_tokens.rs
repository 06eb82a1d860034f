//! Schema 1 → 2: the `tokens` tree (last sequence number of a write → the resume
//! token written with it), from which the leader's shipped-through token is read
//! (`src/journal/store/term.rs`).
//!
//! A schema-1 journal has no such entries. Where the sink has shipped everything
//! journaled, its resume token covers exactly the shipped records, so it is filed
//! under the head. Otherwise no entry is made: the shipped-through token stays
//! unknown until the next write, and a takeover in between resumes from the
//! ConfigMap's older token (more duplicates, never a loss).
//!
//! It also counts the records once into `meta` (`record_count`), which schema 2
//! keeps in the transactions that add and remove records, so that the journal's
//! length is read, not counted (sled's own count walks the whole tree).
//!
//! Crash-safe: the entry, the count and the new schema version are one
//! transaction; a step killed before it commits leaves schema 1 and runs again at
//! the next open.

use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use super::Trees;

pub(super) const VERSION: u32 = 2;

pub(super) fn step(trees: &Trees<'_>) -> Result<(), sled::transaction::TransactionError<()>> {
    let head = trees
        .events
        .last()?
        .map(|(k, _)| super::seq_of(&k))
        .unwrap_or(0);
    let shipped = trees
        .meta
        .get(b"shipped_through/datadog")?
        .map(|v| super::seq_of(&v))
        .unwrap_or(0);
    let token = trees.meta.get(b"resume_token")?;
    let count = trees.events.len() as u64;
    (trees.meta, trees.tokens).transaction(|(meta, tokens)| {
        if let Some(token) = &token
            && shipped >= head
        {
            tokens.insert(&head.to_be_bytes(), token.clone())?;
        }
        meta.insert(b"record_count".as_slice(), &count.to_be_bytes())?;
        meta.insert(super::META_SCHEMA, &VERSION.to_be_bytes())?;
        Ok::<_, ConflictableTransactionError<()>>(())
    })
}
