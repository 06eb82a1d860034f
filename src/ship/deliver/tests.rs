use std::sync::Mutex;

use super::*;
use crate::metrics::Metrics;
use crate::ship::sink::{Mapped, Occurrence};

/// A scripted intake: a sink whose items are texts, and which answers each
/// request with what `rule` says about its texts. A request of more than `cap`
/// items is too big to send.
struct Scripted<F> {
    rule: F,
    cap: usize,
    log: Mutex<Vec<(Vec<String>, u16)>>,
}

impl<F: Fn(&[String], usize) -> (u16, Option<Duration>) + Send + Sync + 'static> Sink
    for Scripted<F>
{
    type Item = String;
    type Request = Vec<String>;

    fn name(&self) -> &'static str {
        "scripted"
    }

    fn map(&self, _: &[Occurrence<'_>]) -> Mapped<String> {
        unreachable!("the tests hand the delivery loop its items")
    }

    fn unbundle(&self, _: &[Occurrence<'_>], _: &[u64]) -> Vec<Outbound<String>> {
        unreachable!("the tests hand the delivery loop its own unbundle")
    }

    fn mark_replay(&self, _: &mut String, _: &str) {}

    fn encode(&self, items: &[&String]) -> Vec<String> {
        items.iter().map(|s| (*s).clone()).collect()
    }

    fn too_big(&self, request: &Vec<String>) -> bool {
        request.len() > self.cap
    }

    fn send(&self, texts: &Vec<String>) -> impl Future<Output = Answer> + Send {
        let mut log = self.log.lock().unwrap();
        let (status, after) = (self.rule)(texts, log.len());
        log.push((texts.clone(), status));
        std::future::ready(Answer {
            verdict: crate::delivery::judge(status, after),
            status: Some(status),
            detail: format!("HTTP {status}"),
        })
    }
}

impl<F> Scripted<F> {
    /// The texts of every event in a request that was answered 202, in order.
    fn delivered(&self) -> Vec<String> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|(_, status)| *status == 202)
            .flat_map(|(texts, _)| texts.clone())
            .collect()
    }
}

fn scripted<F: Fn(&[String], usize) -> (u16, Option<Duration>) + Send + Sync>(
    rule: F,
) -> Scripted<F> {
    Scripted {
        rule,
        cap: usize::MAX,
        log: Mutex::new(Vec::new()),
    }
}

fn items(n: u64) -> Vec<Outbound<String>> {
    (1..=n)
        .map(|seq| Outbound {
            seqs: vec![seq],
            item: format!("e{seq}"),
        })
        .collect()
}

/// For batches without bundles.
fn no_bundles(_: &[u64]) -> Vec<Outbound<String>> {
    unreachable!("no bundle in these batches")
}

async fn settle<S: Sink<Item = String>>(sink: &S, batch: &[Outbound<String>]) -> Option<Settled> {
    settle_with(sink, batch, &no_bundles).await
}

async fn settle_with<S: Sink<Item = String>>(
    sink: &S,
    batch: &[Outbound<String>],
    unbundle: &(dyn Fn(&[u64]) -> Vec<Outbound<String>> + Sync),
) -> Option<Settled> {
    let shutdown = CancellationToken::new();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(64));
    Attempts {
        sink,
        backoff: &mut backoff,
        forbidden_pause: Duration::from_secs(64),
        grace: Duration::from_secs(5),
        shutdown: &shutdown,
        metrics: &Metrics::new(),
        unbundle,
    }
    .settle(batch)
    .await
}

#[tokio::test(start_paused = true)]
async fn delivered_in_one_request() {
    let intake = scripted(|_, _| (202, None));
    let s = settle(&intake, &items(10)).await.unwrap();
    assert_eq!(
        s,
        Settled {
            dead_letters: vec![],
            requests: 1
        }
    );
}

#[tokio::test(start_paused = true)]
async fn bad_event_is_found_by_bisection_and_dead_lettered() {
    let intake = scripted(|texts, _| {
        if texts.iter().any(|t| t == "e6") {
            (400, None)
        } else {
            (202, None)
        }
    });
    let s = settle(&intake, &items(8)).await.unwrap();
    assert_eq!(s.dead_letters.len(), 1);
    assert_eq!(s.dead_letters[0].0, 6);
    assert_eq!(s.dead_letters[0].1.status, Some(400));
    // Everything else was delivered, in order.
    let delivered = intake.delivered();
    assert_eq!(delivered, ["e1", "e2", "e3", "e4", "e5", "e7", "e8"]);
    // 8 → 4+4 → 2+2 → 1+1: a logarithmic number of requests, not one per event.
    assert!(s.requests <= 7, "{} requests", s.requests);
}

#[tokio::test(start_paused = true)]
async fn a_refused_bundle_is_sent_event_by_event_and_only_the_bad_one_dead_lettered() {
    // The bundle (records 2, 5, 9) reads "bundle"; alone, record 5 is the bad one.
    let intake = scripted(|texts, _| {
        if texts.iter().any(|t| t == "bundle" || t == "e5") {
            (400, None)
        } else {
            (202, None)
        }
    });
    let mut batch = items(3);
    batch[1].seqs = vec![2, 5, 9];
    batch[1].item = "bundle".into();
    let singles = |seqs: &[u64]| -> Vec<Outbound<String>> {
        items(9)
            .into_iter()
            .filter(|o| seqs.contains(&o.seqs[0]))
            .collect()
    };
    let s = settle_with(&intake, &batch, &singles).await.unwrap();
    let dead: Vec<u64> = s.dead_letters.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(dead, [5]);
    assert_eq!(intake.delivered(), ["e1", "e2", "e9", "e3"]);
}

/// A sink's cap (the logs intake's 1000 entries, say) splits before sending.
#[tokio::test(start_paused = true)]
async fn logs_go_at_most_1000_to_a_request() {
    let mut intake = scripted(|texts, _| {
        if texts.len() > 1000 {
            (413, None)
        } else {
            (202, None)
        }
    });
    intake.cap = 1000;
    let s = settle(&intake, &items(1500)).await.unwrap();
    assert_eq!(s.requests, 2, "split before sending, not after a 413");
    assert_eq!(intake.delivered().len(), 1500);
}

#[tokio::test(start_paused = true)]
async fn too_large_is_split_until_accepted() {
    let intake = scripted(|texts, _| {
        if texts.len() > 3 {
            (413, None)
        } else {
            (202, None)
        }
    });
    let s = settle(&intake, &items(10)).await.unwrap();
    assert!(s.dead_letters.is_empty());
    let delivered = intake.delivered();
    assert_eq!(delivered.len(), 10);
    assert_eq!(delivered.first().unwrap(), "e1");
    assert_eq!(delivered.last().unwrap(), "e10");
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured() {
    let intake = scripted(|_, n| {
        if n == 0 {
            (429, Some(Duration::from_secs(30)))
        } else {
            (202, None)
        }
    });
    let start = tokio::time::Instant::now();
    let s = settle(&intake, &items(3)).await.unwrap();
    assert_eq!(s.requests, 2);
    let waited = start.elapsed();
    assert!(waited >= Duration::from_secs(30), "waited {waited:?}");
    assert!(waited <= Duration::from_millis(31_500), "waited {waited:?}");
}

#[tokio::test(start_paused = true)]
async fn server_errors_are_retried_until_accepted() {
    let intake = scripted(|_, n| if n < 5 { (503, None) } else { (202, None) });
    let s = settle(&intake, &items(3)).await.unwrap();
    assert_eq!(s.requests, 6);
    assert!(s.dead_letters.is_empty());
}

#[tokio::test(start_paused = true)]
async fn forbidden_pauses_and_keeps_the_batch() {
    let intake = scripted(|_, n| if n < 2 { (403, None) } else { (202, None) });
    let start = tokio::time::Instant::now();
    let s = settle(&intake, &items(3)).await.unwrap();
    assert_eq!(s.requests, 3);
    assert!(
        s.dead_letters.is_empty(),
        "a bad key must not burn the backlog"
    );
    assert!(start.elapsed() >= Duration::from_secs(128));
}

#[tokio::test(start_paused = true)]
async fn shutdown_abandons_a_batch_that_cannot_be_delivered() {
    let intake = scripted(|_, _| (503, None));
    let shutdown = CancellationToken::new();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    let stop = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        stop.cancel();
    });
    let settled = Attempts {
        sink: &intake,
        backoff: &mut backoff,
        forbidden_pause: Duration::from_secs(64),
        grace: Duration::from_secs(5),
        shutdown: &shutdown,
        metrics: &Metrics::new(),
        unbundle: &no_bundles,
    }
    .settle(&items(3))
    .await;
    assert_eq!(settled, None);
}

#[tokio::test(start_paused = true)]
async fn an_intake_refusing_everything_pauses_shipping_and_dead_letters_nothing() {
    // A proxy answers 400 to everything for its first 40 requests, then the real
    // intake is back.
    let intake = scripted(|_, n| if n < 40 { (400, None) } else { (202, None) });
    let start = tokio::time::Instant::now();
    let s = settle(&intake, &items(50)).await.unwrap();
    assert!(s.dead_letters.is_empty(), "{:?}", s.dead_letters);
    let mut delivered = intake.delivered();
    delivered.sort_by_key(|e| e[1..].parse::<u32>().unwrap());
    assert_eq!(
        delivered,
        items(50).into_iter().map(|o| o.item).collect::<Vec<_>>()
    );
    assert!(
        start.elapsed() >= Duration::from_secs(64),
        "paused as for a refused key"
    );
}

#[tokio::test(start_paused = true)]
async fn two_bad_events_among_good_ones_are_still_dead_lettered() {
    let intake = scripted(|texts, _| {
        if texts.iter().any(|t| t == "e3" || t == "e4") {
            (400, None)
        } else {
            (202, None)
        }
    });
    let s = settle(&intake, &items(8)).await.unwrap();
    let dead: Vec<u64> = s.dead_letters.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(dead, [3, 4]);
    assert_eq!(intake.delivered().len(), 6);
}
