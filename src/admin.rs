//! The admin endpoint: `/metrics`, `/healthz` and `/readyz` on one port.
//!
//! - `/startupz` (the startupProbe): 200 once the journal is open, 503 with what
//!   the start is doing before (opening, recovering a damaged journal, waiting
//!   for a read-only or full volume).
//! - `/healthz` (liveness): about the process making progress, not about one
//!   write's latency. 200 while it starts (the journal may be recovering or
//!   migrating on a slow volume; the startupProbe bounds that), and while the
//!   journal's calls return, even with errors: a full or read-only disk is not
//!   helped by a restart, so it shows in readiness instead. 503 when a journal
//!   call has not returned for [`STUCK_AFTER`] (the process is wedged on its
//!   disk), and after three step-downs in a row (no watch could be established: a
//!   fresh start may). Standbys answer it too.
//! - `/readyz` (readiness): not ready while starting or while the journal cannot
//!   write (the first error is shown); a standby is ready; the leader is ready
//!   once its watch on events is established. A leader that cannot watch is not
//!   ready, so a rolling update waits for it instead of taking the standby down
//!   too. Neither is ready when the API server has not answered for 30 s. A slow
//!   disk (the last sync took a second or more) is said in the answer.
//! - `/metrics`: every metric in `metrics.rs`, OpenMetrics text; the journal's
//!   figures are read at scrape time.
//! - `/dump` and `/dump/meta`: what `evrelay dump --admin URL` reads from a running
//!   evrelay (its journal directory is locked while it runs). Read-only.
//! - `POST /replay?since_ms=…[&until_ms=…][&dry_run=true]`: what `evrelay replay
//!   --admin URL` asks for; answers with the replay's report when it is done.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State as Extract};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use crate::dump::{self, Filter};
use crate::journal::{Journal, SLOW_SYNC};
use crate::metrics::Metrics;
use crate::ship::{Shipping, Window};

/// Admin endpoint settings, checked (`admin:` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// Where `/metrics`, `/healthz` and `/readyz` are served; `None`: not served.
    pub listen: Option<SocketAddr>,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            listen: Some(SocketAddr::from(([0, 0, 0, 0], 8080))),
        }
    }
}

/// How often the heartbeat proves the journal takes a durable write.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// A journal call that has not returned for this long means the process is
/// wedged on its disk: liveness fails, so Kubernetes restarts it.
pub const STUCK_AFTER: Duration = Duration::from_secs(120);
/// After how long without an answer from the API server a replica is not ready.
const UNREACHABLE_AFTER: Duration = Duration::from_secs(30);
/// Step-downs in a row (no watch could be established) after which `/healthz`
/// fails, so that Kubernetes restarts the pod.
const STEPDOWNS_BEFORE_RESTART: u64 = 3;

/// What the endpoint serves from. It serves from the start; the journal and the
/// shipper arrive once the journal is open ([`State::opened`]).
#[derive(Clone)]
pub struct State {
    journal: Arc<OnceLock<Journal>>,
    metrics: Metrics,
    /// Sends past windows again (`POST /replay`).
    shipper: Arc<OnceLock<Arc<dyn Shipping>>>,
    /// What the start is doing, until the journal is open.
    starting: Arc<Mutex<String>>,
    /// When the heartbeat's journal call in flight began (Unix ms; 0: none).
    beat_started_ms: Arc<AtomicI64>,
    /// Ends a replay in progress when the endpoint stops.
    stop: CancellationToken,
}

impl State {
    /// The endpoint of a process that is starting.
    pub fn starting(metrics: Metrics) -> Self {
        State {
            journal: Arc::default(),
            metrics,
            shipper: Arc::default(),
            starting: Arc::new(Mutex::new("starting".to_owned())),
            beat_started_ms: Arc::default(),
            stop: CancellationToken::new(),
        }
    }

    /// Says what the start is doing (shown by `/healthz` and `/readyz`).
    pub fn set_starting(&self, what: impl Into<String>) {
        *self
            .starting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = what.into();
    }

    fn starting_text(&self) -> String {
        self.starting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The journal is open: serve from it.
    pub fn opened(&self, journal: Journal, shipper: Option<Arc<dyn Shipping>>) {
        let _ = self.journal.set(journal);
        if let Some(shipper) = shipper {
            let _ = self.shipper.set(shipper);
        }
    }

    /// The cursor `dump` reports states against.
    fn sink(&self) -> &'static str {
        self.shipper
            .get()
            .map_or(crate::sinks::datadog::SINK_NAME, |s| s.sink_name())
    }

    /// The answer of an endpoint still starting: 503, and what it is doing.
    fn not_started(&self) -> Response {
        let why = format!("{}\n", self.starting_text());
        (StatusCode::SERVICE_UNAVAILABLE, why).into_response()
    }

    /// Proves, every [`HEARTBEAT`], that the journal's calls return (a durable
    /// write: see [`Journal::probe`]); `/healthz` fails if one hangs. An error is
    /// a return: the disk's state shows in readiness.
    pub async fn heartbeat(self, stop: CancellationToken) {
        let Some(journal) = self.journal.get().cloned() else {
            return;
        };
        loop {
            let now = jiff::Timestamp::now().as_millisecond();
            self.beat_started_ms.store(now, Ordering::Relaxed);
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                result = journal.call(|j| j.probe()) => result,
            };
            self.beat_started_ms.store(0, Ordering::Relaxed);
            if let Err(e) = result {
                tracing::debug!(error = %e, "heartbeat: the journal refused its probe");
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(HEARTBEAT) => {}
            }
        }
    }

    /// How long the heartbeat's journal call in flight has taken.
    fn beat_pending(&self) -> Option<Duration> {
        let started = self.beat_started_ms.load(Ordering::Relaxed);
        (started != 0).then(|| {
            let now = jiff::Timestamp::now().as_millisecond();
            Duration::from_millis(now.saturating_sub(started).max(0) as u64)
        })
    }
}

/// Serves the admin endpoint on `listener` until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    mut state: State,
    stop: CancellationToken,
) -> std::io::Result<()> {
    state.stop = stop.clone();
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/startupz", get(startupz))
        .route("/readyz", get(readyz))
        .route("/dump", get(dump_lines))
        .route("/dump/meta", get(dump_meta))
        .route("/replay", post(replay))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}

async fn metrics_text(Extract(s): Extract<State>) -> Response {
    let sink = s.sink();
    if let Some(journal) = s.journal.get() {
        let figures = journal
            .call(move |j| Ok((j.counters()?.record_bytes, j.len(), j.pending(sink)?)))
            .await;
        if let Ok((bytes, records, pending)) = figures {
            s.metrics.journal(bytes, records, pending);
        }
        let disk = journal.call(|j| j.size_on_disk()).await.ok();
        let writable = journal.write_failure().is_none();
        s.metrics.journal_disk(disk, writable, journal.sync_stats());
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

/// `evrelay dump --admin`: the journal's records as JSON lines, filtered.
async fn dump_lines(Extract(s): Extract<State>, Query(filter): Query<Filter>) -> Response {
    let sink = s.sink();
    let Some(journal) = s.journal.get() else {
        return s.not_started();
    };
    let result = journal
        .call(move |j| {
            let head = j.head();
            Ok(dump::lines(j, sink, &filter).map(|lines| (lines, head)))
        })
        .await;
    match result {
        Ok(Ok((lines, head))) => {
            let mut body = Vec::new();
            if let Err(e) = dump::print(&lines, dump::Format::Json, &mut body) {
                return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
            }
            (
                [
                    (header::CONTENT_TYPE, "application/x-ndjson".to_owned()),
                    (
                        header::HeaderName::from_static(dump::SCANNED_THROUGH),
                        head.to_string(),
                    ),
                ],
                body,
            )
                .into_response()
        }
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn dump_meta(Extract(s): Extract<State>) -> Response {
    let sinks = vec![s.sink()];
    let Some(journal) = s.journal.get() else {
        return s.not_started();
    };
    match journal.call(move |j| Ok(dump::meta_value(j, &sinks))).await {
        Ok(Ok(meta)) => axum::Json(meta).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `evrelay replay --admin`: sends a past window again (`dry_run`: lists it).
async fn replay(Extract(s): Extract<State>, Query(window): Query<ReplayQuery>) -> Response {
    let Some(shipper) = s.shipper.get().cloned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "replay is not available\n").into_response();
    };
    let w = Window {
        since_ms: window.since_ms,
        until_ms: window.until_ms,
    };
    if window.dry_run {
        return dump_lines(Extract(s), Query(Filter::replayed(w))).await;
    }
    match shipper.replay(w, &s.stop).await {
        Ok(report) => axum::Json(report).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[derive(Debug, serde::Deserialize)]
struct ReplayQuery {
    since_ms: i64,
    until_ms: Option<i64>,
    #[serde(default)]
    dry_run: bool,
}

/// The startupProbe's: 200 once the journal is open (recovered and migrated if
/// it had to be), 503 with what the start is doing before.
async fn startupz(Extract(s): Extract<State>) -> Response {
    match s.journal.get() {
        Some(_) => (StatusCode::OK, "started\n").into_response(),
        None => s.not_started(),
    }
}

async fn healthz(Extract(s): Extract<State>) -> Response {
    let stepdowns = s.metrics.stepdowns_in_a_row();
    if stepdowns >= STEPDOWNS_BEFORE_RESTART {
        let why = format!(
            "no watch could be established {stepdowns} times in a row: restart to start afresh\n"
        );
        return (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
    }
    if s.journal.get().is_none() {
        return (StatusCode::OK, format!("{}\n", s.starting_text())).into_response();
    }
    if let Some(pending) = s.beat_pending()
        && pending >= STUCK_AFTER
    {
        let why = format!(
            "a journal write has not returned for {}s: the process is stuck on its disk\n",
            pending.as_secs()
        );
        return (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
    }
    (StatusCode::OK, "ok\n").into_response()
}

async fn readyz(Extract(s): Extract<State>) -> Response {
    let Some(journal) = s.journal.get() else {
        return s.not_started();
    };
    if let Some(first) = journal.write_failure() {
        let why = format!("the journal cannot write: {first}\n");
        return (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
    }
    let last_sync = journal.sync_stats().last();
    let disk = if last_sync >= SLOW_SYNC {
        format!(
            " (slow disk: the last sync took {:.1}s)",
            last_sync.as_secs_f64()
        )
    } else {
        String::new()
    };
    if let Some(down) = s.metrics.api_unreachable_for()
        && down >= UNREACHABLE_AFTER
    {
        let why = format!("cannot reach the API server for {}s\n", down.as_secs());
        return (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
    }
    let (leading, watching) = (s.metrics.is_leader(), s.metrics.is_watching());
    let (status, what) = match (leading, watching) {
        (false, _) => (StatusCode::OK, "standby"),
        (true, true) => (StatusCode::OK, "leader, watching"),
        (true, false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "leader, watch not established",
        ),
    };
    (status, format!("{what}{disk}\n")).into_response()
}
