//! The journal's [`Store`] on sled 0.34 (vendored: `vendor/README.md`). The one
//! file that knows sled: its trees, its transactions, and the durability it does
//! not provide by itself.
//!
//! - sled's flush writes its log with `sync_file_range`, which does not reach the
//!   device; [`SledStore::sync`] follows it with an `fdatasync` of the log file.
//! - sled writes values over a quarter of a segment (512 KiB by default) to files
//!   of their own under `blobs/`, and never fsyncs them; after a batch with a value
//!   of [`BLOB_THRESHOLD`] or more, `sync` fsyncs the new blob files and their
//!   directory.
//! - sled holds an exclusive lock on its `db` file; another process's open fails
//!   with [`StoreError::Locked`].

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sled::Transactional;

use super::store::{Batch, Entries, Store, StoreError, Tree};

const DB_FILE: &str = "db";
const BLOBS_DIR: &str = "blobs";
/// Values this large may land in a blob file (kept below sled's own threshold).
pub const BLOB_THRESHOLD: usize = 64 * 1024;

/// How long `open` waits for sled's lock. A store dropped in this process releases
/// it only once sled's background threads finish, a few milliseconds later;
/// another process holding it is reported after this wait.
const LOCK_WAIT: Duration = Duration::from_secs(3);

pub struct SledStore {
    path: PathBuf,
    db: sled::Db,
    trees: [sled::Tree; 5],
    /// sled's log file, for the fdatasync sled 0.34 does not do itself.
    db_file: File,
    /// A value large enough for a blob file was written since the last sync.
    blobs_dirty: AtomicBool,
    /// Blob files already fsynced.
    synced_blobs: Mutex<HashSet<OsString>>,
}

impl SledStore {
    /// Opens (creating if needed) the store in directory `path`, with a page cache
    /// of `cache_capacity` bytes.
    pub fn open(path: &Path, cache_capacity: u64) -> Result<Self, StoreError> {
        let db = open_db(path, cache_capacity)?;
        let err = |e| convert(path, "opening", e);
        let trees = Tree::CURRENT.map(|t| db.open_tree(t.name()));
        let [events, seen, meta, dead, tokens] = trees;
        let trees = [
            events.map_err(err)?,
            seen.map_err(err)?,
            meta.map_err(err)?,
            dead.map_err(err)?,
            tokens.map_err(err)?,
        ];
        let db_file = File::open(path.join(DB_FILE)).map_err(|source| StoreError::Io {
            what: "opening the log file",
            path: path.to_path_buf(),
            source,
        })?;
        Ok(SledStore {
            path: path.to_path_buf(),
            db,
            trees,
            db_file,
            blobs_dirty: AtomicBool::new(false),
            synced_blobs: Mutex::default(),
        })
    }

    fn tree(&self, tree: Tree) -> Result<sled::Tree, StoreError> {
        match Tree::CURRENT.iter().position(|t| *t == tree) {
            Some(i) => Ok(self.trees[i].clone()),
            None => self
                .db
                .open_tree(tree.name())
                .map_err(|e| self.err("opening a tree", e)),
        }
    }

    fn err(&self, what: &'static str, e: sled::Error) -> StoreError {
        convert(&self.path, what, e)
    }

    /// fsyncs the blob files written since the last call, and their directory.
    fn sync_blobs(&self) -> Result<(), StoreError> {
        let dir = self.path.join(BLOBS_DIR);
        let err = |source| StoreError::Io {
            what: "syncing blob files",
            path: dir.clone(),
            source,
        };
        let mut synced = self.synced_blobs.lock().expect("blob set poisoned");
        let mut present = HashSet::new();
        for entry in std::fs::read_dir(&dir).map_err(err)? {
            let name = entry.map_err(err)?.file_name();
            if !synced.contains(&name) {
                File::open(dir.join(&name))
                    .and_then(|f| f.sync_data())
                    .map_err(err)?;
            }
            present.insert(name);
        }
        File::open(&dir).and_then(|d| d.sync_all()).map_err(err)?;
        *synced = present;
        Ok(())
    }
}

impl Store for SledStore {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let value = self
            .tree(tree)?
            .get(key)
            .map_err(|e| self.err("reading", e))?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn range(&self, tree: Tree, from: Bound<&[u8]>, to: Bound<&[u8]>) -> Entries {
        let tree = match self.tree(tree) {
            Ok(t) => t,
            Err(e) => return Box::new(std::iter::once(Err(e))),
        };
        let owned = |b: Bound<&[u8]>| b.map(<[u8]>::to_vec);
        let path = self.path.clone();
        Box::new(
            tree.range::<Vec<u8>, _>((owned(from), owned(to)))
                .map(move |item| {
                    item.map(|(k, v)| (k.to_vec(), v.to_vec()))
                        .map_err(|e| convert(&path, "reading", e))
                }),
        )
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.largest_value() >= BLOB_THRESHOLD {
            self.blobs_dirty.store(true, Ordering::Release);
        }
        let mut touched: Vec<Tree> = batch.ops().map(|(t, _, _)| t).collect();
        touched.sort();
        touched.dedup();
        if let [only] = touched[..] {
            // One tree: sled's own batch is atomic and cheaper than a transaction.
            let mut writes = sled::Batch::default();
            for (_, key, value) in batch.ops() {
                match value {
                    Some(v) => writes.insert(key, v),
                    None => writes.remove(key),
                }
            }
            return self
                .tree(only)?
                .apply_batch(writes)
                .map_err(|e| self.err("writing", e));
        }
        let trees = touched
            .iter()
            .map(|t| self.tree(*t))
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&sled::Tree> = trees.iter().collect();
        refs.as_slice()
            .transaction(|view| {
                for (tree, key, value) in batch.ops() {
                    let at = touched.iter().position(|t| *t == tree).expect("touched");
                    match value {
                        Some(v) => view[at].insert(key, v)?,
                        None => view[at].remove(key)?,
                    };
                }
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(e) => self.err("writing", e),
                sled::transaction::TransactionError::Abort(()) => {
                    unreachable!("the batch's transaction never aborts")
                }
            })
    }

    fn clear(&self, tree: Tree) -> Result<(), StoreError> {
        self.tree(tree)?
            .clear()
            .map_err(|e| self.err("clearing a tree", e))
    }

    fn has_tree(&self, tree: Tree) -> Result<bool, StoreError> {
        Ok(self
            .db
            .tree_names()
            .iter()
            .any(|name| name == tree.name().as_bytes()))
    }

    fn drop_tree(&self, tree: Tree) -> Result<(), StoreError> {
        self.db
            .drop_tree(tree.name())
            .map(|_| ())
            .map_err(|e| self.err("dropping a tree", e))
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(|e| self.err("flushing", e))?;
        self.db_file.sync_data().map_err(|source| StoreError::Io {
            what: "fsyncing the log file",
            path: self.path.clone(),
            source,
        })?;
        if self.blobs_dirty.swap(false, Ordering::AcqRel) {
            self.sync_blobs()?;
        }
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.db.size_on_disk().map_err(|e| self.err("measuring", e))
    }
}

fn open_db(path: &Path, cache_capacity: u64) -> Result<sled::Db, StoreError> {
    let started = Instant::now();
    loop {
        let result = sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity)
            .open();
        match result {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(io)) if io.kind() == std::io::ErrorKind::WouldBlock => {
                if started.elapsed() >= LOCK_WAIT {
                    return Err(StoreError::Locked(path.to_path_buf()));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(convert(path, "opening", e)),
        }
    }
}

fn convert(path: &Path, what: &'static str, e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(source) => StoreError::Io {
            what,
            path: path.to_path_buf(),
            source,
        },
        other => StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("{what}: {other}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_records_have_their_blob_files_synced() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        let mut batch = Batch::default();
        batch.insert(Tree::Events, 1u64.to_be_bytes(), vec![b'x'; 300 * 1024]);
        store.apply(batch).unwrap();
        store.sync().unwrap();
        let blobs: Vec<_> = std::fs::read_dir(dir.path().join(BLOBS_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            !blobs.is_empty(),
            "sled kept a 300 KiB value inline: threshold changed?"
        );
        let synced = store.synced_blobs.lock().unwrap();
        assert!(
            blobs.iter().all(|b| synced.contains(b)),
            "a blob file was not fsynced"
        );
    }

    #[test]
    fn a_batch_over_several_trees_is_applied_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        let mut batch = Batch::default();
        batch.insert(Tree::Events, [1], [10]);
        batch.insert(Tree::Meta, [2], [20]);
        batch.remove(Tree::Dead, [3]);
        store.apply(batch).unwrap();
        assert_eq!(store.get(Tree::Events, &[1]).unwrap(), Some(vec![10]));
        assert_eq!(store.get(Tree::Meta, &[2]).unwrap(), Some(vec![20]));
    }

    #[test]
    fn a_second_open_is_told_the_store_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _first = SledStore::open(dir.path(), 1 << 20).unwrap();
        // Another process would hold the lock; in this process, sled's own lock on
        // the `db` file is what refuses the second open (after LOCK_WAIT).
        let started = Instant::now();
        match SledStore::open(dir.path(), 1 << 20) {
            Err(StoreError::Locked(path)) => assert_eq!(path, dir.path()),
            Err(other) => panic!("unexpected error: {other}"),
            Ok(_) => panic!("opened a locked store"),
        }
        assert!(started.elapsed() >= LOCK_WAIT);
    }
}
