//! Sessions: one row per intercepted connection, written when it opens and updated when
//! it ends.

use super::{Store, StoreError};
use crate::identity::Principal;
use serde::{Deserialize, Serialize};
use sqlx::{Row, any::AnyRow};
use std::{fmt, str::FromStr};

/// How many sessions [`SessionFilter::default`] returns.
pub const DEFAULT_LIMIT: u32 = 100;

/// Shortest id prefix [`Store::session`] looks up.
pub const MIN_PREFIX: usize = 4;

/// Length of a full id (a hyphenated UUID).
const ID_LEN: usize = 36;

/// The columns of a [`SessionRecord`], in one place for every `SELECT`.
macro_rules! select_sessions {
    ($($tail:literal)+) => {
        concat!(
            "SELECT id, host, started_at, ended_at, protocol, target, client_addr, orig_dst, ",
            "principal, outcome, rule, reason, bytes_up, bytes_down FROM sessions ",
            $($tail),+
        )
    };
}

// ---- types ----

/// A session's id: a lowercase hyphenated `UUIDv7`, so ids sort by creation time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(String);

impl SessionId {
    pub(super) fn generate() -> Self {
        Self(uuid::Uuid::now_v7().hyphenated().to_string())
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a session went, or is going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Allowed and still relaying.
    Open,
    /// Allowed, relayed, and ended normally.
    Closed,
    /// The gate said no.
    Denied,
    /// Refused before the gate: the connection could not be attributed to a process.
    Refused,
    /// Allowed, but ended by a failure (upstream unreachable, protocol error…).
    Error,
}

impl Outcome {
    /// The word stored in the database and printed by the CLI.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
            Self::Denied => "denied",
            Self::Refused => "refused",
            Self::Error => "error",
        }
    }

    /// Whether a session with this outcome has ended.
    #[must_use]
    pub fn is_final(self) -> bool {
        self != Self::Open
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that is not an [`Outcome`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown outcome `{0}`: expected open, closed, denied, refused or error")]
pub struct UnknownOutcome(String);

impl FromStr for Outcome {
    type Err = UnknownOutcome;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "open" => Ok(Self::Open),
            "closed" => Ok(Self::Closed),
            "denied" => Ok(Self::Denied),
            "refused" => Ok(Self::Refused),
            "error" => Ok(Self::Error),
            other => Err(UnknownOutcome(other.to_owned())),
        }
    }
}

/// What is known when a session starts.
///
/// With a final `outcome` ([`Outcome::Denied`], [`Outcome::Refused`]…) the session is
/// recorded as already ended (`ended_at = started_at`, no bytes): one call records a
/// connection that was never relayed, and no [`Store::close_session`] is needed.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// `tcp`, `postgres`, `ssh`, `http`.
    pub protocol: String,
    /// Name of the policy target the connection was aimed at, if one matched.
    pub target: Option<String>,
    pub client_addr: String,
    /// Where the client meant to connect, when the kernel told us.
    pub orig_dst: Option<String>,
    /// Who connected; `None` when the connection could not be attributed.
    pub principal: Option<Principal>,
    pub outcome: Outcome,
    /// The policy rule that decided.
    pub rule: Option<String>,
    /// Why, in words, for a person reading the record.
    pub reason: Option<String>,
}

/// What is known when a session ends.
#[derive(Debug, Clone)]
pub struct SessionEnd {
    /// Should be final ([`Outcome::is_final`]); stored as given.
    pub outcome: Outcome,
    /// Replaces the reason given at open; `None` keeps it.
    pub reason: Option<String>,
    /// Bytes from client to target.
    pub bytes_up: u64,
    /// Bytes from target to client.
    pub bytes_down: u64,
}

/// Which sessions [`Store::sessions`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionFilter {
    /// Only sessions of this unix user.
    pub uid: Option<u32>,
    /// At most this many (the newest).
    pub limit: u32,
}

impl Default for SessionFilter {
    fn default() -> Self {
        Self {
            uid: None,
            limit: DEFAULT_LIMIT,
        }
    }
}

/// One recorded session as read back from the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub id: SessionId,
    /// The gateway host that proxied it.
    pub host: String,
    /// Unix milliseconds.
    pub started_at: i64,
    /// Unix milliseconds; `None` while open.
    pub ended_at: Option<i64>,
    pub protocol: String,
    pub target: Option<String>,
    pub client_addr: String,
    pub orig_dst: Option<String>,
    pub principal: Option<Principal>,
    pub outcome: Outcome,
    pub rule: Option<String>,
    pub reason: Option<String>,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

// ---- store operations ----

impl Store {
    /// Records a new session and returns its id. See [`NewSession`] for sessions that
    /// end before they start (denied, refused).
    pub async fn open_session(&self, s: &NewSession) -> Result<SessionId, StoreError> {
        let id = SessionId::generate();
        let started_at = now_ms();
        let principal = s
            .principal
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|source| StoreError::Encode {
                op: "encode a principal as JSON",
                source,
            })?;
        sqlx::query(
            "INSERT INTO sessions (id, host, started_at, ended_at, protocol, target, \
             client_addr, orig_dst, uid, principal, outcome, rule, reason, bytes_up, bytes_down) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 0, 0)",
        )
        .bind(id.as_str())
        .bind(&*self.host)
        .bind(started_at)
        .bind(s.outcome.is_final().then_some(started_at))
        .bind(&s.protocol)
        .bind(s.target.as_deref())
        .bind(&s.client_addr)
        .bind(s.orig_dst.as_deref())
        .bind(s.principal.as_ref().map(|p| i64::from(p.uid)))
        .bind(principal)
        .bind(s.outcome.as_str())
        .bind(s.rule.as_deref())
        .bind(s.reason.as_deref())
        .execute(&self.pool)
        .await
        .map_err(|source| self.query_error("record a new session", source))?;
        Ok(id)
    }

    /// Records how a session ended: outcome, byte counts, and now as its end time.
    /// Closing a session again overwrites the earlier end.
    pub async fn close_session(&self, id: &SessionId, end: &SessionEnd) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET ended_at = $1, outcome = $2, reason = COALESCE($3, reason), \
             bytes_up = $4, bytes_down = $5 WHERE id = $6",
        )
        .bind(now_ms())
        .bind(end.outcome.as_str())
        .bind(end.reason.as_deref())
        .bind(saturating_i64(end.bytes_up))
        .bind(saturating_i64(end.bytes_down))
        .bind(id.as_str())
        .execute(&self.pool)
        .await
        .map_err(|source| self.query_error("record the end of a session", source))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                url: self.url.to_string(),
                id: id.to_string(),
            });
        }
        Ok(())
    }

    /// The newest sessions matching `filter`, newest first.
    pub async fn sessions(&self, filter: &SessionFilter) -> Result<Vec<SessionRecord>, StoreError> {
        let limit = i64::from(filter.limit);
        let rows = match filter.uid {
            Some(uid) => {
                sqlx::query(select_sessions!(
                    "WHERE uid = $1 ORDER BY started_at DESC, id DESC LIMIT $2"
                ))
                .bind(i64::from(uid))
                .bind(limit)
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query(select_sessions!(
                    "ORDER BY started_at DESC, id DESC LIMIT $1"
                ))
                .bind(limit)
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(|source| self.query_error("list sessions", source))?;
        rows.iter().map(|row| self.record_from_row(row)).collect()
    }

    /// One session by its full id or a unique prefix of at least [`MIN_PREFIX`]
    /// characters (case-insensitive). `Ok(None)` if nothing matches;
    /// [`StoreError::Ambiguous`] if the prefix matches several sessions.
    ///
    /// The first 12 hex digits of a `UUIDv7` are its creation time in milliseconds:
    /// sessions started within the same minute share their first 8 characters, so a
    /// useful prefix is usually 10 or more characters long.
    pub async fn session(&self, id_or_prefix: &str) -> Result<Option<SessionRecord>, StoreError> {
        let row = self
            .row_by_id(select_sessions!(""), id_or_prefix, "look a session up")
            .await?;
        row.map(|row| self.record_from_row(&row)).transpose()
    }

    /// The one row of `select` (a `SELECT … FROM table` without WHERE) whose id is
    /// `id_or_prefix` or starts with it; [`StoreError::Ambiguous`] if several do.
    pub(super) async fn row_by_id(
        &self,
        select: &str,
        id_or_prefix: &str,
        op: &'static str,
    ) -> Result<Option<AnyRow>, StoreError> {
        let rows = match IdPattern::parse(id_or_prefix)? {
            IdPattern::Exact(id) => {
                sqlx::query(&format!("{select} WHERE id = $1"))
                    .bind(id)
                    .fetch_all(&self.pool)
                    .await
            }
            IdPattern::Prefix(like) => {
                sqlx::query(&format!("{select} WHERE id LIKE $1 ORDER BY id LIMIT 2"))
                    .bind(like)
                    .fetch_all(&self.pool)
                    .await
            }
        }
        .map_err(|source| self.query_error(op, source))?;
        let mut rows = rows.into_iter();
        match (rows.next(), rows.next()) {
            (None, _) => Ok(None),
            (Some(row), None) => Ok(Some(row)),
            (Some(_), Some(_)) => Err(StoreError::Ambiguous {
                prefix: id_or_prefix.trim().to_ascii_lowercase(),
            }),
        }
    }

    fn record_from_row(&self, row: &AnyRow) -> Result<SessionRecord, StoreError> {
        let read = |source| self.query_error("read a session row", source);
        let id: String = row.try_get("id").map_err(read)?;
        let corrupt = |column, detail: String| StoreError::Corrupt {
            url: self.url.to_string(),
            id: id.clone(),
            column,
            detail,
        };
        let principal: Option<String> = row.try_get("principal").map_err(read)?;
        let principal = principal
            .map(|json| serde_json::from_str::<Principal>(&json))
            .transpose()
            .map_err(|e| corrupt("principal", e.to_string()))?;
        let outcome: String = row.try_get("outcome").map_err(read)?;
        let outcome = outcome
            .parse()
            .map_err(|e: UnknownOutcome| corrupt("outcome", e.to_string()))?;
        let bytes = |column| -> Result<u64, StoreError> {
            let n: i64 = row.try_get(column).map_err(read)?;
            u64::try_from(n).map_err(|_| corrupt(column, format!("negative: {n}")))
        };
        Ok(SessionRecord {
            host: row.try_get("host").map_err(read)?,
            started_at: row.try_get("started_at").map_err(read)?,
            ended_at: row.try_get("ended_at").map_err(read)?,
            protocol: row.try_get("protocol").map_err(read)?,
            target: row.try_get("target").map_err(read)?,
            client_addr: row.try_get("client_addr").map_err(read)?,
            orig_dst: row.try_get("orig_dst").map_err(read)?,
            principal,
            outcome,
            rule: row.try_get("rule").map_err(read)?,
            reason: row.try_get("reason").map_err(read)?,
            bytes_up: bytes("bytes_up")?,
            bytes_down: bytes("bytes_down")?,
            id: SessionId(id),
        })
    }
}

/// A full id, or a `LIKE` pattern for a unique prefix of one (sessions, requests).
pub(super) enum IdPattern {
    Exact(String),
    Prefix(String),
}

impl IdPattern {
    /// Validates a user-given id or prefix: UUID characters only, at least
    /// [`MIN_PREFIX`] of them, case-insensitive.
    pub(super) fn parse(id_or_prefix: &str) -> Result<Self, StoreError> {
        let wanted = id_or_prefix.trim().to_ascii_lowercase();
        let invalid = |reason| StoreError::InvalidId {
            id: id_or_prefix.chars().take(ID_LEN + 8).collect(),
            reason,
        };
        if wanted.len() > ID_LEN || !wanted.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return Err(invalid("ids are UUIDs: hex digits and dashes"));
        }
        if wanted.len() < MIN_PREFIX {
            return Err(invalid("give at least 4 characters of the id"));
        }
        // Safe as a LIKE pattern: `wanted` holds only hex digits and dashes.
        Ok(if wanted.len() == ID_LEN {
            Self::Exact(wanted)
        } else {
            Self::Prefix(format!("{wanted}%"))
        })
    }
}

/// Now, in unix milliseconds (0 if the clock is before 1970).
#[must_use]
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Byte counts are BIGINT (signed) in both databases.
fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
