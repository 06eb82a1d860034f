//! The end-to-end bench: the real control plane, evrelay, and an intake that
//! records when each event arrives. Run on demand, never in CI:
//!
//!     cargo test --release --test bench_e2e -- --ignored --nocapture
//!     EVRELAY_BENCH_RATE=500 EVRELAY_BENCH_SECONDS=300 cargo test --release --test bench_e2e steady -- --ignored --nocapture
//!
//! Each scenario prints one `bench:` line: events/s created and delivered, delivery
//! lag p50/p99/max (intake arrival − API server acceptance), evrelay CPU-seconds per
//! 100k events, peak RSS, journal bytes per event, and the API server's LIST and
//! WATCH requests on events. Figures go to BENCHMARKS.md; nothing is asserted
//! about speed here (only that nothing was lost).

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use support::load::{self, Load, Occurrence};
use support::{ControlPlane, Evrelay, eventually};

type Received = Arc<Mutex<Vec<(i64, Bytes)>>>;

/// An intake that answers 202 at once and keeps each body with its arrival time.
async fn recording_intake() -> (String, Received) {
    let received: Received = Arc::default();
    let app = Router::new()
        .fallback(|State(r): State<Received>, body: Bytes| async move {
            r.lock()
                .unwrap()
                .push((jiff::Timestamp::now().as_millisecond(), body));
            StatusCode::ACCEPTED
        })
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

/// First arrival (Unix ms) of each `evrelay_id`, and the events received, decoded
/// incrementally (the bench polls it while evrelay runs on the same 2 cores).
#[derive(Default)]
struct Arrivals {
    bodies: usize,
    first: HashMap<String, i64>,
    total: usize,
}

impl Arrivals {
    fn update(&mut self, received: &Received) {
        let new: Vec<(i64, Bytes)> = received.lock().unwrap()[self.bodies..].to_vec();
        self.bodies += new.len();
        for (at, body) in new {
            let raw = zstd::decode_all(&body[..]).expect("zstd body");
            let payload: serde_json::Value = serde_json::from_slice(&raw).expect("JSON");
            for events in payload["events"]
                .as_object()
                .into_iter()
                .flat_map(|m| m.values())
            {
                for e in events.as_array().into_iter().flatten() {
                    self.total += 1;
                    let id = e["tags"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find_map(|t| t.as_str()?.strip_prefix("evrelay_id:"));
                    if let Some(id) = id {
                        self.first.entry(id.to_owned()).or_insert(at);
                    }
                }
            }
        }
    }
}

/// CPU seconds (user + system) and peak RSS (KiB) of a running process.
fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (ticks / 100.0, hwm)
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Report {
    occurrences: Vec<Occurrence>,
    seconds: f64,
}

async fn scenario(name: &str, load: Load) {
    let cp = ControlPlane::start();
    let (url, received) = recording_intake().await;
    let data = cp.data_dir("bench");
    let evrelay: Evrelay = cp.spawn_evrelay_with(
        &data,
        &[
            ("DD_URL", url.as_str()),
            ("RUST_LOG", "info"),
            ("POD_NAME", "evrelay-0"),
        ],
    );
    let pid = evrelay.pid();
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
    let occurrences = load::run(cp.client().await, &load).await;
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
         lag_ms p50={} p99={} max={} cpu_s_per_100k={:.1} peak_rss_mib={:.1} journal_bytes_per_event={:.0} lists={} watches={}",
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
    );
    assert!(all_there && lost == 0, "{lost} occurrences never arrived");
}

fn env_or(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Steady load: `EVRELAY_BENCH_RATE` events/s (default 500) for
/// `EVRELAY_BENCH_SECONDS` (default 60; the scenario is 300).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run on demand"]
async fn steady() {
    let load = Load {
        rate: env_or("EVRELAY_BENCH_RATE", 500) as u32,
        duration: Duration::from_secs(env_or("EVRELAY_BENCH_SECONDS", 60)),
        namespaces: 5,
        objects: 20,
        bump_every: 10,
        concurrency: 64,
    };
    scenario("steady", load).await;
}

/// A burst: `EVRELAY_BENCH_BURST` events (default 50 000) as fast as the API
/// server takes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run on demand"]
async fn burst() {
    let n = env_or("EVRELAY_BENCH_BURST", 50_000);
    let load = Load {
        rate: 100_000,
        duration: Duration::from_millis(n * 1000 / 100_000),
        namespaces: 5,
        objects: 20,
        bump_every: 0,
        concurrency: 64,
    };
    scenario("burst", load).await;
}
