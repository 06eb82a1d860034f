//! The mapping rules one by one. The corpus under `tests/golden/` checks whole
//! batches against expectations written from the Cluster Agent's rules.

use super::*;

fn transform(cluster: Option<&str>, mode: &str) -> Transform {
    let datadog = DatadogSettings {
        cluster_name: cluster.map(Into::into),
        ..Default::default()
    };
    // Unbundled mode sends what collected_event_types names: every Pod here.
    let pods = [crate::sinks::datadog::CollectedType {
        kind: "Pod".into(),
        ..Default::default()
    }];
    let events = EventsSettings {
        mode: mode.parse().unwrap(),
        filter: Filter::parse(&[], &pods, false, &[], &[]).unwrap(),
        ..Default::default()
    };
    Transform::new(&events, &datadog)
}

fn batch(raws: &[String]) -> Vec<Occurrence<'_>> {
    raws.iter()
        .enumerate()
        .map(|(i, raw)| Occurrence {
            seq: i as u64 + 1,
            event: KubeEvent::parse(raw.as_bytes()).unwrap(),
            received_at_ms: 1_795_341_000_000,
        })
        .collect()
}

fn pod_event(
    uid: &str,
    rv: &str,
    kind_type: &str,
    reason: &str,
    message: &str,
    count: i64,
) -> String {
    format!(
        r#"{{"metadata":{{"uid":"{uid}","resourceVersion":"{rv}","namespace":"shop"}},
        "involvedObject":{{"kind":"Pod","name":"api-0","namespace":"shop","uid":"p-1"}},
        "reason":"{reason}","message":"{message}","type":"{kind_type}","count":{count},
        "firstTimestamp":"2026-11-22T10:00:00Z","lastTimestamp":"2026-11-22T10:05:00Z",
        "source":{{"component":"kubelet","host":"node-a"}},"reportingComponent":"kubelet"}}"#
    )
}

#[test]
fn unbundled_pod_warning() {
    let raws = [pod_event(
        "e-1",
        "77",
        "Warning",
        "BackOff",
        "Back-off restarting failed container",
        3,
    )];
    let out = transform(Some("prod"), "unbundled")
        .map(&batch(&raws))
        .outbound;
    assert_eq!(out.len(), 1);
    let dd = &out[0].item;
    assert_eq!(out[0].seqs, [1]);
    assert_eq!(dd.msg_title, "Pod shop/api-0: BackOff");
    assert_eq!(dd.msg_text, "Back-off restarting failed container");
    assert_eq!(dd.timestamp, 1_795_341_900);
    assert_eq!(dd.alert_type, "warning");
    assert_eq!(dd.host, "node-a-prod");
    assert_eq!(dd.aggregation_key, "kubernetes_apiserver:p-1");
    let mut sorted = dd.tags.clone();
    sorted.sort();
    assert_eq!(dd.tags, sorted, "unbundled tags are sorted");
    for tag in [
        "event_reason:BackOff",
        "pod_name:api-0",
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
fn bundles_group_by_object_and_type_and_count_each_event_once() {
    let raws = [
        pod_event("e-1", "10", "Warning", "BackOff", "Back-off", 3),
        pod_event("e-2", "11", "Normal", "Pulled", "Pulled image", 1),
        pod_event("e-1", "12", "Warning", "BackOff", "Back-off", 4),
        pod_event("e-3", "13", "Warning", "BackOff", "Back-off", 1),
        pod_event("e-4", "14", "Warning", "Failed", "Error: ErrImagePull", 2),
    ];
    let out = transform(None, "bundled").map(&batch(&raws)).outbound;
    assert_eq!(out.len(), 2, "{out:#?}");
    let (warning, normal) = (&out[0], &out[1]);
    assert_eq!(warning.seqs, [1, 3, 4, 5]);
    assert_eq!(normal.seqs, [2]);
    assert_eq!(warning.item.msg_title, "Events from the Pod shop/api-0");
    // e-1 counts 4 (its highest), e-3 counts 1; lines sorted; joined by a space.
    assert_eq!(
        warning.item.msg_text,
        "%%% \n5 **BackOff**: Back-off\n 2 **Failed**: Error: ErrImagePull\n \n _Events emitted by the kubelet seen at 2026-11-22 10:05:00 +0000 UTC since 2026-11-22 10:00:00 +0000 UTC_ \n\n %%%"
    );
    assert_eq!(warning.item.alert_type, "warning");
    assert_eq!(normal.item.alert_type, "info");
    assert!(
        !warning
            .item
            .tags
            .iter()
            .any(|t| t.starts_with("event_reason:"))
    );
    let ids: Vec<_> = warning
        .item
        .tags
        .iter()
        .filter(|t| t.starts_with("evrelay_id:"))
        .collect();
    assert_eq!(
        ids,
        [
            "evrelay_id:e-1.10",
            "evrelay_id:e-1.12",
            "evrelay_id:e-3.13",
            "evrelay_id:e-4.14"
        ]
    );
}

#[test]
fn bundles_split_before_the_text_limit_and_never_lose_a_line() {
    let message = "m".repeat(1000);
    let raws: Vec<String> = (0..10)
        .map(|i| {
            pod_event(
                &format!("e-{i}"),
                &i.to_string(),
                "Warning",
                &format!("R{i}"),
                &message,
                1,
            )
        })
        .collect();
    let out = transform(None, "bundled").map(&batch(&raws)).outbound;
    assert!(out.len() > 1);
    let seqs: Vec<u64> = out.iter().flat_map(|o| o.seqs.clone()).collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    for o in &out {
        assert!(o.item.msg_text.len() <= 4000, "{}", o.item.msg_text.len());
    }
}

#[test]
fn a_line_too_long_for_any_bundle_is_cut_with_a_marker() {
    let raws = [pod_event(
        "e-1",
        "1",
        "Warning",
        "BackOff",
        &"é".repeat(50_000),
        1,
    )];
    let out = transform(None, "bundled").map(&batch(&raws)).outbound;
    let text = &out[0].item.msg_text;
    assert!(text.contains(TRUNCATION_MARKER));
    assert!(text.len() <= 3750, "{}", text.len());
}

#[test]
fn events_without_a_message_go_unbundled_rather_than_lost() {
    let raws = [pod_event("e-1", "1", "Normal", "Killing", "", 1)];
    let out = transform(None, "bundled").map(&batch(&raws)).outbound;
    assert_eq!(out[0].item.msg_title, "Pod shop/api-0: Killing");
}

#[test]
fn tildes_are_escaped_in_bundles() {
    let raws = [pod_event("e-1", "1", "Normal", "Note", "~strike~", 1)];
    let out = transform(None, "bundled").map(&batch(&raws)).outbound;
    assert!(out[0].item.msg_text.contains("\\~strike\\~"));
}

#[test]
fn unbundled_long_messages_are_cut_with_a_marker() {
    let raws = [pod_event(
        "e-1",
        "1",
        "Normal",
        "Note",
        &"é".repeat(10_000),
        1,
    )];
    let out = transform(None, "unbundled").map(&batch(&raws)).outbound;
    let text = &out[0].item.msg_text;
    assert!(text.ends_with(TRUNCATION_MARKER));
    assert_eq!(
        text.chars().count(),
        MAX_TEXT_CHARS + 1 + TRUNCATION_MARKER.chars().count()
    );
}

#[test]
fn collected_types_in_unbundled_mode() {
    let raws = [
        pod_event("e-1", "1", "Warning", "BackOff", "b", 1),
        pod_event("e-2", "2", "Normal", "Pulled", "p", 1),
    ];
    let collected = [crate::sinks::datadog::CollectedType {
        kind: "Pod".into(),
        reasons: vec!["BackOff".into()],
        ..Default::default()
    }];
    let events = |bundle_unspecified| EventsSettings {
        mode: Mode::Unbundled,
        bundle_unspecified_events: bundle_unspecified,
        filter: Filter::parse(&[], &collected, false, &[], &[]).unwrap(),
    };
    let t = Transform::new(&events(false), &DatadogSettings::default());
    let mapped = t.map(&batch(&raws));
    assert_eq!(mapped.outbound.len(), 1);
    assert_eq!(mapped.outbound[0].item.msg_title, "Pod shop/api-0: BackOff");
    assert_eq!(mapped.filtered, [2]);
    let t = Transform::new(&events(true), &DatadogSettings::default());
    let mapped = t.map(&batch(&raws));
    assert_eq!(mapped.outbound.len(), 2);
    assert_eq!(
        mapped.outbound[1].item.msg_title,
        "Events from the Pod shop/api-0"
    );
    assert!(mapped.filtered.is_empty());
}

#[test]
fn events_without_a_uid_count_one_each() {
    let raws: Vec<String> = (0..3)
        .map(|i| pod_event("", &i.to_string(), "Warning", "BackOff", "b", 1))
        .collect();
    let out = transform(None, "bundled").map(&batch(&raws)).outbound;
    assert!(
        out[0].item.msg_text.starts_with("%%% \n3 **BackOff**"),
        "{}",
        out[0].item.msg_text
    );
}

/// An event recorded through events.k8s.io/v1 and repeated: `count` 0, no
/// `lastTimestamp`; the series counts and dates the occurrences.
fn series_event(uid: &str, rv: &str, count: i64, last: &str) -> String {
    format!(
        r#"{{"metadata":{{"uid":"{uid}","resourceVersion":"{rv}","namespace":"shop"}},
        "involvedObject":{{"kind":"Pod","name":"api-0","namespace":"shop","uid":"p-1"}},
        "reason":"FailedScheduling","message":"0/3 nodes are available","type":"Warning",
        "eventTime":"2026-11-22T10:00:00.000000Z","reportingComponent":"default-scheduler",
        "source":{{"component":"default-scheduler"}},
        "series":{{"count":{count},"lastObservedTime":"{last}"}}}}"#
    )
}

#[test]
fn a_series_shows_its_count_and_its_last_observed_time() {
    let raws = [series_event("s-1", "9", 10, "2026-11-22T10:09:00.000000Z")];
    let bundled = transform(None, "bundled").map(&batch(&raws)).outbound;
    let text = &bundled[0].item.msg_text;
    assert!(text.starts_with("%%% \n10 **FailedScheduling**"), "{text}");
    assert!(
        text.contains("seen at 2026-11-22 10:09:00 +0000 UTC since 2026-11-22 10:00:00 +0000 UTC"),
        "{text}"
    );
    assert_eq!(bundled[0].item.timestamp, 1_795_342_140);
    let unbundled = transform(None, "unbundled").map(&batch(&raws)).outbound;
    assert_eq!(unbundled[0].item.timestamp, 1_795_342_140);
}

/// What the Cluster Agent's sender and aggregator add after its check: its own
/// host where the event names no node, the configured and global tags, and every
/// tag sorted once, empty values included.
#[test]
fn the_senders_host_and_tags_are_added_and_everything_sorted() {
    let datadog = DatadogSettings {
        cluster_name: Some("prod".into()),
        hostname: "node-z-prod".into(),
        tags: vec!["team:a".into(), "env:prod".into(), "team:a".into()],
        ..Default::default()
    };
    let t = Transform::new(&EventsSettings::default(), &datadog);
    let raws = [
        r#"{"metadata":{"uid":"e-1","resourceVersion":"5","namespace":"shop"},
        "involvedObject":{"kind":"Deployment","name":"web","namespace":"shop"},
        "reason":"ScalingReplicaSet","message":"Scaled up","type":"Normal","count":1,
        "lastTimestamp":"2026-11-22T10:05:00Z"}"#
            .to_owned(),
    ];
    let out = t.map(&batch(&raws)).outbound;
    let dd = &out[0].item;
    assert_eq!(dd.host, "node-z-prod", "no node named: evrelay's own host");
    assert_eq!(
        dd.aggregation_key, "kubernetes_apiserver:",
        "written as the Agent writes it"
    );
    assert_eq!(
        dd.tags,
        [
            "env:prod",
            "evrelay_id:e-1.5",
            "kube_cluster_name:prod",
            "kube_deployment:web",
            "kube_kind:Deployment",
            "kube_name:web",
            "kube_namespace:shop",
            "kubernetes_kind:Deployment",
            "name:web",
            "namespace:shop",
            "orchestrator:kubernetes",
            "reporting_controller:",
            "source_component:",
            "team:a",
        ]
    );
}

/// Datadog takes 100 tags per event: a bundle's `evrelay_id` tags make room for
/// the object's and the configured ones, and a new bundle starts.
#[test]
fn a_bundle_never_carries_more_than_100_tags() {
    let datadog = DatadogSettings {
        tags: (0..40).map(|i| format!("t{i}:x")).collect(),
        ..Default::default()
    };
    let t = Transform::new(&EventsSettings::default(), &datadog);
    let raws: Vec<String> = (0..150)
        .map(|i| {
            pod_event(
                &format!("e-{i}"),
                &i.to_string(),
                "Warning",
                "BackOff",
                "b",
                1,
            )
        })
        .collect();
    let out = t.map(&batch(&raws)).outbound;
    assert!(out.iter().all(|o| o.item.tags.len() <= MAX_TAGS));
    assert_eq!(
        out[0].item.tags.len(),
        MAX_TAGS,
        "full bundles use every tag"
    );
    let carried: usize = out.iter().map(|o| o.seqs.len()).sum();
    assert_eq!(carried, 150, "every event in one bundle or another");
}
