//! The composition root of `evrelay run`: opens the journal, builds the sink, the
//! shipper, the admin endpoint and the leadership, and runs them until shutdown.
//! Every rule lives in the modules; this file only wires them.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::admin;
use crate::backoff::Backoff;
use crate::config::Settings;
use crate::journal::{Journal, JournalError, JournalSettings, open_or_recover};
use crate::leader::term::{Leader, TermError, TermSettings};
use crate::leader::{Duties, Elector, Timing, TokenMirror};
use crate::metrics::Metrics;
use crate::record::Gap;
use crate::ship::{Shipper, Shipping};
use crate::sinks::datadog::{EventsSink, Intake, LogsSink, Output};
use crate::watch::{KubeEvents, WatchSettings, Watcher};

/// Why `run` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("connecting to the Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("building the HTTP client for the intake: {0}")]
    Http(#[from] reqwest::Error),
    #[error(transparent)]
    Term(#[from] TermError),
    #[error("admin.listen_address {address}: {source}")]
    Admin {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Runs evrelay until `shutdown` is cancelled.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<(), RunError> {
    let metrics = Metrics::new();
    let stop = CancellationToken::new();
    // The endpoint answers from the start: a slow open (recovery, a migration, a
    // slow volume) is "starting", not dead.
    let status = admin::State::starting(metrics.clone());
    let admin = match settings.admin.listen {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|source| RunError::Admin { address, source })?;
            let address = listener.local_addr().unwrap_or(address);
            tracing::info!(%address, "serving /metrics, /healthz, /readyz");
            Some(tokio::spawn(admin::serve(
                listener,
                status.clone(),
                stop.clone(),
            )))
        }
        None => None,
    };
    let Some(journal) = open_journal(&settings.journal, &status, &metrics, &shutdown).await? else {
        stop.cancel();
        if let Some(admin) = admin {
            stop_admin(admin).await;
        }
        return Ok(());
    };
    let client = crate::apiserver::client().await?;
    let intake = Intake::new(&settings.datadog, settings.ship.request_timeout)?;
    let shipper = shipper(&settings, journal.clone(), intake.clone(), metrics.clone());
    status.opened(journal.clone(), Some(shipper.clone()));
    let heartbeat = tokio::spawn(status.clone().heartbeat(stop.clone()));
    let housekeeping = tokio::spawn(crate::journal::housekeeping(
        journal.clone(),
        settings.journal.clone(),
        stop.clone(),
    ));

    let leader = &settings.leader;
    let election = leader.enabled.then(|| {
        let namespace = leader
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned());
        tracing::info!(identity = %leader.identity, %namespace, lease = %leader.lease_name, configmap = %leader.configmap, "waiting for leadership");
        let timing = Timing::for_duration(leader.lease_duration);
        let elector = Elector::new(client.clone(), &namespace, &leader.lease_name, &leader.identity, timing, metrics.clone());
        let mirror = TokenMirror::new(
            client.clone(),
            &namespace,
            &leader.configmap,
            &leader.identity,
            leader.resume_from_configmap.as_deref(),
        );
        (elector, mirror)
    });
    let duties = NodeDuties {
        client,
        intake,
        journal: journal.clone(),
        watch: settings.watch.clone(),
        shipper,
        metrics: metrics.clone(),
        host: settings.datadog.hostname.clone(),
        check_tags: settings.datadog.check_tags(),
        check_interval: settings.datadog.service_check_interval,
    };
    let term = TermSettings {
        mirror_interval: leader.mirror_interval,
        shutdown_grace: settings.ship.shutdown_grace,
        step_down_pause: leader.lease_duration,
    };
    let result = Leader::new(election, duties, journal.clone(), metrics, term)
        .run(&shutdown)
        .await;

    stop.cancel();
    let _ = housekeeping.await;
    let _ = heartbeat.await;
    if let Some(admin) = admin {
        stop_admin(admin).await;
    }
    journal.checkpoint()?;
    result?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// How long the admin endpoint may take to finish its requests at shutdown: a
/// client that sent half a request (or reads slowly) does not hold the exit up.
const ADMIN_GRACE: Duration = Duration::from_secs(2);

/// Waits for the admin endpoint to stop, for at most [`ADMIN_GRACE`].
async fn stop_admin(admin: tokio::task::JoinHandle<std::io::Result<()>>) {
    let abort = admin.abort_handle();
    if tokio::time::timeout(ADMIN_GRACE, admin).await.is_err() {
        tracing::warn!("admin requests still open at shutdown were cut off");
        abort.abort();
    }
}

/// Opens the journal, setting a damaged one aside (`journal/recover.rs`). A disk
/// that refuses (read-only, full, failing) is waited out with a backoff, not
/// crashed on: a restart would find it the same, and nothing is moved aside for
/// it. `None` on shutdown.
async fn open_journal(
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

/// The shipper of the configured Datadog output.
pub fn shipper(
    settings: &Settings,
    journal: Journal,
    intake: Intake,
    metrics: Metrics,
) -> Arc<dyn Shipping> {
    let (datadog, events, ship) = (&settings.datadog, &settings.events, settings.ship.clone());
    match datadog.output {
        Output::Events => Arc::new(Shipper::new(
            journal,
            EventsSink::new(datadog, events, intake),
            ship,
            metrics,
        )),
        Output::Logs => Arc::new(Shipper::new(
            journal,
            LogsSink::new(datadog, events, intake),
            ship,
            metrics,
        )),
    }
}

/// What this replica does while it leads: watch, ship, report the control plane.
struct NodeDuties {
    client: kube::Client,
    intake: Intake,
    journal: Journal,
    watch: WatchSettings,
    shipper: Arc<dyn Shipping>,
    metrics: Metrics,
    host: String,
    check_tags: Vec<String>,
    check_interval: Option<Duration>,
}

impl Duties for NodeDuties {
    async fn watch(&self, stop: CancellationToken) -> Result<(), TermError> {
        let api = KubeEvents::new(self.client.clone());
        let watcher = Watcher::new(
            api,
            self.journal.clone(),
            self.watch.clone(),
            self.metrics.clone(),
        );
        Ok(watcher.run(stop).await?)
    }

    async fn ship(&self, stop: CancellationToken) -> Result<(), TermError> {
        Ok(self.shipper.run(stop).await?)
    }

    async fn report(&self) {
        let Some(every) = self.check_interval else {
            return;
        };
        let (host, tags) = (&self.host, &self.check_tags);
        match crate::controlplane::report(&self.client, &self.intake, host, tags, every).await {}
    }

    fn sinks(&self) -> Vec<&'static str> {
        vec![self.shipper.sink_name()]
    }
}
