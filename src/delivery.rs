//! The delivery rules of docs/delivery.md in code: what counts as a new occurrence, and
//! how the intake's answers are judged. Every "do we forward / retry / drop this?"
//! decision in evrelay is made here, so the contract can be read in one file.

use std::time::Duration;

use crate::record::{Header, ResumeToken, Seen, Term};

/// Whether an event is an occurrence the journal does not hold yet (rule 5): a uid
/// never journaled, or one whose occurrences moved forward, whichever recorder
/// counted them: `count` (core/v1) or `series.count` (events.k8s.io/v1), or its
/// last-seen time (`lastTimestamp`, `series.lastObservedTime`, else `eventTime`).
/// The same (uid, resourceVersion) sent twice, a MODIFIED that changed nothing that
/// counts, and a relisted event already journaled are all not new.
pub(crate) fn is_new_occurrence(prev: Option<&Seen>, event: &Header) -> bool {
    let Some(prev) = prev else { return true };
    let later = match (event.last_timestamp_ms, prev.last_timestamp_ms) {
        (Some(now), Some(before)) => now > before,
        (Some(_), None) => true,
        _ => false,
    };
    event.occurrences() > prev.count || later
}

/// What the dedup index keeps of an occurrence: its count whichever recorder
/// counted it, and its last-seen time.
pub(crate) fn seen(event: &Header) -> Seen {
    Seen {
        count: event.occurrences(),
        last_timestamp_ms: event.last_timestamp_ms,
        journaled_at_ms: event.received_at_ms,
    }
}

/// On a relist onto a journal with no dedup index (rule 4), whether an event may
/// be new to the intake: it was last seen in the token's second or later.
/// Timestamps have one-second resolution, so events in the token's own second may
/// not have been delivered: better a duplicate than a loss. An event with no time
/// at all is kept.
pub(crate) fn newer_than_token(event: &Header, token_timestamp_ms: i64) -> bool {
    let boundary = token_timestamp_ms.div_euclid(1000) * 1000;
    event.last_timestamp_ms.is_none_or(|t| t >= boundary)
}

/// The time a resume token may take from an event: its last-seen time, but never
/// later than the moment evrelay received it. An event's times are written by
/// whoever recorded it; one dated in the future (a skewed clock, a bug) must not
/// carry the token with it, or a later relist onto an empty dedup index, which
/// keeps only events from the token's second on, would keep nothing current.
pub(crate) fn token_time(event: &Header) -> Option<i64> {
    event.last_timestamp_ms.map(|t| t.min(event.received_at_ms))
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
            series_count: 0,
            series_last_observed_ms: None,
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
    fn series_occurrences_are_new_occurrences() {
        let seen = |count, last| Seen {
            count,
            last_timestamp_ms: last,
            journaled_at_ms: 0,
        };
        // events.k8s.io/v1: count 0, the series counts and its time moves.
        let series = |count, last| Header {
            series_count: count,
            series_last_observed_ms: last,
            ..header(0, last)
        };
        assert!(is_new_occurrence(
            Some(&seen(2, Some(5))),
            &series(3, Some(6))
        ));
        assert!(is_new_occurrence(
            Some(&seen(2, Some(5))),
            &series(3, Some(5))
        ));
        assert!(!is_new_occurrence(
            Some(&seen(3, Some(6))),
            &series(3, Some(6))
        ));
        // Only the time moved (a recorder that does not count): new.
        assert!(is_new_occurrence(
            Some(&seen(1, Some(5))),
            &header(1, Some(6))
        ));
        // The index keeps the count whichever recorder made it.
        assert_eq!(super::seen(&series(7, Some(9))).count, 7);
    }

    #[test]
    fn relist_filter_on_an_empty_index_keeps_the_tokens_second() {
        let token = 10_000;
        assert!(newer_than_token(&header(1, Some(11_000)), token));
        assert!(
            newer_than_token(&header(1, Some(10_000)), token),
            "the token's own second may hold undelivered events"
        );
        assert!(newer_than_token(&header(1, Some(10_999)), 10_500));
        assert!(!newer_than_token(&header(1, Some(9_999)), token));
        assert!(newer_than_token(&header(1, None), token));
    }

    #[test]
    fn an_event_from_the_future_moves_the_token_only_so_far() {
        let mut far = header(1, Some(253_402_214_400_000)); // 9999-12-30
        far.received_at_ms = 1_000_000;
        assert_eq!(token_time(&far), Some(1_000_000));
        let mut now = header(1, Some(999_000));
        now.received_at_ms = 1_000_000;
        assert_eq!(token_time(&now), Some(999_000));
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
