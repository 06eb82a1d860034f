//! `evrelay replay`: ships a past window of the journal again, for when Datadog
//! lost what it had accepted. Each event goes as it went the first time, with one
//! more tag, `evrelay_replay:<id>`.
//!
//! Events are mapped by the shipper's own sink, batch by batch, so a replay bundles
//! and filters as the configuration says now.
//!
//! A replay moves no cursor and touches no record: live shipping goes on beside it
//! and never waits for it. It sends only records already shipped (pending ones are
//! on their way anyway) and not dead-lettered (the intake refused them for good).

use tokio_util::sync::CancellationToken;

use super::{Backoff, FIRST_RETRY, ShipError, Shipper, Sink, occurrences};
use crate::journal::{Journal, JournalError};
use crate::record::{Record, RecordKind};

/// A time window, by each event's last timestamp: `since` ≤ t < `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Window {
    pub since_ms: i64,
    pub until_ms: Option<i64>,
}

impl Window {
    pub fn contains(&self, t: i64) -> bool {
        t >= self.since_ms && self.until_ms.is_none_or(|u| t < u)
    }
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplayReport {
    pub replay_id: String,
    pub events: usize,
    pub requests: u64,
    /// Events the intake refused this time (logged; the journal is not changed).
    pub refused: usize,
    /// False when shutdown came first: the rest was not sent.
    pub complete: bool,
    /// True when `max_events` stopped it before the end of the window.
    #[serde(default)]
    pub capped: bool,
}

/// How much a replay may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// At most this many events, the oldest of the window first; `None`: all.
    pub max_events: Option<usize>,
}

/// One chunk of a replay: the records, by sequence number, and the sequence the
/// scan stopped at when there may be more (`None`: the end).
pub type Chunk = (Vec<(u64, Record)>, Option<u64>);

/// The next records a replay of `window` sends for `sink` (shipped there, not
/// dead-lettered, events), after sequence `after`, at most `max` of them; and the
/// sequence the scan stopped at when there may be more (`None`: the end). A replay
/// reads chunk by chunk, so it holds one chunk at a time whatever the window.
pub fn candidates(
    journal: &Journal,
    sink: &str,
    window: Window,
    after: u64,
    max: usize,
) -> Result<Chunk, JournalError> {
    let shipped = journal.shipped_through(sink)?;
    let mut out = Vec::new();
    for item in journal.iter_after(after) {
        let stored = item?;
        if stored.seq > shipped {
            return Ok((out, None));
        }
        let Ok(record) = stored.record else { continue };
        let h = &record.header;
        if h.kind != RecordKind::Event
            || !window.contains(h.last_timestamp_ms.unwrap_or(h.received_at_ms))
            || journal.dead_letter(stored.seq)?.is_some()
        {
            continue;
        }
        out.push((stored.seq, record));
        if out.len() >= max {
            return Ok((out, Some(stored.seq)));
        }
    }
    Ok((out, None))
}

impl<S: Sink> Shipper<S> {
    /// Sends the events of `window` again, chunk by chunk (`ship.max_events`),
    /// until done, `limits` reached, or `shutdown`.
    pub async fn replay(
        &self,
        window: Window,
        limits: Limits,
        shutdown: &CancellationToken,
    ) -> Result<ReplayReport, ShipError> {
        let sink = self.sink.name();
        let replay_id = jiff::Timestamp::now().as_second().to_string();
        tracing::info!(%replay_id, ?window, max_events = ?limits.max_events, "replay started");
        let mut report = ReplayReport {
            replay_id,
            ..Default::default()
        };
        let mut backoff = Backoff::new(FIRST_RETRY, self.settings.max_backoff);
        let mut after = 0;
        let mut taken = 0usize;
        loop {
            let room = limits.max_events.map_or(usize::MAX, |m| m - taken);
            if room == 0 {
                report.capped = true;
                break;
            }
            let max = self.settings.max_events.min(room);
            let (records, next) = self
                .journal
                .call(move |j| candidates(j, sink, window, after, max))
                .await?;
            taken += records.len();
            if !records.is_empty()
                && !self
                    .replay_chunk(&records, &mut report, &mut backoff, shutdown)
                    .await
            {
                tracing::warn!(replay_id = %report.replay_id, sent = report.events, "replay interrupted by shutdown");
                return Ok(report);
            }
            self.metrics.replayed(records.len());
            tracing::info!(replay_id = %report.replay_id, sent = report.events, refused = report.refused, "replay progress");
            match next {
                Some(seq) => after = seq,
                None => break,
            }
        }
        report.complete = true;
        tracing::info!(replay_id = %report.replay_id, events = report.events, refused = report.refused, capped = report.capped, "replay done");
        Ok(report)
    }

    /// Sends one chunk of a replay; false when shutdown came first.
    async fn replay_chunk(
        &self,
        chunk: &[(u64, Record)],
        report: &mut ReplayReport,
        backoff: &mut Backoff,
        shutdown: &CancellationToken,
    ) -> bool {
        let results: Vec<_> = chunk.iter().map(|(seq, r)| (*seq, Ok(r.clone()))).collect();
        let occurrences = occurrences(results.iter().map(|(seq, r)| (*seq, r)));
        let mut items = self.sink.map(&occurrences).outbound;
        if items.is_empty() {
            return true; // the filters keep every event of the chunk
        }
        for item in &mut items {
            self.sink.mark_replay(&mut item.item, &report.replay_id);
        }
        let records = items.iter().map(|i| i.seqs.len()).sum::<usize>();
        let replay_id = report.replay_id.clone();
        let unbundle = |seqs: &[u64]| {
            let mut singles = self.sink.unbundle(&occurrences, seqs);
            for single in &mut singles {
                self.sink.mark_replay(&mut single.item, &replay_id);
            }
            singles
        };
        let Some(settled) = self
            .attempts(backoff, shutdown, &unbundle)
            .settle(&items)
            .await
        else {
            return false;
        };
        report.requests += settled.requests;
        report.refused += settled.dead_letters.len();
        report.events += records - settled.dead_letters.len();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::JournalSettings;
    use crate::record::{DeadLetter, Gap, Header};

    const SINK: &str = "datadog";

    #[test]
    fn candidates_are_shipped_events_in_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&JournalSettings {
            data_dir: dir.path().into(),
            cache_capacity_bytes: 1 << 20,
            ..Default::default()
        })
        .unwrap();
        let event = |uid: &str, at: i64| {
            let mut h = Header::blank(RecordKind::Event, at);
            h.uid = uid.into();
            h.last_timestamp_ms = Some(at);
            Record {
                header: h,
                raw: b"{}".to_vec(),
            }
        };
        j.append(
            &[
                event("early", 100),
                event("in", 200),
                event("refused", 250),
                Record::gap(Gap::ResumeTokenExpired, serde_json::json!({})),
                event("late", 400),
                event("pending", 300),
            ],
            None,
        )
        .unwrap();
        let dead = DeadLetter {
            status: Some(400),
            reason: "x".into(),
            at_ms: 0,
        };
        j.mark_shipped(SINK, 5, &[(3, dead)]).unwrap();
        let window = Window {
            since_ms: 150,
            until_ms: Some(400),
        };
        let uids: Vec<_> = candidates(&j, SINK, window, 0, 100)
            .unwrap()
            .0
            .into_iter()
            .map(|(_, r)| r.header.uid)
            .collect();
        assert_eq!(
            uids,
            ["in"],
            "not early/late, not dead, not gaps, not pending"
        );
        let open = Window {
            since_ms: 0,
            until_ms: None,
        };
        assert_eq!(candidates(&j, SINK, open, 0, 100).unwrap().0.len(), 3);
        // In chunks: two, then the rest, then nothing.
        let (first, next) = candidates(&j, SINK, open, 0, 2).unwrap();
        assert_eq!((first.len(), next), (2, Some(2)));
        let (rest, next) = candidates(&j, SINK, open, 2, 2).unwrap();
        assert_eq!((rest.len(), next), (1, None));
    }
}
