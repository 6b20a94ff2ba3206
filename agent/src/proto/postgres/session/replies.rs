//! The backend loop: reads the server's replies, completes the record of the statement
//! each answers, masks what the client may not see, and writes the rest to the client.

use super::super::encoding::ClientEncoding;
use super::super::{
    classify::CopyOut,
    masking::{self, Exposure},
    tls::BackendStream,
    wire::{self, Message, MessageReader, Severity},
};
use super::queue::{completed, front_is_execute, pop, skip_batch, skip_describes};
use super::{ClientWrite, FLUSH_AT, PendingKind, Shared, ToClient, shown_value};
use crate::mask::Masker;
use crate::{
    proto::Session,
    record::{Outcome, StatementRecord},
};
use bytes::{Bytes, BytesMut};
use std::{
    borrow::Cow,
    sync::{Arc, Mutex, PoisonError},
};
use tokio::{
    io::{AsyncWriteExt as _, ReadHalf},
    sync::mpsc,
};

pub(super) struct BackendLoop<'a> {
    pub(super) reader: MessageReader<ReadHalf<BackendStream>>,
    pub(super) client: ClientWrite,
    pub(super) out: BytesMut,
    pub(super) shared: &'a Mutex<Shared>,
    pub(super) from_frontend: mpsc::Receiver<ToClient>,
    /// Column names and formats of the current result set.
    pub(super) columns: Vec<(String, bool)>,
    pub(super) record_rows: usize,
    pub(super) session: &'a Session,
    /// Masks results and messages; `None` when no rule masks this session.
    pub(super) masker: Option<Arc<Masker>>,
    /// Shared with the frontend, which asks whether a statement's views reveal.
    pub(super) catalog: &'a tokio::sync::Mutex<masking::Catalog<'a>>,
    /// The current result set's columns as masking sees them.
    pub(super) masked_columns: Vec<masking::Column>,
    /// The columns of the COPY OUT under way, when column rules apply to it.
    pub(super) copy: Option<masking::CopyColumns>,
    /// The COPY under way has yet to send its header row.
    pub(super) copy_header: bool,
    /// No statement has completed since the server was last idle: one that starts now
    /// is the first of its transaction.
    pub(super) idle: bool,
    /// Records were queued since the recorder last confirmed this session's events
    /// written: the results in `out` wait for it (see [`BackendLoop::flush`]).
    pub(super) unsynced: bool,
}

/// Why a session ends when its events could not be written before a result left.
const NOT_RECORDED: &str = "the statement's result could not be recorded (the store \
     refused it); the session is ended so that nothing runs unrecorded";

impl BackendLoop<'_> {
    /// The client's encoding, as the server last reported it.
    fn encoding(&self) -> ClientEncoding {
        self.shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .reading
            .encoding()
    }

    pub(super) async fn run(&mut self) -> (Outcome, Option<String>) {
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
                            let e = wire::error_response(self.encoding(), Severity::FATAL, "08P01", &format!("Portcullis: {reason}"), None, None);
                            let _ = self.write(&e).await;
                            return (Outcome::Error, Some(reason));
                        }
                    };
                    let m = match self.mask_ahead(m).await {
                        Ok(m) => m,
                        Err(reason) => {
                            let e = wire::error_response(self.encoding(), Severity::FATAL, "XX000", &format!("Portcullis: {reason}"), None, None);
                            let _ = self.write(&e).await;
                            return (Outcome::Error, Some(reason));
                        }
                    };
                    let done = self.handle(m);
                    for record in done {
                        self.unsynced = true;
                        if let Err(stalled) = self.session.recorder.record(record).await {
                            let reason = stalled.to_string();
                            let e = wire::error_response(self.encoding(), Severity::FATAL, "58000", &format!("Portcullis: {reason}"), None, None);
                            let _ = self.write(&e).await;
                            return (Outcome::Error, Some(reason));
                        }
                    }
                    if (!self.reader.has_buffered_message() || self.out.len() >= FLUSH_AT)
                        && let Err(error) = self.flush().await
                    {
                        if error.kind() == std::io::ErrorKind::Other && error.to_string() == NOT_RECORDED {
                            let e = wire::error_response(self.encoding(), Severity::FATAL, "58000", &format!("Portcullis: {NOT_RECORDED}"), None, None);
                            let _ = self.client.write_all(&e).await;
                            let _ = self.client.flush().await;
                            return (Outcome::Error, Some(NOT_RECORDED.into()));
                        }
                        return (Outcome::Closed, Some("the client connection was lost".into()));
                    }
                }
            }
        }
    }

    pub(super) async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.flush().await?;
        self.client.write_all(bytes).await?;
        self.client.flush().await
    }

    /// Sends what `out` holds. Results of recorded statements leave only once the
    /// recorder has written their records (one shared commit for every session
    /// waiting): a crash never loses the record of a result a client received. When
    /// the records are lost the results are dropped and the error says so.
    async fn flush(&mut self) -> std::io::Result<()> {
        if self.unsynced && !self.out.is_empty() {
            self.unsynced = false;
            if !self.session.recorder.sync(&self.session.id).await {
                self.out.clear();
                return Err(std::io::Error::other(NOT_RECORDED));
            }
        }
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
                let encoding = self.encoding();
                let (columns, rewritten) = masking::row_description(
                    &masker,
                    &mut *self.catalog.lock().await,
                    self.session,
                    m.body(),
                    encoding,
                )
                .await?;
                self.masked_columns = columns;
                Ok(rewritten.map_or(m, |frame| Message { frame }))
            }
            b'H' if m.body().first() == Some(&1) => {
                Err("binary COPY is refused on a session with masking; use text or CSV COPY".into())
            }
            b'H' => {
                let (copy, hides_computed) = self
                    .shared
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .pending
                    .front_mut()
                    .map_or((None, true), |p| {
                        (p.copy_out.pop_front(), p.hides_computed())
                    });
                self.copy = None;
                // COPY rows carry no column names: the statement says which they are.
                if masker.has_column_rules() {
                    let mut f = wire::Fields(m.body().get(1..).unwrap_or_default());
                    let count = f.count16().map_err(|e| e.to_string())?;
                    let copy = copy.unwrap_or(CopyOut::Other);
                    let columns = masking::copy_out(
                        &masker,
                        &mut *self.catalog.lock().await,
                        self.session,
                        &copy,
                        (hides_computed, self.idle),
                        count,
                    )
                    .await?;
                    self.copy_header = columns.format.header;
                    self.copy = Some(columns);
                }
                Ok(m)
            }
            b'd' => {
                let Some(columns) = &self.copy else {
                    return Ok(m);
                };
                let masked = if std::mem::take(&mut self.copy_header) {
                    masking::copy_data(&masker, m.body())
                } else {
                    columns
                        .mask_row(&masker, m.body())?
                        .map(|row| wire::Builder::new(b'd').bytes(&row).finish())
                };
                Ok(masked.map_or(m, |frame| Message { frame }))
            }
            b'c' | b'E' | b'Z' => {
                self.copy = None;
                self.idle = m.tag() == b'Z' && m.body() == b"I";
                Ok(m)
            }
            b'C' => {
                self.idle = false;
                Ok(m)
            }
            _ => Ok(m),
        }
    }

    /// The masked form of a message whose values reach the client, if it changed, for
    /// a statement of that `exposure`.
    fn masked(&mut self, m: &Message, exposure: Exposure) -> Option<Bytes> {
        let masker = self.masker.as_deref()?;
        match m.tag() {
            b'D' => masking::data_row(
                masker,
                &mut self.masked_columns,
                m.body(),
                (exposure == Exposure::Computed, self.session.id.as_str()),
            ),
            b'E' | b'N' => masking::notice(masker, m.tag(), m.body(), exposure),
            b'A' => masking::notification(masker, m.body()),
            // A COPY masked by column was masked ahead.
            b'd' if self.copy.is_none() => masking::copy_data(masker, m.body()),
            _ => None,
        }
    }

    /// Forwards one server message (rewritten if it answers a stand-in) and returns
    /// the records it completed.
    fn handle(&mut self, m: Message) -> Vec<StatementRecord> {
        let mut done = Vec::new();
        // (Not looked up without masking: this runs for every server message.)
        let exposure = match self.masker {
            None => Exposure::Values,
            Some(_) => self
                .shared
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pending
                .front()
                .map_or(Exposure::Values, |p| p.exposure),
        };
        let m = match self.masked(&m, exposure) {
            Some(frame) if m.tag() != b'E' => Message { frame },
            _ => m,
        };
        let shared = self.shared;
        let mut shared = shared.lock().unwrap_or_else(PoisonError::into_inner);
        let mut frame = m.frame.clone();
        match m.tag() {
            b'T' | b'n' => {
                if self.described(&mut shared, &m) {
                    frame = Bytes::new();
                }
            }
            b'D' => {
                let encoding = shared.reading.encoding();
                if let Some(p) = shared.pending.front_mut() {
                    if p.rows.len() < self.record_rows {
                        p.rows.push(data_row(m.body(), &self.columns, encoding));
                    } else {
                        p.truncated = true;
                    }
                }
            }
            b'C' | b'I' | b's' => completed(&mut shared, &m, &mut done),
            b'E' => {
                skip_describes(&mut shared);
                if let Some(rewritten) = self.failed(&mut shared, &m) {
                    frame = rewritten;
                }
                if front_is_execute(&shared) {
                    done.extend(pop(&mut shared));
                    skip_batch(&mut shared, &mut done);
                }
            }
            b'Z' => {
                skip_describes(&mut shared);
                if let Some(p) = shared.pending.front()
                    && matches!(p.kind, PendingKind::Query | PendingKind::Sync)
                {
                    done.extend(pop(&mut shared));
                }
            }
            b'S' => shared.reading.note(&m),
            _ => {}
        }
        drop(shared);
        self.out.extend_from_slice(&frame);
        done
    }

    /// A `RowDescription` or `NoData`: the columns to mask by. `true` when it
    /// answers the proxy's own Describe (asked before an Execute, with column rules),
    /// which is not the client's to see.
    fn described(&mut self, shared: &mut Shared, m: &Message) -> bool {
        let describe = shared.pending.front().and_then(|p| match p.kind {
            PendingKind::Describe { ours } => Some(ours),
            _ => None,
        });
        if describe.is_some() {
            shared.pending.pop_front();
        }
        if m.tag() == b'T' {
            self.columns = row_description(m.body(), shared.reading.encoding());
            if let Some(p) = shared.pending.front_mut()
                && p.columns.is_empty()
            {
                p.columns = self.columns.iter().map(|(n, _)| n.clone()).collect();
            }
        }
        describe == Some(true)
    }

    /// An `ErrorResponse`: the refusal in place of a stand-in's error, or the
    /// server's error recorded (masked) and forwarded masked; the frame to send
    /// instead, if any.
    fn failed(&mut self, shared: &mut Shared, m: &Message) -> Option<Bytes> {
        let p = shared.pending.front_mut()?;
        let fields = wire::notice_fields(m.body());
        let said = |code: u8| fields.iter().find(|(c, _)| *c == code).map(|(_, v)| *v);
        let message = said(b'M').unwrap_or_default();
        if let Some((nonce, error)) = &p.denial
            && message.contains(nonce.as_str())
        {
            return Some(error.clone());
        }
        let code = said(b'C').unwrap_or("?");
        let shown = match self.masker.as_deref() {
            Some(mk) => {
                let exposure = masking::message_exposure(mk, p.exposure, &fields);
                masking::message_text(mk, exposure, code, message)
            }
            None => Cow::Borrowed(message),
        };
        if let Some(r) = p.record.as_mut() {
            r.error = Some(format!("{code}: {shown}"));
        }
        self.masked(m, p.exposure)
    }
}

/// Column names (read in the client's `encoding`) and whether each is in binary
/// format, from a `RowDescription`.
fn row_description(body: &[u8], encoding: ClientEncoding) -> Vec<(String, bool)> {
    let mut f = wire::Fields(body);
    let Ok(count) = f.count16() else {
        return Vec::new();
    };
    let mut columns = Vec::with_capacity(count);
    for _ in 0..count {
        let Ok(name) = f.cstr_bytes() else { break };
        // table oid (4), attnum (2), type oid (4), size (2), modifier (4), format (2)
        let Ok(rest) = f.take(16) else { break };
        let binary = rest.get(14..16) == Some(&[0, 1]);
        columns.push((encoding.lossy(name).into_owned(), binary));
    }
    columns
}

/// A `DataRow` as a JSON array of shown values.
fn data_row(
    body: &[u8],
    columns: &[(String, bool)],
    encoding: ClientEncoding,
) -> serde_json::Value {
    let mut f = wire::Fields(body);
    let Ok(count) = f.count16() else {
        return serde_json::Value::Null;
    };
    let mut row = Vec::with_capacity(count);
    for i in 0..count {
        let binary = columns.get(i).is_some_and(|(_, b)| *b);
        match f.value() {
            Ok(Some(v)) => row.push(serde_json::Value::String(shown_value(v, binary, encoding))),
            Ok(None) => row.push(serde_json::Value::Null),
            Err(_) => break,
        }
    }
    serde_json::Value::Array(row)
}
