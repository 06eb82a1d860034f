//! The end-to-end bench: the real control plane, evrelay, and an intake that
//! records when each event arrives. Run on demand, never in CI:
//!
//!     cargo test --release --test bench_e2e -- --ignored --nocapture
//!     EVRELAY_BENCH_RATE=500 EVRELAY_BENCH_SECONDS=300 cargo test --release --test bench_e2e steady -- --ignored --nocapture
//!
//! `EVRELAY_BENCH_PIN=1` puts evrelay alone on CPU 1 and everything else on CPU 0
//! (`taskset`), to tell evrelay's own share of the lag from contention.
//! `EVRELAY_BENCH_LOG=1` prints evrelay's log after the start-up scenario (where
//! the time to the first batch goes).
//!
//! Each scenario prints one `bench:` line: events/s created and delivered, delivery
//! lag p50/p99/max (intake arrival − API server acceptance), evrelay CPU-seconds per
//! 100k events, peak RSS, journal bytes per event, and the API server's LIST and
//! WATCH requests on events. Figures go to BENCHMARKS.md; nothing is asserted
//! about speed here (only that nothing was lost).

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::bench::{Arrivals, env_or, first_arrival, percentile, pin, recording_intake, usage};
use support::load::{self, Load, Occurrence};
use support::{ControlPlane, Evrelay, eventually};

struct Report {
    occurrences: Vec<Occurrence>,
    seconds: f64,
}

async fn scenario(name: &str, load: Load, outage: Option<Duration>) {
    let cp = ControlPlane::start();
    let (url, received, down) = recording_intake().await;
    let data = cp.data_dir("bench");
    let evrelay: Evrelay = cp.spawn_evrelay_with(
        &data,
        &[
            ("DD_URL", url.as_str()),
            ("RUST_LOG", "info"),
            ("POD_NAME", "evrelay-0"),
            // The bundle window: how long a partial batch gathers.
            (
                "EVRELAY_SHIP_FLUSH_INTERVAL_MS",
                &std::env::var("EVRELAY_BENCH_FLUSH_MS").unwrap_or_else(|_| "200".into()),
            ),
        ],
    );
    let pid = evrelay.pid();
    if std::env::var_os("EVRELAY_BENCH_PIN").is_some() {
        // evrelay alone on CPU 1; the control plane, the intake and the load
        // generator (this process) on CPU 0: evrelay's own share of the lag,
        // without contention.
        pin(pid, "1");
        for other in cp.pids().into_iter().chain([std::process::id()]) {
            pin(other, "0");
        }
    }
    // Wait for the watch before loading, so start-up is not counted as lag.
    let deadline = Instant::now() + Duration::from_secs(60);
    while evrelay.admin_get("/readyz").await != (200, "leader, watching\n".to_owned()) {
        assert!(
            Instant::now() < deadline,
            "evrelay did not start; log:\n{}",
            evrelay.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let started = Instant::now();
    if outage.is_some() {
        down.store(true, Ordering::Relaxed);
    }
    let occurrences = load::run(cp.client().await, &load).await;
    if let Some(outage) = outage {
        // The load ran for the outage's length; the intake comes back now, and
        // the whole backlog drains.
        let elapsed = started.elapsed();
        if elapsed < outage {
            tokio::time::sleep(outage - elapsed).await;
        }
        let backlog = occurrences.len();
        down.store(false, Ordering::Relaxed);
        let back = Instant::now();
        // The shipper is asleep in its retry backoff (capped at
        // ship.max_backoff_seconds); the drain proper starts at the first 2xx.
        assert!(first_arrival(&received).await);
        let resumed = back.elapsed();
        let first = Instant::now();
        let mut arrivals = Arrivals::default();
        let ids: Vec<&str> = occurrences.iter().map(|o| o.id.as_str()).collect();
        assert!(
            eventually(Duration::from_secs(600), || {
                arrivals.update(&received);
                ids.iter().all(|id| arrivals.first.contains_key(*id))
            })
            .await
        );
        let drain = first.elapsed().as_secs_f64();
        eprintln!(
            "bench: {name} backlog={backlog} first_2xx_after_recovery={resumed:.1?} drained_in={drain:.1}s drain_rate={:.0}/s",
            backlog as f64 / drain
        );
    }
    let report = Report {
        seconds: started.elapsed().as_secs_f64(),
        occurrences,
    };
    let ids: Vec<&str> = report.occurrences.iter().map(|o| o.id.as_str()).collect();
    let mut arrivals = Arrivals::default();
    let all_there = eventually(Duration::from_secs(300), || {
        arrivals.update(&received);
        ids.iter().all(|id| arrivals.first.contains_key(*id))
    })
    .await;
    let drained = started.elapsed().as_secs_f64();
    let (cpu, rss_kib) = usage(pid);
    arrivals.update(&received);
    let (first, total) = (&arrivals.first, arrivals.total);
    let mut lags: Vec<i64> = report
        .occurrences
        .iter()
        .filter_map(|o| Some(first.get(&o.id)? - o.created_ms))
        .collect();
    lags.sort_unstable();
    let lost = report.occurrences.len() - lags.len();
    let mut evrelay = evrelay;
    assert!(evrelay.terminate().success());
    let meta = cp.dump_meta(&data);
    let record_bytes = meta["counters"]["record_bytes"].as_f64().unwrap_or(0.0);
    let records = meta["records"].as_f64().unwrap_or(1.0);
    let n = report.occurrences.len() as f64;
    eprintln!(
        "bench: {name} created={} in {:.1}s ({:.0}/s) delivered={} ({:.0}/s until the last arrived, {:.1}s) duplicates={} lost={lost} \
         lag_ms p50={} p99={} max={} cpu_s_per_100k={:.1} peak_rss_mib={:.1} journal_bytes_per_event={:.0} lists={} watches={} \
         datadog_events_per_1000={:.0}",
        report.occurrences.len(),
        report.seconds,
        n / report.seconds,
        lags.len(),
        lags.len() as f64 / drained,
        drained,
        total.saturating_sub(first.len()),
        percentile(&lags, 0.50),
        percentile(&lags, 0.99),
        lags.last().copied().unwrap_or(0),
        cpu / n * 100_000.0,
        rss_kib as f64 / 1024.0,
        record_bytes / records,
        cp.event_requests("list"),
        cp.event_requests("watch"),
        arrivals.datadog_events as f64 * 1000.0 / n,
    );
    assert!(all_there && lost == 0, "{lost} occurrences never arrived");
}

/// Steady load: `EVRELAY_BENCH_RATE` events/s (default 500) for
/// `EVRELAY_BENCH_SECONDS` (default 60; the issue's scenario is 300), over
/// `EVRELAY_BENCH_NAMESPACES` (5) × `EVRELAY_BENCH_OBJECTS` (20) involved objects,
/// every `EVRELAY_BENCH_BUMP_EVERY`th (10) occurrence a count bump (a few objects
/// bumped often is a crash loop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run on demand"]
async fn steady() {
    let load = Load {
        rate: env_or("EVRELAY_BENCH_RATE", 500) as u32,
        duration: Duration::from_secs(env_or("EVRELAY_BENCH_SECONDS", 60)),
        namespaces: env_or("EVRELAY_BENCH_NAMESPACES", 5) as usize,
        objects: env_or("EVRELAY_BENCH_OBJECTS", 20) as usize,
        bump_every: env_or("EVRELAY_BENCH_BUMP_EVERY", 10) as usize,
        concurrency: 64,
    };
    scenario("steady", load, None).await;
}

/// A burst: `EVRELAY_BENCH_BURST` events (default 50 000) as fast as the API
/// server takes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run on demand"]
async fn burst() {
    let n = env_or("EVRELAY_BENCH_BURST", 50_000);
    let load = Load::burst(n);
    scenario("burst", load, None).await;
}

/// Catch-up: the intake answers 503 for `EVRELAY_BENCH_OUTAGE_SECONDS` (default
/// 600) while events come at `EVRELAY_BENCH_RATE` (default 100/s); then it comes
/// back and the backlog drains (drain rate in the `bench:` line).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run on demand"]
async fn outage_catch_up() {
    let outage = Duration::from_secs(env_or("EVRELAY_BENCH_OUTAGE_SECONDS", 600));
    let load = Load {
        rate: env_or("EVRELAY_BENCH_RATE", 100) as u32,
        duration: outage,
        namespaces: 5,
        objects: 20,
        bump_every: 10,
        concurrency: 64,
    };
    scenario("outage", load, Some(outage)).await;
}

/// Start-up with a backlog: a journal with `EVRELAY_BENCH_BACKLOG` (default
/// 1 000 000) pending records, written directly, then evrelay started on it: time
/// to the first shipped batch, time to drain, peak RSS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run on demand"]
async fn startup_with_backlog() {
    use evrelay::journal::{Journal, JournalSettings};
    use evrelay::record::{Header, Record, RecordKind, ResumeToken};
    let n = env_or("EVRELAY_BENCH_BACKLOG", 1_000_000) as usize;
    let cp = ControlPlane::start();
    let data = cp.data_dir("bench");
    {
        let journal = Journal::open(&JournalSettings {
            data_dir: data.clone(),
            max_bytes: 4 << 30,
            ..Default::default()
        })
        .unwrap();
        let now = jiff::Timestamp::now().as_millisecond();
        let message = "x".repeat(600);
        for chunk in (0..n).collect::<Vec<_>>().chunks(512) {
            let records: Vec<Record> = chunk
                .iter()
                .map(|&i| {
                    let mut header = Header::blank(RecordKind::Event, now);
                    header.uid = format!("backlog-{i}");
                    header.resource_version = "1".into();
                    header.last_timestamp_ms = Some(now);
                    let raw = format!(
                        r#"{{"kind":"Event","metadata":{{"name":"p.{i}","namespace":"load-0","uid":"backlog-{i}","resourceVersion":"1"}},"involvedObject":{{"kind":"Pod","name":"p","namespace":"load-0"}},"reason":"BackOff","message":"{message}","type":"Warning","count":1}}"#
                    );
                    Record { header, raw: raw.into_bytes() }
                })
                .collect();
            journal.append(&records, None).unwrap();
        }
        // A token the API server will answer 410 for is fine: evrelay relists.
        journal
            .set_token(&ResumeToken {
                resource_version: "1".into(),
                timestamp_ms: now,
            })
            .unwrap();
        journal.sync().unwrap();
    }
    let (url, received, _) = recording_intake().await;
    let started = Instant::now();
    let spawned_at = jiff::Timestamp::now();
    let evrelay = cp.spawn_evrelay_with(
        &data,
        &[
            ("DD_URL", url.as_str()),
            ("RUST_LOG", "info"),
            ("POD_NAME", "evrelay-0"),
            ("EVRELAY_JOURNAL_MAX_BYTES", &(4u64 << 30).to_string()),
        ],
    );
    let pid = evrelay.pid();
    assert!(first_arrival(&received).await, "nothing shipped");
    let first_batch = started.elapsed();
    let mut arrivals = Arrivals::default();
    assert!(
        eventually(Duration::from_secs(1800), || {
            arrivals.update(&received);
            arrivals.total >= n
        })
        .await,
        "backlog not drained"
    );
    let drained = started.elapsed();
    let (cpu, rss_kib) = usage(pid);
    eprintln!(
        "bench: startup backlog={n} first_batch_after={first_batch:.2?} drained_in={drained:.1?} drain_rate={:.0}/s cpu_s={cpu:.1} peak_rss_mib={:.1}",
        n as f64 / drained.as_secs_f64(),
        rss_kib as f64 / 1024.0
    );
    let mut evrelay = evrelay;
    if std::env::var_os("EVRELAY_BENCH_LOG").is_some() {
        // Where the time to the first batch went: evrelay's own timestamps.
        eprintln!(
            "spawned at {spawned_at}, first batch at {}\nevrelay's log:\n{}",
            spawned_at + first_batch,
            evrelay.log()
        );
    }
    assert!(evrelay.terminate().success());
}
