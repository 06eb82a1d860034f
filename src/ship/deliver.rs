//! Getting one batch accepted: send, judge the answer, and retry, split, bisect or
//! pause as the delivery rules say (`delivery.rs`), until every record in the batch
//! is either delivered or dead-lettered.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::sink::{Answer, Outbound, Sink, Unbundle};
use crate::backoff::Backoff;
use crate::delivery::Verdict;
use crate::metrics::Metrics;
use crate::record::DeadLetter;

/// How a batch went.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Settled {
    /// Records the intake refused for good, with why.
    pub dead_letters: Vec<(u64, DeadLetter)>,
    /// Requests sent, retries included.
    pub requests: u64,
}

/// What the delivery loop needs besides the batch.
pub struct Attempts<'a, S: Sink> {
    pub sink: &'a S,
    pub backoff: &'a mut Backoff,
    /// The longest pause while the intake refuses the key (403).
    pub forbidden_pause: Duration,
    /// How long the request in flight may go on after shutdown.
    pub grace: Duration,
    pub shutdown: &'a CancellationToken,
    /// Counts each request (status, duration) and each retry.
    pub metrics: &'a Metrics,
    /// The records of an item, one item each: when the intake refuses a bundle
    /// (400), its events are sent one by one, so only the one at fault is
    /// dead-lettered, not the events bundled with it.
    pub unbundle: Unbundle<'a, S::Item>,
}

impl<S: Sink> Attempts<'_, S> {
    /// Delivers `items` in order. Returns `None` if shutdown came first: then
    /// nothing of the batch counts as delivered. A refused item dead-letters every
    /// record it carries.
    pub async fn settle(&mut self, items: &[Outbound<S::Item>]) -> Option<Settled> {
        let mut settled = Settled::default();
        let deadline = async {
            self.shutdown.cancelled().await;
            tokio::time::sleep(self.grace).await;
        };
        tokio::pin!(deadline);
        // Parts still to send; the next one is on top, so order is kept.
        let mut todo: Vec<Vec<Outbound<S::Item>>> = vec![items.to_vec()];
        while let Some(part) = todo.pop() {
            let each: Vec<&S::Item> = part.iter().map(|o| &o.item).collect();
            let request = self.sink.encode(&each);
            if part.len() > 1 && self.sink.too_big(&request) {
                split(&mut todo, part);
                continue;
            }
            loop {
                let sent = tokio::time::Instant::now();
                let answer = tokio::select! {
                    _ = &mut deadline => return None,
                    answer = self.sink.send(&request) => answer,
                };
                self.metrics
                    .intake_request(answer.status, sent.elapsed().as_secs_f64());
                settled.requests += 1;
                let wait = match answer.verdict {
                    Verdict::Delivered => {
                        self.backoff.reset();
                        break;
                    }
                    Verdict::Split | Verdict::Reject if part.len() > 1 => {
                        tracing::warn!(detail = %answer.detail, events = part.len(), "intake refused a request; sending its halves");
                        split(&mut todo, part);
                        break;
                    }
                    Verdict::Reject if part[0].seqs.len() > 1 => {
                        let seqs = &part[0].seqs;
                        tracing::warn!(detail = %answer.detail, events = seqs.len(), "intake refused a bundle; sending its events one by one");
                        let singles = (self.unbundle)(seqs);
                        let alone: Vec<u64> = singles.iter().flat_map(|o| o.seqs.clone()).collect();
                        // Anything that cannot go alone is dead-lettered, never skipped.
                        let letter = dead_letter(&answer);
                        settled.dead_letters.extend(
                            seqs.iter()
                                .filter(|s| !alone.contains(s))
                                .map(|s| (*s, letter.clone())),
                        );
                        todo.push(singles);
                        break;
                    }
                    Verdict::Split | Verdict::Reject => {
                        let seqs = &part[0].seqs;
                        tracing::error!(?seqs, detail = %answer.detail, "intake refused an event for good; dead-lettered");
                        let letter = dead_letter(&answer);
                        settled
                            .dead_letters
                            .extend(seqs.iter().map(|seq| (*seq, letter.clone())));
                        break;
                    }
                    Verdict::Retry { after } => {
                        self.metrics.intake_retried();
                        let wait = self.backoff.next_after(after);
                        tracing::warn!(detail = %answer.detail, retry_in = ?wait, "intake did not take the batch; retrying");
                        wait
                    }
                    Verdict::Forbidden => {
                        tracing::error!(detail = %answer.detail, retry_in = ?self.forbidden_pause,
                            "the intake refuses the API key: shipping paused, journaling goes on; fix DD_API_KEY");
                        self.forbidden_pause
                    }
                };
                tokio::select! {
                    _ = self.shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
        Some(settled)
    }
}

fn dead_letter(answer: &Answer) -> DeadLetter {
    DeadLetter {
        status: answer.status,
        reason: answer.detail.clone(),
        at_ms: jiff::Timestamp::now().as_millisecond(),
    }
}

/// Puts `part`'s two halves on the stack, first half on top.
fn split<I>(todo: &mut Vec<Vec<Outbound<I>>>, mut part: Vec<Outbound<I>>) {
    let second = part.split_off(part.len() / 2);
    todo.push(second);
    todo.push(part);
}

#[cfg(test)]
mod tests;
