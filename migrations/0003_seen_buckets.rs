//! Schema 2 → 3: the dedup index moves from the tree `seen` (one key per event uid)
//! to `seen_buckets` (one key per uid bucket, format in `src/journal/record.rs`).
//!
//! sled keeps an in-memory entry per leaf of 8–16 keys, so a million uids in
//! `seen` cost 35 MiB before a single one was read; in 65 536 buckets, about 2.
//!
//! Crash-safe without one huge transaction (a million entries would be held in
//! memory): the step empties `seen_buckets`, fills it from `seen`, flushes, drops
//! `seen` (one atomic change of sled's root table), and only then writes the new
//! schema version. Killed before the drop, the journal is still schema 2 with
//! `seen` intact, and the step starts over at the next open. Killed after it, the
//! step runs again, finds no `seen`, and only writes the version: the buckets were
//! durable before the old tree went.

use std::collections::BTreeMap;

use crate::journal::record::{Seen, SeenBucket};

use super::Trees;

pub(super) const VERSION: u32 = 3;

/// The schema-2 tree this step reads and drops.
const OLD_TREE: &[u8] = b"seen";

/// Buckets gathered in memory before they are written: bounds the step's memory.
const FLUSH_EVERY: usize = 4096;

pub(super) fn step(trees: &Trees<'_>) -> Result<(), sled::transaction::TransactionError<()>> {
    // Without the old tree there is nothing to move (its entries already were):
    // keep `seen_buckets` as it is rather than empty it.
    if !trees.db.tree_names().iter().any(|name| name == OLD_TREE) {
        trees
            .meta
            .insert(super::META_SCHEMA, &VERSION.to_be_bytes())?;
        trees.db.flush()?;
        return Ok(());
    }
    let old = trees.db.open_tree(OLD_TREE)?;
    trees.seen.clear()?;
    let mut pending = BTreeMap::<[u8; 2], SeenBucket>::new();
    for item in old.iter() {
        let (uid, value) = item?;
        // A schema-2 entry that does not decode was read as "never seen" then too.
        let (Ok(uid), Some(seen)) = (std::str::from_utf8(&uid), Seen::decode(&value)) else {
            continue;
        };
        let key = SeenBucket::key(uid);
        let bucket = match pending.entry(key) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                // Written by an earlier batch of this step, or absent.
                let stored = trees.seen.get(key)?;
                e.insert(stored.map(|v| SeenBucket::decode(&v)).unwrap_or_default())
            }
        };
        bucket.set(uid, seen);
        if pending.len() >= FLUSH_EVERY {
            write(trees, &mut pending)?;
        }
    }
    write(trees, &mut pending)?;
    drop(old);
    trees.db.flush()?;
    trees.db.drop_tree(OLD_TREE)?;
    trees.db.flush()?;
    trees
        .meta
        .insert(super::META_SCHEMA, &VERSION.to_be_bytes())?;
    trees.db.flush()?;
    Ok(())
}

fn write(
    trees: &Trees<'_>,
    pending: &mut BTreeMap<[u8; 2], SeenBucket>,
) -> Result<(), sled::Error> {
    let mut batch = sled::Batch::default();
    for (key, bucket) in std::mem::take(pending) {
        batch.insert(&key, bucket.encode());
    }
    trees.seen.apply_batch(batch)
}
