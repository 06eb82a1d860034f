//! Schema 2 → 3: the dedup index moves from the tree `seen` (one key per event uid)
//! to `seen_buckets` (one key per uid bucket, format in `src/record.rs`).
//!
//! sled keeps an in-memory entry per leaf of 8–16 keys, so one key per uid cost
//! memory for every uid before a single one was read; 65 536 buckets bound it.
//!
//! Crash-safe without one huge write (a million entries would be held in memory):
//! the step empties `seen_buckets`, fills it from `seen`, syncs, drops `seen` (one
//! atomic change of the store), and only then writes the new schema version. Killed before the drop, the journal is still schema 2 with
//! `seen` intact, and the step starts over at the next open. Killed after it, the
//! step runs again, finds no `seen`, and only writes the version: the buckets were
//! durable before the old tree went.

use std::collections::BTreeMap;

use crate::record::{Seen, SeenBucket};

use super::{Batch, Store, StoreError, Tree};

pub(super) const VERSION: u32 = 3;

/// Buckets gathered in memory before they are written: bounds the step's memory.
const FLUSH_EVERY: usize = 4096;

pub(super) fn step(store: &dyn Store) -> Result<(), StoreError> {
    // Without the old tree there is nothing to move (its entries already were):
    // keep `seen_buckets` as it is rather than empty it.
    if store.has_tree(Tree::LegacySeen)? {
        store.clear(Tree::SeenBuckets)?;
        let mut pending = BTreeMap::<[u8; 2], SeenBucket>::new();
        for entry in store.iter(Tree::LegacySeen) {
            let (uid, value) = entry?;
            // A schema-2 entry that does not decode was read as "never seen" then too.
            let (Ok(uid), Some(seen)) = (std::str::from_utf8(&uid), Seen::decode(&value)) else {
                continue;
            };
            let key = SeenBucket::key(uid);
            let bucket = match pending.entry(key) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    // Written by an earlier batch of this step, or absent.
                    let stored = store.get(Tree::SeenBuckets, &key)?;
                    e.insert(stored.map(|v| SeenBucket::decode(&v)).unwrap_or_default())
                }
            };
            bucket.set(uid, seen);
            if pending.len() >= FLUSH_EVERY {
                write(store, &mut pending)?;
            }
        }
        write(store, &mut pending)?;
        store.sync()?;
        store.drop_tree(Tree::LegacySeen)?;
        store.sync()?;
    }
    let mut batch = Batch::default();
    batch.insert(Tree::Meta, super::META_SCHEMA, VERSION.to_be_bytes());
    store.apply(batch)?;
    store.sync()
}

fn write(store: &dyn Store, pending: &mut BTreeMap<[u8; 2], SeenBucket>) -> Result<(), StoreError> {
    let mut batch = Batch::default();
    for (key, bucket) in std::mem::take(pending) {
        batch.insert(Tree::SeenBuckets, key, bucket.encode());
    }
    if batch.is_empty() {
        return Ok(());
    }
    store.apply(batch)
}
