//! Every metric evrelay exports, in one place (`/metrics`, OpenMetrics text, the
//! `evrelay_` prefix, Prometheus naming: `_total` counters, base units).
//!
//! The stages hold a [`Metrics`] (cheap to clone) and count what they do; values
//! that live in the journal (bytes, pending records) are read at scrape time by
//! the admin endpoint, so they are never stale and cost nothing between scrapes.
//! Nothing here can carry the API key: no label takes a free-form value from the
//! configuration.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::journal::SyncStats;
use crate::record::Gap;

/// The cause of a gap or a drop: a [`Gap`]'s label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// The intake's answer class: an HTTP status, or `error` when none came back.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub code: String,
}

/// The metrics. Cheap to clone; every clone counts into the same registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    events_received: Counter,
    events_journaled: Counter,
    events_duplicate: Counter,
    events_shipped: Counter,
    events_dropped: Family<ReasonLabels, Counter>,
    events_dead_lettered: Counter,
    events_filtered: Counter,
    events_replayed: Counter,
    gaps: Family<ReasonLabels, Counter>,
    relists: Counter,
    watch_restarts: Counter,
    journal_bytes: Gauge,
    journal_pending: Gauge,
    journal_records: Gauge,
    journal_disk_bytes: Gauge,
    journal_writable: Gauge,
    journal_sync_seconds: Gauge<f64, AtomicU64>,
    journal_slow_syncs: Counter,
    delivery_lag: Histogram,
    intake_duration: Histogram,
    intake_requests: Family<StatusLabels, Counter>,
    intake_retries: Counter,
    intake_refusal_storms: Counter,
    leader: Gauge,
    epoch: Gauge,
    watching: Gauge,
    watch_stepdowns: Counter,
    /// Step-downs since a watch was last established.
    stepdowns_in_a_row: AtomicU64,
    apiserver_reachable: Gauge,
    /// Since when every API server request failed (Unix ms; 0: the last answered).
    api_failing_since_ms: AtomicI64,
    last_resource_version: Gauge,
    mirror_age: Gauge<f64, AtomicU64>,
    /// When the mirror last wrote (Unix ms; 0: never), for `mirror_age`.
    mirror_last_ms: AtomicI64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Inner {
            registry: Registry::with_prefix("evrelay"),
            events_received: Counter::default(),
            events_journaled: Counter::default(),
            events_duplicate: Counter::default(),
            events_shipped: Counter::default(),
            events_dropped: Family::default(),
            events_dead_lettered: Counter::default(),
            events_filtered: Counter::default(),
            events_replayed: Counter::default(),
            gaps: Family::default(),
            relists: Counter::default(),
            watch_restarts: Counter::default(),
            journal_bytes: Gauge::default(),
            journal_pending: Gauge::default(),
            journal_records: Gauge::default(),
            journal_disk_bytes: Gauge::default(),
            journal_writable: Gauge::default(),
            journal_sync_seconds: Gauge::default(),
            journal_slow_syncs: Counter::default(),
            delivery_lag: Histogram::new(exponential_buckets(0.05, 2.0, 16)),
            intake_duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            intake_requests: Family::default(),
            intake_retries: Counter::default(),
            intake_refusal_storms: Counter::default(),
            leader: Gauge::default(),
            epoch: Gauge::default(),
            watching: Gauge::default(),
            watch_stepdowns: Counter::default(),
            stepdowns_in_a_row: AtomicU64::new(0),
            apiserver_reachable: Gauge::default(),
            api_failing_since_ms: AtomicI64::new(0),
            last_resource_version: Gauge::default(),
            mirror_age: Gauge::default(),
            mirror_last_ms: AtomicI64::new(0),
        };
        let r = &mut m.registry;
        r.register(
            "events_received",
            "Events read from the API server (watch and list)",
            m.events_received.clone(),
        );
        r.register(
            "events_journaled",
            "Event occurrences written to the journal",
            m.events_journaled.clone(),
        );
        r.register(
            "events_duplicate",
            "Events not journaled because the same occurrence already was",
            m.events_duplicate.clone(),
        );
        r.register(
            "events_shipped",
            "Events the intake accepted (2xx)",
            m.events_shipped.clone(),
        );
        r.register(
            "events_dropped",
            "Pending events given up, by reason",
            m.events_dropped.clone(),
        );
        r.register(
            "events_dead_lettered",
            "Events the intake refused for good (400, isolated by bisection)",
            m.events_dead_lettered.clone(),
        );
        r.register(
            "events_filtered",
            "Journaled events the configured filters kept from the intake (events.*)",
            m.events_filtered.clone(),
        );
        r.register(
            "events_replayed",
            "Events read for a replay (evrelay replay), whether the filters let them go",
            m.events_replayed.clone(),
        );
        r.register(
            "gaps",
            "Gap markers written (windows where events may be missing), by reason",
            m.gaps.clone(),
        );
        r.register(
            "relists",
            "Paginated LISTs after an expired resume token (410 Gone)",
            m.relists.clone(),
        );
        r.register(
            "watch_restarts",
            "Watches reopened after an error or a stall",
            m.watch_restarts.clone(),
        );
        r.register(
            "journal_bytes",
            "Bytes of records in the journal (what journal.max_bytes caps)",
            m.journal_bytes.clone(),
        );
        r.register(
            "journal_pending_records",
            "Journaled records not yet shipped",
            m.journal_pending.clone(),
        );
        r.register(
            "journal_records",
            "Records in the journal (events and gap markers)",
            m.journal_records.clone(),
        );
        r.register(
            "journal_disk_bytes",
            "Bytes the journal's store occupies on disk (what the volume must hold)",
            m.journal_disk_bytes.clone(),
        );
        r.register(
            "journal_writable",
            "1 while the journal takes writes; 0 while the disk refuses them (full, read-only, failing)",
            m.journal_writable.clone(),
        );
        r.register(
            "journal_last_sync_seconds",
            "How long the journal's last sync to the device took",
            m.journal_sync_seconds.clone(),
        );
        r.register(
            "journal_slow_syncs",
            "Journal syncs that took a second or longer",
            m.journal_slow_syncs.clone(),
        );
        r.register(
            "delivery_lag_seconds",
            "From an event's last timestamp to the intake's 2xx for it",
            m.delivery_lag.clone(),
        );
        r.register(
            "intake_request_duration_seconds",
            "Duration of requests to the intake",
            m.intake_duration.clone(),
        );
        r.register(
            "intake_requests",
            "Requests to the intake, by status code (error: no answer)",
            m.intake_requests.clone(),
        );
        r.register(
            "intake_retries",
            "Requests sent again after a retryable answer or a network error",
            m.intake_retries.clone(),
        );
        r.register(
            "intake_refusal_storms",
            "Times the intake refused every event alone (400) and shipping paused instead of dead-lettering",
            m.intake_refusal_storms.clone(),
        );
        r.register(
            "leader",
            "1 while this replica holds the Lease and leads",
            m.leader.clone(),
        );
        r.register(
            "epoch",
            "The leadership epoch this replica claimed last",
            m.epoch.clone(),
        );
        r.register(
            "watching",
            "1 while a watch on events is established",
            m.watching.clone(),
        );
        r.register(
            "watch_stepdowns",
            "Times the leader stepped down because no watch could be established",
            m.watch_stepdowns.clone(),
        );
        r.register(
            "apiserver_reachable",
            "1 while the API server answers this replica's requests",
            m.apiserver_reachable.clone(),
        );
        r.register(
            "last_resource_version",
            "The resourceVersion of the watch's last resume token",
            m.last_resource_version.clone(),
        );
        r.register(
            "token_mirror_age_seconds",
            "Seconds since the leader last wrote the token ConfigMap (-1: never)",
            m.mirror_age.clone(),
        );
        // Unknown until the first request: not reported as unreachable.
        m.apiserver_reachable.set(1);
        m.journal_writable.set(1);
        Metrics { inner: Arc::new(m) }
    }

    pub fn received(&self, n: usize) {
        self.inner.events_received.inc_by(n as u64);
    }

    pub fn journaled(&self, journaled: usize, duplicates: usize) {
        self.inner.events_journaled.inc_by(journaled as u64);
        self.inner.events_duplicate.inc_by(duplicates as u64);
    }

    /// Pending events given up: to the byte cap (a loss) or at a takeover (the
    /// new term re-collects them).
    pub fn dropped(&self, cause: Gap, n: u64) {
        if n > 0 {
            self.inner
                .events_dropped
                .get_or_create(&ReasonLabels {
                    reason: cause.label(),
                })
                .inc_by(n);
        }
    }

    pub fn gap(&self, cause: Gap) {
        self.inner
            .gaps
            .get_or_create(&ReasonLabels {
                reason: cause.label(),
            })
            .inc();
    }

    pub fn replayed(&self, n: usize) {
        self.inner.events_replayed.inc_by(n as u64);
    }

    pub fn intake_refusal_storm(&self) {
        self.inner.intake_refusal_storms.inc();
    }

    pub fn relisted(&self) {
        self.inner.relists.inc();
    }

    pub fn watch_restarted(&self) {
        self.inner.watch_restarts.inc();
    }

    pub fn set_watching(&self, on: bool) {
        self.inner.watching.set(on as i64);
        if on {
            self.inner.stepdowns_in_a_row.store(0, Ordering::Relaxed);
        }
    }

    /// The leader gave its lease up: no watch could be established.
    pub fn stepped_down(&self) {
        self.inner.watch_stepdowns.inc();
        self.inner
            .stepdowns_in_a_row
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Step-downs since a watch was last established.
    pub fn stepdowns_in_a_row(&self) -> u64 {
        self.inner.stepdowns_in_a_row.load(Ordering::Relaxed)
    }

    /// The API server answered a request (any status: it is reachable). Said once
    /// in the log when it comes back.
    pub fn api_answered(&self) {
        self.inner.apiserver_reachable.set(1);
        let since = self.inner.api_failing_since_ms.swap(0, Ordering::Relaxed);
        if since != 0 {
            let down = jiff::Timestamp::now().as_millisecond() - since;
            tracing::info!(down_ms = down, "the API server answers again");
        }
    }

    /// A request to the API server got no answer (connect error, timeout). Said
    /// once in the log when it starts.
    pub fn api_failed(&self) {
        self.inner.apiserver_reachable.set(0);
        let now = jiff::Timestamp::now().as_millisecond();
        let first = self
            .inner
            .api_failing_since_ms
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
        if first {
            tracing::warn!("the API server does not answer; retrying with backoff");
        }
    }

    /// How long every request to the API server has failed; `None` if the last
    /// one was answered.
    pub fn api_unreachable_for(&self) -> Option<std::time::Duration> {
        let since = self.inner.api_failing_since_ms.load(Ordering::Relaxed);
        (since != 0).then(|| {
            let now = jiff::Timestamp::now().as_millisecond();
            std::time::Duration::from_millis(now.saturating_sub(since).max(0) as u64)
        })
    }

    pub fn resource_version(&self, rv: &str) {
        if let Ok(n) = rv.parse::<i64>() {
            self.inner.last_resource_version.set(n);
        }
    }

    /// A batch the intake accepted: `lags` are seconds from each event's time.
    pub fn shipped(&self, lags: impl IntoIterator<Item = f64>, dead_lettered: usize) {
        let mut n = 0;
        for lag in lags {
            self.inner.delivery_lag.observe(lag.max(0.0));
            n += 1;
        }
        self.inner.events_shipped.inc_by(n);
        self.inner.events_dead_lettered.inc_by(dead_lettered as u64);
    }

    /// Journaled events the filters passed over.
    pub fn filtered(&self, n: usize) {
        self.inner.events_filtered.inc_by(n as u64);
    }

    /// One request to the intake: its status (`None`: no answer) and duration.
    pub fn intake_request(&self, status: Option<u16>, seconds: f64) {
        let code = status.map_or_else(|| "error".to_owned(), |s| s.to_string());
        self.inner
            .intake_requests
            .get_or_create(&StatusLabels { code })
            .inc();
        self.inner.intake_duration.observe(seconds);
    }

    pub fn intake_retried(&self) {
        self.inner.intake_retries.inc();
    }

    pub fn set_leader(&self, leading: bool, epoch: Option<u64>) {
        self.inner.leader.set(leading as i64);
        if let Some(e) = epoch {
            self.inner.epoch.set(e as i64);
        }
    }

    pub fn is_leader(&self) -> bool {
        self.inner.leader.get() == 1
    }

    pub fn is_watching(&self) -> bool {
        self.inner.watching.get() == 1
    }

    pub fn mirrored(&self) {
        self.inner
            .mirror_last_ms
            .store(jiff::Timestamp::now().as_millisecond(), Ordering::Relaxed);
    }

    /// The journal's own figures, read at scrape time.
    pub fn journal(&self, record_bytes: u64, records: usize, pending: u64) {
        self.inner.journal_bytes.set(record_bytes as i64);
        self.inner.journal_records.set(records as i64);
        self.inner.journal_pending.set(pending as i64);
    }

    /// The journal's disk, read at scrape time: its size on disk, whether it takes
    /// writes, and its syncs (the last one's duration; how many were slow, ever).
    pub fn journal_disk(&self, disk_bytes: Option<u64>, writable: bool, syncs: &SyncStats) {
        if let Some(bytes) = disk_bytes {
            self.inner.journal_disk_bytes.set(bytes as i64);
        }
        self.inner.journal_writable.set(i64::from(writable));
        self.inner
            .journal_sync_seconds
            .set(syncs.last().as_secs_f64());
        let counted = self.inner.journal_slow_syncs.get();
        self.inner
            .journal_slow_syncs
            .inc_by(syncs.slow().saturating_sub(counted));
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let last = self.inner.mirror_last_ms.load(Ordering::Relaxed);
        let age = if last == 0 {
            -1.0
        } else {
            (jiff::Timestamp::now().as_millisecond() - last) as f64 / 1000.0
        };
        self.inner.mirror_age.set(age);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.inner.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let m = Metrics::new();
        m.received(3);
        m.dropped(Gap::JournalFull, 2);
        m.gap(Gap::ResumeTokenExpired);
        m.intake_request(Some(202), 0.01);
        m.intake_request(None, 0.5);
        m.shipped([0.2, 1.5], 1);
        let text = m.encode();
        for line in [
            "evrelay_events_received_total 3",
            "evrelay_events_dropped_total{reason=\"journal_full\"} 2",
            "evrelay_gaps_total{reason=\"resume_token_expired\"} 1",
            "evrelay_intake_requests_total{code=\"202\"} 1",
            "evrelay_intake_requests_total{code=\"error\"} 1",
            "evrelay_events_shipped_total 2",
            "evrelay_events_dead_lettered_total 1",
            "evrelay_delivery_lag_seconds_count 2",
            "evrelay_token_mirror_age_seconds -1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn the_operations_page_lists_every_metric_and_only_metrics() {
        let m = Metrics::new();
        // Families appear once a label set exists.
        m.dropped(Gap::JournalFull, 1);
        m.gap(Gap::JournalFull);
        m.intake_request(Some(200), 0.1);
        let text = m.encode();
        let exported: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect();
        let page = include_str!("../docs/operations.md");
        let documented: Vec<&str> = page
            .lines()
            .filter_map(|l| l.strip_prefix("| `evrelay_"))
            .filter_map(|l| l.split_once('`'))
            .map(|(name, _)| name.split('{').next().unwrap_or(name))
            .map(|name| name.strip_suffix("_total").unwrap_or(name))
            .collect();
        for name in &exported {
            let short = name.strip_prefix("evrelay_").unwrap_or(name);
            assert!(
                documented.contains(&short),
                "{name} is not documented in docs/operations.md"
            );
        }
        for name in documented {
            assert!(
                exported.iter().any(|e| e == &format!("evrelay_{name}")),
                "docs/operations.md documents evrelay_{name}, which is not exported"
            );
        }
    }
}
