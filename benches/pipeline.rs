//! The stages after the journal, per event: transform (parse the API server's JSON,
//! map it to Datadog events, bundled and unbundled) and encode (the `/intake/` JSON,
//! zstd and deflate) for a batch of 500 ~1 KiB events; and `dump`'s scan of a
//! 100k-record journal.
//!
//!     cargo bench --bench pipeline

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use evrelay::dump::{self, Filter};
use evrelay::event::KubeEvent;
use evrelay::journal::{Journal, JournalSettings};
use evrelay::record::{Header, Record, RecordKind};
use evrelay::ship::Occurrence;
use evrelay::sinks::datadog::{
    self, CollectedType, Compression, DatadogSettings, DdEvent, EventsSettings, Transform,
};

const BATCH: usize = 500;

fn raw(i: usize) -> Vec<u8> {
    let message = format!(
        "Back-off restarting failed container api in pod api-{i}: {}",
        "x".repeat(600)
    );
    format!(
        r#"{{"kind":"Event","apiVersion":"v1","metadata":{{"name":"api-{i}.17f2","namespace":"shop","uid":"0b6c-{i}","resourceVersion":"{i}","creationTimestamp":"2026-11-22T10:00:00Z"}},"involvedObject":{{"kind":"Pod","name":"api-{i}","namespace":"shop","uid":"pod-{i}","apiVersion":"v1","fieldPath":"spec.containers{{api}}"}},"reason":"BackOff","message":"{message}","source":{{"component":"kubelet","host":"node-{n}"}},"firstTimestamp":"2026-11-22T10:00:00Z","lastTimestamp":"2026-11-22T10:05:00Z","count":7,"type":"Warning","reportingComponent":"kubelet","reportingInstance":"node-{n}"}}"#,
        n = i % 10
    )
    .into_bytes()
}

fn occurrences(events: &[Vec<u8>]) -> Vec<Occurrence<'_>> {
    events
        .iter()
        .enumerate()
        .map(|(i, r)| Occurrence {
            seq: i as u64,
            event: KubeEvent::parse(r).unwrap(),
            received_at_ms: 0,
        })
        .collect()
}

fn transform_and_encode(c: &mut Criterion) {
    let events: Vec<Vec<u8>> = (0..BATCH).map(raw).collect();
    // Half the events are about one pod: bundling has something to group.
    let bursty: Vec<Vec<u8>> = (0..BATCH)
        .map(|i| raw(if i % 2 == 0 { 0 } else { i }))
        .collect();
    let datadog = DatadogSettings::default();
    // Unbundled mode sends only what collected_event_types names: every Pod here.
    let pods = [CollectedType {
        kind: "Pod".into(),
        ..Default::default()
    }];
    let mode = |mode: &str| {
        let events = EventsSettings {
            mode: mode.parse().unwrap(),
            filter: datadog::Filter::parse(&[], &pods, false, &[], &[]).unwrap(),
            ..Default::default()
        };
        Transform::new(&events, &datadog)
    };
    let (bundled, unbundled) = (mode("bundled"), mode("unbundled"));
    // A bench of a batch that maps to nothing measures nothing.
    for (name, t) in [("bundled", &bundled), ("unbundled", &unbundled)] {
        let mapped = t.map(&occurrences(&events));
        assert!(
            mapped.filtered.is_empty() && !mapped.outbound.is_empty(),
            "{name}: the batch maps to nothing"
        );
    }
    let mut group = c.benchmark_group("ship");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("transform_500_unbundled", |b| {
        b.iter(|| unbundled.map(&occurrences(&events)))
    });
    group.bench_function("transform_500_bundled", |b| {
        b.iter(|| bundled.map(&occurrences(&events)))
    });
    group.bench_function("transform_500_bundled_one_pod_in_two", |b| {
        b.iter(|| bundled.map(&occurrences(&bursty)))
    });
    let mapped = unbundled.map(&occurrences(&events)).outbound;
    let refs: Vec<&DdEvent> = mapped.iter().map(|o| &o.item).collect();
    for (name, compression) in [
        ("zstd", Compression::Zstd),
        ("deflate", Compression::Deflate),
    ] {
        group.bench_function(format!("encode_{name}_500"), |b| {
            b.iter(|| datadog::encode(&refs, "evrelay-0", compression))
        });
        let body = datadog::encode(&refs, "evrelay-0", compression);
        eprintln!(
            "one request of {BATCH} events: {} bytes raw JSON, {} bytes {name} ({:.1}x)",
            body.raw_len,
            body.bytes.len(),
            body.raw_len as f64 / body.bytes.len() as f64
        );
    }
    group.bench_function("transform_encode_500", |b| {
        b.iter(|| {
            let mapped = bundled.map(&occurrences(&events)).outbound;
            let refs: Vec<&DdEvent> = mapped.iter().map(|o| &o.item).collect();
            datadog::encode(&refs, "evrelay-0", Compression::Zstd)
        })
    });
    group.finish();
}

fn dump_scan(c: &mut Criterion) {
    const RECORDS: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&JournalSettings {
        data_dir: dir.path().to_path_buf(),
        cache_capacity_bytes: 16 * 1024 * 1024,
        max_bytes: 1 << 34,
        ..Default::default()
    })
    .unwrap();
    for chunk in (0..RECORDS).collect::<Vec<_>>().chunks(1000) {
        let records: Vec<Record> = chunk
            .iter()
            .map(|&i| {
                let mut header = Header::blank(RecordKind::Event, 1_700_000_000_000);
                header.uid = format!("uid-{i}");
                header.namespace = if i % 10 == 0 { "shop" } else { "web" }.into();
                header.reason = "BackOff".into();
                header.last_timestamp_ms = Some(1_700_000_000_000 + i as i64);
                Record {
                    header,
                    raw: raw(i),
                }
            })
            .collect();
        journal.append(&records, None).unwrap();
    }
    let mut group = c.benchmark_group("dump");
    group.sample_size(10);
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.bench_function("scan_100k_filter_namespace", |b| {
        let filter = Filter {
            namespace: Some("shop".into()),
            ..Default::default()
        };
        b.iter(|| dump::lines(&journal, "datadog", &filter).unwrap().len())
    });
    group.finish();
}

criterion_group!(benches, transform_and_encode, dump_scan);
criterion_main!(benches);
