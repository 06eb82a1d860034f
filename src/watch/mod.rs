//! The watcher: reads core/v1 Events from the API server into the journal.
//!
//! It guarantees that the resume token it stores never points past an event that is
//! not durable in the journal: each batch of watch lines is journaled together with
//! the token that follows it, in one write (docs/delivery.md, rule 1).
//!
//! It uses `GET /api/v1/events?watch` directly rather than kube-runtime's watcher,
//! which can neither start from a stored resourceVersion nor show bookmarks, and it
//! keeps the API server's bytes untouched (they are what the journal stores).
//!
//! The loop is a [`State`] machine; `step` runs one state and returns the next.

mod lines;

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::StreamExt;
use kube::core::Request;
use kube::core::params::{ListParams, WatchParams};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::config::Problem;
use crate::delivery;
use crate::journal::{Header, Journal, JournalError, Record, RecordKind, ResumeToken};
use crate::metrics::{DropReason, GapReason, Metrics};
use lines::{Line, WatchLines};

const EVENTS_PATH: &str = "/api/v1/events";

/// Watch settings (`watch:` in the config file).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchConfig {
    /// How long one watch request lasts before the API server ends it and evrelay
    /// opens the next from the same token.
    pub timeout_seconds: u32,
    /// A watch that delivers neither an event nor a bookmark for this long is
    /// considered stalled and reopened. Bookmarks arrive about once a minute.
    pub stall_timeout_seconds: u64,
    /// Events per page when listing (`limit`).
    pub list_page_size: u32,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            timeout_seconds: 290,
            stall_timeout_seconds: 150,
            list_page_size: 500,
        }
    }
}

impl WatchConfig {
    pub(crate) fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if self.timeout_seconds == 0 {
            out.push(Problem {
                key: "watch.timeout_seconds".into(),
                message: "0 would end every watch at once".into(),
                fix: "use a value between 60 and 1800 (default 290)".into(),
            });
        }
        if self.stall_timeout_seconds < 70 {
            out.push(Problem {
                key: "watch.stall_timeout_seconds".into(),
                message: format!(
                    "{} is shorter than the API server's bookmark interval (~60 s)",
                    self.stall_timeout_seconds
                ),
                fix: "use at least 70 (default 150)".into(),
            });
        }
        if self.list_page_size == 0 {
            out.push(Problem {
                key: "watch.list_page_size".into(),
                message: "0 events per page".into(),
                fix: "use a value between 50 and 5000 (default 500)".into(),
            });
        }
        out
    }
}

/// Why the watcher stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The journal refused a write: nothing more can be acknowledged safely.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A request could not even be built (a bug, not a condition).
    #[error("building a request: {0}")]
    Request(#[from] kube::core::request::Error),
}

/// What the watcher does next.
#[derive(Debug)]
enum State {
    /// List every event (paginated) and journal what is not there yet, then watch.
    /// `None`: a first start with nothing to resume from. `Some(token)`: the token
    /// expired (410 Gone), so a gap is recorded, since events may have expired in
    /// between.
    Listing(Option<ResumeToken>),
    /// Watch from this token.
    Watching(ResumeToken),
    /// A request failed; wait, then go on with the inner state.
    Backoff(Box<State>),
    /// Shutdown was asked for.
    Done,
}

/// A failure worth retrying: the API server or the network, not the journal.
#[derive(Debug, thiserror::Error)]
enum Transient {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("watch stream: {0}")]
    Stream(String),
    #[error("watch delivered nothing for {0:?}; reopening")]
    Stalled(Duration),
}

/// Reads events into the journal until shut down.
pub struct Watcher {
    client: kube::Client,
    journal: Journal,
    config: WatchConfig,
    backoff: ExponentialBuilder,
    metrics: Metrics,
}

impl Watcher {
    pub fn new(
        client: kube::Client,
        journal: Journal,
        config: WatchConfig,
        metrics: Metrics,
    ) -> Self {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(30))
            .with_jitter()
            .without_max_times();
        Watcher {
            client,
            journal,
            config,
            backoff,
            metrics,
        }
    }

    /// Runs until `shutdown` is cancelled or the journal fails.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WatchError> {
        let mut state = match self.journal.resume_token()? {
            Some(token) => {
                tracing::info!(resource_version = %token.resource_version, "resuming watch from the journal");
                State::Watching(token)
            }
            None => State::Listing(None),
        };
        let mut delays = self.backoff.build();
        loop {
            state = match state {
                State::Done => return Ok(()),
                State::Backoff(then) => {
                    let delay = delays.next().unwrap_or(Duration::from_secs(30));
                    tokio::select! {
                        _ = shutdown.cancelled() => State::Done,
                        _ = tokio::time::sleep(delay) => *then,
                    }
                }
                State::Listing(after) => match self.list(after.as_ref(), &shutdown).await {
                    Ok(Some(token)) => State::Watching(token),
                    Ok(None) => State::Done,
                    Err(Step::Fatal(e)) => return Err(e),
                    Err(Step::Transient(e)) => {
                        tracing::warn!(error = %e, "listing events failed; retrying");
                        State::Backoff(Box::new(State::Listing(after)))
                    }
                },
                State::Watching(token) => {
                    let result = self.watch(token, &shutdown).await;
                    self.metrics.set_watching(false);
                    match result {
                        Ok(next) => {
                            delays = self.backoff.build();
                            next
                        }
                        Err((Step::Fatal(e), _)) => return Err(e),
                        Err((Step::Transient(e), token)) => {
                            self.metrics.watch_restarted();
                            tracing::warn!(error = %e, resource_version = %token.resource_version, "watch failed; reopening after a backoff");
                            State::Backoff(Box::new(State::Watching(token)))
                        }
                    }
                }
            };
        }
    }

    /// One watch request, from `token` until the API server ends it. Returns the
    /// next state; on a transient failure, the token reached so far.
    async fn watch(
        &self,
        mut token: ResumeToken,
        shutdown: &CancellationToken,
    ) -> Result<State, (Step, ResumeToken)> {
        let params = WatchParams {
            timeout: Some(self.config.timeout_seconds),
            bookmarks: true,
            ..Default::default()
        };
        let request = Request::new(EVENTS_PATH)
            .watch(&params, &token.resource_version)
            .map_err(|e| (Step::Fatal(e.into()), token.clone()))?;
        let reader = match self.client.request_stream(request).await {
            Ok(reader) => reader,
            Err(kube::Error::Api(status)) if status.code == 410 => {
                return Ok(State::Listing(Some(token)));
            }
            Err(e) => return Err((Step::Transient(e.into()), token)),
        };
        tracing::debug!(resource_version = %token.resource_version, "watch opened");
        self.metrics.set_watching(true);
        let mut lines = WatchLines::new(reader);
        let stall = Duration::from_secs(self.config.stall_timeout_seconds);
        loop {
            let batch = tokio::select! {
                _ = shutdown.cancelled() => return Ok(State::Done),
                next = tokio::time::timeout(stall, lines.next()) => match next {
                    Err(_) => return Err((Step::Transient(Transient::Stalled(stall)), token)),
                    Ok(None) => return Ok(State::Watching(token)),
                    Ok(Some(batch)) => batch,
                },
            };
            let mut records = Vec::with_capacity(batch.len());
            let mut next = token.clone();
            let mut expired = false;
            let mut failure = None;
            for line in batch {
                match line {
                    Ok(Line::Upsert(raw)) => {
                        self.metrics.received(1);
                        let record = record_of(raw.get().as_bytes());
                        advance(&mut next, &record.header);
                        records.push(record);
                    }
                    Ok(Line::Deleted { resource_version })
                    | Ok(Line::Bookmark { resource_version }) => {
                        next.resource_version = resource_version;
                    }
                    Ok(Line::Expired) => {
                        expired = true;
                        break;
                    }
                    Ok(Line::Error(message)) => {
                        failure = Some(Transient::Stream(message));
                        break;
                    }
                    Err(e) => {
                        failure = Some(Transient::Stream(e.to_string()));
                        break;
                    }
                }
            }
            // Journal what arrived before any failure, with the token reached.
            let moved = (next != token).then(|| next.clone());
            if let Err(e) = self.commit(records, moved).await {
                return Err((Step::Fatal(e), token));
            }
            token = next;
            if expired {
                return Ok(State::Listing(Some(token)));
            }
            if let Some(e) = failure {
                return Err((Step::Transient(e), token));
            }
        }
    }

    /// Journals `records` with `token` in one durable write; or records the token
    /// alone, where it moved without events (a bookmark, a deletion).
    async fn commit(
        &self,
        records: Vec<Record>,
        token: Option<ResumeToken>,
    ) -> Result<(), WatchError> {
        if records.is_empty() && token.is_none() {
            return Ok(());
        }
        let journal = self.journal.clone();
        let rv = token.as_ref().map(|t| t.resource_version.clone());
        let outcome = tokio::task::spawn_blocking(move || match (records.is_empty(), token) {
            (true, Some(token)) => journal.set_token(&token).map(|()| None),
            (_, token) => journal.append(&records, token.as_ref()).map(Some),
        })
        .await
        .expect("journal task panicked")?;
        if let Some(token) = &rv {
            self.metrics.resource_version(token);
        }
        if let Some(o) = outcome {
            self.metrics.journaled(o.journaled, o.duplicates);
            if o.cap.dropped_pending > 0 {
                self.metrics
                    .dropped(DropReason::journal_full, o.cap.dropped_pending);
                self.metrics.gap(GapReason::journal_full);
            }
            tracing::debug!(
                journaled = o.journaled,
                duplicates = o.duplicates,
                head = o.head,
                "batch journaled"
            );
        }
        Ok(())
    }

    /// Lists every event (paginated), journaling each page. `after` is the expired
    /// token on a relist (a gap marker is written), `None` on a first start.
    /// Returns the token to watch from, or `None` on shutdown.
    async fn list(
        &self,
        after: Option<&ResumeToken>,
        shutdown: &CancellationToken,
    ) -> Result<Option<ResumeToken>, Step> {
        'restart: loop {
            let mut continue_token = None;
            let mut list_version: Option<String> = None;
            let mut newest = after.map(|t| t.timestamp_ms).unwrap_or(0);
            // With a token but no dedup index (a new disk resuming from a mirrored
            // token), only events newer than the token can be new to the intake.
            let newer_than = match after {
                Some(token) if self.journal.seen_is_empty() => Some(token.timestamp_ms),
                _ => None,
            };
            let mut pages = 0u32;
            let mut listed = 0usize;
            loop {
                if shutdown.is_cancelled() {
                    return Ok(None);
                }
                let params = ListParams {
                    limit: Some(self.config.list_page_size),
                    continue_token: continue_token.clone(),
                    ..Default::default()
                };
                let request = Request::new(EVENTS_PATH)
                    .list(&params)
                    .map_err(|e| Step::Fatal(e.into()))?;
                let page: EventList = match self.client.request(request).await {
                    Ok(page) => page,
                    // The continue token expired: start the list again.
                    Err(kube::Error::Api(status))
                        if status.code == 410 && continue_token.is_some() =>
                    {
                        tracing::warn!("list continue token expired; restarting the list");
                        continue 'restart;
                    }
                    Err(e) => return Err(Step::Transient(e.into())),
                };
                pages += 1;
                listed += page.items.len();
                self.metrics.received(page.items.len());
                list_version.get_or_insert(page.metadata.resource_version.clone());
                let records: Vec<Record> = page
                    .items
                    .iter()
                    .map(|raw| record_of(raw.get().as_bytes()))
                    .filter(|r| match newer_than {
                        Some(t) => delivery::newer_than_token(&r.header, t),
                        None => true,
                    })
                    .collect();
                for r in &records {
                    newest = newest.max(r.header.last_timestamp_ms.unwrap_or(0));
                }
                self.commit(records, None).await.map_err(Step::Fatal)?;
                match page.metadata.continue_token.filter(|c| !c.is_empty()) {
                    Some(c) => continue_token = Some(c),
                    None => break,
                }
            }
            let token = ResumeToken {
                resource_version: list_version.unwrap_or_default(),
                timestamp_ms: newest,
            };
            let mut finish = Vec::new();
            if let Some(expired) = after {
                self.metrics.relisted();
                self.metrics.gap(GapReason::resume_token_expired);
                tracing::warn!(
                    expired = %expired.resource_version, relisted_at = %token.resource_version,
                    "resume token expired: relisted; events that expired in between may be lost (gap recorded)"
                );
                finish.push(gap_marker(expired, &token));
            } else {
                tracing::info!(pages, listed, resource_version = %token.resource_version, "initial list journaled");
            }
            self.commit(finish, Some(token.clone()))
                .await
                .map_err(Step::Fatal)?;
            return Ok(Some(token));
        }
    }
}

/// How a step failed.
#[derive(Debug)]
enum Step {
    Fatal(WatchError),
    Transient(Transient),
}

impl From<kube::Error> for Step {
    fn from(e: kube::Error) -> Self {
        Step::Transient(e.into())
    }
}

/// A page of `GET /api/v1/events`, items kept as the API server's bytes.
#[derive(Deserialize)]
struct EventList {
    metadata: ListMeta,
    items: Vec<Box<RawValue>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListMeta {
    #[serde(default)]
    resource_version: String,
    #[serde(default, rename = "continue")]
    continue_token: Option<String>,
}

/// The journal record for an event's bytes. Bytes that are not an event object are
/// journaled all the same, with an empty header, so nothing is lost silently.
fn record_of(raw: &[u8]) -> Record {
    let received_at_ms = jiff::Timestamp::now().as_millisecond();
    let header = match crate::event::KubeEvent::parse(raw) {
        Ok(event) => event.header(received_at_ms),
        Err(e) => {
            tracing::warn!(error = %e, "journaling an event that does not parse");
            Header::blank(RecordKind::Event, received_at_ms)
        }
    };
    Record {
        header,
        raw: raw.to_vec(),
    }
}

/// Moves the token past an event.
fn advance(token: &mut ResumeToken, header: &Header) {
    if !header.resource_version.is_empty() {
        token.resource_version.clone_from(&header.resource_version);
    }
    if let Some(ts) = header.last_timestamp_ms {
        token.timestamp_ms = token.timestamp_ms.max(ts);
    }
}

/// A gap marker: the watch resumed at `relisted` after `expired` was gone.
fn gap_marker(expired: &ResumeToken, relisted: &ResumeToken) -> Record {
    let mut gap = Record::gap(
        "ResumeTokenExpired",
        serde_json::json!({
            "reason": "ResumeTokenExpired",
            "expired_resource_version": expired.resource_version,
            "relisted_resource_version": relisted.resource_version,
        }),
    );
    gap.header
        .resource_version
        .clone_from(&relisted.resource_version);
    gap.header.first_timestamp_ms = Some(expired.timestamp_ms);
    gap
}
