//! `evrelay dump`: what the journal holds, read-only, as JSON lines.
//!
//! The output never contains the API key: the journal never holds it.

use std::io::Write;

use serde::Serialize;

use crate::journal::{Journal, JournalError, RecordKind, StoredRecord};
use crate::ship::SINK;

/// Why a dump stopped.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("writing the dump: {0}")]
    Write(#[from] std::io::Error),
}

/// One line of `dump`.
#[derive(Serialize)]
struct Line<'a> {
    seq: u64,
    kind: &'static str,
    /// pending | shipped | dead, against the Datadog sink's cursor and dead letters.
    state: &'static str,
    /// Why the intake refused it, for dead records.
    #[serde(skip_serializing_if = "Option::is_none")]
    dead_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "str::is_empty")]
    uid: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    resource_version: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    namespace: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    involved_kind: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    involved_name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    reason: &'a str,
    #[serde(rename = "type", skip_serializing_if = "str::is_empty")]
    event_type: &'a str,
    count: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_timestamp: Option<String>,
    received_at: Option<String>,
}

fn rfc3339(ms: Option<i64>) -> Option<String> {
    jiff::Timestamp::from_millisecond(ms?)
        .ok()
        .map(|t| t.to_string())
}

/// Writes one JSON object per record, oldest first.
pub fn records(journal: &Journal, out: &mut impl Write) -> Result<usize, DumpError> {
    let shipped_through = journal.shipped_through(SINK)?;
    let mut n = 0;
    for item in journal.iter() {
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
                    },
                    state,
                    dead_reason,
                    error: None,
                    uid: &h.uid,
                    resource_version: &h.resource_version,
                    namespace: &h.namespace,
                    involved_kind: &h.involved_kind,
                    involved_name: &h.involved_name,
                    reason: &h.reason,
                    event_type: &h.event_type,
                    count: h.count,
                    last_timestamp: rfc3339(h.last_timestamp_ms),
                    received_at: rfc3339(Some(h.received_at_ms)),
                }
            }
            Err(e) => Line {
                seq,
                kind: "damaged",
                state,
                dead_reason,
                error: Some(e.to_string()),
                uid: "",
                resource_version: "",
                namespace: "",
                involved_kind: "",
                involved_name: "",
                reason: "",
                event_type: "",
                count: 0,
                last_timestamp: None,
                received_at: None,
            },
        };
        serde_json::to_writer(&mut *out, &line).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
        n += 1;
    }
    out.flush()?;
    Ok(n)
}

/// The journal's bookkeeping, as one JSON object.
pub fn meta(journal: &Journal, out: &mut impl Write) -> Result<(), DumpError> {
    let token = journal.resume_token()?;
    let shipped_through = journal.shipped_through(SINK)?;
    let value = serde_json::json!({
        "schema_version": journal.schema_version()?,
        "resume_token": token,
        "shipped_through": { SINK: shipped_through },
        "shipped_token": { SINK: journal.shipped_token(SINK)? },
        "term": journal.term()?,
        "records": journal.len(),
        "dead_letters": journal.dead_count(),
        "counters": journal.counters()?,
        "bytes_on_disk": journal.size_on_disk()?,
        "path": journal.path(),
    });
    serde_json::to_writer_pretty(&mut *out, &value).map_err(std::io::Error::from)?;
    out.write_all(b"\n")?;
    Ok(())
}
