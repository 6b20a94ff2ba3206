//! Approval requests and the approvals given to them.
//!
//! Every status change is a conditional update (`… WHERE status = 'pending'`), so
//! when two deciders race (two approvers, an approver and the clock, two gateways),
//! exactly one change wins and the others learn they were too late.

use super::{Store, StoreError, session::now_ms};
use crate::identity::{Approver, Principal};
use serde::{Deserialize, Serialize};
use sqlx::{Row as _, any::AnyRow};

/// Where a request stands. Everything but `Pending` is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestStatus {
    Pending,
    Approved,
    Denied,
    Timeout,
    Abandoned,
}

impl RequestStatus {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Timeout => "timeout",
            Self::Abandoned => "abandoned",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Approved,
            Self::Denied,
            Self::Timeout,
            Self::Abandoned,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

impl std::fmt::Display for RequestStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request to create.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub target: String,
    pub protocol: String,
    pub action: serde_json::Value,
    pub summary: String,
    pub principal: Principal,
    pub session_id: Option<String>,
    pub rule: Option<String>,
    pub approvers: Vec<String>,
    pub quorum: u32,
    pub expires_at: i64,
    /// Why the requester says they need it, if they said.
    pub justification: Option<String>,
}

/// One approval given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    /// Whom the approval is counted for, once: `uid:1000`, `idp:ISSUER#SUBJECT`.
    pub approver_key: String,
    /// Who, for people: `alice (uid 1000)`, `alice@example.com (idp)`.
    pub approver_label: String,
    /// Who, in one word, as "approved by …" names them: `alice`, `alice@example.com`.
    pub approver: String,
    /// The uid of a local approver; `None` for an identity-provider one.
    pub approver_uid: Option<u32>,
    pub at: i64,
    pub reason: Option<String>,
}

/// A request as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestRecord {
    pub id: String,
    pub host: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub target: String,
    pub protocol: String,
    pub action: serde_json::Value,
    pub summary: String,
    pub principal: Principal,
    pub session_id: Option<String>,
    pub rule: Option<String>,
    pub approvers: Vec<String>,
    pub quorum: u32,
    /// `review`, or `escalated` after the first timeout with an escalation.
    pub stage: String,
    pub status: RequestStatus,
    pub decided_at: Option<i64>,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    pub approvals: Vec<ApprovalRecord>,
    /// Why the requester says they need it, if they said.
    #[serde(default)]
    pub justification: Option<String>,
}

const SELECT: &str = "SELECT id, host, created_at, expires_at, target, protocol, action, summary, principal, \
     session_id, rule, approvers, quorum, stage, status, decided_at, decided_by, reason, justification FROM requests";

impl Store {
    /// Records a new pending request.
    pub async fn create_request(&self, r: &NewRequest) -> Result<RequestRecord, StoreError> {
        let id = uuid::Uuid::now_v7().to_string();
        let json = |v: &dyn erased::Json| {
            v.json().map_err(|source| StoreError::Encode {
                op: "encode a request as JSON",
                source,
            })
        };
        sqlx::query(
            "INSERT INTO requests (id, host, created_at, expires_at, target, protocol, action, summary, principal, \
             requester_uid, session_id, rule, approvers, quorum, stage, status, justification) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 'review', 'pending', $15)",
        )
        .bind(&id)
        .bind(self.host())
        .bind(now_ms())
        .bind(r.expires_at)
        .bind(&r.target)
        .bind(&r.protocol)
        .bind(json(&r.action)?)
        .bind(&r.summary)
        .bind(json(&r.principal)?)
        .bind(i64::from(r.principal.uid))
        .bind(r.session_id.as_deref())
        .bind(r.rule.as_deref())
        .bind(json(&r.approvers)?)
        .bind(i64::from(r.quorum))
        .bind(r.justification.as_deref())
        .execute(&self.pool)
        .await
        .map_err(|source| self.query_error("record an approval request", source))?;
        self.request(&id)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                url: self.url.to_string(),
                id,
            })
    }

    /// One request by id or unique prefix, with its approvals.
    pub async fn request(&self, id_or_prefix: &str) -> Result<Option<RequestRecord>, StoreError> {
        let Some(row) = self
            .row_by_id(SELECT, id_or_prefix, "look a request up")
            .await?
        else {
            return Ok(None);
        };
        let mut record = self.request_from_row(&row)?;
        record.approvals = self.approvals(&record.id).await?;
        Ok(Some(record))
    }

    /// Requests, newest first: only pending ones, or all.
    pub async fn requests(
        &self,
        pending_only: bool,
        limit: u32,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        let filter = if pending_only {
            "WHERE status = 'pending' "
        } else {
            ""
        };
        let rows = sqlx::query(&format!(
            "{SELECT} {filter}ORDER BY created_at DESC, id DESC LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|source| self.query_error("list requests", source))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut r = self.request_from_row(row)?;
            r.approvals = self.approvals(&r.id).await?;
            out.push(r);
        }
        Ok(out)
    }

    /// Adds `approver`'s approval, counted under [`Approver::key`]; `Ok(false)` if
    /// they had already approved.
    pub async fn add_approval(
        &self,
        id: &str,
        approver: &Approver,
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        let key = approver.key();
        let identity = serde_json::to_string(approver).map_err(|source| StoreError::Encode {
            op: "encode an approver as JSON",
            source,
        })?;
        let exists =
            sqlx::query("SELECT 1 FROM approvals WHERE request_id = $1 AND approver_key = $2")
                .bind(id)
                .bind(&key)
                .fetch_optional(&self.pool)
                .await
                .map_err(|source| self.query_error("look an approval up", source))?;
        if exists.is_some() {
            return Ok(false);
        }
        let done = sqlx::query(
            "INSERT INTO approvals (request_id, approver_key, approver_uid, approver, approver_label, identity, at, reason) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id)
        .bind(&key)
        .bind(approver.uid().map(i64::from))
        .bind(approver.name())
        .bind(approver.label())
        .bind(identity)
        .bind(now_ms())
        .bind(reason)
        .execute(&self.pool)
        .await;
        match done {
            Ok(_) => Ok(true),
            // A concurrent insert by the same approver (primary key): counted once.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
            Err(source) => Err(self.query_error("record an approval", source)),
        }
    }

    /// Ends a pending request with `status`. `Ok(false)` if it was no longer pending
    /// (someone or something else decided first).
    pub async fn finish_request(
        &self,
        id: &str,
        status: RequestStatus,
        decided_by: &str,
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE requests SET status = $1, decided_at = $2, decided_by = $3, reason = $4 WHERE id = $5 AND status = 'pending'",
        )
        .bind(status.as_str())
        .bind(now_ms())
        .bind(decided_by)
        .bind(reason)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(|source| self.query_error("record a decision", source))?;
        Ok(done.rows_affected() == 1)
    }

    /// Moves a pending request to its escalation stage.
    pub async fn escalate_request(
        &self,
        id: &str,
        approvers: &[String],
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        let approvers = serde_json::to_string(approvers).map_err(|source| StoreError::Encode {
            op: "encode approvers",
            source,
        })?;
        let done = sqlx::query(
            "UPDATE requests SET stage = 'escalated', approvers = $1, expires_at = $2 WHERE id = $3 AND status = 'pending' AND stage = 'review'",
        )
        .bind(approvers)
        .bind(expires_at)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(|source| self.query_error("escalate a request", source))?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks every request still pending on this host as abandoned: their clients'
    /// connections died with the daemon, so they must never be approved into effect.
    pub async fn abandon_pending_of_this_host(&self, reason: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE requests SET status = 'abandoned', decided_at = $1, decided_by = 'portcullis', reason = $2 \
             WHERE status = 'pending' AND host = $3",
        )
        .bind(now_ms())
        .bind(reason)
        .bind(self.host())
        .execute(&self.pool)
        .await
        .map_err(|source| self.query_error("abandon pending requests", source))?;
        Ok(done.rows_affected())
    }

    async fn approvals(&self, id: &str) -> Result<Vec<ApprovalRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT approver_key, approver_label, approver, approver_uid, at, reason \
             FROM approvals WHERE request_id = $1 ORDER BY at, approver_key",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(|source| self.query_error("list approvals", source))?;
        let read = |source| self.query_error("read an approval row", source);
        rows.iter()
            .map(|row| {
                let uid: Option<i64> = row.try_get("approver_uid").map_err(read)?;
                Ok(ApprovalRecord {
                    approver_key: row.try_get("approver_key").map_err(read)?,
                    approver_label: row.try_get("approver_label").map_err(read)?,
                    approver: row.try_get("approver").map_err(read)?,
                    approver_uid: uid.map(|uid| u32::try_from(uid).unwrap_or(u32::MAX)),
                    at: row.try_get("at").map_err(read)?,
                    reason: row.try_get("reason").map_err(read)?,
                })
            })
            .collect()
    }

    fn request_from_row(&self, row: &AnyRow) -> Result<RequestRecord, StoreError> {
        let read = |source| self.query_error("read a request row", source);
        let id: String = row.try_get("id").map_err(read)?;
        let corrupt = |column, detail: String| StoreError::Corrupt {
            url: self.url.to_string(),
            id: id.clone(),
            column,
            detail,
        };
        let text = |column| -> Result<String, StoreError> { row.try_get(column).map_err(read) };
        let action =
            serde_json::from_str(&text("action")?).map_err(|e| corrupt("action", e.to_string()))?;
        let principal = serde_json::from_str(&text("principal")?)
            .map_err(|e| corrupt("principal", e.to_string()))?;
        let approvers = serde_json::from_str(&text("approvers")?)
            .map_err(|e| corrupt("approvers", e.to_string()))?;
        let status = text("status")?;
        let status =
            RequestStatus::parse(&status).ok_or_else(|| corrupt("status", status.clone()))?;
        let quorum: i64 = row.try_get("quorum").map_err(read)?;
        Ok(RequestRecord {
            host: text("host")?,
            created_at: row.try_get("created_at").map_err(read)?,
            expires_at: row.try_get("expires_at").map_err(read)?,
            target: text("target")?,
            protocol: text("protocol")?,
            action,
            summary: text("summary")?,
            principal,
            session_id: row.try_get("session_id").map_err(read)?,
            rule: row.try_get("rule").map_err(read)?,
            approvers,
            quorum: u32::try_from(quorum).unwrap_or(1),
            stage: text("stage")?,
            status,
            decided_at: row.try_get("decided_at").map_err(read)?,
            decided_by: row.try_get("decided_by").map_err(read)?,
            reason: row.try_get("reason").map_err(read)?,
            approvals: Vec::new(),
            justification: row.try_get("justification").map_err(read)?,
            id,
        })
    }
}

/// Serialising a few different types through one closure.
mod erased {
    pub trait Json {
        fn json(&self) -> Result<String, serde_json::Error>;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> Result<String, serde_json::Error> {
            serde_json::to_string(self)
        }
    }
}
