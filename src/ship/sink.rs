//! What the shipper needs of a destination: a [`Sink`] maps journaled events into
//! the items it sends, encodes items into requests, and sends one request at a
//! time, each answer judged by the delivery rules. The shipper owns everything
//! else (batches, the cursor, retries, splits, dead letters), so a second
//! destination is a second sink, not a change to the shipper.

use std::future::Future;

use crate::delivery::Verdict;
use crate::event::KubeEvent;

/// One journaled event, as a sink maps it.
pub struct Occurrence<'a> {
    /// Its journal sequence number.
    pub seq: u64,
    pub event: KubeEvent<'a>,
    /// When evrelay received it: the time of last resort.
    pub received_at_ms: i64,
}

/// An item to send and the journal records it carries (several for a bundle).
#[derive(Debug, Clone, PartialEq)]
pub struct Outbound<I> {
    pub seqs: Vec<u64>,
    pub item: I,
}

/// What a batch became.
#[derive(Debug)]
pub struct Mapped<I> {
    /// In the order of each one's first record.
    pub outbound: Vec<Outbound<I>>,
    /// Records the sink's filters left out (handled: the cursor passes them).
    pub filtered: Vec<u64>,
}

impl<I> Default for Mapped<I> {
    fn default() -> Self {
        Mapped {
            outbound: Vec::new(),
            filtered: Vec::new(),
        }
    }
}

/// What one attempt came to.
#[derive(Debug)]
pub struct Answer {
    pub verdict: Verdict,
    /// The status, or `None` when no answer came (network error, timeout).
    pub status: Option<u16>,
    /// A short description for logs: the status and the start of the body, or the
    /// network error. Never carries a secret.
    pub detail: String,
}

/// The records of an item, one item each (see [`Sink::unbundle`]), for a batch at
/// hand.
pub type Unbundle<'a, I> = &'a (dyn Fn(&[u64]) -> Vec<Outbound<I>> + Sync);

/// A destination for journaled events.
pub trait Sink: Send + Sync + 'static {
    /// What the sink sends per event or group of events.
    type Item: Clone + Send + Sync + 'static;
    /// One request's body, ready to send.
    type Request: Send + Sync;

    /// The journal cursor this sink owns: records up to it were delivered here.
    fn name(&self) -> &'static str;

    /// Maps a batch, in journal order.
    fn map(&self, batch: &[Occurrence<'_>]) -> Mapped<Self::Item>;

    /// The records `seqs` of `batch`, one item each: when the destination refuses
    /// an item that carries several records, they are sent one by one so only the
    /// one at fault is dead-lettered.
    fn unbundle(&self, batch: &[Occurrence<'_>], seqs: &[u64]) -> Vec<Outbound<Self::Item>>;

    /// Marks an item as sent again by the replay `replay_id`.
    fn mark_replay(&self, item: &mut Self::Item, replay_id: &str);

    /// One request for `items`.
    fn encode(&self, items: &[&Self::Item]) -> Self::Request;

    /// Whether a request passes one of the destination's caps (the shipper then
    /// splits it before sending).
    fn too_big(&self, request: &Self::Request) -> bool;

    /// Sends one request once.
    fn send(&self, request: &Self::Request) -> impl Future<Output = Answer> + Send;
}
