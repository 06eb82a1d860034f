//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's rules.
//!
//! A candidate takes the Lease when it has no holder, names this replica, or has not
//! changed for a whole lease duration *as the candidate observed it* (its own clock,
//! never the holder's `renewTime`, so clock skew between nodes cannot matter).
//!
//! The holder renews every [`Timing::renew_every`] and gives up when no renewal has
//! succeeded within [`Timing::renew_deadline`] of the last good one being *sent*.
//! A candidate can only take over a lease duration after it *saw* that renewal,
//! which is later still: the holder has stepped down at least
//! `duration - renew_deadline` (5 s with the defaults) before anyone else can hold
//! the lease. Every write carries the Lease's resourceVersion, so two candidates
//! cannot both win one round.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::{Backoff, within};
use crate::metrics::Metrics;

/// How often things happen, all derived from the lease duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a lease lasts without renewal (`leaseDurationSeconds`).
    pub duration: Duration,
    /// The holder steps down when it has not renewed for this long: 2/3 of the
    /// duration (10 s of 15 s).
    pub renew_deadline: Duration,
    /// How often the holder renews: 2/15 of the duration (2 s of 15 s).
    pub renew_every: Duration,
    /// How often a candidate looks at the lease: 1/15 of the duration (1 s of
    /// 15 s), so it sees the holder's last renewal soon after it happened.
    pub poll_every: Duration,
}

impl Timing {
    pub fn for_duration(duration: Duration) -> Self {
        Timing {
            duration,
            renew_deadline: duration * 2 / 3,
            renew_every: (duration * 2 / 15).max(Duration::from_millis(200)),
            poll_every: (duration / 15).max(Duration::from_millis(100)),
        }
    }
}

/// What a candidate saw of the Lease, as the election rules need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The Lease's resourceVersion: any write by anyone changes it.
    pub version: String,
    /// `holderIdentity`, `None` when empty.
    pub holder: Option<String>,
    /// `leaseDurationSeconds`, when set and positive.
    pub duration: Option<Duration>,
}

impl Seen {
    fn of(lease: &Lease) -> Seen {
        let spec = lease.spec.clone().unwrap_or_default();
        Seen {
            version: lease.metadata.resource_version.clone().unwrap_or_default(),
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            duration: spec
                .lease_duration_seconds
                .filter(|s| *s > 0)
                .map(|s| Duration::from_secs(s as u64)),
        }
    }
}

/// A version of the Lease and when this candidate first saw it: the lease expires
/// a duration after that, by this candidate's own clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed<'a> {
    pub version: &'a str,
    pub since: Instant,
}

/// What a candidate does after looking at the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Take it (write ourselves as holder, conditionally on the version seen).
    Take,
    /// It is held: look again after this long.
    Wait(Duration),
}

/// The election rule, with no I/O: the lease is free when it has no holder, names
/// `me`, or has not changed for a whole lease duration since `observed.since`.
/// Otherwise wait one poll, or exactly until it would expire if that is sooner.
pub fn decide(
    seen: &Seen,
    observed: Observed<'_>,
    me: &str,
    now: Instant,
    timing: &Timing,
) -> Decision {
    let duration = seen.duration.unwrap_or(timing.duration);
    let age = now.saturating_duration_since(observed.since);
    let free = seen.holder.is_none() || seen.holder.as_deref() == Some(me) || age >= duration;
    if free {
        Decision::Take
    } else {
        Decision::Wait(timing.poll_every.min(duration - age))
    }
}

/// A lease this replica holds: the version last written, and when the write that
/// made it was sent (the holder's deadlines count from then).
#[derive(Debug, Clone)]
pub struct Held {
    lease: Lease,
    renewed_at: Instant,
}

#[cfg(test)]
impl Held {
    /// A lease held since now (for the term's tests).
    pub(crate) fn for_tests() -> Held {
        Held {
            lease: Lease::default(),
            renewed_at: Instant::now(),
        }
    }
}

/// Why holding ended.
#[derive(Debug)]
pub enum Ended {
    /// The lease could not be renewed in time, or another replica holds it now.
    /// Everything leader-only must already have stopped.
    Lost(String),
    /// Asked to stop; the lease is still held and can be released.
    Stopped(Box<Held>),
}

/// Elects one replica on a named Lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    /// Where the API server's reachability is reported.
    metrics: Metrics,
}

impl Elector {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timing: Timing,
        metrics: Metrics,
    ) -> Self {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            timing,
            metrics,
        }
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// Waits until this replica holds the lease; `None` on shutdown.
    pub async fn acquire(&self, shutdown: &CancellationToken) -> Option<Held> {
        // The lease version last seen, and when this replica first saw it.
        let mut observed: Option<(String, Instant)> = None;
        let mut waiting_for = String::new();
        let mut failing = Failing::default();
        // While the API server fails, look less and less often (up to once a lease
        // duration): a standby must not hammer an API server that is down.
        let mut backoff = Backoff::new(self.timing.poll_every, self.timing.duration);
        loop {
            if shutdown.is_cancelled() {
                return None;
            }
            let mut wait = self.timing.poll_every;
            if failing.0.is_some() {
                wait = backoff.wait().max(self.timing.poll_every);
            } else {
                backoff.reset();
            }
            match self.call(self.api.get_opt(&self.name)).await {
                Ok(None) => {
                    failing.clear();
                    let sent = Instant::now();
                    match self
                        .call(self.api.create(&PostParams::default(), &self.fresh()))
                        .await
                    {
                        Ok(lease) => return Some(self.won(lease, sent, "created")),
                        Err(e) if is_conflict(&e) => continue,
                        Err(e) => failing.report(&self.name, "creating the lease failed", &e),
                    }
                }
                Ok(Some(lease)) => {
                    failing.clear();
                    let seen = Seen::of(&lease);
                    if observed.as_ref().is_none_or(|(v, _)| *v != seen.version) {
                        observed = Some((seen.version.clone(), Instant::now()));
                    }
                    let (version, since) = observed.as_ref().expect("set above");
                    let at = Observed {
                        version,
                        since: *since,
                    };
                    match decide(&seen, at, &self.identity, Instant::now(), &self.timing) {
                        Decision::Take => {
                            let sent = Instant::now();
                            let holder = seen.holder;
                            let taken = self.take(lease, holder.as_deref());
                            match self
                                .call(self.api.replace(&self.name, &PostParams::default(), &taken))
                                .await
                            {
                                Ok(lease) => {
                                    let how = match holder {
                                        None => "free".to_owned(),
                                        Some(h) if h == self.identity => "already ours".to_owned(),
                                        Some(h) => format!("expired, held by {h}"),
                                    };
                                    return Some(self.won(lease, sent, &how));
                                }
                                Err(e) if is_conflict(&e) => continue,
                                Err(e) => failing.report(&self.name, "taking the lease failed", &e),
                            }
                        }
                        Decision::Wait(until) => {
                            let holder = seen.holder.unwrap_or_default();
                            if holder != waiting_for {
                                tracing::info!(lease = %self.name, %holder, "standing by: the lease is held");
                                waiting_for = holder;
                            }
                            wait = until;
                        }
                    }
                }
                Err(e) => failing.report(&self.name, "reading the lease failed", &e),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Renews the lease until it is lost or `stop` is cancelled. On `Lost`, the
    /// renew deadline has passed (or another holder is recorded): the caller must
    /// stop everything leader-only at once.
    pub async fn hold(&self, mut held: Held, stop: &CancellationToken) -> Ended {
        loop {
            let next = held.renewed_at + self.timing.renew_every;
            tokio::select! {
                _ = stop.cancelled() => return Ended::Stopped(Box::new(held)),
                _ = tokio::time::sleep_until(next) => {}
            }
            let deadline = held.renewed_at + self.timing.renew_deadline;
            loop {
                if stop.is_cancelled() {
                    return Ended::Stopped(Box::new(held));
                }
                let sent = Instant::now();
                if sent >= deadline {
                    return Ended::Lost("no renewal succeeded within the renew deadline".into());
                }
                match tokio::time::timeout_at(deadline, self.renew(&held.lease)).await {
                    Err(_) => {
                        return Ended::Lost(
                            "no renewal succeeded within the renew deadline".into(),
                        );
                    }
                    Ok(Ok(lease)) => {
                        held = Held {
                            lease,
                            renewed_at: sent,
                        };
                        break;
                    }
                    Ok(Err(Renewal::Taken(by))) => {
                        return Ended::Lost(format!("the lease is now held by {by}"));
                    }
                    Ok(Err(Renewal::Failed(e))) => {
                        tracing::warn!(error = %e, lease = %self.name, "renewing the lease failed; retrying");
                        let retry = (Instant::now() + self.timing.poll_every).min(deadline);
                        tokio::select! {
                            _ = stop.cancelled() => return Ended::Stopped(Box::new(held)),
                            _ = tokio::time::sleep_until(retry) => {}
                        }
                    }
                }
            }
        }
    }

    /// Gives the lease up, so a standby takes over at once instead of after a
    /// lease duration (a graceful shutdown).
    pub async fn release(&self, held: Held) {
        let mut lease = held.lease;
        let spec = lease.spec.get_or_insert_with(Default::default);
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        match self
            .call(self.api.replace(&self.name, &PostParams::default(), &lease))
            .await
        {
            Ok(_) => tracing::info!(lease = %self.name, "lease released"),
            Err(e) => {
                tracing::warn!(error = %e, lease = %self.name, "releasing the lease failed; a standby takes over when it expires")
            }
        }
    }

    async fn renew(&self, lease: &Lease) -> Result<Lease, Renewal> {
        let mut lease = lease.clone();
        loop {
            lease.spec.get_or_insert_with(Default::default).renew_time =
                Some(MicroTime(jiff::Timestamp::now()));
            match self
                .api
                .replace(&self.name, &PostParams::default(), &lease)
                .await
            {
                Ok(lease) => return Ok(lease),
                Err(e) if is_conflict(&e) => {
                    // Changed under us: still ours (someone edited it), or taken.
                    let current = self.api.get(&self.name).await.map_err(Renewal::Failed)?;
                    let holder = current
                        .spec
                        .as_ref()
                        .and_then(|s| s.holder_identity.clone())
                        .unwrap_or_default();
                    if holder != self.identity {
                        return Err(Renewal::Taken(holder));
                    }
                    lease = current;
                }
                Err(e) => return Err(Renewal::Failed(e)),
            }
        }
    }

    fn fresh(&self) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                ..Default::default()
            },
            spec: Some(self.ours(LeaseSpec {
                lease_transitions: Some(0),
                acquire_time: Some(MicroTime(jiff::Timestamp::now())),
                ..Default::default()
            })),
        }
    }

    fn take(&self, mut lease: Lease, previous: Option<&str>) -> Lease {
        let spec = lease.spec.take().unwrap_or_default();
        let transitions = spec.lease_transitions.unwrap_or(0);
        let changed = previous != Some(&self.identity);
        let mut spec = self.ours(spec);
        if changed {
            spec.lease_transitions = Some(transitions + 1);
            spec.acquire_time = spec.renew_time.clone();
        }
        lease.spec = Some(spec);
        lease
    }

    fn ours(&self, mut spec: LeaseSpec) -> LeaseSpec {
        let now = MicroTime(jiff::Timestamp::now());
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(self.timing.duration.as_secs().max(1) as i32);
        spec.renew_time = Some(now);
        spec
    }

    fn won(&self, lease: Lease, sent: Instant, how: &str) -> Held {
        let transitions = lease
            .spec
            .as_ref()
            .and_then(|s| s.lease_transitions)
            .unwrap_or(0);
        tracing::info!(lease = %self.name, identity = %self.identity, transitions, how, "lease acquired");
        Held {
            lease,
            renewed_at: sent,
        }
    }

    /// One API call, bounded so a silent network cannot hold the loop; whether it
    /// was answered is reported to the metrics.
    async fn call<T>(
        &self,
        request: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, kube::Error> {
        let result = within(self.timing.renew_deadline, request)
            .await
            .unwrap_or_else(|elapsed| Err(kube::Error::Service(elapsed.into())));
        match &result {
            Ok(_) | Err(kube::Error::Api(_)) => self.metrics.api_answered(),
            Err(_) => self.metrics.api_failed(),
        }
        result
    }
}

/// The failure last reported: each is logged as a warning once, then at debug
/// level until something succeeds, so a standby during an API outage (or without
/// the RBAC it needs) says so clearly without flooding the log.
#[derive(Default)]
struct Failing(Option<String>);

impl Failing {
    fn report(&mut self, lease: &str, what: &str, e: &kube::Error) {
        let message = format!("{what}: {e}");
        if self.0.as_ref() == Some(&message) {
            tracing::debug!(error = %e, lease, "{what}");
        } else {
            tracing::warn!(error = %e, lease, "{what}");
        }
        self.0 = Some(message);
    }

    fn clear(&mut self) {
        self.0 = None;
    }
}

enum Renewal {
    Taken(String),
    Failed(kube::Error),
}

pub(crate) fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(version: &str, holder: Option<&str>) -> Seen {
        Seen {
            version: version.into(),
            holder: holder.map(Into::into),
            duration: None,
        }
    }

    #[test]
    fn a_free_or_own_lease_is_taken() {
        let timing = Timing::for_duration(Duration::from_secs(15));
        let now = Instant::now();
        let at = Observed {
            version: "1",
            since: now,
        };
        assert_eq!(
            decide(&seen("1", None), at, "a", now, &timing),
            Decision::Take
        );
        assert_eq!(
            decide(&seen("1", Some("a")), at, "a", now, &timing),
            Decision::Take
        );
    }

    #[test]
    fn a_held_lease_is_waited_on_until_it_expires_by_our_own_clock() {
        let timing = Timing::for_duration(Duration::from_secs(15));
        let t0 = Instant::now();
        let held = seen("7", Some("b"));
        let at = Observed {
            version: "7",
            since: t0,
        };
        // Polled every 1 s while far from expiry...
        assert_eq!(
            decide(&held, at, "a", t0, &timing),
            Decision::Wait(Duration::from_secs(1))
        );
        // ...woken exactly at expiry when that comes sooner...
        let near = t0 + Duration::from_millis(14_400);
        assert_eq!(
            decide(&held, at, "a", near, &timing),
            Decision::Wait(Duration::from_millis(600))
        );
        // ...and taken a full duration after this candidate first saw the version,
        // whatever the holder's renewTime says.
        let expired = t0 + Duration::from_secs(15);
        assert_eq!(decide(&held, at, "a", expired, &timing), Decision::Take);
    }

    #[test]
    fn the_leases_own_duration_wins_over_ours() {
        let timing = Timing::for_duration(Duration::from_secs(15));
        let t0 = Instant::now();
        let held = Seen {
            duration: Some(Duration::from_secs(60)),
            ..seen("7", Some("b"))
        };
        let at = Observed {
            version: "7",
            since: t0,
        };
        let later = t0 + Duration::from_secs(30);
        assert_eq!(
            decide(&held, at, "a", later, &timing),
            Decision::Wait(Duration::from_secs(1))
        );
        assert_eq!(
            decide(&held, at, "a", t0 + Duration::from_secs(60), &timing),
            Decision::Take
        );
    }
}
