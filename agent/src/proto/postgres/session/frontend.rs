//! The frontend loop: reads the client's messages, keeps the prepared statements and
//! portals they name, and writes to the server what may run; each statement is
//! decided in [`super::statement`].

use super::super::{
    Postgres,
    classify::{Classified, CopyOut, Refs},
    masking::{self, Exposure},
    tls::BackendStream,
    wire::{self, Builder, Message, MessageReader, Severity, WireError},
};
use super::{
    ClientRead, FLUSH_AT, MAX_NAMED, Pending, PendingKind, Shared, ToClient, shown_value,
    statement::Statement,
};
use crate::mask::Masker;
use crate::{gate::Ask, policy::SqlClass, proto::Session, record::Outcome};
use bytes::BytesMut;
use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, PoisonError},
};
use tokio::{
    io::{AsyncWriteExt as _, WriteHalf},
    sync::mpsc,
};
use tokio_util::sync::CancellationToken;

/// A named or unnamed prepared statement, as parsed.
pub(super) struct Prepared {
    pub(super) text: Arc<str>,
    pub(super) classified: Arc<Classified>,
}

/// A bound portal.
pub(super) struct Portal {
    pub(super) statement: Arc<Prepared>,
    pub(super) params: Option<serde_json::Value>,
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
pub(super) enum Next {
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
                return Ok(self.statement(&m.frame, ask, Statement::Query(text)).await);
            }
            b'P' => self.parse(&m).await?,
            b'B' => self.bind(&m)?,
            b'E' => {
                let portal = m.fields().cstr()?;
                return Ok(self
                    .statement(&m.frame, ask, Statement::Execute(portal))
                    .await);
            }
            b'F' => {
                let oid = m.fields().i32()?;
                return Ok(self
                    .statement(&m.frame, ask, Statement::Function(oid))
                    .await);
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
    pub(super) fn reading(&self) -> (wire::TextReading, bool) {
        let shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        (shared.reading, shared.risky_in_flight > 0)
    }

    /// Reads `bytes` and classifies the text the way the server reads it now: in the
    /// session's `client_encoding` (non-ASCII text that cannot be read so is
    /// unparsed, see [`ClientEncoding::read`]), with its
    /// `standard_conforming_strings`. While a statement that may change either is in
    /// flight, a text with a backslash is classified both ways, keeping the union,
    /// and non-ASCII text is unparsed.
    pub(super) async fn classify(&self, bytes: &[u8]) -> (Arc<str>, Arc<Classified>) {
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

    /// What a statement that names `refs` may expose of masked columns.
    pub(super) async fn exposure(&self, refs: &Refs) -> Exposure {
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
    pub(super) fn column_rules(&self) -> bool {
        self.masker.as_ref().is_some_and(|m| m.has_column_rules())
    }

    /// Asks the server to describe `portal` just before its `Execute`, so the rows are
    /// masked by their own columns even when the client never described the portal
    /// (it need not) or described others since. The answer is not forwarded.
    pub(super) fn describe_before(&mut self, portal: &str) {
        self.push_pending(Pending::new(
            PendingKind::Describe { ours: true },
            None,
            false,
        ));
        self.out
            .extend_from_slice(&Builder::new(b'D').u8(b'P').cstr(portal).finish());
    }

    pub(super) fn push_pending(&self, pending: Pending) {
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.risky {
            shared.risky_in_flight += 1;
        }
        shared.pending.push_back(pending);
    }
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
