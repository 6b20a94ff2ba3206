//! The task behind a [`Recorder`]: takes what is queued, links each record into its
//! session's chain and writes batches, each with the journal position it reaches.

use super::{BATCH_MAX, LINGER, Message, RETRY_MAX, RETRY_PAUSE};
use crate::record::{
    ChainDigest, Store, StoreError,
    events::Encoded,
    journal::{Journal, Position},
    session::SessionId,
};
use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// The task behind a [`Recorder`].
pub(super) struct Writer {
    pub(super) store: Store,
    /// Where records were appended before they were queued, if anywhere.
    pub(super) journal: Option<Arc<Journal>>,
    /// The journal position of the last record in `batch`.
    pub(super) reached: Option<Position>,
    pub(super) chains: Arc<Mutex<HashMap<SessionId, ChainDigest>>>,
    pub(super) hurry: Arc<Notify>,
    /// Records taken off the channel and chained, not yet written.
    pub(super) batch: Vec<Encoded>,
    /// Sessions some of whose events the store refused for good, until their next
    /// flush request learns it (at most the sessions open at once).
    pub(super) lost: HashSet<SessionId>,
    /// Cancelled when the daemon stops: a failing store is no longer waited for.
    pub(super) closing: CancellationToken,
    /// Set once a journaled batch was left to the journal (the store failed while the
    /// daemon stopped): nothing more is written, so the store's journal position
    /// stays before everything the next start must replay.
    pub(super) left_to_journal: bool,
}

/// A flush request: answered `true` once written, `false` when the session's events
/// were lost.
type Waiter = (oneshot::Sender<bool>, Option<SessionId>);

impl Writer {
    pub(super) async fn run(
        mut self,
        mut inbox: mpsc::Receiver<Message>,
        stopped: CancellationToken,
    ) {
        let _stopped = stopped.drop_guard();
        let mut drained = Vec::with_capacity(BATCH_MAX);
        // Ends once the channel is closed (shutdown, or every Recorder dropped) and empty.
        while let Some(first) = inbox.recv().await {
            let mut waiting = Vec::new();
            self.take(first, &mut inbox, &mut waiting);
            if waiting.is_empty() {
                // Not polling the channel meanwhile, so senders do not wake us.
                tokio::select! {
                    () = tokio::time::sleep(LINGER) => {}
                    () = self.hurry.notified() => {}
                }
            }
            // What is queued now, and no more: a Flush must not wait for newcomers.
            // Taken in runs (`recv_many`), which give the senders their room back
            // once per run rather than once per message: senders blocked on a full
            // queue then wake once each, not once per record.
            let mut left = inbox.len();
            while left > 0 {
                // Never more than one transaction holds: `batch` is below BATCH_MAX here.
                let room = BATCH_MAX.saturating_sub(self.batch.len()).max(1);
                let taken = inbox.recv_many(&mut drained, left.min(room)).await;
                if taken == 0 {
                    break;
                }
                left = left.saturating_sub(taken);
                for message in drained.drain(..) {
                    self.take(message, &mut inbox, &mut waiting);
                }
                if self.batch.len() >= BATCH_MAX {
                    self.flush().await;
                }
            }
            self.flush().await;
            for (done, session) in waiting {
                let written = session.is_none_or(|s| !self.lost.remove(&s));
                let _ = done.send(written);
            }
        }
    }

    /// Handles one message; a flush request joins `waiting`.
    fn take(
        &mut self,
        message: Message,
        inbox: &mut mpsc::Receiver<Message>,
        waiting: &mut Vec<Waiter>,
    ) {
        match message {
            Message::Record(record, position) => {
                if position.is_some() {
                    self.reached = position;
                }
                let mut chains = self.chains.lock().unwrap_or_else(PoisonError::into_inner);
                // Looked up before inserting, so the id is cloned once per session.
                if !chains.contains_key(record.session_id()) {
                    chains.insert(record.session_id().clone(), ChainDigest::empty());
                }
                if let Some(chain) = chains.get_mut(record.session_id()) {
                    self.batch.push(record.link(chain));
                }
            }
            Message::Flush(done, session) => waiting.push((done, session)),
            // What is already queued is still received, then `recv` ends the loop.
            Message::Shutdown => inbox.close(),
        }
    }

    /// Writes the batch in one transaction; never fails. Without a journal a
    /// failed write is retried once, then the batch is lost (logged). With one, it is
    /// retried until the store takes it, with pauses growing to [`RETRY_MAX`]: the
    /// queue fills meanwhile and sessions wait (back-pressure, then [`super::Stalled`]).
    /// When the daemon stops first, the batch and every later one stay in the journal
    /// for the next start.
    async fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let reached = self.reached.take();
        let mark = reached
            .zip(self.journal.as_deref())
            .map(|(at, j)| j.mark(at));
        let mut result = if self.left_to_journal {
            Err(None)
        } else {
            self.store
                .insert_events(&self.batch, mark.as_ref())
                .await
                .map_err(Some)
        };
        let mut pause = RETRY_PAUSE;
        let mut tries = 1;
        while let Err(Some(error)) = &result {
            let retry = tries < 2 || (mark.is_some() && !self.closing.is_cancelled());
            if !retry {
                break;
            }
            tracing::error!(%error, count = self.batch.len(), tries, "Cannot record events; retrying");
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = self.closing.cancelled(), if mark.is_some() => {}
            }
            pause = (pause * 2).min(RETRY_MAX);
            tries += 1;
            result = self
                .store
                .insert_events(&self.batch, mark.as_ref())
                .await
                .map_err(Some);
        }
        match result {
            Ok(()) => {
                if let (Some(journal), Some(at)) = (&self.journal, reached) {
                    journal.release(at);
                }
            }
            Err(error) => self.give_up(error, mark.is_some()),
        }
        self.batch.clear();
    }

    /// The batch cannot be stored now: lost, or (`journaled`) left to the journal.
    fn give_up(&mut self, error: Option<StoreError>, journaled: bool) {
        let sessions: BTreeSet<&str> = self
            .batch
            .iter()
            .map(|e| e.record.session_id.as_str())
            .collect();
        let error = error.map(|e| e.to_string()).unwrap_or_default();
        if journaled {
            self.left_to_journal = true;
            tracing::warn!(
                %error,
                count = self.batch.len(),
                sessions = ?sessions,
                "The store is failing as the daemon stops: these events stay in the \
                 journal and are stored at the next start"
            );
        } else {
            tracing::error!(
                %error,
                lost = self.batch.len(),
                sessions = ?sessions,
                "Events lost: the store refused them twice; `portcullis audit \
                 verify` will name these sessions"
            );
        }
        self.lost
            .extend(self.batch.iter().map(|e| e.record.session_id.clone()));
    }
}
