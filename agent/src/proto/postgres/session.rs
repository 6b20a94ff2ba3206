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
//! error comes back, the backend replaces it with the gate's 42501 error. So the
//! client sees exactly the replies it would for a failed statement, in order, with
//! the server's own `ReadyForQuery` status, and a transaction the client had open
//! is really aborted on the server: a later COMMIT cannot commit part of a batch.

use super::{
    Postgres,
    backend::{self, LoginError},
    classify::Classified,
    masking,
    startup::{self, Opened},
    tls::{BackendStream, ClientStream},
    wire::{self, Builder, Message, MessageReader, Severity, WireError},
};
use crate::mask::{MaskKey, Masker};
use crate::{
    gate::{Action, Ask, HoldOutcome, Ruling},
    policy::{SqlClass, SqlClasses},
    proto::{Metered, Served, Session},
    record::{Outcome, StatementRecord, now_ms},
};
use bytes::{Bytes, BytesMut};
use std::borrow::Cow;
use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};
use tokio::{
    io::{AsyncWriteExt as _, ReadHalf, WriteHalf},
    sync::mpsc,
};
use tokio_util::sync::CancellationToken;

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
pub(super) async fn run(pg: &Postgres, mut opened: Opened, session: Session<'_>) -> Served {
    let opened_params = opened.params.clone();
    let backend = match backend::login(&session, &opened.params).await {
        Ok(b) => b,
        Err(error) => {
            let reason = match error {
                LoginError::Server { frame, message } => {
                    opened.send(&frame).await;
                    format!("the target refused the login: {message}")
                }
                LoginError::Proxy(message) => {
                    startup::fatal(
                        &mut opened.stream,
                        "08001",
                        &format!("Portcullis: {message}"),
                    )
                    .await;
                    message
                }
            };
            tracing::info!(%reason, "Login to the target failed");
            return Served {
                outcome: Outcome::Error,
                reason: Some(reason),
                traffic: crate::proto::Traffic::default(),
                statements: None,
            };
        }
    };
    let masker = match session_masker(&session) {
        Ok(m) => m,
        Err(reason) => {
            startup::fatal(
                &mut opened.stream,
                "28000",
                &format!("Portcullis: {reason}"),
            )
            .await;
            return Served {
                outcome: Outcome::Error,
                reason: Some(reason),
                traffic: crate::proto::Traffic::default(),
                statements: None,
            };
        }
    };
    let registration = pg
        .cancels
        .register(session.upstream, backend.key.unwrap_or_default());
    let mut hello = BytesMut::new();
    hello.extend_from_slice(&wire::authentication_ok());
    for frame in &backend.relay {
        hello.extend_from_slice(frame);
    }
    hello.extend_from_slice(&wire::backend_key_data(
        registration.key.0,
        registration.key.1,
    ));
    hello.extend_from_slice(&wire::ready_for_query(backend.status));
    opened.send(&hello).await;

    let client = Metered::new(opened.stream);
    let meter = client.meter();
    let (client_read, client_write) = tokio::io::split(client);
    let (server_read, server_write) = tokio::io::split(backend.stream);
    let shared = Mutex::new(Shared {
        pending: VecDeque::new(),
        standard_conforming_strings: backend.standard_conforming_strings,
        risky_in_flight: 0,
    });
    let (to_client, from_frontend) = mpsc::channel(8);
    let server_gone = CancellationToken::new();
    let mut ask = Ask {
        principal: session.principal.clone(),
        target: session.target.name.clone(),
        protocol: "postgres".into(),
        action: Action::Connect,
    };
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
        server_gone: &server_gone,
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
        catalog: masking::Catalog::new(opened_params),
        masked_columns: Vec::new(),
        masker,
    };
    let (outcome, reason) = {
        let front_run = front.run(&mut ask);
        let back_run = back.run();
        tokio::pin!(front_run, back_run);
        tokio::select! {
            r = &mut front_run => r,
            r = &mut back_run => {
                // A statement held when the target left can never run: let the
                // frontend end its request (abandoned) rather than leave it pending.
                server_gone.cancel();
                if registration.entry.is_holding() {
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
    };
    // What the frontend asked to say last (a protocol error) still reaches the client.
    drop(front);
    while let Ok(ToClient::Notice(bytes) | ToClient::Fatal(bytes)) = back.from_frontend.try_recv() {
        let _ = back.write(&bytes).await;
    }
    // Statements still unanswered are recorded as they stand.
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
            session.recorder.record(record).await;
        }
    }
    let digest = session.recorder.finish_session(session.id).await;
    Served {
        outcome,
        reason,
        traffic: meter.traffic(),
        statements: Some(digest),
    }
}

/// The masking of this session: the specs of the rules that match it, with their key.
/// A rule naming a key that cannot be read fails the session (closed, not unmasked).
fn session_masker(session: &Session<'_>) -> Result<Option<Arc<Masker>>, String> {
    let specs = session
        .gate
        .policy()
        .masks_for(session.principal, &session.target.name);
    if specs.is_empty() {
        return Ok(None);
    }
    let key = MaskKey::for_specs(&specs).map_err(|e| format!("masking cannot be set up: {e}"))?;
    let masker = Masker::compile(&specs, key.as_ref())
        .map_err(|e| format!("masking cannot be set up: {e}"))?;
    Ok((!masker.is_noop()).then(|| Arc::new(masker)))
}

/// What both loops share.
struct Shared {
    /// Statements sent to the server and not yet answered, in order.
    pending: VecDeque<Pending>,
    /// As the server last reported it.
    standard_conforming_strings: bool,
    /// In-flight statements that might change `standard_conforming_strings`: until
    /// they are answered, a text with a backslash is classified both ways.
    risky_in_flight: usize,
}

/// A statement (or a `Sync`) the server will answer.
struct Pending {
    kind: PendingKind,
    /// `None` for a `Sync`.
    record: Option<StatementRecord>,
    started: Instant,
    /// The 42501 error that replaces the server's failure of the stand-in statement.
    denial: Option<(String, Bytes)>,
    risky: bool,
    rows: Vec<serde_json::Value>,
    columns: Vec<String>,
    truncated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PendingKind {
    /// A simple `Query` or a `FunctionCall`: answered up to `ReadyForQuery`.
    Query,
    /// An extended-protocol `Execute`: answered by its completion or an error.
    Execute,
    Sync,
}

/// Messages the frontend asks the backend loop to put on the client's stream.
enum ToClient {
    Notice(Bytes),
    /// A fatal protocol error; the session ends after it is written.
    Fatal(Bytes),
}

/// A named or unnamed prepared statement, as parsed.
struct Prepared {
    text: Arc<str>,
    classified: Arc<Classified>,
}

/// A bound portal.
struct Portal {
    statement: Arc<Prepared>,
    params: Option<serde_json::Value>,
}

struct Frontend<'a> {
    pg: &'a Postgres,
    session: &'a Session<'a>,
    reader: MessageReader<ClientRead>,
    server: WriteHalf<BackendStream>,
    out: BytesMut,
    prepared: HashMap<String, Arc<Prepared>>,
    portals: HashMap<String, Portal>,
    shared: &'a Mutex<Shared>,
    to_client: mpsc::Sender<ToClient>,
    cancel: &'a super::cancel::CancelEntry,
    /// Messages read while a statement was held, to handle before reading more.
    stash: VecDeque<Message>,
    /// Masks what is recorded and shown to approvers.
    masker: Option<Arc<Masker>>,
    /// Cancelled when the target's connection has ended: a held statement can no
    /// longer run, so its request ends as abandoned.
    server_gone: &'a CancellationToken,
}

/// How the frontend continues after a message.
enum Next {
    Continue,
    End(Outcome, Option<String>),
}

impl Frontend<'_> {
    async fn run(&mut self, ask: &mut Ask) -> (Outcome, Option<String>) {
        loop {
            let message = match self.stash.pop_front() {
                Some(m) => m,
                None => match self.reader.next().await {
                    Ok(Some(m)) => m,
                    Ok(None) => {
                        let _ = self.flush().await;
                        return (Outcome::Closed, None);
                    }
                    Err(error) => return self.protocol_error(&error).await,
                },
            };
            match self.handle(message, ask).await {
                Ok(Next::Continue) => {}
                Ok(Next::End(outcome, reason)) => {
                    let _ = self.flush().await;
                    return (outcome, reason);
                }
                Err(error) => return self.protocol_error(&error).await,
            }
            if (self.stash.is_empty() && !self.reader.has_buffered_message())
                || self.out.len() >= FLUSH_AT
            {
                if let Err(error) = self.flush().await {
                    return (Outcome::Closed, Some(format!("lost the target: {error}")));
                }
            }
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.server.write_all(&self.out).await?;
            self.out.clear();
        }
        self.server.flush().await
    }

    /// A malformed, oversized or unknown message: a protocol error to the client, and
    /// the session ends (the stream can no longer be trusted to be in step).
    async fn protocol_error(&mut self, error: &WireError) -> (Outcome, Option<String>) {
        let reason = match error {
            WireError::Io(e) => return (Outcome::Closed, Some(format!("client connection: {e}"))),
            WireError::Truncated => return (Outcome::Closed, Some(error.to_string())),
            other => format!("protocol violation: {other}"),
        };
        let e = wire::error_response(
            Severity::FATAL,
            "08P01",
            &format!("Portcullis: {reason}"),
            None,
            None,
        );
        let _ = self.to_client.send(ToClient::Fatal(e)).await;
        (Outcome::Error, Some(reason))
    }

    async fn handle(&mut self, m: Message, ask: &mut Ask) -> Result<Next, WireError> {
        match m.tag() {
            b'Q' => {
                let text = m.fields().cstr()?.to_owned();
                return self.statement(&m, ask, Statement::Query(text)).await;
            }
            b'P' => self.parse(&m).await?,
            b'B' => self.bind(&m)?,
            b'E' => {
                let portal = m.fields().cstr()?.to_owned();
                return self.statement(&m, ask, Statement::Execute(portal)).await;
            }
            b'F' => {
                let oid = m.fields().i32()?;
                return self.statement(&m, ask, Statement::Function(oid)).await;
            }
            b'C' => {
                let mut f = m.fields();
                let kind = f.u8()?;
                let name = f.cstr()?;
                match kind {
                    b'S' => drop(self.prepared.remove(name)),
                    b'P' => drop(self.portals.remove(name)),
                    _ => return Err(WireError::Malformed("Close of neither S nor P".into())),
                }
                self.out.extend_from_slice(&m.frame);
            }
            b'S' => {
                self.push_pending(Pending::sync());
                self.out.extend_from_slice(&m.frame);
            }
            // Describe, Flush, COPY data/done/fail, and a password message the server
            // will judge: forwarded as they are.
            b'D' | b'H' | b'd' | b'c' | b'f' | b'p' => self.out.extend_from_slice(&m.frame),
            b'X' => {
                self.out.extend_from_slice(&m.frame);
                return Ok(Next::End(Outcome::Closed, None));
            }
            other => {
                return Err(WireError::Malformed(format!(
                    "unknown message type {:?}",
                    char::from(other)
                )));
            }
        }
        Ok(Next::Continue)
    }

    async fn parse(&mut self, m: &Message) -> Result<(), WireError> {
        let mut f = m.fields();
        let name = f.cstr()?;
        let text = f.cstr()?;
        if !name.is_empty() && !self.prepared.contains_key(name) && self.prepared.len() >= MAX_NAMED
        {
            return Err(WireError::Malformed(format!(
                "more than {MAX_NAMED} prepared statements open"
            )));
        }
        let classified = self.classify(text).await;
        let prepared = Arc::new(Prepared {
            text: text.into(),
            classified,
        });
        self.prepared.insert(name.to_owned(), prepared);
        self.out.extend_from_slice(&m.frame);
        Ok(())
    }

    fn bind(&mut self, m: &Message) -> Result<(), WireError> {
        let mut f = m.fields();
        let portal = f.cstr()?;
        let statement = f.cstr()?;
        let formats: Vec<i16> = (0..f.count16()?)
            .map(|_| f.i16())
            .collect::<Result<_, _>>()?;
        let count = f.count16()?;
        let mut params = Vec::with_capacity(count);
        for i in 0..count {
            let binary = match formats.as_slice() {
                [] => false,
                [one] => *one == 1,
                many => many.get(i).is_some_and(|x| *x == 1),
            };
            params.push(match f.value()? {
                None => serde_json::Value::Null,
                Some(v) => serde_json::Value::String(shown_value(v, binary)),
            });
        }
        if let Some(statement) = self.prepared.get(statement) {
            if !portal.is_empty()
                && !self.portals.contains_key(portal)
                && self.portals.len() >= MAX_NAMED
            {
                return Err(WireError::Malformed(format!(
                    "more than {MAX_NAMED} portals open"
                )));
            }
            let params = (!params.is_empty()).then_some(serde_json::Value::Array(params));
            self.portals.insert(
                portal.to_owned(),
                Portal {
                    statement: Arc::clone(statement),
                    params,
                },
            );
        }
        self.out.extend_from_slice(&m.frame);
        Ok(())
    }

    /// Classifies `text` with the session's `standard_conforming_strings`; while a
    /// statement that may change it is in flight, both ways, keeping the union.
    async fn classify(&self, text: &str) -> Arc<Classified> {
        let (scs, unsure) = {
            let shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
            (
                shared.standard_conforming_strings,
                shared.risky_in_flight > 0,
            )
        };
        let classified = self.pg.classifier.classify(text, scs).await;
        if !(unsure && text.contains('\\')) {
            return classified;
        }
        let other = self.pg.classifier.classify(text, !scs).await;
        let mut tables = classified.tables.clone();
        tables.extend(other.tables.iter().cloned());
        tables.sort();
        tables.dedup();
        Arc::new(Classified {
            classes: classified.classes.union(other.classes),
            tables,
            functions: classified.functions.clone(),
            error: classified.error.clone().or_else(|| other.error.clone()),
        })
    }

    /// A statement: decide it, then forward it, hold it, or send the stand-in.
    async fn statement(
        &mut self,
        m: &Message,
        ask: &mut Ask,
        statement: Statement,
    ) -> Result<Next, WireError> {
        let (text, classified, params, kind) = match &statement {
            Statement::Query(text) => {
                let classified = self.classify(text).await;
                (
                    Arc::from(text.as_str()),
                    classified,
                    None,
                    PendingKind::Query,
                )
            }
            Statement::Execute(portal) => match self.portals.get(portal) {
                Some(p) => (
                    Arc::clone(&p.statement.text),
                    Arc::clone(&p.statement.classified),
                    p.params.clone(),
                    PendingKind::Execute,
                ),
                // A portal we did not see bound (a cursor declared in SQL, whose
                // DECLARE was decided) or one that does not exist (the server says so).
                None => {
                    self.out.extend_from_slice(&m.frame);
                    return Ok(Next::Continue);
                }
            },
            Statement::Function(oid) => {
                let classified = Arc::new(Classified {
                    classes: SqlClasses::empty().with(SqlClass::Dynamic),
                    tables: Vec::new(),
                    functions: vec![format!("oid {oid}")],
                    error: None,
                });
                let text: Arc<str> = Arc::from(format!("-- FunctionCall of function oid {oid}"));
                (text, classified, None, PendingKind::Query)
            }
        };
        let shown = match &self.masker {
            Some(m) => m.mask_str(&text).into_owned(),
            None => text.to_string(),
        };
        let params = match (&self.masker, params) {
            (Some(m), Some(serde_json::Value::Array(values))) => Some(serde_json::Value::Array(
                values
                    .into_iter()
                    .map(|v| match v {
                        serde_json::Value::String(s) => {
                            serde_json::Value::String(m.mask_str(&s).into_owned())
                        }
                        other => other,
                    })
                    .collect(),
            )),
            (_, params) => params,
        };
        ask.action = Action::Sql {
            text: shown.clone(),
            classes: classified.classes,
            tables: classified.tables.clone(),
        };
        let mut record = StatementRecord {
            session_id: self.session.id.clone(),
            seq: 0,
            at_ms: now_ms(),
            text: shown,
            params,
            classes: classified
                .classes
                .iter()
                .map(|c| c.name().to_owned())
                .collect(),
            tables: classified.tables.clone(),
            verdict: "allowed".into(),
            decided_by: None,
            request_id: None,
            reason: None,
            duration_us: None,
            rows_affected: None,
            command_tag: None,
            error: None,
            rows: None,
            hash: String::new(),
        };
        let denial = match self.session.gate.rule(ask) {
            Ruling::Allow { rule, .. } => {
                record.decided_by = rule;
                None
            }
            Ruling::Deny { rule, reason } => {
                record.verdict = "denied".into();
                record.decided_by.clone_from(&rule);
                let message = match &classified.error {
                    Some(parse) => format!("Portcullis denied this statement: {reason} ({parse})"),
                    None => format!("Portcullis denied this statement: {reason}"),
                };
                record.reason = Some(reason);
                Some(("42501", message))
            }
            Ruling::Review { rule, review, .. } => {
                match self.hold(ask, rule, review, &mut record).await {
                    Held::Forward => None,
                    Held::Refuse(code, message) => Some((code, message)),
                    Held::Left(why) => {
                        self.session.recorder.record(record).await;
                        return Ok(Next::End(Outcome::Closed, Some(why.into())));
                    }
                }
            }
        };
        let risky = risky(&text, classified.classes);
        let mut pending = Pending::new(kind, Some(record), risky);
        match denial {
            None => self.out.extend_from_slice(&m.frame),
            Some((code, message)) => {
                let nonce = nonce();
                let stand_in = match kind {
                    PendingKind::Execute => Builder::new(b'E')
                        .cstr(&format!("portcullis_denied_{nonce}"))
                        .i32(0)
                        .finish(),
                    PendingKind::Query | PendingKind::Sync => Builder::new(b'Q')
                        .cstr(&format!("EXECUTE portcullis_denied_{nonce}"))
                        .finish(),
                };
                self.out.extend_from_slice(&stand_in);
                if let Some(r) = pending.record.as_mut() {
                    r.error = Some(format!("{code}: {message}"));
                }
                let error = wire::error_response(Severity::ERROR, code, &message, None, None);
                pending.denial = Some((nonce, error));
            }
        }
        self.push_pending(pending);
        Ok(Next::Continue)
    }

    fn push_pending(&self, pending: Pending) {
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.risky {
            shared.risky_in_flight += 1;
        }
        shared.pending.push_back(pending);
    }

    /// Holds a statement for review: tells the client, waits for the decision while
    /// watching for the client leaving or cancelling, and says what to do next.
    async fn hold(
        &mut self,
        ask: &Ask,
        rule: Option<String>,
        review: crate::policy::Review,
        record: &mut StatementRecord,
    ) -> Held {
        let session_id = Some(self.session.id.to_string());
        let hold = match self.session.gate.hold(ask, rule, review, session_id).await {
            Ok(h) => h,
            Err(error) => {
                tracing::error!(%error, "Cannot record the approval request; denying the statement");
                record.verdict = "error".into();
                let message =
                    "Portcullis denied this statement: its approval request could not be recorded";
                record.reason = Some(message.into());
                return Held::Refuse("42501", message.into());
            }
        };
        record.request_id = Some(hold.id().to_owned());
        let notice = wire::error_response(
            Severity::NOTICE,
            "01000",
            &format!(
                "Portcullis: this statement is held for approval (request {})",
                hold.id()
            ),
            Some(&format!(
                "It runs when approved; approvers can run: {}",
                hold.approve_hint()
            )),
            Some("Cancel the query (Ctrl-C) to withdraw it."),
        );
        let _ = self.to_client.send(ToClient::Notice(notice)).await;
        self.cancel.set_holding(true);
        let mut left = false;
        let outcome = {
            let reader = &mut self.reader;
            let stash = &mut self.stash;
            let cancel = self.cancel;
            let server_gone = self.server_gone;
            let left = &mut left;
            let gone = async move {
                tokio::select! {
                    () = cancel.cancelled() => {}
                    () = watch_client(reader, stash, left) => {}
                    () = server_gone.cancelled() => {}
                }
            };
            hold.wait(gone).await
        };
        self.cancel.set_holding(false);
        match outcome {
            HoldOutcome::Approved { by, .. } => {
                record.verdict = "approved".into();
                record.decided_by = Some(by);
                Held::Forward
            }
            HoldOutcome::Abandoned { .. } if left => {
                record.verdict = "abandoned".into();
                record.reason = Some(outcome.message());
                Held::Left("the client left while a statement was held")
            }
            HoldOutcome::Abandoned { request } if self.server_gone.is_cancelled() => {
                record.verdict = "abandoned".into();
                record.reason = Some(format!(
                    "request {request} abandoned: the target closed the connection while it \
                     was held"
                ));
                Held::Left("the target closed the connection while a statement was held")
            }
            HoldOutcome::Abandoned { .. } => {
                record.verdict = "abandoned".into();
                record.reason = Some("cancelled by the client".into());
                Held::Refuse("57014", "canceling statement due to user request".into())
            }
            other => {
                record.verdict = if matches!(other, HoldOutcome::TimedOut { .. }) {
                    "timed_out".into()
                } else {
                    "denied".into()
                };
                let message = other.message();
                record.reason = Some(message.clone());
                Held::Refuse("42501", format!("Portcullis: {message}"))
            }
        }
    }
}

/// Reads the client while a statement is held: `Terminate`, a closed connection or a
/// broken stream end the wait (`left`); other messages (pipelined) are kept for later,
/// up to [`MAX_STASH`] bytes, after which reading pauses.
async fn watch_client(
    reader: &mut MessageReader<ClientRead>,
    stash: &mut VecDeque<Message>,
    left: &mut bool,
) {
    let mut kept: usize = stash.iter().map(|m| m.frame.len()).sum();
    loop {
        if kept >= MAX_STASH {
            return std::future::pending().await;
        }
        match reader.next().await {
            Ok(Some(m)) if m.tag() == b'X' => break,
            Ok(Some(m)) => {
                kept += m.frame.len();
                stash.push_back(m);
            }
            Ok(None) | Err(_) => break,
        }
    }
    *left = true;
}

enum Statement {
    Query(String),
    Execute(String),
    Function(i32),
}

enum Held {
    Forward,
    Refuse(&'static str, String),
    /// The client or the target left: the session ends, for this reason.
    Left(&'static str),
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
        }
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
            record.rows = Some(serde_json::json!({
                "columns": self.columns, "rows": self.rows, "truncated": self.truncated,
            }));
        }
        Some(record)
    }
}

/// Whether a statement may change how the server reads backslashes in strings.
fn risky(text: &str, classes: SqlClasses) -> bool {
    static WORDS: std::sync::LazyLock<Option<aho_corasick::AhoCorasick>> =
        std::sync::LazyLock::new(|| {
            aho_corasick::AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .build([
                    "standard_conforming_strings",
                    "reset",
                    "discard",
                    "rollback",
                    "abort",
                ])
                .ok()
        });
    classes.contains(SqlClass::Dynamic)
        || classes.contains(SqlClass::Admin)
        || classes.contains(SqlClass::Unparsed)
        || WORDS.as_ref().is_none_or(|w| w.is_match(text))
}

/// A random token naming a stand-in statement.
fn nonce() -> String {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A value as a record shows it: text (cut to [`MAX_RECORDED_VALUE`]) or `\x` hex.
fn shown_value(v: &[u8], binary: bool) -> String {
    let cut = v.get(..MAX_RECORDED_VALUE).unwrap_or(v);
    let mut s = if binary {
        let mut s = String::from("\\x");
        for b in cut {
            s.push_str(&format!("{b:02x}"));
        }
        s
    } else {
        String::from_utf8_lossy(cut).into_owned()
    };
    if cut.len() < v.len() {
        s.push('…');
    }
    s
}

struct BackendLoop<'a> {
    reader: MessageReader<ReadHalf<BackendStream>>,
    client: ClientWrite,
    out: BytesMut,
    shared: &'a Mutex<Shared>,
    from_frontend: mpsc::Receiver<ToClient>,
    /// Column names and formats of the current result set.
    columns: Vec<(String, bool)>,
    record_rows: usize,
    session: &'a Session<'a>,
    /// Masks results and messages; `None` when no rule masks this session.
    masker: Option<Arc<Masker>>,
    catalog: masking::Catalog,
    /// The current result set's columns as masking sees them.
    masked_columns: Vec<masking::Column>,
}

impl BackendLoop<'_> {
    async fn run(&mut self) -> (Outcome, Option<String>) {
        loop {
            tokio::select! {
                biased;
                m = self.from_frontend.recv() => match m {
                    Some(ToClient::Notice(bytes)) => {
                        if self.write(&bytes).await.is_err() {
                            return (Outcome::Closed, None);
                        }
                    }
                    Some(ToClient::Fatal(bytes)) => {
                        let _ = self.write(&bytes).await;
                        return (Outcome::Error, None);
                    }
                    None => return (Outcome::Closed, None),
                },
                m = self.reader.next() => {
                    let m = match m {
                        Ok(Some(m)) => m,
                        Ok(None) => {
                            let _ = self.flush().await;
                            return (Outcome::Closed, Some("the target closed the connection".into()));
                        }
                        Err(error) => {
                            let reason = format!("bad message from the target: {error}");
                            let e = wire::error_response(Severity::FATAL, "08P01", &format!("Portcullis: {reason}"), None, None);
                            let _ = self.write(&e).await;
                            return (Outcome::Error, Some(reason));
                        }
                    };
                    let m = match self.mask_ahead(m).await {
                        Ok(m) => m,
                        Err(reason) => {
                            let e = wire::error_response(Severity::FATAL, "XX000", &format!("Portcullis: {reason}"), None, None);
                            let _ = self.write(&e).await;
                            return (Outcome::Error, Some(reason));
                        }
                    };
                    let done = self.handle(m);
                    for record in done {
                        self.session.recorder.record(record).await;
                    }
                    if (!self.reader.has_buffered_message() || self.out.len() >= FLUSH_AT)
                        && self.flush().await.is_err()
                    {
                        return (Outcome::Closed, Some("the client connection was lost".into()));
                    }
                }
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.flush().await?;
        self.client.write_all(bytes).await?;
        self.client.flush().await
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.client.write_all(&self.out).await?;
            self.out.clear();
        }
        self.client.flush().await
    }

    /// Masking that needs more than the message: a `RowDescription`'s column rules
    /// (catalog lookups), and refusing a binary COPY OUT, which cannot be masked.
    async fn mask_ahead(&mut self, m: Message) -> Result<Message, String> {
        let Some(masker) = self.masker.clone() else {
            return Ok(m);
        };
        match m.tag() {
            b'T' => {
                let (columns, rewritten) =
                    masking::row_description(&masker, &mut self.catalog, self.session, m.body())
                        .await?;
                self.masked_columns = columns;
                Ok(rewritten.map_or(m, |frame| Message { frame }))
            }
            b'H' if m.body().first() == Some(&1) => {
                Err("binary COPY is refused on a session with masking; use text or CSV COPY".into())
            }
            // COPY rows carry no column names: a masked column could not be told apart.
            b'H' if masker.has_column_rules() => {
                Err("COPY TO is refused on a session whose policy masks columns; use SELECT".into())
            }
            _ => Ok(m),
        }
    }

    /// The masked form of a message whose values reach the client, if it changed.
    fn masked(&self, m: &Message) -> Option<Bytes> {
        let masker = self.masker.as_deref()?;
        match m.tag() {
            b'D' => masking::data_row(masker, &self.masked_columns, m.body()),
            b'E' | b'N' => masking::notice(masker, m.tag(), m.body()),
            b'A' => masking::notification(masker, m.body()),
            b'd' => masking::copy_data(masker, m.body()),
            _ => None,
        }
    }

    /// Forwards one server message (rewritten if it answers a stand-in) and returns
    /// the records it completed.
    fn handle(&mut self, m: Message) -> Vec<StatementRecord> {
        let mut done = Vec::new();
        let m = match self.masked(&m) {
            Some(frame) if m.tag() != b'E' => Message { frame },
            _ => m,
        };
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let mut frame = m.frame.clone();
        match m.tag() {
            b'T' => {
                self.columns = row_description(m.body());
                if let Some(p) = shared.pending.front_mut() {
                    if p.columns.is_empty() {
                        p.columns = self.columns.iter().map(|(n, _)| n.clone()).collect();
                    }
                }
            }
            b'D' => {
                if let Some(p) = shared.pending.front_mut() {
                    if p.rows.len() < self.record_rows {
                        p.rows.push(data_row(m.body(), &self.columns));
                    } else {
                        p.truncated = true;
                    }
                }
            }
            b'C' | b'I' | b's' => {
                let tag = if m.tag() == b'C' {
                    m.fields().cstr().ok().map(str::to_owned)
                } else {
                    None
                };
                if let Some(p) = shared.pending.front_mut() {
                    if let (Some(r), Some(tag)) = (p.record.as_mut(), tag) {
                        let rows = tag.rsplit(' ').next().and_then(|n| n.parse::<i64>().ok());
                        if let Some(rows) = rows {
                            r.rows_affected = Some(r.rows_affected.unwrap_or(0) + rows);
                        }
                        r.command_tag = Some(match r.command_tag.take() {
                            Some(before) => format!("{before}; {tag}"),
                            None => tag,
                        });
                    }
                }
                if shared
                    .pending
                    .front()
                    .is_some_and(|p| p.kind == PendingKind::Execute)
                {
                    done.extend(pop(&mut shared));
                }
            }
            b'E' => {
                if let Some(p) = shared.pending.front_mut() {
                    let fields = wire::notice_fields(m.body());
                    let said = |code: u8| fields.iter().find(|(c, _)| *c == code).map(|(_, v)| *v);
                    let message = said(b'M').unwrap_or_default();
                    match &p.denial {
                        Some((nonce, error)) if message.contains(nonce.as_str()) => {
                            frame = error.clone();
                        }
                        _ => {
                            let shown = self
                                .masker
                                .as_deref()
                                .map_or(Cow::Borrowed(message), |mk| mk.mask_str(message));
                            if let Some(r) = p.record.as_mut() {
                                r.error = Some(format!("{}: {shown}", said(b'C').unwrap_or("?")));
                            }
                            if let Some(masked) = self.masked(&m) {
                                frame = masked;
                            }
                        }
                    }
                }
                if shared
                    .pending
                    .front()
                    .is_some_and(|p| p.kind == PendingKind::Execute)
                {
                    done.extend(pop(&mut shared));
                    // The server skips the rest of the batch, up to its Sync.
                    while shared
                        .pending
                        .front()
                        .is_some_and(|p| p.kind == PendingKind::Execute)
                    {
                        if let Some(mut p) = shared.pending.pop_front() {
                            if p.risky {
                                shared.risky_in_flight = shared.risky_in_flight.saturating_sub(1);
                            }
                            if let Some(r) = p.record.as_mut() {
                                r.error.get_or_insert_with(|| {
                                    "not run: an earlier message of its batch failed".into()
                                });
                            }
                            done.extend(p.finish());
                        }
                    }
                }
            }
            b'Z' => {
                if let Some(p) = shared.pending.front() {
                    if matches!(p.kind, PendingKind::Query | PendingKind::Sync) {
                        done.extend(pop(&mut shared));
                    }
                }
            }
            b'S' => {
                let mut f = m.fields();
                if let (Ok("standard_conforming_strings"), Ok(value)) = (f.cstr(), f.cstr()) {
                    shared.standard_conforming_strings = value == "on";
                }
            }
            _ => {}
        }
        drop(shared);
        self.out.extend_from_slice(&frame);
        done
    }
}

/// Pops the front statement, returning its finished record.
fn pop(shared: &mut Shared) -> Option<StatementRecord> {
    let p = shared.pending.pop_front()?;
    if p.risky {
        shared.risky_in_flight = shared.risky_in_flight.saturating_sub(1);
    }
    p.finish()
}

/// Column names and whether each is in binary format, from a `RowDescription`.
fn row_description(body: &[u8]) -> Vec<(String, bool)> {
    let mut f = wire::Fields(body);
    let Ok(count) = f.count16() else {
        return Vec::new();
    };
    let mut columns = Vec::with_capacity(count);
    for _ in 0..count {
        let Ok(name) = f.cstr() else { break };
        // table oid (4), attnum (2), type oid (4), size (2), modifier (4), format (2)
        let Ok(rest) = f.take(16) else { break };
        let binary = rest.get(14..16) == Some(&[0, 1]);
        columns.push((name.to_owned(), binary));
    }
    columns
}

/// A `DataRow` as a JSON array of shown values.
fn data_row(body: &[u8], columns: &[(String, bool)]) -> serde_json::Value {
    let mut f = wire::Fields(body);
    let Ok(count) = f.count16() else {
        return serde_json::Value::Null;
    };
    let mut row = Vec::with_capacity(count);
    for i in 0..count {
        let binary = columns.get(i).is_some_and(|(_, b)| *b);
        match f.value() {
            Ok(Some(v)) => row.push(serde_json::Value::String(shown_value(v, binary))),
            Ok(None) => row.push(serde_json::Value::Null),
            Err(_) => break,
        }
    }
    serde_json::Value::Array(row)
}
