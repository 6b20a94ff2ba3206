//! A SQL statement as the PostgreSQL proxy records it, and the `statements` table
//! where sessions were recorded before the event log (`events`) existed.
//!
//! The proxy hands a [`StatementRecord`] to the [`super::Recorder`], which stores it
//! as an event of kind `sql` ([`super::EventRecord::from_statement`]). Sessions
//! recorded earlier keep their rows here, chained as described below; they are read
//! as `sql` events, and `portcullis audit verify` checks them as before.
//!
//! ## The chain
//!
//! A session's statements are numbered 1, 2, 3… (`seq`) with no gaps, and each carries
//! `hash`: the lowercase hex SHA-256 of
//!
//! ```text
//! prev_hash ‖ canonical JSON of the record without `hash`
//! ```
//!
//! where `prev_hash` is the `hash` of statement `seq - 1` ([`GENESIS_HASH`] for
//! statement 1) as its 64 hex characters, and the canonical JSON is the object of
//! every other field of [`StatementRecord`] (absent values as `null`) with its keys
//! sorted by code point at every level and no spaces, as the audit log writes its
//! `data`. [`StatementRecord::chain_hash`] computes it.
//!
//! When a session ends, its [`StatementsDigest`] (count and last hash) goes into the
//! session's `session_closed` audit record, under `"statements"`. The audit log is
//! itself hash-chained, so [`Store::verify_audit`] can re-hash the stored statements of
//! every closed session and name the session whose rows were edited, deleted or
//! inserted after the fact.

#[cfg(test)]
use super::{
    Backend,
    batch::{ROWS_PER_INSERT, batch_inserts},
};
use super::{
    GENESIS_HASH, SessionId, Store, StoreError,
    canonical::{canonical_bytes, object_key, scalar_bytes, string_array},
    events::link_hash,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{Row as _, any::AnyRow};
use std::ops::Range;

/// `INSERT` of `rows` statements (at most [`ROWS_PER_INSERT`]), built once.
#[cfg(test)]
fn insert_sql(backend: Backend, rows: usize) -> &'static str {
    static SQL: std::sync::OnceLock<[Vec<String>; 2]> = std::sync::OnceLock::new();
    let head = "INSERT INTO statements (session_id, seq, at_ms, text, params, classes, \
                tables, verdict, decided_by, request_id, reason, duration_us, \
                rows_affected, command_tag, error, rows, hash) VALUES ";
    let [sqlite, postgres] = SQL.get_or_init(|| {
        [
            batch_inserts(head, STATEMENT_COLUMNS, false),
            batch_inserts(head, STATEMENT_COLUMNS, true),
        ]
    });
    let texts = match backend {
        Backend::Sqlite => sqlite,
        Backend::Postgres => postgres,
    };
    texts.get(rows).map_or("", String::as_str)
}

/// Columns of the `statements` table.
#[cfg(test)]
const STATEMENT_COLUMNS: usize = 17;

/// The columns of a statement, in one place for every `SELECT`.
const SELECT_STATEMENTS: &str = "SELECT session_id, seq, at_ms, text, params, classes, \
    tables, verdict, decided_by, request_id, reason, duration_us, rows_affected, \
    command_tag, error, rows, hash FROM statements";

// ---- types ----

/// One statement a client sent, what the gate decided, and how it went.
///
/// Values that may be sensitive (`text`, `params`, `rows`) arrive already masked:
/// the store writes what it is given.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatementRecord {
    pub session_id: SessionId,
    /// Order within the session, from 1. Assigned by the [`super::Recorder`]: callers
    /// pass 0.
    pub seq: i64,
    /// When the client sent it, unix milliseconds.
    pub at_ms: i64,
    /// The SQL text, masked.
    pub text: String,
    /// Bind parameters as a JSON array of strings and nulls, masked.
    pub params: Option<Value>,
    /// What kind of statement it is: `["read"]`, `["ddl", "drop"]`.
    pub classes: Vec<String>,
    /// The tables it names.
    pub tables: Vec<String>,
    /// `allowed`, `denied`, `approved`, `timed_out`, `abandoned` or `error`.
    pub verdict: String,
    /// Who decided: the approvers, or the rule's name.
    pub decided_by: Option<String>,
    /// The approval request, when the statement was held.
    pub request_id: Option<String>,
    /// Why, in words, for a person reading the record.
    pub reason: Option<String>,
    /// From sending it to the target until the target's answer ended.
    pub duration_us: Option<i64>,
    pub rows_affected: Option<i64>,
    /// The server's command tag: `SELECT 3`, `INSERT 0 1`.
    pub command_tag: Option<String>,
    /// SQLSTATE and message, when the server or the gate answered with an error.
    pub error: Option<String>,
    /// A capped sample of the result:
    /// `{"columns": […], "rows": [[…]…], "truncated": bool}`, masked.
    pub rows: Option<Value>,
    /// This record's link in its session's chain (see the module docs). Computed by
    /// the [`super::Recorder`]: callers pass `String::new()`.
    pub hash: String,
}

/// Where a session's statement chain stands: how many statements it has, and the
/// `hash` of the last ([`GENESIS_HASH`] when there are none). Written into the
/// session's `session_closed` audit record as `"statements"`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatementsDigest {
    pub count: i64,
    pub last_hash: String,
}

impl StatementsDigest {
    /// The digest of a session with no statements.
    #[must_use]
    pub fn empty() -> Self {
        Self {
            count: 0,
            last_hash: GENESIS_HASH.to_owned(),
        }
    }

    /// Makes `record` the next link of this chain (its `seq` and `hash`) and moves on.
    #[cfg(test)]
    pub(super) fn link(&mut self, record: &mut StatementRecord) {
        self.link_into(record, &mut Vec::new());
    }

    /// [`StatementsDigest::link`], leaving the hashed bytes in `canonical`.
    #[cfg(test)]
    fn link_into(&mut self, record: &mut StatementRecord, canonical: &mut Vec<u8>) -> Spans {
        record.seq = self.count.saturating_add(1);
        let spans = record.write_hashed_fields(canonical);
        record.hash = link_hash(&self.last_hash, canonical);
        self.count = record.seq;
        self.last_hash.clone_from(&record.hash);
        spans
    }
}

/// Where the JSON-valued fields are in a record's canonical JSON.
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "only the tests write the statements table now")
)]
pub(super) struct Spans {
    classes: Range<usize>,
    params: Range<usize>,
    rows: Range<usize>,
    tables: Range<usize>,
}

/// A statement ready to store: the record and its JSON columns as text.
#[cfg(test)]
pub(super) struct Encoded {
    pub(super) record: StatementRecord,
    pub(super) params: Option<String>,
    pub(super) classes: String,
    pub(super) tables: String,
    pub(super) rows: Option<String>,
}

#[cfg(test)]
impl Encoded {
    /// The columns of `record`, cut from its canonical JSON. An absent value and a
    /// JSON `null` are both SQL NULL (both hash as `null`).
    fn cut(record: StatementRecord, canonical: &[u8], spans: &Spans) -> Encoded {
        let text = |span: &Range<usize>| {
            String::from_utf8_lossy(canonical.get(span.clone()).unwrap_or_default()).into_owned()
        };
        let column = |span: &Range<usize>| Some(text(span)).filter(|t| t != "null");
        Encoded {
            params: column(&spans.params),
            classes: text(&spans.classes),
            tables: text(&spans.tables),
            rows: column(&spans.rows),
            record,
        }
    }

    /// `record` encoded as it stands (its `seq` and `hash` already set).
    #[cfg(test)]
    pub(super) fn of(record: StatementRecord) -> Encoded {
        let mut canonical = Vec::new();
        let spans = record.write_hashed_fields(&mut canonical);
        Encoded::cut(record, &canonical, &spans)
    }
}

impl StatementRecord {
    /// The hash this record has as the link after `prev_hash` (see the module docs);
    /// equal to `hash` unless the record was tampered with.
    #[must_use]
    pub fn chain_hash(&self, prev_hash: &str) -> String {
        let mut canonical = Vec::with_capacity(512 + self.text.len());
        self.write_hashed_fields(&mut canonical);
        link_hash(prev_hash, &canonical)
    }

    /// The canonical JSON of [`StatementRecord::hashed_fields`], written straight from
    /// the fields (keys in code-point order) instead of through a `Value`: this runs
    /// for every statement. A unit test checks both give the same bytes.
    pub(super) fn write_hashed_fields(&self, out: &mut Vec<u8>) -> Spans {
        fn json(out: &mut Vec<u8>, value: Option<&Value>) {
            match value {
                Some(v) => canonical_bytes(v, out),
                None => out.extend_from_slice(b"null"),
            }
        }
        /// Where what `write` appends lands in `out`.
        fn spanned(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) -> Range<usize> {
            let start = out.len();
            write(out);
            start..out.len()
        }
        let start = out.len();
        let key = |out: &mut Vec<u8>, name: &str| object_key(out, start, name);
        key(out, "at_ms");
        scalar_bytes(&self.at_ms, out);
        key(out, "classes");
        let classes = spanned(out, |o| string_array(o, &self.classes));
        key(out, "command_tag");
        scalar_bytes(&self.command_tag, out);
        key(out, "decided_by");
        scalar_bytes(&self.decided_by, out);
        key(out, "duration_us");
        scalar_bytes(&self.duration_us, out);
        key(out, "error");
        scalar_bytes(&self.error, out);
        key(out, "params");
        let params = spanned(out, |o| json(o, self.params.as_ref()));
        key(out, "reason");
        scalar_bytes(&self.reason, out);
        key(out, "request_id");
        scalar_bytes(&self.request_id, out);
        key(out, "rows");
        let rows = spanned(out, |o| json(o, self.rows.as_ref()));
        key(out, "rows_affected");
        scalar_bytes(&self.rows_affected, out);
        key(out, "seq");
        scalar_bytes(&self.seq, out);
        key(out, "session_id");
        scalar_bytes(self.session_id.as_str(), out);
        key(out, "tables");
        let tables = spanned(out, |o| string_array(o, &self.tables));
        key(out, "text");
        scalar_bytes(&self.text, out);
        key(out, "verdict");
        scalar_bytes(&self.verdict, out);
        out.push(b'}');
        Spans {
            classes,
            params,
            rows,
            tables,
        }
    }

    /// Every field but `hash`, as the JSON object the chain hashes. Spelled out
    /// rather than derived from `Serialize`, so the hashed bytes cannot change by
    /// accident; a unit test checks that no field is left out.
    #[cfg(test)]
    pub(super) fn hashed_fields(&self) -> Value {
        let fields: [(&str, Value); 16] = [
            ("session_id", self.session_id.as_str().into()),
            ("seq", self.seq.into()),
            ("at_ms", self.at_ms.into()),
            ("text", self.text.as_str().into()),
            ("params", self.params.clone().unwrap_or(Value::Null)),
            ("classes", self.classes.clone().into()),
            ("tables", self.tables.clone().into()),
            ("verdict", self.verdict.as_str().into()),
            ("decided_by", self.decided_by.clone().into()),
            ("request_id", self.request_id.clone().into()),
            ("reason", self.reason.clone().into()),
            ("duration_us", self.duration_us.into()),
            ("rows_affected", self.rows_affected.into()),
            ("command_tag", self.command_tag.clone().into()),
            ("error", self.error.clone().into()),
            ("rows", self.rows.clone().unwrap_or(Value::Null)),
        ];
        Value::Object(
            fields
                .into_iter()
                .map(|(key, value)| (key.to_owned(), value))
                .collect::<serde_json::Map<_, _>>(),
        )
    }
}

// ---- store operations ----

impl Store {
    /// [`Store::insert_encoded`] of records as they stand.
    #[cfg(test)]
    pub(super) async fn insert_statements(
        &self,
        batch: &[StatementRecord],
    ) -> Result<(), StoreError> {
        let batch: Vec<Encoded> = batch.iter().cloned().map(Encoded::of).collect();
        self.insert_encoded(&batch).await
    }

    /// Writes `batch` in one transaction, as the recorder did before events
    /// existed: kept to test the verification of sessions recorded then.
    #[cfg(test)]
    pub(super) async fn insert_encoded(&self, batch: &[Encoded]) -> Result<(), StoreError> {
        let sql = |rows| insert_sql(self.backend, rows);
        let chunk = |rest: &[Encoded]| rest.len().min(ROWS_PER_INSERT);
        self.insert_batch(
            ("record statements", "Statements"),
            batch,
            sql,
            chunk,
            |query, encoded| {
                let record = &encoded.record;
                query
                    .bind(record.session_id.as_str())
                    .bind(record.seq)
                    .bind(record.at_ms)
                    .bind(&record.text)
                    .bind(encoded.params.as_deref())
                    .bind(encoded.classes.as_str())
                    .bind(encoded.tables.as_str())
                    .bind(&record.verdict)
                    .bind(record.decided_by.as_deref())
                    .bind(record.request_id.as_deref())
                    .bind(record.reason.as_deref())
                    .bind(record.duration_us)
                    .bind(record.rows_affected)
                    .bind(record.command_tag.as_deref())
                    .bind(record.error.as_deref())
                    .bind(encoded.rows.as_deref())
                    .bind(&record.hash)
            },
            None,
        )
        .await
    }

    /// Up to `limit` statements of `session` in `seq` order, those after `after_seq`
    /// (0 for the start). To read them all, call again with the last `seq` returned
    /// until the answer is shorter than `limit`.
    pub async fn statements(
        &self,
        session: &SessionId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<StatementRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "{SELECT_STATEMENTS} WHERE session_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ))
        .bind(session.as_str())
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|source| self.query_error("read recorded statements", source))?;
        rows.iter()
            .map(|row| self.statement_from_row(session, row))
            .collect()
    }

    fn statement_from_row(
        &self,
        session: &SessionId,
        row: &AnyRow,
    ) -> Result<StatementRecord, StoreError> {
        let read = |source| self.query_error("read a recorded statement", source);
        let seq: i64 = row.try_get("seq").map_err(read)?;
        let corrupt = |column, e: serde_json::Error| StoreError::Corrupt {
            url: self.url.to_string(),
            id: session.to_string(),
            column,
            detail: format!("statement {seq}: {e}"),
        };
        let json = |column| -> Result<Option<Value>, StoreError> {
            let text: Option<String> = row.try_get(column).map_err(read)?;
            text.map(|t| serde_json::from_str(&t))
                .transpose()
                .map_err(|e| corrupt(column, e))
        };
        let list = |column| -> Result<Vec<String>, StoreError> {
            let text: String = row.try_get(column).map_err(read)?;
            serde_json::from_str(&text).map_err(|e| corrupt(column, e))
        };
        Ok(StatementRecord {
            session_id: session.clone(),
            seq,
            at_ms: row.try_get("at_ms").map_err(read)?,
            text: row.try_get("text").map_err(read)?,
            params: json("params")?,
            classes: list("classes")?,
            tables: list("tables")?,
            verdict: row.try_get("verdict").map_err(read)?,
            decided_by: row.try_get("decided_by").map_err(read)?,
            request_id: row.try_get("request_id").map_err(read)?,
            reason: row.try_get("reason").map_err(read)?,
            duration_us: row.try_get("duration_us").map_err(read)?,
            rows_affected: row.try_get("rows_affected").map_err(read)?,
            command_tag: row.try_get("command_tag").map_err(read)?,
            error: row.try_get("error").map_err(read)?,
            rows: json("rows")?,
            hash: row.try_get("hash").map_err(read)?,
        })
    }
}
