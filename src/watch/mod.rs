//! The watcher: reads core/v1 Events from the API server into the journal.
//!
//! It guarantees that the resume token it stores never points past an event that is
//! not durable in the journal: each batch of watch lines is journaled together with
//! the token that follows it, in one write (docs/delivery.md, rule 1).
//!
//! It issues `GET /api/v1/events?watch` itself rather than using kube-runtime's
//! watcher, which can neither start from a stored resourceVersion nor show
//! bookmarks, and it keeps the API server's bytes untouched (they are what the
//! journal stores). The requests sit behind [`EventsApi`] (`api.rs`).
//!
//! The loop is a [`State`] machine: [`Watcher::step`] runs one state and returns
//! the next, so each rule is tested one step at a time (`tests.rs`).

pub mod api;
mod lines;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::backoff::{Backoff, within};
use crate::delivery;
use crate::journal::{Journal, JournalError};
use crate::metrics::Metrics;
use crate::record::{Gap, Header, Record, RecordKind, ResumeToken};
pub use api::{ApiError, EventList, EventsApi, KubeEvents, ListMeta};
use lines::GATHER;
pub use lines::{Line, LineError, WatchLines};

/// Watch settings, checked (`watch:` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSettings {
    /// How long one watch request lasts before the API server ends it and evrelay
    /// opens the next from the same token.
    pub timeout: Duration,
    /// A watch that delivers neither an event nor a bookmark for this long is
    /// considered stalled and reopened. Bookmarks arrive about once a minute.
    pub stall_timeout: Duration,
    /// Events per page when listing (`limit`), at the most: pages of large events
    /// are made smaller, so that one page holds about [`PAGE_BYTES`].
    pub list_page_size: u32,
    /// The deadline of one LIST page, and of opening a watch (until the API
    /// server's first byte): a request that never answers is given up and retried.
    pub request_timeout: Duration,
    /// A leader that has not had the API server answer a LIST page or open a watch
    /// for this long gives its Lease up, so that a standby can try.
    pub establish_timeout: Duration,
}

impl Default for WatchSettings {
    fn default() -> Self {
        WatchSettings {
            timeout: Duration::from_secs(290),
            stall_timeout: Duration::from_secs(150),
            list_page_size: 500,
            request_timeout: Duration::from_secs(60),
            establish_timeout: Duration::from_secs(180),
        }
    }
}

/// About how many bytes of events one LIST page holds: the next page's `limit`
/// is cut to fit this at the size of the events seen so far.
pub const PAGE_BYTES: usize = 8 * 1024 * 1024;
/// The first page's `limit` at the most, before the events' size is known (25
/// of the largest objects etcd stores, 1.5 MiB each, are 37 MiB).
pub const FIRST_PAGE: u32 = 25;

/// The first wait after a failed request, and the longest.
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Why the watcher stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The journal refused a write: nothing more can be acknowledged safely.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A request could not even be built (a bug, not a condition).
    #[error("building a request: {0}")]
    Request(#[from] kube::core::request::Error),
    /// No LIST page was answered and no watch opened for this long: the API
    /// server is unreachable from here. A leader steps down on it.
    #[error("no watch could be established for {waited:?} (last: {last})")]
    NotEstablished { waited: Duration, last: String },
}

/// What the watcher does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// List every event (paginated) and journal what is not there yet, then watch.
    /// `None`: a first start with nothing to resume from. `Some(token)`: the token
    /// expired (410 Gone), so a gap is recorded, since events may have expired in
    /// between.
    Listing(Option<ResumeToken>),
    /// Watch from this token.
    Watching(ResumeToken),
    /// A request failed: wait (the backoff's next delay), then go on with the inner
    /// state.
    Backoff(Box<State>),
    /// Shutdown was asked for.
    Done,
}

/// A failure worth retrying: the API server, the network, or a disk that refuses
/// writes for now (full, read-only): the position is not advanced, so the retry
/// asks for the same events again.
#[derive(Debug, thiserror::Error)]
enum Transient {
    #[error("the journal cannot write: {0}")]
    Journal(JournalError),
    #[error(transparent)]
    Api(ApiError),
    #[error("{what}: {elapsed}")]
    Timeout {
        what: &'static str,
        elapsed: crate::backoff::Elapsed,
    },
    #[error("watch stream: {0}")]
    Stream(String),
    #[error("watch delivered nothing for {0:?}; reopening")]
    Stalled(Duration),
}

/// How a state failed.
#[derive(Debug)]
enum Failure {
    Fatal(WatchError),
    Transient(Transient),
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Request(e) => Failure::Fatal(e.into()),
            other => Failure::Transient(Transient::Api(other)),
        }
    }
}

impl From<JournalError> for Failure {
    fn from(e: JournalError) -> Self {
        if e.is_unwritable() {
            Failure::Transient(Transient::Journal(e))
        } else {
            Failure::Fatal(e.into())
        }
    }
}

/// Reads events into the journal until shut down.
pub struct Watcher<A> {
    api: A,
    journal: Journal,
    settings: WatchSettings,
    metrics: Metrics,
    backoff: Backoff,
    /// When the API server last answered a LIST page or opened a watch.
    last_progress: tokio::time::Instant,
    /// What failed last, for the step-down's message.
    last_failure: String,
    /// The next LIST page's `limit`: the configured size, cut for large events.
    page_limit: u32,
}

impl<A: EventsApi> Watcher<A> {
    pub fn new(api: A, journal: Journal, settings: WatchSettings, metrics: Metrics) -> Self {
        Watcher {
            api,
            journal,
            page_limit: settings.list_page_size.min(FIRST_PAGE),
            settings,
            metrics,
            backoff: Backoff::new(FIRST_RETRY, MAX_RETRY),
            last_progress: tokio::time::Instant::now(),
            last_failure: String::new(),
        }
    }

    /// Where a start begins: the journal's token, else a list.
    pub async fn first_state(&self) -> Result<State, WatchError> {
        Ok(match self.journal.call(|j| j.resume_token()).await? {
            Some(token) => {
                tracing::info!(resource_version = %token.resource_version, "resuming watch from the journal");
                State::Watching(token)
            }
            None => State::Listing(None),
        })
    }

    /// Runs until `shutdown` is cancelled or the journal fails.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), WatchError> {
        let mut state = self.first_state().await?;
        while state != State::Done {
            state = self.step(state, &shutdown).await?;
        }
        Ok(())
    }

    /// Runs one state; returns the next.
    pub async fn step(
        &mut self,
        state: State,
        shutdown: &CancellationToken,
    ) -> Result<State, WatchError> {
        match state {
            State::Done => Ok(State::Done),
            State::Backoff(then) => {
                let waited = self.last_progress.elapsed();
                if waited >= self.settings.establish_timeout {
                    return Err(WatchError::NotEstablished {
                        waited,
                        last: self.last_failure.clone(),
                    });
                }
                let delay = self.backoff.wait();
                tokio::select! {
                    _ = shutdown.cancelled() => Ok(State::Done),
                    _ = tokio::time::sleep(delay) => Ok(*then),
                }
            }
            State::Listing(after) => match self.list(after.as_ref(), shutdown).await {
                Ok(Some(token)) => Ok(State::Watching(token)),
                Ok(None) => Ok(State::Done),
                Err(Failure::Fatal(e)) => Err(e),
                Err(Failure::Transient(e)) => {
                    tracing::warn!(error = %e, "listing events failed; retrying");
                    self.last_failure = e.to_string();
                    Ok(State::Backoff(Box::new(State::Listing(after))))
                }
            },
            State::Watching(token) => {
                let result = self.watch(token, shutdown).await;
                self.metrics.set_watching(false);
                match result {
                    Ok(next) => {
                        self.backoff.reset();
                        Ok(next)
                    }
                    Err((Failure::Fatal(e), _)) => Err(e),
                    Err((Failure::Transient(e), token)) => {
                        self.metrics.watch_restarted();
                        tracing::warn!(error = %e, resource_version = %token.resource_version, "watch failed; reopening after a backoff");
                        self.last_failure = e.to_string();
                        Ok(State::Backoff(Box::new(State::Watching(token))))
                    }
                }
            }
        }
    }

    /// One watch request, from `token` until the API server ends it. Returns the
    /// next state; on a transient failure, the token reached so far.
    async fn watch(
        &mut self,
        mut token: ResumeToken,
        shutdown: &CancellationToken,
    ) -> Result<State, (Failure, ResumeToken)> {
        let opening = self
            .api
            .watch(&token.resource_version, self.settings.timeout);
        let opened = tokio::select! {
            _ = shutdown.cancelled() => return Ok(State::Done),
            opened = within(self.settings.request_timeout, opening) => opened,
        };
        let mut lines = match opened {
            Ok(Ok(lines)) => lines,
            Ok(Err(ApiError::Gone(_))) => {
                self.answered();
                return Ok(State::Listing(Some(token)));
            }
            Ok(Err(e)) => {
                self.failed(&e);
                return Err((e.into(), token));
            }
            Err(elapsed) => {
                self.metrics.api_failed();
                let what = "opening the watch";
                return Err((
                    Failure::Transient(Transient::Timeout { what, elapsed }),
                    token,
                ));
            }
        };
        tracing::debug!(resource_version = %token.resource_version, "watch opened");
        self.answered();
        self.metrics.set_watching(true);
        let stall = self.settings.stall_timeout;
        loop {
            let batch = tokio::select! {
                _ = shutdown.cancelled() => return Ok(State::Done),
                next = tokio::time::timeout(stall, lines.next_group(GATHER)) => match next {
                    Err(_) => return Err((Failure::Transient(Transient::Stalled(stall)), token)),
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
                return Err((e.into(), token));
            }
            token = next;
            if expired {
                return Ok(State::Listing(Some(token)));
            }
            if let Some(e) = failure {
                return Err((Failure::Transient(e), token));
            }
        }
    }

    /// Journals `records` with `token` in one durable write; or records the token
    /// alone, where it moved without events (a bookmark, a deletion).
    async fn commit(
        &self,
        records: Vec<Record>,
        token: Option<ResumeToken>,
    ) -> Result<(), JournalError> {
        if records.is_empty() && token.is_none() {
            return Ok(());
        }
        let rv = token.as_ref().map(|t| t.resource_version.clone());
        let outcome = self
            .journal
            .call(move |j| match (records.is_empty(), token) {
                (true, Some(token)) => j.set_token(&token).map(|()| None),
                (_, token) => j.append(&records, token.as_ref()).map(Some),
            })
            .await?;
        if let Some(token) = &rv {
            self.metrics.resource_version(token);
        }
        if let Some(o) = outcome {
            self.metrics.journaled(o.journaled, o.duplicates);
            if o.cap.dropped_pending > 0 {
                self.metrics
                    .dropped(Gap::JournalFull, o.cap.dropped_pending);
                self.metrics.gap(Gap::JournalFull);
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
        &mut self,
        after: Option<&ResumeToken>,
        shutdown: &CancellationToken,
    ) -> Result<Option<ResumeToken>, Failure> {
        // With a token but no dedup index (a new disk resuming from a mirrored
        // token), only events newer than the token can be new to the intake.
        let index_empty = self.journal.call(|j| j.seen_is_empty()).await?;
        let newer_than = after.filter(|_| index_empty).map(|t| t.timestamp_ms);
        'restart: loop {
            let mut continue_token = None;
            let mut list_version: Option<String> = None;
            let mut newest = after.map(|t| t.timestamp_ms).unwrap_or(0);
            let mut pages = 0u32;
            let mut listed = 0usize;
            loop {
                if shutdown.is_cancelled() {
                    return Ok(None);
                }
                let had_continue = continue_token.is_some();
                let listing = self.api.list(self.page_limit, continue_token.take());
                let page = tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    page = within(self.settings.request_timeout, listing) => page,
                };
                let page = match page {
                    Ok(Ok(page)) => page,
                    // The continue token expired: start the list again.
                    Ok(Err(ApiError::Gone(_))) if had_continue => {
                        self.answered();
                        tracing::warn!("list continue token expired; restarting the list");
                        continue 'restart;
                    }
                    Ok(Err(e)) => {
                        self.failed(&e);
                        return Err(e.into());
                    }
                    Err(elapsed) => {
                        self.metrics.api_failed();
                        let what = "listing a page of events";
                        return Err(Failure::Transient(Transient::Timeout { what, elapsed }));
                    }
                };
                self.answered();
                pages += 1;
                let on_page = page.items.len();
                listed += on_page;
                self.metrics.received(on_page);
                list_version.get_or_insert(page.metadata.resource_version.clone());
                let ListMeta {
                    continue_token: next,
                    ..
                } = page.metadata;
                let mut bytes = 0;
                let records: Vec<Record> = page
                    .items
                    .into_iter()
                    .map(|raw| {
                        bytes += raw.get().len();
                        record_of(raw.get().as_bytes())
                    })
                    .filter(|r| match newer_than {
                        Some(t) => delivery::newer_than_token(&r.header, t),
                        None => true,
                    })
                    .collect();
                self.fit_page(bytes, on_page);
                for r in &records {
                    newest = newest.max(delivery::token_time(&r.header).unwrap_or(0));
                }
                self.commit(records, None).await?;
                match next.filter(|c| !c.is_empty()) {
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
                self.metrics.gap(Gap::ResumeTokenExpired);
                tracing::warn!(
                    expired = %expired.resource_version, relisted_at = %token.resource_version,
                    "resume token expired: relisted; events that expired in between may be lost (gap recorded)"
                );
                finish.push(gap_marker(expired, &token));
            } else {
                tracing::info!(pages, listed, resource_version = %token.resource_version, "initial list journaled");
            }
            self.commit(finish, Some(token.clone())).await?;
            return Ok(Some(token));
        }
    }
}

impl<A> Watcher<A> {
    /// The API server answered: the watcher is making progress.
    fn answered(&mut self) {
        self.last_progress = tokio::time::Instant::now();
        self.metrics.api_answered();
    }

    /// A request failed: with an answer (a status) the API server is reachable.
    fn failed(&mut self, e: &ApiError) {
        match e {
            ApiError::Kube(kube::Error::Api(_)) => self.metrics.api_answered(),
            _ => self.metrics.api_failed(),
        }
    }

    /// Cuts the next page's `limit` so that a page holds about [`PAGE_BYTES`], at
    /// the mean size of the events of the page just listed (`bytes` for `items`).
    fn fit_page(&mut self, bytes: usize, items: usize) {
        if items == 0 || bytes == 0 {
            return;
        }
        let mean = (bytes / items).max(1);
        let fits = (PAGE_BYTES / mean).clamp(1, self.settings.list_page_size as usize);
        if fits as u32 != self.page_limit {
            tracing::debug!(
                limit = fits,
                mean_bytes = mean,
                "list page size adjusted to the events' size"
            );
        }
        self.page_limit = fits as u32;
    }
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

/// Moves the token past an event. Its time moves to the event's, but no further
/// than the moment it was received ([`delivery::token_time`]).
fn advance(token: &mut ResumeToken, header: &Header) {
    if !header.resource_version.is_empty() {
        token.resource_version.clone_from(&header.resource_version);
    }
    if let Some(ts) = delivery::token_time(header) {
        token.timestamp_ms = token.timestamp_ms.max(ts);
    }
}

/// A gap marker: the watch resumed at `relisted` after `expired` was gone.
fn gap_marker(expired: &ResumeToken, relisted: &ResumeToken) -> Record {
    let mut gap = Record::gap(
        Gap::ResumeTokenExpired,
        serde_json::json!({
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

#[cfg(test)]
mod tests;
