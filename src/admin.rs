//! The admin endpoint: `/metrics`, `/healthz` and `/readyz` on one port.
//!
//! - `/healthz` (liveness): 200 while the process runs and the journal takes a
//!   durable write; 503 otherwise (a full or read-only disk: restarting may help,
//!   and an operator must look), and 503 after three step-downs in a row (no
//!   watch could be established: a fresh start may). Standbys answer it too.
//! - `/readyz` (readiness): a standby is ready; the leader is ready once its watch
//!   on events is established. A leader that cannot watch is not ready, so a
//!   rolling update waits for it instead of taking the standby down too. Neither
//!   is ready when the API server has not answered for 30 s.
//! - `/metrics`: every metric in `metrics.rs`, OpenMetrics text; the journal's
//!   figures are read at scrape time.
//! - `/dump` and `/dump/meta`: what `evrelay dump --admin URL` reads from a running
//!   evrelay (its journal directory is locked while it runs). Read-only.
//! - `POST /replay?since_ms=…[&until_ms=…][&dry_run=true]`: what `evrelay replay
//!   --admin URL` asks for; answers with the replay's report when it is done.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State as Extract};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use crate::backoff::within;
use crate::dump::{self, Filter};
use crate::journal::Journal;
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

/// How long a health check may take before it counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// After how long without an answer from the API server a replica is not ready.
const UNREACHABLE_AFTER: Duration = Duration::from_secs(30);
/// Step-downs in a row (no watch could be established) after which `/healthz`
/// fails, so that Kubernetes restarts the pod.
const STEPDOWNS_BEFORE_RESTART: u64 = 3;

/// What the endpoint serves from.
#[derive(Clone)]
pub struct State {
    journal: Journal,
    metrics: Metrics,
    /// Sends past windows again (`POST /replay`).
    shipper: Option<Arc<dyn Shipping>>,
    /// Ends a replay in progress when the endpoint stops.
    stop: CancellationToken,
}

impl State {
    pub fn new(journal: Journal, metrics: Metrics, shipper: Option<Arc<dyn Shipping>>) -> Self {
        State {
            journal,
            metrics,
            shipper,
            stop: CancellationToken::new(),
        }
    }

    /// The cursor `dump` reports states against.
    fn sink(&self) -> &'static str {
        self.shipper
            .as_ref()
            .map_or(crate::sinks::datadog::SINK_NAME, |s| s.sink_name())
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
    let figures = s
        .journal
        .call(move |j| Ok((j.counters()?.record_bytes, j.len(), j.pending(sink)?)))
        .await;
    if let Ok((bytes, records, pending)) = figures {
        s.metrics.journal(bytes, records, pending);
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
    let result = s
        .journal
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
    match s
        .journal
        .call(move |j| Ok(dump::meta_value(j, &sinks)))
        .await
    {
        Ok(Ok(meta)) => axum::Json(meta).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `evrelay replay --admin`: sends a past window again (`dry_run`: lists it).
async fn replay(Extract(s): Extract<State>, Query(window): Query<ReplayQuery>) -> Response {
    let Some(shipper) = s.shipper.clone() else {
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

async fn healthz(Extract(s): Extract<State>) -> Response {
    let stepdowns = s.metrics.stepdowns_in_a_row();
    if stepdowns >= STEPDOWNS_BEFORE_RESTART {
        let why = format!(
            "no watch could be established {stepdowns} times in a row: restart to start afresh\n"
        );
        return (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
    }
    let probe = within(PROBE_TIMEOUT, s.journal.call(|j| j.probe())).await;
    match probe {
        Ok(Ok(())) => (StatusCode::OK, "ok\n").into_response(),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("journal not writable: {e}\n"),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("journal write did not finish within {PROBE_TIMEOUT:?}\n"),
        )
            .into_response(),
    }
}

async fn readyz(Extract(s): Extract<State>) -> Response {
    if let Some(down) = s.metrics.api_unreachable_for()
        && down >= UNREACHABLE_AFTER
    {
        let why = format!("cannot reach the API server for {}s\n", down.as_secs());
        return (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
    }
    let (leading, watching) = (s.metrics.is_leader(), s.metrics.is_watching());
    match (leading, watching) {
        (false, _) => (StatusCode::OK, "standby\n").into_response(),
        (true, true) => (StatusCode::OK, "leader, watching\n").into_response(),
        (true, false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "leader, watch not established\n",
        )
            .into_response(),
    }
}
