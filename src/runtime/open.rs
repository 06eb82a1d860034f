//! Opening the journal at start: a damaged one is set aside
//! (`journal/recover.rs`), a disk that refuses is waited out.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::RunError;
use crate::admin;
use crate::backoff::Backoff;
use crate::journal::{Journal, JournalError, JournalSettings, open_or_recover};
use crate::metrics::Metrics;
use crate::record::Gap;

/// Opens the journal, setting a damaged one aside (`journal/recover.rs`). A disk
/// that refuses (read-only, full, failing) is waited out with a backoff, not
/// crashed on: a restart would find it the same, and nothing is moved aside for
/// it. `None` on shutdown.
pub(super) async fn journal(
    settings: &JournalSettings,
    status: &admin::State,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Result<Option<Journal>, RunError> {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let mut last_error = String::new();
    loop {
        let opening = std::time::Instant::now();
        tracing::info!(data_dir = %settings.data_dir.display(), "opening the journal");
        status.set_starting("starting: opening the journal");
        let s = settings.clone();
        let opened = tokio::task::spawn_blocking(move || open_or_recover(&s))
            .await
            .map_err(|e| JournalError::Task(e.to_string()))?;
        match opened {
            Ok((journal, recovery)) => {
                tracing::info!(path = %journal.path().display(), records = journal.len(), took = ?opening.elapsed(), "journal open");
                if let Some(r) = recovery {
                    metrics.gap(Gap::JournalDamaged);
                    let moved_to = r.moved_to.display();
                    tracing::error!(
                        why = %r.reason,
                        %moved_to,
                        resumed_from = r.resumed_from.as_ref().map_or("(the mirror's token, or a fresh list)", |t| t.resource_version.as_str()),
                        last_known_head = r.last_known.map(|s| s.head),
                        "the journal was damaged: set aside (inspect it with `evrelay dump --data-dir {moved_to}`), a fresh journal took its place; events between the last shipped-through token and the damage may be missing or sent twice (gap recorded)"
                    );
                }
                return Ok(Some(journal));
            }
            Err(e) if e.is_unwritable() => {
                let message = e.to_string();
                if message != last_error {
                    tracing::error!(error = %e, "the journal cannot be opened: the disk refuses it (nothing is set aside for that); retrying");
                    last_error = message;
                }
                status.set_starting(format!(
                    "starting: the journal cannot be opened ({e}); retrying"
                ));
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(backoff.wait()) => {}
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}
