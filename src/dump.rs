//! `evrelay dump`: what the journal holds, read-only, as JSON lines or a table,
//! filtered by state, kind, time, namespace and reason.
//!
//! It reads a journal directory itself (a stopped evrelay's, or a copy of a PVC),
//! or asks a running evrelay through its admin endpoint (`/dump`, `/dump/meta`):
//! sled locks the directory of a running journal, and the daemon is the one
//! process allowed to open it.
//!
//! The output never contains the API key: the journal never holds it.

use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::journal::{Journal, JournalError, StoredRecord};
use crate::record::RecordKind;
use crate::ship::Window;

/// Why a dump stopped.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("writing the dump: {0}")]
    Write(#[from] std::io::Error),
    #[error("asking the admin endpoint {url}: {source}")]
    Admin {
        url: String,
        #[source]
        source: reqwest::Error,
    },
}

/// Where a dump reads from.
pub enum Source {
    /// A journal directory, opened here (evrelay must not be running on it), and
    /// the sink whose cursor says what is shipped.
    Journal(Journal, &'static str),
    /// A running evrelay's admin endpoint, e.g. `http://127.0.0.1:8080`.
    Admin(String),
}

/// The header with which `/dump` says how far it scanned, for `--follow`.
pub const SCANNED_THROUGH: &str = "x-evrelay-scanned-through";
/// The header with which `/dump` says its page was full: ask again after it.
pub const MORE: &str = "x-evrelay-more";

impl Source {
    /// The records `filter` keeps, the sequence number scanned through, and
    /// whether more may follow it (the admin endpoint answers in pages).
    pub async fn lines(&self, filter: &Filter) -> Result<(Vec<Line>, u64, bool), DumpError> {
        match self {
            Source::Journal(journal, sink) => {
                Ok((lines(journal, sink, filter)?, journal.head(), false))
            }
            Source::Admin(base) => {
                let url = format!("{}/dump", base.trim_end_matches('/'));
                let admin = |source| DumpError::Admin {
                    url: url.clone(),
                    source,
                };
                let response = reqwest::Client::new()
                    .get(&url)
                    .query(filter)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .map_err(admin)?;
                let header = |name| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let scanned = header(SCANNED_THROUGH)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let more = header(MORE).is_some_and(|v| v == "true");
                let text = response.text().await.map_err(admin)?;
                let lines = text
                    .lines()
                    .map(serde_json::from_str)
                    .collect::<Result<Vec<Line>, _>>()
                    .map_err(std::io::Error::from)?;
                Ok((lines, scanned, more))
            }
        }
    }

    pub async fn meta(&self) -> Result<serde_json::Value, DumpError> {
        match self {
            Source::Journal(journal, sink) => meta_value(journal, &[sink]),
            Source::Admin(base) => {
                let url = format!("{}/dump/meta", base.trim_end_matches('/'));
                let admin = |source| DumpError::Admin {
                    url: url.clone(),
                    source,
                };
                reqwest::get(&url)
                    .await
                    .and_then(|r| r.error_for_status())
                    .map_err(admin)?
                    .json()
                    .await
                    .map_err(admin)
            }
        }
    }
}

/// Prints what `filter` keeps; with `follow`, goes on printing new records every
/// second until interrupted (`limit` then applies to the first page only).
pub async fn run(
    source: &Source,
    mut filter: Filter,
    format: Format,
    follow: bool,
    out: &mut impl Write,
) -> Result<(), DumpError> {
    if format == Format::Table {
        table_header(out)?;
    }
    loop {
        let (lines, scanned, more) = source.lines(&filter).await?;
        print(&lines, format, out)?;
        if more {
            // The next page of the same scan.
            filter.after = Some(scanned);
            filter.limit = filter.limit.map(|l| l.saturating_sub(lines.len()));
            if filter.limit != Some(0) {
                continue;
            }
        }
        if !follow {
            return Ok(());
        }
        let last = lines.last().map(|l| l.seq);
        filter.after = Some(match (filter.limit, last) {
            (Some(limit), Some(last)) if lines.len() >= limit => last,
            _ => scanned.max(filter.after.unwrap_or(0)),
        });
        filter.limit = None;
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// One line of `dump`. Also what the admin endpoint's `/dump` sends, so a dump
/// of a running evrelay prints the same way.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Line {
    pub seq: u64,
    /// event | gap | damaged
    pub kind: String,
    /// pending | shipped | dead, against the sink's cursor and dead letters.
    pub state: String,
    /// Why the intake refused it, for dead records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub involved_kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub involved_name: String,
    /// The event's reason; for a gap, why events may be missing.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub event_type: String,
    #[serde(default)]
    pub count: u32,
    /// `series.count`, for events recorded through `events.k8s.io/v1`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub series_count: u32,
    /// `series.lastObservedTime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series_last_observed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_timestamp: Option<String>,
    #[serde(default)]
    pub received_at: Option<String>,
    /// For filtering by time: the event's last time, else when it was received.
    #[serde(skip)]
    at_ms: Option<i64>,
}

/// Which records to print. Empty means all.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Filter {
    pub pending: bool,
    pub shipped: bool,
    pub dead: bool,
    /// Only gap markers.
    pub gaps: bool,
    /// Only events (no gap markers, no damaged records).
    pub events: bool,
    /// Records at or after this time (Unix ms), by the event's last timestamp.
    pub since_ms: Option<i64>,
    /// Records before this time (Unix ms).
    pub until_ms: Option<i64>,
    pub namespace: Option<String>,
    pub reason: Option<String>,
    /// Only records after this sequence number (`--follow` resumes with it).
    pub after: Option<u64>,
    /// At most this many records.
    pub limit: Option<usize>,
}

impl Filter {
    /// What a replay of `window` sends, as `dump` lines: shipped events (not dead
    /// letters) last seen in the window.
    pub fn replayed(window: Window) -> Filter {
        Filter {
            shipped: true,
            events: true,
            since_ms: Some(window.since_ms),
            until_ms: window.until_ms,
            ..Default::default()
        }
    }

    fn keeps(&self, line: &Line) -> bool {
        let states = [
            (self.pending, "pending"),
            (self.shipped, "shipped"),
            (self.dead, "dead"),
        ];
        let any_state = states.iter().any(|(on, _)| *on);
        if any_state && !states.iter().any(|(on, s)| *on && line.state == *s) {
            return false;
        }
        if self.gaps && line.kind != "gap" {
            return false;
        }
        if self.events && line.kind != "event" {
            return false;
        }
        if let Some(ns) = &self.namespace
            && line.namespace != *ns
        {
            return false;
        }
        if let Some(reason) = &self.reason
            && !line.reason.eq_ignore_ascii_case(reason)
        {
            return false;
        }
        match (line.at_ms, self.since_ms, self.until_ms) {
            (Some(at), Some(since), _) if at < since => false,
            (Some(at), _, Some(until)) if at >= until => false,
            _ => true,
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn rfc3339(ms: Option<i64>) -> Option<String> {
    jiff::Timestamp::from_millisecond(ms?)
        .ok()
        .map(|t| t.to_string())
}

/// The records `filter` keeps, oldest first; states against `sink`'s cursor.
pub fn lines(journal: &Journal, sink: &str, filter: &Filter) -> Result<Vec<Line>, DumpError> {
    let shipped_through = journal.shipped_through(sink)?;
    let mut out = Vec::new();
    let after = filter.after.unwrap_or(0);
    for item in journal.iter_after(after) {
        if filter.limit.is_some_and(|l| out.len() >= l) {
            break;
        }
        let StoredRecord { seq, record } = item?;
        let dead = journal.dead_letter(seq)?;
        let state = match (&dead, seq <= shipped_through) {
            (Some(_), _) => "dead",
            (None, true) => "shipped",
            (None, false) => "pending",
        };
        let dead_reason = dead.map(|d| match d.status {
            Some(status) => format!("{status}: {}", d.reason),
            None => d.reason,
        });
        let line = match &record {
            Ok(r) => {
                let h = &r.header;
                Line {
                    seq,
                    kind: match h.kind {
                        RecordKind::Event => "event",
                        RecordKind::Gap => "gap",
                    }
                    .into(),
                    state: state.into(),
                    dead_reason,
                    error: None,
                    uid: h.uid.clone(),
                    resource_version: h.resource_version.clone(),
                    namespace: h.namespace.clone(),
                    involved_kind: h.involved_kind.clone(),
                    involved_name: h.involved_name.clone(),
                    reason: h.reason.clone(),
                    event_type: h.event_type.clone(),
                    count: h.count,
                    series_count: h.series_count,
                    series_last_observed: rfc3339(h.series_last_observed_ms),
                    last_timestamp: rfc3339(h.last_timestamp_ms),
                    received_at: rfc3339(Some(h.received_at_ms)),
                    at_ms: Some(h.last_timestamp_ms.unwrap_or(h.received_at_ms)),
                }
            }
            Err(e) => Line {
                seq,
                kind: "damaged".into(),
                state: state.into(),
                dead_reason,
                error: Some(e.to_string()),
                uid: String::new(),
                resource_version: String::new(),
                namespace: String::new(),
                involved_kind: String::new(),
                involved_name: String::new(),
                reason: String::new(),
                event_type: String::new(),
                count: 0,
                series_count: 0,
                series_last_observed: None,
                last_timestamp: None,
                received_at: None,
                at_ms: None,
            },
        };
        if filter.keeps(&line) {
            out.push(line);
        }
    }
    Ok(out)
}

/// How `dump` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    Json,
    /// A table for people.
    Table,
}

/// The table's header line.
pub fn table_header(out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:>8}  {:<7}  {:<5}  {:<20}  {:<16}  {:<32}  {:<22}  {:<7}  {:>5}",
        "SEQ", "STATE", "KIND", "LAST SEEN", "NAMESPACE", "OBJECT", "REASON", "TYPE", "COUNT"
    )
}

/// Prints `lines` in `format`.
pub fn print(lines: &[Line], format: Format, out: &mut impl Write) -> Result<(), DumpError> {
    for line in lines {
        match format {
            Format::Json => {
                serde_json::to_writer(&mut *out, line).map_err(std::io::Error::from)?;
                out.write_all(b"\n")?;
            }
            Format::Table => {
                let object = match (line.involved_kind.as_str(), line.involved_name.as_str()) {
                    ("", "") => String::new(),
                    (kind, name) => format!("{kind}/{name}"),
                };
                let reason = match (&line.dead_reason, &line.error) {
                    (_, Some(e)) => e.clone(),
                    (Some(d), _) => format!("{} ({d})", line.reason),
                    _ => line.reason.clone(),
                };
                let when = line
                    .last_timestamp
                    .as_deref()
                    .or(line.received_at.as_deref())
                    .unwrap_or("");
                writeln!(
                    out,
                    "{:>8}  {:<7}  {:<5}  {:<20}  {:<16}  {:<32}  {:<22}  {:<7}  {:>5}",
                    line.seq,
                    line.state,
                    cut(&line.kind, 5),
                    cut(when, 20),
                    cut(&line.namespace, 16),
                    cut(&object, 32),
                    cut(&reason, 22),
                    cut(&line.event_type, 7),
                    line.count.max(line.series_count),
                )?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// At most `n` characters, with `…` where cut.
fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

/// The journal's bookkeeping, with the cursor and shipped token of each of `sinks`.
pub fn meta_value(journal: &Journal, sinks: &[&str]) -> Result<serde_json::Value, DumpError> {
    let mut shipped_through = serde_json::Map::new();
    let mut shipped_token = serde_json::Map::new();
    for sink in sinks {
        shipped_through.insert((*sink).into(), journal.shipped_through(sink)?.into());
        let token =
            serde_json::to_value(journal.shipped_token(&[sink])?).map_err(std::io::Error::from)?;
        shipped_token.insert((*sink).into(), token);
    }
    let value = serde_json::json!({
        "schema_version": journal.schema_version()?,
        "resume_token": journal.resume_token()?,
        "shipped_through": shipped_through,
        "shipped_token": shipped_token,
        "term": journal.term()?,
        "records": journal.len(),
        "pending": journal.head().saturating_sub(journal.lowest_shipped_through(sinks)?),
        "dead_letters": journal.dead_count()?,
        "counters": journal.counters()?,
        "bytes_on_disk": journal.size_on_disk()?,
        "path": journal.path(),
        "state_file": journal.expected_state().map(|s| serde_json::json!({
            "head": s.head,
            "shipped": s.shipped,
            "resume_rv": s.resume_rv,
            "shipped_rv": s.shipped_rv,
            "epoch": s.epoch,
            "damaged": s.damaged,
        })),
        // Whether the journal holds what its state file says it should.
        "check": match journal.verify() {
            Ok(()) => "ok".to_owned(),
            Err(e) => e.to_string(),
        },
    });
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::JournalSettings;
    use crate::record::{Gap, Header, Record, ResumeToken};

    const SINK: &str = "datadog";

    fn journal(dir: &std::path::Path) -> Journal {
        let j = Journal::open(&JournalSettings {
            data_dir: dir.into(),
            cache_capacity_bytes: 1 << 20,
            ..Default::default()
        })
        .unwrap();
        let event = |uid: &str, ns: &str, reason: &str, at: i64| {
            let mut h = Header::blank(RecordKind::Event, at);
            h.uid = uid.into();
            h.namespace = ns.into();
            h.reason = reason.into();
            h.last_timestamp_ms = Some(at);
            Record {
                header: h,
                raw: b"{}".to_vec(),
            }
        };
        let token = ResumeToken {
            resource_version: "9".into(),
            timestamp_ms: 0,
        };
        j.append(
            &[
                event("a", "shop", "Started", 1_000),
                event("b", "shop", "BackOff", 2_000),
                event("c", "web", "Started", 3_000),
                Record::gap(Gap::ResumeTokenExpired, serde_json::json!({})),
            ],
            Some(&token),
        )
        .unwrap();
        j.mark_shipped(SINK, 1, &[]).unwrap();
        j
    }

    fn seqs(j: &Journal, f: Filter) -> Vec<u64> {
        lines(j, SINK, &f).unwrap().iter().map(|l| l.seq).collect()
    }

    #[test]
    fn filters_combine() {
        let dir = tempfile::tempdir().unwrap();
        let j = journal(dir.path());
        assert_eq!(seqs(&j, Filter::default()), [1, 2, 3, 4]);
        let f = |f: Filter| seqs(&j, f);
        assert_eq!(
            f(Filter {
                shipped: true,
                ..Default::default()
            }),
            [1]
        );
        assert_eq!(
            f(Filter {
                pending: true,
                ..Default::default()
            }),
            [2, 3, 4]
        );
        assert_eq!(
            f(Filter {
                gaps: true,
                ..Default::default()
            }),
            [4]
        );
        assert_eq!(
            f(Filter {
                namespace: Some("shop".into()),
                pending: true,
                ..Default::default()
            }),
            [2]
        );
        assert_eq!(
            f(Filter {
                reason: Some("started".into()),
                ..Default::default()
            }),
            [1, 3]
        );
        assert_eq!(
            f(Filter {
                since_ms: Some(2_000),
                until_ms: Some(3_000),
                ..Default::default()
            }),
            [2]
        );
        assert_eq!(
            f(Filter {
                after: Some(2),
                limit: Some(1),
                ..Default::default()
            }),
            [3]
        );
    }

    #[test]
    fn table_has_one_row_per_record() {
        let dir = tempfile::tempdir().unwrap();
        let j = journal(dir.path());
        let mut out = Vec::new();
        table_header(&mut out).unwrap();
        print(
            &lines(&j, SINK, &Filter::default()).unwrap(),
            Format::Table,
            &mut out,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 5, "{text}");
        assert!(text.lines().nth(1).unwrap().contains("shipped"), "{text}");
        assert!(text.contains("ResumeTokenExpired"), "{text}");
    }

    #[tokio::test]
    async fn follow_prints_records_as_they_arrive() {
        let dir = tempfile::tempdir().unwrap();
        let j = journal(dir.path());
        let source = Source::Journal(j.clone(), SINK);
        let mut out = Vec::new();
        let later = async {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            let mut h = Header::blank(RecordKind::Event, 5_000);
            h.uid = "e".into();
            j.append(
                &[Record {
                    header: h,
                    raw: b"{}".to_vec(),
                }],
                None,
            )
            .unwrap();
            // Two polls of `--follow` (one per second) see it.
            tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
        };
        tokio::select! {
            r = run(&source, Filter::default(), Format::Json, true, &mut out) => panic!("follow ended: {r:?}"),
            () = later => {}
        }
        let text = String::from_utf8(out).unwrap();
        let seqs: Vec<u64> = text
            .lines()
            .map(|l| serde_json::from_str::<Line>(l).unwrap().seq)
            .collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5], "each record once, the new one last");
    }

    #[test]
    fn times_parse_as_rfc3339_or_ago() {
        use crate::cli::parse_time;
        assert_eq!(parse_time("1970-01-01T00:00:01Z").unwrap(), 1_000);
        let ago = jiff::Timestamp::now().as_millisecond() - parse_time("15m").unwrap();
        assert!((899_000..=901_000).contains(&ago), "{ago}");
        assert!(parse_time("1d").is_ok());
        assert!(parse_time("yesterday").unwrap_err().contains("RFC 3339"));
    }
}
