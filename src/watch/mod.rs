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

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::delivery;
use crate::journal::{Journal, JournalError};
use crate::metrics::Metrics;
use crate::record::{Gap, Header, Record, RecordKind, ResumeToken};
pub use api::{ApiError, EventList, EventsApi, KubeEvents, ListMeta};
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
    /// Events per page when listing (`limit`).
    pub list_page_size: u32,
}

impl Default for WatchSettings {
    fn default() -> Self {
        WatchSettings {
            timeout: Duration::from_secs(290),
            stall_timeout: Duration::from_secs(150),
            list_page_size: 500,
        }
    }
}

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

/// A failure worth retrying: the API server or the network, not the journal.
#[derive(Debug, thiserror::Error)]
enum Transient {
    #[error(transparent)]
    Api(ApiError),
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
        Failure::Fatal(e.into())
    }
}

/// Reads events into the journal until shut down.
pub struct Watcher<A> {
    api: A,
    journal: Journal,
    settings: WatchSettings,
    metrics: Metrics,
    backoff: Backoff,
}

impl<A: EventsApi> Watcher<A> {
    pub fn new(api: A, journal: Journal, settings: WatchSettings, metrics: Metrics) -> Self {
        Watcher {
            api,
            journal,
            settings,
            metrics,
            backoff: Backoff::new(FIRST_RETRY, MAX_RETRY),
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
                        Ok(State::Backoff(Box::new(State::Watching(token))))
                    }
                }
            }
        }
    }

    /// One watch request, from `token` until the API server ends it. Returns the
    /// next state; on a transient failure, the token reached so far.
    async fn watch(
        &self,
        mut token: ResumeToken,
        shutdown: &CancellationToken,
    ) -> Result<State, (Failure, ResumeToken)> {
        let opened = tokio::select! {
            _ = shutdown.cancelled() => return Ok(State::Done),
            opened = self.api.watch(&token.resource_version, self.settings.timeout) => opened,
        };
        let mut lines = match opened {
            Ok(lines) => lines,
            Err(ApiError::Gone(_)) => return Ok(State::Listing(Some(token))),
            Err(e) => return Err((e.into(), token)),
        };
        tracing::debug!(resource_version = %token.resource_version, "watch opened");
        self.metrics.set_watching(true);
        let stall = self.settings.stall_timeout;
        loop {
            let batch = tokio::select! {
                _ = shutdown.cancelled() => return Ok(State::Done),
                next = tokio::time::timeout(stall, lines.next()) => match next {
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
                return Err((Failure::Fatal(e), token));
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
    ) -> Result<(), WatchError> {
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
        &self,
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
                let listing = self
                    .api
                    .list(self.settings.list_page_size, continue_token.take());
                let page = tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    page = listing => page,
                };
                let page = match page {
                    Ok(page) => page,
                    // The continue token expired: start the list again.
                    Err(ApiError::Gone(_)) if had_continue => {
                        tracing::warn!("list continue token expired; restarting the list");
                        continue 'restart;
                    }
                    Err(e) => return Err(e.into()),
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
                self.commit(records, None).await.map_err(Failure::Fatal)?;
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
                self.metrics.gap(Gap::ResumeTokenExpired);
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
                .map_err(Failure::Fatal)?;
            return Ok(Some(token));
        }
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
