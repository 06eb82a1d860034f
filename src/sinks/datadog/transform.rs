//! Kubernetes events → Datadog events: every field mapping, in one place.
//!
//! The rules are the Cluster Agent's (its `kubernetes_apiserver` check; docs/datadog.md),
//! so that monitors and dashboards built on its events keep working. Where evrelay
//! differs, the row says so and why.
//!
//! **Bundled** (the default, the Cluster Agent's default): the events of one batch
//! are grouped by (involved kind, involved uid, type), one Datadog event per group.
//!
//! | Datadog field      | value                                                                  |
//! |--------------------|------------------------------------------------------------------------|
//! | `msg_title`        | `Events from the <Kind> <ns>/<name>` (no `<ns>/` when cluster-scoped)   |
//! | `msg_text`         | `%%% \n` + lines + ` \n _Events emitted by the <component> seen at <last> since <first>_ \n\n %%%`, `~` escaped as `\~` |
//! | — a line           | `<count> **<Reason>**: <Message>\n`, one per distinct reason and message, sorted, joined by a space |
//! | — `<count>`        | the sum of the events' `count` (evrelay: each event counted once, at its highest count, however many of its bumps the batch holds; an event without `count` counts its `series.count`, else 1. The Cluster Agent reads `count` only, so an events.k8s.io/v1 series shows `0`) |
//! | — `<last>`/`<first>` | the latest last-seen time (the later of lastTimestamp and `series.lastObservedTime`, else eventTime) and the earliest firstTimestamp (else eventTime), as Go prints a UTC time: `2026-11-22 10:05:00 +0000 UTC` (the Cluster Agent's "since" is the first time of whichever event came last; evrelay takes the earliest, as the words say; the Agent ignores series, so a series' "seen at" is its first occurrence there) |
//! | — size             | a new bundle starts before the estimated text passes 3750 bytes (250 + component, + 11 + line per distinct line), as the Cluster Agent estimates it; evrelay also starts one before its tags would pass [`MAX_TAGS`] (100, Datadog's documented limit per event; one `evrelay_id` per event) and after at most [`MAX_BUNDLE_EVENTS`] events. A line that cannot fit alone is cut, with [`TRUNCATION_MARKER`] (the Cluster Agent drops that event) |
//! | `timestamp`        | the latest last-seen time, as above (Unix seconds)                      |
//! | `priority`         | `normal`                                                                |
//! | `host`             | Pod: `source.host`; Node: its name; then `-<cluster>` when `DD_CLUSTER_NAME` is set; else (and for a Pod without `source.host`) evrelay's own host, `datadog.hostname`, as the Cluster Agent's sender fills an empty host with its own |
//! | `alert_type`       | Warning → `warning`, anything else → `info`                            |
//! | `aggregation_key`  | `kubernetes_apiserver:<involvedObject.uid>` (written with an empty uid too, as the Cluster Agent writes it) |
//! | `source_type_name` | `kubernetes`                                                            |
//! | `event_type`       | `kubernetes_apiserver`                                                  |
//! | `tags`             | `kube_kind`, `kube_name`, `kubernetes_kind`, `name`, `kube_namespace` and `namespace` (only with a namespace), the kind tag ([`kind_tag`]: `pod_name`, `kube_deployment`, …), `source_component`, `orchestrator:kubernetes`, `reporting_controller`, `kube_cluster_name` (only with a cluster name), `datadog.tags` and the Agent's global tags (`DD_TAGS`, `DD_EXTRA_TAGS`, `DD_CLUSTER_CHECKS_EXTRA_TAGS`), and `evrelay_id:<uid>.<resourceVersion>` for every event in the bundle; sorted byte-wise, exact repeats removed, as the Agent's aggregator sends them. An empty value is still a tag (`reporting_controller:`), as the Cluster Agent's check writes it |
//!
//! Bundled mode needs a kind, a name, a reason and a message to build a line and a
//! title. The Cluster Agent skips events without them; evrelay sends them unbundled.
//!
//! **Unbundled** (`events.mode: unbundled`, the Cluster Agent's `unbundle_events`):
//! one Datadog event per Kubernetes event. As above, except:
//!
//! | Datadog field | value                                                              |
//! |---------------|--------------------------------------------------------------------|
//! | `msg_title`   | `<Kind> <ns>/<name>: <Reason>`                                     |
//! | `msg_text`    | the message, cut at [`MAX_TEXT_CHARS`] with [`TRUNCATION_MARKER`]  |
//! | `timestamp`   | the later of lastTimestamp and `series.lastObservedTime`, else eventTime (evrelay: else firstTimestamp, else creation, else the time it was received) |
//! | `tags`        | the same set plus `event_reason:<Reason>`                          |
//!
//! Unbundled mode sends only the events `collected_event_types` (and, with
//! `filtering_enabled`, the Cluster Agent's built-in list) names, one by one; the
//! rest are bundled if `bundle_unspecified_events`, else left out. What each
//! filter means in each mode is in `filter.rs`.
//!
//! Not reproduced: tags from the Cluster Agent's tagger (pod labels, owner tags;
//! evrelay has no tagger), `host_provider_id` (a node lookup per event), and the
//! node lookup for Pod events without `source.host`.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::filter::{Decision, Filter, Grouping};
use super::{DatadogSettings, EventsSettings, Mode, Output};
use crate::event::{KubeEvent, parse_time_ms, text};
use crate::ship::{Mapped, Occurrence, Outbound};

pub const SOURCE_TYPE_NAME: &str = "kubernetes";
const EVENT_TYPE: &str = "kubernetes_apiserver";

/// The events API refuses text over 4000 characters; keep room for the marker.
pub const MAX_TEXT_CHARS: usize = 3900;
/// What a cut text ends with.
pub const TRUNCATION_MARKER: &str = "…[truncated by evrelay]";
/// The Cluster Agent's estimate limit for a bundle's text, in bytes.
const MAX_BUNDLE_TEXT: usize = 3750;
/// The Cluster Agent's fixed overhead of a bundle's text, in its estimate.
const BUNDLE_OVERHEAD: usize = 250;
/// Events in one bundle at the most (one `evrelay_id` tag each).
pub const MAX_BUNDLE_EVENTS: usize = 100;
/// Tags on one Datadog event at the most: Datadog's events API documents 100
/// (its v2 `EventPayload.tags`: "Maximum of 100 tags allowed"). A bundle stops
/// taking events before its `evrelay_id` tags would pass it.
pub const MAX_TAGS: usize = 100;

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

/// How events become Datadog events: the configured mode, filters and cluster.
#[derive(Debug, Clone)]
pub struct Transform {
    unbundled: bool,
    grouping: Grouping,
    filter: Filter,
    cluster_name: String,
    /// evrelay's host: the host of events that name no node.
    hostname: String,
    /// `datadog.tags` and the Agent's global tags.
    tags: Vec<String>,
}

impl Transform {
    /// Logs output sends every event on its own, as unbundled mode does.
    pub fn new(events: &EventsSettings, datadog: &DatadogSettings) -> Transform {
        Transform {
            unbundled: events.mode == Mode::Unbundled || datadog.output == Output::Logs,
            grouping: match (datadog.output, events.mode) {
                (Output::Logs, _) => Grouping::Logs,
                (_, Mode::Bundled) => Grouping::Bundled,
                (_, Mode::Unbundled) => Grouping::Unbundled {
                    bundle_unspecified: events.bundle_unspecified_events,
                },
            },
            filter: events.filter.clone(),
            cluster_name: datadog.cluster_name.clone().unwrap_or_default(),
            hostname: datadog.hostname.clone(),
            tags: datadog.tags.clone(),
        }
    }

    /// Maps one batch, in journal order.
    pub fn map(&self, batch: &[Occurrence<'_>]) -> Mapped<DdEvent> {
        let mut mapped = Mapped::default();
        // Finished and open bundles, by first record; open ones by bundle key.
        let mut out: Vec<(u64, Outbound<DdEvent>)> = Vec::new();
        let mut open: HashMap<(&str, &str, &str), Bundle<'_>> = HashMap::new();
        for o in batch {
            let e = &o.event;
            // Collected events go one by one in unbundled mode; events outside
            // `collected_event_types` go only where `bundle_unspecified_events` puts them.
            let bundle = match self.filter.decide(e, self.grouping) {
                Decision::Collect => !self.unbundled,
                Decision::Unspecified => true,
                Decision::Drop => {
                    mapped.filtered.push(o.seq);
                    continue;
                }
            };
            if !bundle || !bundleable(e) {
                out.push((o.seq, self.unbundled(o)));
                continue;
            }
            let key = (
                text(&e.involved_object.kind),
                text(&e.involved_object.uid),
                text(&e.type_),
            );
            let current = open.entry(key).or_insert_with(|| Bundle::new(o, self));
            if !current.fits(o) {
                let full = std::mem::replace(current, Bundle::new(o, self));
                out.push((full.seqs[0], full.finish(self)));
            }
            current.add(o);
        }
        out.extend(open.into_values().map(|b| (b.seqs[0], b.finish(self))));
        out.sort_by_key(|(first, _)| *first);
        mapped.outbound = out.into_iter().map(|(_, o)| o).collect();
        mapped
    }

    /// The records `seqs` of `batch`, one Datadog event each (for a bundle the
    /// intake refused, to find the event at fault).
    pub fn unbundle(&self, batch: &[Occurrence<'_>], seqs: &[u64]) -> Vec<Outbound<DdEvent>> {
        batch
            .iter()
            .filter(|o| seqs.contains(&o.seq))
            .map(|o| self.unbundled(o))
            .collect()
    }

    /// One Datadog event for one Kubernetes event.
    fn unbundled(&self, o: &Occurrence<'_>) -> Outbound<DdEvent> {
        let e = &o.event;
        let reason = text(&e.reason);
        let mut tags = self.object_tags(e);
        tags.push(format!("event_reason:{reason}"));
        tags.push(idempotency_tag(
            text(&e.metadata.uid),
            text(&e.metadata.resource_version),
        ));
        sort_unique(&mut tags);
        Outbound {
            seqs: vec![o.seq],
            item: DdEvent {
                msg_title: format!("{}: {reason}", readable_key(e)),
                msg_text: truncate_chars(text(&e.message), MAX_TEXT_CHARS),
                timestamp: e
                    .last_seen_ms()
                    .unwrap_or(o.received_at_ms)
                    .div_euclid(1000),
                priority: "normal",
                host: self.host(e),
                tags,
                alert_type: alert_type(text(&e.type_)),
                aggregation_key: aggregation_key(e),
                source_type_name: SOURCE_TYPE_NAME,
                event_type: EVENT_TYPE,
            },
        }
    }

    /// The tags of the involved object and the reporter, as the Cluster Agent's
    /// check makes them (an empty value is still a tag, `reporting_controller:`,
    /// except for the namespace pair), then the cluster and the configured tags.
    fn object_tags(&self, e: &KubeEvent<'_>) -> Vec<String> {
        let kind = text(&e.involved_object.kind);
        let name = text(&e.involved_object.name);
        let namespace = text(&e.involved_object.namespace);
        let mut tags = Vec::with_capacity(16 + self.tags.len());
        tags.extend([
            format!("kube_kind:{kind}"),
            format!("kube_name:{name}"),
            format!("kubernetes_kind:{kind}"),
            format!("name:{name}"),
        ]);
        if !namespace.is_empty() {
            tags.push(format!("kube_namespace:{namespace}"));
            tags.push(format!("namespace:{namespace}"));
        }
        if let Some(tag) = kind_tag(kind) {
            tags.push(format!("{tag}:{name}"));
        }
        tags.extend([
            format!("source_component:{}", text(&e.source.component)),
            "orchestrator:kubernetes".to_owned(),
            format!("reporting_controller:{}", text(&e.reporting_component)),
        ]);
        if !self.cluster_name.is_empty() {
            tags.push(format!("kube_cluster_name:{}", self.cluster_name));
        }
        tags.extend(self.tags.iter().cloned());
        tags
    }

    /// Pod events are about the node that reported them, node events about the
    /// node; any other event is about evrelay's own host, as the Cluster Agent's
    /// sender fills an empty host with its own.
    fn host(&self, e: &KubeEvent<'_>) -> String {
        let node = match text(&e.involved_object.kind) {
            "Pod" => text(&e.source.host),
            "Node" => text(&e.involved_object.name),
            _ => "",
        };
        match (node, self.cluster_name.as_str()) {
            ("", _) => self.hostname.clone(),
            (node, "") => node.to_owned(),
            (node, cluster) => format!("{node}-{cluster}"),
        }
    }
}

/// The events of one object, of one type, from one batch.
struct Bundle<'a> {
    first: &'a KubeEvent<'a>,
    seqs: Vec<u64>,
    ids: Vec<String>,
    /// Events it takes at the most: one `evrelay_id` tag each, within [`MAX_TAGS`].
    max_events: usize,
    /// Line text (`**Reason**: Message\n`) → each event's highest count, by event
    /// uid (by sequence number for an event without one: it counts on its own).
    lines: BTreeMap<String, HashMap<String, i64>>,
    estimate: usize,
    first_seen_s: Option<i64>,
    last_seen_s: Option<i64>,
}

impl<'a> Bundle<'a> {
    fn new(o: &'a Occurrence<'a>, t: &Transform) -> Bundle<'a> {
        let other_tags = t.object_tags(&o.event).len();
        Bundle {
            first: &o.event,
            seqs: Vec::new(),
            ids: Vec::new(),
            max_events: MAX_TAGS
                .saturating_sub(other_tags)
                .clamp(1, MAX_BUNDLE_EVENTS),
            lines: BTreeMap::new(),
            estimate: BUNDLE_OVERHEAD + text(&o.event.source.component).len(),
            first_seen_s: None,
            last_seen_s: None,
        }
    }

    /// Whether `o` can join without the text passing the limit.
    fn fits(&self, o: &Occurrence<'_>) -> bool {
        if self.seqs.is_empty() {
            return true;
        }
        if self.seqs.len() >= self.max_events {
            return false;
        }
        let line = self.line(&o.event);
        self.lines.contains_key(&line) || self.estimate + line_estimate(&line) <= MAX_BUNDLE_TEXT
    }

    fn add(&mut self, o: &'a Occurrence<'a>) {
        let e = &o.event;
        let line = self.line(e);
        if !self.lines.contains_key(&line) {
            self.estimate += line_estimate(&line);
        }
        let count = e.occurrences();
        let best = self
            .lines
            .entry(line)
            .or_default()
            .entry(match text(&e.metadata.uid) {
                "" => format!("#{}", o.seq),
                uid => uid.to_owned(),
            })
            .or_insert(0);
        *best = (*best).max(count);
        self.seqs.push(o.seq);
        self.ids.push(idempotency_tag(
            text(&e.metadata.uid),
            text(&e.metadata.resource_version),
        ));
        let last_seen = e.last_seen_ms().unwrap_or(o.received_at_ms);
        let first = [&e.first_timestamp, &e.event_time]
            .into_iter()
            .find_map(|t| parse_time_ms(t.as_deref()))
            .unwrap_or(last_seen)
            .div_euclid(1000);
        let last = last_seen.div_euclid(1000);
        self.first_seen_s = Some(self.first_seen_s.map_or(first, |f| f.min(first)));
        self.last_seen_s = Some(self.last_seen_s.map_or(last, |l| l.max(last)));
    }

    /// `**Reason**: Message\n`, cut so that it fits in a bundle of its own.
    fn line(&self, e: &KubeEvent<'_>) -> String {
        let line = format!("**{}**: {}", text(&e.reason), text(&e.message));
        let room = MAX_BUNDLE_TEXT - BUNDLE_OVERHEAD - text(&self.first.source.component).len();
        // The line's own estimate is 11 + its length, the newline included.
        let room = room.saturating_sub(12);
        let mut line = if line.len() > room {
            let mut cut = room.saturating_sub(TRUNCATION_MARKER.len());
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("{}{TRUNCATION_MARKER}", &line[..cut])
        } else {
            line
        };
        line.push('\n');
        line
    }

    fn finish(self, t: &Transform) -> Outbound<DdEvent> {
        let e = self.first;
        let body = self
            .lines
            .iter()
            .map(|(line, counts)| format!("{} {line}", counts.values().sum::<i64>()))
            .collect::<Vec<_>>()
            .join(" ");
        let last = self.last_seen_s.unwrap_or(0);
        let first = self.first_seen_s.unwrap_or(last);
        let msg_text = format!(
            "%%% \n{body} \n _Events emitted by the {} seen at {} since {}_ \n\n %%%",
            text(&e.source.component),
            go_time(last),
            go_time(first),
        )
        .replace('~', "\\~");
        let mut tags = t.object_tags(e);
        tags.extend(self.ids);
        sort_unique(&mut tags);
        Outbound {
            seqs: self.seqs,
            item: DdEvent {
                msg_title: format!("Events from the {}", readable_key(e)),
                msg_text,
                timestamp: last,
                priority: "normal",
                host: t.host(e),
                tags,
                alert_type: alert_type(text(&e.type_)),
                aggregation_key: aggregation_key(e),
                source_type_name: SOURCE_TYPE_NAME,
                event_type: EVENT_TYPE,
            },
        }
    }
}

/// The Cluster Agent's estimate for one new line: 10 digits of count, a space, the line.
fn line_estimate(line: &str) -> usize {
    11 + line.len()
}

/// Whether bundled mode can make a line and a title of it.
fn bundleable(e: &KubeEvent<'_>) -> bool {
    [
        &e.involved_object.kind,
        &e.involved_object.name,
        &e.reason,
        &e.message,
    ]
    .into_iter()
    .all(|f| !text(f).is_empty())
}

/// `<Kind> <ns>/<name>`, or `<Kind> <name>` for a cluster-scoped object.
fn readable_key(e: &KubeEvent<'_>) -> String {
    let kind = text(&e.involved_object.kind);
    let name = text(&e.involved_object.name);
    match text(&e.involved_object.namespace) {
        "" => format!("{kind} {name}"),
        ns => format!("{kind} {ns}/{name}"),
    }
}

fn aggregation_key(e: &KubeEvent<'_>) -> String {
    format!("kubernetes_apiserver:{}", text(&e.involved_object.uid))
}

fn alert_type(event_type: &str) -> &'static str {
    match event_type {
        "Warning" => "warning",
        _ => "info",
    }
}

/// The tag naming an object of a kind the Cluster Agent's tagger knows.
pub fn kind_tag(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Pod" => "pod_name",
        "Deployment" => "kube_deployment",
        "ReplicaSet" => "kube_replica_set",
        "ReplicationController" => "kube_replication_controller",
        "StatefulSet" => "kube_stateful_set",
        "DaemonSet" => "kube_daemon_set",
        "Job" => "kube_job",
        "CronJob" => "kube_cronjob",
        "Service" => "kube_service",
        "Namespace" => "kube_namespace",
        _ => return None,
    })
}

/// Tags as the Agent's aggregator sends them: sorted byte-wise, exact repeats
/// removed.
fn sort_unique(tags: &mut Vec<String>) {
    tags.sort_unstable();
    tags.dedup();
}

/// A Unix time as Go's `time.Time.String()` prints it in UTC.
fn go_time(seconds: i64) -> String {
    match jiff::Timestamp::from_second(seconds) {
        Ok(t) => t.strftime("%Y-%m-%d %H:%M:%S +0000 UTC").to_string(),
        Err(_) => "1970-01-01 00:00:00 +0000 UTC".to_owned(),
    }
}

fn truncate_chars(message: &str, max: usize) -> String {
    match message.char_indices().nth(max) {
        None => message.to_owned(),
        Some((cut, _)) => format!("{}\n{TRUNCATION_MARKER}", &message[..cut]),
    }
}

#[cfg(test)]
mod tests;
