//! Stores for tests: one in memory (fast, no files, no background threads) and one
//! that fails on demand in front of any other, so the journal's answers to a disk
//! that refuses writes or syncs are tested without a broken disk.

use std::collections::{BTreeMap, HashMap};
use std::io::ErrorKind;
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::store::{self, Batch, Store, StoreError, Tree};

/// One tree's entries.
type Entries = BTreeMap<Vec<u8>, Vec<u8>>;

/// Trees held in memory; `sync` does nothing, `size_on_disk` is the bytes held.
#[derive(Default)]
pub struct MemoryStore {
    trees: Mutex<HashMap<Tree, Entries>>,
}

impl Store for MemoryStore {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let trees = self.trees.lock().unwrap();
        Ok(trees.get(&tree).and_then(|t| t.get(key)).cloned())
    }

    fn range(&self, tree: Tree, from: Bound<&[u8]>, to: Bound<&[u8]>) -> store::Entries {
        let trees = self.trees.lock().unwrap();
        let owned = |b: Bound<&[u8]>| b.map(<[u8]>::to_vec);
        let entries: Vec<_> = trees
            .get(&tree)
            .map(|t| {
                t.range::<Vec<u8>, _>((owned(from), owned(to)))
                    .map(|(k, v)| Ok((k.clone(), v.clone())))
                    .collect()
            })
            .unwrap_or_default();
        Box::new(entries.into_iter())
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let mut trees = self.trees.lock().unwrap();
        for (tree, key, value) in batch.ops() {
            let t = trees.entry(tree).or_default();
            match value {
                Some(v) => t.insert(key.to_vec(), v.to_vec()),
                None => t.remove(key),
            };
        }
        Ok(())
    }

    fn clear(&self, tree: Tree) -> Result<(), StoreError> {
        self.trees.lock().unwrap().remove(&tree);
        Ok(())
    }

    fn has_tree(&self, tree: Tree) -> Result<bool, StoreError> {
        Ok(self.trees.lock().unwrap().contains_key(&tree))
    }

    fn drop_tree(&self, tree: Tree) -> Result<(), StoreError> {
        self.clear(tree)
    }

    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        let trees = self.trees.lock().unwrap();
        Ok(trees
            .values()
            .flat_map(|t| t.iter())
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum())
    }
}

/// Another store, with writes and syncs that fail when told to.
pub struct FaultyStore<S> {
    inner: S,
    failing_applies: AtomicUsize,
    failing_syncs: AtomicUsize,
    kind: Mutex<ErrorKind>,
}

impl<S: Store> FaultyStore<S> {
    pub fn new(inner: S) -> Self {
        FaultyStore {
            inner,
            failing_applies: AtomicUsize::new(0),
            failing_syncs: AtomicUsize::new(0),
            kind: Mutex::new(ErrorKind::Other),
        }
    }

    /// The next `n` batches fail with `kind` (and change nothing).
    pub fn fail_applies(&self, n: usize, kind: ErrorKind) {
        *self.kind.lock().unwrap() = kind;
        self.failing_applies.store(n, Ordering::SeqCst);
    }

    /// The next `n` syncs fail with `kind`.
    pub fn fail_syncs(&self, n: usize, kind: ErrorKind) {
        *self.kind.lock().unwrap() = kind;
        self.failing_syncs.store(n, Ordering::SeqCst);
    }

    fn trip(&self, counter: &AtomicUsize, what: &'static str) -> Result<(), StoreError> {
        let tripped = counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if tripped {
            return Err(StoreError::Io {
                what,
                path: PathBuf::from("(faulty store)"),
                source: std::io::Error::from(*self.kind.lock().unwrap()),
            });
        }
        Ok(())
    }
}

impl<S: Store> Store for FaultyStore<S> {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(tree, key)
    }

    fn range(&self, tree: Tree, from: Bound<&[u8]>, to: Bound<&[u8]>) -> store::Entries {
        self.inner.range(tree, from, to)
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        self.trip(&self.failing_applies, "writing")?;
        self.inner.apply(batch)
    }

    fn clear(&self, tree: Tree) -> Result<(), StoreError> {
        self.trip(&self.failing_applies, "clearing")?;
        self.inner.clear(tree)
    }

    fn has_tree(&self, tree: Tree) -> Result<bool, StoreError> {
        self.inner.has_tree(tree)
    }

    fn drop_tree(&self, tree: Tree) -> Result<(), StoreError> {
        self.inner.drop_tree(tree)
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.trip(&self.failing_syncs, "syncing")?;
        self.inner.sync()
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.inner.size_on_disk()
    }
}

impl<S: Store> Store for std::sync::Arc<S> {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).get(tree, key)
    }
    fn range(&self, tree: Tree, from: Bound<&[u8]>, to: Bound<&[u8]>) -> store::Entries {
        (**self).range(tree, from, to)
    }
    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        (**self).apply(batch)
    }
    fn clear(&self, tree: Tree) -> Result<(), StoreError> {
        (**self).clear(tree)
    }
    fn has_tree(&self, tree: Tree) -> Result<bool, StoreError> {
        (**self).has_tree(tree)
    }
    fn drop_tree(&self, tree: Tree) -> Result<(), StoreError> {
        (**self).drop_tree(tree)
    }
    fn sync(&self) -> Result<(), StoreError> {
        (**self).sync()
    }
    fn size_on_disk(&self) -> Result<u64, StoreError> {
        (**self).size_on_disk()
    }
}
