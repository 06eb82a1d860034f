//! The token mirror: the leader's progress, published in a ConfigMap so that a
//! replica with an empty or stale disk can take over where the last leader stopped.
//!
//! # Keys
//!
//! | key | value |
//! |---|---|
//! | `event.tokenKey` | the shipped-through resourceVersion (decimal string) |
//! | `event.tokenTimestamp` | the newest event time covered by it, RFC 3339 |
//! | `evrelay.epoch` | the leadership epoch, bumped by every takeover |
//! | `evrelay.holder` | the identity of the replica that claimed that epoch |
//! | `evrelay.watchedKey` / `evrelay.watchedTimestamp` | how far the leader has *journaled* (ahead of what it shipped) |
//! | `evrelay.updated` | when the leader last wrote, RFC 3339 |
//!
//! The first two are the Datadog Cluster Agent's own keys (its `datadogtoken`
//! ConfigMap). evrelay writes its *shipped-through* token there, not the watch's
//! token: the Cluster Agent writes the token after submitting, so either program
//! can resume from this ConfigMap without losing what evrelay journaled but had not
//! yet delivered.
//!
//! Every write carries the resourceVersion last read, so a write based on an old
//! read fails with 409; after a 409 the mirror re-reads, and a newer epoch or
//! another holder there means this replica has been superseded ([`MirrorError::Fenced`]).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};

use super::lease::is_conflict;
use crate::backoff::within;
use crate::record::{ResumeToken, Term};

const TOKEN_KEY: &str = "event.tokenKey";
const TOKEN_TIMESTAMP: &str = "event.tokenTimestamp";
const EPOCH: &str = "evrelay.epoch";
const HOLDER: &str = "evrelay.holder";
const WATCHED_KEY: &str = "evrelay.watchedKey";
const WATCHED_TIMESTAMP: &str = "evrelay.watchedTimestamp";
const UPDATED: &str = "evrelay.updated";

/// A bound on every call, so a silent API server cannot hold the mirror.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What the ConfigMap said when read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mirrored {
    /// Epoch 0 and no holder when no evrelay has claimed it yet.
    pub term: Term,
    /// The shipped-through token; `None` if nothing was published yet.
    pub token: Option<ResumeToken>,
}

/// An epoch this replica claimed, and what the ConfigMap held before.
#[derive(Debug, Clone)]
pub struct Claim {
    pub term: Term,
    /// The ConfigMap before the claim (with the Cluster Agent's token when the
    /// ConfigMap had none and one was configured to resume from).
    pub previous: Mirrored,
    /// The ConfigMap's resourceVersion after our last write.
    version: String,
    /// The tokens last written, to skip writes that would change nothing.
    written: Option<(Option<ResumeToken>, Option<ResumeToken>)>,
}

#[cfg(test)]
impl Claim {
    /// A claim of `term` over `previous` (for the term's tests).
    pub(crate) fn for_tests(term: Term, previous: Mirrored) -> Claim {
        Claim {
            term,
            previous,
            version: String::new(),
            written: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// A newer epoch (or another holder) is in the ConfigMap: this replica must
    /// stop everything leader-only.
    #[error("superseded: the ConfigMap names epoch {} held by {:?}", .0.epoch, .0.holder)]
    Fenced(Term),
    #[error("ConfigMap {name}: {source}")]
    Kube {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Reads and writes the token ConfigMap.
pub struct TokenMirror {
    api: Api<ConfigMap>,
    name: String,
    identity: String,
    /// A Cluster Agent ConfigMap (`datadogtoken`) to start from when ours has no
    /// token: nothing older than its checkpoint is sent again.
    resume_from: Option<String>,
}

impl TokenMirror {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        resume_from: Option<&str>,
    ) -> Self {
        TokenMirror {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            resume_from: resume_from.map(str::to_owned),
        }
    }

    /// Claims the next epoch for this replica: reads the ConfigMap (creating it if
    /// missing) and writes epoch + 1 with this replica as holder, conditionally on
    /// the version read. Retries on conflict, re-reading each time, so the returned
    /// `previous` is exactly what the claim replaced.
    pub async fn claim(&self) -> Result<Claim, MirrorError> {
        loop {
            let current = self.call(self.api.get_opt(&self.name)).await?;
            let mut previous = current.as_ref().map(read).unwrap_or_default();
            if previous.token.is_none() {
                previous.token = self.resume_from_cluster_agent().await?;
            }
            let term = Term {
                epoch: previous.term.epoch + 1,
                holder: self.identity.clone(),
            };
            let written = match current {
                None => {
                    let mut cm = ConfigMap {
                        metadata: ObjectMeta {
                            name: Some(self.name.clone()),
                            ..Default::default()
                        },
                        ..Default::default()
                    };
                    write(&mut cm, &term, previous.token.as_ref(), None);
                    self.call(self.api.create(&PostParams::default(), &cm))
                        .await
                }
                Some(mut cm) => {
                    write_term(&mut cm, &term);
                    self.call(self.api.replace(&self.name, &PostParams::default(), &cm))
                        .await
                }
            };
            match written {
                Ok(cm) => {
                    tracing::info!(configmap = %self.name, epoch = term.epoch, previous_holder = %previous.term.holder, "epoch claimed");
                    return Ok(Claim {
                        term,
                        previous,
                        version: cm.metadata.resource_version.unwrap_or_default(),
                        written: None,
                    });
                }
                // Someone else wrote (or created) it first: read again.
                Err(MirrorError::Kube { source, .. }) if is_conflict(&source) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Publishes the tokens under `claim`. Does nothing if they did not change.
    pub async fn publish(
        &self,
        claim: &mut Claim,
        shipped: Option<&ResumeToken>,
        watched: Option<&ResumeToken>,
    ) -> Result<(), MirrorError> {
        let tokens = (shipped.cloned(), watched.cloned());
        if claim.written.as_ref() == Some(&tokens) {
            return Ok(());
        }
        let mut cm = self.call(self.api.get(&self.name)).await?;
        loop {
            let found = read(&cm).term;
            if found != claim.term {
                return Err(MirrorError::Fenced(found));
            }
            cm.metadata.resource_version = Some(claim.version.clone());
            write(&mut cm, &claim.term, shipped, watched);
            match self
                .call(self.api.replace(&self.name, &PostParams::default(), &cm))
                .await
            {
                Ok(written) => {
                    claim.version = written.metadata.resource_version.unwrap_or_default();
                    claim.written = Some(tokens);
                    return Ok(());
                }
                Err(MirrorError::Kube { source, .. }) if is_conflict(&source) => {
                    cm = self.call(self.api.get(&self.name)).await?;
                    claim.version = cm.metadata.resource_version.clone().unwrap_or_default();
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn resume_from_cluster_agent(&self) -> Result<Option<ResumeToken>, MirrorError> {
        let Some(name) = &self.resume_from else {
            return Ok(None);
        };
        let found = bounded(name, self.api.get_opt(name)).await?;
        let token = found.as_ref().and_then(|cm| read(cm).token);
        match &token {
            Some(t) => {
                tracing::info!(configmap = %name, resource_version = %t.resource_version, "starting from the Cluster Agent's token")
            }
            None => tracing::warn!(configmap = %name, "no Cluster Agent token to start from"),
        }
        Ok(token)
    }

    /// A call on this replica's ConfigMap.
    async fn call<T>(
        &self,
        request: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, MirrorError> {
        bounded(&self.name, request).await
    }
}

/// A call on ConfigMap `name`, bounded by [`CALL_TIMEOUT`].
async fn bounded<T>(
    name: &str,
    request: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, MirrorError> {
    let result = within(CALL_TIMEOUT, request)
        .await
        .unwrap_or_else(|elapsed| Err(kube::Error::Service(elapsed.into())));
    result.map_err(|source| MirrorError::Kube {
        name: name.to_owned(),
        source,
    })
}

/// What a ConfigMap holds, read leniently: a key that is missing or malformed
/// counts as absent (a Cluster Agent ConfigMap has no epoch, for instance).
pub fn read(cm: &ConfigMap) -> Mirrored {
    let empty = BTreeMap::new();
    let data = cm.data.as_ref().unwrap_or(&empty);
    let get = |k: &str| data.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    Mirrored {
        term: Term {
            epoch: get(EPOCH).and_then(|v| v.parse().ok()).unwrap_or(0),
            holder: get(HOLDER).unwrap_or_default().to_owned(),
        },
        token: token_of(get(TOKEN_KEY), get(TOKEN_TIMESTAMP)),
    }
}

fn token_of(key: Option<&str>, timestamp: Option<&str>) -> Option<ResumeToken> {
    let key = key?;
    // A resourceVersion is an opaque string to clients, but the Cluster Agent writes
    // a decimal one and the API server only ever gives decimal ones.
    if !key.bytes().all(|b| b.is_ascii_digit()) {
        tracing::warn!(
            value = key,
            "ignoring a token that is not a resourceVersion"
        );
        return None;
    }
    let timestamp_ms = timestamp
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_millisecond())
        .unwrap_or(0);
    Some(ResumeToken {
        resource_version: key.to_owned(),
        timestamp_ms,
    })
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

fn write_term(cm: &mut ConfigMap, term: &Term) {
    let data = cm.data.get_or_insert_with(BTreeMap::new);
    data.insert(EPOCH.into(), term.epoch.to_string());
    data.insert(HOLDER.into(), term.holder.clone());
    data.insert(UPDATED.into(), jiff::Timestamp::now().to_string());
}

fn write(
    cm: &mut ConfigMap,
    term: &Term,
    shipped: Option<&ResumeToken>,
    watched: Option<&ResumeToken>,
) {
    write_term(cm, term);
    let data = cm.data.get_or_insert_with(BTreeMap::new);
    if let Some(t) = shipped {
        data.insert(TOKEN_KEY.into(), t.resource_version.clone());
        data.insert(TOKEN_TIMESTAMP.into(), rfc3339(t.timestamp_ms));
    }
    if let Some(t) = watched {
        data.insert(WATCHED_KEY.into(), t.resource_version.clone());
        data.insert(WATCHED_TIMESTAMP.into(), rfc3339(t.timestamp_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm(pairs: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn reads_a_cluster_agent_configmap() {
        let m = read(&cm(&[
            ("event.tokenKey", "123456"),
            ("event.tokenTimestamp", "2026-11-22T10:00:00Z"),
        ]));
        assert_eq!(m.term, Term::default());
        let t = m.token.unwrap();
        assert_eq!(t.resource_version, "123456");
        assert_eq!(
            t.timestamp_ms,
            "2026-11-22T10:00:00Z"
                .parse::<jiff::Timestamp>()
                .unwrap()
                .as_millisecond()
        );
    }

    #[test]
    fn round_trips_what_it_writes() {
        let mut c = ConfigMap::default();
        let term = Term {
            epoch: 9,
            holder: "evrelay-1".into(),
        };
        let shipped = ResumeToken {
            resource_version: "77".into(),
            timestamp_ms: 1_700_000_000_000,
        };
        write(&mut c, &term, Some(&shipped), None);
        let m = read(&c);
        assert_eq!(m.term, term);
        assert_eq!(m.token, Some(shipped));
        assert_eq!(
            c.data.unwrap()["event.tokenTimestamp"],
            "2023-11-14T22:13:20Z"
        );
    }

    #[test]
    fn malformed_values_count_as_absent() {
        let m = read(&cm(&[("event.tokenKey", "abc"), ("evrelay.epoch", "x")]));
        assert_eq!(m, Mirrored::default());
    }
}
