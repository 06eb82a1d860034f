//! Kubernetes event → Datadog event: every field mapping, in one place.
//!
//! The rules are the Cluster Agent's (ANCHORS.md, "Unbundled"), so that monitors and
//! dashboards built on its events keep working:
//!
//! | Datadog field      | value                                                       |
//! |--------------------|-------------------------------------------------------------|
//! | `msg_title`        | `<Kind> <ns>/<name>: <Reason>` (no `<ns>/` when cluster-scoped) |
//! | `msg_text`         | the message, cut at [`MAX_TEXT_CHARS`] with a visible marker |
//! | `timestamp`        | lastTimestamp, else eventTime, else firstTimestamp (Unix s)  |
//! | `priority`         | `normal`                                                    |
//! | `host`             | Pod: `source.host`; Node: its name; `-<cluster>` appended    |
//! | `alert_type`       | Warning → `warning`, anything else → `info`                 |
//! | `aggregation_key`  | `kubernetes_apiserver:<involvedObject.uid>`                 |
//! | `source_type_name` | `kubernetes`                                                |
//! | `event_type`       | `kubernetes_apiserver`                                      |
//! | `tags`             | see [`tags`]; plus `evrelay_id:<uid>.<resourceVersion>`      |

use serde::Serialize;

use super::DatadogConfig;
use crate::event::{KubeEvent, text};

pub const SOURCE_TYPE_NAME: &str = "kubernetes";
const EVENT_TYPE: &str = "kubernetes_apiserver";

/// The events API refuses text over 4000 characters; keep room for the marker.
pub const MAX_TEXT_CHARS: usize = 3900;
const TRUNCATION_MARKER: &str = "\n…[truncated by evrelay]";

/// One Datadog event as `/intake/` takes it. Empty fields are omitted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DdEvent {
    pub msg_title: String,
    pub msg_text: String,
    pub timestamp: i64,
    pub priority: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub host: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    pub alert_type: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub aggregation_key: String,
    pub source_type_name: &'static str,
    pub event_type: &'static str,
}

/// The tag that identifies one occurrence of one event, so that a duplicate can be
/// found in Datadog: `evrelay_id:<event uid>.<resourceVersion>`.
pub fn idempotency_tag(uid: &str, resource_version: &str) -> String {
    format!("evrelay_id:{uid}.{resource_version}")
}

/// The tag on events sent again by `evrelay replay`: `evrelay_replay:<replay id>`
/// (the replay's start, Unix seconds). They keep their `evrelay_id`, so a replayed
/// copy can be told from the first delivery and from a duplicate.
pub fn replay_tag(replay_id: &str) -> String {
    format!("evrelay_replay:{replay_id}")
}

/// Maps one event, unbundled: one Datadog event per Kubernetes event.
pub fn unbundled(event: &KubeEvent<'_>, config: &DatadogConfig) -> DdEvent {
    let kind = text(&event.involved_object.kind);
    let name = text(&event.involved_object.name);
    let namespace = text(&event.involved_object.namespace);
    let reason = text(&event.reason);
    let object = if namespace.is_empty() {
        format!("{kind} {name}")
    } else {
        format!("{kind} {namespace}/{name}")
    };
    DdEvent {
        msg_title: format!("{object}: {reason}"),
        msg_text: truncate(text(&event.message)),
        timestamp: event.last_seen_ms().unwrap_or(0).div_euclid(1000),
        priority: "normal",
        host: host(event, config),
        tags: tags(event, config),
        alert_type: alert_type(text(&event.type_)),
        aggregation_key: match text(&event.involved_object.uid) {
            "" => String::new(),
            uid => format!("kubernetes_apiserver:{uid}"),
        },
        source_type_name: SOURCE_TYPE_NAME,
        event_type: EVENT_TYPE,
    }
}

fn alert_type(event_type: &str) -> &'static str {
    match event_type {
        "Warning" => "warning",
        _ => "info",
    }
}

/// Pod events are about the node that reported them, node events about the node.
fn host(event: &KubeEvent<'_>, config: &DatadogConfig) -> String {
    let node = match text(&event.involved_object.kind) {
        "Pod" => text(&event.source.host),
        "Node" => text(&event.involved_object.name),
        _ => "",
    };
    match (node, &config.cluster_name) {
        ("", _) => String::new(),
        (node, Some(cluster)) if !cluster.is_empty() => format!("{node}-{cluster}"),
        (node, _) => node.to_owned(),
    }
}

/// The Cluster Agent's tag set for an unbundled event, plus the idempotency tag.
fn tags(event: &KubeEvent<'_>, config: &DatadogConfig) -> Vec<String> {
    let kind = text(&event.involved_object.kind);
    let name = text(&event.involved_object.name);
    let namespace = text(&event.involved_object.namespace);
    let mut tags = Vec::with_capacity(14);
    let mut push = |key: &str, value: &str| {
        if !value.is_empty() {
            tags.push(format!("{key}:{value}"));
        }
    };
    push("kube_kind", kind);
    push("kube_name", name);
    push("kube_namespace", namespace);
    push("kubernetes_kind", kind);
    push("name", name);
    push("namespace", namespace);
    if kind == "Pod" {
        push("pod_name", name);
    }
    push("source_component", text(&event.source.component));
    push("orchestrator", "kubernetes");
    push("reporting_controller", text(&event.reporting_component));
    push("event_reason", text(&event.reason));
    push(
        "kube_cluster_name",
        config.cluster_name.as_deref().unwrap_or(""),
    );
    tags.push(idempotency_tag(
        text(&event.metadata.uid),
        text(&event.metadata.resource_version),
    ));
    tags
}

fn truncate(message: &str) -> String {
    match message.char_indices().nth(MAX_TEXT_CHARS) {
        None => message.to_owned(),
        Some((cut, _)) => format!("{}{TRUNCATION_MARKER}", &message[..cut]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(cluster: Option<&str>) -> DatadogConfig {
        DatadogConfig {
            cluster_name: cluster.map(Into::into),
            ..Default::default()
        }
    }

    const BACKOFF: &[u8] = br#"{"metadata":{"uid":"e-1","resourceVersion":"77","namespace":"shop"},
        "involvedObject":{"kind":"Pod","name":"api-0","namespace":"shop","uid":"p-1"},
        "reason":"BackOff","message":"Back-off restarting failed container","type":"Warning",
        "lastTimestamp":"2026-11-22T10:05:00Z","source":{"component":"kubelet","host":"node-a"},
        "reportingComponent":"kubelet"}"#;

    #[test]
    fn pod_warning() {
        let e = KubeEvent::parse(BACKOFF).unwrap();
        let dd = unbundled(&e, &config(Some("prod")));
        assert_eq!(dd.msg_title, "Pod shop/api-0: BackOff");
        assert_eq!(dd.msg_text, "Back-off restarting failed container");
        assert_eq!(dd.timestamp, 1_795_341_900);
        assert_eq!(dd.alert_type, "warning");
        assert_eq!(dd.host, "node-a-prod");
        assert_eq!(dd.aggregation_key, "kubernetes_apiserver:p-1");
        assert_eq!(dd.source_type_name, "kubernetes");
        assert_eq!(dd.event_type, "kubernetes_apiserver");
        for tag in [
            "kube_kind:Pod",
            "kube_name:api-0",
            "kube_namespace:shop",
            "pod_name:api-0",
            "source_component:kubelet",
            "orchestrator:kubernetes",
            "event_reason:BackOff",
            "kube_cluster_name:prod",
            "evrelay_id:e-1.77",
        ] {
            assert!(
                dd.tags.contains(&tag.to_owned()),
                "missing {tag}: {:?}",
                dd.tags
            );
        }
    }

    #[test]
    fn cluster_scoped_object_has_no_namespace_in_title() {
        let e = KubeEvent::parse(
            br#"{"involvedObject":{"kind":"Node","name":"node-a"},"reason":"NodeNotReady","type":"Normal"}"#,
        )
        .unwrap();
        let dd = unbundled(&e, &config(None));
        assert_eq!(dd.msg_title, "Node node-a: NodeNotReady");
        assert_eq!(dd.host, "node-a");
        assert_eq!(dd.alert_type, "info");
    }

    #[test]
    fn long_messages_are_cut_with_a_marker() {
        let long = "é".repeat(10_000);
        let raw = format!(r#"{{"message":"{long}"}}"#);
        let e = KubeEvent::parse(raw.as_bytes()).unwrap();
        let dd = unbundled(&e, &config(None));
        assert!(dd.msg_text.ends_with(TRUNCATION_MARKER));
        assert_eq!(
            dd.msg_text.chars().count(),
            MAX_TEXT_CHARS + TRUNCATION_MARKER.chars().count()
        );
    }
}
