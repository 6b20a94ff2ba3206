//! The frontend loop: reads the client's messages, decides each statement with the
//! gate, and writes to the server what may run (or a stand-in that can only fail).

use super::super::{
    Postgres,
    classify::{Classified, CopyOut, Refs},
    encoding::ClientEncoding,
    masking::{self, Exposure},
    tls::BackendStream,
    wire::{self, Builder, Message, MessageReader, Severity, WireError},
};
use super::{
    ClientRead, FLUSH_AT, MAX_NAMED, MAX_STASH, Pending, PendingKind, Shared, ToClient,
    refusal::Refusal, shown_value,
};
use crate::mask::Masker;
use crate::{
    gate::{Action, ActionOutcome, Ask, Gone, Waiting},
    policy::{SqlClass, SqlClasses},
    proto::Session,
    record::{Outcome, StatementRecord, now_ms},
};
use bytes::BytesMut;
use std::{
    collections::{HashMap, VecDeque},
    fmt::Write as _,
    sync::{Arc, Mutex, PoisonError},
};
use tokio::{
    io::{AsyncWriteExt as _, WriteHalf},
    sync::mpsc,
};
use tokio_util::sync::CancellationToken;

/// A named or unnamed prepared statement, as parsed.
pub(super) struct Prepared {
    text: Arc<str>,
    classified: Arc<Classified>,
}

/// A bound portal.
pub(super) struct Portal {
    statement: Arc<Prepared>,
    params: Option<serde_json::Value>,
}

pub(super) struct Frontend<'a> {
    pub(super) pg: &'a Postgres,
    pub(super) session: &'a Session,
    pub(super) reader: MessageReader<ClientRead>,
    pub(super) server: WriteHalf<BackendStream>,
    pub(super) out: BytesMut,
    pub(super) prepared: HashMap<String, Arc<Prepared>>,
    pub(super) portals: HashMap<String, Portal>,
    pub(super) shared: &'a Mutex<Shared>,
    pub(super) to_client: mpsc::Sender<ToClient>,
    pub(super) cancel: &'a super::super::cancel::CancelEntry,
    /// Messages read while a statement was held, to handle before reading more.
    pub(super) stash: VecDeque<Message>,
    /// Masks what is recorded and shown to approvers.
    pub(super) masker: Option<Arc<Masker>>,
    /// Column rules' catalog lookups, shared with the backend loop.
    pub(super) catalog: &'a tokio::sync::Mutex<masking::Catalog<'a>>,
    /// Cancelled when the target's connection has ended: a held statement can no
    /// longer run, so its request ends as abandoned.
    pub(super) server_gone: &'a CancellationToken,
    /// The session's stated reason (`SET portcullis.reason`), for every later hold.
    pub(super) reason: Option<String>,
}

/// How the frontend continues after a message.
enum Next {
    Continue,
    End(Outcome, Option<String>),
}

impl Frontend<'_> {
    pub(super) async fn run(&mut self, ask: &mut Ask) -> (Outcome, Option<String>) {
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
            if ((self.stash.is_empty() && !self.reader.has_buffered_message())
                || self.out.len() >= FLUSH_AT)
                && let Err(error) = self.flush().await
            {
                return (Outcome::Closed, Some(format!("lost the target: {error}")));
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
            self.reading().0.encoding(),
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
                let text = m.fields().cstr_bytes()?;
                return self.statement(&m, ask, Statement::Query(text)).await;
            }
            b'P' => self.parse(&m).await?,
            b'B' => self.bind(&m)?,
            b'E' => {
                let portal = m.fields().cstr()?;
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
            b'D' if self.column_rules() => {
                self.push_pending(Pending::new(
                    PendingKind::Describe { ours: false },
                    None,
                    false,
                ));
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
        let text = f.cstr_bytes()?;
        if !name.is_empty() && !self.prepared.contains_key(name) && self.prepared.len() >= MAX_NAMED
        {
            return Err(WireError::Malformed(format!(
                "more than {MAX_NAMED} prepared statements open"
            )));
        }
        let (text, classified) = self.classify(text).await;
        let prepared = Arc::new(Prepared { text, classified });
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
        let encoding = self.reading().0.encoding();
        for i in 0..count {
            let binary = match formats.as_slice() {
                [] => false,
                [one] => *one == 1,
                many => many.get(i).is_some_and(|x| *x == 1),
            };
            params.push(match f.value()? {
                None => serde_json::Value::Null,
                Some(v) => serde_json::Value::String(shown_value(v, binary, encoding)),
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

    /// The server's reading of text as last reported, and whether a statement that
    /// may change it is in flight.
    fn reading(&self) -> (wire::TextReading, bool) {
        let shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        (shared.reading, shared.risky_in_flight > 0)
    }

    /// Reads `bytes` and classifies the text the way the server reads it now: in the
    /// session's `client_encoding` (non-ASCII text that cannot be read so is
    /// unparsed, see [`ClientEncoding::read`]), with its
    /// `standard_conforming_strings`. While a statement that may change either is in
    /// flight, a text with a backslash is classified both ways, keeping the union,
    /// and non-ASCII text is unparsed.
    async fn classify(&self, bytes: &[u8]) -> (Arc<str>, Arc<Classified>) {
        let (reading, unsure) = self.reading();
        let encoding = reading.encoding();
        let read = if unsure && !bytes.is_ascii() {
            Err(
                "the text is not ASCII and a statement that may change the session's \
                 client_encoding is still running"
                    .to_owned(),
            )
        } else {
            encoding.read(bytes)
        };
        let (text, unreadable_because) = match read {
            Ok(text) => (Arc::<str>::from(text), None),
            Err(reason) => (Arc::<str>::from(encoding.lossy(bytes)), Some(reason)),
        };
        let scs = reading.standard_conforming_strings;
        let classified = self.pg.classifier.classify(&text, scs).await;
        if let Some(reason) = unreadable_because {
            return (text, Arc::new(unreadable(&classified, reason)));
        }
        if !(unsure && text.contains('\\')) {
            return (text, classified);
        }
        let other = self.pg.classifier.classify(&text, !scs).await;
        let mut tables = classified.tables.clone();
        tables.extend(other.tables.iter().cloned());
        tables.sort();
        tables.dedup();
        let both = Arc::new(Classified {
            classes: classified.classes.union(other.classes),
            tables,
            functions: classified.functions.clone(),
            error: classified.error.clone().or_else(|| other.error.clone()),
            refs: classified.refs.union(&other.refs),
            // Read two ways, a COPY's columns are known only if both ways agree.
            copy_out: if classified.copy_out == other.copy_out {
                classified.copy_out.clone()
            } else {
                vec![CopyOut::Other; classified.copy_out.len().max(other.copy_out.len())]
            },
        });
        (text, both)
    }

    /// A statement: decide it, then forward it, hold it, or send the stand-in.
    async fn statement(
        &mut self,
        m: &Message,
        ask: &mut Ask,
        statement: Statement<'_>,
    ) -> Result<Next, WireError> {
        let (text, classified, params, kind) = match &statement {
            Statement::Query(bytes) => {
                let (text, classified) = self.classify(bytes).await;
                (text, classified, None, PendingKind::Query)
            }
            Statement::Execute(portal) => match self.portals.get(*portal) {
                Some(p) => (
                    Arc::clone(&p.statement.text),
                    Arc::clone(&p.statement.classified),
                    p.params.clone(),
                    PendingKind::Execute,
                ),
                // A portal we did not see bound (a cursor declared in SQL, whose
                // DECLARE was decided) or one that does not exist (the server says so).
                None => {
                    if self.column_rules() {
                        // Its rows come from a query this statement does not show.
                        let mut pending = Pending::new(PendingKind::Execute, None, false);
                        pending.exposure = Exposure::Computed;
                        self.describe_before(portal);
                        self.push_pending(pending);
                    }
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
                    copy_out: Vec::new(),
                    refs: Refs {
                        unknown: true,
                        ..Refs::default()
                    },
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
        ask.justification = match super::justify::stated(&shown) {
            super::justify::Stated::ForStatement(reason) => Some(reason),
            super::justify::Stated::ForSession(reason) => {
                self.reason.clone_from(&reason);
                reason
            }
            super::justify::Stated::Nothing => self.reason.clone(),
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
        let outcome = {
            let mut waiting = HeldStatement {
                to_client: &self.to_client,
                encoding: self.reading().0.encoding(),
                reader: &mut self.reader,
                stash: &mut self.stash,
                cancel: self.cancel,
                server_gone: self.server_gone,
            };
            let session = &self.session;
            session
                .gate
                .decide(ask, Some(&session.id), &mut waiting)
                .await
        };
        // Also after a review whose request could not be stored.
        self.cancel.set_holding(false);
        let denial = match self.answer(&outcome, &classified, &mut record) {
            Answer::Run => None,
            Answer::Refuse(refusal) => Some(refusal),
            Answer::Left(why) => {
                // Ending anyway: a stalled recorder has logged it.
                let _ = self.session.recorder.record(record).await;
                return Ok(Next::End(Outcome::Closed, Some(why.into())));
            }
        };
        let risky = risky(&text, classified.classes);
        let mut pending = Pending::new(kind, Some(record), risky);
        pending.copy_out = classified.copy_out.iter().cloned().collect();
        pending.exposure = self.exposure(&classified.refs).await;
        // A notification reaches every listener as it is: one computed from a masked
        // column would carry the value out.
        let notifies = classified
            .functions
            .iter()
            .any(|f| matches!(f.as_str(), "pg_notify" | "pg_catalog.pg_notify"));
        let denial = match denial {
            None if pending.hides_computed() && notifies => {
                let reason = "pg_notify in a statement that uses a masked column could send \
                              the value unmasked";
                if let Some(r) = pending.record.as_mut() {
                    r.verdict = "denied".into();
                    r.reason = Some(reason.into());
                }
                Some(Refusal::new(
                    "42501",
                    format!("Portcullis denied this statement: {reason}"),
                ))
            }
            other => other,
        };
        match denial {
            None => {
                if let (Statement::Execute(portal), true) = (&statement, self.column_rules()) {
                    self.describe_before(portal);
                }
                self.out.extend_from_slice(&m.frame);
            }
            Some(refusal) => {
                let nonce = nonce();
                let stand_in = match kind {
                    PendingKind::Execute => Builder::new(b'E')
                        .cstr(&format!("portcullis_denied_{nonce}"))
                        .i32(0)
                        .finish(),
                    PendingKind::Query | PendingKind::Sync | PendingKind::Describe { .. } => {
                        Builder::new(b'Q')
                            .cstr(&format!("EXECUTE portcullis_denied_{nonce}"))
                            .finish()
                    }
                };
                self.out.extend_from_slice(&stand_in);
                if let Some(r) = pending.record.as_mut() {
                    r.error = Some(refusal.summary());
                }
                let encoding = self.reading().0.encoding();
                let error = refusal.frame(encoding);
                pending.denial = Some((nonce, error));
            }
        }
        self.push_pending(pending);
        Ok(Next::Continue)
    }

    /// What a statement that names `refs` may expose of masked columns.
    async fn exposure(&self, refs: &Refs) -> Exposure {
        let Some(m) = &self.masker else {
            return Exposure::Values;
        };
        let (relations, columns) = (&refs.relations, &refs.columns);
        if m.may_derive(relations, columns, refs.whole_rows, refs.unknown) {
            return Exposure::Computed;
        }
        // A rule on one of its relations, whatever columns it names.
        let mut exposure = if m.may_derive(relations, &[], true, false) {
            Exposure::Rows
        } else {
            Exposure::Values
        };
        if self.column_rules() && !relations.is_empty() {
            let shown = self.views_reveal(refs).await;
            if shown.used {
                exposure = Exposure::Computed;
            } else if shown.any {
                exposure = Exposure::Rows;
            }
        }
        exposure
    }

    /// Whether a view or child table the statement names shows a masked column, and
    /// whether a value the statement computes could carry it (`upper(v.secret)`). A
    /// failed lookup counts as yes.
    async fn views_reveal(&self, refs: &Refs) -> masking::Shown {
        let Some(masker) = &self.masker else {
            return masking::Shown::default();
        };
        let mut catalog = self.catalog.lock().await;
        match catalog.reveal_any(self.session, masker, refs).await {
            Ok(shown) => shown,
            Err(error) => {
                tracing::warn!(
                    %error,
                    "Cannot tell whether the statement's views show masked columns; \
                     its computed columns are hidden"
                );
                masking::Shown {
                    any: true,
                    used: true,
                }
            }
        }
    }

    /// Whether column rules apply: then result rows are masked by the columns of
    /// their own `RowDescription`, which must be known for every `Execute`.
    fn column_rules(&self) -> bool {
        self.masker.as_ref().is_some_and(|m| m.has_column_rules())
    }

    /// Asks the server to describe `portal` just before its `Execute`, so the rows are
    /// masked by their own columns even when the client never described the portal
    /// (it need not) or described others since. The answer is not forwarded.
    fn describe_before(&mut self, portal: &str) {
        self.push_pending(Pending::new(
            PendingKind::Describe { ours: true },
            None,
            false,
        ));
        self.out
            .extend_from_slice(&Builder::new(b'D').u8(b'P').cstr(portal).finish());
    }

    fn push_pending(&self, pending: Pending) {
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.risky {
            shared.risky_in_flight += 1;
        }
        shared.pending.push_back(pending);
    }

    /// How the gate's outcome ends the statement, with the record stamped: run it,
    /// answer with an error instead, or end the session (someone left while held).
    fn answer(
        &self,
        outcome: &ActionOutcome,
        classified: &Classified,
        record: &mut StatementRecord,
    ) -> Answer {
        record.verdict = outcome.verdict().into();
        record.decided_by = outcome.decided_by();
        record.request_id = outcome.request().map(str::to_owned);
        match outcome {
            ActionOutcome::Allowed { .. } => Answer::Run,
            ActionOutcome::Denied {
                request: None,
                reason,
                ..
            } => {
                record.reason = Some(reason.clone());
                Answer::Refuse(Refusal::denied(classified, reason))
            }
            ActionOutcome::Failed { .. } => {
                let message =
                    "Portcullis denied this statement: its approval request could not be recorded";
                record.decided_by = None;
                record.reason = Some(message.into());
                Answer::Refuse(Refusal::new("42501", message.into()))
            }
            ActionOutcome::Abandoned { gone, .. } => {
                let target_left =
                    *gone == Some(Gone::TargetLeft) || self.server_gone.is_cancelled();
                record.reason = Some(outcome.message());
                if *gone == Some(Gone::ClientLeft) {
                    Answer::Left("the client left while a statement was held")
                } else if target_left {
                    Answer::Left("the target closed the connection while a statement was held")
                } else {
                    record.reason = Some("cancelled by the client".into());
                    Answer::Refuse(Refusal::new(
                        "57014",
                        "canceling statement due to user request".into(),
                    ))
                }
            }
            ActionOutcome::Denied { .. }
            | ActionOutcome::Expired { .. }
            | ActionOutcome::ShutDown { .. } => {
                let message = outcome.message();
                record.reason = Some(message.clone());
                Answer::Refuse(Refusal::new("42501", format!("Portcullis: {message}")))
            }
        }
    }
}

/// A statement's client while the statement is held: told by a notice, watched for
/// leaving (`Terminate`, a closed or broken stream), cancelling, or the target going.
struct HeldStatement<'a> {
    to_client: &'a mpsc::Sender<ToClient>,
    encoding: ClientEncoding,
    reader: &'a mut MessageReader<ClientRead>,
    stash: &'a mut VecDeque<Message>,
    cancel: &'a super::super::cancel::CancelEntry,
    server_gone: &'a CancellationToken,
}

impl Waiting for HeldStatement<'_> {
    fn reviewing(&mut self) {
        // Before anyone can see the request: a cancel sent as soon as the client or
        // the API shows it ends the hold, even if it beats the wait.
        self.cancel.set_holding(true);
    }

    async fn held(&mut self, request: &str, hint: &str) {
        let notice = wire::error_response(
            self.encoding,
            Severity::NOTICE,
            "01000",
            &format!("Portcullis: this statement is held for approval (request {request})"),
            Some(&format!("It runs when approved; approvers can run: {hint}")),
            Some("Cancel the query (Ctrl-C) to withdraw it."),
        );
        let _ = self.to_client.send(ToClient::Notice(notice)).await;
    }

    async fn gone(&mut self) -> Gone {
        tokio::select! {
            () = self.cancel.cancelled() => Gone::Cancelled,
            () = watch_client(self.reader, self.stash) => Gone::ClientLeft,
            () = self.server_gone.cancelled() => Gone::TargetLeft,
        }
    }
}

/// Reads the client while a statement is held: `Terminate`, a closed connection or a
/// broken stream end the wait (`left`); other messages (pipelined) are kept for later,
/// up to [`MAX_STASH`] bytes, after which reading pauses.
async fn watch_client(reader: &mut MessageReader<ClientRead>, stash: &mut VecDeque<Message>) {
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
}

enum Statement<'m> {
    /// A simple query's text, in the client's encoding.
    Query(&'m [u8]),
    /// The name of a portal to run.
    Execute(&'m str),
    Function(i32),
}

/// What the gate's outcome makes of a statement.
enum Answer {
    /// It runs.
    Run,
    /// The client gets this error instead.
    Refuse(Refusal),
    /// The client or the target left: the session ends, for this reason.
    Left(&'static str),
}

/// `classified`, made unparsed: the proxy cannot read its text as the server does,
/// for `reason`.
fn unreadable(classified: &Classified, reason: String) -> Classified {
    Classified {
        classes: classified.classes.with(SqlClass::Unparsed),
        error: Some(reason.into()),
        refs: Refs {
            unknown: true,
            ..classified.refs.clone()
        },
        ..classified.clone()
    }
}

/// Whether a statement may change how the server reads text: backslashes in strings
/// (`standard_conforming_strings`) or bytes (`client_encoding`, `SET NAMES`).
fn risky(text: &str, classes: SqlClasses) -> bool {
    static WORDS: std::sync::LazyLock<Option<aho_corasick::AhoCorasick>> =
        std::sync::LazyLock::new(|| {
            aho_corasick::AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .build([
                    "standard_conforming_strings",
                    "client_encoding",
                    "names",
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
    bytes.iter().fold(String::with_capacity(16), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    })
}
