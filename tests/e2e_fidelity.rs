//! Datadog fidelity end to end: the golden corpus (`tests/golden/`) goes through the
//! real API server and evrelay to fakeintake, and Datadog's own parsers read back
//! what arrived. Titles, text, timestamps, hosts, tags, alert types and
//! aggregation keys must be what the corpus says; only the `evrelay_id` tags differ,
//! as the API server assigns uids and resourceVersions.
//!
//! Three runs on one control plane:
//! 1. cases with `DD_CLUSTER_NAME=prod`, created before evrelay starts (one LIST);
//! 2. cases without a cluster name, created while evrelay is down and delivered by
//!    the resumed watch, with deflate compression;
//! 3. everything again as Datadog logs, from a fresh journal, one namespace
//!    excluded (journaled and counted, not sent).
//!
//! Run 1 and 2 also check the leader's `kube_apiserver_controlplane.up` service
//! checks as fakeintake parsed them.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use support::golden::{Case, cases};
use support::{ControlPlane, IntakeEvent, create_namespace, delivered_uids, eventually};

const WITH_CLUSTER: &[&str] = &[
    "crashloop",
    "oom-kill",
    "failed-scheduling",
    "node-not-ready",
    "cluster-scoped",
    "non-latin",
];
const WITHOUT_CLUSTER: &[&str] = &[
    "image-pull-backoff",
    "hpa-rescale",
    "long-message",
    "event-time-only",
    "missing-message",
];
const DRAIN: Duration = Duration::from_secs(90);

fn pick(all: &[Case], names: &[&str]) -> Vec<Case> {
    names
        .iter()
        .map(|n| {
            let case = all.iter().find(|c| c.name == *n).expect("case in corpus");
            assert!(case.filtered.is_empty() && case.events_config.mode == "bundled");
            case.clone()
        })
        .collect()
}

/// Creates a case's events in order; a name seen before is an update of that
/// event (a count bump). Returns how many events the API server holds for it.
async fn create(client: &kube::Client, case: &Case) -> BTreeSet<String> {
    let mut latest: std::collections::HashMap<String, String> = Default::default();
    let mut uids = BTreeSet::new();
    for raw in &case.events {
        let mut raw = raw.clone();
        let meta = raw["metadata"].as_object_mut().unwrap();
        meta.remove("uid");
        meta.remove("resourceVersion");
        let name = meta["name"].as_str().unwrap().to_owned();
        let namespace = meta["namespace"].as_str().unwrap().to_owned();
        let mut event: Event = serde_json::from_value(raw).expect("a core/v1 Event");
        let api = Api::<Event>::namespaced(client.clone(), &namespace);
        let stored = match latest.get(&name) {
            None => api.create(&PostParams::default(), &event).await,
            Some(rv) => {
                event.metadata.resource_version = Some(rv.clone());
                api.replace(&name, &PostParams::default(), &event).await
            }
        }
        .unwrap_or_else(|e| panic!("{}: the API server refused {name}: {e}", case.name));
        latest.insert(name, stored.metadata.resource_version.unwrap());
        uids.insert(stored.metadata.uid.unwrap());
    }
    uids
}

/// A Datadog event reduced to what the corpus pins down: every field, tags sorted
/// and without `evrelay_id`.
fn comparable(v: &Value) -> Value {
    let mut tags: Vec<String> = v["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str())
        .filter(|t| !t.starts_with("evrelay_id:"))
        .map(str::to_owned)
        .collect();
    tags.sort();
    json!({
        "msg_title": v["msg_title"], "msg_text": v["msg_text"], "timestamp": v["timestamp"],
        "priority": v["priority"], "host": v["host"].as_str().unwrap_or(""), "tags": tags,
        "alert_type": v["alert_type"], "aggregation_key": v["aggregation_key"],
        "source_type_name": v["source_type_name"], "event_type": v["event_type"],
    })
}

fn sorted(values: impl Iterator<Item = Value>) -> Vec<Value> {
    let mut v: Vec<Value> = values.collect();
    v.sort_by_key(|x| x.to_string());
    v
}

/// The Datadog events at the intake about the test's own Kubernetes events (`ours`):
/// the API server records some of its own (support::cluster_event_uids), which the
/// corpus does not describe.
fn received(cp: &ControlPlane, ours: &BTreeSet<String>) -> Vec<Value> {
    sorted(
        cp.intake_events()
            .iter()
            .filter(|e| e.event_uids().iter().any(|u| ours.contains(*u)))
            .map(|e: &IntakeEvent| comparable(&serde_json::to_value(e).unwrap())),
    )
}

/// Occurrences of the test's own events at the intake.
fn delivered_ours(cp: &ControlPlane, ours: &BTreeSet<String>) -> usize {
    delivered_uids(cp)
        .iter()
        .filter(|u| ours.contains(*u))
        .count()
}

/// Fails with what differs (as multisets), not both whole lists: a CI log keeps
/// only the end of a failure's output.
fn assert_same(received: &[Value], expected: &[Value], what: &str) {
    if received == expected {
        return;
    }
    let mut missing: Vec<&Value> = expected.iter().collect();
    let mut unexpected = Vec::new();
    for r in received {
        match missing.iter().position(|e| *e == r) {
            Some(at) => {
                missing.remove(at);
            }
            None => unexpected.push(r),
        }
    }
    panic!(
        "{what}: {} received, {} expected\nexpected but not received: {missing:#}\nreceived but not expected: {unexpected:#}",
        received.len(),
        expected.len(),
        missing = Value::from(missing.into_iter().cloned().collect::<Vec<_>>()),
        unexpected = Value::from(unexpected.into_iter().cloned().collect::<Vec<_>>()),
    );
}

/// The leader's service checks at fakeintake: (component, status) pairs, with the
/// tags of the first one seen for `component:<of>`.
fn service_checks(cp: &ControlPlane, of: &str) -> (BTreeSet<(String, i64)>, Vec<String>) {
    let checks = cp.intake("checks");
    let mut seen = BTreeSet::new();
    let mut of_tags = Vec::new();
    for c in checks
        .iter()
        .filter(|c| c["check"] == "kube_apiserver_controlplane.up")
    {
        let tags: Vec<String> = c["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect();
        let component = tags
            .iter()
            .find_map(|t| t.strip_prefix("component:"))
            .unwrap_or("")
            .to_owned();
        if component == of && of_tags.is_empty() {
            of_tags = tags.clone();
        }
        seen.insert((component, c["status"].as_i64().unwrap()));
    }
    (seen, of_tags)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datadogs_parser_reads_the_corpus_as_written() {
    let all = cases();
    let with_cluster = pick(&all, WITH_CLUSTER);
    let without_cluster = pick(&all, WITHOUT_CLUSTER);
    let cp = ControlPlane::start();
    let client = cp.client().await;
    for ns in ["shop", "frontend", "jobs"] {
        create_namespace(&client, ns).await;
    }
    let data = cp.data_dir("replica-0");
    // A long linger gathers each run's events into one batch, as the corpus
    // bundles them (bundles form per batch).
    let linger = ("EVRELAY_SHIP_FLUSH_INTERVAL_MS", "3000");
    // The host of events that name no node, as the corpus expects it.
    let host = ("DD_HOSTNAME", support::golden::HOSTNAME);

    // Run 1: created first, listed at start.
    let mut ours = BTreeSet::new();
    for case in &with_cluster {
        ours.extend(create(&client, case).await);
    }
    let held = ours.len();
    // An event the corpus does not describe, as the API server's own are not: the
    // comparison reads the test's own events only.
    support::create_event(
        &client,
        "default",
        "bystander",
        "Started",
        "not the corpus'",
    )
    .await;
    // The corpus' `config.tags` of these cases, given as a Cluster Agent user
    // gives them: the Agent's own variable, split on whitespace.
    let mut evrelay = cp.spawn_evrelay_with(
        &data,
        &[
            ("DD_CLUSTER_NAME", "prod"),
            ("DD_TAGS", "env:prod  team:platform"),
            linger,
            host,
        ],
    );
    assert!(
        eventually(DRAIN, || delivered_ours(&cp, &ours) >= held).await,
        "run 1 not delivered; log:\n{}",
        evrelay.log()
    );
    let expected = sorted(
        with_cluster
            .iter()
            .flat_map(|c| c.expected.iter().map(comparable)),
    );
    assert_same(
        &received(&cp, &ours),
        &expected,
        "run 1: Datadog read other events",
    );
    // From ComponentStatus, the Cluster Agent's default: one check per component;
    // nothing runs a scheduler or a controller manager here.
    let (checks, tags) = service_checks(&cp, "etcd-0");
    for expected in [("etcd-0", 0), ("scheduler", 2), ("controller-manager", 2)] {
        assert!(
            checks.contains(&(expected.0.into(), expected.1)),
            "{expected:?} not among the control-plane checks: {checks:?}"
        );
    }
    for tag in ["kube_cluster_name:prod", "env:prod", "team:platform"] {
        assert!(tags.contains(&tag.to_owned()), "{tag} missing: {tags:?}");
    }
    assert!(evrelay.terminate().success());

    // Run 2: created while evrelay is down, delivered by the resumed watch (every
    // update is an occurrence), deflate-compressed.
    let mut occurrences = 0;
    for case in &without_cluster {
        ours.extend(create(&client, case).await);
        occurrences += case.events.len();
    }
    let before = delivered_ours(&cp, &ours);
    let mut evrelay = cp.spawn_evrelay_with(
        &data,
        &[
            linger,
            host,
            ("EVRELAY_DATADOG_COMPRESSION", "deflate"),
            ("EVRELAY_DATADOG_USE_COMPONENT_STATUS", "false"),
        ],
    );
    assert!(
        eventually(DRAIN, || delivered_ours(&cp, &ours) >= before + occurrences).await,
        "run 2 not delivered; log:\n{}",
        evrelay.log()
    );
    let expected = sorted(
        with_cluster
            .iter()
            .chain(&without_cluster)
            .flat_map(|c| c.expected.iter().map(comparable)),
    );
    assert_same(
        &received(&cp, &ours),
        &expected,
        "run 2: Datadog read other events",
    );
    // From /readyz when ComponentStatus is not used.
    let from_readyz = || {
        let (checks, _) = service_checks(&cp, "apiserver");
        checks.contains(&("apiserver".into(), 0)) && checks.contains(&("etcd".into(), 0))
    };
    assert!(
        eventually(DRAIN, from_readyz).await,
        "no healthy checks from /readyz: {:?}",
        service_checks(&cp, "apiserver").0
    );
    assert!(evrelay.terminate().success());
    assert_eq!(
        cp.event_requests("list"),
        1,
        "run 2 resumed the watch without a LIST"
    );

    // Run 3: the same events as logs, from a fresh journal (one LIST of all), but
    // not those of namespace `jobs` (journaled, counted as filtered, not sent).
    let fresh = cp.data_dir("logs");
    let mut evrelay = cp.spawn_evrelay_with(
        &fresh,
        &[
            ("DD_CLUSTER_NAME", "prod"),
            ("EVRELAY_DATADOG_OUTPUT", "logs"),
            ("EVRELAY_LEADER_ENABLED", "false"),
            ("EVRELAY_EVENTS_NAMESPACES_EXCLUDE", "jobs, kube-*"),
        ],
    );
    // The logs about the test's own events (not the API server's).
    let our_logs = |cp: &ControlPlane| -> Vec<Value> {
        cp.intake("logs")
            .into_iter()
            .filter(|l| {
                l["ddtags"]
                    .as_str()
                    .unwrap_or("")
                    .split(',')
                    .filter_map(|t| t.strip_prefix("evrelay_id:")?.rsplit_once('.'))
                    .any(|(uid, _)| ours.contains(uid))
            })
            .collect()
    };
    let names = |namespace_is_jobs: bool| -> usize {
        with_cluster
            .iter()
            .chain(&without_cluster)
            .flat_map(|c| &c.events)
            .filter(|e| (e["metadata"]["namespace"] == "jobs") == namespace_is_jobs)
            .map(|e| e["metadata"]["name"].as_str().unwrap())
            .collect::<BTreeSet<_>>()
            .len()
    };
    let (distinct, in_jobs) = (names(false), names(true));
    assert!(in_jobs > 0, "the corpus has an event in jobs");
    assert!(
        eventually(DRAIN, || our_logs(&cp).len() >= distinct).await,
        "logs not delivered; log:\n{}",
        evrelay.log()
    );
    let filtered = async || {
        let (_, metrics) = evrelay.admin_get("/metrics").await;
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix("evrelay_events_filtered_total ")?
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(0.0)
    };
    let counted = filtered().await;
    assert_eq!(counted as usize, in_jobs, "filtered events not counted");
    assert!(evrelay.terminate().success());
    let logs = our_logs(&cp);
    assert_eq!(logs.len(), distinct, "one log per event, none from jobs");
    assert!(
        !logs.iter().any(|l| l["ddtags"]
            .as_str()
            .unwrap_or("")
            .contains("kube_namespace:jobs")),
        "an excluded namespace was sent"
    );
    let journaled = cp.dump(&fresh);
    assert_eq!(
        journaled
            .iter()
            .filter(|r| r["namespace"] == "jobs")
            .count(),
        in_jobs,
        "filtered events must still be journaled"
    );
    let oom = logs
        .iter()
        .find(|l| l["message"] == "System OOM encountered, victim process: java, pid: 4242")
        .expect("the OOM log");
    assert_eq!(oom["ddsource"], "kubernetes");
    assert_eq!(oom["service"], "kubernetes");
    assert_eq!(oom["status"], "warning");
    assert_eq!(oom["hostname"], "node-c-prod");
    assert_eq!(oom["timestamp"], 1_795_341_720_000_i64);
    let tags: Vec<&str> = oom["ddtags"].as_str().unwrap().split(',').collect();
    for tag in [
        "event_reason:SystemOOM",
        "kube_kind:Node",
        "kube_cluster_name:prod",
    ] {
        assert!(tags.contains(&tag), "{tag} missing: {tags:?}");
    }
    assert!(
        logs.iter()
            .any(|l| l["message"].as_str().unwrap_or("").contains("😞")),
        "non-Latin text mangled in logs"
    );
}

/// The intake is reached through the proxy named by the standard variables
/// (`HTTP_PROXY` here; `HTTPS_PROXY` for the https sites), as operators behind an
/// egress proxy configure it: `DD_URL` names a host that does not resolve, so only
/// the proxy can deliver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_intake_is_reached_through_the_standard_proxy_variables() {
    let cp = ControlPlane::start();
    let client = cp.client().await;
    create_namespace(&client, "proxied").await;
    // The fault-injecting intake forwards what it receives to fakeintake: as a plain
    // HTTP proxy it gets `POST http://datadog.invalid/intake/` and passes it on.
    let proxy = support::faulty::FaultyIntake::start(cp.dd_url()).await;
    let uid = support::create_event(&client, "proxied", "api-0", "Started", "via proxy").await;
    let data = cp.data_dir("replica-0");
    let proxy_url = proxy.url();
    let mut evrelay = cp.spawn_evrelay_with(
        &data,
        &[
            ("DD_URL", "http://datadog.invalid"),
            ("HTTP_PROXY", &proxy_url),
            ("NO_PROXY", "127.0.0.1,localhost"),
        ],
    );
    assert!(
        eventually(DRAIN, || delivered_uids(&cp).contains(&uid)).await,
        "nothing came through the proxy; log:\n{}",
        evrelay.log()
    );
    assert!(
        proxy
            .hits()
            .iter()
            .any(|h| h.path == "/intake/" && h.status == 200),
        "the proxy saw no intake request"
    );
    assert!(evrelay.terminate().success());
}
