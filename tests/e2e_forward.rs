//! End to end, against a real kube-apiserver and Datadog's fakeintake: every event
//! created reaches the intake exactly once, and the journal says so.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use support::{ControlPlane, create_event, create_namespace, delivered_uids, eventually};

const NAMESPACES: [&str; 3] = ["shop", "payments", "search"];
const OBJECTS: [&str; 2] = ["api-0", "worker-0"];

/// 100 events over 3 namespaces × 2 involved objects: 50 exist before evrelay starts
/// (it must list them) and 50 are created while it watches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_every_event_exactly_once() {
    let started = Instant::now();
    let cp = ControlPlane::start();
    let client = cp.client().await;
    for ns in NAMESPACES {
        create_namespace(&client, ns).await;
    }
    let mut created = BTreeSet::new();
    let mut create = async |i: usize| {
        let ns = NAMESPACES[i % 3];
        let pod = OBJECTS[(i / 3) % 2];
        let uid = create_event(&client, ns, pod, "Started", &format!("event {i}")).await;
        assert!(created.insert(uid), "API server returned a uid twice");
    };
    for i in 0..50 {
        create(i).await;
    }
    // One the test does not count among its own, as the API server's own events
    // are not: it must be found through the cluster, not the test's bookkeeping.
    create_event(&client, "default", "bystander", "Started", "not the test's").await;

    let data = cp.data_dir("replica-0");
    let mut evrelay = cp.spawn_evrelay(&data);
    for i in 50..100 {
        create(i).await;
    }
    assert_eq!(created.len(), 100);

    let delivered = |cp: &ControlPlane| -> BTreeMap<String, usize> {
        let mut by_uid = BTreeMap::new();
        for uid in delivered_uids(cp) {
            *by_uid.entry(uid).or_insert(0) += 1;
        }
        by_uid
    };
    let reached = |uids: &BTreeSet<String>| {
        let at_intake = delivered(&cp);
        uids.iter().all(|u| at_intake.contains_key(u))
    };
    let all_there = eventually(Duration::from_secs(60), || reached(&created)).await;
    assert!(
        all_there,
        "not all events reached the intake; evrelay log:\n{}",
        evrelay.log()
    );
    // Everything in the cluster: the 100 and any event the API server recorded of
    // its own (support::cluster_event_uids). evrelay ships those too.
    let everything = support::cluster_event_uids(&client).await;
    assert!(everything.is_superset(&created), "created events missing");
    let all_there = eventually(Duration::from_secs(60), || reached(&everything)).await;
    assert!(
        all_there,
        "the API server's own events did not reach the intake; evrelay log:\n{}",
        evrelay.log()
    );
    let total = everything.len();
    let world = total - created.len();

    // The admin endpoint tells the same story, and never shows the key.
    let admin = evrelay.admin_url().await;
    let http = reqwest::Client::new();
    let get = async |path: &str| {
        let r = http.get(format!("{admin}{path}")).send().await.expect(path);
        (r.status().as_u16(), r.text().await.expect(path))
    };
    let (code, metrics) = get("/metrics").await;
    assert_eq!(code, 200);
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{metrics}"))
    };
    let counts = [
        "evrelay_events_shipped_total",
        "evrelay_events_journaled_total",
        "evrelay_journal_pending_records",
        "evrelay_delivery_lag_seconds_count",
    ]
    .map(value);
    let n = total as f64;
    if counts != [n, n, 0.0, n] {
        let dump = cp
            .evrelay(&data)
            .args(["dump", "--admin", &admin])
            .output()
            .expect("evrelay dump --admin");
        panic!(
            "shipped, journaled, pending, lags: {counts:?}, not [{n}, {n}, 0, {n}] \
             (100 created, {world} more in the cluster)\n\
             created: {created:?}\ndelivered: {:?}\ndump:\n{}\nevrelay log:\n{}",
            delivered(&cp),
            String::from_utf8_lossy(&dump.stdout),
            evrelay.log()
        );
    }
    assert_eq!(value("evrelay_leader"), 1.0);
    assert_eq!(value("evrelay_watching"), 1.0);
    // fakeintake answers 200 (Datadog answers 202).
    assert!(value("evrelay_intake_requests_total{code=\"200\"}") >= 1.0);
    assert!(value("evrelay_token_mirror_age_seconds") < 30.0);
    assert!(
        !metrics.contains(support::TEST_API_KEY),
        "API key in /metrics"
    );
    assert_eq!(get("/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(get("/readyz").await, (200, "leader, watching\n".to_owned()));

    // `dump` of the running evrelay, through its admin endpoint.
    let dump_admin = |args: &[&str]| {
        let output = cp
            .evrelay(&data)
            .args(["dump", "--admin", &admin])
            .args(args)
            .output()
            .expect("evrelay dump --admin");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8")
    };
    let table = dump_admin(&["--format", "table", "--namespace", "shop", "--limit", "5"]);
    eprintln!("dump --admin … --format table --namespace shop --limit 5:\n{table}");
    assert_eq!(table.lines().count(), 6, "header + 5 rows:\n{table}");
    assert!(
        table
            .lines()
            .skip(1)
            .all(|l| l.contains(" shipped ") && l.contains("shop")),
        "{table}"
    );
    let shop = dump_admin(&["--namespace", "shop"]);
    assert_eq!(shop.lines().count(), 34, "events 0, 3, …, 99 are in shop");
    assert_eq!(dump_admin(&["--pending"]), "", "nothing pending");
    let meta: serde_json::Value =
        serde_json::from_str(&dump_admin(&["--meta"])).expect("meta JSON");
    assert_eq!(meta["shipped_through"]["datadog"], total);
    assert_eq!(meta["term"]["epoch"], 1);
    assert!(!meta.to_string().contains(support::TEST_API_KEY));

    // What a replay of the last hour would send, asked of the running evrelay.
    let output = cp
        .evrelay(&data)
        .args(["replay", "--admin", &admin, "--since", "1h", "--dry-run"])
        .output()
        .expect("evrelay replay --dry-run");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).lines().count(),
        total
    );
    assert_eq!(delivered_uids(&cp).len(), total, "a dry run sent something");

    let status = evrelay.terminate();
    assert!(
        status.success(),
        "evrelay exited with {status}; log:\n{}",
        evrelay.log()
    );

    // Exactly the events of the cluster, each once: no fewer, no more.
    let by_uid = delivered(&cp);
    let uids: BTreeSet<_> = by_uid.keys().cloned().collect();
    assert_eq!(
        uids, everything,
        "intake holds other events than the cluster's"
    );
    let duplicated: Vec<_> = by_uid.iter().filter(|&(_, n)| *n > 1).collect();
    assert!(
        duplicated.is_empty(),
        "duplicates at the intake: {duplicated:?}"
    );

    // Datadog's parser read the Cluster Agent's shape, bundled by default.
    let sample = cp
        .intake_events()
        .into_iter()
        .find(|e| e.event_uids().iter().any(|u| created.contains(*u)))
        .expect("events");
    assert_eq!(sample.source_type_name, "kubernetes");
    assert_eq!(sample.event_type, "kubernetes_apiserver");
    assert!(
        sample.msg_title.starts_with("Events from the Pod "),
        "{}",
        sample.msg_title
    );
    assert!(sample.msg_text.starts_with("%%% \n"), "{}", sample.msg_text);

    // The journal holds the same events, all shipped.
    let dump = cp.dump(&data);
    let events: Vec<_> = dump.iter().filter(|r| r["kind"] == "event").collect();
    assert_eq!(events.len(), total, "dump: {dump:#?}");
    assert!(
        events.iter().all(|r| r["state"] == "shipped"),
        "unshipped records in dump"
    );
    let journaled: BTreeSet<String> = events
        .iter()
        .map(|r| r["uid"].as_str().expect("uid").to_owned())
        .collect();
    assert_eq!(journaled, everything);

    // The API key stays out of logs and dump output.
    assert!(
        !evrelay.log().contains(support::TEST_API_KEY),
        "API key in the log"
    );
    assert!(
        !format!("{dump:?}").contains(support::TEST_API_KEY),
        "API key in dump"
    );

    // Replay the window again from the stopped evrelay's journal: each event once
    // more, tagged as replayed, and the journal unchanged.
    let output = cp
        .evrelay(&data)
        .args(["replay", "--since", "1h"])
        .output()
        .expect("evrelay replay");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("report");
    assert_eq!(report["events"], total, "{report}");
    assert_eq!(report["complete"], true);
    let replay_tag = format!("evrelay_replay:{}", report["replay_id"].as_str().unwrap());
    let all = cp.intake_events();
    let replayed: Vec<String> = all
        .iter()
        .filter(|e| e.tags.iter().flatten().any(|t| *t == replay_tag))
        .flat_map(|e| e.event_uids())
        .map(str::to_owned)
        .collect();
    assert_eq!(delivered_uids(&cp).len(), 2 * total);
    assert_eq!(replayed.len(), total, "each event replayed once");
    let replayed: BTreeSet<String> = replayed.into_iter().collect();
    assert_eq!(replayed, everything, "each event replayed once, tagged");
    assert_eq!(cp.dump_meta(&data)["shipped_through"]["datadog"], total);

    eprintln!(
        "e2e forward: {:.1?} wall time; 100 created, {world} more in the cluster",
        started.elapsed()
    );
}

/// A restart on the same disk resumes the watch from the journal: no LIST, nothing
/// resent, and events created while evrelay was down are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_without_list_or_duplicates() {
    let cp = ControlPlane::start();
    let client = cp.client().await;
    create_namespace(&client, "shop").await;
    let mut created = BTreeSet::new();
    for i in 0..10 {
        created
            .insert(create_event(&client, "shop", "api-0", "Pulled", &format!("before {i}")).await);
    }
    let reached = |uids: &BTreeSet<String>| {
        let at_intake: BTreeSet<String> = delivered_uids(&cp).into_iter().collect();
        at_intake.is_superset(uids)
    };
    let data = cp.data_dir("replica-0");
    let mut first = cp.spawn_evrelay(&data);
    assert!(
        eventually(Duration::from_secs(60), || reached(&created)).await,
        "first run did not deliver; log:\n{}",
        first.log()
    );
    assert!(first.terminate().success());
    let lists_before = cp.event_requests("list");
    assert_eq!(lists_before, 1, "the first start lists once");

    for i in 0..10 {
        created.insert(
            create_event(
                &client,
                "shop",
                "api-0",
                "Pulled",
                &format!("while down {i}"),
            )
            .await,
        );
    }
    let mut second = cp.spawn_evrelay(&data);
    for i in 0..10 {
        created
            .insert(create_event(&client, "shop", "api-0", "Pulled", &format!("after {i}")).await);
    }
    // The 30, and any event the API server recorded of its own.
    assert!(
        eventually(Duration::from_secs(60), || reached(&created)).await,
        "second run did not deliver; log:\n{}",
        second.log()
    );
    // (Counted before the test's own LIST of everything.)
    let lists_after = cp.event_requests("list");
    let everything = support::cluster_event_uids(&client).await;
    assert!(
        eventually(Duration::from_secs(60), || reached(&everything)).await,
        "the API server's own events did not reach the intake; log:\n{}",
        second.log()
    );
    assert!(second.terminate().success());

    let delivered = delivered_uids(&cp);
    let t = support::tally(&created.iter().cloned().collect::<Vec<_>>(), &delivered);
    assert_eq!(
        delivered.len(),
        everything.len(),
        "duplicates or extras at the intake: {t:?}; not created by the test: {:?}\nthe intake's events:\n{}\nboth runs' log:\n{}",
        delivered
            .iter()
            .filter(|u| !created.contains(*u))
            .collect::<Vec<_>>(),
        serde_json::to_string_pretty(&cp.intake_events()).unwrap(),
        second.log()
    );
    assert_eq!(delivered.into_iter().collect::<BTreeSet<_>>(), everything);
    assert_eq!(lists_after, lists_before, "the restart listed events");
}
