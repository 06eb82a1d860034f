//! The watcher's rules, one step at a time, against a scripted API server and a
//! journal in memory; time is paused, so stalls and backoffs take no real time.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

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
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    List(Option<String>),
    Watch(String),
}

#[derive(Default)]
struct Script {
    lists: VecDeque<Result<EventList, ApiError>>,
    watches: VecDeque<Opened>,
    calls: Vec<Call>,
}

#[derive(Clone, Default)]
struct Scripted(Arc<Mutex<Script>>);

impl Scripted {
    fn page(&self, rv: &str, items: &[String], next: Option<&str>) -> &Self {
        let items = items
            .iter()
            .map(|i| RawValue::from_string(i.clone()).unwrap())
            .collect();
        self.0.lock().unwrap().lists.push_back(Ok(EventList {
            metadata: ListMeta {
                resource_version: rv.into(),
                continue_token: next.map(Into::into),
            },
            items,
        }));
        self
    }

    fn list_gone(&self) -> &Self {
        let gone = Err(ApiError::Gone("continue token expired".into()));
        self.0.lock().unwrap().lists.push_back(gone);
        self
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
    async fn list(&self, _: u32, continue_token: Option<String>) -> Result<EventList, ApiError> {
        let mut s = self.0.lock().unwrap();
        s.calls.push(Call::List(continue_token));
        s.lists.pop_front().expect("an unscripted LIST")
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
async fn a_relist_onto_an_empty_index_keeps_only_events_newer_than_the_token() {
    let (api, journal) = (Scripted::default(), journal());
    api.page(
        "200",
        &[event("old", "80", T1), event("new", "150", T2)],
        None,
    );
    let mut w = watcher(&api, &journal);
    let state = State::Listing(Some(token("90", T1_MS)));
    w.step(state, &CancellationToken::new()).await.unwrap();
    assert_eq!(uids(&journal), ["new"]);
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
