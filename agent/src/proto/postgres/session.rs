//! One logged-in session: every statement the client sends is classified, decided
//! by the gate, and forwarded, held, or replaced by a harmless one that fails.
//!
//! Two loops run side by side in the session's task. The frontend reads the
//! client's messages and writes to the server; the backend reads the server's
//! messages and writes to the client. They share, under a mutex held only between
//! awaits, the queue of statements the server has been sent and not yet answered
//! ([`Pending`]): responses come back in the order statements were sent, so the
//! backend completes each record from the front of the queue.
//!
//! A denied statement never reaches the server. In its place the server gets a
//! statement that can only fail, naming a random nonce (`EXECUTE
//! portcullis_denied_<nonce>`, or `Execute` of a portal of that name); when its
//! error comes back, the backend replaces it with the proxy's (`refusal`). So the
//! client sees exactly the replies it would for a failed statement, in order, with
//! the server's own `ReadyForQuery` status, and a transaction the client had open
//! is really aborted on the server: a later COMMIT cannot commit part of a batch.

use super::{
    Postgres,
    backend::{self, LoginError},
    classify::CopyOut,
    encoding::ClientEncoding,
    masking,
    startup::{self, Opened},
    tls::ClientStream,
    wire::{self, MessageReader},
};
use crate::mask::{MaskKey, Masker};
use crate::{
    gate::{Action, Ask},
    proto::{Metered, Served, Session},
    record::{Outcome, StatementRecord},
};
use bytes::{Bytes, BytesMut};
use std::{
    collections::{HashMap, VecDeque},
    fmt::Write as _,
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};
use tokio::{
    io::{ReadHalf, WriteHalf},
    sync::mpsc,
};
use tokio_util::sync::CancellationToken;

mod frontend;
mod held;
mod justify;
mod queue;
mod refusal;
mod replies;
mod statement;

use frontend::Frontend;
use replies::BackendLoop;

/// Most prepared statements or portals a session may keep open at once.
const MAX_NAMED: usize = 10_000;
/// Bytes of pipelined messages kept while a statement is held; then reading pauses.
const MAX_STASH: usize = 1024 * 1024;
/// Longest parameter value or cell kept in a record.
const MAX_RECORDED_VALUE: usize = 256;
/// Longest the frontend gets to end a held statement's request once the target left.
const HOLD_WIND_DOWN: std::time::Duration = std::time::Duration::from_secs(5);
/// Output is written out when this much is buffered, even mid-batch.
const FLUSH_AT: usize = 64 * 1024;

type ClientRead = ReadHalf<Metered<ClientStream>>;
type ClientWrite = WriteHalf<Metered<ClientStream>>;

/// Serves a client that finished its startup: log in to the target, greet the client
/// as the server would, then run both loops until either side leaves.
pub(super) async fn run(pg: &Postgres, mut opened: Opened, session: Arc<Session>) -> Served {
    let opened_params = opened.params.clone();
    let (backend, masker) = match log_in(pg, &mut opened, &session).await {
        Ok(ready) => ready,
        Err(reason) => return Served::failed(reason),
    };
    let registration = pg
        .cancels
        .register(session.upstream, backend.key.unwrap_or_default());
    greet(&mut opened, &backend, registration.key).await;

    let client = Metered::new(opened.stream);
    let meter = client.meter();
    let (client_read, client_write) = tokio::io::split(client);
    let (server_read, server_write) = tokio::io::split(backend.stream);
    let shared = Mutex::new(Shared {
        pending: VecDeque::new(),
        reading: backend.reading,
        risky_in_flight: 0,
    });
    let catalog = tokio::sync::Mutex::new(masking::Catalog::new(opened_params, &pg.classifier));
    let (to_client, from_frontend) = mpsc::channel(8);
    let server_gone = CancellationToken::new();
    let mut front = Frontend {
        pg,
        session: &session,
        reader: MessageReader::new(client_read, pg.max_message),
        server: server_write,
        out: BytesMut::with_capacity(FLUSH_AT),
        prepared: HashMap::new(),
        portals: HashMap::new(),
        shared: &shared,
        to_client,
        cancel: &registration.entry,
        stash: VecDeque::new(),
        masker: masker.clone(),
        catalog: &catalog,
        server_gone: &server_gone,
        reason: None,
    };
    let mut back = BackendLoop {
        reader: MessageReader::with_buffer(server_read, pg.max_message, backend.leftover),
        client: client_write,
        out: BytesMut::with_capacity(FLUSH_AT),
        shared: &shared,
        from_frontend,
        columns: Vec::new(),
        record_rows: pg.record_rows,
        session: &session,
        catalog: &catalog,
        masked_columns: Vec::new(),
        masker,
        copy: None,
        copy_header: false,
        idle: backend.status == b'I',
        unsynced: false,
    };
    let (outcome, reason) = race(&mut front, &mut back, &server_gone, &session).await;
    // What the frontend asked to say last (a protocol error) still reaches the client.
    drop(front);
    while let Ok(ToClient::Notice(bytes) | ToClient::Fatal(bytes)) = back.from_frontend.try_recv() {
        let _ = back.write(&bytes).await;
    }
    record_unanswered(&shared, &session).await;
    let digest = session.recorder.finish_session(&session.id).await;
    Served {
        outcome,
        reason,
        traffic: meter.traffic(),
        events: Some(digest),
    }
}

/// Logs in to the target with the client's startup parameters and sets up the
/// session's masking; on failure the client has been told why, and this is the
/// reason to record.
async fn log_in(
    pg: &Postgres,
    opened: &mut Opened,
    session: &Session,
) -> Result<(backend::Backend, Option<Arc<Masker>>), String> {
    let backend = match backend::login(session, &opened.params).await {
        Ok(b) => b,
        Err(LoginError::Server { frame, message }) => {
            opened.send(&frame).await;
            let reason = format!("the target refused the login: {message}");
            tracing::info!(%reason, "Login to the target failed");
            return Err(reason);
        }
        Err(LoginError::Proxy(message)) => {
            let told = format!("Portcullis: {message}");
            startup::fatal(&mut opened.stream, "08001", &told).await;
            tracing::info!(reason = %message, "Login to the target failed");
            return Err(message);
        }
    };
    match session_masker(pg, session) {
        Ok(masker) => Ok((backend, masker)),
        Err(reason) => {
            let told = format!("Portcullis: {reason}");
            startup::fatal(&mut opened.stream, "28000", &told).await;
            Err(reason)
        }
    }
}

/// Greets the client as the server would: authentication done, the server's
/// parameters, the proxy's own cancel key, and ready.
async fn greet(opened: &mut Opened, backend: &backend::Backend, key: super::cancel::Key) {
    let mut hello = BytesMut::new();
    hello.extend_from_slice(&wire::authentication_ok());
    for frame in &backend.relay {
        hello.extend_from_slice(frame);
    }
    hello.extend_from_slice(&wire::backend_key_data(key.0, key.1));
    hello.extend_from_slice(&wire::ready_for_query(backend.status));
    opened.send(&hello).await;
}

/// Runs both loops until one ends (or the daemon stops the session). When the
/// target leaves first, a statement held then can never run: the frontend gets a
/// moment to end its request as abandoned rather than leave it pending.
async fn race(
    front: &mut Frontend<'_>,
    back: &mut BackendLoop<'_>,
    server_gone: &CancellationToken,
    session: &Session,
) -> (Outcome, Option<String>) {
    let mut ask = Ask {
        principal: session.principal.clone(),
        target: session.target.name.clone(),
        protocol: "postgres".into(),
        action: Action::Connect,
        justification: None,
    };
    let holding = front.cancel;
    let front_run = front.run(&mut ask);
    let back_run = back.run();
    tokio::pin!(front_run, back_run);
    tokio::select! {
        r = &mut front_run => r,
        r = &mut back_run => {
            server_gone.cancel();
            if holding.is_holding() {
                tokio::select! {
                    _ = &mut front_run => {}
                    () = tokio::time::sleep(HOLD_WIND_DOWN) => {}
                    () = session.stop.cancelled() => {}
                }
            }
            r
        }
        () = session.stop.cancelled() => (Outcome::Closed, Some("ended by daemon shutdown".into())),
    }
}

/// Records the statements still unanswered as they stand.
async fn record_unanswered(shared: &Mutex<Shared>, session: &Session) {
    let leftover: Vec<Pending> = shared
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .pending
        .drain(..)
        .collect();
    for mut p in leftover {
        if let Some(mut record) = p.record.take() {
            record
                .error
                .get_or_insert_with(|| "the session ended before the server answered".into());
            // Ending anyway: a stalled recorder has logged it.
            let _ = session.recorder.record(record).await;
        }
    }
}

/// The masking of this session: the specs of the rules that match it, with their key.
/// A rule naming a key that cannot be read fails the session (closed, not unmasked).
fn session_masker(pg: &Postgres, session: &Session) -> Result<Option<Arc<Masker>>, String> {
    let specs = session
        .gate
        .policy()
        .masks_for(&session.principal, &session.target.name);
    if specs.is_empty() {
        return Ok(None);
    }
    let key = MaskKey::for_specs(&specs).map_err(|e| format!("masking cannot be set up: {e}"))?;
    let masker = Masker::compile(&specs, key.as_ref())
        .map_err(|e| format!("masking cannot be set up: {e}"))?
        .with_learned(pg.learned.target(&session.target.name));
    Ok((!masker.is_noop()).then(|| Arc::new(masker)))
}

/// What both loops share.
struct Shared {
    /// Statements sent to the server and not yet answered, in order.
    pending: VecDeque<Pending>,
    /// As the server last reported it.
    reading: wire::TextReading,
    /// In-flight statements that might change how the server reads text
    /// (`standard_conforming_strings`, `client_encoding`): until they are answered, a
    /// text with a backslash is classified both ways, and non-ASCII text not at all.
    risky_in_flight: usize,
}

/// A statement (or a `Sync`) the server will answer.
struct Pending {
    kind: PendingKind,
    /// `None` for a `Sync`.
    record: Option<StatementRecord>,
    started: Instant,
    /// The error that replaces the server's failure of the stand-in statement.
    denial: Option<(String, Bytes)>,
    risky: bool,
    rows: Vec<serde_json::Value>,
    columns: Vec<String>,
    truncated: bool,
    /// The statement's `COPY … TO STDOUT`s not yet answered, in order.
    copy_out: VecDeque<CopyOut>,
    /// What the statement may expose of masked columns: with
    /// [`masking::Exposure::Computed`] (`upper(secret)`, a whole row) its computed
    /// result columns are NULL; its server messages are hidden as the level says.
    exposure: masking::Exposure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PendingKind {
    /// A simple `Query` or a `FunctionCall`: answered up to `ReadyForQuery`.
    Query,
    /// An extended-protocol `Execute`: answered by its completion or an error.
    Execute,
    Sync,
    /// A `Describe`, tracked only when column rules apply: answered by a
    /// `RowDescription` or `NoData` (after a `ParameterDescription` for a statement).
    /// `ours`: the proxy asked, before an `Execute`, so that its rows are masked by
    /// their own columns; the answer is not the client's.
    Describe {
        ours: bool,
    },
}

/// Messages the frontend asks the backend loop to put on the client's stream.
enum ToClient {
    Notice(Bytes),
    /// A fatal protocol error; the session ends after it is written.
    Fatal(Bytes),
}

impl Pending {
    fn new(kind: PendingKind, record: Option<StatementRecord>, risky: bool) -> Self {
        Self {
            kind,
            record,
            started: Instant::now(),
            denial: None,
            risky,
            rows: Vec::new(),
            columns: Vec::new(),
            truncated: false,
            copy_out: VecDeque::new(),
            exposure: masking::Exposure::Values,
        }
    }

    /// The statement may compute results from a masked column.
    fn hides_computed(&self) -> bool {
        self.exposure == masking::Exposure::Computed
    }

    fn sync() -> Self {
        Self::new(PendingKind::Sync, None, false)
    }

    /// The record, finished: duration and any rows kept.
    fn finish(mut self) -> Option<StatementRecord> {
        let mut record = self.record.take()?;
        record.duration_us =
            Some(i64::try_from(self.started.elapsed().as_micros()).unwrap_or(i64::MAX));
        if !self.columns.is_empty() {
            // Moved in, not serialized from references as `json!` would: this runs
            // for every statement that returns rows.
            let columns = self.columns.drain(..).map(serde_json::Value::String);
            let sample = serde_json::Map::from_iter([
                (
                    "columns".to_owned(),
                    serde_json::Value::Array(columns.collect()),
                ),
                (
                    "rows".to_owned(),
                    serde_json::Value::Array(std::mem::take(&mut self.rows)),
                ),
                ("truncated".to_owned(), self.truncated.into()),
            ]);
            record.rows = Some(serde_json::Value::Object(sample));
        }
        Some(record)
    }
}

/// A value as a record shows it: text in the client's `encoding` (cut to
/// [`MAX_RECORDED_VALUE`] bytes) or `\x` hex.
pub(super) fn shown_value(v: &[u8], binary: bool, encoding: ClientEncoding) -> String {
    let cut = v.get(..MAX_RECORDED_VALUE).unwrap_or(v);
    let mut s = if binary {
        let mut s = String::from("\\x");
        for b in cut {
            let _ = write!(s, "{b:02x}");
        }
        s
    } else {
        encoding.lossy(cut).into_owned()
    };
    if cut.len() < v.len() {
        s.push('…');
    }
    s
}
