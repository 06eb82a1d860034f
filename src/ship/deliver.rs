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

/// Single events refused in a row, with nothing delivered between them, that make
/// a refusal storm: the intake (or a proxy before it) refuses everything, so the
/// events are not at fault. Shipping pauses as for a refused key, and nothing is
/// dead-lettered for it.
pub const STORM: usize = 3;

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
        // Single events refused since the last delivery: dead-lettered once a
        // neighbour passes (the event was at fault), sent again after a pause if
        // they reach STORM (the intake was).
        let mut suspects: Vec<(Outbound<S::Item>, DeadLetter)> = Vec::new();
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
                        convict(&mut suspects, &mut settled);
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
                        suspects.push((part[0].clone(), dead_letter(&answer)));
                        if suspects.len() < STORM {
                            break;
                        }
                        // Every event alone refused, none passing: not the events.
                        self.metrics.intake_refusal_storm();
                        tracing::error!(detail = %answer.detail, refused_in_a_row = suspects.len(), retry_in = ?self.forbidden_pause,
                            "the intake refuses every event: shipping paused, nothing dead-lettered, journaling goes on (a proxy or an intake incident?)");
                        // Sent again, in order, after the pause.
                        todo.push(suspects.drain(..).map(|(o, _)| o).collect());
                        self.forbidden_pause
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
                if suspects.is_empty() && matches!(answer.verdict, Verdict::Split | Verdict::Reject)
                {
                    break; // the storm's events are back in `todo`
                }
            }
        }
        // Refused alone, and fewer than a storm: the events were at fault.
        convict(&mut suspects, &mut settled);
        Some(settled)
    }
}

/// Dead-letters the suspects: refused alone while others passed.
fn convict<I>(suspects: &mut Vec<(Outbound<I>, DeadLetter)>, settled: &mut Settled) {
    for (outbound, letter) in suspects.drain(..) {
        tracing::error!(seqs = ?outbound.seqs, detail = %letter.reason, "intake refused an event for good; dead-lettered");
        settled
            .dead_letters
            .extend(outbound.seqs.iter().map(|seq| (*seq, letter.clone())));
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
