//! Durable journal append: events/s and bytes/s for ~1 KiB events at batch sizes
//! 1, 64 and 512, each append a transaction plus flush plus fdatasync (the real cost).
//!
//!     cargo bench --bench journal

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use evrelay::journal::{Journal, JournalSettings};
use evrelay::record::{Header, Record, RecordKind, ResumeToken};

fn event(i: u64) -> Record {
    let message = "x".repeat(700);
    let raw = format!(
        r#"{{"kind":"Event","apiVersion":"v1","metadata":{{"name":"api-0.{i}","namespace":"shop","uid":"uid-{i}","resourceVersion":"{i}"}},"involvedObject":{{"kind":"Pod","name":"api-0","namespace":"shop"}},"reason":"BackOff","message":"{message}","type":"Warning","count":1}}"#
    );
    Record {
        header: Header {
            kind: RecordKind::Event,
            uid: format!("uid-{i}"),
            resource_version: i.to_string(),
            namespace: "shop".into(),
            involved_kind: "Pod".into(),
            involved_name: "api-0".into(),
            reason: "BackOff".into(),
            event_type: "Warning".into(),
            count: 1,
            first_timestamp_ms: Some(1_700_000_000_000),
            last_timestamp_ms: Some(1_700_000_000_000),
            received_at_ms: 1_700_000_000_000,
            series_count: 0,
            series_last_observed_ms: None,
        },
        raw: raw.into_bytes(),
    }
}

fn durable_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("journal_append_durable");
    group.sample_size(20);
    for batch in [1u64, 64, 512] {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(&JournalSettings {
            data_dir: dir.path().to_path_buf(),
            cache_capacity_bytes: 16 * 1024 * 1024,
            max_bytes: 1 << 40,
            seen_ttl: std::time::Duration::from_secs(7200),
            retention: None,
        })
        .unwrap();
        let bytes: usize = (0..batch).map(|i| event(i).encode().len()).sum();
        group.throughput(Throughput::Elements(batch));
        group.bench_function(format!("batch_{batch}"), |b| {
            let mut next = 0u64;
            b.iter_batched(
                || {
                    let records: Vec<_> = (next..next + batch).map(event).collect();
                    next += batch;
                    let token = ResumeToken {
                        resource_version: next.to_string(),
                        timestamp_ms: 0,
                    };
                    (records, token)
                },
                |(records, token)| journal.append(&records, Some(&token)).unwrap(),
                BatchSize::SmallInput,
            )
        });
        eprintln!("batch {batch}: {bytes} record bytes per append");
    }
    group.finish();
}

fn record_codec(c: &mut Criterion) {
    let record = event(1);
    let bytes = record.encode();
    let mut group = c.benchmark_group("record");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("encode", |b| b.iter(|| record.encode()));
    group.bench_function("decode", |b| b.iter(|| Record::decode(&bytes).unwrap()));
    group.finish();
}

criterion_group!(benches, durable_append, record_codec);
criterion_main!(benches);
