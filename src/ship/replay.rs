//! `evrelay replay`: ships a past window of the journal again, for when Datadog
//! lost what it had accepted. Each event goes as it went the first time, with one
//! more tag, `evrelay_replay:<id>`.
//!
//! Events are mapped by the shipper's own [`Transform`](crate::datadog::Transform),
//! batch by batch, so a replay bundles and filters as the configuration says now.
//!
//! A replay moves no cursor and touches no record: live shipping goes on beside it
//! and never waits for it. It sends only records already shipped (pending ones are
//! on their way anyway) and not dead-lettered (the intake refused them for good).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Delays, SINK, ShipError, Shipper, Transport, occurrences};
use crate::datadog;
use crate::journal::{Journal, JournalError, Record, RecordKind};

/// A time window, by each event's last timestamp: `since` ≤ t < `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Window {
    pub since_ms: i64,
    pub until_ms: Option<i64>,
}

impl Window {
    fn contains(&self, t: i64) -> bool {
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
}

/// What `--dry-run` lists: as `dump` lines, the records [`candidates`] picks.
pub fn dry_run_filter(window: Window) -> crate::dump::Filter {
    crate::dump::Filter {
        shipped: true,
        events: true,
        since_ms: Some(window.since_ms),
        until_ms: window.until_ms,
        ..Default::default()
    }
}

/// The records a replay of `window` sends: shipped, not dead-lettered events.
pub fn candidates(journal: &Journal, window: Window) -> Result<Vec<(u64, Record)>, JournalError> {
    let shipped = journal.shipped_through(SINK)?;
    let mut out = Vec::new();
    for item in journal.iter() {
        let stored = item?;
        if stored.seq > shipped {
            break;
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
    }
    Ok(out)
}

impl<T: Transport> Shipper<T> {
    /// Sends the events of `window` again, in batches, until done or `shutdown`.
    pub async fn replay(
        &self,
        window: Window,
        shutdown: &CancellationToken,
    ) -> Result<ReplayReport, ShipError> {
        let journal = self.journal.clone();
        let records = tokio::task::spawn_blocking(move || candidates(&journal, window))
            .await
            .expect("journal task panicked")?;
        let replay_id = jiff::Timestamp::now().as_second().to_string();
        let tag = datadog::replay_tag(&replay_id);
        tracing::info!(%replay_id, events = records.len(), ?window, "replay started");
        let mut report = ReplayReport {
            replay_id,
            ..Default::default()
        };
        let mut delays = Delays::new(
            Duration::from_millis(500),
            Duration::from_secs(self.config.max_backoff_seconds),
        );
        for chunk in records.chunks(self.config.max_events) {
            let results: Vec<_> = chunk.iter().map(|(seq, r)| (*seq, Ok(r.clone()))).collect();
            let occurrences = occurrences(results.iter().map(|(seq, r)| (*seq, r)));
            let mut items = self.transform.map(&occurrences).outbound;
            for item in &mut items {
                item.event.tags.push(tag.clone());
            }
            let records = items.iter().map(|i| i.seqs.len()).sum::<usize>();
            let unbundle = |seqs: &[u64]| {
                let mut singles = self.transform.unbundle(&occurrences, seqs);
                for single in &mut singles {
                    single.event.tags.push(tag.clone());
                }
                singles
            };
            let Some(settled) = self
                .attempts(&mut delays, shutdown, &unbundle)
                .settle(&items)
                .await
            else {
                tracing::warn!(replay_id = %report.replay_id, sent = report.events, "replay interrupted by shutdown");
                return Ok(report);
            };
            report.requests += settled.requests;
            report.refused += settled.dead_letters.len();
            report.events += records - settled.dead_letters.len();
        }
        report.complete = true;
        tracing::info!(replay_id = %report.replay_id, events = report.events, refused = report.refused, "replay done");
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{DeadLetter, Header, JournalConfig};

    #[test]
    fn candidates_are_shipped_events_in_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&JournalConfig {
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
                Record::gap("ResumeTokenExpired", serde_json::json!({})),
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
        let uids: Vec<_> = candidates(&j, window)
            .unwrap()
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
        assert_eq!(candidates(&j, open).unwrap().len(), 3);
    }
}
