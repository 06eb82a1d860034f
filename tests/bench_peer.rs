//! Side by side: evrelay and the OpenTelemetry Collector's k8seventsreceiver
//! (contrib v0.111.0: receiver → batch processor → OTLP/HTTP exporter, its
//! defaults; tests/support/otel-peer), each alone on a fresh control plane, on the
//! same load from the same generator. Run on demand, never in CI:
//!
//!     make bench-peer
//!     EVRELAY_BENCH_RUNS=1 EVRELAY_BENCH_SCENARIOS=burst cargo test --release --test bench_peer -- --ignored --nocapture
//!
//! Scenarios (`EVRELAY_BENCH_SCENARIOS`, comma-separated; default all):
//! - `burst`: `EVRELAY_BENCH_BURST` events (20 000) as fast as the API server
//!   takes them (64 requests in flight), then `EVRELAY_BENCH_IDLE_SECONDS` (30)
//!   with nothing happening: CPU per event, delivery lag, peak memory; idle CPU
//!   and memory with those events in the cluster;
//! - `steady`: 200 occurrences/s for 60 s, every 10th a count bump;
//! - `kill`: the steady load; the forwarder is killed (SIGKILL) after 20 s and
//!   started again 10 s later: what was lost, what came twice, and the LIST
//!   requests on events the restart cost.
//!
//! Each forwarder reports to an intake of its own on loopback: evrelay to an
//! intake that records Datadog payloads, the collector to an OTLP recorder (the
//! same binary). An occurrence is delivered when its `evrelay_id` (evrelay) or
//! its uid and count (the collector's `k8s.event.uid`, `k8s.event.count`)
//! arrives; lag is arrival − the API server's answer to the create. CPU is the
//! forwarder process's user + system time from the start of the load to the last
//! arrival; memory its peak RSS. Every run prints `bench:` lines; the end prints
//! the table BENCHMARKS.md opens with (median and range over
//! `EVRELAY_BENCH_RUNS`, default 3). Nothing about speed is asserted; evrelay
//! losing an occurrence fails the run.

mod support;

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::bench::{Arrivals, Received, env_or, percentile, recording_intake, rss_now, usage};
use support::load::{self, Load, Occurrence};
use support::{ControlPlane, Evrelay};

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Kind {
    Evrelay,
    Collector,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Evrelay => "evrelay",
            Kind::Collector => "collector",
        }
    }
}

/// Where a forwarder's deliveries arrive, read incrementally.
enum Intake {
    Datadog {
        received: Received,
        arrivals: Arrivals,
    },
    Otlp {
        recorder: Child,
        lines: PathBuf,
        read: u64,
        first: HashMap<String, i64>,
        total: usize,
    },
}

impl Intake {
    fn update(&mut self) {
        match self {
            Intake::Datadog { received, arrivals } => arrivals.update(received),
            Intake::Otlp {
                lines,
                read,
                first,
                total,
                ..
            } => {
                let mut file = std::fs::File::open(&*lines).expect("recorder output");
                file.seek(SeekFrom::Start(*read)).unwrap();
                let mut new = String::new();
                file.read_to_string(&mut new).unwrap();
                // Only whole lines; a partial last line is read next time.
                let whole = new.rfind('\n').map_or(0, |i| i + 1);
                *read += whole as u64;
                for line in new[..whole].lines() {
                    let mut parts = line.split(' ');
                    let (Some(at), Some(uid), Some(count)) =
                        (parts.next(), parts.next(), parts.next())
                    else {
                        continue;
                    };
                    let Ok(at) = at.parse::<i64>() else { continue };
                    *total += 1;
                    first.entry(format!("{uid} {count}")).or_insert(at);
                }
            }
        }
    }

    /// When `o` first arrived.
    fn arrival(&self, o: &Occurrence) -> Option<i64> {
        match self {
            Intake::Datadog { arrivals, .. } => arrivals.first.get(&o.id).copied(),
            Intake::Otlp { first, .. } => first.get(&otlp_key(o)).copied(),
        }
    }

    /// Whether anything about the event with this uid arrived.
    fn saw_uid(&self, uid: &str) -> bool {
        let mut keys: Box<dyn Iterator<Item = &String>> = match self {
            Intake::Datadog { arrivals, .. } => Box::new(arrivals.first.keys()),
            Intake::Otlp { first, .. } => Box::new(first.keys()),
        };
        keys.any(|k| k.starts_with(uid))
    }

    /// Deliveries, duplicates included, and distinct occurrences delivered.
    fn tally(&self) -> (usize, usize) {
        match self {
            Intake::Datadog { arrivals, .. } => (arrivals.total, arrivals.first.len()),
            Intake::Otlp { first, total, .. } => (*total, first.len()),
        }
    }
}

impl Drop for Intake {
    fn drop(&mut self) {
        if let Intake::Otlp { recorder, .. } = self {
            let _ = recorder.kill();
            let _ = recorder.wait();
        }
    }
}

/// The collector identifies an occurrence by its event's uid and count.
fn otlp_key(o: &Occurrence) -> String {
    let uid = o.id.rsplit_once('.').map_or(o.id.as_str(), |(uid, _)| uid);
    format!("{uid} {}", o.count)
}

/// One forwarder, running against one control plane.
struct Forwarder<'a> {
    kind: Kind,
    cp: &'a ControlPlane,
    dir: PathBuf,
    evrelay: Option<Evrelay>,
    collector: Option<Child>,
    intake: Intake,
    url: String,
}

fn peer_binary(cp: &ControlPlane) -> String {
    let path = cp.var("EVRELAY_OTEL_PEER").to_owned();
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is not built: run `scripts/dev-cluster build-peer` (`make bench-peer` does)"
    );
    path
}

impl<'a> Forwarder<'a> {
    async fn start(cp: &'a ControlPlane, kind: Kind) -> Self {
        let dir = cp.data_dir(kind.name());
        let (intake, url) = match kind {
            Kind::Evrelay => {
                let (url, received, _) = recording_intake().await;
                let intake = Intake::Datadog {
                    received,
                    arrivals: Arrivals::default(),
                };
                (intake, url)
            }
            Kind::Collector => {
                let lines = dir.join("recorded");
                let mut recorder = Command::new(peer_binary(cp))
                    .arg("record")
                    .stdout(std::fs::File::create(&lines).unwrap())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .expect("starting the OTLP recorder");
                let deadline = Instant::now() + Duration::from_secs(10);
                let port = loop {
                    let head = std::fs::read_to_string(&lines).unwrap_or_default();
                    if let Some(port) = head
                        .lines()
                        .next()
                        .and_then(|l| l.strip_prefix("listening "))
                    {
                        break port.trim().to_owned();
                    }
                    assert!(
                        recorder.try_wait().unwrap().is_none() && Instant::now() < deadline,
                        "the OTLP recorder did not start"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
                let intake = Intake::Otlp {
                    recorder,
                    lines,
                    read: 0,
                    first: HashMap::new(),
                    total: 0,
                };
                (intake, format!("http://127.0.0.1:{port}"))
            }
        };
        let mut forwarder = Forwarder {
            kind,
            cp,
            dir,
            evrelay: None,
            collector: None,
            intake,
            url,
        };
        forwarder.spawn();
        forwarder.until_live().await;
        forwarder
    }

    fn spawn(&mut self) {
        match self.kind {
            Kind::Evrelay => {
                self.evrelay = Some(self.cp.spawn_evrelay_with(
                    &self.dir.join("data"),
                    &[
                        ("DD_URL", self.url.as_str()),
                        ("RUST_LOG", "info"),
                        ("POD_NAME", "evrelay-0"),
                    ],
                ));
            }
            Kind::Collector => {
                let config = self.dir.join("collector.yaml");
                std::fs::write(
                    &config,
                    format!(
                        "receivers:\n  k8s_events:\n    auth_type: kubeConfig\n\
                         processors:\n  batch: {{}}\n\
                         exporters:\n  otlphttp:\n    endpoint: {}\n\
                         service:\n  telemetry:\n    metrics:\n      level: none\n    logs:\n      level: warn\n\
                         \x20 pipelines:\n    logs:\n      receivers: [k8s_events]\n      processors: [batch]\n      exporters: [otlphttp]\n",
                        self.url
                    ),
                )
                .unwrap();
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.join("collector.log"))
                    .unwrap();
                self.collector = Some(
                    Command::new(peer_binary(self.cp))
                        .arg("--config")
                        .arg(&config)
                        .env_clear()
                        .env("KUBECONFIG", self.cp.var("KUBECONFIG"))
                        .stdin(Stdio::null())
                        .stdout(log.try_clone().unwrap())
                        .stderr(log)
                        .spawn()
                        .expect("starting the collector"),
                );
            }
        }
    }

    fn pid(&self) -> u32 {
        match (&self.evrelay, &self.collector) {
            (Some(e), _) => e.pid(),
            (_, Some(c)) => c.id(),
            _ => panic!("{} is not running", self.kind.name()),
        }
    }

    /// Creates an event every second until one arrives: the forwarder is
    /// watching. (One is not enough for the collector: it drops an event last
    /// seen before it started, and a last-seen time has whole seconds, so an event
    /// created in the second it started is dropped.)
    async fn until_live(&mut self) {
        let client = self.cp.client().await;
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut probes = Vec::new();
        loop {
            let message = format!("is the forwarder live? {}", probes.len());
            probes
                .push(support::create_event(&client, "default", "probe", "Probe", &message).await);
            for _ in 0..20 {
                self.intake.update();
                if probes.iter().any(|uid| self.intake.saw_uid(uid)) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not deliver a probe event in 2 minutes; its log is in {}",
                self.kind.name(),
                self.dir.display()
            );
        }
    }

    fn kill9(&mut self) {
        if let Some(mut e) = self.evrelay.take() {
            e.kill9();
        }
        if let Some(mut c) = self.collector.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Waits until every occurrence has arrived, or nothing new has for 30 s
    /// (what is still missing then is lost), or 5 minutes passed.
    async fn settle(&mut self, occurrences: &[Occurrence]) {
        let (quiet, deadline) = (
            Duration::from_secs(30),
            Instant::now() + Duration::from_secs(300),
        );
        let mut last = (self.intake.tally(), Instant::now());
        loop {
            self.intake.update();
            if occurrences.iter().all(|o| self.intake.arrival(o).is_some()) {
                return;
            }
            let now = self.intake.tally();
            if now != last.0 {
                last = (now, Instant::now());
            }
            if last.1.elapsed() > quiet || Instant::now() > deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Lags (ms, sorted) of the occurrences that arrived, and how many did not.
    fn lags(&self, occurrences: &[Occurrence]) -> (Vec<i64>, usize) {
        let mut lags: Vec<i64> = occurrences
            .iter()
            .filter_map(|o| Some(self.intake.arrival(o)? - o.created_ms))
            .collect();
        lags.sort_unstable();
        let lost = occurrences.len() - lags.len();
        (lags, lost)
    }
}

impl Drop for Forwarder<'_> {
    fn drop(&mut self) {
        if let Some(mut c) = self.collector.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn steady_load() -> Load {
    Load {
        rate: 200,
        duration: Duration::from_secs(60),
        namespaces: 5,
        objects: 20,
        bump_every: 10,
        concurrency: 64,
    }
}

/// One figure per (row, forwarder) per run.
type Figures = HashMap<(&'static str, Kind), Vec<f64>>;

fn put(figures: &mut Figures, row: &'static str, kind: Kind, value: f64) {
    figures.entry((row, kind)).or_default().push(value);
}

/// One load delivered: what was created, what it cost the forwarder from the
/// start of the load to the last arrival, and when each occurrence arrived.
struct Measured {
    occurrences: Vec<Occurrence>,
    cpu_s_per_100k: f64,
    /// Lags (ms, sorted) of the occurrences that arrived.
    lags: Vec<i64>,
    lost: usize,
    peak_rss_mib: f64,
}

/// Runs the load and waits for it to arrive; evrelay losing any fails the run.
async fn measured(f: &mut Forwarder<'_>, load: &Load) -> Measured {
    let (cpu0, _) = usage(f.pid());
    let occurrences = load::run(f.cp.client().await, load).await;
    f.settle(&occurrences).await;
    let (cpu1, peak_kib) = usage(f.pid());
    let (lags, lost) = f.lags(&occurrences);
    assert!(
        f.kind != Kind::Evrelay || lost == 0,
        "evrelay lost {lost} occurrences"
    );
    Measured {
        cpu_s_per_100k: (cpu1 - cpu0) / occurrences.len() as f64 * 100_000.0,
        occurrences,
        lags,
        lost,
        peak_rss_mib: peak_kib as f64 / 1024.0,
    }
}

async fn burst(kind: Kind, figures: &mut Figures) {
    let n = env_or("EVRELAY_BENCH_BURST", 20_000);
    let cp = ControlPlane::start();
    let mut f = Forwarder::start(&cp, kind).await;
    let load = Load::burst(n);
    let started = Instant::now();
    let m = measured(&mut f, &load).await;
    let took = started.elapsed().as_secs_f64();
    let (p50, p99) = (percentile(&m.lags, 0.5), percentile(&m.lags, 0.99));
    eprintln!(
        "bench: peer={} burst created={} lost={} in {took:.1}s cpu_s_per_100k={:.1} lag_ms p50={p50} p99={p99} peak_rss_mib={:.1}",
        kind.name(),
        m.occurrences.len(),
        m.lost,
        m.cpu_s_per_100k,
        m.peak_rss_mib
    );
    put(figures, "burst_cpu", kind, m.cpu_s_per_100k);
    put(figures, "burst_p50", kind, p50 as f64);
    put(figures, "burst_p99", kind, p99 as f64);
    put(figures, "burst_rss", kind, m.peak_rss_mib);

    // Idle with the burst's events in the cluster.
    let idle = Duration::from_secs(env_or("EVRELAY_BENCH_IDLE_SECONDS", 30));
    let (cpu0, _) = usage(f.pid());
    tokio::time::sleep(idle).await;
    let (cpu1, _) = usage(f.pid());
    let per_min = (cpu1 - cpu0) * 60.0 / idle.as_secs_f64();
    let rss = rss_now(f.pid()) as f64 / 1024.0;
    eprintln!(
        "bench: peer={} idle cpu_s_per_min={per_min:.2} rss_mib={rss:.1}",
        kind.name()
    );
    put(figures, "idle_cpu", kind, per_min);
    put(figures, "idle_rss", kind, rss);
}

async fn steady(kind: Kind, figures: &mut Figures) {
    let cp = ControlPlane::start();
    let mut f = Forwarder::start(&cp, kind).await;
    let m = measured(&mut f, &steady_load()).await;
    let p99 = percentile(&m.lags, 0.99);
    eprintln!(
        "bench: peer={} steady created={} lost={} cpu_s_per_100k={:.1} lag_ms p50={} p99={p99} peak_rss_mib={:.1}",
        kind.name(),
        m.occurrences.len(),
        m.lost,
        m.cpu_s_per_100k,
        percentile(&m.lags, 0.5),
        m.peak_rss_mib
    );
    put(figures, "steady_cpu", kind, m.cpu_s_per_100k);
    put(figures, "steady_p99", kind, p99 as f64);
    put(figures, "steady_rss", kind, m.peak_rss_mib);
}

async fn kill(kind: Kind, figures: &mut Figures) {
    let cp = ControlPlane::start();
    let mut f = Forwarder::start(&cp, kind).await;
    let client = cp.client().await;
    let load = steady_load();
    let generator = tokio::spawn(async move { load::run(client, &load).await });
    tokio::time::sleep(Duration::from_secs(20)).await;
    f.kill9();
    let lists_before = cp.event_requests("list");
    tokio::time::sleep(Duration::from_secs(10)).await;
    f.spawn();
    let occurrences = generator.await.unwrap();
    f.settle(&occurrences).await;
    let (_, lost) = f.lags(&occurrences);
    let (total, distinct) = f.intake.tally();
    let duplicated = total - distinct;
    let lists = cp.event_requests("list") - lists_before;
    eprintln!(
        "bench: peer={} kill created={} lost={lost} duplicated={duplicated} lists_after_restart={lists}",
        kind.name(),
        occurrences.len()
    );
    if kind == Kind::Evrelay {
        assert_eq!(lost, 0, "evrelay lost occurrences across kill -9");
    }
    put(figures, "kill_lost", kind, lost as f64);
    put(figures, "kill_dup", kind, duplicated as f64);
    put(figures, "kill_lists", kind, lists as f64);
    put(figures, "kill_created", kind, occurrences.len() as f64);
}

/// Median and range: "12.3 (11.0–13.1)"; one run: the figure alone.
fn cell(values: &[f64], digits: usize) -> String {
    let median = median(values);
    if values.len() == 1 {
        return format!("{median:.digits$}");
    }
    let (lo, hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    format!("{median:.digits$} ({lo:.digits$}–{hi:.digits$})")
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    }
}

fn table(figures: &Figures, runs: usize) -> String {
    let burst = env_or("EVRELAY_BENCH_BURST", 20_000);
    let rows: [(&str, &str, usize); 13] = [
        ("burst_cpu", "burst of {burst}: CPU-s per 100k events", 1),
        ("burst_p50", "burst: delivery lag p50 (ms)", 0),
        ("burst_p99", "burst: delivery lag p99 (ms)", 0),
        ("burst_rss", "burst: peak RSS (MiB)", 1),
        (
            "steady_cpu",
            "steady 200/s for 60 s: CPU-s per 100k events",
            1,
        ),
        ("steady_p99", "steady: delivery lag p99 (ms)", 0),
        ("steady_rss", "steady: peak RSS (MiB)", 1),
        ("idle_cpu", "idle after the burst: CPU-s per minute", 2),
        ("idle_rss", "idle after the burst: RSS (MiB)", 1),
        (
            "kill_created",
            "kill -9 at 20 s, restart at 30 s: occurrences",
            0,
        ),
        ("kill_lost", "kill -9: lost", 0),
        ("kill_dup", "kill -9: delivered twice", 0),
        (
            "kill_lists",
            "kill -9: LIST requests on events after the kill",
            0,
        ),
    ];
    let mut out = format!(
        "| scenario ({runs} runs: median (range)) | evrelay | OTel collector | evrelay ÷ collector |\n|---|---|---|---|\n"
    );
    for (key, label, digits) in rows {
        let (Some(e), Some(c)) = (
            figures.get(&(key, Kind::Evrelay)),
            figures.get(&(key, Kind::Collector)),
        ) else {
            continue;
        };
        let ratio = if median(c) > 0.0 && !key.starts_with("kill") {
            format!("{:.2}", median(e) / median(c))
        } else {
            "–".into()
        };
        out += &format!(
            "| {} | {} | {} | {ratio} |\n",
            label.replace("{burst}", &burst.to_string()),
            cell(e, digits),
            cell(c, digits)
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run on demand (make bench-peer)"]
async fn side_by_side() {
    let runs = env_or("EVRELAY_BENCH_RUNS", 3) as usize;
    let scenarios =
        std::env::var("EVRELAY_BENCH_SCENARIOS").unwrap_or_else(|_| "burst,steady,kill".into());
    let mut figures = Figures::new();
    for run in 1..=runs {
        for scenario in scenarios.split(',') {
            // Alternate which goes first, so neither always meets a warmer machine.
            let order = if run % 2 == 1 {
                [Kind::Evrelay, Kind::Collector]
            } else {
                [Kind::Collector, Kind::Evrelay]
            };
            for kind in order {
                eprintln!("run {run}/{runs}: {scenario} with {}", kind.name());
                match scenario.trim() {
                    "burst" => burst(kind, &mut figures).await,
                    "steady" => steady(kind, &mut figures).await,
                    "kill" => kill(kind, &mut figures).await,
                    other => panic!("unknown scenario {other:?} (burst, steady, kill)"),
                }
            }
        }
    }
    println!("\n{}", table(&figures, runs));
}
