//! The composition root: opens the journal, waits for leadership, and while it
//! leads runs the watcher, the shipper and the token mirror; reports the first
//! failure.
//!
//! A *term* is one stretch of leadership. It begins with an epoch claimed in the
//! ConfigMap and the takeover decision ([`delivery::takeover`]), and ends in one of
//! three ways:
//! - **shutdown**: the watch stops, the shipper drains what is journaled (within
//!   `ship.shutdown_grace_seconds`), the exact token is published, and the lease is
//!   released so a standby takes over at once;
//! - **lost lease** (no renewal within the renew deadline, or another holder):
//!   everything leader-only is dropped on the spot, in-flight request included,
//!   before anyone else can hold the lease; the replica stands by again;
//! - **fenced** (the ConfigMap names a newer epoch): the same.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::delivery::{self, Takeover};
use crate::journal::{Journal, JournalError, Term};
use crate::leader::{Claim, Elector, Ended, Held, MirrorError, Timing, TokenMirror};
use crate::metrics::{DropReason, GapReason, Metrics};
use crate::ship::{Intake, SINK, ShipError, Shipper};
use crate::watch::{WatchError, Watcher};

/// Why `run` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("connecting to the Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("building the HTTP client for the intake: {0}")]
    Http(#[from] reqwest::Error),
    #[error("watcher: {0}")]
    Watch(#[from] WatchError),
    #[error("shipper: {0}")]
    Ship(#[from] ShipError),
    #[error("the API key is missing")]
    NoApiKey,
    #[error("admin.listen_address {address}: {source}")]
    Admin {
        address: String,
        #[source]
        source: std::io::Error,
    },
}

/// Runs evrelay until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    // Opening replays sled's log since its last snapshot (0.4–0.8 s for a journal
    // of a million records), so it is logged from both ends.
    let opening = std::time::Instant::now();
    tracing::info!(data_dir = %config.journal.data_dir.display(), "opening the journal");
    let journal = Journal::open(&config.journal)?;
    tracing::info!(
        path = %journal.path().display(),
        records = journal.len(),
        took = ?opening.elapsed(),
        "journal open"
    );
    let client = kube::Client::try_default().await?;
    let api_key = config.datadog.api_key.clone().ok_or(RunError::NoApiKey)?;
    let intake = Intake::new(
        &config.datadog,
        api_key,
        Duration::from_secs(config.ship.request_timeout_seconds),
    )?;
    let metrics = Metrics::new();
    let admin_stop = CancellationToken::new();
    let replayer = Shipper::new(
        journal.clone(),
        intake.clone(),
        (&config.datadog, &config.events),
        &hostname(&config),
        config.ship.clone(),
        metrics.clone(),
    );
    let admin_task = match config.admin.address() {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|source| RunError::Admin {
                    address: config.admin.listen_address.clone(),
                    source,
                })?;
            let address = listener.local_addr().unwrap_or(address);
            tracing::info!(%address, "serving /metrics, /healthz, /readyz");
            Some(tokio::spawn(crate::admin::serve(
                listener,
                journal.clone(),
                metrics.clone(),
                Some(replayer),
                admin_stop.clone(),
            )))
        }
        None => None,
    };
    let node = Node {
        config,
        journal: journal.clone(),
        client,
        intake,
        metrics,
    };
    let gc_stop = shutdown.child_token();
    let gc_task = tokio::spawn(housekeeping(
        journal.clone(),
        Duration::from_secs(node.config.journal.seen_ttl_seconds),
        Duration::from_secs(node.config.journal.retention_seconds),
        gc_stop.clone(),
    ));
    let result = node.run(&shutdown).await;
    gc_stop.cancel();
    let _ = gc_task.await;
    admin_stop.cancel();
    if let Some(task) = admin_task {
        let _ = task.await;
    }
    journal.sync()?;
    result?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// The `internalHostname` of payloads: `datadog.hostname`, else `POD_NAME`.
pub fn hostname(config: &Config) -> String {
    config
        .datadog
        .hostname
        .clone()
        .or_else(|| std::env::var("POD_NAME").ok())
        .unwrap_or_else(|| "evrelay".into())
}

/// Everything a term needs, built once.
struct Node {
    config: Config,
    journal: Journal,
    client: kube::Client,
    intake: Intake,
    metrics: Metrics,
}

/// How leading ended, before the results are looked at.
enum Led<T> {
    Done(T),
    Fenced(Term),
}

/// How a term ended without an error.
enum TermEnd {
    Shutdown,
    /// Leadership was lost or superseded: stand by again.
    Deposed,
}

impl Node {
    async fn run(&self, shutdown: &CancellationToken) -> Result<(), RunError> {
        let leader = &self.config.leader;
        if !leader.enabled {
            tracing::info!("leader election off: this replica watches and ships alone");
            self.metrics.set_leader(true, None);
            self.lead(None, shutdown).await?;
            return Ok(());
        }
        let identity = leader.identity();
        let namespace = leader
            .namespace
            .clone()
            .unwrap_or_else(|| self.client.default_namespace().to_owned());
        let elector = Elector::new(
            self.client.clone(),
            &namespace,
            &leader.lease_name,
            &identity,
            Timing::for_duration(leader.lease_duration()),
        );
        let mirror = TokenMirror::new(
            self.client.clone(),
            &namespace,
            &leader.configmap,
            &identity,
            leader.resume_from_configmap.as_deref(),
        );
        tracing::info!(%identity, %namespace, lease = %leader.lease_name, configmap = %leader.configmap, "waiting for leadership");
        loop {
            let Some(held) = elector.acquire(shutdown).await else {
                return Ok(());
            };
            self.metrics.set_leader(true, None);
            let ended = self.term(&elector, &mirror, held, shutdown).await;
            self.metrics.set_leader(false, None);
            match ended? {
                TermEnd::Shutdown => return Ok(()),
                TermEnd::Deposed => tracing::warn!("standing by again"),
            }
        }
    }

    /// One term: holds the lease while leading; whichever ends first decides.
    async fn term(
        &self,
        elector: &Elector,
        mirror: &TokenMirror,
        held: Held,
        shutdown: &CancellationToken,
    ) -> Result<TermEnd, RunError> {
        let hold_stop = CancellationToken::new();
        let hold = elector.hold(held, &hold_stop);
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
                    elector.release(*held).await;
                }
                led
            }
        }
    }

    /// Claims the next epoch, retrying while the API server is unreachable (the
    /// lease is lost meanwhile if it stays so). `None` on shutdown.
    async fn claim(&self, mirror: &TokenMirror, shutdown: &CancellationToken) -> Option<Claim> {
        let mut wait = Duration::from_millis(200);
        loop {
            match mirror.claim().await {
                Ok(claim) => return Some(claim),
                Err(e) => tracing::warn!(error = %e, "claiming an epoch failed; retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }

    /// Leads: settles the journal for the claimed epoch, then watches, ships and
    /// mirrors until shutdown (graceful) or until the mirror is fenced off.
    async fn lead(
        &self,
        claim: Option<(&TokenMirror, Claim)>,
        shutdown: &CancellationToken,
    ) -> Result<TermEnd, RunError> {
        let mut claim = claim;
        if let Some((_, claim)) = &claim {
            self.begin(claim).await?;
        }
        let watcher = Watcher::new(
            self.client.clone(),
            self.journal.clone(),
            self.config.watch.clone(),
            self.metrics.clone(),
        );
        let shipper = Shipper::new(
            self.journal.clone(),
            self.intake.clone(),
            (&self.config.datadog, &self.config.events),
            &hostname(&self.config),
            self.config.ship.clone(),
            self.metrics.clone(),
        );

        // The watcher stops on shutdown; the shipper only once it has drained (or
        // the grace is over), so the token published last is exact. Either failing
        // stops the other: no shipping from a journal nobody writes, and the reverse.
        let watch_stop = shutdown.child_token();
        let ship_stop = CancellationToken::new();
        let watching = async {
            let r = watcher.run(watch_stop.clone()).await;
            if r.is_ok() {
                self.drain(&ship_stop).await;
            }
            ship_stop.cancel();
            r
        };
        let shipping = async {
            let r = shipper.run(ship_stop.clone()).await;
            ship_stop.cancel();
            watch_stop.cancel();
            r
        };
        // The leader also reports the control plane's health, for as long as it leads.
        let host = hostname(&self.config);
        let health = crate::controlplane::report(
            &self.client,
            &self.intake,
            &host,
            self.config.datadog.cluster_name.as_deref(),
            Duration::from_secs(self.config.datadog.service_check_interval_seconds),
        );
        let work = async {
            tokio::select! {
                done = async { tokio::join!(watching, shipping) } => done,
                never = health => match never {},
            }
        };
        let outcome = match claim.as_mut() {
            None => Led::Done(work.await),
            Some((mirror, claim)) => tokio::select! {
                done = work => Led::Done(done),
                // Dropping `work` stops the watch and the request in flight at once.
                by = self.mirror(mirror, claim) => Led::Fenced(by),
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
            if let Err(e) = self.publish(mirror, claim).await {
                tracing::warn!(error = %e, "publishing the final token failed");
            }
        }
        Ok(TermEnd::Shutdown)
    }

    /// Decides, from the claim, whether the journal continues or adopts the
    /// mirrored token, and records the new term in the journal.
    async fn begin(&self, claim: &Claim) -> Result<(), RunError> {
        let journal = self.journal.clone();
        let epoch = claim.term.epoch;
        let claim = claim.clone();
        let start = tokio::task::spawn_blocking(move || {
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
            let start = journal.begin_term(&claim.term, adopt, &[SINK])?;
            Ok::<_, JournalError>((own, decision, start))
        })
        .await
        .expect("journal task panicked")?;
        let (own, decision, start) = start;
        self.metrics.set_leader(true, Some(epoch));
        if start.dropped_stale > 0 {
            self.metrics
                .dropped(DropReason::stale_backlog, start.dropped_stale);
            self.metrics.gap(GapReason::stale_backlog);
        }
        match decision {
            Takeover::Continue => {
                tracing::info!(
                    epoch,
                    "leading: continuing from the journal (it is current)"
                )
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

    /// After the watch stopped: lets the shipper catch up with the journal, for at
    /// most the shutdown grace, then stops it.
    async fn drain(&self, ship_stop: &CancellationToken) {
        let grace = Duration::from_secs(self.config.ship.shutdown_grace_seconds);
        let deadline = tokio::time::Instant::now() + grace;
        while !ship_stop.is_cancelled() && tokio::time::Instant::now() < deadline {
            let journal = self.journal.clone();
            let caught_up =
                tokio::task::spawn_blocking(move || journal.pending(SINK).map(|p| p == 0))
                    .await
                    .expect("journal task panicked")
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
    async fn mirror(&self, mirror: &TokenMirror, claim: &mut Claim) -> Term {
        let every = Duration::from_secs(self.config.leader.mirror_interval_seconds);
        let mut tick = tokio::time::interval(every);
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

    async fn publish(&self, mirror: &TokenMirror, claim: &mut Claim) -> Result<(), MirrorError> {
        let journal = self.journal.clone();
        let tokens = tokio::task::spawn_blocking(move || {
            Ok::<_, JournalError>((journal.shipped_token(SINK)?, journal.resume_token()?))
        })
        .await
        .expect("journal task panicked");
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

/// Every ten minutes: forgets dedup entries older than `seen_ttl`, and removes
/// shipped records older than `retention` (0: kept until the byte cap needs room).
async fn housekeeping(
    journal: Journal,
    seen_ttl: Duration,
    retention: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = jiff::Timestamp::now().as_millisecond();
        let journal = journal.clone();
        let done = tokio::task::spawn_blocking(move || {
            let forgotten = journal.forget_seen(now - seen_ttl.as_millis() as i64)?;
            let expired = if retention.is_zero() {
                0
            } else {
                journal.expire_shipped(now - retention.as_millis() as i64)?
            };
            Ok::<_, JournalError>((forgotten, expired))
        })
        .await;
        match done {
            Ok(Ok((0, 0))) => {}
            Ok(Ok((forgotten, expired))) => {
                tracing::debug!(forgotten, expired, "journal housekeeping")
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "journal housekeeping failed"),
            Err(e) => tracing::warn!(error = %e, "journal housekeeping task failed"),
        }
    }
}
