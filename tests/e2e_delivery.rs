//! The delivery contract under faults, against the real kube-apiserver and
//! Datadog's fakeintake. Every test counts by event uid at the intake: created,
//! delivered, duplicated, lost; and prints a `figures:` line for the record.

mod support;

use std::time::Duration;

use support::faulty::{Fault, FaultyIntake};
use support::{
    ControlPlane, Stream, create_event, create_namespace, delivered_uids, eventually, tally,
};

const DRAIN: Duration = Duration::from_secs(90);

/// kill -9 at random instants, 20 times, while events stream in: nothing lost, at
/// most one batch resent per kill, and no LIST after any restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_loses_nothing() {
    const KILLS: usize = 20;
    const MAX_EVENTS: &str = "50";
    let cp = ControlPlane::start();
    let client = cp.client().await;
    create_namespace(&client, "crash").await;
    let data = cp.data_dir("replica-0");
    let env = [
        ("EVRELAY_SHIP_MAX_EVENTS", MAX_EVENTS),
        ("EVRELAY_SHIP_FLUSH_INTERVAL_MS", "50"),
    ];

    let stream = Stream::start(client.clone(), "crash", Duration::from_millis(25));
    // The first run gets through its initial list before the first kill.
    let mut evrelay = cp.spawn_evrelay_with(&data, &env);
    assert!(
        eventually(DRAIN, || !cp.intake_events().is_empty()).await,
        "nothing delivered before the first kill; log:\n{}",
        evrelay.log()
    );
    for _ in 0..KILLS {
        let pause = Duration::from_millis(200 + fastrand::u64(0..1300));
        tokio::time::sleep(pause).await; // a random instant, not a synchronisation
        evrelay.kill9();
        evrelay = cp.spawn_evrelay_with(&data, &env);
    }
    let created = stream.stop().await;
    assert!(
        eventually(DRAIN, || tally(&created, &delivered_uids(&cp)).lost == 0).await,
        "events lost; log:\n{}",
        evrelay.log()
    );
    assert!(evrelay.terminate().success());

    let t = tally(&created, &delivered_uids(&cp));
    let lists = cp.event_requests("list");
    eprintln!("figures: crash-loop kills={KILLS} {t:?} event_lists={lists}");
    assert_eq!(t.lost, 0);
    let bound = KILLS * MAX_EVENTS.parse::<usize>().unwrap();
    assert!(
        t.duplicated <= bound,
        "{} duplicates > {bound}",
        t.duplicated
    );
    assert_eq!(lists, 1, "a restart listed events");
}

/// The intake refuses connections, then answers 503, then 429 with Retry-After,
/// while events keep coming: nothing lost, and the backlog drains in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_outage_loses_nothing_and_drains_in_order() {
    const RETRY_AFTER: u64 = 3;
    let cp = ControlPlane::start();
    let client = cp.client().await;
    create_namespace(&client, "outage").await;
    let mut intake = FaultyIntake::start(cp.dd_url()).await;
    let data = cp.data_dir("replica-0");
    let url = intake.url();
    // Unbundled: one Datadog event per occurrence, so arrival order is creation
    // order (bundles group a batch by object).
    let mut evrelay = cp.spawn_evrelay_with(
        &data,
        &[
            ("DD_URL", &url),
            ("EVRELAY_SHIP_MAX_BACKOFF_SECONDS", "2"),
            ("EVRELAY_EVENTS_MODE", "unbundled"),
            (
                "EVRELAY_EVENTS_COLLECTED_EVENT_TYPES",
                r#"[{"kind":"Pod"}]"#,
            ),
        ],
    );

    // The watch is established (an event went through) before the stream starts, so
    // every streamed event comes through the watch, in resourceVersion order; a
    // LIST would return them ordered by name.
    let first = create_event(&client, "outage", "api-0", "Ready", "ready").await;
    assert!(
        eventually(DRAIN, || delivered_uids(&cp).contains(&first)).await,
        "evrelay never delivered; log:\n{}",
        evrelay.log()
    );
    let stream = Stream::start(client.clone(), "outage", Duration::from_millis(50));
    for fault in [
        Fault::Refuse,
        Fault::Status(503),
        Fault::TooMany {
            retry_after_secs: RETRY_AFTER,
        },
    ] {
        intake.set(fault.clone()).await;
        let before = intake.hits().len();
        // Each fault lasts until evrelay has met it a few times (a refused connection
        // counts as a hit too).
        let met = eventually(Duration::from_secs(30), || {
            intake.hits().len() >= before + 3
        })
        .await;
        assert!(met, "evrelay stopped trying during {fault:?}");
    }
    intake.set(Fault::Pass).await;
    let created = stream.stop().await;
    assert!(
        eventually(DRAIN, || tally(&created, &delivered_uids(&cp)).lost == 0).await,
        "backlog not drained; log:\n{}",
        evrelay.log()
    );
    assert!(evrelay.terminate().success());

    // Order and counts over the streamed events (the intake also holds the first).
    let created_set: std::collections::HashSet<&String> = created.iter().collect();
    let delivered: Vec<String> = delivered_uids(&cp)
        .into_iter()
        .filter(|u| created_set.contains(u))
        .collect();
    let t = tally(&created, &delivered);
    eprintln!(
        "figures: intake-outage {t:?} requests={}",
        intake.hits().len()
    );
    assert_eq!(t.lost, 0);
    assert_eq!(t.duplicated, 0, "an outage must not duplicate");
    assert!(delivered == created, "not delivered in creation order");

    // Retry-After honoured within ±10 %: the request after each 429 came when asked
    // (events only: the leader's service checks share the intake).
    let hits: Vec<_> = intake
        .hits()
        .into_iter()
        .filter(|h| h.path == "/intake/")
        .collect();
    for pair in hits.windows(2) {
        if pair[0].status == 429 {
            let gap = pair[1].at - pair[0].at;
            assert!(
                gap >= Duration::from_millis(RETRY_AFTER * 1000 * 9 / 10)
                    && gap <= Duration::from_millis(RETRY_AFTER * 1000 * 11 / 10),
                "retried {gap:?} after a 429 asking for {RETRY_AFTER} s"
            );
        }
    }
    assert!(
        hits.iter().any(|h| h.status == 429),
        "the 429 phase was never seen"
    );
    assert!(
        hits.iter().any(|h| h.status == 503),
        "the 503 phase was never seen"
    );
}

/// The stored resourceVersion expires (etcd compacted, no watch cache): exactly one
/// relist on restart, nothing shipped twice, a gap marker in the journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_relists_once_with_a_gap() {
    let cp = ControlPlane::start_with("--watch-cache=false");
    let client = cp.client().await;
    create_namespace(&client, "expiry").await;
    let mut created = Vec::new();
    for i in 0..5 {
        created
            .push(create_event(&client, "expiry", "api-0", "Before", &format!("before {i}")).await);
    }
    let data = cp.data_dir("replica-0");
    let mut first = cp.spawn_evrelay(&data);
    assert!(
        eventually(DRAIN, || tally(&created, &delivered_uids(&cp)).lost == 0).await,
        "log:\n{}",
        first.log()
    );
    assert!(first.terminate().success());
    assert_eq!(cp.event_requests("list"), 1);

    // Move etcd on (other objects), add events, and compact past the stored token.
    for i in 0..5 {
        created.push(
            create_event(
                &client,
                "expiry",
                "api-0",
                "WhileDown",
                &format!("down {i}"),
            )
            .await,
        );
    }
    create_namespace(&client, "churn").await;
    let revision = cp.compact_etcd().await;

    let mut second = cp.spawn_evrelay(&data);
    assert!(
        eventually(DRAIN, || tally(&created, &delivered_uids(&cp)).lost == 0).await,
        "not delivered after the relist; log:\n{}",
        second.log()
    );
    assert!(second.terminate().success());

    let t = tally(&created, &delivered_uids(&cp));
    let lists = cp.event_requests("list");
    eprintln!("figures: expired-token compacted_at={revision} {t:?} event_lists={lists}");
    assert_eq!(t.lost, 0);
    assert_eq!(t.duplicated, 0);
    assert_eq!(lists, 2, "exactly one relist after the expiry");
    let gaps: Vec<_> = cp
        .dump(&data)
        .into_iter()
        .filter(|r| r["kind"] == "gap")
        .collect();
    assert_eq!(gaps.len(), 1, "one gap marker: {gaps:?}");
    assert_eq!(gaps[0]["reason"], "ResumeTokenExpired");
    assert!(
        second.log().contains("resume token expired"),
        "the relist is logged"
    );
}

/// Odd events: each is shipped (or dead-lettered), nothing panics, and the events
/// behind them still flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_never_stops_the_stream() {
    use k8s_openapi::api::core::v1::{Event, ObjectReference};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
    use kube::api::{Api, PostParams};

    let cp = ControlPlane::start();
    let client = cp.client().await;
    create_namespace(&client, "odd").await;
    let data = cp.data_dir("replica-0");
    let mut evrelay = cp.spawn_evrelay(&data);

    let post = async |event: Event| -> String {
        let ns = event.metadata.namespace.clone().unwrap();
        Api::<Event>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &event)
            .await
            .unwrap_or_else(|e| {
                panic!("API server refused {:?}: {e}", event.metadata.generate_name)
            })
            .metadata
            .uid
            .unwrap()
    };
    let base = |name: &str, ns: &str, kind: &str| Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}.")),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            kind: Some(kind.into()),
            name: Some(name.into()),
            namespace: (kind != "Node").then(|| ns.to_owned()),
            ..Default::default()
        },
        ..Default::default()
    };
    let huge = "x".repeat(1024 * 1024);
    let mut odd = Vec::new();
    odd.push((
        "empty reason and message",
        post(base("empty", "odd", "Pod")).await,
    ));
    odd.push((
        "1 MiB message",
        post(Event {
            message: Some(huge),
            reason: Some("Huge".into()),
            ..base("huge", "odd", "Pod")
        })
        .await,
    ));
    odd.push((
        "unusual unicode",
        post(Event {
            reason: Some("Ünïcødé".into()),
            message: Some("RTL \u{202e}txet\u{202c}, zero\u{200b}width, emoji 🚀🔥, CJK 事件, combining e\u{301}".into()),
            ..base("unicode", "odd", "Pod")
        })
        .await,
    ));
    odd.push((
        "unknown involved kind",
        post(Event {
            reason: Some("Odd".into()),
            ..base("thing", "odd", "Flux.Capacitor")
        })
        .await,
    ));
    odd.push((
        "eventTime only",
        post(Event {
            reason: Some("Scheduled".into()),
            action: Some("Binding".into()),
            reporting_component: Some("default-scheduler".into()),
            reporting_instance: Some("default-scheduler-1".into()),
            event_time: Some(MicroTime(jiff::Timestamp::now())),
            ..base("micro", "odd", "Pod")
        })
        .await,
    ));
    odd.push((
        "cluster-scoped object",
        post(Event {
            reason: Some("NodeNotReady".into()),
            ..base("node-1", "default", "Node")
        })
        .await,
    ));
    // And an ordinary event behind them all.
    let last = create_event(&client, "odd", "api-0", "Started", "after the odd ones").await;

    let mut all: Vec<String> = odd.iter().map(|(_, uid)| uid.clone()).collect();
    all.push(last.clone());
    assert!(
        eventually(DRAIN, || tally(&all, &delivered_uids(&cp)).lost == 0).await,
        "odd events not shipped; log:\n{}",
        evrelay.log()
    );
    assert!(
        evrelay.is_running(),
        "evrelay died on odd input; log:\n{}",
        evrelay.log()
    );
    assert!(evrelay.terminate().success());
    assert!(!evrelay.log().contains("panicked"), "a panic in the log");

    let events = cp.intake_events();
    let by_uid = |uid: &str| {
        events
            .iter()
            .find(|e| e.event_uids().contains(&uid))
            .expect("delivered")
    };
    let huge_event = by_uid(&odd[1].1);
    assert!(
        huge_event.msg_text.len() < 8192,
        "the 1 MiB message was not cut"
    );
    assert!(huge_event.msg_text.contains("…[truncated by evrelay]"));
    assert!(
        by_uid(&odd[2].1).msg_text.contains("🚀🔥"),
        "unicode was mangled"
    );
    assert_eq!(by_uid(&odd[5].1).msg_title, "Node node-1: NodeNotReady");
    let t = tally(&all, &delivered_uids(&cp));
    eprintln!("figures: bad-input {t:?}");
    assert_eq!(t.duplicated, 0);
}

/// The journal's byte cap is reached while the intake is down: the oldest pending
/// events are dropped, counted and marked; evrelay keeps watching; the newest
/// events are delivered when the intake returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_cap_drops_oldest_and_keeps_watching() {
    let cp = ControlPlane::start();
    let client = cp.client().await;
    create_namespace(&client, "cap").await;
    let mut intake = FaultyIntake::start(cp.dd_url()).await;
    intake.set(Fault::Status(503)).await;
    let data = cp.data_dir("replica-0");
    let url = intake.url();
    let mut evrelay = cp.spawn_evrelay_with(
        &data,
        &[
            ("DD_URL", &url),
            ("EVRELAY_JOURNAL_MAX_BYTES", "65536"),
            ("EVRELAY_SHIP_MAX_BACKOFF_SECONDS", "1"),
        ],
    );
    let mut created = Vec::new();
    for i in 0..300 {
        let message = format!("{i} {}", "y".repeat(600));
        created.push(create_event(&client, "cap", "api-0", "Filling", &message).await);
    }
    let newest = created.last().unwrap().clone();
    assert!(
        evrelay.is_running(),
        "evrelay died at the cap; log:\n{}",
        evrelay.log()
    );
    intake.set(Fault::Pass).await;
    assert!(
        eventually(DRAIN, || delivered_uids(&cp).contains(&newest)).await,
        "the newest event never arrived: the watch was held up; log:\n{}",
        evrelay.log()
    );
    assert!(evrelay.terminate().success());

    let meta = cp.dump_meta(&data);
    let dropped = meta["counters"]["dropped_pending"].as_u64().unwrap();
    let dump = cp.dump(&data);
    let gaps = dump
        .iter()
        .filter(|r| r["kind"] == "gap" && r["reason"] == "JournalFull")
        .count();
    let t = tally(&created, &delivered_uids(&cp));
    eprintln!("figures: disk-cap {t:?} dropped_pending={dropped} gap_markers={gaps}");
    assert!(dropped > 0, "the cap was never reached: {meta}");
    assert!(gaps > 0, "no gap marker for the drops");
    // Every loss is a counted drop. (A drop can still arrive: the batch the shipper
    // held in memory while the intake was down is sent when it returns.)
    assert!(t.lost > 0);
    assert!(
        t.lost as u64 <= dropped,
        "{} lost but only {dropped} drops counted",
        t.lost
    );
    assert!(meta["counters"]["record_bytes"].as_u64().unwrap() <= 65536);
}

/// Datadog's error taxonomy, from an intake that judges each body: 413 → sent in
/// halves; 400 → bisected down to the bad event, which is dead-lettered while the
/// events bundled with it are delivered; 403 → shipping pauses without dropping
/// anything, and resumes once the key is accepted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_errors_split_bisect_dead_letter_and_pause() {
    let cp = ControlPlane::start();
    let client = cp.client().await;
    create_namespace(&client, "judged").await;
    let mut intake = FaultyIntake::start(cp.dd_url()).await;
    let judge = Fault::Judge {
        reject: "POISON".into(),
        max_events: 3,
    };
    intake.set(judge.clone()).await;

    // 20 events on 10 pods, listed in one batch: each pod's two events are bundled,
    // and two bundles hold a poisoned event beside a good one.
    let (mut good, mut poisoned) = (Vec::new(), Vec::new());
    for i in 0..20 {
        let bad = i == 7 || i == 13;
        let message = if bad {
            format!("POISON {i}")
        } else {
            format!("ok {i}")
        };
        let uid = create_event(
            &client,
            "judged",
            &format!("p-{}", i % 10),
            "Judged",
            &message,
        )
        .await;
        if bad {
            poisoned.push(uid)
        } else {
            good.push(uid)
        }
    }
    let data = cp.data_dir("replica-0");
    let url = intake.url();
    let mut evrelay = cp.spawn_evrelay_with(
        &data,
        &[("DD_URL", &url), ("EVRELAY_SHIP_MAX_BACKOFF_SECONDS", "2")],
    );
    let metric = async |evrelay: &support::Evrelay, name: &str| -> f64 {
        let (_, text) = evrelay.admin_get("/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(
        eventually(DRAIN, || tally(&good, &delivered_uids(&cp)).lost == 0).await,
        "good events not delivered; log:\n{}",
        evrelay.log()
    );
    assert_eq!(
        metric(&evrelay, "evrelay_events_dead_lettered_total").await,
        2.0
    );
    let delivered = delivered_uids(&cp);
    assert!(
        poisoned.iter().all(|p| !delivered.contains(p)),
        "a poisoned event reached Datadog"
    );
    assert_eq!(
        tally(&good, &delivered).duplicated,
        0,
        "splits resent events"
    );
    let statuses: Vec<u16> = intake
        .hits()
        .iter()
        .filter(|h| h.path == "/intake/")
        .map(|h| h.status)
        .collect();
    assert!(statuses.contains(&413), "never split: {statuses:?}");
    assert!(statuses.contains(&400), "never bisected: {statuses:?}");

    // The key is refused: events wait in the journal, none is dead-lettered.
    intake.set(Fault::Status(403)).await;
    let before = intake.hits().len();
    let mut later = Vec::new();
    for i in 0..3 {
        later.push(create_event(&client, "judged", "q-0", "Later", &format!("later {i}")).await);
    }
    assert!(
        eventually(DRAIN, || intake.hits()[before..]
            .iter()
            .filter(|h| h.path == "/intake/" && h.status == 403)
            .count()
            >= 2)
        .await,
        "no retry while forbidden"
    );
    assert_eq!(tally(&later, &delivered_uids(&cp)).lost, 3);
    intake.set(judge).await;
    assert!(
        eventually(DRAIN, || tally(&later, &delivered_uids(&cp)).lost == 0).await,
        "not resumed after the 403s; log:\n{}",
        evrelay.log()
    );
    assert_eq!(
        metric(&evrelay, "evrelay_events_dead_lettered_total").await,
        2.0,
        "a 403 dead-lettered events"
    );
    assert!(evrelay.terminate().success());
    eprintln!("figures: intake-errors statuses={statuses:?}");
}

/// Every occurrence from both of Kubernetes' recorders is shipped exactly once:
/// a core/v1 event whose `count` is bumped, and an events.k8s.io/v1 event whose
/// `series` is patched (kube-scheduler's way), counted by (uid, resourceVersion)
/// at the intake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_occurrence_from_both_recorders_is_shipped_once() {
    use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference};
    use k8s_openapi::api::events::v1::{Event as NewEvent, EventSeries};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
    use kube::api::{Api, Patch, PatchParams, PostParams};

    const OCCURRENCES: i32 = 10;
    let cp = ControlPlane::start();
    let client = cp.client().await;
    create_namespace(&client, "recorders").await;
    let data = cp.data_dir("replica-0");
    let mut evrelay = cp.spawn_evrelay(&data);
    // The watch is established (an event went through) before the occurrences.
    let first = create_event(&client, "recorders", "api-0", "Ready", "ready").await;
    assert!(
        eventually(DRAIN, || delivered_uids(&cp).contains(&first)).await,
        "evrelay never delivered; log:\n{}",
        evrelay.log()
    );
    let id = |meta: &ObjectMeta| {
        format!(
            "{}.{}",
            meta.uid.as_deref().unwrap(),
            meta.resource_version.as_deref().unwrap()
        )
    };
    let pod = ObjectReference {
        kind: Some("Pod".into()),
        name: Some("web-0".into()),
        namespace: Some("recorders".into()),
        uid: Some("uid-recorders-web-0".into()),
        ..Default::default()
    };
    let mut expected: Vec<String> = Vec::new();

    // events.k8s.io/v1: created once, then its series patched 2..=10.
    let new_api = Api::<NewEvent>::namespaced(client.clone(), "recorders");
    let created = new_api
        .create(
            &PostParams::default(),
            &NewEvent {
                metadata: ObjectMeta {
                    name: Some("web-0.scheduling".into()),
                    ..Default::default()
                },
                event_time: Some(MicroTime(jiff::Timestamp::now())),
                reason: Some("FailedScheduling".into()),
                note: Some("0/3 nodes are available".into()),
                type_: Some("Warning".into()),
                action: Some("Scheduling".into()),
                reporting_controller: Some("default-scheduler".into()),
                reporting_instance: Some("default-scheduler-e2e".into()),
                regarding: Some(pod.clone()),
                ..Default::default()
            },
        )
        .await
        .expect("creating an events.k8s.io/v1 event");
    expected.push(id(&created.metadata));
    let name = created.metadata.name.clone().unwrap();
    for count in 2..=OCCURRENCES {
        let series = EventSeries {
            count,
            last_observed_time: MicroTime(jiff::Timestamp::now()),
        };
        let patched = new_api
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "series": series })),
            )
            .await
            .expect("patching the series");
        expected.push(id(&patched.metadata));
    }

    // core/v1: created with count 1, then its count bumped to 10.
    let core_api = Api::<CoreEvent>::namespaced(client.clone(), "recorders");
    let now = || Time(jiff::Timestamp::now());
    let created = core_api
        .create(
            &PostParams::default(),
            &CoreEvent {
                metadata: ObjectMeta {
                    generate_name: Some("web-0.".into()),
                    ..Default::default()
                },
                involved_object: pod,
                reason: Some("BackOff".into()),
                message: Some("Back-off restarting failed container".into()),
                type_: Some("Warning".into()),
                count: Some(1),
                first_timestamp: Some(now()),
                last_timestamp: Some(now()),
                source: Some(k8s_openapi::api::core::v1::EventSource {
                    component: Some("kubelet".into()),
                    host: Some("node-1".into()),
                }),
                ..Default::default()
            },
        )
        .await
        .expect("creating a core/v1 event");
    expected.push(id(&created.metadata));
    let name = created.metadata.name.clone().unwrap();
    for count in 2..=OCCURRENCES {
        let patch = serde_json::json!({ "count": count, "lastTimestamp": now() });
        let patched = core_api
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .expect("bumping the count");
        expected.push(id(&patched.metadata));
    }

    assert!(
        eventually(DRAIN, || tally(&expected, &support::delivered_ids(&cp))
            .lost
            == 0)
        .await,
        "not every occurrence arrived: {:?}; log:\n{}",
        tally(&expected, &support::delivered_ids(&cp)),
        evrelay.log()
    );
    assert!(evrelay.terminate().success());
    let delivered = support::delivered_ids(&cp);
    let per_recorder = |range: std::ops::Range<usize>| {
        let mine = &expected[range];
        let theirs: Vec<String> = delivered
            .iter()
            .filter(|d| mine.contains(d))
            .cloned()
            .collect();
        tally(mine, &theirs)
    };
    let (series, core) = (per_recorder(0..10), per_recorder(10..20));
    eprintln!("figures: occurrences events.k8s.io/v1 {series:?}; core/v1 {core:?}");
    for t in [series, core] {
        assert_eq!(t.created, OCCURRENCES as usize);
        assert_eq!(t.lost, 0);
        assert_eq!(t.duplicated, 0);
    }
    // The journal shows the series.
    let dump = cp.dump(&data);
    assert!(
        dump.iter().any(|r| r["series_count"] == OCCURRENCES),
        "dump shows no series: {dump:?}"
    );
}

/// A list of large events is read in pages of bounded bytes: 500 events of about
/// 300 KiB each (150 MB) are listed, journaled and shipped with evrelay's peak
/// RSS under the memory limit of the manifests (256 MiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_of_large_events_stays_under_the_memory_limit() {
    const EVENTS: usize = 500;
    const LIMIT_KIB: u64 = 256 * 1024;
    let cp = ControlPlane::start();
    let client = cp.client().await;
    create_namespace(&client, "large").await;
    let message = "x".repeat(300 * 1024);
    let mut created = Vec::new();
    for chunk in (0..EVENTS).collect::<Vec<_>>().chunks(10) {
        let batch = chunk.iter().map(|i| {
            let msg = format!("{i} {message}");
            let (client, pod) = (client.clone(), format!("big-{}", i % 7));
            async move { create_event(&client, "large", &pod, "Large", &msg).await }
        });
        created.extend(futures::future::join_all(batch).await);
    }

    let data = cp.data_dir("replica-0");
    let mut evrelay = cp.spawn_evrelay(&data);
    assert!(
        eventually(Duration::from_secs(180), || tally(
            &created,
            &delivered_uids(&cp)
        )
        .lost
            == 0)
        .await,
        "not all delivered; log:\n{}",
        evrelay.log()
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", evrelay.pid())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    assert!(evrelay.terminate().success());
    let t = tally(&created, &delivered_uids(&cp));
    eprintln!(
        "figures: large-list events={EVENTS} of 300 KiB, peak RSS {} MiB {t:?}",
        peak_kib / 1024
    );
    assert_eq!(t.lost, 0);
    assert!(
        peak_kib < LIMIT_KIB,
        "peak RSS {peak_kib} KiB passes the manifests' 256 MiB limit"
    );
}
