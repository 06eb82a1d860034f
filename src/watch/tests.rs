//! The watcher's rules, one step at a time, against a scripted API server and a
//! journal in memory; time is paused, so stalls and backoffs take no real time.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use serde_json::value::RawValue;

use super::*;
use crate::journal::testing::MemoryStore;

/// What the scripted API server answers to the next WATCH.
enum Opened {
    /// These lines, one batch each, then the API server ends the watch.
    Lines(Vec<Line>),
    /// These lines, then nothing, ever (a silent connection).
    Stall(Vec<Line>),
    /// These lines, then a broken stream.
    Break(Vec<Line>),
    Gone,
    Refused,
    /// Accepted, never answered.
    Hang,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    List(Option<String>),
    Watch(String),
}

#[derive(Default)]
struct Script {
    /// `None`: a LIST that is never answered.
    lists: VecDeque<Option<Result<EventList, ApiError>>>,
    watches: VecDeque<Opened>,
    calls: Vec<Call>,
    /// The `limit` of each LIST.
    limits: Vec<u32>,
}

#[derive(Clone, Default)]
struct Scripted(Arc<Mutex<Script>>);

impl Scripted {
    fn page(&self, rv: &str, items: &[String], next: Option<&str>) -> &Self {
        let items = items
            .iter()
            .map(|i| RawValue::from_string(i.clone()).unwrap())
            .collect();
        self.0.lock().unwrap().lists.push_back(Some(Ok(EventList {
            metadata: ListMeta {
                resource_version: rv.into(),
                continue_token: next.map(Into::into),
            },
            items,
        })));
        self
    }

    fn list_gone(&self) -> &Self {
        let gone = Err(ApiError::Gone("continue token expired".into()));
        self.0.lock().unwrap().lists.push_back(Some(gone));
        self
    }

    fn list_hangs(&self) -> &Self {
        self.0.lock().unwrap().lists.push_back(None);
        self
    }

    fn limits(&self) -> Vec<u32> {
        self.0.lock().unwrap().limits.clone()
    }

    fn then(&self, opened: Opened) -> &Self {
        self.0.lock().unwrap().watches.push_back(opened);
        self
    }

    fn calls(&self) -> Vec<Call> {
        self.0.lock().unwrap().calls.clone()
    }
}

fn batches(lines: Vec<Line>) -> Vec<Vec<Result<Line, LineError>>> {
    lines.into_iter().map(|l| vec![Ok(l)]).collect()
}

impl EventsApi for Scripted {
    async fn list(
        &self,
        limit: u32,
        continue_token: Option<String>,
    ) -> Result<EventList, ApiError> {
        let next = {
            let mut s = self.0.lock().unwrap();
            s.calls.push(Call::List(continue_token));
            s.limits.push(limit);
            s.lists.pop_front().expect("an unscripted LIST")
        };
        match next {
            Some(answer) => answer,
            None => std::future::pending().await,
        }
    }

    async fn watch(&self, resource_version: &str, _: Duration) -> Result<WatchLines, ApiError> {
        let opened = {
            let mut s = self.0.lock().unwrap();
            s.calls.push(Call::Watch(resource_version.into()));
            s.watches.pop_front()
        };
        match opened {
            // Nothing more scripted: a watch that stays open and silent until
            // shutdown (the tests stop before the stall timeout).
            None => Ok(WatchLines::from_batches(futures::stream::pending())),
            Some(Opened::Lines(lines)) => Ok(WatchLines::from_batches(futures::stream::iter(
                batches(lines),
            ))),
            Some(Opened::Stall(lines)) => Ok(WatchLines::from_batches(
                futures::stream::iter(batches(lines)).chain(futures::stream::pending()),
            )),
            Some(Opened::Break(lines)) => {
                let mut all = batches(lines);
                all.push(vec![Err(LineError::Frame(
                    serde_json::from_str::<serde_json::Value>("{").unwrap_err(),
                ))]);
                Ok(WatchLines::from_batches(futures::stream::iter(all)))
            }
            Some(Opened::Gone) => Err(ApiError::Gone("too old resource version".into())),
            Some(Opened::Refused) => Err(ApiError::Kube(kube::Error::Service(
                "connection refused".into(),
            ))),
            Some(Opened::Hang) => std::future::pending().await,
        }
    }
}

fn event(uid: &str, rv: &str, last: &str) -> String {
    format!(
        r#"{{"metadata":{{"uid":"{uid}","resourceVersion":"{rv}","namespace":"shop"}},
        "involvedObject":{{"kind":"Pod","name":"api-0","namespace":"shop"}},"reason":"Started",
        "count":1,"lastTimestamp":"{last}"}}"#
    )
}

fn upsert(json: String) -> Line {
    Line::Upsert(RawValue::from_string(json).unwrap())
}

fn bookmark(rv: &str) -> Line {
    Line::Bookmark {
        resource_version: rv.into(),
    }
}

fn token(rv: &str, timestamp_ms: i64) -> ResumeToken {
    ResumeToken {
        resource_version: rv.into(),
        timestamp_ms,
    }
}

const T0: &str = "2026-11-22T10:00:00Z";
const T1: &str = "2026-11-22T10:00:01Z";
const T1_MS: i64 = 1_795_341_601_000;
const T2: &str = "2026-11-22T10:00:02Z";

fn journal() -> Journal {
    Journal::with_store(
        Box::new(MemoryStore::default()),
        PathBuf::from("(memory)"),
        1 << 30,
    )
    .unwrap()
}

fn watcher(api: &Scripted, journal: &Journal) -> Watcher<Scripted> {
    Watcher::new(
        api.clone(),
        journal.clone(),
        WatchSettings::default(),
        Metrics::new(),
    )
}

fn uids(journal: &Journal) -> Vec<String> {
    journal
        .iter()
        .map(|r| r.unwrap().record.unwrap().header)
        .filter(|h| h.kind == RecordKind::Event)
        .map(|h| h.uid)
        .collect()
}

fn gaps(journal: &Journal) -> usize {
    journal
        .iter()
        .filter(|r| r.as_ref().unwrap().record.as_ref().unwrap().header.kind == RecordKind::Gap)
        .count()
}

#[tokio::test(start_paused = true)]
async fn a_start_with_a_token_watches_from_it_without_listing() {
    let (api, journal) = (Scripted::default(), journal());
    journal.set_token(&token("40", 0)).unwrap();
    let mut w = watcher(&api, &journal);
    let state = w.first_state().await.unwrap();
    assert_eq!(state, State::Watching(token("40", 0)));
    api.then(Opened::Lines(vec![upsert(event("a", "41", T1))]));
    let stop = CancellationToken::new();
    let next = w.step(state, &stop).await.unwrap();
    assert_eq!(
        next,
        State::Watching(token("41", T1_MS)),
        "the API server ended the watch"
    );
    assert_eq!(api.calls(), [Call::Watch("40".into())]);
    assert_eq!(uids(&journal), ["a"]);
    assert_eq!(journal.resume_token().unwrap(), Some(token("41", T1_MS)));
}

#[tokio::test(start_paused = true)]
async fn a_first_start_lists_every_page_then_watches_from_the_lists_version() {
    let (api, journal) = (Scripted::default(), journal());
    api.page(
        "100",
        &[event("a", "90", T1), event("b", "91", T1)],
        Some("c1"),
    )
    .page("100", &[event("c", "92", T2)], None);
    let mut w = watcher(&api, &journal);
    let state = w.first_state().await.unwrap();
    assert_eq!(state, State::Listing(None));
    let next = w.step(state, &CancellationToken::new()).await.unwrap();
    assert_eq!(next, State::Watching(token("100", T1_MS + 1000)));
    assert_eq!(
        api.calls(),
        [Call::List(None), Call::List(Some("c1".into()))]
    );
    assert_eq!(uids(&journal), ["a", "b", "c"]);
    assert_eq!(gaps(&journal), 0, "a first list is not a gap");
}

#[tokio::test(start_paused = true)]
async fn an_expired_token_relists_and_journals_a_gap() {
    let (api, journal) = (Scripted::default(), journal());
    journal
        .append(
            &[record_of(event("a", "90", T1).as_bytes())],
            Some(&token("90", T1_MS)),
        )
        .unwrap();
    api.then(Opened::Gone)
        .page("200", &[event("a", "90", T1), event("b", "150", T2)], None);
    let mut w = watcher(&api, &journal);
    let stop = CancellationToken::new();
    let state = w
        .step(State::Watching(token("90", T1_MS)), &stop)
        .await
        .unwrap();
    assert_eq!(state, State::Listing(Some(token("90", T1_MS))));
    let state = w.step(state, &stop).await.unwrap();
    assert_eq!(state, State::Watching(token("200", T1_MS + 1000)));
    assert_eq!(
        uids(&journal),
        ["a", "b"],
        "a, journaled before, is not journaled again"
    );
    assert_eq!(gaps(&journal), 1);
    assert!(w.metrics.encode().contains("evrelay_relists_total 1"));
}

#[tokio::test(start_paused = true)]
async fn a_relist_onto_an_empty_index_keeps_events_from_the_tokens_second_on() {
    let (api, journal) = (Scripted::default(), journal());
    let items = [
        event("old", "80", T0),
        event("same-second", "85", T1),
        event("new", "150", T2),
    ];
    api.page("200", &items, None);
    let mut w = watcher(&api, &journal);
    let state = State::Listing(Some(token("90", T1_MS + 400)));
    w.step(state, &CancellationToken::new()).await.unwrap();
    assert_eq!(uids(&journal), ["same-second", "new"]);
}

#[tokio::test(start_paused = true)]
async fn an_event_dated_in_the_future_does_not_carry_the_token_with_it() {
    let (api, journal) = (Scripted::default(), journal());
    api.then(Opened::Lines(vec![upsert(event(
        "future",
        "41",
        "9999-12-30T00:00:00Z",
    ))]));
    let mut w = watcher(&api, &journal);
    let next = w
        .step(State::Watching(token("40", 0)), &CancellationToken::new())
        .await
        .unwrap();
    let State::Watching(t) = next else {
        panic!("{next:?}")
    };
    let limit = jiff::Timestamp::now().as_millisecond();
    assert!(t.timestamp_ms <= limit, "{t:?}");
    assert!(
        t.timestamp_ms > 0,
        "the token took the time it was received"
    );
    assert_eq!(uids(&journal), ["future"], "journaled all the same");
}

#[tokio::test(start_paused = true)]
async fn an_expired_continue_token_restarts_the_list() {
    let (api, journal) = (Scripted::default(), journal());
    api.page("100", &[event("a", "90", T1)], Some("c1"))
        .list_gone()
        .page("120", &[event("a", "90", T1)], Some("c2"))
        .page("120", &[event("b", "110", T2)], None);
    let mut w = watcher(&api, &journal);
    let next = w
        .step(State::Listing(None), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(next, State::Watching(token("120", T1_MS + 1000)));
    assert_eq!(
        api.calls(),
        [
            Call::List(None),
            Call::List(Some("c1".into())),
            Call::List(None),
            Call::List(Some("c2".into())),
        ]
    );
    assert_eq!(
        uids(&journal),
        ["a", "b"],
        "the restart journals nothing twice"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stalled_watch_is_reopened_from_where_it_got() {
    let (api, journal) = (Scripted::default(), journal());
    api.then(Opened::Stall(vec![upsert(event("a", "41", T1))]));
    let mut w = watcher(&api, &journal);
    let stop = CancellationToken::new();
    let started = tokio::time::Instant::now();
    let next = w
        .step(State::Watching(token("40", 0)), &stop)
        .await
        .unwrap();
    assert_eq!(
        next,
        State::Backoff(Box::new(State::Watching(token("41", T1_MS))))
    );
    assert!(started.elapsed() >= WatchSettings::default().stall_timeout);
    assert!(
        w.metrics
            .encode()
            .contains("evrelay_watch_restarts_total 1")
    );
    // After the backoff, the watch reopens from the token reached.
    let next = w.step(next, &stop).await.unwrap();
    assert_eq!(next, State::Watching(token("41", T1_MS)));
}

#[tokio::test(start_paused = true)]
async fn a_broken_stream_keeps_what_arrived_and_resumes_after_a_backoff() {
    let (api, journal) = (Scripted::default(), journal());
    api.then(Opened::Break(vec![upsert(event("a", "41", T1))]))
        .then(Opened::Refused)
        .then(Opened::Lines(vec![upsert(event("b", "42", T2))]));
    let mut w = watcher(&api, &journal);
    let stop = CancellationToken::new();
    let mut state = State::Watching(token("40", 0));
    for _ in 0..5 {
        state = w.step(state, &stop).await.unwrap();
    }
    assert_eq!(
        api.calls(),
        [
            Call::Watch("40".into()),
            Call::Watch("41".into()),
            Call::Watch("41".into())
        ]
    );
    assert_eq!(uids(&journal), ["a", "b"]);
    assert!(
        w.metrics
            .encode()
            .contains("evrelay_watch_restarts_total 2")
    );
}

#[tokio::test(start_paused = true)]
async fn bookmarks_move_the_token_without_records() {
    let (api, journal) = (Scripted::default(), journal());
    api.then(Opened::Lines(vec![bookmark("77")]));
    let mut w = watcher(&api, &journal);
    let next = w
        .step(State::Watching(token("40", 5)), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(next, State::Watching(token("77", 5)));
    assert!(journal.is_empty());
    assert_eq!(journal.resume_token().unwrap(), Some(token("77", 5)));
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_a_silent_watch() {
    let (api, journal) = (Scripted::default(), journal());
    let w = watcher(&api, &journal);
    journal.set_token(&token("40", 0)).unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn(w.run(stop.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    run.await.unwrap().unwrap();
    assert_eq!(api.calls(), [Call::Watch("40".into())]);
}

#[tokio::test(start_paused = true)]
async fn a_watch_open_that_never_answers_is_given_up_at_its_deadline() {
    let (api, journal) = (Scripted::default(), journal());
    api.then(Opened::Hang);
    let mut w = watcher(&api, &journal);
    let started = tokio::time::Instant::now();
    let next = w
        .step(State::Watching(token("40", 0)), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        next,
        State::Backoff(Box::new(State::Watching(token("40", 0))))
    );
    assert_eq!(started.elapsed(), WatchSettings::default().request_timeout);
    let metrics = w.metrics.encode();
    assert!(
        metrics.contains("evrelay_watch_restarts_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("evrelay_apiserver_reachable 0"),
        "{metrics}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_list_page_that_never_answers_is_given_up_and_listed_again() {
    let (api, journal) = (Scripted::default(), journal());
    api.list_hangs().page("100", &[event("a", "90", T1)], None);
    let mut w = watcher(&api, &journal);
    let stop = CancellationToken::new();
    let state = w.step(State::Listing(None), &stop).await.unwrap();
    assert_eq!(state, State::Backoff(Box::new(State::Listing(None))));
    let state = w.step(state, &stop).await.unwrap();
    let state = w.step(state, &stop).await.unwrap();
    assert_eq!(state, State::Watching(token("100", T1_MS)));
    assert_eq!(uids(&journal), ["a"]);
}

#[tokio::test(start_paused = true)]
async fn no_watch_for_the_establish_timeout_ends_the_watcher() {
    let (api, journal) = (Scripted::default(), journal());
    for _ in 0..100 {
        api.then(Opened::Refused);
    }
    let mut w = watcher(&api, &journal);
    let stop = CancellationToken::new();
    let started = tokio::time::Instant::now();
    let mut state = State::Watching(token("40", 0));
    let err = loop {
        match w.step(state, &stop).await {
            Ok(next) => state = next,
            Err(e) => break e,
        }
    };
    let WatchError::NotEstablished { waited, last } = err else {
        panic!("{err}")
    };
    let limit = WatchSettings::default().establish_timeout;
    assert!(waited >= limit && started.elapsed() >= limit, "{waited:?}");
    assert!(
        started.elapsed() < limit + MAX_RETRY + Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(last.contains("connection refused"), "{last}");
}

#[tokio::test(start_paused = true)]
async fn pages_of_large_events_are_made_smaller() {
    let (api, journal) = (Scripted::default(), journal());
    let big = |uid: &str, rv: &str| {
        let message = "x".repeat(300 * 1024);
        format!(
            r#"{{"metadata":{{"uid":"{uid}","resourceVersion":"{rv}"}},"reason":"Big","message":"{message}","count":1,"lastTimestamp":"{T1}"}}"#
        )
    };
    api.page("100", &[big("a", "1"), big("b", "2")], Some("c1"))
        .page("100", &[big("c", "3")], None);
    let mut w = watcher(&api, &journal);
    w.step(State::Listing(None), &CancellationToken::new())
        .await
        .unwrap();
    let limits = api.limits();
    assert_eq!(
        limits[0], FIRST_PAGE,
        "the size of the events is not known yet"
    );
    // 8 MiB of ~300 KiB events: 27 per page.
    assert_eq!(limits[1], 27, "{limits:?}");
    assert_eq!(uids(&journal), ["a", "b", "c"]);
}

#[tokio::test(start_paused = true)]
async fn pages_of_small_events_grow_to_the_configured_size() {
    let (api, journal) = (Scripted::default(), journal());
    api.page("100", &[event("a", "1", T1)], Some("c1"))
        .page("100", &[event("b", "2", T1)], None);
    let mut w = watcher(&api, &journal);
    w.step(State::Listing(None), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        api.limits(),
        [FIRST_PAGE, WatchSettings::default().list_page_size]
    );
}
