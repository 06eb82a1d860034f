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
//!   evrelay (its journal directory is locked while it runs). Read-only, in pages
//!   of [`DUMP_PAGE`] lines.
//! - `POST /replay?since_ms=…[&until_ms=…][&max_events=…][&dry_run=true]`: what
//!   `evrelay replay --admin URL` asks for; answers with the replay's report when
//!   it is done. Only on the leader, one at a time (409 otherwise).
//!
//! `/dump` and `/replay` answer only connections from the pod's loopback
//! (`kubectl port-forward`), and `POST /replay` needs [`REQUEST_HEADER`]; see
//! [`from_inside_the_pod`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Query, Request, State as Extract};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use crate::dump::{self, Filter};
use crate::journal::{Journal, SLOW_SYNC};
use crate::metrics::Metrics;
use crate::ship::{Limits, Shipping, Window};

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
    /// Set while a replay runs.
    replaying: Arc<AtomicBool>,
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
            replaying: Arc::default(),
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
    let app = router(state);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { stop.cancelled().await })
    .await
}

/// The routes: probes and metrics for anyone who can reach the port; the journal
/// (`/dump`, `/replay`) only from inside the pod.
fn router(state: State) -> Router {
    let inside = Router::new()
        .route("/dump", get(dump_lines))
        .route("/dump/meta", get(dump_meta))
        .route("/replay", post(replay))
        .route_layer(middleware::from_fn(from_inside_the_pod));
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/startupz", get(startupz))
        .route("/readyz", get(readyz))
        .merge(inside)
        .with_state(state)
}

/// `/dump` and `/replay` read every namespace's events and can send days of them
/// again: they answer only connections from the pod's own loopback, which is where
/// `kubectl port-forward` arrives (and so needs the RBAC to port-forward to the
/// pod), never another pod. `POST /replay` also needs [`REQUEST_HEADER`], which no
/// browser sends cross-origin without asking first, so a web page cannot fire it
/// at a forwarded port.
async fn from_inside_the_pod(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if !peer.ip().is_loopback() {
        let why = "dump and replay answer only from inside the pod: use kubectl port-forward\n";
        return (StatusCode::FORBIDDEN, why).into_response();
    }
    if request.method() == Method::POST && !request.headers().contains_key(REQUEST_HEADER) {
        let why = format!(
            "a state-changing request needs the {REQUEST_HEADER} header (evrelay replay sends it)\n"
        );
        return (StatusCode::FORBIDDEN, why).into_response();
    }
    next.run(request).await
}

/// The header `evrelay replay` sends with `POST /replay`.
pub const REQUEST_HEADER: &str = "x-evrelay-request";

/// Lines of `/dump` in one answer at most; `evrelay dump --admin` asks for the
/// next page (`x-evrelay-more`).
pub const DUMP_PAGE: usize = 5000;

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

/// `evrelay dump --admin`: the journal's records as JSON lines, filtered, at most
/// [`DUMP_PAGE`] per answer.
async fn dump_lines(Extract(s): Extract<State>, Query(mut filter): Query<Filter>) -> Response {
    let page = filter.limit.map_or(DUMP_PAGE, |l| l.min(DUMP_PAGE));
    filter.limit = Some(page);
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
            // A full page may have more after it: the scan stopped at its last line.
            let (scanned, more) = match lines.last() {
                Some(last) if lines.len() >= page => (last.seq, true),
                _ => (head, false),
            };
            (
                [
                    (header::CONTENT_TYPE, "application/x-ndjson".to_owned()),
                    (
                        header::HeaderName::from_static(dump::SCANNED_THROUGH),
                        scanned.to_string(),
                    ),
                    (
                        header::HeaderName::from_static(dump::MORE),
                        more.to_string(),
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
    if !s.metrics.is_leader() {
        // A standby's journal is not what was shipped: only the leader replays.
        let why = "this replica is a standby: replay on the leader (the pod whose /readyz says \"leader\")\n";
        return (StatusCode::CONFLICT, why).into_response();
    }
    let w = Window {
        since_ms: window.since_ms,
        until_ms: window.until_ms,
    };
    if window.dry_run {
        let mut filter = Filter::replayed(w);
        filter.after = window.after;
        return dump_lines(Extract(s), Query(filter)).await;
    }
    // One at a time: a second replay would double what the first sends.
    let Some(_running) = Running::start(&s.replaying) else {
        return (
            StatusCode::CONFLICT,
            "a replay is running; wait for it to finish\n",
        )
            .into_response();
    };
    let limits = Limits {
        max_events: window.max_events,
    };
    match shipper.replay(w, limits, &s.stop).await {
        Ok(report) => axum::Json(report).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[derive(Debug, serde::Deserialize)]
struct ReplayQuery {
    since_ms: i64,
    until_ms: Option<i64>,
    /// Send at most this many events (the oldest of the window first).
    max_events: Option<usize>,
    #[serde(default)]
    dry_run: bool,
    /// With `dry_run`: the next page, after this sequence number.
    after: Option<u64>,
}

/// A replay in progress; the flag clears when it ends, however it ends.
struct Running<'a>(&'a AtomicBool);

impl<'a> Running<'a> {
    fn start(flag: &'a AtomicBool) -> Option<Running<'a>> {
        (!flag.swap(true, Ordering::AcqRel)).then_some(Running(flag))
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
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

/// How long the admin endpoint may take to finish its requests at shutdown: a
/// client that sent half a request (or reads slowly) does not hold the exit up.
const ADMIN_GRACE: Duration = Duration::from_secs(2);

/// Waits for the endpoint [`serve`] runs to stop (after its stop token), for at most [`ADMIN_GRACE`].
pub async fn stop(admin: tokio::task::JoinHandle<std::io::Result<()>>) {
    let abort = admin.abort_handle();
    if tokio::time::timeout(ADMIN_GRACE, admin).await.is_err() {
        tracing::warn!("admin requests still open at shutdown were cut off");
        abort.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::testing::MemoryStore;
    use crate::ship::{Boxed, ReplayReport};
    use axum::body::Body;
    use axum::extract::connect_info::MockConnectInfo;
    use tower::ServiceExt;

    /// A shipper whose replays take a moment and report nothing.
    struct Idle;

    impl Shipping for Idle {
        fn sink_name(&self) -> &'static str {
            "datadog"
        }
        fn run(&self, _: CancellationToken) -> Boxed<'_, ()> {
            Box::pin(async { Ok(()) })
        }
        fn replay<'a>(
            &'a self,
            _: Window,
            _: Limits,
            _: &'a CancellationToken,
        ) -> Boxed<'a, ReplayReport> {
            Box::pin(async { Ok(ReplayReport::default()) })
        }
    }

    fn state(leading: bool) -> (State, Journal) {
        let journal =
            Journal::with_store(Box::new(MemoryStore::default()), "(memory)".into(), 1 << 20)
                .unwrap();
        let metrics = Metrics::new();
        metrics.set_leader(leading, Some(1));
        let s = State::starting(metrics);
        s.opened(journal.clone(), Some(Arc::new(Idle)));
        (s, journal)
    }

    async fn ask(
        s: &State,
        from: [u8; 4],
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        let app = router(s.clone()).layer(MockConnectInfo(SocketAddr::from((from, 40_000))));
        let mut request = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = app
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    const POD: [u8; 4] = [10, 244, 1, 7];
    const LOOPBACK: [u8; 4] = [127, 0, 0, 1];
    const REPLAY: &str = "/replay?since_ms=0";

    #[tokio::test]
    async fn another_pod_gets_the_probes_and_metrics_but_not_the_journal() {
        let (s, _) = state(true);
        for path in ["/metrics", "/healthz", "/startupz", "/readyz"] {
            let (status, _) = ask(&s, POD, Method::GET, path, &[]).await;
            assert_ne!(status, 403, "{path}");
        }
        for path in ["/dump", "/dump/meta"] {
            assert_eq!(ask(&s, POD, Method::GET, path, &[]).await.0, 403, "{path}");
            assert_eq!(
                ask(&s, LOOPBACK, Method::GET, path, &[]).await.0,
                200,
                "{path}"
            );
        }
        let with_header = [(REQUEST_HEADER, "replay")];
        assert_eq!(
            ask(&s, POD, Method::POST, REPLAY, &with_header).await.0,
            403
        );
        assert_eq!(
            ask(&s, LOOPBACK, Method::POST, REPLAY, &with_header)
                .await
                .0,
            200
        );
    }

    #[tokio::test]
    async fn a_replay_needs_a_header_no_browser_sends_cross_origin() {
        let (s, _) = state(true);
        let (status, why) = ask(
            &s,
            LOOPBACK,
            Method::POST,
            REPLAY,
            &[("origin", "http://evil.example")],
        )
        .await;
        assert_eq!(status, 403, "{why}");
        assert!(why.contains(REQUEST_HEADER), "{why}");
    }

    #[tokio::test]
    async fn a_standby_refuses_to_replay_and_a_second_replay_waits_for_the_first() {
        let with_header = [(REQUEST_HEADER, "replay")];
        let (standby, _) = state(false);
        let (status, why) = ask(&standby, LOOPBACK, Method::POST, REPLAY, &with_header).await;
        assert_eq!(status, 409, "{why}");
        assert!(why.contains("standby"), "{why}");

        let (leader, _) = state(true);
        let running = Running::start(&leader.replaying).expect("none running");
        let (status, why) = ask(&leader, LOOPBACK, Method::POST, REPLAY, &with_header).await;
        assert_eq!(status, 409, "{why}");
        drop(running);
        assert_eq!(
            ask(&leader, LOOPBACK, Method::POST, REPLAY, &with_header)
                .await
                .0,
            200
        );
    }

    #[tokio::test]
    async fn health_checks_do_not_write_to_the_disk() {
        let (s, journal) = state(true);
        let before = journal.sync_stats().total();
        for _ in 0..1000 {
            assert_eq!(ask(&s, POD, Method::GET, "/healthz", &[]).await.0, 200);
        }
        assert_eq!(journal.sync_stats().total(), before, "no sync per request");
    }

    #[tokio::test]
    async fn while_starting_liveness_is_fine_and_the_rest_says_what_it_waits_for() {
        let s = State::starting(Metrics::new());
        s.set_starting("starting: the journal cannot be opened (read-only); retrying");
        assert_eq!(ask(&s, POD, Method::GET, "/healthz", &[]).await.0, 200);
        let (status, why) = ask(&s, POD, Method::GET, "/startupz", &[]).await;
        assert_eq!(status, 503);
        assert!(why.contains("read-only"), "{why}");
        assert_eq!(ask(&s, POD, Method::GET, "/readyz", &[]).await.0, 503);
    }
}
