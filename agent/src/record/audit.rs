//! The audit log: an append-only, hash-chained list of the decisions and events that
//! someone may have to prove later (a session opened, closed or denied, an approval
//! request created or decided, a policy reloaded).
//!
//! Records are numbered 1, 2, 3… with no gaps (`seq`). Each stores `prev_hash`, the
//! `hash` of record `seq - 1` ([`GENESIS_HASH`] for record 1), and its own `hash`: the
//! lowercase hex SHA-256 of this byte string, in this order:
//!
//! | field | encoding |
//! |---|---|
//! | `"portcullis-audit-v1"` | as a text field (below): names the encoding |
//! | `seq`, `at` | each 8 bytes, big-endian two's complement |
//! | `host`, `kind`, `subject` | each a text field: its UTF-8 length as 8 bytes big-endian, then the bytes |
//! | `actor` | one byte `0` when absent; else one byte `1`, then a text field |
//! | `data`, `prev_hash` | text fields, exactly as stored (JSON text; hex text) |
//!
//! Every field has a fixed size or a length prefix, so no two different records hash the
//! same bytes. `data` is a JSON object written with its keys sorted (by code point) and
//! no spaces; it is hashed as the stored text, so an exported [`AuditRecord`] (which
//! carries that text verbatim) can be checked offline with [`AuditRecord::computed_hash`].
//!
//! Appends are serialized so that two writers never both take the same `seq` (which
//! would fork the chain): on `PostgreSQL` under a transaction-scoped advisory lock (held
//! by every gateway sharing the database), on `SQLite` in a `BEGIN IMMEDIATE`
//! transaction (the database's single write lock). The primary key on `seq` backs both:
//! a writer that slips past them fails on the insert, and is retried.
//!
//! A `session_closed` record may carry the digest of the session's event chain
//! (`"events": {"count", "last_hash"}`, or `"statements"` for a session recorded
//! before events existed); verification then re-hashes those events too (see
//! `events`), so the audit chain vouches for them.
//!
//! What the chain cannot show: records cut off the end of the log. Compare
//! [`AuditReport::last_seq`] and [`AuditReport::last_hash`] with a copy kept elsewhere
//! (an export, a SIEM) to catch that.

use super::{Backend, Store, StoreError, canonical::write_canonical, session::now_ms};
use serde::{Deserialize, Serialize};
use serde_json::{Value, value::RawValue};
use sha2::{Digest as _, Sha256};
use sqlx::{Row as _, error::ErrorKind};
use std::{fmt, time::Duration};

/// The `prev_hash` of record 1: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Names the hash encoding (see the module docs); a new encoding gets a new tag.
const HASH_TAG: &str = "portcullis-audit-v1";

/// The `PostgreSQL` advisory lock every appender takes: the bytes of "portaudt".
const AUDIT_LOCK_KEY: i64 = 0x706f_7274_6175_6474;

/// How many records [`Store::verify_audit`] reads per query.
const VERIFY_PAGE: i64 = 1000;

/// How often an append that lost a race (database busy, `seq` taken) is tried in all.
const APPEND_ATTEMPTS: u32 = 5;

/// Pause before retry `n` is `n` times this.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// The columns of an audit record, in one place for every `SELECT`.
macro_rules! select_audit {
    ($($tail:literal)+) => {
        concat!(
            "SELECT seq, at, host, kind, subject, actor, data, prev_hash, hash FROM audit ",
            $($tail),+
        )
    };
}

mod reading;

// ---- types ----

/// What a caller asks to append; the store adds `seq`, time, host and hashes.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// What happened, in `snake_case`: `session_opened`, `session_closed`,
    /// `session_denied`, `request_created`, `request_decided`, `policy_reloaded`.
    pub kind: String,
    /// What it happened to: a session or request id (or a policy directory).
    pub subject: String,
    /// Who decided, when someone did: `alice (uid 1000)`, `policy`, `timeout`.
    pub actor: Option<String>,
    /// The details, as a JSON object (anything else is refused).
    pub data: Value,
}

/// One record of the audit log, as stored.
///
/// `data` is the stored JSON text, kept verbatim (not re-encoded), so that the hash of
/// a record read back, exported or sent over the API can still be recomputed. Parse it
/// with `serde_json::from_str(record.data.get())`. Deserializing needs a `serde_json`
/// reader (`from_str`, `from_slice`, `from_reader`), not `from_value`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the log: 1, 2, 3… with no gaps.
    pub seq: i64,
    /// When it was appended, unix milliseconds, by the writing host's clock.
    pub at: i64,
    /// The gateway host that appended it.
    pub host: String,
    pub kind: String,
    pub subject: String,
    pub actor: Option<String>,
    pub data: Box<RawValue>,
    /// `hash` of record `seq - 1`; [`GENESIS_HASH`] for record 1.
    pub prev_hash: String,
    /// SHA-256 of all the fields above (see the module docs), lowercase hex.
    pub hash: String,
}

/// What [`Store::verify_audit`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReport {
    /// How many records were read (all of them, also past a bad one).
    pub records: u64,
    /// `seq` of the last record: keep it (with `last_hash`) to notice, next time, that
    /// records were cut off the end, which the chain alone cannot show.
    pub last_seq: Option<i64>,
    pub last_hash: Option<String>,
    /// The first record that does not fit the chain; `None` if the log is intact.
    pub first_bad: Option<BadRecord>,
}

/// A record that does not fit the chain, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadRecord {
    pub seq: i64,
    /// What does not fit, for a person: `hash does not match its contents`,
    /// `prev_hash does not match record N`, `seq gap after N`, or, for a
    /// `session_closed` record, `statements of session ID: …`.
    pub reason: String,
}

impl AuditReport {
    /// Whether every record fits the chain.
    #[must_use]
    pub fn is_intact(&self) -> bool {
        self.first_bad.is_none()
    }
}

impl fmt::Display for AuditReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.first_bad, self.last_seq, &self.last_hash) {
            (Some(bad), ..) => write!(
                f,
                "audit log TAMPERED: record {}: {} ({} records read)",
                bad.seq, bad.reason, self.records
            ),
            (None, Some(seq), Some(hash)) => write!(
                f,
                "audit log intact: {} records, last {seq} with hash {hash}",
                self.records
            ),
            (None, ..) => f.write_str("audit log intact: no records yet"),
        }
    }
}

impl AuditRecord {
    /// The hash this record's fields give; equal to `hash` unless it was tampered with.
    #[must_use]
    pub fn computed_hash(&self) -> String {
        Link {
            seq: self.seq,
            at: self.at,
            host: &self.host,
            kind: &self.kind,
            subject: &self.subject,
            actor: self.actor.as_deref(),
            data: self.data.get(),
            prev_hash: &self.prev_hash,
        }
        .hash()
    }
}

/// The hashed fields of one record (everything but `hash`).
struct Link<'a> {
    seq: i64,
    at: i64,
    host: &'a str,
    kind: &'a str,
    subject: &'a str,
    actor: Option<&'a str>,
    data: &'a str,
    prev_hash: &'a str,
}

impl Link<'_> {
    /// Lowercase hex SHA-256 of the encoding in the module docs.
    fn hash(&self) -> String {
        fn text(sha: &mut Sha256, s: &str) {
            sha.update((s.len() as u64).to_be_bytes());
            sha.update(s.as_bytes());
        }
        let mut sha = Sha256::new();
        text(&mut sha, HASH_TAG);
        sha.update(self.seq.to_be_bytes());
        sha.update(self.at.to_be_bytes());
        text(&mut sha, self.host);
        text(&mut sha, self.kind);
        text(&mut sha, self.subject);
        match self.actor {
            None => sha.update([0]),
            Some(actor) => {
                sha.update([1]);
                text(&mut sha, actor);
            }
        }
        text(&mut sha, self.data);
        text(&mut sha, self.prev_hash);
        format!("{:x}", sha.finalize())
    }
}

// ---- store operations ----

impl Store {
    /// Appends `entry` to the audit log, stamped with this store's host and now, and
    /// returns the record as stored. Safe to call from many tasks and from several
    /// gateways sharing one `PostgreSQL` database: every record gets the next `seq`.
    pub async fn append_audit(&self, entry: &AuditEntry) -> Result<AuditRecord, StoreError> {
        let data = canonical_data(entry)?;
        let mut attempt = 1;
        loop {
            match self.try_append(entry, &data).await {
                Ok(record) => return Ok(record),
                Err((_, source)) if attempt < APPEND_ATTEMPTS && self.lost_race(&source) => {
                    tracing::debug!(attempt, error = %source, "Audit append retried");
                    tokio::time::sleep(RETRY_PAUSE * attempt).await;
                    attempt += 1;
                }
                Err((op, source)) => return Err(self.query_error(op, source)),
            }
        }
    }

    /// One append in one transaction: lock, read the last record, insert the next.
    async fn try_append(
        &self,
        entry: &AuditEntry,
        data: &RawValue,
    ) -> Result<AuditRecord, (&'static str, sqlx::Error)> {
        let mut tx = match self.backend {
            // A plain BEGIN would read the last record under a shared lock, and two
            // writers could then both pick the same next seq.
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
        .map_err(|e| ("start appending to the audit log", e))?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(AUDIT_LOCK_KEY)
                .execute(&mut *tx)
                .await
                .map_err(|e| ("lock the audit log", e))?;
        }
        let last = sqlx::query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| ("read the last audit record", e))?;
        let (prev_seq, prev_hash) = match last {
            Some(row) => (
                row.try_get::<i64, _>("seq")
                    .map_err(|e| ("read the last audit record", e))?,
                row.try_get::<String, _>("hash")
                    .map_err(|e| ("read the last audit record", e))?,
            ),
            None => (0, GENESIS_HASH.to_owned()),
        };
        let mut record = AuditRecord {
            seq: prev_seq.saturating_add(1),
            // Taken under the lock, so one host's records are in time order.
            at: now_ms(),
            host: self.host.to_string(),
            kind: entry.kind.clone(),
            subject: entry.subject.clone(),
            actor: entry.actor.clone(),
            data: data.to_owned(),
            prev_hash,
            hash: String::new(),
        };
        record.hash = record.computed_hash();
        sqlx::query(
            "INSERT INTO audit (seq, at, host, kind, subject, actor, data, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(record.seq)
        .bind(record.at)
        .bind(&record.host)
        .bind(&record.kind)
        .bind(&record.subject)
        .bind(record.actor.as_deref())
        .bind(record.data.get())
        .bind(&record.prev_hash)
        .bind(&record.hash)
        .execute(&mut *tx)
        .await
        .map_err(|e| ("append an audit record", e))?;
        tx.commit()
            .await
            .map_err(|e| ("commit an audit record", e))?;
        Ok(record)
    }

    /// Whether an append failed only because another writer got there first, so that
    /// trying again is safe (nothing was written) and likely to work.
    fn lost_race(&self, error: &sqlx::Error) -> bool {
        let sqlx::Error::Database(db) = error else {
            return false;
        };
        if db.kind() == ErrorKind::UniqueViolation {
            return true;
        }
        // SQLITE_BUSY (5) and SQLITE_LOCKED (6), in the low byte of the extended code:
        // the busy timeout ran out while another connection held the write lock.
        self.backend == Backend::Sqlite
            && db
                .code()
                .and_then(|code| code.parse::<i32>().ok())
                .is_some_and(|code| matches!(code & 0xff, 5 | 6))
    }
}

/// `entry.data` as canonical JSON text: an object, keys sorted, no spaces.
fn canonical_data(entry: &AuditEntry) -> Result<Box<RawValue>, StoreError> {
    let found = match &entry.data {
        Value::Object(_) => None,
        Value::Null => Some("null"),
        Value::Bool(_) => Some("a boolean"),
        Value::Number(_) => Some("a number"),
        Value::String(_) => Some("a string"),
        Value::Array(_) => Some("an array"),
    };
    if let Some(found) = found {
        return Err(StoreError::AuditData {
            kind: entry.kind.clone(),
            found,
        });
    }
    let mut text = String::new();
    write_canonical(&entry.data, &mut text);
    RawValue::from_string(text).map_err(|source| StoreError::Encode {
        op: "encode audit data as JSON",
        source,
    })
}
