//! The same events as Datadog logs (`datadog.output: logs`), for operators who
//! search and alert on events in Log Management.
//!
//! One log per Kubernetes event, made from its unbundled Datadog event:
//!
//! | log attribute      | value                                                  |
//! |--------------------|--------------------------------------------------------|
//! | `ddsource`         | `kubernetes`                                           |
//! | `service`          | `kubernetes`                                           |
//! | `hostname`         | the event's `host` (`<node>-<cluster>`), when it has one |
//! | `ddtags`           | the event's tags, comma-separated (`evrelay_id` included) |
//! | `message`          | the unbundled text: the event's message                |
//! | `title`            | the unbundled title, `<Kind> <ns>/<name>: <Reason>`   |
//! | `status`           | `warning` for Warning events, else `info`              |
//! | `timestamp`        | the event's time, Unix milliseconds                    |
//! | `aggregation_key`  | `kubernetes_apiserver:<involvedObject.uid>`            |
//!
//! The logs intake takes at most 1000 logs and 5 MB per request (the shipper
//! splits), gzip-compressed.

use serde::Serialize;

use super::transform::DdEvent;

/// One entry of a `/api/v2/logs` body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogEntry<'a> {
    pub ddsource: &'static str,
    pub service: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub hostname: &'a str,
    pub ddtags: String,
    pub message: &'a str,
    pub title: &'a str,
    pub status: &'static str,
    pub timestamp: i64,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub aggregation_key: &'a str,
}

impl<'a> LogEntry<'a> {
    pub fn from_event(e: &'a DdEvent) -> LogEntry<'a> {
        LogEntry {
            ddsource: super::SOURCE_TYPE_NAME,
            service: super::SOURCE_TYPE_NAME,
            hostname: &e.host,
            ddtags: e.tags.join(","),
            message: &e.msg_text,
            title: &e.msg_title,
            status: e.alert_type,
            timestamp: e.timestamp * 1000,
            aggregation_key: &e.aggregation_key,
        }
    }
}
