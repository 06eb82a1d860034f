//! Framing of a watch response: one JSON object per line, `{"type": ..., "object": ...}`,
//! gathered into groups for one journal write each (group commit): what has
//! already arrived, and what follows within [`GATHER`].

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

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
/// How long the lines of one journal write may gather after the first arrives.
/// Each write is synced, and a sync costs far more than an event: at a steady
/// 200 events/s, one write per event spent most of evrelay's CPU in the kernel.
/// Gathering costs at most this much delivery lag (the shipper's own window is
/// 200 ms); the watch's token moves only with the write, so nothing gathered
/// and not yet written is acknowledged.
pub const GATHER: Duration = Duration::from_millis(20);

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
pub struct WatchLines {
    batches: Batches,
    /// The response ended while a group was gathering.
    ended: bool,
}

impl WatchLines {
    /// The lines of a response body as it arrives.
    pub fn new(reader: impl AsyncBufRead + Send + 'static) -> Self {
        let lines = FramedRead::new(
            reader.compat(),
            LinesCodec::new_with_max_length(MAX_LINE_BYTES),
        )
        .map(|line| parse(&line?));
        WatchLines::from_batches(lines.ready_chunks(MAX_BATCH))
    }

    /// Batches from elsewhere (a scripted API server in tests).
    pub fn from_batches(
        batches: impl Stream<Item = Vec<Result<Line, LineError>>> + Send + 'static,
    ) -> Self {
        WatchLines {
            batches: Box::pin(batches),
            ended: false,
        }
    }

    /// The next group of lines to journal in one write: the next batch, and the
    /// batches that follow within `gather` (up to [`MAX_BATCH`] lines, and not past
    /// a line that ends the watch). `None` once the response has ended.
    pub async fn next_group(&mut self, gather: Duration) -> Option<Vec<Result<Line, LineError>>> {
        if self.ended {
            return None;
        }
        let mut group = self.batches.next().await?;
        let deadline = tokio::time::Instant::now() + gather;
        while group.len() < MAX_BATCH && !group.iter().any(ends_watch) {
            match tokio::time::timeout_at(deadline, self.batches.next()).await {
                Ok(Some(more)) => group.extend(more),
                Ok(None) => {
                    self.ended = true;
                    break;
                }
                Err(_) => break,
            }
        }
        Some(group)
    }
}

/// A line after which the watch does not go on.
fn ends_watch(line: &Result<Line, LineError>) -> bool {
    matches!(line, Err(_) | Ok(Line::Expired) | Ok(Line::Error(_)))
}

impl Stream for WatchLines {
    type Item = Vec<Result<Line, LineError>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.batches.as_mut().poll_next(cx)
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

    fn added() -> Result<Line, LineError> {
        Ok(parse(r#"{"type":"ADDED","object":{}}"#).unwrap())
    }

    /// Lines arriving 6 ms apart (a steady 170/s) go into one write per gathering,
    /// not one each; a line that ends the watch closes the group.
    #[tokio::test(start_paused = true)]
    async fn groups_gather_what_follows_within_the_window() {
        let spaced = futures::stream::iter(0..10).then(|i| async move {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(6)).await;
            }
            vec![added()]
        });
        let mut lines = WatchLines::from_batches(spaced);
        let mut groups = Vec::new();
        while let Some(group) = lines.next_group(GATHER).await {
            groups.push(group.len());
        }
        assert_eq!(groups, [4, 4, 2]);

        let expired = Ok(parse(
            r#"{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired"}}"#,
        )
        .unwrap());
        let mut lines = WatchLines::from_batches(futures::stream::iter(vec![
            vec![added(), expired],
            vec![added()],
        ]));
        assert_eq!(lines.next_group(GATHER).await.unwrap().len(), 2);
        assert_eq!(lines.next_group(GATHER).await.unwrap().len(), 1);
    }
}
