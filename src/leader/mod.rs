//! Leadership: which replica watches and ships, and how another one takes over.
//!
//! - [`lease`]: election on a `coordination.k8s.io/v1` Lease. Only the holder
//!   watches, ships and mirrors; a holder that cannot renew stops before anyone
//!   else can take the lease.
//! - [`mirror`]: the token ConfigMap. Each takeover claims the next *epoch* there
//!   (a conditional write, so each epoch has one holder); the leader publishes its
//!   shipped-through token every `mirror_interval_seconds`, and a write that finds
//!   a newer epoch fences the writer off.
//!
//! What a new leader does with its own journal is decided by
//! [`crate::delivery::takeover`] (docs/delivery.md, rule 6).

pub mod lease;
pub mod mirror;

use std::time::Duration;

use crate::config::Problem;
pub use lease::{Elector, Ended, Held, Timing};
pub use mirror::{Claim, MirrorError, Mirrored, TokenMirror};

/// Leadership settings (`leader:` in the config file).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaderConfig {
    /// Elect one replica with a Lease and mirror its token to a ConfigMap. Off only
    /// for a single replica that must not touch the API beyond reading events.
    pub enabled: bool,
    /// Namespace of the Lease and the ConfigMaps. Default: the pod's own namespace
    /// (the ServiceAccount's), else the kubeconfig context's.
    pub namespace: Option<String>,
    /// This replica's name in the Lease. Default: `POD_NAME`, else the hostname.
    /// Must be unique among replicas and stable across restarts (a StatefulSet
    /// pod name is both).
    pub identity: Option<String>,
    /// The Lease's name.
    pub lease_name: String,
    /// How long a lease lasts without renewal. The holder renews every 2/15 of it
    /// and steps down after 2/3 of it without a renewal.
    pub lease_duration_seconds: u64,
    /// The ConfigMap the leader mirrors its token, epoch and identity to.
    pub configmap: String,
    /// How often the leader publishes its shipped-through token. A failover
    /// re-sends at most what was shipped in the last interval.
    pub mirror_interval_seconds: u64,
    /// A Datadog Cluster Agent token ConfigMap (its default name is
    /// `datadogtoken`) to start from when evrelay's own ConfigMap holds no token
    /// yet: nothing the Cluster Agent already sent is sent again.
    pub resume_from_configmap: Option<String>,
}

impl Default for LeaderConfig {
    fn default() -> Self {
        LeaderConfig {
            enabled: true,
            namespace: None,
            identity: None,
            lease_name: "evrelay".into(),
            lease_duration_seconds: 15,
            configmap: "evrelay-token".into(),
            mirror_interval_seconds: 5,
            resume_from_configmap: None,
        }
    }
}

impl LeaderConfig {
    pub(crate) fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if !(3..=600).contains(&self.lease_duration_seconds) {
            out.push(Problem {
                key: "leader.lease_duration_seconds".into(),
                message: format!("{} is out of range", self.lease_duration_seconds),
                fix: "use 3 to 600 seconds (default 15)".into(),
            });
        }
        if !(1..=300).contains(&self.mirror_interval_seconds) {
            out.push(Problem {
                key: "leader.mirror_interval_seconds".into(),
                message: format!("{} is out of range", self.mirror_interval_seconds),
                fix: "use 1 to 300 seconds (default 5)".into(),
            });
        }
        for (key, value) in [
            ("leader.lease_name", Some(&self.lease_name)),
            ("leader.configmap", Some(&self.configmap)),
            (
                "leader.resume_from_configmap",
                self.resume_from_configmap.as_ref(),
            ),
            ("leader.namespace", self.namespace.as_ref()),
        ] {
            if let Some(v) = value
                && !is_dns_label(v)
            {
                out.push(Problem {
                    key: key.into(),
                    message: format!("{v:?} is not a valid Kubernetes name"),
                    fix: "use lower-case letters, digits and '-', at most 63 characters".into(),
                });
            }
        }
        if self.resume_from_configmap.as_ref() == Some(&self.configmap) {
            out.push(Problem {
                key: "leader.resume_from_configmap".into(),
                message: "names evrelay's own ConfigMap".into(),
                fix: "name the Cluster Agent's ConfigMap (usually datadogtoken), or leave it unset"
                    .into(),
            });
        }
        out
    }

    pub fn lease_duration(&self) -> Duration {
        Duration::from_secs(self.lease_duration_seconds)
    }

    /// This replica's identity: the configured one, `POD_NAME`, or the hostname.
    pub fn identity(&self) -> String {
        self.identity
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| std::env::var("POD_NAME").ok().filter(|s| !s.is_empty()))
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "evrelay".into())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_timings_follow_the_duration() {
        let c = LeaderConfig::default();
        assert!(c.problems().is_empty());
        let t = Timing::for_duration(c.lease_duration());
        assert_eq!(t.renew_deadline, Duration::from_secs(10));
        assert_eq!(t.renew_every, Duration::from_secs(2));
        assert_eq!(t.poll_every, Duration::from_secs(1));
    }

    #[test]
    fn bad_names_and_ranges_are_reported() {
        let c = LeaderConfig {
            lease_duration_seconds: 1,
            configmap: "Token_Map".into(),
            resume_from_configmap: Some("Token_Map".into()),
            ..Default::default()
        };
        let keys: Vec<_> = c.problems().into_iter().map(|p| p.key).collect();
        assert!(keys.contains(&"leader.lease_duration_seconds".to_owned()));
        assert!(keys.contains(&"leader.configmap".to_owned()));
        assert!(keys.contains(&"leader.resume_from_configmap".to_owned()));
    }
}
