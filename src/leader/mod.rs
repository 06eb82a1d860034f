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
pub mod term;

use std::time::Duration;

pub use lease::{Elector, Ended, Held, Timing};
pub use mirror::{Claim, MirrorError, Mirrored, TokenMirror};
pub use term::{Duties, Election, Mirror, TermEnd};

/// Leadership settings, checked (`leader:` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderSettings {
    /// Elect one replica with a Lease and mirror its token to a ConfigMap. Off only
    /// for a single replica that must not touch the API beyond reading events.
    pub enabled: bool,
    /// Namespace of the Lease and the ConfigMaps. `None`: the pod's own namespace
    /// (the ServiceAccount's), else the kubeconfig context's.
    pub namespace: Option<String>,
    /// This replica's name in the Lease: unique among replicas and stable across
    /// restarts (a StatefulSet pod name is both).
    pub identity: String,
    /// The Lease's name.
    pub lease_name: String,
    /// How long a lease lasts without renewal. The holder renews every 2/15 of it
    /// and steps down after 2/3 of it without a renewal.
    pub lease_duration: Duration,
    /// The ConfigMap the leader mirrors its token, epoch and identity to.
    pub configmap: String,
    /// How often the leader publishes its shipped-through token. A failover
    /// re-sends at most what was shipped in the last interval.
    pub mirror_interval: Duration,
    /// A Datadog Cluster Agent token ConfigMap (its default name is
    /// `datadogtoken`) to start from when evrelay's own ConfigMap holds no token
    /// yet: nothing the Cluster Agent already sent is sent again.
    pub resume_from_configmap: Option<String>,
}

impl Default for LeaderSettings {
    fn default() -> Self {
        LeaderSettings {
            enabled: true,
            namespace: None,
            identity: "evrelay".into(),
            lease_name: "evrelay".into(),
            lease_duration: Duration::from_secs(15),
            configmap: "evrelay-token".into(),
            mirror_interval: Duration::from_secs(5),
            resume_from_configmap: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_follow_the_duration() {
        let t = Timing::for_duration(LeaderSettings::default().lease_duration);
        assert_eq!(t.renew_deadline, Duration::from_secs(10));
        assert_eq!(t.renew_every, Duration::from_secs(2));
        assert_eq!(t.poll_every, Duration::from_secs(1));
    }
}
