//! The shipper: reads pending records from the journal, hands them to a [`Sink`],
//! and moves that sink's shipped-through cursor once the destination said 2xx.
//!
//! It guarantees (docs/delivery.md, rules 2 and 3) that the cursor passes a record
//! only after a 2xx for the request that carried it, durably, before the next
//! request is sent. A crash can therefore resend at most the one batch in flight.
//!
//! It shares nothing with the watcher but the journal: it wakes when the journal's
//! head moves, and is otherwise free to fall behind and catch up. It knows nothing
//! of Datadog: the sink maps, encodes and sends (`sink.rs`); the shipper batches,
//! retries, splits, dead-letters and keeps the cursor (`deliver.rs`).

mod deliver;
pub mod replay;
pub mod sink;

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::event::KubeEvent;
use crate::journal::{Journal, JournalError, StoredRecord};
use crate::metrics::Metrics;
use crate::record::{Record, RecordError, RecordKind};
pub use deliver::{Attempts, Settled};
pub use replay::{Limits, ReplayReport, Window};
pub use sink::{Answer, Mapped, Occurrence, Outbound, Sink, Unbundle};

/// Shipping settings, checked (`ship:` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShipSettings {
    /// Records per request at the most.
    pub max_events: usize,
    /// Journal bytes per request at the most; keeps requests under the intake's
    /// 4 MiB uncompressed cap.
    pub max_bytes: usize,
    /// How long the shipper lets records gather before sending a partial batch.
    pub flush_interval: Duration,
    /// One request's deadline (the Datadog Agent uses 20 s).
    pub request_timeout: Duration,
    /// The longest wait between retries (the Datadog Agent caps at 64 s).
    pub max_backoff: Duration,
    /// On shutdown, how long an in-flight request may still take before it is
    /// abandoned (its records stay pending and are sent after the restart).
    pub shutdown_grace: Duration,
}

impl Default for ShipSettings {
    fn default() -> Self {
        ShipSettings {
            max_events: 500,
            max_bytes: 3 * 1024 * 1024,
            flush_interval: Duration::from_millis(200),
            request_timeout: Duration::from_secs(20),
            max_backoff: Duration::from_secs(64),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// The first wait after a failed request.
const FIRST_RETRY: Duration = Duration::from_millis(500);

/// Why the shipper stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// A shipper whatever its sink: what the leader runs and the admin endpoint
/// replays through.
pub trait Shipping: Send + Sync {
    /// The sink's name: its cursor in the journal.
    fn sink_name(&self) -> &'static str;

    /// Ships until `shutdown` is cancelled or the journal fails.
    fn run(&self, shutdown: CancellationToken) -> Boxed<'_, ()>;

    /// Sends the events of `window` again.
    fn replay<'a>(
        &'a self,
        window: Window,
        limits: Limits,
        shutdown: &'a CancellationToken,
    ) -> Boxed<'a, ReplayReport>;
}

/// A shipper's work, boxed so that shippers of different sinks are one type.
pub type Boxed<'a, T> = Pin<Box<dyn Future<Output = Result<T, ShipError>> + Send + 'a>>;

impl<S: Sink> Shipping for Shipper<S> {
    fn sink_name(&self) -> &'static str {
        self.sink.name()
    }

    fn run(&self, shutdown: CancellationToken) -> Boxed<'_, ()> {
        Box::pin(Shipper::run(self, shutdown))
    }

    fn replay<'a>(
        &'a self,
        window: Window,
        limits: Limits,
        shutdown: &'a CancellationToken,
    ) -> Boxed<'a, ReplayReport> {
        Box::pin(Shipper::replay(self, window, limits, shutdown))
    }
}

/// Sends journaled records to one sink.
pub struct Shipper<S> {
    journal: Journal,
    sink: S,
    settings: ShipSettings,
    metrics: Metrics,
}

impl<S: Sink> Shipper<S> {
    pub fn new(journal: Journal, sink: S, settings: ShipSettings, metrics: Metrics) -> Self {
        Shipper {
            journal,
            sink,
            settings,
            metrics,
        }
    }

    /// Ships until `shutdown` is cancelled or the journal fails.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), ShipError> {
        let mut head = self.journal.subscribe();
        let mut backoff = Backoff::new(FIRST_RETRY, self.settings.max_backoff);
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            let Some(batch) = self.next_batch(&shutdown).await? else {
                return Ok(());
            };
            if batch.is_empty() {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    changed = head.changed() => if changed.is_err() { return Ok(()) },
                }
                // Let a burst gather into one request.
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(self.settings.flush_interval) => {}
                }
                continue;
            }
            let last = batch.last().expect("not empty").seq;
            let occurrences = occurrences(batch.iter().map(|s| (s.seq, &s.record)));
            let Mapped { outbound, filtered } = self.sink.map(&occurrences);
            let unbundle = |seqs: &[u64]| self.sink.unbundle(&occurrences, seqs);
            let settled = if outbound.is_empty() {
                Settled::default()
            } else {
                match self
                    .attempts(&mut backoff, &shutdown, &unbundle)
                    .settle(&outbound)
                    .await
                {
                    Some(settled) => settled,
                    None => return Ok(()), // shutdown: the batch stays pending
                }
            };
            let dead = settled.dead_letters;
            let dead_count = dead.len();
            // Records that were not delivered: their lag is not a delivery's.
            let undelivered: HashSet<u64> = dead
                .iter()
                .map(|(seq, _)| *seq)
                .chain(filtered.iter().copied())
                .collect();
            let sink = self.sink.name();
            let marked = self
                .journal_retrying(&shutdown, move |j| j.mark_shipped(sink, last, &dead))
                .await?;
            if marked.is_none() {
                // Shutdown while the disk refused the cursor: the batch is sent
                // again after the restart (at most this one batch twice).
                return Ok(());
            }
            // Counted once the cursor passed them: a batch cut short by shutdown is
            // read again.
            self.metrics.filtered(filtered.len());
            let now_ms = jiff::Timestamp::now().as_millisecond();
            let lags = batch
                .iter()
                .filter(|s| !undelivered.contains(&s.seq))
                .filter_map(|s| s.record.as_ref().ok())
                .filter(|r| r.header.kind == RecordKind::Event)
                .map(|r| {
                    let h = &r.header;
                    let at = h.last_timestamp_ms.unwrap_or(h.received_at_ms);
                    (now_ms - at) as f64 / 1000.0
                });
            self.metrics.shipped(lags, dead_count);
            tracing::debug!(
                through = last,
                items = outbound.len(),
                dead = dead_count,
                requests = settled.requests,
                "batch shipped"
            );
        }
    }

    /// The delivery loop for one batch, with this shipper's settings.
    fn attempts<'a>(
        &'a self,
        backoff: &'a mut Backoff,
        shutdown: &'a CancellationToken,
        unbundle: Unbundle<'a, S::Item>,
    ) -> Attempts<'a, S> {
        Attempts {
            sink: &self.sink,
            backoff,
            forbidden_pause: self.settings.max_backoff,
            grace: self.settings.shutdown_grace,
            shutdown,
            metrics: &self.metrics,
            unbundle,
        }
    }

    /// The next records to send; `None` on shutdown.
    async fn next_batch(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<Option<Vec<StoredRecord>>, ShipError> {
        let (max_events, max_bytes) = (self.settings.max_events, self.settings.max_bytes);
        let sink = self.sink.name();
        self.journal_retrying(shutdown, move |j| {
            let through = j.shipped_through(sink)?;
            j.read_after(through, max_events, max_bytes)
        })
        .await
    }

    /// A journal call, tried again while the disk refuses it (full, read-only,
    /// failing: the journal logs it and the admin endpoint reports it); `None` on
    /// shutdown. Any other journal error stops the shipper.
    async fn journal_retrying<T, F>(
        &self,
        shutdown: &CancellationToken,
        work: F,
    ) -> Result<Option<T>, ShipError>
    where
        T: Send + 'static,
        F: Fn(&Journal) -> Result<T, JournalError> + Clone + Send + 'static,
    {
        let mut backoff = Backoff::new(FIRST_RETRY, self.settings.max_backoff);
        loop {
            match self.journal.call(work.clone()).await {
                Ok(value) => return Ok(Some(value)),
                Err(e) if e.is_unwritable() => {
                    tracing::warn!(error = %e, "the journal refused the shipper; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(None),
                        _ = tokio::time::sleep(backoff.wait()) => {}
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The events among journal records, parsed for the sink. Gap markers are not
/// events; records whose bytes are damaged are reported and passed over (they
/// cannot be repaired).
fn occurrences<'a>(
    records: impl Iterator<Item = (u64, &'a Result<Record, RecordError>)>,
) -> Vec<Occurrence<'a>> {
    records
        .filter_map(|(seq, record)| match record {
            Ok(r) if r.header.kind == RecordKind::Event => Some(Occurrence {
                seq,
                // Bytes that are not an event were journaled as they came
                // (docs/delivery.md, rule 8) and go out with what could be read:
                // nothing.
                event: KubeEvent::parse(&r.raw).unwrap_or_default(),
                received_at_ms: r.header.received_at_ms,
            }),
            Ok(_) => None,
            Err(e) => {
                tracing::error!(seq, error = %e, "damaged journal record passed over");
                None
            }
        })
        .collect()
}
