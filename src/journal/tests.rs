use std::path::PathBuf;

use super::*;
use crate::record::{DeadLetter, Header, RecordKind, Seen, SeenBucket, Term};

fn config(dir: &Path) -> JournalSettings {
    JournalSettings {
        data_dir: dir.to_path_buf(),
        cache_capacity_bytes: 1024 * 1024,
        max_bytes: 1 << 30,
        seen_ttl: Duration::from_secs(7200),
        retention: None,
    }
}

/// Writes one raw key into a tree, bypassing the journal's rules.
fn poke(j: &Journal, tree: Tree, key: &[u8], value: &[u8]) {
    let mut batch = Batch::default();
    batch.insert(tree, key, value);
    j.store().apply(batch).unwrap();
    j.sync().unwrap();
}

fn entries(j: &Journal, tree: Tree) -> usize {
    j.store().iter(tree).count()
}

fn event(uid: &str, rv: &str, count: u32) -> Record {
    Record {
        header: Header {
            kind: RecordKind::Event,
            uid: uid.into(),
            resource_version: rv.into(),
            namespace: "ns".into(),
            involved_kind: "Pod".into(),
            involved_name: "p".into(),
            reason: "Started".into(),
            event_type: "Normal".into(),
            count,
            first_timestamp_ms: None,
            last_timestamp_ms: Some(1),
            received_at_ms: 2,
            series_count: 0,
            series_last_observed_ms: None,
        },
        raw: format!(r#"{{"metadata":{{"uid":"{uid}"}}}}"#).into_bytes(),
    }
}

fn token(rv: &str) -> ResumeToken {
    ResumeToken {
        resource_version: rv.into(),
        timestamp_ms: 1,
    }
}

#[test]
fn append_read_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let j = Journal::open(&config(dir.path())).unwrap();
        assert_eq!(j.resume_token().unwrap(), None);
        let out = j
            .append(&[event("a", "1", 1), event("b", "2", 1)], Some(&token("2")))
            .unwrap();
        assert_eq!(out.journaled, 2);
        assert_eq!(out.head, 2);
        assert_eq!(*j.subscribe().borrow(), 2);
    }
    let j = Journal::open(&config(dir.path())).unwrap();
    assert_eq!(j.resume_token().unwrap(), Some(token("2")));
    assert_eq!(j.schema_version().unwrap(), SCHEMA_VERSION);
    let all: Vec<_> = j.read_after(0, 10, usize::MAX).unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].seq, 1);
    assert_eq!(all[1].record.as_ref().unwrap().header.uid, "b");
    // Sequence numbers continue after a reopen.
    let out = j.append(&[event("c", "3", 1)], None).unwrap();
    assert_eq!(out.head, 3);
}

#[test]
fn same_occurrence_is_journaled_once() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&config(dir.path())).unwrap();
    j.append(&[event("a", "1", 1)], None).unwrap();
    let out = j
        .append(
            &[event("a", "1", 1), event("a", "5", 2), event("a", "5", 2)],
            None,
        )
        .unwrap();
    assert_eq!(out.journaled, 1, "only the count bump is new");
    assert_eq!(out.duplicates, 2);
    assert_eq!(j.len(), 2);
}

#[test]
fn cursor_moves_forward_only() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&config(dir.path())).unwrap();
    assert_eq!(j.shipped_through("datadog").unwrap(), 0);
    j.mark_shipped("datadog", 5, &[]).unwrap();
    j.mark_shipped("datadog", 3, &[]).unwrap();
    assert_eq!(j.shipped_through("datadog").unwrap(), 5);
    assert_eq!(j.shipped_through("other").unwrap(), 0);
}

#[test]
fn read_after_respects_limits() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&config(dir.path())).unwrap();
    let batch: Vec<_> = (0..10).map(|i| event(&format!("u{i}"), "1", 1)).collect();
    j.append(&batch, None).unwrap();
    assert_eq!(j.read_after(0, 4, usize::MAX).unwrap().len(), 4);
    assert_eq!(j.read_after(8, 4, usize::MAX).unwrap().len(), 2);
    // A byte cap smaller than one record still yields that record.
    assert_eq!(j.read_after(0, 10, 1).unwrap().len(), 1);
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let j = Journal::open(&config(dir.path())).unwrap();
        poke(
            &j,
            Tree::Meta,
            META_SCHEMA,
            &(SCHEMA_VERSION + 1).to_be_bytes(),
        );
    }
    match Journal::open(&config(dir.path())) {
        Err(JournalError::SchemaTooNew { found, .. }) => assert_eq!(found, SCHEMA_VERSION + 1),
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("opened a journal from the future"),
    }
}

fn capped(dir: &Path, max_bytes: u64) -> Journal {
    Journal::open(&JournalSettings {
        max_bytes,
        ..config(dir)
    })
    .unwrap()
}

#[test]
fn byte_counter_follows_appends() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&config(dir.path())).unwrap();
    let batch = [event("a", "1", 1), event("b", "2", 1)];
    let expected: u64 = batch.iter().map(|r| r.encode().len() as u64).sum();
    j.append(&batch, None).unwrap();
    assert_eq!(j.counters().unwrap().record_bytes, expected);
}

#[test]
fn cap_removes_shipped_records_first() {
    let dir = tempfile::tempdir().unwrap();
    let one = event("u0", "1", 1).encode().len() as u64;
    let j = capped(dir.path(), one * 10);
    let first: Vec<_> = (0..8).map(|i| event(&format!("u{i}"), "1", 1)).collect();
    j.append(&first, None).unwrap();
    j.mark_shipped("datadog", 5, &[]).unwrap();
    let more: Vec<_> = (8..12).map(|i| event(&format!("u{i}"), "1", 1)).collect();
    let out = j.append(&more, None).unwrap();
    assert!(out.cap.evicted_shipped > 0, "{out:?}");
    assert_eq!(out.cap.dropped_pending, 0, "{out:?}");
    let counters = j.counters().unwrap();
    assert!(counters.record_bytes <= one * 9, "{counters:?}");
    assert_eq!(counters.evicted_shipped, out.cap.evicted_shipped);
    // Every pending record is still there.
    let left: Vec<u64> = j.iter().map(|r| r.unwrap().seq).collect();
    assert!((6..=12).all(|s| left.contains(&s)), "{left:?}");
}

#[test]
fn cap_drops_oldest_pending_with_a_gap_marker() {
    let dir = tempfile::tempdir().unwrap();
    let one = event("u0", "1", 1).encode().len() as u64;
    let j = capped(dir.path(), one * 10);
    for i in 0..15 {
        j.append(&[event(&format!("u{i}"), "1", 1)], None).unwrap();
    }
    let counters = j.counters().unwrap();
    assert!(counters.dropped_pending > 0, "{counters:?}");
    let records: Vec<Record> = j.iter().map(|r| r.unwrap().record.unwrap()).collect();
    let gaps: Vec<_> = records
        .iter()
        .filter(|r| r.header.kind == RecordKind::Gap)
        .collect();
    assert!(!gaps.is_empty());
    let gap: serde_json::Value = serde_json::from_slice(&gaps[0].raw).unwrap();
    assert_eq!(gap["reason"], "JournalFull");
    // The newest event always survives.
    assert!(records.iter().any(|r| r.header.uid == "u14"));
    // Counted bytes match what is stored.
    let stored: u64 = records.iter().map(|r| r.encode().len() as u64).sum();
    assert_eq!(j.counters().unwrap().record_bytes, stored);
}

#[test]
fn dead_letters_are_kept_with_the_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&config(dir.path())).unwrap();
    j.append(&[event("a", "1", 1), event("b", "2", 1)], None)
        .unwrap();
    let letter = DeadLetter {
        status: Some(400),
        reason: "HTTP 400: bad".into(),
        at_ms: 5,
    };
    j.mark_shipped("datadog", 2, &[(2, letter.clone())])
        .unwrap();
    assert_eq!(j.dead_letter(2).unwrap(), Some(letter));
    assert_eq!(j.dead_letter(1).unwrap(), None);
    assert_eq!(j.dead_count().unwrap(), 1);
    assert_eq!(j.shipped_through("datadog").unwrap(), 2);
}

#[test]
fn dedup_index_forgets_past_the_horizon() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&config(dir.path())).unwrap();
    let mut old = event("old", "1", 1);
    old.header.received_at_ms = 1_000;
    let mut new = event("new", "2", 1);
    new.header.received_at_ms = 5_000;
    j.append(&[old.clone(), new.clone()], None).unwrap();
    assert_eq!(j.forget_seen(2_000).unwrap(), 1);
    // The forgotten one would be journaled again; the remembered one would not.
    let out = j.append(&[old, new], None).unwrap();
    assert_eq!((out.journaled, out.duplicates), (1, 1));
}

#[test]
fn large_records_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&config(dir.path())).unwrap();
    let mut big = event("big", "1", 1);
    big.raw = vec![b'x'; 300 * 1024];
    j.append(&[big.clone()], None).unwrap();
    assert_eq!(
        j.read_after(0, 1, usize::MAX).unwrap()[0]
            .record
            .as_ref()
            .unwrap(),
        &big
    );
}

#[test]
fn shipped_token_never_points_past_an_undelivered_record() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&config(dir.path())).unwrap();
    assert_eq!(j.shipped_token(&["d"]).unwrap(), None);
    // Two writes: records 1-2 with token 10, records 3-4 with token 20.
    j.append(
        &[event("a", "9", 1), event("b", "10", 1)],
        Some(&token("10")),
    )
    .unwrap();
    j.append(
        &[event("c", "19", 1), event("d", "20", 1)],
        Some(&token("20")),
    )
    .unwrap();
    j.mark_shipped("d", 1, &[]).unwrap();
    assert_eq!(
        j.shipped_token(&["d"]).unwrap(),
        None,
        "write 1 not all delivered"
    );
    j.mark_shipped("d", 3, &[]).unwrap();
    assert_eq!(j.shipped_token(&["d"]).unwrap(), Some(token("10")));
    j.mark_shipped("d", 4, &[]).unwrap();
    assert_eq!(j.shipped_token(&["d"]).unwrap(), Some(token("20")));
    // A bookmark after the head is as good as the write before it.
    j.set_token(&token("25")).unwrap();
    assert_eq!(j.shipped_token(&["d"]).unwrap(), Some(token("25")));
    assert_eq!(entries(&j, Tree::Tokens), 1, "older entries pruned");
}

#[test]
fn begin_term_without_adoption_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&config(dir.path())).unwrap();
    j.append(&[event("a", "9", 1)], Some(&token("9"))).unwrap();
    let term = Term {
        epoch: 3,
        holder: "evrelay-0".into(),
    };
    let start = j.begin_term(&term, None, &["d"]).unwrap();
    assert_eq!(start.dropped_stale, 0);
    assert_eq!(j.term().unwrap(), Some(term));
    assert_eq!(j.shipped_through("d").unwrap(), 0);
    assert_eq!(j.resume_token().unwrap(), Some(token("9")));
    assert!(!j.seen_is_empty().unwrap());
}

#[test]
fn adopting_a_token_gives_up_the_stale_backlog_and_forgets_it() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&config(dir.path())).unwrap();
    j.append(
        &[event("a", "9", 1), event("b", "10", 1), event("c", "11", 1)],
        Some(&token("11")),
    )
    .unwrap();
    j.mark_shipped("d", 1, &[]).unwrap();
    let term = Term {
        epoch: 7,
        holder: "evrelay-1".into(),
    };
    let start = j
        .begin_term(&term, Some(Some(&token("5"))), &["d"])
        .unwrap();
    assert_eq!(start.dropped_stale, 2);
    assert_eq!(j.counters().unwrap().dropped_stale, 2);
    assert_eq!(j.resume_token().unwrap(), Some(token("5")));
    assert_eq!(j.shipped_token(&["d"]).unwrap(), Some(token("5")));
    assert_eq!(j.term().unwrap(), Some(term));
    // The adopted token re-delivers b and c: they must be journaled again, not
    // skipped as duplicates.
    assert!(j.seen_is_empty().unwrap());
    let again = j.append(&[event("b", "10", 1)], None).unwrap();
    assert_eq!(again.journaled, 1);
    // A gap marker names what was given up; nothing is pending before it.
    let gap = j
        .iter()
        .map(|r| r.unwrap())
        .find(|r| r.record.as_ref().unwrap().header.kind == RecordKind::Gap)
        .expect("gap marker");
    assert_eq!(gap.seq, 4);
    assert_eq!(j.shipped_through("d").unwrap(), 4);
    let text = String::from_utf8(gap.record.unwrap().raw).unwrap();
    assert!(text.contains("StaleBacklogDropped"), "{text}");
}

#[test]
fn adopting_nothing_starts_over_with_a_list() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&config(dir.path())).unwrap();
    j.append(&[event("a", "9", 1)], Some(&token("9"))).unwrap();
    let term = Term {
        epoch: 1,
        holder: "x".into(),
    };
    j.begin_term(&term, Some(None), &["d"]).unwrap();
    assert_eq!(j.resume_token().unwrap(), None);
    drop(j);
    let j = Journal::open(&config(dir.path())).unwrap();
    assert_eq!(j.term().unwrap().unwrap().epoch, 1, "durable across reopen");
}

/// A copy of a journal kept under `tests/fixtures/journal-schema{version}/`,
/// written by that schema's code (the program is next to it).
fn fixture(version: u32) -> tempfile::TempDir {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/journal-schema{version}/journal"));
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("journal");
    std::fs::create_dir_all(to.join("blobs")).unwrap();
    for f in ["conf", "db"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
    dir
}

#[test]
fn a_schema_1_journal_is_migrated_and_keeps_every_record() {
    let dir = fixture(1);
    let j = Journal::open(&config(dir.path())).unwrap();
    assert_eq!(j.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(SCHEMA_VERSION, 4);
    let records: Vec<_> = j.iter().map(|r| r.unwrap().record.unwrap()).collect();
    assert_eq!(records.len(), 51);
    let uids: Vec<_> = records
        .iter()
        .filter(|r| r.header.kind == RecordKind::Event)
        .map(|r| r.header.uid.clone())
        .collect();
    let expected: Vec<_> = (0..50).map(|i| format!("uid-{i:03}")).collect();
    assert_eq!(uids, expected);
    assert_eq!(records[50].header.kind, RecordKind::Gap);
    assert_eq!(j.shipped_through("datadog").unwrap(), 51);
    assert_eq!(j.dead_letter(7).unwrap().unwrap().status, Some(400));
    let token = j.resume_token().unwrap().unwrap();
    assert_eq!(token.resource_version, "1049");
    // The step filed the token under the head: everything was shipped.
    assert_eq!(j.shipped_token(&["datadog"]).unwrap(), Some(token));
    assert!(!j.seen_is_empty().unwrap(), "the dedup index survives");
}

/// An occurrence of a fixture event as its writer made it (`written-by.rs`).
fn fixture_event(i: u32, count: u32) -> Record {
    let mut r = event(
        &format!("uid-{i:03}"),
        &format!("{}", 1000 * count + i),
        count,
    );
    r.header.last_timestamp_ms = Some(1_700_000_000_000 + i as i64 + count as i64 * 1000);
    r
}

/// The occurrences `written-by.rs` journaled into the schema-2 fixture: are they
/// still known as such (duplicates), and is everything else still new?
fn assert_schema_2_dedup_kept(j: &Journal) {
    let out = j
        .append(
            &[
                fixture_event(5, 1),
                fixture_event(19, 2),
                fixture_event(150, 1),
            ],
            None,
        )
        .unwrap();
    assert_eq!((out.journaled, out.duplicates), (0, 3), "seen before");
    let out = j
        .append(
            &[
                fixture_event(5, 3),
                fixture_event(20, 2),
                event("uid-new", "9", 1),
            ],
            None,
        )
        .unwrap();
    assert_eq!((out.journaled, out.duplicates), (3, 0), "new occurrences");
}

#[test]
fn a_schema_2_journal_moves_its_dedup_index_into_buckets() {
    let dir = fixture(2);
    let j = Journal::open(&config(dir.path())).unwrap();
    assert_eq!(j.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(j.len(), 221);
    let records: Vec<_> = j.iter().map(|r| r.unwrap().record.unwrap()).collect();
    assert_eq!(records[0].header.uid, "uid-000");
    assert_eq!(records[219].header.uid, "uid-019");
    assert_eq!(records[219].header.count, 2);
    assert_eq!(records[220].header.kind, RecordKind::Gap);
    assert_eq!(j.shipped_through("datadog").unwrap(), 150);
    assert_eq!(j.dead_letter(7).unwrap().unwrap().status, Some(400));
    assert_eq!(j.resume_token().unwrap().unwrap().resource_version, "2019");
    assert!(
        !j.store().has_tree(Tree::LegacySeen).unwrap(),
        "the schema-2 tree is dropped"
    );
    assert_schema_2_dedup_kept(&j);
    // The horizon still applies to migrated entries (journaled in 2023).
    assert_eq!(j.forget_seen(1_800_000_000_000).unwrap(), 201);
    assert!(j.seen_is_empty().unwrap());
}

#[test]
fn a_migration_run_again_changes_nothing() {
    for version in [1, 2, 3] {
        let dir = fixture(version);
        let j = Journal::open(&config(dir.path())).unwrap();
        let (len, tokens) = (j.len(), entries(&j, Tree::Tokens));
        // As if killed after the steps committed their changes but before
        // anything else: force the old version back and open again.
        poke(&j, Tree::Meta, META_SCHEMA, &version.to_be_bytes());
        drop(j);
        let j = Journal::open(&config(dir.path())).unwrap();
        assert_eq!(j.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!((j.len(), entries(&j, Tree::Tokens)), (len, tokens));
        assert!(
            !j.seen_is_empty().unwrap(),
            "schema {version}: the dedup index survives"
        );
        if version >= 2 {
            assert_schema_2_dedup_kept(&j);
        }
    }
}

#[test]
fn a_schema_2_migration_killed_before_its_version_write_starts_over() {
    let dir = fixture(2);
    {
        // What a killed step left in `seen_buckets` is not trusted: the index is
        // rebuilt from `seen` alone (so `uid-new`, never journaled, stays new).
        let store = sled_store::SledStore::open(&dir.path().join("journal"), 1 << 20).unwrap();
        let mut left = SeenBucket::default();
        let seen = Seen {
            count: 1,
            last_timestamp_ms: None,
            journaled_at_ms: 0,
        };
        left.set("uid-new", seen);
        let mut batch = Batch::default();
        batch.insert(Tree::SeenBuckets, SeenBucket::key("uid-new"), left.encode());
        store.apply(batch).unwrap();
        store.sync().unwrap();
    }
    let j = Journal::open(&config(dir.path())).unwrap();
    assert_eq!(j.schema_version().unwrap(), SCHEMA_VERSION);
    assert_schema_2_dedup_kept(&j);
}

#[test]
fn retention_removes_old_shipped_records_only() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&config(dir.path())).unwrap();
    let at = |uid: &str, received: i64| {
        let mut r = event(uid, "1", 1);
        r.header.received_at_ms = received;
        r
    };
    j.append(
        &[at("a", 100), at("b", 200), at("c", 300), at("d", 400)],
        None,
    )
    .unwrap();
    j.mark_shipped("d", 3, &[]).unwrap();
    let before = j.counters().unwrap().record_bytes;
    // a and b are older than 250 and shipped; c is newer; d is pending.
    assert_eq!(j.expire_shipped(250).unwrap(), 2);
    let left: Vec<u64> = j.iter().map(|r| r.unwrap().seq).collect();
    assert_eq!(left, [3, 4]);
    assert!(j.counters().unwrap().record_bytes < before);
    // Pending records are never removed by age, however old.
    assert_eq!(j.expire_shipped(i64::MAX).unwrap(), 1);
    let left: Vec<u64> = j.iter().map(|r| r.unwrap().seq).collect();
    assert_eq!(left, [4]);
}

#[test]
fn the_record_count_follows_appends_and_removals() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_bytes = 64 * 1024;
    let j = Journal::open(&cfg).unwrap();
    assert_eq!(j.len(), 0);
    for i in 0..200 {
        let mut r = event(&format!("u{i}"), "1", 1);
        r.raw = vec![b'x'; 1000];
        j.append(&[r], None).unwrap();
        assert_eq!(j.len(), entries(&j, Tree::Events), "after append {i}");
    }
    assert!(j.len() < 200, "the cap removed some");
    j.mark_shipped("d", u64::MAX, &[]).unwrap();
    j.expire_shipped(i64::MAX).unwrap();
    assert_eq!(j.len(), entries(&j, Tree::Events));
    assert_eq!(j.len(), 0);
}

fn faulty() -> (
    Journal,
    std::sync::Arc<testing::FaultyStore<testing::MemoryStore>>,
) {
    let store = std::sync::Arc::new(testing::FaultyStore::new(testing::MemoryStore::default()));
    let j =
        Journal::with_store(Box::new(store.clone()), PathBuf::from("(faulty)"), 1 << 30).unwrap();
    (j, store)
}

#[test]
fn a_refused_write_is_reported_with_its_cause_and_changes_nothing() {
    let (j, store) = faulty();
    j.append(&[event("a", "1", 1)], Some(&token("1"))).unwrap();
    store.fail_applies(1, std::io::ErrorKind::StorageFull);
    match j.append(&[event("b", "2", 1)], Some(&token("2"))) {
        Err(JournalError::Store(e)) => {
            assert_eq!(e.io_kind(), Some(std::io::ErrorKind::StorageFull))
        }
        other => panic!("expected the store's error, got {other:?}"),
    }
    assert_eq!((j.len(), j.head()), (1, 1));
    assert_eq!(
        j.resume_token().unwrap(),
        Some(token("1")),
        "the token did not move"
    );
    // The disk is back: the next write goes on where the journal was.
    let out = j.append(&[event("b", "2", 1)], Some(&token("2"))).unwrap();
    assert_eq!((out.journaled, out.head), (1, 2));
}

#[test]
fn a_failed_sync_is_not_an_acknowledgement() {
    let (j, store) = faulty();
    let head = j.subscribe();
    store.fail_syncs(1, std::io::ErrorKind::Other);
    assert!(j.append(&[event("a", "1", 1)], None).is_err());
    assert_eq!(
        *head.borrow(),
        0,
        "the shipper is not told of a record that may not be durable"
    );
    assert!(j.mark_shipped("datadog", 0, &[]).is_ok());
}

#[test]
fn a_schema_3_journal_reads_its_records_and_writes_series_after_them() {
    let dir = fixture(3);
    let j = Journal::open(&config(dir.path())).unwrap();
    assert_eq!(j.schema_version().unwrap(), 4);
    assert_eq!(j.len(), 221);
    let records: Vec<_> = j.iter().map(|r| r.unwrap().record.unwrap()).collect();
    assert_eq!(records[0].header.uid, "uid-000");
    assert_eq!(records[219].header.count, 2);
    assert!(records.iter().all(|r| r.header.series_count == 0));
    assert_eq!(j.shipped_through("datadog").unwrap(), 150);
    assert_eq!(j.dead_letter(7).unwrap().unwrap().status, Some(400));
    assert_eq!(j.resume_token().unwrap().unwrap().resource_version, "2019");
    // The schema-3 dedup index still knows every occurrence.
    assert_schema_2_dedup_kept(&j);
    // A series occurrence of a known uid is new; the record keeps its series.
    let mut series = fixture_event(21, 0);
    series.header.series_count = 3;
    series.header.series_last_observed_ms = Some(1_700_000_009_000);
    let out = j.append(&[series.clone()], None).unwrap();
    assert_eq!(out.journaled, 1);
    let last = j.read_after(out.head - 1, 1, usize::MAX).unwrap();
    assert_eq!(last[0].record.as_ref().unwrap(), &series);
}

#[test]
fn sequence_numbers_never_restart_below_a_cursor_even_with_every_record_gone() {
    let store = std::sync::Arc::new(testing::MemoryStore::default());
    let open = || {
        Journal::with_store(Box::new(store.clone()), PathBuf::from("(memory)"), 1 << 30).unwrap()
    };
    let j = open();
    j.append(
        &[event("a", "1", 1), event("b", "2", 1), event("c", "3", 1)],
        None,
    )
    .unwrap();
    j.mark_shipped("datadog", 3, &[]).unwrap();
    assert_eq!(
        j.expire_shipped(i64::MAX).unwrap(),
        3,
        "retention removed every record"
    );
    drop(j);
    assert_eq!(open().head(), 3, "the kept head");
    // A journal from before the head was kept: the cursor still bounds it.
    let mut batch = Batch::default();
    batch.remove(Tree::Meta, META_HEAD);
    (store.as_ref() as &dyn Store).apply(batch).unwrap();
    let j = open();
    assert_eq!(j.head(), 3);
    let out = j.append(&[event("d", "4", 1)], None).unwrap();
    assert_eq!(out.head, 4, "a new record is after the cursor, so it ships");
    assert_eq!(j.pending("datadog").unwrap(), 1);
}

#[test]
fn damage_met_on_disk_is_not_taken_for_a_disk_that_refuses_writes() {
    let damaged = JournalError::Store(StoreError::Io {
        what: "reading",
        path: PathBuf::from("x"),
        source: std::io::Error::from(std::io::ErrorKind::InvalidData),
    });
    assert!(damaged.is_damage() && !damaged.is_unwritable());
    let full = JournalError::Store(StoreError::Io {
        what: "writing",
        path: PathBuf::from("x"),
        source: std::io::Error::from(std::io::ErrorKind::StorageFull),
    });
    assert!(full.is_unwritable() && !full.is_damage());
}
