//! The composition root of `evrelay run`: opens the journal, builds the sink, the
//! shipper, the admin endpoint and the leadership, and runs them until shutdown.
//! Every rule lives in the modules; this file only wires them.

mod open;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::admin;
use crate::config::Settings;
use crate::journal::{Journal, JournalError};
use crate::leader::term::{Leader, TermError, TermSettings};
use crate::leader::{Duties, Elector, Timing, TokenMirror};
use crate::metrics::Metrics;
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
    let Some(journal) = open::journal(&settings.journal, &status, &metrics, &shutdown).await?
    else {
        stop.cancel();
        if let Some(admin) = admin {
            admin::stop(admin).await;
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
        quota_interval: settings.datadog.quota_interval,
        use_component_status: settings.datadog.use_component_status,
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
        admin::stop(admin).await;
    }
    journal.checkpoint()?;
    result?;
    tracing::info!("stopped cleanly");
    Ok(())
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
    quota_interval: Option<Duration>,
    use_component_status: bool,
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
        let (client, intake) = (&self.client, &self.intake);
        let (host, tags) = (&self.host, &self.check_tags);
        let checks = async {
            if let Some(every) = self.check_interval {
                let component_status = self.use_component_status;
                match crate::controlplane::report(
                    client,
                    intake,
                    host,
                    tags,
                    every,
                    component_status,
                )
                .await {}
            }
        };
        let quotas = async {
            if let Some(every) = self.quota_interval {
                match crate::quotas::report(client, intake, host, tags, every).await {}
            }
        };
        tokio::join!(checks, quotas);
    }

    fn sinks(&self) -> Vec<&'static str> {
        vec![self.shipper.sink_name()]
    }
}
