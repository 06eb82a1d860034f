//! Getting one batch accepted: send, judge the answer, and retry, split, bisect or
//! pause as the delivery rules say (`delivery.rs`), until every record in the batch
//! is either delivered or dead-lettered.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::retry::Delays;
use super::service::{Answer, Intake};
use crate::datadog::{Body, DdEvent, Encoder, Outbound};
use crate::delivery::Verdict;
use crate::journal::DeadLetter;
use crate::metrics::Metrics;

/// One request to the intake: the seam between the shipper and HTTP, so the
/// retry, split and bisect logic is tested without a network.
pub trait Transport: Send + Sync {
    fn send(&self, body: &Body) -> impl Future<Output = Answer> + Send;
}

impl Transport for Intake {
    fn send(&self, body: &Body) -> impl Future<Output = Answer> + Send {
        Intake::send(self, body)
    }
}

/// How a batch went.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Settled {
    /// Records the intake refused for good, with why.
    pub dead_letters: Vec<(u64, DeadLetter)>,
    /// Requests sent, retries included.
    pub requests: u64,
}

/// What the delivery loop needs besides the batch.
pub struct Attempts<'a, T> {
    pub transport: &'a T,
    pub encoder: &'a Encoder,
    pub delays: &'a mut Delays,
    /// The longest pause while the intake refuses the key (403).
    pub forbidden_pause: Duration,
    /// How long the request in flight may go on after shutdown.
    pub grace: Duration,
    pub shutdown: &'a CancellationToken,
    /// Counts each request (status, duration) and each retry.
    pub metrics: &'a Metrics,
    /// The records of a bundle, one Datadog event each: when the intake refuses a
    /// bundle (400), its events are sent one by one, so only the one at fault is
    /// dead-lettered, not the events bundled with it.
    pub unbundle: &'a (dyn Fn(&[u64]) -> Vec<Outbound> + Sync),
}

impl<T: Transport> Attempts<'_, T> {
    /// Delivers `items` in order. Returns `None` if shutdown came first: then
    /// nothing of the batch counts as delivered. A refused item dead-letters every
    /// record it carries.
    pub async fn settle(&mut self, items: &[Outbound]) -> Option<Settled> {
        let mut settled = Settled::default();
        let deadline = async {
            self.shutdown.cancelled().await;
            tokio::time::sleep(self.grace).await;
        };
        tokio::pin!(deadline);
        // Parts still to send; the next one is on top, so order is kept.
        let mut todo: Vec<Vec<Outbound>> = vec![items.to_vec()];
        while let Some(part) = todo.pop() {
            let events: Vec<&DdEvent> = part.iter().map(|o| &o.event).collect();
            let body = self.encoder.encode(&events);
            if part.len() > 1 && body.too_big() {
                split(&mut todo, part);
                continue;
            }
            loop {
                let sent = tokio::time::Instant::now();
                let answer = tokio::select! {
                    _ = &mut deadline => return None,
                    answer = self.transport.send(&body) => answer,
                };
                self.metrics
                    .intake_request(answer.status, sent.elapsed().as_secs_f64());
                settled.requests += 1;
                let wait = match answer.verdict {
                    Verdict::Delivered => {
                        self.delays.reset();
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
                        let wait = self.delays.next(after);
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
fn split(todo: &mut Vec<Vec<Outbound>>, mut part: Vec<Outbound>) {
    let second = part.split_off(part.len() / 2);
    todo.push(second);
    todo.push(part);
}

#[cfg(test)]
mod tests;
