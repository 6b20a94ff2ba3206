//! Reading the audit log back: verifying the whole chain (and the event chains its
//! `session_closed` records vouch for), and paging through it for an export.

use super::{
    AuditRecord, AuditReport, BadRecord, GENESIS_HASH, Link, Store, StoreError, VERIFY_PAGE,
};
use serde_json::value::RawValue;
use sqlx::{Row as _, any::AnyRow};

/// A row as stored, `data` as plain text: what verification needs, and all it trusts.
pub(super) struct StoredRow {
    pub(super) seq: i64,
    pub(super) at: i64,
    pub(super) host: String,
    pub(super) kind: String,
    pub(super) subject: String,
    pub(super) actor: Option<String>,
    pub(super) data: String,
    pub(super) prev_hash: String,
    pub(super) hash: String,
}

impl StoredRow {
    pub(super) fn link(&self) -> Link<'_> {
        Link {
            seq: self.seq,
            at: self.at,
            host: &self.host,
            kind: &self.kind,
            subject: &self.subject,
            actor: self.actor.as_deref(),
            data: &self.data,
            prev_hash: &self.prev_hash,
        }
    }

    /// Why this row does not follow `prev` (`seq` and `hash` of the row before it;
    /// `None` for the first row), or `None` if it does.
    pub(super) fn misfit(&self, prev: Option<(i64, &str)>) -> Option<String> {
        let (prev_seq, prev_hash) = prev.unwrap_or((0, GENESIS_HASH));
        if prev_seq.checked_add(1) != Some(self.seq) {
            return Some(if prev.is_some() {
                format!("seq gap after {prev_seq}")
            } else {
                format!("seq gap after 0: the log starts at {}, not 1", self.seq)
            });
        }
        if self.link().hash() != self.hash {
            return Some("hash does not match its contents".to_owned());
        }
        if self.prev_hash != prev_hash {
            return Some(if prev.is_some() {
                format!("prev_hash does not match record {prev_seq}")
            } else {
                "prev_hash does not match the genesis hash (64 zeros)".to_owned()
            });
        }
        None
    }
}

impl Store {
    /// Walks the whole audit log in `seq` order, a page at a time, and checks that every
    /// record's hash matches its contents and links to the record before it, and that
    /// the statements of every session a `session_closed` record closed (when it
    /// carries their digest) are stored as recorded (see `statements`).
    pub async fn verify_audit(&self) -> Result<AuditReport, StoreError> {
        let mut report = AuditReport::default();
        let mut prev: Option<(i64, String)> = None;
        loop {
            let from = match &prev {
                None => i64::MIN,
                Some((seq, _)) => match seq.checked_add(1) {
                    Some(next) => next,
                    None => break,
                },
            };
            let rows = sqlx::query(select_audit!("WHERE seq >= $1 ORDER BY seq LIMIT $2"))
                .bind(from)
                .bind(VERIFY_PAGE)
                .fetch_all(&self.pool)
                .await
                .map_err(|source| self.query_error("read the audit log", source))?;
            for row in &rows {
                let row = self.stored_row(row)?;
                report.records += 1;
                if report.first_bad.is_none() {
                    let reason = match row.misfit(prev.as_ref().map(|(s, h)| (*s, h.as_str()))) {
                        Some(reason) => Some(reason),
                        None => {
                            self.chain_misfit(&row.kind, &row.subject, &row.data)
                                .await?
                        }
                    };
                    report.first_bad = reason.map(|reason| BadRecord {
                        seq: row.seq,
                        reason,
                    });
                }
                prev = Some((row.seq, row.hash));
            }
            if i64::try_from(rows.len()).unwrap_or(i64::MAX) < VERIFY_PAGE {
                break;
            }
        }
        if report.first_bad.is_some() {
            tracing::warn!(store = %self.url, report = %report, "Audit log does not verify");
        }
        (report.last_seq, report.last_hash) = prev.unzip();
        Ok(report)
    }

    /// Up to `limit` audit records in `seq` order, those after `after_seq` (0 for the
    /// start) appended at or after `since_ms` (unix milliseconds; `None` for all). To
    /// export everything, call again with the last `seq` returned until the answer is
    /// empty. Memory use grows with `limit`: keep it to a few thousand.
    pub async fn audit_since(
        &self,
        since_ms: Option<i64>,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(select_audit!(
            "WHERE seq > $1 AND at >= $2 ORDER BY seq LIMIT $3"
        ))
        .bind(after_seq)
        .bind(since_ms.unwrap_or(i64::MIN))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|source| self.query_error("read the audit log", source))?;
        rows.iter()
            .map(|row| {
                let row = self.stored_row(row)?;
                let data =
                    RawValue::from_string(row.data).map_err(|e| StoreError::CorruptAudit {
                        url: self.url.to_string(),
                        seq: row.seq,
                        column: "data",
                        detail: e.to_string(),
                    })?;
                Ok(AuditRecord {
                    seq: row.seq,
                    at: row.at,
                    host: row.host,
                    kind: row.kind,
                    subject: row.subject,
                    actor: row.actor,
                    data,
                    prev_hash: row.prev_hash,
                    hash: row.hash,
                })
            })
            .collect()
    }

    fn stored_row(&self, row: &AnyRow) -> Result<StoredRow, StoreError> {
        let read = |source| self.query_error("read an audit record", source);
        Ok(StoredRow {
            seq: row.try_get("seq").map_err(read)?,
            at: row.try_get("at").map_err(read)?,
            host: row.try_get("host").map_err(read)?,
            kind: row.try_get("kind").map_err(read)?,
            subject: row.try_get("subject").map_err(read)?,
            actor: row.try_get("actor").map_err(read)?,
            data: row.try_get("data").map_err(read)?,
            prev_hash: row.try_get("prev_hash").map_err(read)?,
            hash: row.try_get("hash").map_err(read)?,
        })
    }
}
