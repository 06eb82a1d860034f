//! The sections of the configuration file as written (strings, whole seconds,
//! lists), and their conversion, checked once, into the typed settings each module
//! takes. A field's doc comment is its key's documentation; defaults come from the
//! typed settings, next to the code they configure.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::problem::{Problem, Problems};
use crate::admin::AdminSettings;
use crate::journal::JournalSettings;
use crate::leader::LeaderSettings;
use crate::ship::ShipSettings;
use crate::sinks::datadog::{
    ApiKey, BadSelector, Choice, CollectedType, DatadogSettings, EventsSettings, Filter, Mode,
    SITES, cluster_name_problem, normalized_cluster_name,
};
use crate::watch::WatchSettings;

/// `datadog:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatadogSection {
    /// The API key the intake authenticates with (`DD_API_KEY`). Never logged.
    pub api_key: Option<ApiKey>,
    /// The Datadog site (`DD_SITE`), which decides the intake address.
    pub site: String,
    /// A full intake base URL (`DD_URL`), overriding the site: for proxies and tests.
    pub url: Option<String>,
    /// Tags every event with `kube_cluster_name` and suffixes node hosts (`DD_CLUSTER_NAME`).
    pub cluster_name: Option<String>,
    /// evrelay's host (`DD_HOSTNAME`): `internalHostname` in payloads, the service
    /// checks' host, and the host of events that name no node. Default:
    /// `<node>-<cluster>` from `NODE_NAME` (the downward API), else the pod name.
    pub hostname: Option<String>,
    /// Tags added to every event, log and service check (the check instance's
    /// `tags:`); the Agent's `DD_TAGS`, `DD_EXTRA_TAGS` and
    /// `DD_CLUSTER_CHECKS_EXTRA_TAGS` are added after them.
    pub tags: Vec<String>,
    /// `events` (the Cluster Agent's events, the default) or `logs`.
    pub output: String,
    /// `zstd` (the default) or `deflate`, for event payloads; logs are gzipped.
    pub compression: String,
    /// The logs intake's base URL (default `https://http-intake.logs.<site>`).
    pub logs_url: Option<String>,
    /// How often the leader reports `kube_apiserver_controlplane.up`; 0: never.
    pub service_check_interval_seconds: u64,
    /// Report OpenShift's cluster quotas (the Cluster Agent's
    /// `collect_openshift_clusterquotas`); nothing is asked of a cluster that is
    /// not OpenShift.
    pub collect_openshift_clusterquotas: bool,
    /// How often the leader reports the cluster quotas.
    pub openshift_quota_interval_seconds: u64,
    /// The control-plane check from ComponentStatus, one per component (the
    /// Cluster Agent's `use_component_status`); `false`: from `/readyz`.
    pub use_component_status: bool,
    /// Accept `http://` intake URLs, which carry the API key in the clear: for a
    /// local test intake or a proxy on the same host only.
    pub allow_insecure_http: bool,
}

impl Default for DatadogSection {
    fn default() -> Self {
        let d = DatadogSettings::default();
        DatadogSection {
            api_key: None,
            site: d.site,
            url: d.url,
            cluster_name: d.cluster_name,
            hostname: None,
            tags: Vec::new(),
            output: word(d.output),
            compression: word(d.compression),
            logs_url: d.logs_url,
            service_check_interval_seconds: d.service_check_interval.map_or(0, |i| i.as_secs()),
            collect_openshift_clusterquotas: d.quota_interval.is_some(),
            openshift_quota_interval_seconds: d.quota_interval.map_or(15, |i| i.as_secs()),
            use_component_status: d.use_component_status,
            allow_insecure_http: false,
        }
    }
}

/// The configuration's word for a choice.
fn word<T: Choice + PartialEq>(value: T) -> String {
    T::CHOICES
        .iter()
        .find(|(_, v)| *v == value)
        .map(|(w, _)| (*w).to_owned())
        .expect("every choice has a word")
}

/// The choice `value` names, or a problem listing the choices.
fn choice<T: Choice>(p: &mut Problems, key: &str, value: &str) -> Option<T> {
    let found = T::CHOICES
        .iter()
        .find(|(w, _)| *w == value)
        .map(|(_, v)| *v);
    if found.is_none() {
        let words: Vec<&str> = T::CHOICES.iter().map(|(w, _)| *w).collect();
        p.push(
            key,
            format!("{value:?} is not a choice"),
            format!("use one of {}", words.join(", ")),
        );
    }
    found
}

impl TryFrom<DatadogSection> for DatadogSettings {
    type Error = Vec<Problem>;

    fn try_from(s: DatadogSection) -> Result<Self, Vec<Problem>> {
        let mut p = Problems::default();
        let api_key = match s.api_key {
            None => {
                p.push(
                    "datadog.api_key",
                    "no API key is set",
                    "set DD_API_KEY (from a Secret) or datadog.api_key",
                );
                None
            }
            // A Secret made from a file often ends in a newline: it is not part
            // of the key.
            Some(k) => match k.expose().trim() {
                "" => {
                    p.push(
                        "datadog.api_key",
                        "the API key is empty",
                        "set DD_API_KEY to your organisation's API key",
                    );
                    None
                }
                key if !key.bytes().all(|b| b.is_ascii_graphic()) => {
                    // Never the key itself in the message.
                    p.push(
                        "datadog.api_key",
                        "the API key holds spaces or characters an HTTP header cannot carry",
                        "copy the key again from Datadog (Organization Settings > API Keys)",
                    );
                    None
                }
                key => Some(ApiKey::new(key)),
            },
        };
        if s.url.is_none() && !SITES.contains(&s.site.as_str()) {
            p.push(
                "datadog.site",
                format!("{:?} is not a Datadog site", s.site),
                format!("use one of {}, or set DD_URL", SITES.join(", ")),
            );
        }
        for (key, url) in [("datadog.url", &s.url), ("datadog.logs_url", &s.logs_url)] {
            let Some(url) = url else { continue };
            if url.starts_with("http://") {
                if !s.allow_insecure_http {
                    p.push(
                        key,
                        format!("{url:?} would send the API key unencrypted"),
                        "use https://, or set datadog.allow_insecure_http: true for a test intake or a proxy on the same host",
                    );
                }
            } else if !url.starts_with("https://") {
                p.push(
                    key,
                    format!("{url:?} is not an http(s) URL"),
                    "use a full base URL such as https://intake.example:443",
                );
            }
        }
        let hostname = s.hostname.unwrap_or_else(|| "evrelay".into());
        let cluster_name = s.cluster_name.filter(|c| !c.is_empty());
        if let Some(name) = &cluster_name
            && let Some(problem) = cluster_name_problem(name, &hostname)
        {
            let fixed = normalized_cluster_name(name);
            let fix = if cluster_name_problem(&fixed, &hostname).is_none() {
                format!(
                    "use {fixed:?} (the Cluster Agent would ignore {name:?} and send no kube_cluster_name)"
                )
            } else {
                "use lowercase letters, digits, '-' and '.', starting with a letter".to_owned()
            };
            p.push("datadog.cluster_name", problem, fix);
        }
        if s.tags.iter().any(|t| t.trim().is_empty()) {
            p.push(
                "datadog.tags",
                "a tag is empty",
                "remove it, or write it as key:value",
            );
        }
        let output = choice(&mut p, "datadog.output", &s.output);
        let compression = choice(&mut p, "datadog.compression", &s.compression);
        let (Some(api_key), Some(output), Some(compression)) = (api_key, output, compression)
        else {
            return Err(p.into_vec());
        };
        p.or(DatadogSettings {
            api_key,
            site: s.site,
            url: s.url,
            logs_url: s.logs_url,
            cluster_name,
            hostname,
            tags: s.tags,
            output,
            compression,
            service_check_interval: (s.service_check_interval_seconds > 0)
                .then(|| Duration::from_secs(s.service_check_interval_seconds)),
            quota_interval: (s.collect_openshift_clusterquotas
                && s.openshift_quota_interval_seconds > 0)
                .then(|| Duration::from_secs(s.openshift_quota_interval_seconds)),
            use_component_status: s.use_component_status,
        })
    }
}

/// `events:`. The names are the Cluster Agent's check options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsSection {
    /// `bundled` (the default) or `unbundled` (the Cluster Agent's `unbundle_events`).
    pub mode: String,
    /// In unbundled mode, bundle the events `collected_event_types` does not name
    /// instead of leaving them out.
    pub bundle_unspecified_events: bool,
    /// Deny list: reasons, or field selectors such as `type!=Normal`.
    pub filtered_event_types: Vec<String>,
    /// Events named `{kind, source, reasons}`: sent one by one in unbundled mode;
    /// in bundled mode only with `filtering_enabled`.
    pub collected_event_types: Vec<CollectedType>,
    /// The Cluster Agent's built-in list of events worth sending, added to
    /// `collected_event_types`; in bundled mode, only what they name is sent.
    pub filtering_enabled: bool,
    /// Namespaces to forward (names or `prefix*`); empty: all.
    pub namespaces_include: Vec<String>,
    /// Namespaces never to forward (names or `prefix*`).
    pub namespaces_exclude: Vec<String>,
}

impl Default for EventsSection {
    fn default() -> Self {
        let d = EventsSettings::default();
        EventsSection {
            mode: word(d.mode),
            bundle_unspecified_events: d.bundle_unspecified_events,
            filtered_event_types: Vec::new(),
            collected_event_types: Vec::new(),
            filtering_enabled: false,
            namespaces_include: Vec::new(),
            namespaces_exclude: Vec::new(),
        }
    }
}

impl TryFrom<EventsSection> for EventsSettings {
    type Error = Vec<Problem>;

    fn try_from(s: EventsSection) -> Result<Self, Vec<Problem>> {
        let mut p = Problems::default();
        let mode = choice(&mut p, "events.mode", &s.mode);
        for (i, c) in s.collected_event_types.iter().enumerate() {
            if c.kind.is_empty() && c.source.is_empty() {
                p.push(
                    &format!("events.collected_event_types[{i}]"),
                    "names neither a kind nor a source",
                    "set `kind` (e.g. Pod) or `source` (e.g. kubelet), as the Cluster Agent requires",
                );
            }
        }
        let filter = Filter::parse(
            &s.filtered_event_types,
            &s.collected_event_types,
            s.filtering_enabled,
            &s.namespaces_include,
            &s.namespaces_exclude,
        )
        .map_err(|bad| {
            for b in bad {
                p.push(
                    "events.filtered_event_types",
                    b.to_string(),
                    BadSelector::fix(),
                );
            }
        });
        let (Some(mode), Ok(filter)) = (mode, filter) else {
            return Err(p.into_vec());
        };
        if mode == Mode::Unbundled && !s.bundle_unspecified_events && filter.names_nothing() {
            p.push(
                "events.collected_event_types",
                "unbundled mode sends only the events collected_event_types names (as the Cluster Agent), and it names none: nothing would be sent",
                "name the events to send one by one (e.g. [{\"kind\":\"Pod\"}]), or set events.bundle_unspecified_events: true to bundle the rest, or events.filtering_enabled: true for the Cluster Agent's built-in list",
            );
        }
        p.or(EventsSettings {
            mode,
            bundle_unspecified_events: s.bundle_unspecified_events,
            filter,
        })
    }
}

/// `journal:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalSection {
    /// Where the journal lives (the PVC).
    pub data_dir: PathBuf,
    /// Memory the journal's page cache may use.
    pub cache_capacity_bytes: u64,
    /// The most record bytes the journal holds.
    pub max_bytes: u64,
    /// How long the dedup index remembers an event.
    pub seen_ttl_seconds: u64,
    /// How long shipped records are kept for `replay`; 0: until the byte cap needs room.
    pub retention_seconds: u64,
}

impl Default for JournalSection {
    fn default() -> Self {
        let d = JournalSettings::default();
        JournalSection {
            data_dir: d.data_dir,
            cache_capacity_bytes: d.cache_capacity_bytes,
            max_bytes: d.max_bytes,
            seen_ttl_seconds: d.seen_ttl.as_secs(),
            retention_seconds: d.retention.map_or(0, |r| r.as_secs()),
        }
    }
}

impl TryFrom<JournalSection> for JournalSettings {
    type Error = Vec<Problem>;

    fn try_from(s: JournalSection) -> Result<Self, Vec<Problem>> {
        let mut p = Problems::default();
        p.check(
            s.max_bytes >= 64 * 1024,
            "journal.max_bytes",
            format!("{} is below 64 KiB", s.max_bytes),
            "use at least 65536; size it for the longest intake outage to ride out (default 536870912)",
        );
        p.check(
            s.seen_ttl_seconds >= 3600,
            "journal.seen_ttl_seconds",
            format!(
                "{} is shorter than the API server's default event TTL (1 h)",
                s.seen_ttl_seconds
            ),
            "use more than the cluster's --event-ttl, e.g. 7200 (the default)",
        );
        p.check(
            s.cache_capacity_bytes >= 1024 * 1024,
            "journal.cache_capacity_bytes",
            format!("{} is below 1 MiB", s.cache_capacity_bytes),
            "use at least 1048576 (default 16777216)",
        );
        p.or(JournalSettings {
            data_dir: s.data_dir,
            cache_capacity_bytes: s.cache_capacity_bytes,
            max_bytes: s.max_bytes,
            seen_ttl: Duration::from_secs(s.seen_ttl_seconds),
            retention: (s.retention_seconds > 0).then(|| Duration::from_secs(s.retention_seconds)),
        })
    }
}

/// `watch:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchSection {
    /// How long one watch request lasts before the API server ends it.
    pub timeout_seconds: u32,
    /// A watch that delivers neither an event nor a bookmark for this long is
    /// reopened.
    pub stall_timeout_seconds: u64,
    /// Events per page when listing (`limit`), at the most.
    pub list_page_size: u32,
    /// The deadline of one LIST page and of opening a watch.
    pub request_timeout_seconds: u64,
    /// How long a leader may go without a LIST page or a watch before it steps down.
    pub establish_timeout_seconds: u64,
}

impl Default for WatchSection {
    fn default() -> Self {
        let d = WatchSettings::default();
        WatchSection {
            timeout_seconds: d.timeout.as_secs() as u32,
            stall_timeout_seconds: d.stall_timeout.as_secs(),
            list_page_size: d.list_page_size,
            request_timeout_seconds: d.request_timeout.as_secs(),
            establish_timeout_seconds: d.establish_timeout.as_secs(),
        }
    }
}

impl TryFrom<WatchSection> for WatchSettings {
    type Error = Vec<Problem>;

    fn try_from(s: WatchSection) -> Result<Self, Vec<Problem>> {
        let mut p = Problems::default();
        p.check(
            s.timeout_seconds > 0,
            "watch.timeout_seconds",
            "0 would end every watch at once",
            "use a value between 60 and 1800 (default 290)",
        );
        p.check(
            s.stall_timeout_seconds >= 70,
            "watch.stall_timeout_seconds",
            format!(
                "{} is shorter than the API server's bookmark interval (~60 s)",
                s.stall_timeout_seconds
            ),
            "use at least 70 (default 150)",
        );
        p.check(
            (1..=5000).contains(&s.list_page_size),
            "watch.list_page_size",
            format!("{} events per page", s.list_page_size),
            "use a value between 50 and 5000 (default 500)",
        );
        p.check(
            (5..=600).contains(&s.request_timeout_seconds),
            "watch.request_timeout_seconds",
            format!("{} is out of range", s.request_timeout_seconds),
            "use 5 to 600 seconds (default 60)",
        );
        p.check(
            s.establish_timeout_seconds >= 2 * s.request_timeout_seconds,
            "watch.establish_timeout_seconds",
            format!(
                "{} leaves no room for a retry of a {} s request",
                s.establish_timeout_seconds, s.request_timeout_seconds
            ),
            "use at least twice watch.request_timeout_seconds (default 180)",
        );
        p.or(WatchSettings {
            timeout: Duration::from_secs(s.timeout_seconds.into()),
            stall_timeout: Duration::from_secs(s.stall_timeout_seconds),
            list_page_size: s.list_page_size,
            request_timeout: Duration::from_secs(s.request_timeout_seconds),
            establish_timeout: Duration::from_secs(s.establish_timeout_seconds),
        })
    }
}

/// `ship:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShipSection {
    /// Records per request at the most.
    pub max_events: usize,
    /// Journal bytes per request at the most.
    pub max_bytes: usize,
    /// How long a partial batch gathers, in milliseconds: the bundle window.
    pub flush_interval_ms: u64,
    /// One request's deadline.
    pub request_timeout_seconds: u64,
    /// The longest wait between retries.
    pub max_backoff_seconds: u64,
    /// On shutdown, how long the leader may still drain and finish its request.
    pub shutdown_grace_seconds: u64,
}

impl Default for ShipSection {
    fn default() -> Self {
        let d = ShipSettings::default();
        ShipSection {
            max_events: d.max_events,
            max_bytes: d.max_bytes,
            flush_interval_ms: d.flush_interval.as_millis() as u64,
            request_timeout_seconds: d.request_timeout.as_secs(),
            max_backoff_seconds: d.max_backoff.as_secs(),
            shutdown_grace_seconds: d.shutdown_grace.as_secs(),
        }
    }
}

impl TryFrom<ShipSection> for ShipSettings {
    type Error = Vec<Problem>;

    fn try_from(s: ShipSection) -> Result<Self, Vec<Problem>> {
        let mut p = Problems::default();
        let mut range = |ok: bool, key: &str, value: String, fix: &str| {
            p.check(ok, key, format!("{value} is out of range"), fix)
        };
        range(
            (1..=10_000).contains(&s.max_events),
            "ship.max_events",
            s.max_events.to_string(),
            "use 1 to 10000 (default 500)",
        );
        range(
            (1024..=4 * 1024 * 1024).contains(&s.max_bytes),
            "ship.max_bytes",
            s.max_bytes.to_string(),
            "use 1024 to 4194304, the intake's uncompressed cap (default 3145728)",
        );
        range(
            s.flush_interval_ms <= 60_000,
            "ship.flush_interval_ms",
            s.flush_interval_ms.to_string(),
            "use at most 60000 (default 200; 15000 bundles as the Cluster Agent's check run does)",
        );
        range(
            s.request_timeout_seconds >= 1,
            "ship.request_timeout_seconds",
            s.request_timeout_seconds.to_string(),
            "use at least 1 (default 20)",
        );
        range(
            s.max_backoff_seconds >= 1,
            "ship.max_backoff_seconds",
            s.max_backoff_seconds.to_string(),
            "use at least 1 (default 64)",
        );
        p.or(ShipSettings {
            max_events: s.max_events,
            max_bytes: s.max_bytes,
            flush_interval: Duration::from_millis(s.flush_interval_ms),
            request_timeout: Duration::from_secs(s.request_timeout_seconds),
            max_backoff: Duration::from_secs(s.max_backoff_seconds),
            shutdown_grace: Duration::from_secs(s.shutdown_grace_seconds),
        })
    }
}

/// `leader:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaderSection {
    /// Elect one replica with a Lease and mirror its token to a ConfigMap.
    pub enabled: bool,
    /// Namespace of the Lease and the ConfigMaps (default: the pod's own).
    pub namespace: Option<String>,
    /// This replica's name in the Lease (default: `POD_NAME`, else the hostname).
    pub identity: Option<String>,
    /// The Lease's name.
    pub lease_name: String,
    /// How long a lease lasts without renewal.
    pub lease_duration_seconds: u64,
    /// The ConfigMap the leader mirrors its token, epoch and identity to.
    pub configmap: String,
    /// How often the leader publishes its shipped-through token.
    pub mirror_interval_seconds: u64,
    /// A Cluster Agent token ConfigMap to start from when evrelay's has no token.
    pub resume_from_configmap: Option<String>,
}

impl Default for LeaderSection {
    fn default() -> Self {
        let d = LeaderSettings::default();
        LeaderSection {
            enabled: d.enabled,
            namespace: d.namespace,
            identity: None,
            lease_name: d.lease_name,
            lease_duration_seconds: d.lease_duration.as_secs(),
            configmap: d.configmap,
            mirror_interval_seconds: d.mirror_interval.as_secs(),
            resume_from_configmap: d.resume_from_configmap,
        }
    }
}

impl TryFrom<LeaderSection> for LeaderSettings {
    type Error = Vec<Problem>;

    fn try_from(s: LeaderSection) -> Result<Self, Vec<Problem>> {
        let mut p = Problems::default();
        p.check(
            (3..=600).contains(&s.lease_duration_seconds),
            "leader.lease_duration_seconds",
            format!("{} is out of range", s.lease_duration_seconds),
            "use 3 to 600 seconds (default 15)",
        );
        p.check(
            (1..=300).contains(&s.mirror_interval_seconds),
            "leader.mirror_interval_seconds",
            format!("{} is out of range", s.mirror_interval_seconds),
            "use 1 to 300 seconds (default 5)",
        );
        for (key, value) in [
            ("leader.lease_name", Some(&s.lease_name)),
            ("leader.configmap", Some(&s.configmap)),
            (
                "leader.resume_from_configmap",
                s.resume_from_configmap.as_ref(),
            ),
            ("leader.namespace", s.namespace.as_ref()),
        ] {
            if let Some(v) = value {
                p.check(
                    is_dns_label(v),
                    key,
                    format!("{v:?} is not a valid Kubernetes name"),
                    "use lower-case letters, digits and '-', at most 63 characters",
                );
            }
        }
        p.check(
            s.resume_from_configmap.as_ref() != Some(&s.configmap),
            "leader.resume_from_configmap",
            "names evrelay's own ConfigMap",
            "name the Cluster Agent's ConfigMap (usually datadogtoken), or leave it unset",
        );
        p.or(LeaderSettings {
            enabled: s.enabled,
            namespace: s.namespace,
            identity: s
                .identity
                .filter(|i| !i.is_empty())
                .unwrap_or_else(|| "evrelay".into()),
            lease_name: s.lease_name,
            lease_duration: Duration::from_secs(s.lease_duration_seconds),
            configmap: s.configmap,
            mirror_interval: Duration::from_secs(s.mirror_interval_seconds),
            resume_from_configmap: s.resume_from_configmap,
        })
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// `admin:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// Where `/metrics`, `/healthz` and `/readyz` are served. Empty: not served.
    pub listen_address: String,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            listen_address: AdminSettings::default()
                .listen
                .map(|a| a.to_string())
                .unwrap_or_default(),
        }
    }
}

impl TryFrom<AdminSection> for AdminSettings {
    type Error = Vec<Problem>;

    fn try_from(s: AdminSection) -> Result<Self, Vec<Problem>> {
        if s.listen_address.is_empty() {
            return Ok(AdminSettings { listen: None });
        }
        match s.listen_address.parse::<SocketAddr>() {
            Ok(address) => Ok(AdminSettings {
                listen: Some(address),
            }),
            Err(_) => Err(vec![Problem::new(
                "admin.listen_address",
                format!("{:?} is not an address and port", s.listen_address),
                "use IP:PORT, e.g. 0.0.0.0:8080 (or empty to turn the endpoint off)",
            )]),
        }
    }
}
