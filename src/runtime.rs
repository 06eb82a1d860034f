//! The composition root: builds the journal, the watcher and the shipper, runs them
//! until shutdown, and reports the first failure.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::journal::{Journal, JournalError};
use crate::ship::{Intake, ShipError, Shipper};
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
}

/// Runs evrelay until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let journal = Journal::open(&config.journal)?;
    tracing::info!(path = %journal.path().display(), records = journal.len(), "journal open");
    let client = kube::Client::try_default().await?;
    let api_key = config.datadog.api_key.clone().ok_or(RunError::NoApiKey)?;
    let intake = Intake::new(
        &config.datadog.base_url(),
        api_key,
        Duration::from_secs(config.ship.request_timeout_seconds),
    )?;
    let hostname = config
        .datadog
        .hostname
        .clone()
        .or_else(|| std::env::var("POD_NAME").ok())
        .unwrap_or_else(|| "evrelay".into());

    let watcher = Watcher::new(client, journal.clone(), config.watch.clone());
    let shipper = Shipper::new(
        journal.clone(),
        intake,
        config.datadog.clone(),
        hostname,
        config.ship.clone(),
    );

    // One task failing stops the other: a watcher that cannot journal must not leave
    // a shipper running on, and the reverse.
    let stop = shutdown.child_token();
    let watch_task = tokio::spawn({
        let stop = stop.clone();
        async move {
            let r = watcher.run(stop.clone()).await;
            stop.cancel();
            r
        }
    });
    let ship_task = tokio::spawn({
        let stop = stop.clone();
        async move {
            let r = shipper.run(stop.clone()).await;
            stop.cancel();
            r
        }
    });
    let gc_task = tokio::spawn(forget_old_events(
        journal.clone(),
        Duration::from_secs(config.journal.seen_ttl_seconds),
        stop.clone(),
    ));
    let (watched, shipped) = tokio::join!(watch_task, ship_task);
    stop.cancel();
    let _ = gc_task.await;
    let watched = watched.expect("watcher task panicked");
    let shipped = shipped.expect("shipper task panicked");
    journal.sync()?;
    watched?;
    shipped?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Every ten minutes, forgets dedup entries older than `ttl`.
async fn forget_old_events(journal: Journal, ttl: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let before = jiff::Timestamp::now().as_millisecond() - ttl.as_millis() as i64;
        let journal = journal.clone();
        match tokio::task::spawn_blocking(move || journal.forget_seen(before)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::debug!(forgotten = n, "dedup index trimmed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "trimming the dedup index failed"),
            Err(e) => tracing::warn!(error = %e, "dedup trim task failed"),
        }
    }
}
