//! The seam between the journal's policies and the bytes on disk: a handful of
//! ordered key-value trees, read by key or range, written by atomic batches, made
//! durable by `sync`. The journal (append and dedup, the byte cap, terms,
//! migrations) is written against [`Store`] alone; `sled_store.rs` is the one
//! implementation that touches sled, and the tests put in-memory and
//! fault-injecting stores in its place.

use std::ops::Bound;
use std::path::PathBuf;

/// The journal's trees (their contents: `journal/mod.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tree {
    Events,
    SeenBuckets,
    Meta,
    Dead,
    Tokens,
    /// Schema 2's dedup index (one key per uid), read and dropped by migration 3.
    LegacySeen,
}

impl Tree {
    /// Every tree the current schema has.
    pub const CURRENT: [Tree; 5] = [
        Tree::Events,
        Tree::SeenBuckets,
        Tree::Meta,
        Tree::Dead,
        Tree::Tokens,
    ];

    /// Its name on disk.
    pub fn name(self) -> &'static str {
        match self {
            Tree::Events => "events",
            Tree::SeenBuckets => "seen_buckets",
            Tree::Meta => "meta",
            Tree::Dead => "dead",
            Tree::Tokens => "tokens",
            Tree::LegacySeen => "seen",
        }
    }
}

/// Writes to apply together: all of them or none, across trees.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Batch {
    ops: Vec<(Tree, Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub fn insert(&mut self, tree: Tree, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((tree, key.into(), Some(value.into())));
    }

    pub fn remove(&mut self, tree: Tree, key: impl Into<Vec<u8>>) {
        self.ops.push((tree, key.into(), None));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The writes in order: (tree, key, value), `None` for a removal.
    pub fn ops(&self) -> impl Iterator<Item = (Tree, &[u8], Option<&[u8]>)> {
        self.ops
            .iter()
            .map(|(t, k, v)| (*t, k.as_slice(), v.as_deref()))
    }

    /// The bytes of every value written, for stores that treat large values apart.
    pub fn largest_value(&self) -> usize {
        self.ops
            .iter()
            .filter_map(|(_, _, v)| v.as_ref().map(Vec::len))
            .max()
            .unwrap_or(0)
    }
}

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Entries in key order, from either end. They own what they read from: a store
/// may be replaced (reopened) while an iterator over the old one is still in use.
pub type Entries = Box<dyn DoubleEndedIterator<Item = Result<Entry, StoreError>> + Send>;

/// Why the store failed. The first error of a failing disk is the one reported.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing failed: the device, the filesystem, or damage the store
    /// detected.
    #[error("{what} at {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The store found its own files inconsistent.
    #[error("the store at {path} is damaged: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    /// Another process has the store open.
    #[error("{0} is in use by another process")]
    Locked(PathBuf),
}

impl StoreError {
    /// Whether the store's files are damaged, as opposed to unreachable.
    pub fn is_damage(&self) -> bool {
        match self {
            StoreError::Corrupt { .. } => true,
            StoreError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ),
            StoreError::Locked(_) => false,
        }
    }

    /// The operating system's error, where there is one (ENOSPC, EROFS, …).
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            StoreError::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}

/// Ordered trees of bytes with atomic multi-tree batches.
///
/// Writes are not isolated from each other: the journal serialises every
/// read-modify-write under its own lock, so a store needs only atomicity and
/// durability. Every method blocks on disk I/O.
pub trait Store: Send + Sync + 'static {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// The entries with keys between `from` and `to`.
    fn range(&self, tree: Tree, from: Bound<&[u8]>, to: Bound<&[u8]>) -> Entries;

    /// Applies every write of `batch`, or none of them.
    fn apply(&self, batch: Batch) -> Result<(), StoreError>;

    /// Empties a tree (not atomic with anything else; the caller orders it).
    fn clear(&self, tree: Tree) -> Result<(), StoreError>;

    /// Whether a tree exists on disk (for migrations that retire one).
    fn has_tree(&self, tree: Tree) -> Result<bool, StoreError>;

    /// Deletes a tree and its entries, atomically.
    fn drop_tree(&self, tree: Tree) -> Result<(), StoreError>;

    /// Makes every write applied so far durable, down to the device.
    fn sync(&self) -> Result<(), StoreError>;

    /// Bytes the store occupies on disk.
    fn size_on_disk(&self) -> Result<u64, StoreError>;
}

impl dyn Store {
    /// Every entry of a tree.
    pub fn iter(&self, tree: Tree) -> Entries {
        self.range(tree, Bound::Unbounded, Bound::Unbounded)
    }

    /// The entry with the highest key.
    pub fn last(&self, tree: Tree) -> Result<Option<Entry>, StoreError> {
        self.iter(tree).next_back().transpose()
    }
}

/// A store in the gap between closing a failed store and opening it again: every
/// call fails. Nothing reaches it but a reader racing the reopen.
pub(super) struct Unavailable;

impl Unavailable {
    fn error() -> StoreError {
        StoreError::Io {
            what: "reopening",
            path: PathBuf::new(),
            source: std::io::Error::other("the journal is being reopened"),
        }
    }
}

impl Store for Unavailable {
    fn get(&self, _: Tree, _: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Err(Self::error())
    }
    fn range(&self, _: Tree, _: Bound<&[u8]>, _: Bound<&[u8]>) -> Entries {
        Box::new(std::iter::once(Err(Self::error())))
    }
    fn apply(&self, _: Batch) -> Result<(), StoreError> {
        Err(Self::error())
    }
    fn clear(&self, _: Tree) -> Result<(), StoreError> {
        Err(Self::error())
    }
    fn has_tree(&self, _: Tree) -> Result<bool, StoreError> {
        Err(Self::error())
    }
    fn drop_tree(&self, _: Tree) -> Result<(), StoreError> {
        Err(Self::error())
    }
    fn sync(&self) -> Result<(), StoreError> {
        Err(Self::error())
    }
    fn size_on_disk(&self) -> Result<u64, StoreError> {
        Err(Self::error())
    }
}
