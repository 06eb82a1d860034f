//! What keeps the journal from growing forever besides the byte cap: every ten
//! minutes the dedup index forgets occurrences older than its horizon, and shipped
//! records older than the retention are removed; every minute, a store grown past
//! its bound on disk is compacted (`compact.rs`).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Journal, JournalSettings};

const EVERY: Duration = Duration::from_secs(600);
const DISK_EVERY: Duration = Duration::from_secs(60);

/// Runs until `stop`.
pub async fn housekeeping(journal: Journal, settings: JournalSettings, stop: CancellationToken) {
    let mut tick = tokio::time::interval(DISK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let rounds = (EVERY.as_secs() / DISK_EVERY.as_secs()).max(1);
    for round in 0u64.. {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = journal.call(|j| j.compact_if_large()).await {
            tracing::warn!(error = %e, "compacting the journal failed; it keeps its files");
        }
        if round % rounds != 0 {
            continue;
        }
        let now = jiff::Timestamp::now().as_millisecond();
        let (seen_ttl, retention) = (settings.seen_ttl, settings.retention);
        let done = journal
            .call(move |j| {
                let forgotten = j.forget_seen(now - seen_ttl.as_millis() as i64)?;
                let expired = match retention {
                    None => 0,
                    Some(r) => j.expire_shipped(now - r.as_millis() as i64)?,
                };
                Ok((forgotten, expired))
            })
            .await;
        match done {
            Ok((0, 0)) => {}
            Ok((forgotten, expired)) => tracing::debug!(forgotten, expired, "journal housekeeping"),
            Err(e) => tracing::warn!(error = %e, "journal housekeeping failed"),
        }
    }
}
