//! Schema 1 → 2: the `tokens` tree (last sequence number of a write → the resume
//! token written with it), from which the leader's shipped-through token is read
//! (`src/journal/term.rs`).
//!
//! A schema-1 journal has no such entries. Where the sink has shipped everything
//! journaled, its resume token covers exactly the shipped records, so it is filed
//! under the head. Otherwise no entry is made: the shipped-through token stays
//! unknown until the next write, and a takeover in between resumes from the
//! ConfigMap's older token (more duplicates, never a loss).
//!
//! It also counts the records once into `meta` (`record_count`), which schema 2
//! keeps in the writes that add and remove records, so that the journal's length
//! is read, not counted (counting walks the whole tree).
//!
//! Crash-safe: the entry, the count and the new schema version are one atomic
//! write; a step killed before it leaves schema 1 and runs again at the next open.

use super::{Batch, Store, StoreError, Tree};

pub(super) const VERSION: u32 = 2;

pub(super) fn step(store: &dyn Store) -> Result<(), StoreError> {
    let head = store
        .last(Tree::Events)?
        .map_or(0, |(k, _)| super::seq_of(&k));
    let shipped = store
        .get(Tree::Meta, b"shipped_through/datadog")?
        .map_or(0, |v| super::seq_of(&v));
    let token = store.get(Tree::Meta, b"resume_token")?;
    let mut count = 0u64;
    for entry in store.iter(Tree::Events) {
        entry?;
        count += 1;
    }
    let mut batch = Batch::default();
    if let Some(token) = token
        && shipped >= head
    {
        batch.insert(Tree::Tokens, head.to_be_bytes(), token);
    }
    batch.insert(Tree::Meta, b"record_count".as_slice(), count.to_be_bytes());
    batch.insert(Tree::Meta, super::META_SCHEMA, VERSION.to_be_bytes());
    store.apply(batch)
}
