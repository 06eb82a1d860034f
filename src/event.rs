//! A read-only view of a core/v1 Event's JSON, as the API server sent it.
//!
//! evrelay never needs the whole typed object, and k8s-openapi's types would drop
//! fields they do not know. So the journal keeps the raw bytes and every stage that
//! needs a field parses this borrowed view of them. Every field is optional: an event
//! with missing fields is still an event (docs/delivery.md, rule 8).

use std::borrow::Cow;

use serde::Deserialize;

use crate::record::{Header, RecordKind};

/// The fields of a core/v1 Event that evrelay reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KubeEvent<'a> {
    #[serde(borrow)]
    pub metadata: ObjectMeta<'a>,
    #[serde(borrow)]
    pub involved_object: ObjectReference<'a>,
    #[serde(borrow)]
    pub reason: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub message: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "type")]
    pub type_: Option<Cow<'a, str>>,
    pub count: Option<i64>,
    #[serde(borrow)]
    pub first_timestamp: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub last_timestamp: Option<Cow<'a, str>>,
    /// MicroTime of events.k8s.io-style reporters; the only time some events have.
    #[serde(borrow)]
    pub event_time: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub source: EventSource<'a>,
    /// How an `events.k8s.io/v1` recorder counts repeats: `count` stays 0 and
    /// `lastTimestamp` null; the series holds the count and the last time.
    #[serde(borrow)]
    pub series: Option<EventSeries<'a>>,
    #[serde(borrow)]
    pub reporting_component: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub reporting_instance: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectMeta<'a> {
    #[serde(borrow)]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub namespace: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub uid: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub resource_version: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub creation_timestamp: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectReference<'a> {
    #[serde(borrow)]
    pub kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub namespace: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub uid: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EventSeries<'a> {
    pub count: Option<i64>,
    #[serde(borrow)]
    pub last_observed_time: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EventSource<'a> {
    #[serde(borrow)]
    pub component: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub host: Option<Cow<'a, str>>,
}

/// Why an event's bytes cannot be read as an event at all.
#[derive(Debug, thiserror::Error)]
#[error("not a Kubernetes event object: {0}")]
pub struct NotAnEvent(#[from] serde_json::Error);

/// The string, or "" when the field is absent.
pub fn text<'s>(field: &'s Option<Cow<'_, str>>) -> &'s str {
    field.as_deref().unwrap_or("")
}

/// Parses an RFC 3339 timestamp (Time or MicroTime) into Unix milliseconds.
pub fn parse_time_ms(value: Option<&str>) -> Option<i64> {
    let ts: jiff::Timestamp = value?.parse().ok()?;
    Some(ts.as_millisecond())
}

impl<'a> KubeEvent<'a> {
    pub fn parse(raw: &'a [u8]) -> Result<Self, NotAnEvent> {
        Ok(serde_json::from_slice(raw)?)
    }

    /// The time of the latest occurrence: the later of `lastTimestamp` and
    /// `series.lastObservedTime`, else `eventTime`, else `firstTimestamp`, else the
    /// object's creation time (the Cluster Agent's order, extended to series and
    /// so that every event has a time).
    pub fn last_seen_ms(&self) -> Option<i64> {
        let last = parse_time_ms(self.last_timestamp.as_deref());
        let series = self.series_last_observed_ms();
        last.max(series).or_else(|| {
            [
                &self.event_time,
                &self.first_timestamp,
                &self.metadata.creation_timestamp,
            ]
            .into_iter()
            .find_map(|t| parse_time_ms(t.as_deref()))
        })
    }

    /// `series.lastObservedTime`, Unix milliseconds.
    pub fn series_last_observed_ms(&self) -> Option<i64> {
        let series = self.series.as_ref()?;
        parse_time_ms(series.last_observed_time.as_deref())
    }

    /// `series.count` (0 without a series).
    pub fn series_count(&self) -> u32 {
        let count = self.series.as_ref().and_then(|s| s.count).unwrap_or(0);
        count.clamp(0, i64::from(u32::MAX)) as u32
    }

    /// How many times it occurred, whichever recorder counted: `count`, else
    /// `series.count`, else once.
    pub fn occurrences(&self) -> i64 {
        self.count
            .filter(|c| *c > 0)
            .unwrap_or_else(|| i64::from(self.series_count()))
            .max(1)
    }

    /// The journal header for this event.
    pub fn header(&self, received_at_ms: i64) -> Header {
        Header {
            kind: RecordKind::Event,
            uid: text(&self.metadata.uid).to_owned(),
            resource_version: text(&self.metadata.resource_version).to_owned(),
            namespace: text(&self.metadata.namespace).to_owned(),
            involved_kind: text(&self.involved_object.kind).to_owned(),
            involved_name: text(&self.involved_object.name).to_owned(),
            reason: text(&self.reason).to_owned(),
            event_type: text(&self.type_).to_owned(),
            count: self.count.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32,
            first_timestamp_ms: parse_time_ms(self.first_timestamp.as_deref()),
            last_timestamp_ms: self.last_seen_ms(),
            received_at_ms,
            series_count: self.series_count(),
            series_last_observed_ms: self.series_last_observed_ms(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_full_event() {
        let raw = br#"{"kind":"Event","apiVersion":"v1","metadata":{"name":"api.17a","namespace":"shop","uid":"u-1","resourceVersion":"42"},
            "involvedObject":{"kind":"Pod","name":"api","namespace":"shop","uid":"p-1"},
            "reason":"BackOff","message":"Back-off \"x\"","type":"Warning","count":3,
            "firstTimestamp":"2026-11-22T10:00:00Z","lastTimestamp":"2026-11-22T10:05:00Z",
            "source":{"component":"kubelet","host":"node-a"},"unknownField":{"kept":true}}"#;
        let e = KubeEvent::parse(raw).unwrap();
        let h = e.header(7);
        assert_eq!(h.uid, "u-1");
        assert_eq!(h.resource_version, "42");
        assert_eq!(h.involved_kind, "Pod");
        assert_eq!(h.count, 3);
        assert_eq!(text(&e.message), "Back-off \"x\"");
        assert_eq!(h.last_timestamp_ms, Some(1_795_341_900_000));
        assert_eq!(h.first_timestamp_ms, Some(1_795_341_600_000));
    }

    #[test]
    fn an_empty_object_is_still_an_event() {
        let e = KubeEvent::parse(b"{}").unwrap();
        let h = e.header(1);
        assert_eq!(h.uid, "");
        assert_eq!(h.count, 0);
        assert_eq!(h.last_timestamp_ms, None);
    }

    #[test]
    fn event_time_only() {
        let e = KubeEvent::parse(br#"{"eventTime":"2026-11-22T10:00:00.123456Z"}"#).unwrap();
        assert_eq!(e.last_seen_ms(), Some(1_795_341_600_123));
    }

    #[test]
    fn a_series_counts_and_dates_its_occurrences() {
        // What the API server serves, in core/v1, for an event recorded through
        // events.k8s.io/v1 and repeated ten times.
        let raw = br#"{"metadata":{"uid":"s-1"},"count":null,"lastTimestamp":null,
            "eventTime":"2026-11-22T10:00:00.000000Z",
            "series":{"count":10,"lastObservedTime":"2026-11-22T10:09:00.000000Z"}}"#;
        let e = KubeEvent::parse(raw).unwrap();
        let h = e.header(0);
        assert_eq!((h.count, h.series_count, h.occurrences()), (0, 10, 10));
        assert_eq!(h.last_timestamp_ms, Some(1_795_342_140_000));
        assert_eq!(h.series_last_observed_ms, Some(1_795_342_140_000));
        assert_eq!(e.occurrences(), 10);
    }

    #[test]
    fn nulls_and_wrong_counts_do_not_fail() {
        let e = KubeEvent::parse(br#"{"reason":null,"count":-5,"lastTimestamp":null}"#).unwrap();
        assert_eq!(e.header(0).count, 0);
    }

    #[test]
    fn non_objects_are_refused() {
        assert!(KubeEvent::parse(b"[1,2]").is_err());
        assert!(KubeEvent::parse(b"not json").is_err());
    }
}
