//! The golden corpus: realistic batches of core/v1 events and the Datadog events
//! each must become, written by hand from the Cluster Agent's rules (docs/datadog.md and
//! the table in `src/sinks/datadog/transform.rs`), never produced by running evrelay.
//! The rules are those of the Datadog Agent 7.72, the release the fakeintake that
//! judges them end to end is cut from; docs/datadog.md ("The Agent release these
//! rules match") names the Agent file each rule comes from.
//!
//! One case per file in `tests/golden/`:
//!
//! ```text
//! { "about":    what the case is,
//!   "config":   {"cluster_name": …, "hostname": … (default `evrelay-host`),
//!                "tags": [ `datadog.tags` ], "events": { the `events:` section }},
//!   "template": an event every event of the case is laid over (optional),
//!   "events":   the batch, in journal order (sequence numbers 1, 2, …),
//!   "expected": the Datadog events, in order, each with the "seqs" it carries
//!               (tags in any order: they are compared sorted, as sent),
//!   "filtered": the sequence numbers the filters leave out (optional) }
//! ```
//!
//! Long or repetitive values are written with three forms, expanded before use:
//! `{"$repeat": "x", "times": n}` (a string), `{"$concat": [...]}` (strings joined),
//! and, in a list, `{"$each": [from, to], "value": …}` (one item per `i`, `{i}`
//! replaced in every string of the value, and a string `"$i"` replaced by the
//! number).
//!
//! The end-to-end test `e2e_fidelity` sends most of these cases through the real
//! API server and fakeintake and holds Datadog's parser to the same expectations.

mod support;

use support::golden::{Case, cases};

use evrelay::event::KubeEvent;
use evrelay::ship::Occurrence;
use evrelay::sinks::datadog::{DatadogSettings, EventsSettings, Transform};

fn run(case: &Case) -> (serde_json::Value, serde_json::Value) {
    let datadog = DatadogSettings {
        cluster_name: case.cluster_name.clone(),
        hostname: case.hostname.clone(),
        tags: case.tags.clone(),
        ..Default::default()
    };
    let events = EventsSettings::try_from(case.events_config.clone())
        .unwrap_or_else(|p| panic!("{}: config.events: {p:?}", case.name));
    let transform = Transform::new(&events, &datadog);
    let raws: Vec<Vec<u8>> = case
        .events
        .iter()
        .map(|e| serde_json::to_vec(e).unwrap())
        .collect();
    let batch: Vec<Occurrence<'_>> = raws
        .iter()
        .enumerate()
        .map(|(i, raw)| Occurrence {
            seq: i as u64 + 1,
            event: KubeEvent::parse(raw).unwrap(),
            received_at_ms: 0,
        })
        .collect();
    let mapped = transform.map(&batch);
    let actual: Vec<serde_json::Value> = mapped
        .outbound
        .iter()
        .map(|o| {
            let mut v = serde_json::to_value(&o.item).unwrap();
            v["seqs"] = serde_json::json!(o.seqs);
            v
        })
        .collect();
    (
        serde_json::json!({"expected": actual, "filtered": mapped.filtered}),
        serde_json::json!({"expected": case.expected, "filtered": case.filtered}),
    )
}

#[test]
fn every_case_maps_as_written() {
    let cases = cases();
    assert!(cases.len() >= 12, "the corpus is missing: {}", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let (actual, expected) = run(case);
        if actual != expected {
            failures.push(format!(
                "{} ({}):\n  expected {}\n  actual   {}",
                case.name,
                case.about,
                serde_json::to_string_pretty(&expected).unwrap(),
                serde_json::to_string_pretty(&actual).unwrap()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Every event of the corpus is carried by exactly one Datadog event or filtered:
/// nothing is lost, nothing sent twice, whatever the bundling did.
#[test]
fn every_event_is_accounted_for_once() {
    for case in cases() {
        let mut seqs: Vec<u64> = case
            .expected
            .iter()
            .flat_map(|e| {
                e["seqs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_u64().unwrap())
            })
            .chain(case.filtered.iter().copied())
            .collect();
        seqs.sort();
        let all: Vec<u64> = (1..=case.events.len() as u64).collect();
        assert_eq!(seqs, all, "{}", case.name);
    }
}
