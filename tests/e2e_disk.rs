//! The journal's disk fails, end to end: a real control plane, Datadog's
//! fakeintake, evrelay as a process with leadership and the ConfigMap mirror on
//! (the defaults).
//!
//! - The journal damaged four ways while evrelay is stopped, with a backlog it had
//!   journaled but not shipped (the intake was refusing): evrelay starts, sets the
//!   damaged journal aside, resumes from the mirrored shipped-through token, and
//!   every event reaches the intake.
//! - The volume fills up under load, then grows: evrelay stays up (same pid),
//!   readiness says why, and every event arrives once there is room.
//! - The volume is read-only at start, then writable: evrelay waits instead of
//!   crash-looping, moves nothing aside, and delivers.
//!
//! Each reports created / delivered / duplicated / lost by uid at the intake.
//! The filesystem tests mount a tmpfs and need root (CI has it).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::faulty::{Fault, FaultyIntake};
use support::tmpfs::Tmpfs;
use support::{ControlPlane, create_event, create_namespace, delivered_uids, eventually, tally};

const DELIVERY: Duration = Duration::from_secs(90);

/// A message that makes the journal's log file grow past its first segments.
fn message(i: usize) -> String {
    format!("disk test {i} {}", "x".repeat(2048))
}

async fn create(client: &kube::Client, namespace: &str, from: usize, n: usize) -> Vec<String> {
    let mut uids = Vec::with_capacity(n);
    for i in from..from + n {
        let pod = format!("pod-{}", i % 7);
        uids.push(create_event(client, namespace, &pod, "Disk", &message(i)).await);
    }
    uids
}

fn damaged_copies(data: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(data)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("damaged-"))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Stops evrelay with a backlog journaled but not shipped, damages the journal
/// with `damage`, starts it again: the journal is set aside and nothing is lost.
async fn damaged_journal_loses_nothing(namespace: &'static str, damage: fn(&Path)) {
    let cp = ControlPlane::start();
    let client = cp.client().await;
    create_namespace(&client, namespace).await;
    let data = cp.data_dir("replica-0");
    let mut intake = FaultyIntake::start(cp.dd_url()).await;
    let url = intake.url();
    let env = [
        ("DD_URL", url.as_str()),
        ("EVRELAY_SHIP_MAX_BACKOFF_SECONDS", "1"),
        ("EVRELAY_LEADER_MIRROR_INTERVAL_SECONDS", "1"),
    ];

    // Delivered, and the mirror has published a shipped-through token.
    let mut created = create(&client, namespace, 0, 150).await;
    let mut evrelay = cp.spawn_evrelay_with(&data, &env);
    assert!(
        eventually(DELIVERY, || tally(&created, &delivered_uids(&cp)).lost == 0).await,
        "first run did not deliver; log:\n{}",
        evrelay.own_log()
    );
    // A mirror write after the delivery: its token covers them.
    let delivered_at = std::time::Instant::now();
    let mut mirrored = false;
    for _ in 0..300 {
        let age = evrelay.metric("evrelay_token_mirror_age_seconds").await;
        if age.is_some_and(|a| a >= 0.0 && a < delivered_at.elapsed().as_secs_f64()) {
            mirrored = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(mirrored, "no mirror write; log:\n{}", evrelay.own_log());

    // A backlog journaled but not shipped: the intake refuses.
    intake.set(Fault::Refuse).await;
    let backlog = create(&client, namespace, 150, 150).await;
    created.extend(backlog.iter().cloned());
    let mut journaled = false;
    for _ in 0..600 {
        if evrelay
            .metric("evrelay_events_journaled_total")
            .await
            .is_some_and(|n| n >= 300.0)
        {
            journaled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        journaled,
        "the backlog was not journaled; log:\n{}",
        evrelay.own_log()
    );
    assert!(evrelay.terminate().success());

    damage(&data.join("journal"));
    intake.set(Fault::Pass).await;
    let mut evrelay = cp.spawn_evrelay_with(&data, &env);
    created.extend(create(&client, namespace, 300, 30).await);
    assert!(
        eventually(DELIVERY, || tally(&created, &delivered_uids(&cp)).lost == 0).await,
        "events lost after the damage: {:?}; log:\n{}",
        tally(&created, &delivered_uids(&cp)),
        evrelay.own_log()
    );
    let t = tally(&created, &delivered_uids(&cp));
    let copies = damaged_copies(&data);
    let gaps = evrelay
        .metric("evrelay_gaps_total{reason=\"journal_damaged\"}")
        .await;
    eprintln!(
        "figures: damage={namespace} {t:?} set_aside={} gap_metric={gaps:?} still_running={}",
        copies.len(),
        evrelay.is_running()
    );
    assert!(
        evrelay.is_running(),
        "evrelay stopped; log:\n{}",
        evrelay.own_log()
    );
    assert_eq!(t.lost, 0);
    let log = evrelay.own_log();
    if copies.is_empty() {
        // sled opened and every read held up: nothing acknowledged may be missing,
        // so nothing may be resent beyond the batch in flight.
        assert!(t.duplicated <= 150, "{t:?}");
    } else {
        assert_eq!(copies.len(), 1);
        assert_eq!(gaps, Some(1.0), "the gap metric");
        assert!(log.contains("the journal was damaged"), "log:\n{log}");
        // The mirrored token bounds what is sent twice: at most what was shipped
        // since it was published, and the backlog was not shipped at all.
        assert!(t.duplicated <= 150, "{t:?}");
        // The set-aside journal is a data dir `dump` reads (or says why not).
        let dump = cp
            .evrelay(&copies[0])
            .args(["dump", "--meta", "--data-dir"])
            .arg(&copies[0])
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&dump.stdout),
            String::from_utf8_lossy(&dump.stderr)
        );
        assert!(said.contains("damaged"), "dump of the damaged copy: {said}");
    }
    assert!(evrelay.terminate().success());
    // A second start moves nothing again.
    let mut again = cp.spawn_evrelay_with(&data, &env);
    let (status, _) = again.admin_get("/healthz").await;
    assert_eq!(status, 200);
    assert!(
        eventually(Duration::from_secs(30), || again
            .own_log()
            .contains("journal open"))
        .await,
        "no open; log:\n{}",
        again.own_log()
    );
    assert_eq!(damaged_copies(&data).len(), copies.len(), "moved again");
    assert!(again.terminate().success());
}

fn overwrite(file: &Path, offset: u64, len: usize) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    let size = f.metadata().unwrap().len();
    assert!(
        size > offset + len as u64,
        "{} is {size} bytes",
        file.display()
    );
    f.write_all_at(&vec![0xA5; len], offset).unwrap();
    f.sync_all().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_flipped_mid_file() {
    damaged_journal_loses_nothing("flipped", |store| {
        let db = store.join("db");
        let len = std::fs::metadata(&db).unwrap().len();
        overwrite(&db, len / 2, 16);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_flipped_at_a_segment_boundary() {
    damaged_journal_loses_nothing("boundary", |store| {
        overwrite(&store.join("db"), 512 * 1024 - 8, 16);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_truncated_to_half() {
    damaged_journal_loses_nothing("truncated", |store| {
        let db = store.join("db");
        let len = std::fs::metadata(&db).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
        f.set_len(len / 2).unwrap();
        f.sync_all().unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_damaged() {
    damaged_journal_loses_nothing("snapshot", |store| {
        // sled writes its snapshot when it opens a journal with a longer log than
        // the last snapshot: `dump` opens it once, as an operator would.
        let dumped = Command::new(env!("CARGO_BIN_EXE_evrelay"))
            .args(["dump", "--meta", "--data-dir"])
            .arg(store.parent().unwrap())
            .output()
            .unwrap();
        assert!(dumped.status.success(), "{dumped:?}");
        let snap = std::fs::read_dir(store)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("snap.")
            })
            .expect("a snapshot file (sled writes one at each open)");
        overwrite(&snap, 8, 8);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_volume_holds_the_watch_and_resumes_without_a_restart() {
    let cp = ControlPlane::start();
    let client = cp.client().await;
    create_namespace(&client, "full").await;
    let data = cp.data_dir("replica-0");
    let volume = Tmpfs::mount(&data, "3m");
    let mut intake = FaultyIntake::start(cp.dd_url()).await;
    let url = intake.url();
    // The intake refuses, so the journal only grows.
    intake.set(Fault::Refuse).await;
    let env = [
        ("DD_URL", url.as_str()),
        ("EVRELAY_SHIP_MAX_BACKOFF_SECONDS", "1"),
    ];
    let mut evrelay = cp.spawn_evrelay_with(&data, &env);
    let pid = evrelay.pid();

    let mut created = Vec::new();
    let mut full = false;
    for round in 0..60 {
        created.extend(create(&client, "full", round * 50, 50).await);
        if evrelay.metric("evrelay_journal_writable").await == Some(0.0) {
            full = true;
            break;
        }
    }
    assert!(full, "the volume never filled; log:\n{}", evrelay.own_log());
    let (status, why) = evrelay.admin_get("/readyz").await;
    assert_eq!(status, 503);
    assert!(why.contains("No space left"), "{why}");
    let (status, _) = evrelay.admin_get("/healthz").await;
    assert_eq!(status, 200, "a full disk is not a reason to restart");
    // More events while full: the watch holds its position and gets them later.
    let at_full = created.len();
    created.extend(create(&client, "full", 10_000, 50).await);

    volume.remount("size=256m");
    intake.set(Fault::Pass).await;
    assert!(
        eventually(DELIVERY, || tally(&created, &delivered_uids(&cp)).lost == 0).await,
        "events lost after the volume grew: {:?}; log:\n{}",
        tally(&created, &delivered_uids(&cp)),
        evrelay.own_log()
    );
    let t = tally(&created, &delivered_uids(&cp));
    eprintln!(
        "figures: disk-full filled_after={at_full} {t:?} same_pid={}",
        evrelay.pid() == pid
    );
    assert_eq!(evrelay.pid(), pid);
    assert!(evrelay.is_running());
    assert_eq!(evrelay.metric("evrelay_journal_writable").await, Some(1.0));
    let (status, _) = evrelay.admin_get("/readyz").await;
    assert_eq!(status, 200);
    assert_eq!(t.lost, 0);
    assert_eq!(
        t.duplicated, 0,
        "nothing was shipped before, nothing twice: {t:?}"
    );
    assert!(
        damaged_copies(&data).is_empty(),
        "a full disk is not damage"
    );
    assert!(evrelay.terminate().success());
    drop(volume);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_volume_is_waited_out_not_crashed_on() {
    let cp = ControlPlane::start();
    let client = cp.client().await;
    create_namespace(&client, "readonly").await;
    let data = cp.data_dir("replica-0");
    let volume = Tmpfs::mount(&data, "64m");
    let mut created = create(&client, "readonly", 0, 20).await;
    let mut evrelay = cp.spawn_evrelay(&data);
    assert!(
        eventually(DELIVERY, || tally(&created, &delivered_uids(&cp)).lost == 0).await,
        "first run did not deliver; log:\n{}",
        evrelay.own_log()
    );
    assert!(evrelay.terminate().success());

    volume.remount("ro");
    let mut evrelay = cp.spawn_evrelay(&data);
    let pid = evrelay.pid();
    created.extend(create(&client, "readonly", 20, 20).await);
    let mut said = String::new();
    assert!(
        eventually(Duration::from_secs(30), || {
            said = evrelay.own_log();
            said.contains("Read-only file system")
        })
        .await,
        "the read-only volume was not reported; log:\n{said}"
    );
    let (ready, why) = evrelay.admin_get("/readyz").await;
    assert_eq!(ready, 503);
    assert!(why.contains("Read-only"), "{why}");
    let (live, _) = evrelay.admin_get("/healthz").await;
    assert_eq!(live, 200, "starting, not dead");

    volume.remount("rw");
    assert!(
        eventually(DELIVERY, || tally(&created, &delivered_uids(&cp)).lost == 0).await,
        "events lost after the volume came back: {:?}; log:\n{}",
        tally(&created, &delivered_uids(&cp)),
        evrelay.own_log()
    );
    let t = tally(&created, &delivered_uids(&cp));
    eprintln!("figures: read-only {t:?} same_pid={}", evrelay.pid() == pid);
    assert_eq!(evrelay.pid(), pid, "no restart");
    assert_eq!(t.lost, 0);
    assert_eq!(t.duplicated, 0, "{t:?}");
    assert!(
        damaged_copies(&data).is_empty(),
        "a read-only disk is not damage"
    );
    assert!(evrelay.terminate().success());
    drop(volume);
}
