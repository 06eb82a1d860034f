//! Leadership terms and the shipped-through token.
//!
//! The `tokens` tree maps the last sequence number of each journal write to the
//! resume token written with it. A watch resumed from the token filed under
//! sequence `s` re-delivers everything journaled after `s`, so the newest entry at or
//! below a sink's cursor is a token from which a new leader loses nothing that sink
//! has not delivered: the *shipped-through token* the mirror publishes. Entries below
//! it are pruned as the cursor moves.
//!
//! The `term` key in `meta` names the epoch and holder the journal was last written
//! under. [`Journal::begin_term`] moves it, and at a takeover onto a stale journal
//! adopts the mirrored token: pending records are given up (counted, and a gap marker
//! names them), the dedup index is cleared (the adopted token re-delivers those
//! events and they must not be taken for duplicates), and the watch resumes from the
//! adopted token.

use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use super::{
    Journal, JournalError, META_DROPPED_STALE, META_SHIPPED_PREFIX, META_TERM, META_TOKEN, seq_of,
};
use crate::journal::record::{Record, ResumeToken, Term};

/// What [`Journal::begin_term`] did with the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TermStart {
    /// Pending records given up because the journal was stale.
    pub dropped_stale: u64,
}

impl Journal {
    /// The term the journal was last written under; `None` for a journal that has
    /// never led (or predates leadership).
    pub fn term(&self) -> Result<Option<Term>, JournalError> {
        self.decode_from(&self.inner.meta, META_TERM, "term", Term::decode)
    }

    /// The newest resume token that covers nothing the sink has not delivered:
    /// resuming from it re-delivers every record after the sink's cursor (and at
    /// most the rest of the write the cursor stopped in). `None` before the first
    /// delivery.
    pub fn shipped_token(&self, sink: &str) -> Result<Option<ResumeToken>, JournalError> {
        let through = self.shipped_through(sink)?;
        let Some((key, _)) = self
            .inner
            .tokens
            .range(..=through.to_be_bytes())
            .next_back()
            .transpose()
            .map_err(|e| self.store_err(e))?
        else {
            return Ok(None);
        };
        let name = format!("tokens/{}", seq_of(&key));
        self.decode_from(&self.inner.tokens, &key, &name, ResumeToken::decode)
    }

    /// Drops token entries older than the newest one at or below `through`.
    pub(super) fn prune_tokens(&self, through: u64) -> Result<(), JournalError> {
        let tokens = &self.inner.tokens;
        let keep = tokens
            .range(..=through.to_be_bytes())
            .next_back()
            .transpose()
            .map_err(|e| self.store_err(e))?
            .map(|(k, _)| seq_of(&k));
        let Some(keep) = keep else { return Ok(()) };
        let mut batch = sled::Batch::default();
        for item in tokens.range(..keep.to_be_bytes()) {
            let (k, _) = item.map_err(|e| self.store_err(e))?;
            batch.remove(k);
        }
        tokens.apply_batch(batch).map_err(|e| self.store_err(e))
    }

    /// Starts a leadership term, durably. With `adopt`, the journal is stale: its
    /// pending records are given up and the watch will resume from the adopted token
    /// (`None`: from a fresh list). `sinks` are the cursors to move past them.
    pub fn begin_term(
        &self,
        term: &Term,
        adopt: Option<Option<&ResumeToken>>,
        sinks: &[&str],
    ) -> Result<TermStart, JournalError> {
        let Some(token) = adopt else {
            self.inner
                .meta
                .insert(META_TERM, term.encode())
                .map_err(|e| self.store_err(e))?;
            self.sync()?;
            return Ok(TermStart::default());
        };

        // Order matters for a crash in between: each step is safe to redo, and the
        // term moves last, so a journal that did not finish is still stale at the
        // next start and is adopted again.
        let pending_from = sinks
            .iter()
            .map(|s| self.shipped_through(s))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .min()
            .unwrap_or(0);
        let mut next_seq = self.inner.next_seq.lock().expect("journal lock poisoned");
        let head = *next_seq - 1;
        let dropped = head.saturating_sub(pending_from);
        if dropped > 0 {
            let gap = Record::gap(
                "StaleBacklogDropped",
                serde_json::json!({
                    "reason": "StaleBacklogDropped",
                    "first_seq": pending_from + 1,
                    "last_seq": head,
                    "records": dropped,
                    "epoch": term.epoch,
                    "resumed_from": token.map(|t| t.resource_version.as_str()),
                }),
            );
            self.append_locked(&mut next_seq, &[gap], None)?;
        }
        let head = *next_seq - 1;
        self.inner.seen.clear().map_err(|e| self.store_err(e))?;
        self.inner.tokens.clear().map_err(|e| self.store_err(e))?;

        let inner = &*self.inner;
        (&inner.meta, &inner.tokens)
            .transaction(|(meta, tokens)| {
                for sink in sinks {
                    let key = format!("{META_SHIPPED_PREFIX}{sink}");
                    meta.insert(key.as_bytes(), &head.to_be_bytes())?;
                }
                let before = meta
                    .get(META_DROPPED_STALE)?
                    .map(|v| seq_of(&v))
                    .unwrap_or(0);
                meta.insert(META_DROPPED_STALE, &(before + dropped).to_be_bytes())?;
                match token {
                    Some(token) => {
                        meta.insert(META_TOKEN, token.encode())?;
                        tokens.insert(&head.to_be_bytes(), token.encode())?;
                    }
                    None => {
                        meta.remove(META_TOKEN)?;
                    }
                }
                meta.insert(META_TERM, term.encode())?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e| self.tx_err(e))?;
        drop(next_seq);
        self.sync()?;
        self.inner.head.send_replace(head);
        Ok(TermStart {
            dropped_stale: dropped,
        })
    }
}
