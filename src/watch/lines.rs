//! Framing of a watch response: one JSON object per line, `{"type": ..., "object": ...}`,
//! gathered into batches of whatever has already arrived (group commit).

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt, io::AsyncBufRead};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio_util::codec::{FramedRead, LinesCodec};
use tokio_util::compat::FuturesAsyncReadCompatExt;

/// The largest watch line accepted. etcd caps an object at 1.5 MiB; JSON escaping
/// can grow it, so leave room.
const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;
/// Lines journaled in one write at the most.
const MAX_BATCH: usize = 512;

/// One watch line, as the watcher needs it.
#[derive(Debug)]
pub enum Line {
    /// ADDED or MODIFIED: the event's bytes.
    Upsert(Box<RawValue>),
    /// DELETED (TTL expiry): ignored, but its resourceVersion moves the token.
    Deleted { resource_version: String },
    /// BOOKMARK: only moves the token.
    Bookmark { resource_version: String },
    /// ERROR with 410 Gone / Expired: the token is too old.
    Expired,
    /// Any other ERROR.
    Error(String),
}

#[derive(Deserialize)]
struct RawLine {
    #[serde(rename = "type")]
    kind: String,
    object: Box<RawValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Versioned {
    metadata: VersionedMeta,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct VersionedMeta {
    resource_version: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WatchStatus {
    code: u16,
    reason: String,
    message: String,
}

/// Why a line could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("reading the watch stream: {0}")]
    Read(#[from] tokio_util::codec::LinesCodecError),
    #[error("a watch line is not a watch event: {0}")]
    Frame(#[from] serde_json::Error),
}

pub(super) fn parse(line: &str) -> Result<Line, LineError> {
    let raw: RawLine = serde_json::from_str(line)?;
    let version = || -> Result<String, LineError> {
        Ok(serde_json::from_str::<Versioned>(raw.object.get())?
            .metadata
            .resource_version)
    };
    Ok(match raw.kind.as_str() {
        "ADDED" | "MODIFIED" => Line::Upsert(raw.object),
        "DELETED" => Line::Deleted {
            resource_version: version()?,
        },
        "BOOKMARK" => Line::Bookmark {
            resource_version: version()?,
        },
        _ => {
            let status: WatchStatus = serde_json::from_str(raw.object.get())?;
            if status.code == 410 || status.reason == "Expired" || status.reason == "Gone" {
                Line::Expired
            } else {
                Line::Error(format!(
                    "{} {}: {} {}",
                    raw.kind, status.code, status.reason, status.message
                ))
            }
        }
    })
}

type Batches = Pin<Box<dyn Stream<Item = Vec<Result<Line, LineError>>> + Send>>;

/// The lines of one watch response, in batches of what is ready.
pub struct WatchLines(Batches);

impl WatchLines {
    /// The lines of a response body as it arrives.
    pub fn new(reader: impl AsyncBufRead + Send + 'static) -> Self {
        let lines = FramedRead::new(
            reader.compat(),
            LinesCodec::new_with_max_length(MAX_LINE_BYTES),
        )
        .map(|line| parse(&line?));
        WatchLines(Box::pin(lines.ready_chunks(MAX_BATCH)))
    }

    /// Batches from elsewhere (a scripted API server in tests).
    pub fn from_batches(
        batches: impl Stream<Item = Vec<Result<Line, LineError>>> + Send + 'static,
    ) -> Self {
        WatchLines(Box::pin(batches))
    }
}

impl Stream for WatchLines {
    type Item = Vec<Result<Line, LineError>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.as_mut().poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_of_lines() {
        assert!(matches!(
            parse(r#"{"type":"ADDED","object":{"metadata":{"uid":"a"}}}"#).unwrap(),
            Line::Upsert(raw) if raw.get() == r#"{"metadata":{"uid":"a"}}"#
        ));
        assert!(matches!(
            parse(r#"{"type":"BOOKMARK","object":{"kind":"Event","metadata":{"resourceVersion":"99"}}}"#).unwrap(),
            Line::Bookmark { resource_version } if resource_version == "99"
        ));
        assert!(matches!(
            parse(r#"{"type":"DELETED","object":{"metadata":{"resourceVersion":"5"}}}"#).unwrap(),
            Line::Deleted { resource_version } if resource_version == "5"
        ));
        assert!(matches!(
            parse(r#"{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired","message":"too old resource version: 1 (50)"}}"#).unwrap(),
            Line::Expired
        ));
        assert!(matches!(
            parse(
                r#"{"type":"ERROR","object":{"kind":"Status","code":500,"reason":"InternalError"}}"#
            )
            .unwrap(),
            Line::Error(_)
        ));
        assert!(parse("garbage").is_err());
    }

    #[tokio::test]
    async fn batches_what_is_ready() {
        let body = "{\"type\":\"ADDED\",\"object\":{}}\n".repeat(3)
            + "{\"type\":\"BOOKMARK\",\"object\":{\"metadata\":{\"resourceVersion\":\"7\"}}}\n";
        let reader = futures::io::Cursor::new(body.into_bytes());
        let mut lines = WatchLines::new(reader);
        let batch = lines.next().await.unwrap();
        assert_eq!(batch.len(), 4);
        assert!(lines.next().await.is_none());
    }
}
