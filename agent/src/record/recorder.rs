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
//!
//! In the daemon every record is first appended to the local [`Journal`] (one
//! `write(2)`, under the lock that also queues it), and each batch is written with
//! the journal position it reaches. So [`Recorder::sync`], which a protocol awaits
//! before a result leaves for its client, returns at once: a crash loses nothing the
//! journal holds, and the next start stores it. Without a journal (tests, the
//! recorder benchmark) `sync` waits for the store's commit.

mod writer;

use super::{
    ChainDigest, EventRecord, StatementRecord, Store, events::Encoded, journal::Journal,
    journal::Position, session::SessionId,
};
use serde::{Deserialize, Serialize};
use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use writer::Writer;

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

/// Pause before the first retry of a failed write.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Longest pause between retries of a journaled batch.
const RETRY_MAX: Duration = Duration::from_secs(5);

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
    /// Cancelled when the daemon begins to stop ([`Recorder::closing`]).
    closing: CancellationToken,
    /// Room the channel has (for the half-full signal), and how long a record waits.
    capacity: usize,
    stall: Duration,
    /// Where each record is appended before it is queued (the daemon's; tests and
    /// benchmarks may go without).
    journal: Option<Arc<Journal>>,
    /// Records off the fast path, which [`Recorder::sync`] must wait for.
    stragglers: Arc<Stragglers>,
}

/// A record the queue had no room for ([`Recorder::try_record`]): counted as waiting
/// for its session until it is queued or dropped.
pub struct Waiting {
    record: Option<Box<Recordable>>,
    session: SessionId,
    stragglers: Arc<Stragglers>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.stragglers.leave(&self.session);
    }
}

/// Records a [`Recorder::sync`] cannot count as journaled yet: those waiting for room
/// in a full queue, and those the journal failed to take (queued without it, so their
/// session's sync waits for the store). Touched only off the fast path.
#[derive(Default)]
struct Stragglers {
    state: Mutex<StragglerState>,
    changed: Notify,
}

#[derive(Default)]
struct StragglerState {
    /// Per session, records waiting for room in the queue.
    waiting: HashMap<SessionId, usize>,
    /// Sessions with a record queued without the journal since their last sync.
    unjournaled: HashSet<SessionId>,
}

/// What a protocol hands the recorder: its own record, made an event by the task.
/// Serialized as it is into the journal.
#[derive(Debug, Serialize, Deserialize)]
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
    pub(super) fn session_id(&self) -> &SessionId {
        match self {
            Self::Statement(st) => &st.session_id,
            Self::Event(e) => &e.session_id,
        }
    }

    /// Makes this the next link of `chain`, ready to store.
    pub(super) fn link(self, chain: &mut ChainDigest) -> Encoded {
        match self {
            Self::Statement(st) => chain.link_statement(st),
            Self::Event(e) => chain.link_event(e),
        }
    }
}

enum Message {
    /// An event to number, chain and write, and where the journal has it.
    Record(Box<Recordable>, Option<Position>),
    /// Write what came before now, then answer.
    Flush(oneshot::Sender<bool>, Option<SessionId>),
    /// Refuse new messages, write everything already sent, then stop.
    Shutdown,
}

impl Recorder {
    /// Starts the recording task on the current tokio runtime, without a journal:
    /// [`Recorder::sync`] then waits for the store.
    #[must_use]
    pub fn spawn(store: Store) -> Recorder {
        Self::spawn_with(store, None, CAPACITY, STALL_LIMIT)
    }

    /// [`Recorder::spawn`] with every record appended to `journal` before it is
    /// queued: what the daemon runs.
    #[must_use]
    pub fn spawn_journaled(store: Store, journal: Journal) -> Recorder {
        Self::spawn_with(store, Some(Arc::new(journal)), CAPACITY, STALL_LIMIT)
    }

    /// The recorder with a queue of `capacity` messages, where a record waits at most
    /// `stall` for room.
    #[must_use]
    pub fn spawn_with(
        store: Store,
        journal: Option<Arc<Journal>>,
        capacity: usize,
        stall: Duration,
    ) -> Recorder {
        let (messages, inbox) = mpsc::channel(capacity.max(2));
        let recorder = Recorder {
            messages,
            hurry: Arc::default(),
            chains: Arc::default(),
            stopped: CancellationToken::new(),
            closing: CancellationToken::new(),
            capacity: capacity.max(2),
            stall,
            journal: journal.clone(),
            stragglers: Arc::default(),
        };
        let writer = Writer {
            store,
            journal,
            reached: None,
            chains: Arc::clone(&recorder.chains),
            hurry: Arc::clone(&recorder.hurry),
            batch: Vec::with_capacity(BATCH_MAX),
            lost: HashSet::new(),
            closing: recorder.closing.clone(),
            left_to_journal: false,
        };
        tokio::spawn(writer.run(inbox, recorder.stopped.clone()));
        recorder
    }

    /// Queues `record` (after appending it to the journal, if there is one); the
    /// recorder sets its `seq` and `hash`, whatever the caller put in them. Waits
    /// while the queue is full, up to the stall limit: then the record is not queued
    /// and the caller must end its session ([`Stalled`]). After
    /// [`Recorder::shutdown`] the record cannot be written: that is logged as an error.
    pub async fn record(&self, record: impl Into<Recordable>) -> Result<(), Stalled> {
        match self.try_record(record) {
            Ok(()) => Ok(()),
            Err(waiting) => self.record_waiting(waiting).await,
        }
    }

    /// Queues a record [`Recorder::try_record`] gave back, waiting for room as
    /// [`Recorder::record`] does.
    pub async fn record_waiting(&self, mut waiting: Waiting) -> Result<(), Stalled> {
        let Some(record) = waiting.record.take() else {
            return Ok(());
        };
        let session = &waiting.session;
        match tokio::time::timeout(self.stall, self.messages.reserve()).await {
            Ok(Ok(permit)) => {
                self.send(permit, record);
                Ok(())
            }
            Ok(Err(_closed)) => {
                tracing::error!(%session, lost = 1, "Event lost: the recorder has shut down");
                Ok(())
            }
            Err(_elapsed) => {
                let stalled = Stalled(self.stall);
                tracing::error!(%session, error = %stalled, "Recording stalled; ending the session");
                Err(stalled)
            }
        }
        // `waiting` drops here: the session's syncs stop waiting for it.
    }

    /// Queues `record` if the queue has room now, without waiting: a caller on a hot
    /// path is spared a task per record. When the queue is full the record comes back
    /// as [`Waiting`], for [`Recorder::record_waiting`]; until that queues it (or it is
    /// dropped), [`Recorder::sync`] of its session waits for it.
    pub fn try_record(&self, record: impl Into<Recordable>) -> Result<(), Waiting> {
        let record = Box::new(record.into());
        match self.messages.try_reserve() {
            Ok(permit) => {
                self.send(permit, record);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(())) => {
                let session = record.session_id().clone();
                self.stragglers.enter(&session);
                Err(Waiting {
                    record: Some(record),
                    session,
                    stragglers: Arc::clone(&self.stragglers),
                })
            }
            Err(mpsc::error::TrySendError::Closed(())) => {
                let session = record.session_id();
                tracing::error!(%session, lost = 1, "Event lost: the recorder has shut down");
                Ok(())
            }
        }
    }

    /// Appends `record` to the journal and queues it, under the journal's lock so
    /// the queue keeps journal order. When the journal fails, the record is queued
    /// without it and its session's next sync waits for the store.
    fn send(&self, permit: mpsc::Permit<'_, Message>, record: Box<Recordable>) {
        let mut parcel = Some((permit, record));
        if let Some(journal) = self.journal.as_deref() {
            let appended = parcel.as_ref().map(|(_, record)| Journal::frame(record));
            let appended = appended.and_then(Result::ok).map(|frame| {
                journal.append(&frame, |at| {
                    if let Some((permit, record)) = parcel.take() {
                        permit.send(Message::Record(record, Some(at)));
                    }
                })
            });
            if let Some((_, record)) = &parcel {
                let session = record.session_id().clone();
                let error = appended.and_then(Result::err).map(|e| e.to_string());
                tracing::error!(%session, error = error.as_deref().unwrap_or("cannot encode it"), "Cannot journal a record; its session waits for the store instead");
                self.stragglers.unjournaled(session);
            }
        }
        if let Some((permit, record)) = parcel {
            permit.send(Message::Record(record, None));
        }
        if self.messages.capacity() < self.capacity / 2 {
            self.hurry.notify_one();
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
        self.stragglers.lock().unjournaled.remove(session);
        self.chains
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(session)
            .unwrap_or_else(ChainDigest::empty)
    }

    /// Waits until every event of `session` recorded so far is durable: what a
    /// protocol does before it lets a client see the result of an action, so that a
    /// crash (`kill -9`) never loses the record of a result someone received. With a
    /// journal that is at once, unless a record still waits for room or the journal
    /// failed to take one; then, as without a journal, the writer hurries for it, and
    /// every session waiting at once shares one commit. `false` when some of the
    /// session's events could not be written (the store refused them twice, logged)
    /// or the recorder is gone: the session must end.
    pub async fn sync(&self, session: &SessionId) -> bool {
        if self.journal.is_some() && self.stragglers.settle(session).await {
            return true;
        }
        let (done, written) = oneshot::channel();
        let flush = Message::Flush(done, Some(session.clone()));
        if self.messages.send(flush).await.is_err() {
            return false;
        }
        self.hurry.notify_one();
        written.await.unwrap_or(false)
    }

    /// The daemon begins to stop: from now on a failing store is not waited for
    /// (what it has not taken stays in the journal, for the next start), so a store
    /// outage cannot hold the shutdown.
    pub fn closing(&self) {
        self.closing.cancel();
    }

    /// Writes everything recorded so far, then stops the task: later records are
    /// lost (and logged). Safe to call more than once, from any clone.
    pub async fn shutdown(&self) {
        self.closing();
        // An error means the task is already stopping.
        let _ = self.messages.send(Message::Shutdown).await;
        self.hurry.notify_one();
        self.stopped.cancelled().await;
    }
}

impl Stragglers {
    fn lock(&self) -> std::sync::MutexGuard<'_, StragglerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A record of `session` starts waiting for room.
    fn enter(&self, session: &SessionId) {
        *self.lock().waiting.entry(session.clone()).or_default() += 1;
    }

    /// A record of `session` stopped waiting (queued, stalled or lost).
    fn leave(&self, session: &SessionId) {
        let mut state = self.lock();
        if let Some(n) = state.waiting.get_mut(session) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.waiting.remove(session);
            }
        }
        drop(state);
        self.changed.notify_waiters();
    }

    fn unjournaled(&self, session: SessionId) {
        self.lock().unjournaled.insert(session);
    }

    /// Waits until no record of `session` waits for room; `true` when all of them
    /// are journaled, `false` when one went to the queue without the journal.
    async fn settle(&self, session: &SessionId) -> bool {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut state = self.lock();
                if !state.waiting.contains_key(session) {
                    return !state.unjournaled.remove(session);
                }
            }
            changed.await;
        }
    }
}
