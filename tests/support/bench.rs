//! What the end-to-end benches share: an intake that records when each request
//! arrives, the arrivals decoded, and a process's CPU time and peak memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;

use super::eventually;

pub type Received = Arc<Mutex<Vec<(i64, Bytes)>>>;

/// An intake that answers 202 at once and keeps each `/intake/` body with its
/// arrival time (service checks are answered, not kept); while `down` is set it
/// answers 503 and keeps nothing (an outage).
pub async fn recording_intake() -> (String, Received, Arc<AtomicBool>) {
    let received: Received = Arc::default();
    let down = Arc::new(AtomicBool::new(false));
    let app = Router::new()
        .fallback(
            |State((r, down)): State<(Received, Arc<AtomicBool>)>,
             uri: axum::http::Uri,
             body: Bytes| async move {
                if down.load(Ordering::Relaxed) {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                if uri.path() != "/intake/" {
                    return StatusCode::ACCEPTED;
                }
                r.lock()
                    .unwrap()
                    .push((jiff::Timestamp::now().as_millisecond(), body));
                StatusCode::ACCEPTED
            },
        )
        .with_state((received.clone(), down.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received, down)
}

/// First arrival (Unix ms) of each `evrelay_id`, and the events received, decoded
/// incrementally (the bench polls it while evrelay runs on the same 2 cores).
#[derive(Default)]
pub struct Arrivals {
    bodies: usize,
    /// First arrival of each `evrelay_id`.
    pub first: HashMap<String, i64>,
    /// Occurrences received, duplicates included.
    pub total: usize,
    /// Datadog events (a bundle counts once).
    pub datadog_events: usize,
}

impl Arrivals {
    pub fn update(&mut self, received: &Received) {
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
                    self.datadog_events += 1;
                    // One per occurrence, bundled or not.
                    let ids = e["tags"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|t| t.as_str()?.strip_prefix("evrelay_id:"));
                    for id in ids {
                        self.total += 1;
                        self.first.entry(id.to_owned()).or_insert(at);
                    }
                }
            }
        }
    }
}

/// Waits (up to 2 minutes) for the intake's first request; whether it came.
pub async fn first_arrival(received: &Received) -> bool {
    eventually(Duration::from_secs(120), || {
        !received.lock().unwrap().is_empty()
    })
    .await
}

/// CPU seconds (user + system) and peak RSS (KiB) of a running process.
pub fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    (ticks / 100.0, status_kib(pid, "VmHWM:"))
}

/// Pins every thread of `pid` to `cpus` (`taskset -apc`).
pub fn pin(pid: u32, cpus: &str) {
    let status = std::process::Command::new("taskset")
        .args(["-apc", cpus, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("taskset");
    assert!(status.success(), "taskset -apc {cpus} {pid} failed");
}

pub fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A running process's resident memory now (KiB).
pub fn rss_now(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// A KiB figure of `/proc/<pid>/status` (0 if the process is gone).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A bench setting from the environment, or its default.
pub fn env_or(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
