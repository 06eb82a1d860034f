//! The delivery rules of docs/delivery.md in code: what counts as a new occurrence, and
//! how the intake's answers are judged. Every "do we forward / retry / drop this?"
//! decision in evrelay is made here, so the contract can be read in one file.

use std::time::Duration;

use crate::record::{Header, ResumeToken, Seen, Term};

/// Whether an event is an occurrence the journal does not hold yet (rule 5):
/// a uid never journaled, a count that went up, or, for events that carry no
/// count, a later last-seen time. The same (uid, resourceVersion) sent twice, a
/// MODIFIED that changed nothing that counts, and a relisted event already
/// journaled are all not new.
pub(crate) fn is_new_occurrence(prev: Option<&Seen>, event: &Header) -> bool {
    let Some(prev) = prev else { return true };
    if event.count > 0 || prev.count > 0 {
        return event.count > prev.count;
    }
    match (event.last_timestamp_ms, prev.last_timestamp_ms) {
        (Some(now), Some(before)) => now > before,
        _ => false,
    }
}

/// On a relist onto a journal with no dedup index, whether an event may be new to
/// the intake (rule 4): its last time is after the token's. An event with no time
/// at all is kept: better a possible duplicate than a possible loss.
pub(crate) fn newer_than_token(event: &Header, token_timestamp_ms: i64) -> bool {
    event
        .last_timestamp_ms
        .is_none_or(|t| t > token_timestamp_ms)
}

/// What to do with the intake's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: every record in the request is delivered.
    Delivered,
    /// Try the same request again later (408, 429, 5xx, network errors, and any
    /// status not named below), after `after` when the intake said so
    /// (`Retry-After`, honoured as given), else after an exponential backoff.
    Retry { after: Option<Duration> },
    /// 413: the request is too large; send its halves.
    Split,
    /// 400: something in the request is malformed; find it by bisection and
    /// dead-letter it, ship the rest. A refused bundle is resent event by event,
    /// so only the event at fault is dead-lettered, not those bundled with it.
    Reject,
    /// 401/403: the API key is refused. Stop shipping (the backlog stays in the
    /// journal), keep journaling, report loudly.
    Forbidden,
}

/// Judges an HTTP status (and its Retry-After header, already parsed).
pub fn judge(status: u16, retry_after: Option<Duration>) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        400 => Verdict::Reject,
        401 | 403 => Verdict::Forbidden,
        413 => Verdict::Split,
        _ => Verdict::Retry { after: retry_after },
    }
}

/// Where a new leader resumes (rule 6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Takeover {
    /// The journal is current: it is fresher than the mirror, continue from it.
    Continue,
    /// The journal is stale (another replica led since it was written) or has
    /// nothing to resume from: give up its pending records and resume from this
    /// token, the mirror's shipped-through token (`None`: list from scratch).
    Adopt(Option<ResumeToken>),
}

/// Decides a takeover. `journal` is the term the local journal was last written
/// under (epoch 0 and no holder for one that never led); `mirrored` is the term in
/// the token ConfigMap before this claim (the same for a ConfigMap that does not
/// exist yet), and `mirrored_token` its shipped-through token; `me` is this
/// replica's identity.
///
/// The journal is current when no other replica can have led since it was written:
/// its term is the ConfigMap's, or it is the term just before and both are this
/// replica's (it claimed a new epoch, then died before recording it locally).
pub fn takeover(
    journal: &Term,
    journal_token: Option<&ResumeToken>,
    mirrored: &Term,
    mirrored_token: Option<&ResumeToken>,
    me: &str,
) -> Takeover {
    let current = journal == mirrored
        || (journal.holder == me && mirrored.holder == me && journal.epoch + 1 == mirrored.epoch);
    if current && journal_token.is_some() {
        Takeover::Continue
    } else {
        Takeover::Adopt(mirrored_token.cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Header, RecordKind};

    fn header(count: u32, last: Option<i64>) -> Header {
        Header {
            kind: RecordKind::Event,
            uid: "u".into(),
            resource_version: "1".into(),
            namespace: String::new(),
            involved_kind: String::new(),
            involved_name: String::new(),
            reason: String::new(),
            event_type: String::new(),
            count,
            first_timestamp_ms: None,
            last_timestamp_ms: last,
            received_at_ms: 0,
        }
    }

    #[test]
    fn occurrences() {
        let seen = |count, last| Seen {
            count,
            last_timestamp_ms: last,
            journaled_at_ms: 0,
        };
        assert!(is_new_occurrence(None, &header(1, None)));
        assert!(is_new_occurrence(Some(&seen(1, None)), &header(2, None)));
        assert!(!is_new_occurrence(Some(&seen(2, None)), &header(2, None)));
        assert!(!is_new_occurrence(Some(&seen(3, None)), &header(2, None)));
        assert!(is_new_occurrence(
            Some(&seen(0, Some(5))),
            &header(0, Some(6))
        ));
        assert!(!is_new_occurrence(
            Some(&seen(0, Some(5))),
            &header(0, Some(5))
        ));
        assert!(!is_new_occurrence(Some(&seen(0, None)), &header(0, None)));
    }

    #[test]
    fn relist_filter_on_an_empty_index() {
        assert!(newer_than_token(&header(1, Some(11)), 10));
        assert!(!newer_than_token(&header(1, Some(10)), 10));
        assert!(newer_than_token(&header(1, None), 10));
    }

    fn term(epoch: u64, holder: &str) -> Term {
        Term {
            epoch,
            holder: holder.into(),
        }
    }

    fn token(rv: &str) -> ResumeToken {
        ResumeToken {
            resource_version: rv.into(),
            timestamp_ms: 0,
        }
    }

    #[test]
    fn takeovers() {
        let (mine, cm) = (token("50"), token("40"));
        let decide = |journal: Term, jt: Option<&ResumeToken>, mirrored: Term| {
            takeover(&journal, jt, &mirrored, Some(&cm), "a")
        };
        // Restart of the last leader with its disk: continue.
        assert_eq!(
            decide(term(4, "a"), Some(&mine), term(4, "a")),
            Takeover::Continue
        );
        // It claimed epoch 5 and died before writing it down: still current.
        assert_eq!(
            decide(term(4, "a"), Some(&mine), term(5, "a")),
            Takeover::Continue
        );
        // Someone else led since: adopt the mirror's token.
        assert_eq!(
            decide(term(4, "a"), Some(&mine), term(5, "b")),
            Takeover::Adopt(Some(cm.clone()))
        );
        assert_eq!(
            decide(term(3, "a"), Some(&mine), term(5, "a")),
            Takeover::Adopt(Some(cm.clone())),
            "epoch 4 may have been another replica's"
        );
        // A new disk: adopt.
        assert_eq!(
            decide(term(0, ""), None, term(4, "b")),
            Takeover::Adopt(Some(cm.clone()))
        );
        // No ConfigMap and a journal from before leadership existed: continue.
        assert_eq!(
            decide(term(0, ""), Some(&mine), term(0, "")),
            Takeover::Continue
        );
        // The very first start, with a Cluster Agent token to begin from: adopt it.
        assert_eq!(
            decide(term(0, ""), None, term(0, "")),
            Takeover::Adopt(Some(cm.clone()))
        );
        assert_eq!(
            takeover(&term(0, ""), None, &term(0, ""), None, "a"),
            Takeover::Adopt(None)
        );
    }

    #[test]
    fn verdicts() {
        assert_eq!(judge(202, None), Verdict::Delivered);
        assert_eq!(judge(400, None), Verdict::Reject);
        assert_eq!(judge(403, None), Verdict::Forbidden);
        assert_eq!(judge(413, None), Verdict::Split);
        let after = Some(Duration::from_secs(3));
        assert_eq!(judge(429, after), Verdict::Retry { after });
        assert_eq!(judge(503, None), Verdict::Retry { after: None });
        assert_eq!(judge(408, None), Verdict::Retry { after: None });
    }
}
