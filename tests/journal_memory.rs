//! Reading a backlog keeps the journal's memory near `cache_capacity`.
//!
//! sled 0.34.7 as published counts a page against its cache only once 64
//! accesses queue up in that page's LRU shard (of 256), so a scan of a large
//! backlog keeps up to ~16k leaves in memory uncounted (~150 MiB for 1 KiB
//! records). evrelay builds a patched copy (`vendor/README.md`); this test
//! fails if that patch is lost.
//!
//! It counts live heap bytes with a counting allocator (deterministic, unlike
//! RSS), in a binary of its own so no other test allocates meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use evrelay::journal::{Journal, JournalSettings};
use evrelay::record::{Header, Record, RecordKind};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers every allocation to `System` unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size, Ordering::Relaxed);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MIB: usize = 1 << 20;

fn record(i: usize) -> Record {
    let mut header = Header::blank(RecordKind::Event, 1_700_000_000_000);
    header.uid = format!("uid-{i}");
    header.resource_version = i.to_string();
    let raw = format!(
        r#"{{"metadata":{{"uid":"uid-{i}","resourceVersion":"{i}"}},"message":"{}"}}"#,
        "m".repeat(1000)
    );
    Record {
        header,
        raw: raw.into_bytes(),
    }
}

#[test]
fn reading_a_backlog_stays_near_the_cache_capacity() {
    const RECORDS: usize = 60_000; // ~65 MB of records, ~7k sled leaves
    const CACHE: u64 = 2 * MIB as u64;
    let dir = tempfile::tempdir().unwrap();
    let config = JournalSettings {
        data_dir: dir.path().to_path_buf(),
        cache_capacity_bytes: CACHE,
        max_bytes: 1 << 30,
        ..Default::default()
    };
    {
        let journal = Journal::open(&config).unwrap();
        for start in (0..RECORDS).step_by(512) {
            let batch: Vec<Record> = (start..(start + 512).min(RECORDS)).map(record).collect();
            journal.append(&batch, None).unwrap();
        }
    }

    // A fresh open, as after a restart with a backlog; then read it all the way
    // the shipper does.
    let journal = Journal::open(&config).unwrap();
    let opened = LIVE.load(Ordering::Relaxed);
    let (mut after, mut read, mut peak) = (0, 0, opened);
    loop {
        let batch = journal.read_after(after, 500, 5 * MIB).unwrap();
        let Some(last) = batch.last() else { break };
        after = last.seq;
        read += batch.len();
        drop(batch);
        peak = peak.max(LIVE.load(Ordering::Relaxed));
    }
    assert_eq!(read, RECORDS, "every record read back");

    let grown = peak - opened;
    eprintln!(
        "reading {RECORDS} records grew the heap by {:.1} MiB",
        grown as f64 / MIB as f64
    );
    // Patched: the cache plus 256 shards × 3 uncounted leaves of ~10 KiB, under
    // 12 MiB. As published, sled keeps nearly every leaf: over 50 MiB here.
    assert!(
        grown < 16 * MIB,
        "reading {RECORDS} records grew the heap by {} MiB with a {} MiB cache; \
         is vendor/sled's LRU patch (vendor/README.md) still applied?",
        grown / MIB,
        CACHE as usize / MIB,
    );
}
