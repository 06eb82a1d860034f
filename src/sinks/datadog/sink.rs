//! The two Datadog sinks the shipper drives: events to `/intake/` (the Cluster
//! Agent's format, bundled or not) and the same events as logs to `/api/v2/logs`.
//! Both map with one [`Transform`] and differ only in the body they send
//! ([`Format`]). Both own the journal cursor `datadog`: one Datadog output is
//! configured at a time.

use std::future::Future;

use super::{
    Body, Compression, DatadogSettings, DdEvent, EventsSettings, LogEntry, SINK_NAME, Transform,
    Transport, encode, encode_logs, replay_tag,
};
use crate::ship::{Answer, Mapped, Occurrence, Outbound, Sink};

/// How a Datadog sink turns events into a request body.
pub trait Format: Send + Sync + 'static {
    fn body(&self, events: &[&DdEvent]) -> Body;
}

/// `/intake/` bodies: the Cluster Agent's payload, compressed.
pub struct EventsFormat {
    /// `internalHostname` of the payloads.
    hostname: String,
    compression: Compression,
}

impl Format for EventsFormat {
    fn body(&self, events: &[&DdEvent]) -> Body {
        encode(events, &self.hostname, self.compression)
    }
}

/// `/api/v2/logs` bodies: one log per event, gzip.
pub struct LogsFormat;

impl Format for LogsFormat {
    fn body(&self, events: &[&DdEvent]) -> Body {
        let entries: Vec<LogEntry<'_>> = events.iter().map(|e| LogEntry::from_event(e)).collect();
        encode_logs(&entries)
    }
}

/// A Datadog sink: the transform, the body format, and the intake.
pub struct DatadogSink<T, F> {
    transform: Transform,
    format: F,
    transport: T,
}

/// Datadog events, to `/intake/`.
pub type EventsSink<T> = DatadogSink<T, EventsFormat>;

/// The same events as Datadog logs, one per Kubernetes event, to `/api/v2/logs`.
pub type LogsSink<T> = DatadogSink<T, LogsFormat>;

impl<T: Transport> EventsSink<T> {
    pub fn new(datadog: &DatadogSettings, events: &EventsSettings, transport: T) -> Self {
        let format = EventsFormat {
            hostname: datadog.hostname.clone(),
            compression: datadog.compression,
        };
        DatadogSink::with_format(datadog, events, format, transport)
    }
}

impl<T: Transport> LogsSink<T> {
    pub fn new(datadog: &DatadogSettings, events: &EventsSettings, transport: T) -> Self {
        DatadogSink::with_format(datadog, events, LogsFormat, transport)
    }
}

impl<T: Transport, F: Format> DatadogSink<T, F> {
    fn with_format(
        datadog: &DatadogSettings,
        events: &EventsSettings,
        format: F,
        transport: T,
    ) -> Self {
        DatadogSink {
            transform: Transform::new(events, datadog),
            format,
            transport,
        }
    }
}

impl<T: Transport, F: Format> Sink for DatadogSink<T, F> {
    type Item = DdEvent;
    type Request = Body;

    fn name(&self) -> &'static str {
        SINK_NAME
    }

    fn map(&self, batch: &[Occurrence<'_>]) -> Mapped<DdEvent> {
        self.transform.map(batch)
    }

    fn unbundle(&self, batch: &[Occurrence<'_>], seqs: &[u64]) -> Vec<Outbound<DdEvent>> {
        self.transform.unbundle(batch, seqs)
    }

    fn mark_replay(&self, item: &mut DdEvent, replay_id: &str) {
        item.tags.push(replay_tag(replay_id));
    }

    fn encode(&self, items: &[&DdEvent]) -> Body {
        self.format.body(items)
    }

    fn too_big(&self, body: &Body) -> bool {
        body.too_big()
    }

    fn send(&self, body: &Body) -> impl Future<Output = Answer> + Send {
        self.transport.send(body)
    }
}
