//! Datadog's side: where events go and what they look like when they get there.
//!
//! - `transform.rs`: every mapping from a Kubernetes event to a Datadog event, in
//!   one place, checkable line by line against the Cluster Agent (docs/datadog.md).
//! - `filter.rs`: which events are forwarded (`events.*` filters).
//! - `payload.rs`: the request bodies (`/intake/`, `/api/v2/logs`,
//!   `/api/v1/check_run`) and their compression.
//! - `logs.rs`: the same events as Datadog logs, for `datadog.output: logs`.

mod filter;
mod logs;
mod payload;
mod transform;

use std::fmt;

use serde::Deserialize;

use crate::config::Problem;

pub use filter::{CollectedType, Decision, Filter};
pub use logs::LogEntry;
pub use payload::{
    Body, Compression, Encoder, Endpoint, ServiceCheck, encode, encode_check_run, encode_logs,
};
pub use transform::{
    DdEvent, MAX_BUNDLE_EVENTS, MAX_TEXT_CHARS, Mapped, Occurrence, Outbound, SOURCE_TYPE_NAME,
    TRUNCATION_MARKER, Transform, idempotency_tag, replay_tag,
};

/// The Datadog sites evrelay knows the intake address of.
pub const SITES: &[&str] = &[
    "datadoghq.com",
    "us3.datadoghq.com",
    "us5.datadoghq.com",
    "datadoghq.eu",
    "ap1.datadoghq.com",
    "ap2.datadoghq.com",
    "ddog-gov.com",
];

/// Datadog settings (`datadog:` in the config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatadogConfig {
    /// The API key the intake authenticates with (`DD_API_KEY`). Never logged.
    pub api_key: Option<ApiKey>,
    /// The Datadog site (`DD_SITE`), which decides the intake address.
    pub site: String,
    /// A full intake base URL (`DD_URL`), overriding the site: for proxies and tests.
    pub url: Option<String>,
    /// Tags every event with `kube_cluster_name` and suffixes node hosts (`DD_CLUSTER_NAME`).
    pub cluster_name: Option<String>,
    /// `internalHostname` in payloads (`DD_HOSTNAME`); defaults to the pod name.
    pub hostname: Option<String>,
    /// `events` (the Cluster Agent's events, the default) or `logs` (the same
    /// events as Datadog logs).
    pub output: String,
    /// `zstd` (the default) or `deflate`, for event payloads; logs are gzipped.
    pub compression: String,
    /// The logs intake's base URL (default `https://http-intake.logs.<site>`).
    pub logs_url: Option<String>,
    /// How often the leader reports `kube_apiserver_controlplane.up`; 0: never.
    pub service_check_interval_seconds: u64,
}

impl Default for DatadogConfig {
    fn default() -> Self {
        DatadogConfig {
            api_key: None,
            site: "datadoghq.com".into(),
            url: None,
            cluster_name: None,
            hostname: None,
            output: "events".into(),
            compression: "zstd".into(),
            logs_url: None,
            service_check_interval_seconds: 15,
        }
    }
}

impl DatadogConfig {
    /// The base URL requests go to: `url` if set, else the site's intake.
    pub fn base_url(&self) -> String {
        match &self.url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("https://app.{}", self.site),
        }
    }

    /// The logs intake's base URL: `logs_url`, else `url` (one intake for all, as
    /// in tests and behind proxies), else the site's logs intake.
    pub fn logs_base_url(&self) -> String {
        match (&self.logs_url, &self.url) {
            (Some(url), _) | (None, Some(url)) => url.trim_end_matches('/').to_owned(),
            (None, None) => format!("https://http-intake.logs.{}", self.site),
        }
    }

    /// Whether events go out as logs.
    pub fn as_logs(&self) -> bool {
        self.output == "logs"
    }

    /// How the shipper encodes what it sends, with `hostname` as `internalHostname`.
    pub fn encoder(&self, hostname: &str) -> Encoder {
        Encoder {
            hostname: hostname.to_owned(),
            compression: if self.compression == "deflate" {
                Compression::Deflate
            } else {
                Compression::Zstd
            },
            logs: self.as_logs(),
        }
    }

    pub(crate) fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        match &self.api_key {
            None => out.push(Problem {
                key: "datadog.api_key".into(),
                message: "no API key is set".into(),
                fix: "set DD_API_KEY (from a Secret) or datadog.api_key".into(),
            }),
            Some(k) if k.0.trim().is_empty() => out.push(Problem {
                key: "datadog.api_key".into(),
                message: "the API key is empty".into(),
                fix: "set DD_API_KEY to your organisation's API key".into(),
            }),
            Some(_) => {}
        }
        if self.url.is_none() && !SITES.contains(&self.site.as_str()) {
            out.push(Problem {
                key: "datadog.site".into(),
                message: format!("{:?} is not a Datadog site", self.site),
                fix: format!("use one of {}, or set DD_URL", SITES.join(", ")),
            });
        }
        for (key, url) in [
            ("datadog.url", &self.url),
            ("datadog.logs_url", &self.logs_url),
        ] {
            if let Some(url) = url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                out.push(Problem {
                    key: key.into(),
                    message: format!("{url:?} is not an http(s) URL"),
                    fix: "use a full base URL such as https://intake.example:443".into(),
                });
            }
        }
        one_of(
            &mut out,
            "datadog.output",
            &self.output,
            &["events", "logs"],
        );
        one_of(
            &mut out,
            "datadog.compression",
            &self.compression,
            &["zstd", "deflate"],
        );
        out
    }
}

/// Which events are forwarded and how they are grouped (`events:` in the config
/// file). The names are the Cluster Agent's check options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// `bundled` (the default) or `unbundled` (the Cluster Agent's `unbundle_events`).
    pub mode: String,
    /// In unbundled mode, bundle the events `collected_event_types` does not name
    /// instead of leaving them out.
    pub bundle_unspecified_events: bool,
    /// Deny list: reasons, or field selectors such as `type!=Normal`.
    pub filtered_event_types: Vec<String>,
    /// Allow list of `{kind, source, reasons}`; empty: every event.
    pub collected_event_types: Vec<CollectedType>,
    /// Namespaces to forward (names or `prefix*`); empty: all.
    pub namespaces_include: Vec<String>,
    /// Namespaces never to forward (names or `prefix*`).
    pub namespaces_exclude: Vec<String>,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            mode: "bundled".into(),
            bundle_unspecified_events: false,
            filtered_event_types: Vec::new(),
            collected_event_types: Vec::new(),
            namespaces_include: Vec::new(),
            namespaces_exclude: Vec::new(),
        }
    }
}

impl EventsConfig {
    /// Whether events go one by one.
    pub fn unbundled(&self) -> bool {
        self.mode == "unbundled"
    }

    /// The parsed filters; what cannot be parsed goes to `problems`.
    pub(crate) fn filter(&self, problems: &mut Vec<Problem>) -> Filter {
        Filter::parse(
            "events.filtered_event_types",
            &self.filtered_event_types,
            &self.collected_event_types,
            &self.namespaces_include,
            &self.namespaces_exclude,
            problems,
        )
    }

    pub(crate) fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        one_of(
            &mut out,
            "events.mode",
            &self.mode,
            &["bundled", "unbundled"],
        );
        self.filter(&mut out);
        for (i, c) in self.collected_event_types.iter().enumerate() {
            if c.kind.is_empty() && c.source.is_empty() {
                out.push(Problem {
                    key: format!("events.collected_event_types[{i}]"),
                    message: "names neither a kind nor a source".into(),
                    fix: "set `kind` (e.g. Pod) or `source` (e.g. kubelet), as the Cluster Agent requires".into(),
                });
            }
        }
        out
    }
}

fn one_of(out: &mut Vec<Problem>, key: &str, value: &str, allowed: &[&str]) {
    if !allowed.contains(&value) {
        out.push(Problem {
            key: key.into(),
            message: format!("{value:?} is not a choice"),
            fix: format!("use one of {}", allowed.join(", ")),
        });
    }
}

/// A Datadog API key. Its `Debug` and `Display` never show it.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }

    /// The key itself, for the one header that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}
