//! Datadog's side: where events go and what they look like when they get there.
//!
//! - `transform.rs`: every mapping from a Kubernetes event to a Datadog event, in
//!   one place, checkable line by line against the Cluster Agent (ANCHORS.md).
//! - `payload.rs`: the `/intake/` request body and its compression.

mod payload;
mod transform;

use std::fmt;

use serde::Deserialize;

use crate::config::Problem;

pub use payload::{Body, encode};
pub use transform::{DdEvent, SOURCE_TYPE_NAME, idempotency_tag, replay_tag, unbundled};

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
}

impl Default for DatadogConfig {
    fn default() -> Self {
        DatadogConfig {
            api_key: None,
            site: "datadoghq.com".into(),
            url: None,
            cluster_name: None,
            hostname: None,
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
        if let Some(url) = &self.url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            out.push(Problem {
                key: "datadog.url".into(),
                message: format!("{url:?} is not an http(s) URL"),
                fix: "use a full base URL such as https://intake.example:443".into(),
            });
        }
        out
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
