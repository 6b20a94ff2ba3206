//! The event recorder: one background task that numbers, chains and writes the
//! events of every session, in batches, so that recording costs a session no more
//! than a send on a bounded channel. A protocol hands over its own compact record (a
//! [`StatementRecord`], or an [`EventRecord`] it built); the task turns it into the
//! stored event, serializes, hashes and writes it: none of that runs on the
//! protocol's path.
//!
//! Records go through one channel of [`CAPACITY`] messages: when the store falls
//! behind, [`Recorder::record`] waits (backpressure) instead of growing memory or
//! dropping a record; after [`STALL_LIMIT`] of waiting it gives up with
//! [`Stalled`], and the protocol ends the session with that reason rather than let
//! it run unrecorded. The task wakes for a record only when it is idle; it then
//! sleeps [`LINGER`] while others queue up without waking it, unless the queue is half
//! full or someone waits for it ([`Recorder::finish_session`], [`Recorder::shutdown`]).
//! Then it takes everything queued, makes each record the next link of its session's
//! chain ([`ChainDigest`]), and writes them in transactions of at most
//! [`BATCH_MAX`] records. A failed write is retried once; a second failure is logged as
//! an error with the count of records lost, and `portcullis audit verify` later names
//! the sessions that lack them.
//!
//! Not waking per record matters: a cross-thread wake-up costs more than recording
//! a statement, and a busy session sends thousands of statements a second.

use super::{
    ChainDigest, EventRecord, StatementRecord, Store, events::Encoded, session::SessionId,
};
use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Messages the channel holds before [`Recorder::record`] waits. Each record is capped
/// by its caller (text, rows sample), so this bounds the recorder's memory.
const CAPACITY: usize = 1024;

/// Longest [`Recorder::record`] waits for room in a full queue.
pub const STALL_LIMIT: Duration = Duration::from_secs(30);

/// The store accepted no event for [`STALL_LIMIT`]: the event was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the session's recording stalled: the store took no event for {}s; the session is \
     ended so that nothing runs unrecorded (check the store's health)",
    .0.as_secs()
)]
pub struct Stalled(pub Duration);

/// Most records written in one transaction.
const BATCH_MAX: usize = 512;

/// Longest a record waits for others to share its transaction (unless the queue
/// fills up or someone waits for it).
const LINGER: Duration = Duration::from_millis(20);

/// Pause before the one retry of a failed write.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Records statements in the store; cheap to clone, all clones feed one task.
///
/// Every session that records statements must end with
/// [`Recorder::finish_session`], which also frees the session's chain state.
#[derive(Clone)]
pub struct Recorder {
    messages: mpsc::Sender<Message>,
    /// Cuts the task's linger short: someone waits, or the queue is half full.
    hurry: Arc<Notify>,
    /// Each session's chain so far, advanced by the task as it takes records.
    chains: Arc<Mutex<HashMap<SessionId, ChainDigest>>>,
    /// Cancelled when the task has written everything and stopped.
    stopped: CancellationToken,
    /// Room the channel has (for the half-full signal), and how long a record waits.
    capacity: usize,
    stall: Duration,
}

/// What a protocol hands the recorder: its own record, made an event by the task.
#[derive(Debug)]
pub enum Recordable {
    Statement(StatementRecord),
    Event(EventRecord),
}

impl From<StatementRecord> for Recordable {
    fn from(st: StatementRecord) -> Self {
        Self::Statement(st)
    }
}

impl From<EventRecord> for Recordable {
    fn from(event: EventRecord) -> Self {
        Self::Event(event)
    }
}

impl Recordable {
    fn session_id(&self) -> &SessionId {
        match self {
            Self::Statement(st) => &st.session_id,
            Self::Event(e) => &e.session_id,
        }
    }

    /// Makes this the next link of `chain`, ready to store.
    fn link(self, chain: &mut ChainDigest) -> Encoded {
        match self {
            Self::Statement(st) => chain.link_statement(st),
            Self::Event(e) => chain.link_event(e),
        }
    }
}

enum Message {
    /// An event to number, chain and write.
    Record(Box<Recordable>),
    /// Write what came before now, then answer.
    Flush(oneshot::Sender<bool>, Option<SessionId>),
    /// Refuse new messages, write everything already sent, then stop.
    Shutdown,
}

impl Recorder {
    /// Starts the recording task on the current tokio runtime.
    #[must_use]
    pub fn spawn(store: Store) -> Recorder {
        Self::spawn_with(store, CAPACITY, STALL_LIMIT)
    }

    /// [`Recorder::spawn`] with a queue of `capacity` messages, where a record waits at
    /// most `stall` for room.
    #[must_use]
    pub fn spawn_with(store: Store, capacity: usize, stall: Duration) -> Recorder {
        let (messages, inbox) = mpsc::channel(capacity.max(2));
        let recorder = Recorder {
            messages,
            hurry: Arc::default(),
            chains: Arc::default(),
            stopped: CancellationToken::new(),
            capacity: capacity.max(2),
            stall,
        };
        let writer = Writer {
            store,
            chains: Arc::clone(&recorder.chains),
            hurry: Arc::clone(&recorder.hurry),
            batch: Vec::with_capacity(BATCH_MAX),
            lost: HashSet::new(),
        };
        tokio::spawn(writer.run(inbox, recorder.stopped.clone()));
        recorder
    }

    /// Queues `record`; the recorder sets its `seq` and `hash`, whatever the caller put
    /// in them. Waits while the queue is full, up to the stall limit: then the record
    /// is not queued and the caller must end its session ([`Stalled`]). After
    /// [`Recorder::shutdown`] the record cannot be written: that is logged as an error.
    pub async fn record(&self, record: impl Into<Recordable>) -> Result<(), Stalled> {
        let record = record.into();
        let session = record.session_id().clone();
        let message = Message::Record(Box::new(record));
        match self.messages.send_timeout(message, self.stall).await {
            Ok(()) => {
                if self.messages.capacity() < self.capacity / 2 {
                    self.hurry.notify_one();
                }
                Ok(())
            }
            Err(mpsc::error::SendTimeoutError::Closed(_)) => {
                tracing::error!(%session, lost = 1, "Event lost: the recorder has shut down");
                Ok(())
            }
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                let stalled = Stalled(self.stall);
                tracing::error!(%session, error = %stalled, "Recording stalled; ending the session");
                Err(stalled)
            }
        }
    }

    /// Queues `record` if the queue has room now, without waiting: a caller on a hot
    /// path is spared a task per record. Gives the record back when the queue is
    /// full (then [`Recorder::record`] waits for room, or reports the stall).
    pub fn try_record(&self, record: impl Into<Recordable>) -> Result<(), Box<Recordable>> {
        let record = Box::new(record.into());
        let session = record.session_id().clone();
        match self.messages.try_send(Message::Record(record)) {
            Ok(()) => {
                if self.messages.capacity() < self.capacity / 2 {
                    self.hurry.notify_one();
                }
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(Message::Record(record))) => Err(record),
            Err(mpsc::error::TrySendError::Full(_) | mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!(%session, lost = 1, "Event lost: the recorder has shut down");
                Ok(())
            }
        }
    }

    /// Waits until every event of `session` recorded so far is written (or has
    /// failed for good, which is logged), then forgets the session and returns its
    /// digest, for the `session_closed` audit record. A session without events
    /// gets [`ChainDigest::empty`].
    pub async fn finish_session(&self, session: &SessionId) -> ChainDigest {
        let (done, written) = oneshot::channel();
        let flush = Message::Flush(done, Some(session.clone()));
        if self.messages.send(flush).await.is_ok() {
            self.hurry.notify_one();
            // An error means the task is gone, after writing all it was sent.
            let _ = written.await;
        }
        self.chains
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(session)
            .unwrap_or_else(ChainDigest::empty)
    }

    /// Waits until every event of `session` recorded so far is written: what a
    /// protocol does before it lets a client see the result of an action, so that a
    /// crash (`kill -9`) never loses the record of a result someone received. The
    /// writer hurries for it, and every session waiting at once shares one commit.
    /// `false` when some of the session's events could not be written (the store
    /// refused them twice, logged) or the recorder is gone: the session must end.
    pub async fn sync(&self, session: &SessionId) -> bool {
        let (done, written) = oneshot::channel();
        let flush = Message::Flush(done, Some(session.clone()));
        if self.messages.send(flush).await.is_err() {
            return false;
        }
        self.hurry.notify_one();
        written.await.unwrap_or(false)
    }

    /// Writes everything recorded so far, then stops the task: later records are
    /// lost (and logged). Safe to call more than once, from any clone.
    pub async fn shutdown(&self) {
        // An error means the task is already stopping.
        let _ = self.messages.send(Message::Shutdown).await;
        self.hurry.notify_one();
        self.stopped.cancelled().await;
    }
}

/// The task behind a [`Recorder`].
struct Writer {
    store: Store,
    chains: Arc<Mutex<HashMap<SessionId, ChainDigest>>>,
    hurry: Arc<Notify>,
    /// Records taken off the channel and chained, not yet written.
    batch: Vec<Encoded>,
    /// Sessions some of whose events the store refused for good, until their next
    /// flush request learns it (at most the sessions open at once).
    lost: HashSet<SessionId>,
}

/// A flush request: answered `true` once written, `false` when the session's events
/// were lost.
type Waiter = (oneshot::Sender<bool>, Option<SessionId>);

impl Writer {
    async fn run(mut self, mut inbox: mpsc::Receiver<Message>, stopped: CancellationToken) {
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
            Message::Record(record) => {
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

    /// Writes the batch in one transaction, retrying once; never fails.
    async fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        if let Err(error) = self.store.insert_events(&self.batch).await {
            tracing::error!(
                %error,
                count = self.batch.len(),
                "Cannot record events; retrying once"
            );
            tokio::time::sleep(RETRY_PAUSE).await;
            if let Err(error) = self.store.insert_events(&self.batch).await {
                let sessions: BTreeSet<&str> = self
                    .batch
                    .iter()
                    .map(|e| e.record.session_id.as_str())
                    .collect();
                self.lost
                    .extend(self.batch.iter().map(|e| e.record.session_id.clone()));
                tracing::error!(
                    %error,
                    lost = self.batch.len(),
                    sessions = ?sessions,
                    "Events lost: the store refused them twice; `portcullis audit \
                     verify` will name these sessions"
                );
            }
        }
        self.batch.clear();
    }
}
