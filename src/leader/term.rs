//! Terms of leadership: waiting for the Lease, and while it is held, watching,
//! shipping and mirroring; then handing over.
//!
//! A *term* is one stretch of leadership. It begins with an epoch claimed in the
//! ConfigMap and the takeover decision ([`delivery::takeover`]), and ends in one of
//! three ways:
//! - **shutdown**: the watch stops, the shipper drains what is journaled (within
//!   the shutdown grace), the exact token is published, and the Lease is released
//!   so a standby takes over at once;
//! - **lost lease** (no renewal within the renew deadline, or another holder):
//!   every duty is dropped on the spot, the request in flight included, before
//!   anyone else can hold the Lease; the replica stands by again;
//! - **fenced** (the ConfigMap names a newer epoch): the same.
//!
//! The term is written against three seams, so its rules are tested with paused
//! time and no API server (`term/tests.rs`): [`Election`] (the Lease), [`Mirror`]
//! (the token ConfigMap) and [`Duties`] (what a leader does).

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::lease::{Elector, Ended, Held};
use super::mirror::{Claim, MirrorError, TokenMirror};
use crate::backoff::Backoff;
use crate::delivery::{self, Takeover};
use crate::journal::{Journal, JournalError};
use crate::metrics::Metrics;
use crate::record::{Gap, ResumeToken, Term};
use crate::ship::ShipError;
use crate::watch::WatchError;

/// Why a term stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum TermError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("watcher: {0}")]
    Watch(#[from] WatchError),
    #[error("shipper: {0}")]
    Ship(#[from] ShipError),
}

impl TermError {
    /// Whether the term should end by stepping down (another replica may reach the
    /// API server) rather than by stopping the process.
    pub fn steps_down(&self) -> bool {
        matches!(self, TermError::Watch(WatchError::NotEstablished { .. }))
    }
}

/// How a term ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TermEnd {
    Shutdown,
    /// Leadership was lost or superseded: stand by again.
    Deposed,
}

/// The Lease, as a term uses it.
pub trait Election: Send + Sync {
    /// Waits until this replica holds the lease; `None` on shutdown.
    fn acquire(&self, shutdown: &CancellationToken) -> impl Future<Output = Option<Held>> + Send;
    /// Renews until the lease is lost or `stop` is cancelled.
    fn hold(&self, held: Held, stop: &CancellationToken) -> impl Future<Output = Ended> + Send;
    /// Gives the lease up, so a standby takes over at once.
    fn release(&self, held: Held) -> impl Future<Output = ()> + Send;
}

impl Election for Elector {
    fn acquire(&self, shutdown: &CancellationToken) -> impl Future<Output = Option<Held>> + Send {
        Elector::acquire(self, shutdown)
    }
    fn hold(&self, held: Held, stop: &CancellationToken) -> impl Future<Output = Ended> + Send {
        Elector::hold(self, held, stop)
    }
    fn release(&self, held: Held) -> impl Future<Output = ()> + Send {
        Elector::release(self, held)
    }
}

/// The token ConfigMap, as a term uses it.
pub trait Mirror: Send + Sync {
    /// Claims the next epoch for this replica.
    fn claim(&self) -> impl Future<Output = Result<Claim, MirrorError>> + Send;
    /// Publishes the shipped-through and watched tokens under `claim`.
    fn publish(
        &self,
        claim: &mut Claim,
        shipped: Option<&ResumeToken>,
        watched: Option<&ResumeToken>,
    ) -> impl Future<Output = Result<(), MirrorError>> + Send;
}

impl Mirror for TokenMirror {
    fn claim(&self) -> impl Future<Output = Result<Claim, MirrorError>> + Send {
        TokenMirror::claim(self)
    }
    fn publish(
        &self,
        claim: &mut Claim,
        shipped: Option<&ResumeToken>,
        watched: Option<&ResumeToken>,
    ) -> impl Future<Output = Result<(), MirrorError>> + Send {
        TokenMirror::publish(self, claim, shipped, watched)
    }
}

/// What a leader does while it leads.
pub trait Duties: Send + Sync {
    /// Watches events into the journal until `stop`.
    fn watch(&self, stop: CancellationToken) -> impl Future<Output = Result<(), TermError>> + Send;
    /// Ships from the journal until `stop`.
    fn ship(&self, stop: CancellationToken) -> impl Future<Output = Result<(), TermError>> + Send;
    /// Reports the control plane's health for as long as it is polled.
    fn report(&self) -> impl Future<Output = ()> + Send;
    /// The journal cursors the shippers own: the lowest is what the mirror
    /// publishes, and what a takeover moves past a stale backlog.
    fn sinks(&self) -> Vec<&'static str>;
}

/// Timings of a term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermSettings {
    /// How often the leader publishes its token.
    pub mirror_interval: Duration,
    /// How long the shipper may drain after the watch stopped on shutdown.
    pub shutdown_grace: Duration,
    /// After stepping down, how long to wait before trying to lead again, so that
    /// a standby takes the released Lease first.
    pub step_down_pause: Duration,
}

/// The first wait after a failed claim, and the longest.
const CLAIM_RETRY: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(2));

/// How leading ended, before the results are looked at.
enum Led<T> {
    Done(T),
    Fenced(Term),
}

/// A replica: stands by, leads when elected, stands by again when deposed.
pub struct Leader<E, M, D> {
    /// `None`: leader election off; this replica leads alone.
    election: Option<(E, M)>,
    duties: D,
    journal: Journal,
    metrics: Metrics,
    settings: TermSettings,
}

impl<E: Election, M: Mirror, D: Duties> Leader<E, M, D> {
    pub fn new(
        election: Option<(E, M)>,
        duties: D,
        journal: Journal,
        metrics: Metrics,
        settings: TermSettings,
    ) -> Self {
        Leader {
            election,
            duties,
            journal,
            metrics,
            settings,
        }
    }

    /// Runs until `shutdown` is cancelled, or a duty fails for good.
    pub async fn run(&self, shutdown: &CancellationToken) -> Result<(), TermError> {
        loop {
            let ended = match &self.election {
                None => {
                    self.metrics.set_leader(true, None);
                    self.lead(None, shutdown).await
                }
                Some((election, mirror)) => {
                    let Some(held) = election.acquire(shutdown).await else {
                        return Ok(());
                    };
                    self.metrics.set_leader(true, None);
                    self.term(election, mirror, held, shutdown).await
                }
            };
            self.metrics.set_leader(false, None);
            match ended {
                Ok(TermEnd::Shutdown) => return Ok(()),
                Ok(TermEnd::Deposed) => tracing::warn!("standing by again"),
                Err(e) if e.steps_down() => {
                    self.metrics.stepped_down();
                    tracing::error!(
                        error = %e,
                        in_a_row = self.metrics.stepdowns_in_a_row(),
                        "stepped down: this replica cannot reach the API server; the lease is released for another to try"
                    );
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(self.settings.step_down_pause) => {}
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One term: holds the lease while leading; whichever ends first decides.
    async fn term(
        &self,
        election: &E,
        mirror: &M,
        held: Held,
        shutdown: &CancellationToken,
    ) -> Result<TermEnd, TermError> {
        let hold_stop = CancellationToken::new();
        let hold = election.hold(held, &hold_stop);
        tokio::pin!(hold);
        let lead = async {
            let Some(claim) = self.claim(mirror, shutdown).await else {
                return Ok(TermEnd::Shutdown);
            };
            self.lead(Some((mirror, claim)), shutdown).await
        };
        tokio::pin!(lead);
        tokio::select! {
            ended = &mut hold => {
                // Dropping `lead` here stops the watch, the request in flight and
                // the mirror at once: the lease may soon be someone else's.
                if let Ended::Lost(why) = ended {
                    tracing::error!(reason = %why, "leadership lost: stopped watching and shipping");
                }
                Ok(TermEnd::Deposed)
            }
            led = &mut lead => {
                hold_stop.cancel();
                let ended = hold.await;
                if let (Ok(TermEnd::Shutdown) | Err(_), Ended::Stopped(held)) = (&led, ended) {
                    election.release(*held).await;
                }
                led
            }
        }
    }

    /// Claims the next epoch, retrying while the API server is unreachable (the
    /// lease is lost meanwhile if it stays so). `None` on shutdown.
    async fn claim(&self, mirror: &M, shutdown: &CancellationToken) -> Option<Claim> {
        let mut backoff = Backoff::new(CLAIM_RETRY.0, CLAIM_RETRY.1);
        loop {
            match mirror.claim().await {
                Ok(claim) => return Some(claim),
                Err(e) => tracing::warn!(error = %e, "claiming an epoch failed; retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(backoff.wait()) => {}
            }
        }
    }

    /// Leads: settles the journal for the claimed epoch, then watches, ships and
    /// mirrors until shutdown (graceful) or until the mirror is fenced off.
    async fn lead(
        &self,
        claim: Option<(&M, Claim)>,
        shutdown: &CancellationToken,
    ) -> Result<TermEnd, TermError> {
        let mut claim = claim;
        if let Some((_, claim)) = &claim {
            self.begin(claim).await?;
        }
        // The watcher stops on shutdown; the shipper only once it has drained (or
        // the grace is over), so the token published last is exact. Either failing
        // stops the other: no shipping from a journal nobody writes, and the reverse.
        let watch_stop = shutdown.child_token();
        let ship_stop = CancellationToken::new();
        let watching = async {
            let r = self.duties.watch(watch_stop.clone()).await;
            if r.is_ok() {
                self.drain(&ship_stop).await;
            }
            ship_stop.cancel();
            r
        };
        let shipping = async {
            let r = self.duties.ship(ship_stop.clone()).await;
            ship_stop.cancel();
            watch_stop.cancel();
            r
        };
        // The leader also reports the control plane's health, for as long as it leads.
        let report = async {
            self.duties.report().await;
            std::future::pending::<std::convert::Infallible>().await
        };
        let work = async {
            tokio::select! {
                done = async { tokio::join!(watching, shipping) } => done,
                never = report => match never {},
            }
        };
        let outcome = match claim.as_mut() {
            None => Led::Done(work.await),
            Some((mirror, claim)) => tokio::select! {
                done = work => Led::Done(done),
                // Dropping `work` stops the watch and the request in flight at once.
                by = self.mirror(*mirror, claim) => Led::Fenced(by),
            },
        };
        let (watched, shipped) = match outcome {
            Led::Done(results) => results,
            Led::Fenced(by) => {
                tracing::error!(epoch = by.epoch, holder = %by.holder, "superseded in the ConfigMap: stopped watching and shipping");
                return Ok(TermEnd::Deposed);
            }
        };
        watched?;
        shipped?;
        if let Some((mirror, claim)) = claim.as_mut() {
            // Once more on the way out: the successor resumes exactly here.
            if let Err(e) = self.publish(*mirror, claim).await {
                tracing::warn!(error = %e, "publishing the final token failed");
            }
        }
        Ok(TermEnd::Shutdown)
    }

    /// Decides, from the claim, whether the journal continues or adopts the
    /// mirrored token, and records the new term in the journal.
    async fn begin(&self, claim: &Claim) -> Result<(), TermError> {
        let epoch = claim.term.epoch;
        let claim = claim.clone();
        let sinks = self.duties.sinks();
        let (own, decision, start) = self
            .journal
            .call(move |journal| {
                let own = journal.term()?.unwrap_or_default();
                let token = journal.resume_token()?;
                let decision = delivery::takeover(
                    &own,
                    token.as_ref(),
                    &claim.previous.term,
                    claim.previous.token.as_ref(),
                    &claim.term.holder,
                );
                let adopt = match &decision {
                    Takeover::Continue => None,
                    Takeover::Adopt(t) => Some(t.as_ref()),
                };
                let start = journal.begin_term(&claim.term, adopt, &sinks)?;
                Ok((own, decision, start))
            })
            .await?;
        self.metrics.set_leader(true, Some(epoch));
        if start.dropped_stale > 0 {
            self.metrics
                .dropped(Gap::StaleBacklogDropped, start.dropped_stale);
            self.metrics.gap(Gap::StaleBacklogDropped);
        }
        match decision {
            Takeover::Continue => {
                tracing::info!(
                    epoch,
                    "leading: continuing from the journal (it is current)"
                )
            }
            Takeover::Adopt(token) if own == Term::default() && start.dropped_stale == 0 => {
                match token {
                    Some(t) => {
                        tracing::info!(epoch, resume_from = %t.resource_version, "leading with a new journal: resuming from the mirrored token")
                    }
                    None => {
                        tracing::info!(epoch, "leading with a new journal: listing every event")
                    }
                }
            }
            Takeover::Adopt(token) => tracing::warn!(
                epoch,
                journal_epoch = own.epoch,
                journal_holder = %own.holder,
                resume_from = token.as_ref().map(|t| t.resource_version.as_str()).unwrap_or("(a fresh list)"),
                dropped_stale = start.dropped_stale,
                "leading: the journal is stale; resuming from the mirrored token and giving up its pending records"
            ),
        }
        Ok(())
    }

    /// After the watch stopped: lets the shippers catch up with the journal, for
    /// at most the shutdown grace, then stops them.
    async fn drain(&self, ship_stop: &CancellationToken) {
        let deadline = tokio::time::Instant::now() + self.settings.shutdown_grace;
        let sinks = self.duties.sinks();
        while !ship_stop.is_cancelled() && tokio::time::Instant::now() < deadline {
            let sinks = sinks.clone();
            let caught_up = self
                .journal
                .call(move |j| Ok(j.head() <= j.lowest_shipped_through(&sinks)?))
                .await
                .unwrap_or(true);
            if caught_up {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ship_stop.cancel();
    }

    /// Publishes the token every interval. Returns only when fenced off, with the
    /// term found in the ConfigMap.
    async fn mirror(&self, mirror: &M, claim: &mut Claim) -> Term {
        let mut tick = tokio::time::interval(self.settings.mirror_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.publish(mirror, claim).await {
                Ok(()) => {}
                Err(MirrorError::Fenced(by)) => return by,
                Err(e) => tracing::warn!(error = %e, "mirroring the token failed; retrying"),
            }
        }
    }

    async fn publish(&self, mirror: &M, claim: &mut Claim) -> Result<(), MirrorError> {
        let sinks = self.duties.sinks();
        let tokens = self
            .journal
            .call(move |j| Ok((j.shipped_token(&sinks)?, j.resume_token()?)))
            .await;
        let (shipped, watched) = match tokens {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "reading the tokens to mirror failed");
                return Ok(());
            }
        };
        mirror
            .publish(claim, shipped.as_ref(), watched.as_ref())
            .await?;
        self.metrics.mirrored();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
