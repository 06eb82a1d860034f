//! The shipper: reads pending records from the journal, sends them to the intake,
//! and moves the journal's shipped-through cursor once the intake said 2xx.
//!
//! It guarantees (docs/delivery.md, rules 2 and 3) that the cursor passes a record only
//! after a 2xx for the request that carried it, durably, before the next request is
//! sent. A crash can therefore resend at most the one batch that was in flight.
//!
//! It shares nothing with the watcher but the journal: it wakes when the journal's
//! head moves, and is otherwise free to fall behind and catch up.

mod deliver;
pub mod replay;
mod retry;
mod service;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Problem;
use crate::datadog::{DatadogConfig, Encoder, EventsConfig, Occurrence, Outbound, Transform};
use crate::event::KubeEvent;
use crate::journal::{Journal, JournalError, RecordKind, StoredRecord};
use crate::metrics::Metrics;
pub use deliver::{Attempts, Settled, Transport};
pub use retry::Delays;
pub use service::{Answer, Intake};

/// The journal cursor this shipper owns.
pub const SINK: &str = "datadog";

/// Shipping settings (`ship:` in the config file).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShipConfig {
    /// Records per request at the most.
    pub max_events: usize,
    /// Journal bytes per request at the most; keeps requests under the intake's
    /// 4 MiB uncompressed cap.
    pub max_bytes: usize,
    /// How long the shipper lets records gather before sending a partial batch.
    pub flush_interval_ms: u64,
    /// One request's deadline (the Datadog Agent uses 20 s).
    pub request_timeout_seconds: u64,
    /// The longest wait between retries (the Datadog Agent caps at 64 s).
    pub max_backoff_seconds: u64,
    /// On shutdown, how long an in-flight request may still take before it is
    /// abandoned (its records stay pending and are sent after the restart).
    pub shutdown_grace_seconds: u64,
}

impl Default for ShipConfig {
    fn default() -> Self {
        ShipConfig {
            max_events: 500,
            max_bytes: 3 * 1024 * 1024,
            flush_interval_ms: 200,
            request_timeout_seconds: 20,
            max_backoff_seconds: 64,
            shutdown_grace_seconds: 10,
        }
    }
}

impl ShipConfig {
    pub(crate) fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut check = |ok: bool, key: &str, value: String, fix: &str| {
            if !ok {
                out.push(Problem {
                    key: key.into(),
                    message: format!("{value} is out of range"),
                    fix: fix.into(),
                });
            }
        };
        check(
            (1..=10_000).contains(&self.max_events),
            "ship.max_events",
            self.max_events.to_string(),
            "use 1 to 10000 (default 500)",
        );
        check(
            (1024..=4 * 1024 * 1024).contains(&self.max_bytes),
            "ship.max_bytes",
            self.max_bytes.to_string(),
            "use 1024 to 4194304, the intake's uncompressed cap (default 3145728)",
        );
        check(
            self.flush_interval_ms <= 10_000,
            "ship.flush_interval_ms",
            self.flush_interval_ms.to_string(),
            "use at most 10000 (default 200)",
        );
        check(
            self.request_timeout_seconds >= 1,
            "ship.request_timeout_seconds",
            self.request_timeout_seconds.to_string(),
            "use at least 1 (default 20)",
        );
        check(
            self.max_backoff_seconds >= 1,
            "ship.max_backoff_seconds",
            self.max_backoff_seconds.to_string(),
            "use at least 1 (default 64)",
        );
        out
    }
}

/// Why the shipper stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// Sends journaled records to the Datadog intake.
pub struct Shipper<T = Intake> {
    journal: Journal,
    intake: T,
    transform: Transform,
    encoder: Encoder,
    config: ShipConfig,
    metrics: Metrics,
}

impl<T: Transport> Shipper<T> {
    /// `hostname` is the `internalHostname` of the payloads.
    pub fn new(
        journal: Journal,
        intake: T,
        (datadog, events): (&DatadogConfig, &EventsConfig),
        hostname: &str,
        config: ShipConfig,
        metrics: Metrics,
    ) -> Self {
        Shipper {
            journal,
            intake,
            transform: Transform::new(events, datadog),
            encoder: datadog.encoder(hostname),
            config,
            metrics,
        }
    }

    /// Ships until `shutdown` is cancelled or the journal fails.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ShipError> {
        let mut head = self.journal.subscribe();
        let linger = Duration::from_millis(self.config.flush_interval_ms);
        let mut delays = Delays::new(
            Duration::from_millis(500),
            Duration::from_secs(self.config.max_backoff_seconds),
        );
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            let batch = self.next_batch().await?;
            if batch.is_empty() {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    changed = head.changed() => if changed.is_err() { return Ok(()) },
                }
                // Let a burst gather into one request.
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(linger) => {}
                }
                continue;
            }
            let last = batch.last().expect("not empty").seq;
            let occurrences = occurrences(batch.iter().map(|s| (s.seq, &s.record)));
            let mapped = self.transform.map(&occurrences);
            let (items, filtered) = (mapped.outbound, mapped.filtered);
            let outbound = items.len();
            let unbundle = |seqs: &[u64]| self.transform.unbundle(&occurrences, seqs);
            let settled = if items.is_empty() {
                Settled::default()
            } else {
                match self
                    .attempts(&mut delays, &shutdown, &unbundle)
                    .settle(&items)
                    .await
                {
                    Some(settled) => settled,
                    None => return Ok(()), // shutdown: the batch stays pending
                }
            };
            let journal = self.journal.clone();
            let dead = settled.dead_letters;
            let dead_count = dead.len();
            // Records that were not delivered: their lag is not a delivery's.
            let undelivered: std::collections::HashSet<u64> = dead
                .iter()
                .map(|(seq, _)| *seq)
                .chain(filtered.iter().copied())
                .collect();
            tokio::task::spawn_blocking(move || journal.mark_shipped(SINK, last, &dead))
                .await
                .expect("journal task panicked")?;
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
                events = outbound,
                dead = dead_count,
                requests = settled.requests,
                "batch shipped"
            );
        }
    }

    /// The delivery loop for one batch, with this shipper's settings.
    fn attempts<'a>(
        &'a self,
        delays: &'a mut Delays,
        shutdown: &'a CancellationToken,
        unbundle: &'a (dyn Fn(&[u64]) -> Vec<Outbound> + Sync),
    ) -> Attempts<'a, T> {
        Attempts {
            transport: &self.intake,
            encoder: &self.encoder,
            delays,
            forbidden_pause: Duration::from_secs(self.config.max_backoff_seconds),
            grace: Duration::from_secs(self.config.shutdown_grace_seconds),
            shutdown,
            metrics: &self.metrics,
            unbundle,
        }
    }

    async fn next_batch(&self) -> Result<Vec<StoredRecord>, ShipError> {
        let journal = self.journal.clone();
        let (max_events, max_bytes) = (self.config.max_events, self.config.max_bytes);
        Ok(tokio::task::spawn_blocking(move || {
            let through = journal.shipped_through(SINK)?;
            journal.read_after(through, max_events, max_bytes)
        })
        .await
        .expect("journal task panicked")?)
    }
}

/// The events among journal records, parsed for the transform. Gap markers are
/// not events; records whose bytes are damaged are reported and passed over (they
/// cannot be repaired).
fn occurrences<'a>(
    records: impl Iterator<
        Item = (
            u64,
            &'a Result<crate::journal::Record, crate::journal::RecordError>,
        ),
    >,
) -> Vec<Occurrence<'a>> {
    records
        .filter_map(|(seq, record)| match record {
            Ok(r) if r.header.kind == RecordKind::Event => Some(Occurrence {
                seq,
                // Bytes that are not an event were journaled as they came (docs/delivery.md,
                // rule 8) and go out with what could be read: nothing.
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
