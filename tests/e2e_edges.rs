//! Hostile and slow peers, end to end: an intake that redirects, an intake that
//! takes longer than the request timeout, an admin client that sends half a
//! request. A real control plane, Datadog's fakeintake behind the tests' faulty
//! intake, evrelay as a process.

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use support::faulty::{Fault, FaultyIntake};
use support::{ControlPlane, create_event, create_namespace, delivered_uids, eventually, tally};

const DELIVERY: Duration = Duration::from_secs(90);

async fn create(client: &kube::Client, namespace: &str, from: usize, n: usize) -> Vec<String> {
    let mut uids = Vec::with_capacity(n);
    for i in from..from + n {
        let pod = format!("pod-{}", i % 5);
        uids.push(create_event(client, namespace, &pod, "Edge", &format!("edge {i}")).await);
    }
    uids
}

/// An intake answering 307, then 301, sends evrelay elsewhere: nothing follows
/// (the key never reaches the other host), nothing counts as shipped, and the
/// batch is delivered once the intake answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intake_that_redirects_gets_no_key_sent_elsewhere_and_nothing_counted() {
    let cp = ControlPlane::start();
    let client = cp.client().await;
    create_namespace(&client, "redirect").await;
    let mut intake = FaultyIntake::start(cp.dd_url()).await;
    // Where the redirects point: an intake of its own that forwards to
    // fakeintake, so a followed redirect would even look delivered.
    let elsewhere = FaultyIntake::start(cp.dd_url()).await;
    let url = intake.url();
    let data = cp.data_dir("replica-0");
    let mut evrelay = cp.spawn_evrelay_with(
        &data,
        &[("DD_URL", &url), ("EVRELAY_SHIP_MAX_BACKOFF_SECONDS", "1")],
    );
    let mut created = Vec::new();
    for (round, status) in [307u16, 301, 302, 308].into_iter().enumerate() {
        intake
            .set(Fault::Redirect {
                status,
                to: format!("{}/intake/", elsewhere.url()),
            })
            .await;
        created.extend(create(&client, "redirect", round * 10, 10).await);
        assert!(
            eventually(DELIVERY, || intake
                .hits()
                .iter()
                .filter(|h| h.status == status)
                .count()
                >= 2)
            .await,
            "no {status} answered; log:\n{}",
            evrelay.own_log()
        );
        assert!(
            elsewhere.hits().is_empty(),
            "a {status} was followed: {:?}",
            elsewhere.hits()
        );
        assert_eq!(
            evrelay.metric("evrelay_events_shipped_total").await,
            Some(0.0),
            "a {status} counted as shipped"
        );
    }
    assert!(
        evrelay.own_log().contains("not followed"),
        "the log says why"
    );
    intake.set(Fault::Pass).await;
    assert!(
        eventually(DELIVERY, || tally(&created, &delivered_uids(&cp)).lost == 0).await,
        "not delivered after the redirects stopped: {:?}; log:\n{}",
        tally(&created, &delivered_uids(&cp)),
        evrelay.own_log()
    );
    let t = tally(&created, &delivered_uids(&cp));
    eprintln!(
        "figures: redirects 307/301/302/308 {t:?} followed={}",
        elsewhere.hits().len()
    );
    assert_eq!(t.lost, 0);
    assert_eq!(t.duplicated, 0);
    assert!(evrelay.terminate().success());
}

/// An intake that takes 1.5 s per request, against a 1 s request timeout: the
/// timeout is said as such, the next request waits longer, and the backlog drains
/// with each event sent at most twice (once more than needed only for the batch
/// that timed out first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_intake_drains_with_a_bounded_number_of_copies() {
    const EVENTS: usize = 200;
    let cp = ControlPlane::start();
    let client = cp.client().await;
    create_namespace(&client, "slow").await;
    let mut intake = FaultyIntake::start(cp.dd_url()).await;
    intake.set(Fault::Slow(Duration::from_millis(1500))).await;
    let url = intake.url();
    let created = create(&client, "slow", 0, EVENTS).await;
    let data = cp.data_dir("replica-0");
    let started = Instant::now();
    let mut evrelay = cp.spawn_evrelay_with(
        &data,
        &[
            ("DD_URL", &url),
            ("EVRELAY_SHIP_REQUEST_TIMEOUT_SECONDS", "1"),
            ("EVRELAY_SHIP_MAX_BACKOFF_SECONDS", "1"),
            ("EVRELAY_SHIP_MAX_EVENTS", "20"),
            ("EVRELAY_EVENTS_MODE", "unbundled"),
            (
                "EVRELAY_EVENTS_COLLECTED_EVENT_TYPES",
                r#"[{"kind":"Pod"}]"#,
            ),
        ],
    );
    assert!(
        eventually(DELIVERY, || tally(&created, &delivered_uids(&cp)).lost == 0).await,
        "the slow intake did not drain: {:?}; log:\n{}",
        tally(&created, &delivered_uids(&cp)),
        evrelay.own_log()
    );
    let drained = started.elapsed();
    let delivered = delivered_uids(&cp);
    let mut copies = std::collections::HashMap::<&str, usize>::new();
    for uid in &delivered {
        *copies.entry(uid.as_str()).or_default() += 1;
    }
    let most = created
        .iter()
        .map(|u| copies.get(u.as_str()).copied().unwrap_or(0))
        .max()
        .unwrap();
    let twice = created
        .iter()
        .filter(|u| copies.get(u.as_str()).copied().unwrap_or(0) > 1)
        .count();
    let t = tally(&created, &delivered);
    eprintln!(
        "figures: slow intake (1.5 s per request, 1 s timeout, {EVENTS} events in batches of 20): drained in {:.1}s, {t:?}, at most {most} copies of an event, {twice} events sent twice",
        drained.as_secs_f64()
    );
    assert!(
        evrelay.own_log().contains("timeout: no answer within"),
        "the timeout is named"
    );
    assert_eq!(t.lost, 0);
    assert!(most <= 2, "an event arrived {most} times");
    assert!(
        twice <= 20,
        "more than the first batch was sent twice: {twice}"
    );
    assert!(evrelay.terminate().success());
}

/// A client that sends half a request to the admin port and waits does not hold
/// up the exit after SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_admin_request_does_not_delay_shutdown() {
    let cp = ControlPlane::start();
    let data = cp.data_dir("replica-0");
    let mut evrelay = cp.spawn_evrelay(&data);
    let admin = evrelay.admin_url().await;
    let (status, _) = evrelay.admin_get("/healthz").await;
    assert_eq!(status, 200);
    let address = admin.trim_start_matches("http://").to_owned();
    let mut half = std::net::TcpStream::connect(&address).unwrap();
    half.write_all(b"GET /metrics HTTP/1.1\r\nHost: evrelay\r\nX-Slow: ")
        .unwrap();
    let asked = Instant::now();
    let status = evrelay.terminate();
    let took = asked.elapsed();
    eprintln!(
        "figures: SIGTERM with a half-sent admin request: exited in {:.2}s",
        took.as_secs_f64()
    );
    assert!(status.success(), "{status:?}");
    assert!(
        took < Duration::from_secs(10),
        "shutdown waited {took:?} for a half-sent request"
    );
    drop(half);
}
