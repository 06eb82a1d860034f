//! The term's rules with paused time: fake Lease, ConfigMap and duties that record
//! what happened and when, and a journal in memory.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::*;
use crate::journal::testing::MemoryStore;
use crate::leader::Mirrored;
use crate::record::{Header, Record, RecordKind};
use crate::watch::WatchError;

const SINK: &str = "datadog";

/// What happened, in order, with when.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<(Instant, String)>>>);

impl Log {
    fn push(&self, what: impl Into<String>) {
        self.0.lock().unwrap().push((Instant::now(), what.into()));
    }

    fn events(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, w)| w.clone())
            .collect()
    }

    fn at(&self, what: &str) -> Instant {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find(|(_, w)| w == what)
            .unwrap_or_else(|| panic!("{what} never happened"))
            .0
    }
}

/// A Lease that is granted at once, renews until told it is lost, and records
/// the release.
struct FakeElection {
    log: Log,
    lose: Arc<Notify>,
    grants: Mutex<u32>,
}

impl Election for FakeElection {
    async fn acquire(&self, shutdown: &CancellationToken) -> Option<Held> {
        let granted = {
            let mut g = self.grants.lock().unwrap();
            *g += 1;
            *g
        };
        if granted > 1 {
            // Deposed once: stand by until shutdown.
            shutdown.cancelled().await;
            return None;
        }
        self.log.push("acquired");
        Some(Held::for_tests())
    }

    async fn hold(&self, held: Held, stop: &CancellationToken) -> Ended {
        tokio::select! {
            _ = stop.cancelled() => Ended::Stopped(Box::new(held)),
            _ = self.lose.notified() => {
                self.log.push("lost");
                Ended::Lost("renewals failed".into())
            }
        }
    }

    async fn release(&self, _: Held) {
        self.log.push("released");
    }
}

/// A ConfigMap that grants epoch 2 over `previous`, fails the first `failing`
/// claims, records what is published, and fences when told.
struct FakeMirror {
    log: Log,
    previous: Mirrored,
    failing: Mutex<u32>,
    fenced: Mutex<bool>,
    published: Mutex<Vec<Option<ResumeToken>>>,
}

impl Mirror for FakeMirror {
    async fn claim(&self) -> Result<Claim, MirrorError> {
        let mut failing = self.failing.lock().unwrap();
        if *failing > 0 {
            *failing -= 1;
            self.log.push("claim failed");
            return Err(MirrorError::Kube {
                name: "evrelay-token".into(),
                source: kube::Error::Service("connection refused".into()),
            });
        }
        self.log.push("claimed");
        let term = Term {
            epoch: self.previous.term.epoch + 1,
            holder: "me".into(),
        };
        Ok(Claim::for_tests(term, self.previous.clone()))
    }

    async fn publish(
        &self,
        _: &mut Claim,
        shipped: Option<&ResumeToken>,
        _: Option<&ResumeToken>,
    ) -> Result<(), MirrorError> {
        if *self.fenced.lock().unwrap() {
            return Err(MirrorError::Fenced(Term {
                epoch: 9,
                holder: "other".into(),
            }));
        }
        self.published.lock().unwrap().push(shipped.cloned());
        Ok(())
    }
}

/// Duties that run until stopped, recording when they stop (or are dropped), and
/// that ship everything journaled when `ships` is set.
struct FakeDuties {
    log: Log,
    journal: Journal,
    ships: bool,
    /// The watch cannot be established (the API server is out of reach).
    unreachable: bool,
}

/// Records "<name> dropped" if the future holding it is dropped unfinished.
struct DropGuard(Log, &'static str, bool);

impl Drop for DropGuard {
    fn drop(&mut self) {
        if !self.2 {
            self.0.push(format!("{} dropped", self.1));
        }
    }
}

impl Duties for FakeDuties {
    async fn watch(&self, stop: CancellationToken) -> Result<(), TermError> {
        if self.unreachable {
            tokio::time::sleep(Duration::from_secs(180)).await;
            self.log.push("watch gave up");
            return Err(TermError::Watch(WatchError::NotEstablished {
                waited: Duration::from_secs(180),
                last: "connection refused".into(),
            }));
        }
        let mut guard = DropGuard(self.log.clone(), "watch", false);
        stop.cancelled().await;
        self.log.push("watch stopped");
        guard.2 = true;
        Ok(())
    }

    async fn ship(&self, stop: CancellationToken) -> Result<(), TermError> {
        let mut guard = DropGuard(self.log.clone(), "ship", false);
        loop {
            if self.ships {
                let head = self.journal.head();
                self.journal.mark_shipped(SINK, head, &[]).unwrap();
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        self.log.push("ship stopped");
        guard.2 = true;
        Ok(())
    }

    async fn report(&self) {
        std::future::pending().await
    }

    fn sinks(&self) -> Vec<&'static str> {
        vec![SINK]
    }
}

struct Setup {
    log: Log,
    lose: Arc<Notify>,
    journal: Journal,
    metrics: Metrics,
}

fn setup() -> Setup {
    let journal = Journal::with_store(
        Box::new(MemoryStore::default()),
        PathBuf::from("(memory)"),
        1 << 30,
    )
    .unwrap();
    Setup {
        log: Log::default(),
        lose: Arc::new(Notify::new()),
        journal,
        metrics: Metrics::new(),
    }
}

const SETTINGS: TermSettings = TermSettings {
    mirror_interval: Duration::from_secs(5),
    shutdown_grace: Duration::from_secs(10),
    step_down_pause: Duration::from_secs(15),
};

fn leader(
    s: &Setup,
    previous: Mirrored,
    failing_claims: u32,
    ships: bool,
) -> Leader<FakeElection, FakeMirror, FakeDuties> {
    let election = FakeElection {
        log: s.log.clone(),
        lose: s.lose.clone(),
        grants: Mutex::new(0),
    };
    let mirror = FakeMirror {
        log: s.log.clone(),
        previous,
        failing: Mutex::new(failing_claims),
        fenced: Mutex::new(false),
        published: Mutex::new(Vec::new()),
    };
    let duties = FakeDuties {
        log: s.log.clone(),
        journal: s.journal.clone(),
        ships,
        unreachable: false,
    };
    Leader::new(
        Some((election, mirror)),
        duties,
        s.journal.clone(),
        s.metrics.clone(),
        SETTINGS,
    )
}

fn event(uid: &str) -> Record {
    let mut h = Header::blank(RecordKind::Event, 0);
    h.uid = uid.into();
    Record {
        header: h,
        raw: b"{}".to_vec(),
    }
}

fn token(rv: &str) -> ResumeToken {
    ResumeToken {
        resource_version: rv.into(),
        timestamp_ms: 0,
    }
}

/// A journal that led last in `epoch` (so a restart continues from it).
fn led_last(journal: &Journal, epoch: u64) {
    let term = Term {
        epoch,
        holder: "me".into(),
    };
    journal.begin_term(&term, None, &[SINK]).unwrap();
}

fn mine(epoch: u64) -> Mirrored {
    Mirrored {
        term: Term {
            epoch,
            holder: "me".into(),
        },
        token: Some(token("5")),
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_the_watch_drains_publishes_and_releases() {
    let s = setup();
    led_last(&s.journal, 1);
    s.journal.append(&[event("a")], Some(&token("10"))).unwrap();
    let leader = leader(&s, mine(1), 0, true);
    let shutdown = CancellationToken::new();
    let run = async { leader.run(&shutdown).await };
    let stop = async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        s.log.push("shutdown");
        shutdown.cancel();
    };
    let (result, ()) = tokio::join!(run, stop);
    result.unwrap();
    assert_eq!(
        s.log.events(),
        [
            "acquired",
            "claimed",
            "shutdown",
            "watch stopped",
            "ship stopped",
            "released"
        ]
    );
    let published = leader
        .election
        .as_ref()
        .unwrap()
        .1
        .published
        .lock()
        .unwrap()
        .clone();
    assert_eq!(
        published.last(),
        Some(&Some(token("10"))),
        "the exact token, once more on the way out"
    );
    assert!(!s.metrics.is_leader());
}

#[tokio::test(start_paused = true)]
async fn a_backlog_that_cannot_drain_is_left_after_the_grace() {
    let s = setup();
    led_last(&s.journal, 1);
    s.journal.append(&[event("a")], Some(&token("10"))).unwrap();
    let leader = leader(&s, mine(1), 0, false);
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    // Claimed and leading, then shut down at once: the watch stops, the shipper
    // (which ships nothing) is given the grace, then stopped.
    leader.run(&shutdown).await.unwrap();
    let grace = s.log.at("ship stopped") - s.log.at("watch stopped");
    assert!(grace >= SETTINGS.shutdown_grace, "{grace:?}");
    assert!(
        grace < SETTINGS.shutdown_grace + Duration::from_secs(1),
        "{grace:?}"
    );
    assert_eq!(
        s.journal.pending(SINK).unwrap(),
        1,
        "still pending, never dropped"
    );
}

#[tokio::test(start_paused = true)]
async fn a_lost_lease_drops_every_duty_at_once_and_stands_by() {
    let s = setup();
    let leader = leader(&s, mine(1), 0, true);
    let shutdown = CancellationToken::new();
    let run = async { leader.run(&shutdown).await };
    let lose = async {
        tokio::time::sleep(Duration::from_secs(20)).await;
        s.lose.notify_one();
        tokio::time::sleep(Duration::from_secs(20)).await;
        shutdown.cancel();
    };
    let (result, ()) = tokio::join!(run, lose);
    result.unwrap();
    let events = s.log.events();
    assert_eq!(events[..3], ["acquired", "claimed", "lost"], "{events:?}");
    let mut dropped = events[3..5].to_vec();
    dropped.sort();
    assert_eq!(dropped, ["ship dropped", "watch dropped"], "{events:?}");
    assert_eq!(s.log.at("lost"), s.log.at("ship dropped"), "at once");
    assert!(
        !events.contains(&"released".to_owned()),
        "a lost lease is not ours to release"
    );
    assert!(!s.metrics.is_leader());
}

#[tokio::test(start_paused = true)]
async fn a_newer_epoch_in_the_configmap_fences_the_leader_off() {
    let s = setup();
    let leader = leader(&s, mine(1), 0, true);
    *leader.election.as_ref().unwrap().1.fenced.lock().unwrap() = true;
    let shutdown = CancellationToken::new();
    let run = async { leader.run(&shutdown).await };
    let stop = async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        shutdown.cancel();
    };
    let (result, ()) = tokio::join!(run, stop);
    result.unwrap();
    let events = s.log.events();
    assert_eq!(events[..2], ["acquired", "claimed"], "{events:?}");
    // Fenced at the first publish: the duties were dropped (or never began, when
    // the publish answered before they were first polled), never stopped in order.
    let claimed = s.log.at("claimed");
    let entries = s.log.0.lock().unwrap().clone();
    for (at, what) in &entries[2..] {
        assert!(what.ends_with("dropped"), "{events:?}");
        assert_eq!(*at, claimed, "{what} not at once");
    }
}

#[tokio::test(start_paused = true)]
async fn a_claim_is_retried_until_the_configmap_answers() {
    let s = setup();
    let leader = leader(&s, mine(1), 3, true);
    let shutdown = CancellationToken::new();
    let run = async { leader.run(&shutdown).await };
    let stop = async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        shutdown.cancel();
    };
    let (result, ()) = tokio::join!(run, stop);
    result.unwrap();
    let events = s.log.events();
    assert_eq!(
        events[..5],
        [
            "acquired",
            "claim failed",
            "claim failed",
            "claim failed",
            "claimed"
        ],
        "{events:?}"
    );
    // Backed off (at most 0.2 + 0.4 + 0.8 s), not retried in a tight loop.
    let waited = s.log.at("claimed") - s.log.at("acquired");
    assert!(waited <= Duration::from_millis(1400), "{waited:?}");
}

#[tokio::test(start_paused = true)]
async fn a_takeover_onto_a_stale_journal_adopts_the_mirrored_token() {
    let s = setup();
    // This journal last led in epoch 1; someone else claimed epoch 2 since.
    led_last(&s.journal, 1);
    s.journal
        .append(&[event("a"), event("b")], Some(&token("50")))
        .unwrap();
    let previous = Mirrored {
        term: Term {
            epoch: 2,
            holder: "other".into(),
        },
        token: Some(token("40")),
    };
    let leader = leader(&s, previous, 0, false);
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    leader.run(&shutdown).await.unwrap();
    assert_eq!(s.journal.resume_token().unwrap(), Some(token("40")));
    assert_eq!(s.journal.term().unwrap().unwrap().epoch, 3);
    assert_eq!(s.journal.counters().unwrap().dropped_stale, 2);
    assert!(
        s.metrics
            .encode()
            .contains("evrelay_events_dropped_total{reason=\"stale_backlog\"} 2")
    );
}

#[tokio::test(start_paused = true)]
async fn a_restart_of_the_last_leader_continues_from_its_journal() {
    let s = setup();
    led_last(&s.journal, 1);
    s.journal.append(&[event("a")], Some(&token("50"))).unwrap();
    let leader = leader(&s, mine(1), 0, false);
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    leader.run(&shutdown).await.unwrap();
    assert_eq!(s.journal.resume_token().unwrap(), Some(token("50")));
    assert_eq!(s.journal.pending(SINK).unwrap(), 1, "nothing given up");
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_cannot_watch_steps_down_and_releases_its_lease() {
    let s = setup();
    let mut leader = leader(&s, mine(1), 0, true);
    leader.duties.unreachable = true;
    let shutdown = CancellationToken::new();
    let run = async { leader.run(&shutdown).await };
    let stop = async {
        tokio::time::sleep(Duration::from_secs(600)).await;
        shutdown.cancel();
    };
    let (result, ()) = tokio::join!(run, stop);
    result.unwrap();
    let events = s.log.events();
    assert_eq!(
        events[..5],
        [
            "acquired",
            "claimed",
            "watch gave up",
            "ship stopped",
            "released"
        ],
        "{events:?}"
    );
    assert_eq!(s.metrics.stepdowns_in_a_row(), 1);
    assert!(
        s.metrics
            .encode()
            .contains("evrelay_watch_stepdowns_total 1"),
        "counted"
    );
    assert!(!s.metrics.is_leader());
}
