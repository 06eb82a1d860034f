//! The admin endpoint: `/metrics`, `/healthz` and `/readyz` on one port.
//!
//! - `/healthz` (liveness): 200 while the process runs and the journal takes a
//!   durable write; 503 otherwise (a full or read-only disk: restarting may help,
//!   and an operator must look). Standbys answer it too.
//! - `/readyz` (readiness): a standby is ready; the leader is ready once its watch
//!   on events is established. A leader that cannot watch is not ready, so a
//!   rolling update waits for it instead of taking the standby down too.
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
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use crate::config::Problem;
use crate::dump::{self, Filter};
use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::ship::replay::{self, Window};
use crate::ship::{SINK, Shipper};

/// Admin endpoint settings (`admin:` in the config file).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Where `/metrics`, `/healthz` and `/readyz` are served. Empty: not served.
    pub listen_address: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen_address: "0.0.0.0:8080".into(),
        }
    }
}

impl AdminConfig {
    pub(crate) fn problems(&self) -> Vec<Problem> {
        if self.listen_address.is_empty() || self.address().is_some() {
            return Vec::new();
        }
        vec![Problem {
            key: "admin.listen_address".into(),
            message: format!("{:?} is not an address and port", self.listen_address),
            fix: "use IP:PORT, e.g. 0.0.0.0:8080 (or empty to turn the endpoint off)".into(),
        }]
    }

    pub fn address(&self) -> Option<SocketAddr> {
        self.listen_address.parse().ok()
    }
}

/// How long a health check may take before it counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct Shared {
    journal: Journal,
    metrics: Metrics,
    /// Sends past windows again (`POST /replay`).
    replayer: Option<Arc<Shipper>>,
    shutdown: CancellationToken,
}

/// Serves the admin endpoint on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    journal: Journal,
    metrics: Metrics,
    replayer: Option<Shipper>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/dump", get(dump_lines))
        .route("/dump/meta", get(dump_meta))
        .route("/replay", post(replay))
        .with_state(Shared {
            journal,
            metrics,
            replayer: replayer.map(Arc::new),
            shutdown: shutdown.clone(),
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn metrics_text(State(s): State<Shared>) -> Response {
    let journal = s.journal.clone();
    let figures = tokio::task::spawn_blocking(move || {
        Ok::<_, crate::journal::JournalError>((
            journal.counters()?.record_bytes,
            journal.len(),
            journal.pending(SINK)?,
        ))
    })
    .await;
    if let Ok(Ok((bytes, records, pending))) = figures {
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
async fn dump_lines(State(s): State<Shared>, Query(filter): Query<Filter>) -> Response {
    let journal = s.journal.clone();
    let result = tokio::task::spawn_blocking(move || {
        let head = journal.head();
        dump::lines(&journal, &filter).map(|lines| (lines, head))
    })
    .await
    .expect("dump task panicked");
    match result {
        Ok((lines, head)) => {
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
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn dump_meta(State(s): State<Shared>) -> Response {
    let journal = s.journal.clone();
    match tokio::task::spawn_blocking(move || dump::meta_value(&journal))
        .await
        .expect("dump task panicked")
    {
        Ok(meta) => axum::Json(meta).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `evrelay replay --admin`: sends a past window again (`dry_run`: lists it).
async fn replay(State(s): State<Shared>, Query(window): Query<ReplayQuery>) -> Response {
    let Some(replayer) = s.replayer.clone() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "replay is not available\n").into_response();
    };
    let w = Window {
        since_ms: window.since_ms,
        until_ms: window.until_ms,
    };
    if window.dry_run {
        return dump_lines(State(s), Query(replay::dry_run_filter(w))).await;
    }
    match replayer.replay(w, &s.shutdown).await {
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

async fn healthz(State(s): State<Shared>) -> Response {
    let journal = s.journal.clone();
    let probe = tokio::time::timeout(
        PROBE_TIMEOUT,
        tokio::task::spawn_blocking(move || journal.probe()),
    )
    .await;
    match probe {
        Ok(Ok(Ok(()))) => (StatusCode::OK, "ok\n").into_response(),
        Ok(Ok(Err(e))) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("journal not writable: {e}\n"),
        )
            .into_response(),
        Ok(Err(_)) | Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("journal write did not finish within {PROBE_TIMEOUT:?}\n"),
        )
            .into_response(),
    }
}

async fn readyz(State(s): State<Shared>) -> Response {
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
