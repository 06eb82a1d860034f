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

use std::ops::Bound;

use super::store::{Batch, Tree};
use super::{
    Journal, JournalError, META_DROPPED_STALE, META_TERM, META_TOKEN, seq_of, shipped_key,
};
use crate::record::{Gap, Record, ResumeToken, Term};

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
        self.decoded(Tree::Meta, META_TERM, "term", Term::decode)
    }

    /// The newest resume token that covers nothing the sinks have not delivered:
    /// resuming from it re-delivers every record after the lowest of their cursors
    /// (and at most the rest of the write that cursor stopped in). `None` before the
    /// first delivery.
    pub fn shipped_token(&self, sinks: &[&str]) -> Result<Option<ResumeToken>, JournalError> {
        self.token_at_or_below(self.lowest_shipped_through(sinks)?)
    }

    /// The newest token filed at or below sequence `through`.
    pub(super) fn token_at_or_below(
        &self,
        through: u64,
    ) -> Result<Option<ResumeToken>, JournalError> {
        let through = through.to_be_bytes();
        let newest = self
            .store()
            .range(Tree::Tokens, Bound::Unbounded, Bound::Included(&through))
            .next_back()
            .transpose()?;
        let Some((key, _)) = newest else {
            return Ok(None);
        };
        let name = format!("tokens/{}", seq_of(&key));
        self.decoded(Tree::Tokens, &key, &name, ResumeToken::decode)
    }

    /// Drops token entries older than the newest one at or below `through`. The
    /// caller holds the writer lock.
    pub(super) fn prune_tokens(&self, through: u64) -> Result<(), JournalError> {
        let store = self.store();
        let through = through.to_be_bytes();
        let keep = store
            .range(Tree::Tokens, Bound::Unbounded, Bound::Included(&through))
            .next_back()
            .transpose()?
            .map(|(k, _)| k);
        let Some(keep) = keep else { return Ok(()) };
        let mut batch = Batch::default();
        for entry in store.range(Tree::Tokens, Bound::Unbounded, Bound::Excluded(&keep)) {
            let (k, _) = entry?;
            batch.remove(Tree::Tokens, k);
        }
        if !batch.is_empty() {
            self.apply(batch)?;
        }
        Ok(())
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
            self.commit(true, |_| {
                let mut batch = Batch::default();
                batch.insert(Tree::Meta, META_TERM, term.encode());
                self.apply(batch)
            })?;
            return Ok(TermStart::default());
        };

        // Order matters for a crash in between: each step is safe to redo, and the
        // term moves last, so a journal that did not finish is still stale at the
        // next start and is adopted again.
        let pending_from = self.lowest_shipped_through(sinks)?;
        let (dropped, head) = self.commit(true, |next_seq| {
            let head = *next_seq - 1;
            let dropped = head.saturating_sub(pending_from);
            if dropped > 0 {
                let gap = Record::gap(
                    Gap::StaleBacklogDropped,
                    serde_json::json!({
                        "first_seq": pending_from + 1,
                        "last_seq": head,
                        "records": dropped,
                        "epoch": term.epoch,
                        "resumed_from": token.map(|t| t.resource_version.as_str()),
                    }),
                );
                self.append_locked(next_seq, &[gap], None)?;
            }
            let head = *next_seq - 1;
            let store = self.store();
            for tree in [Tree::SeenBuckets, Tree::Tokens] {
                store.clear(tree).map_err(|e| self.failing(e))?;
            }

            let mut batch = Batch::default();
            for sink in sinks {
                batch.insert(Tree::Meta, shipped_key(sink).as_bytes(), head.to_be_bytes());
            }
            let before = self.meta_u64(META_DROPPED_STALE)?;
            batch.insert(
                Tree::Meta,
                META_DROPPED_STALE,
                (before + dropped).to_be_bytes(),
            );
            match token {
                Some(token) => {
                    batch.insert(Tree::Meta, META_TOKEN, token.encode());
                    batch.insert(Tree::Tokens, head.to_be_bytes(), token.encode());
                }
                None => batch.remove(Tree::Meta, META_TOKEN),
            }
            batch.insert(Tree::Meta, META_TERM, term.encode());
            self.apply(batch)?;
            Ok((dropped, head))
        })?;
        self.inner.head.send_replace(head);
        Ok(TermStart {
            dropped_stale: dropped,
        })
    }
}
