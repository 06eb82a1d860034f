//! Datadog as a destination: where events go and what they look like when they get
//! there.
//!
//! - `transform.rs`: every mapping from a Kubernetes event to a Datadog event, in
//!   one place, checkable line by line against the Cluster Agent (docs/datadog.md).
//! - `filter.rs`: which events are forwarded (`events.*` filters).
//! - `payload.rs`: the request bodies (`/intake/`, `/api/v2/logs`,
//!   `/api/v1/check_run`) and their compression and caps.
//! - `logs.rs`: the same events as Datadog logs, for `datadog.output: logs`.
//! - `intake.rs`: one HTTP call to the intake, its answer judged.
//! - `sink.rs`: the two sinks the shipper drives, events and logs.

mod filter;
mod intake;
mod logs;
mod payload;
mod sink;
mod transform;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

pub use filter::{BadSelector, CollectedType, DEFAULT_TYPES, Decision, Filter, Grouping};
pub use intake::{Intake, Transport, USER_AGENT};
pub use logs::LogEntry;
pub use payload::{
    Body, Compression, Endpoint, Gauge, ServiceCheck, encode, encode_check_run, encode_logs,
    encode_series,
};
pub use sink::{DatadogSink, EventsFormat, EventsSink, Format, LogsFormat, LogsSink};
pub use transform::{
    DdEvent, MAX_BUNDLE_EVENTS, MAX_TEXT_CHARS, SOURCE_TYPE_NAME, TRUNCATION_MARKER, Transform,
    idempotency_tag, replay_tag,
};

/// The journal cursor of the Datadog sinks (either output: one is configured).
pub const SINK_NAME: &str = "datadog";

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

/// What the events become at Datadog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Output {
    /// The Cluster Agent's events, to `/intake/`.
    #[default]
    Events,
    /// The same events as Datadog logs, to `/api/v2/logs`.
    Logs,
}

/// How events are grouped into Datadog events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// One Datadog event per object and type per batch (the Cluster Agent's default).
    #[default]
    Bundled,
    /// One Datadog event per Kubernetes event (the Cluster Agent's `unbundle_events`).
    Unbundled,
}

/// A choice the configuration names by a word.
pub trait Choice: Sized + Copy + 'static {
    /// Every word, with its value.
    const CHOICES: &'static [(&'static str, Self)];
}

impl Choice for Output {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("events", Output::Events), ("logs", Output::Logs)];
}

impl Choice for Mode {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("bundled", Mode::Bundled), ("unbundled", Mode::Unbundled)];
}

impl Choice for Compression {
    /// Event payloads only: logs and service checks are always gzip.
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("zstd", Compression::Zstd),
        ("deflate", Compression::Deflate),
    ];
}

/// The word is not one of the choices.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a choice")]
pub struct NotAChoice(pub String);

fn choose<T: Choice>(word: &str) -> Result<T, NotAChoice> {
    T::CHOICES
        .iter()
        .find(|(w, _)| *w == word)
        .map(|(_, v)| *v)
        .ok_or_else(|| NotAChoice(word.to_owned()))
}

impl FromStr for Output {
    type Err = NotAChoice;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        choose(s)
    }
}

impl FromStr for Mode {
    type Err = NotAChoice;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        choose(s)
    }
}

impl FromStr for Compression {
    type Err = NotAChoice;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        choose(s)
    }
}

/// Datadog settings, checked (`datadog:` in the configuration).
#[derive(Debug, Clone)]
pub struct DatadogSettings {
    /// The API key the intake authenticates with (`DD_API_KEY`). Never logged.
    pub api_key: ApiKey,
    /// The Datadog site (`DD_SITE`), which decides the intake address.
    pub site: String,
    /// A full intake base URL (`DD_URL`), overriding the site: proxies and tests.
    pub url: Option<String>,
    /// The logs intake's base URL (default `DD_URL`, else the site's).
    pub logs_url: Option<String>,
    /// Tags every event with `kube_cluster_name` and suffixes node hosts. Valid
    /// by the Cluster Agent's rule ([`cluster_name_problem`]).
    pub cluster_name: Option<String>,
    /// evrelay's own host, as the Cluster Agent's is: `internalHostname` in
    /// payloads, the host of the service checks and of every event that names no
    /// node (`DD_HOSTNAME`, else `<node>-<cluster>` from `NODE_NAME`, else the
    /// pod's name).
    pub hostname: String,
    /// Added to every event, log and service check: `datadog.tags`, then the
    /// Agent's global tags (`DD_TAGS`, `DD_EXTRA_TAGS`, `DD_CLUSTER_CHECKS_EXTRA_TAGS`).
    pub tags: Vec<String>,
    pub output: Output,
    /// For event payloads; logs and service checks are gzipped.
    pub compression: Compression,
    /// How often the leader reports `kube_apiserver_controlplane.up`; `None`: never.
    pub service_check_interval: Option<Duration>,
    /// How often the leader reports OpenShift's cluster quotas; `None`: never.
    pub quota_interval: Option<Duration>,
    /// The control-plane check from ComponentStatus (else from `/readyz`).
    pub use_component_status: bool,
}

impl Default for DatadogSettings {
    fn default() -> Self {
        DatadogSettings {
            api_key: ApiKey::new(""),
            site: "datadoghq.com".into(),
            url: None,
            logs_url: None,
            cluster_name: None,
            hostname: "evrelay".into(),
            tags: Vec::new(),
            output: Output::Events,
            compression: Compression::Zstd,
            service_check_interval: Some(Duration::from_secs(15)),
            quota_interval: Some(Duration::from_secs(15)),
            use_component_status: true,
        }
    }
}

impl DatadogSettings {
    /// The base URL of `/intake/` and `/api/v1/check_run`: `url` if set, else the
    /// site's.
    pub fn base_url(&self) -> String {
        match &self.url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("https://app.{}", self.site),
        }
    }

    /// The tags of evrelay's service checks: the cluster's, then the configured
    /// and global tags (the Cluster Agent adds the same to its checks).
    pub fn check_tags(&self) -> Vec<String> {
        let cluster = self
            .cluster_name
            .iter()
            .map(|c| format!("kube_cluster_name:{c}"));
        cluster.chain(self.tags.iter().cloned()).collect()
    }

    /// The logs intake's base URL: `logs_url`, else `url` (one intake for all, as
    /// in tests and behind proxies), else the site's logs intake.
    pub fn logs_base_url(&self) -> String {
        match (&self.logs_url, &self.url) {
            (Some(url), _) | (None, Some(url)) => url.trim_end_matches('/').to_owned(),
            (None, None) => format!("https://http-intake.logs.{}", self.site),
        }
    }
}

/// What is wrong with a cluster name, by the Cluster Agent's rule, and the name it
/// would take: dot-separated labels of lowercase letters, digits and `-`, each
/// starting with a letter and ending with a letter or digit, and
/// `<hostname>-<name>` at most 255 bytes. The Cluster Agent ignores a configured
/// name that breaks it (no `kube_cluster_name`, no host suffix); evrelay refuses
/// to start and says what to write instead.
pub fn cluster_name_problem(name: &str, hostname: &str) -> Option<String> {
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_lowercase()
            && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
    };
    if !name.split('.').all(label_ok) {
        return Some(format!(
            "{name:?} is not a valid cluster name (dot-separated labels of lowercase letters, digits and '-', each starting with a letter)"
        ));
    }
    if hostname.len() + 1 + name.len() > 255 {
        return Some(format!(
            "\"{hostname}-{name}\" (the host alias) is longer than 255 bytes"
        ));
    }
    None
}

/// The name the Cluster Agent makes of a cluster name it discovers: lowercase,
/// `_` as `-` (its RFC 1123 mode, on by default). For the fix a problem suggests.
pub fn normalized_cluster_name(name: &str) -> String {
    name.to_lowercase().replace('_', "-")
}

/// The Agent's global tags from its environment variables: each value split on
/// whitespace (how the Agent reads a list from a variable: no commas, no JSON),
/// and only `key:value` tags kept, as the Cluster Agent keeps them. Returns the
/// tags and the ones it would drop, by variable.
pub fn agent_global_tags(
    env: &impl Fn(&str) -> Option<String>,
) -> (Vec<String>, Vec<(&'static str, String)>) {
    let mut tags = Vec::new();
    let mut dropped = Vec::new();
    for var in GLOBAL_TAG_VARIABLES {
        for tag in env(var).unwrap_or_default().split_whitespace() {
            if tag.contains(':') {
                tags.push(tag.to_owned());
            } else {
                dropped.push((var, tag.to_owned()));
            }
        }
    }
    (tags, dropped)
}

/// Where the Cluster Agent reads the tags it adds to everything it sends.
pub const GLOBAL_TAG_VARIABLES: [&str; 3] =
    ["DD_TAGS", "DD_EXTRA_TAGS", "DD_CLUSTER_CHECKS_EXTRA_TAGS"];

/// Which events are forwarded and how they are grouped, checked (`events:` in the
/// configuration). The names are the Cluster Agent's check options.
#[derive(Debug, Clone, Default)]
pub struct EventsSettings {
    pub mode: Mode,
    /// In unbundled mode, bundle the events `collected_event_types` does not name
    /// instead of leaving them out.
    pub bundle_unspecified_events: bool,
    /// The deny and allow lists and the namespace lists, parsed.
    pub filter: Filter,
}

/// A Datadog API key. Its `Debug` and `Display` never show it.
#[derive(Clone, serde::Deserialize)]
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The Cluster Agent's own cases (`pkg/util/kubernetes/clustername`,
    /// `clustername_test.go`, hostname `hostname`).
    #[test]
    fn cluster_names_are_judged_as_the_cluster_agent_judges_them() {
        for valid in [
            "laika",
            "youri",
            "aclusternamewitha.dot",
            "a.cluster.name.with.dots",
        ] {
            assert_eq!(cluster_name_problem(valid, "hostname"), None, "{valid}");
        }
        let too_long = format!("{}too", "toolong".repeat(35));
        for invalid in [
            "Capital",
            "with_underscore",
            "with_dot._underscore",
            too_long.as_str(),
            "a..a",
            "a.1.a",
            "mx.gmail.com.",
        ] {
            assert!(
                cluster_name_problem(invalid, "hostname").is_some(),
                "{invalid}"
            );
        }
        assert_eq!(normalized_cluster_name("Prod_EU"), "prod-eu");
        assert_eq!(normalized_cluster_name("cluster_name_"), "cluster-name-");
    }

    #[test]
    fn global_tags_split_on_whitespace_and_keep_key_value_only() {
        let env = |v: &str| match v {
            "DD_TAGS" => Some("env:prod  team:a,b:c\tnocolon".to_owned()),
            "DD_EXTRA_TAGS" => Some(String::new()),
            "DD_CLUSTER_CHECKS_EXTRA_TAGS" => Some(" region:eu ".to_owned()),
            _ => None,
        };
        let (tags, dropped) = agent_global_tags(&env);
        assert_eq!(tags, ["env:prod", "team:a,b:c", "region:eu"]);
        assert_eq!(dropped, [("DD_TAGS", "nocolon".to_owned())]);
    }
}
