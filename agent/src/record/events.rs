//! The event log: everything a client asked for in a session, one row per action,
//! of one shape for every protocol, so a session can be replayed
//! (`portcullis sessions replay ID`) and verified whatever it spoke.
//!
//! An event has a `kind` (`sql`, `connect`, and as protocols land `exec`, `shell`,
//! `file`, `forward`, `http`), a masked one-line `summary`, masked `details` (JSON, its
//! fields depend on the kind), what the gate decided (`verdict`, `decided_by`,
//! `request_id`, `reason`), how it went (`duration_us`, `error`), and `payload`: the
//! SHA-256 of a large payload stored beside it (a terminal recording, a captured body).
//!
//! A `sql` event's details are the statement's `text`, `params`, `classes`, `tables`,
//! `rows_affected`, `command_tag` and the sampled `rows` (absent values left out).
//!
//! ## The chain
//!
//! A session's events are numbered 1, 2, 3… (`seq`) with no gaps, and each carries
//! `hash`: the lowercase hex SHA-256 of
//!
//! ```text
//! prev_hash ‖ canonical JSON of the record without `hash`
//! ```
//!
//! as for the statements recorded before events existed (`statements`): `prev_hash`
//! is the previous event's `hash` ([`super::GENESIS_HASH`] for the first), and the canonical
//! JSON has every other field of [`EventRecord`] (absent values as `null`), keys sorted
//! at every level, no spaces. When the session ends, its [`ChainDigest`] goes into the
//! `session_closed` audit record under `"events"`, and `portcullis audit verify`
//! re-hashes the stored events against it.

mod store;

use super::{
    SessionId, StatementRecord,
    canonical::{canonical_bytes, object_key, scalar_bytes, string_array},
    statements::StatementsDigest,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};
use std::ops::Range;

/// Where a session's chain stands: how many links, and the last one's hash.
pub type ChainDigest = StatementsDigest;

/// Longest summary kept, in characters (the details keep the whole text).
const SUMMARY_CHARS: usize = 200;

/// One action a client asked for in a session, what the gate decided and how it went.
///
/// `summary` and `details` arrive already masked: the store writes what it is given.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventRecord {
    pub session_id: SessionId,
    /// Order within the session, from 1; set by the [`super::Recorder`].
    pub seq: i64,
    /// When the client asked, unix milliseconds.
    pub at_ms: i64,
    /// What kind of action: `sql`, `connect`, `exec`, `http`…
    pub kind: String,
    /// One line for a person, masked.
    pub summary: String,
    /// The kind's own fields, masked.
    pub details: Option<Value>,
    /// `allowed`, `denied`, `approved`, `timed_out`, `abandoned` or `error`.
    pub verdict: String,
    /// Who decided: the approvers, or the rule's name.
    pub decided_by: Option<String>,
    /// The approval request, when the action was held.
    pub request_id: Option<String>,
    pub reason: Option<String>,
    /// From forwarding it to the target until the target's answer ended.
    pub duration_us: Option<i64>,
    /// What went wrong, in the protocol's words (SQLSTATE and message, exit status…).
    pub error: Option<String>,
    /// Lowercase hex SHA-256 of a large payload stored beside the event.
    pub payload: Option<String>,
    /// This record's link in its session's chain; set by the [`super::Recorder`].
    pub hash: String,
}

/// An event ready to store: the record and its `details` column as text.
pub(super) struct Encoded {
    pub(super) record: EventRecord,
    pub(super) details: Option<String>,
}

impl ChainDigest {
    /// Makes `record` the next link of this chain, ready to store: its `details`
    /// column is cut from the bytes the chain hashes, so it is serialized once.
    pub(super) fn link_event(&mut self, mut record: EventRecord) -> Encoded {
        record.seq = self.count.saturating_add(1);
        let mut canonical = Vec::with_capacity(512 + record.summary.len());
        let details = record.write_hashed_fields(&mut canonical);
        self.finish_link(record, &canonical, details)
    }

    /// [`ChainDigest::link_event`] of [`EventRecord::from_statement`]`(st)`, with the
    /// same hash, but its details written straight from the statement's fields rather
    /// than built as a JSON value first: this runs for every statement.
    pub(super) fn link_statement(&mut self, st: StatementRecord) -> Encoded {
        let StatementRecord {
            session_id,
            at_ms,
            text,
            params,
            classes,
            tables,
            verdict,
            decided_by,
            request_id,
            reason,
            duration_us,
            rows_affected,
            command_tag,
            error,
            rows,
            ..
        } = st;
        let sql = SqlDetails {
            text: &text,
            params: params.as_ref(),
            classes: &classes,
            tables: &tables,
            rows_affected,
            command_tag: command_tag.as_deref(),
            rows: rows.as_ref(),
        };
        let record = EventRecord {
            session_id,
            seq: self.count.saturating_add(1),
            at_ms,
            kind: "sql".into(),
            summary: one_line(&text, SUMMARY_CHARS),
            details: None,
            verdict,
            decided_by,
            request_id,
            reason,
            duration_us,
            error,
            payload: None,
            hash: String::new(),
        };
        let mut canonical = Vec::with_capacity(512 + 2 * text.len());
        let details = record.write_fields(&mut canonical, |out| sql.write(out));
        self.finish_link(record, &canonical, details)
    }

    /// Sets `record`'s hash from its `canonical` JSON, advances the chain, and cuts
    /// the `details` column out of it.
    fn finish_link(
        &mut self,
        mut record: EventRecord,
        canonical: &[u8],
        details: Range<usize>,
    ) -> Encoded {
        record.hash = link_hash(&self.last_hash, canonical);
        self.count = record.seq;
        self.last_hash.clone_from(&record.hash);
        // Canonical JSON is UTF-8: the check cannot fail, and is faster than lossy.
        let details = canonical
            .get(details)
            .and_then(|d| std::str::from_utf8(d).ok())
            .filter(|d| *d != "null")
            .map(str::to_owned);
        Encoded { record, details }
    }
}

/// A `sql` event's details, borrowed from the statement.
struct SqlDetails<'a> {
    text: &'a str,
    params: Option<&'a Value>,
    classes: &'a [String],
    tables: &'a [String],
    rows_affected: Option<i64>,
    command_tag: Option<&'a str>,
    rows: Option<&'a Value>,
}

impl SqlDetails<'_> {
    /// The canonical JSON of the object [`EventRecord::from_statement`] builds: keys
    /// in code-point order, absent values left out.
    fn write(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let key = |out: &mut Vec<u8>, name: &str| object_key(out, start, name);
        key(out, "classes");
        string_array(out, self.classes);
        if let Some(tag) = self.command_tag {
            key(out, "command_tag");
            scalar_bytes(tag, out);
        }
        if let Some(params) = self.params {
            key(out, "params");
            canonical_bytes(params, out);
        }
        if let Some(rows) = self.rows {
            key(out, "rows");
            canonical_bytes(rows, out);
        }
        if let Some(n) = self.rows_affected {
            key(out, "rows_affected");
            scalar_bytes(&n, out);
        }
        key(out, "tables");
        string_array(out, self.tables);
        key(out, "text");
        scalar_bytes(self.text, out);
        out.push(b'}');
    }
}

/// `hash` of the record whose canonical JSON is `canonical`, after `prev_hash`.
pub(super) fn link_hash(prev_hash: &str, canonical: &[u8]) -> String {
    let mut sha = Sha256::new();
    sha.update(prev_hash.as_bytes());
    sha.update(canonical);
    format!("{:x}", sha.finalize())
}

impl EventRecord {
    /// A `sql` event of the statement `st`: its SQL and results become the details.
    #[must_use]
    pub fn from_statement(st: StatementRecord) -> EventRecord {
        let mut details = Map::new();
        details.insert("classes".into(), st.classes.into());
        if let Some(tag) = st.command_tag {
            details.insert("command_tag".into(), tag.into());
        }
        if let Some(params) = st.params {
            details.insert("params".into(), params);
        }
        if let Some(rows) = st.rows {
            details.insert("rows".into(), rows);
        }
        if let Some(n) = st.rows_affected {
            details.insert("rows_affected".into(), n.into());
        }
        details.insert("tables".into(), st.tables.into());
        let summary = one_line(&st.text, SUMMARY_CHARS);
        details.insert("text".into(), st.text.into());
        EventRecord {
            session_id: st.session_id,
            seq: st.seq,
            at_ms: st.at_ms,
            kind: "sql".into(),
            summary,
            details: Some(Value::Object(details)),
            verdict: st.verdict,
            decided_by: st.decided_by,
            request_id: st.request_id,
            reason: st.reason,
            duration_us: st.duration_us,
            error: st.error,
            payload: None,
            hash: st.hash,
        }
    }

    /// The hash this record has as the link after `prev_hash`; equal to `hash`
    /// unless the record was tampered with.
    #[must_use]
    pub fn chain_hash(&self, prev_hash: &str) -> String {
        let mut canonical = Vec::with_capacity(512 + self.summary.len());
        self.write_hashed_fields(&mut canonical);
        link_hash(prev_hash, &canonical)
    }

    /// The canonical JSON of every field but `hash`, keys in code-point order,
    /// written straight from the fields; returns where `details` is in it.
    fn write_hashed_fields(&self, out: &mut Vec<u8>) -> Range<usize> {
        self.write_fields(out, |out| match &self.details {
            Some(v) => canonical_bytes(v, out),
            None => out.extend_from_slice(b"null"),
        })
    }

    /// [`EventRecord::write_hashed_fields`] with the details written by `details`.
    fn write_fields(&self, out: &mut Vec<u8>, details: impl FnOnce(&mut Vec<u8>)) -> Range<usize> {
        let start = out.len();
        let key = |out: &mut Vec<u8>, name: &str| object_key(out, start, name);
        key(out, "at_ms");
        scalar_bytes(&self.at_ms, out);
        key(out, "decided_by");
        scalar_bytes(&self.decided_by, out);
        key(out, "details");
        let start = out.len();
        details(out);
        let details = start..out.len();
        key(out, "duration_us");
        scalar_bytes(&self.duration_us, out);
        key(out, "error");
        scalar_bytes(&self.error, out);
        key(out, "kind");
        scalar_bytes(&self.kind, out);
        key(out, "payload");
        scalar_bytes(&self.payload, out);
        key(out, "reason");
        scalar_bytes(&self.reason, out);
        key(out, "request_id");
        scalar_bytes(&self.request_id, out);
        key(out, "seq");
        scalar_bytes(&self.seq, out);
        key(out, "session_id");
        scalar_bytes(self.session_id.as_str(), out);
        key(out, "summary");
        scalar_bytes(&self.summary, out);
        key(out, "verdict");
        scalar_bytes(&self.verdict, out);
        out.push(b'}');
        details
    }
}

/// `text` on one line (runs of white space as one space), cut to `max` characters.
#[must_use]
pub fn one_line(text: &str, max: usize) -> String {
    // Most statements are one line already: copied as they are.
    let plain = text.len() <= max
        && !text.starts_with(' ')
        && !text.ends_with(' ')
        && !text.contains("  ")
        && text.is_ascii()
        && !text.chars().any(|c| c.is_whitespace() && c != ' ');
    if plain {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len().min(max * 4));
    let mut chars = 0;
    for word in text.split_whitespace() {
        if chars > 0 {
            if chars >= max {
                out.push('…');
                return out;
            }
            out.push(' ');
            chars += 1;
        }
        for c in word.chars() {
            if chars >= max {
                out.push('…');
                return out;
            }
            out.push(c);
            chars += 1;
        }
    }
    out
}
