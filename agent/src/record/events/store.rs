//! The event log in the store: batch inserts, reading a session's events (those
//! recorded as `statements` before events existed included), and checking a session's
//! chain against the digest its `session_closed` audit record carries.

use super::{ChainDigest, Encoded, EventRecord};
use crate::record::{
    Backend, SessionId, StatementRecord, Store, StoreError,
    batch::{ROWS_PER_INSERT, batch_insert, batch_inserts},
    journal::Mark,
};
use serde_json::Value;
use sqlx::{Row as _, any::AnyRow};
use std::cmp::Ordering;

/// Columns of the `events` table, in insert order.
const COLUMNS: &str = "session_id, seq, at_ms, kind, summary, details, verdict, decided_by, \
    request_id, reason, duration_us, error, payload, hash";
const COLUMN_COUNT: usize = 14;

/// How many events verification reads per query.
const VERIFY_PAGE: u32 = 1000;

/// Rows of the large `INSERT` a full batch is written with (3,584 parameters), so a
/// batch of 512 events costs the store's worker two round trips, not eight. What is
/// left goes in `INSERT`s of at most [`ROWS_PER_INSERT`].
const BIG_INSERT: usize = 256;

/// `INSERT` of `rows` events (at most [`ROWS_PER_INSERT`], or [`BIG_INSERT`]), built
/// once per row count and backend.
fn insert_sql(backend: Backend, rows: usize) -> &'static str {
    type Texts = (Vec<String>, String);
    static SQL: std::sync::OnceLock<[Texts; 2]> = std::sync::OnceLock::new();
    let [sqlite, postgres] = SQL.get_or_init(|| {
        let head = format!("INSERT INTO events ({COLUMNS}) VALUES ");
        [false, true].map(|numbered| {
            (
                batch_inserts(&head, COLUMN_COUNT, numbered),
                batch_insert(&head, COLUMN_COUNT, BIG_INSERT, numbered),
            )
        })
    });
    let (small, big) = match backend {
        Backend::Sqlite => sqlite,
        Backend::Postgres => postgres,
    };
    if rows == BIG_INSERT {
        return big;
    }
    small.get(rows).map_or("", String::as_str)
}

/// The next `INSERT`'s share of `rest`.
fn next_chunk(rest: &[Encoded]) -> usize {
    if rest.len() >= BIG_INSERT {
        BIG_INSERT
    } else {
        rest.len().min(ROWS_PER_INSERT)
    }
}

/// A link of a session's chain, as verification walks it: an event, or a statement
/// recorded before events existed.
trait Link {
    fn seq(&self) -> i64;
    fn hash(&self) -> &str;
    fn chain_hash(&self, prev_hash: &str) -> String;
}

impl Link for EventRecord {
    fn seq(&self) -> i64 {
        self.seq
    }
    fn hash(&self) -> &str {
        &self.hash
    }
    fn chain_hash(&self, prev_hash: &str) -> String {
        EventRecord::chain_hash(self, prev_hash)
    }
}

impl Link for StatementRecord {
    fn seq(&self) -> i64 {
        self.seq
    }
    fn hash(&self) -> &str {
        &self.hash
    }
    fn chain_hash(&self, prev_hash: &str) -> String {
        StatementRecord::chain_hash(self, prev_hash)
    }
}

impl Store {
    /// Writes `batch` in one transaction: all of it or none (see
    /// [`Store::insert_batch`]), and with it the journal position `mark` when the
    /// records came through the journal.
    pub(in crate::record) async fn insert_events(
        &self,
        batch: &[Encoded],
        mark: Option<&Mark>,
    ) -> Result<(), StoreError> {
        let sql = |rows| insert_sql(self.backend, rows);
        self.insert_batch(
            ("record events", "Events"),
            batch,
            sql,
            next_chunk,
            |query, encoded| {
                let Encoded { record: r, details } = encoded;
                query
                    .bind(r.session_id.as_str())
                    .bind(r.seq)
                    .bind(r.at_ms)
                    .bind(&r.kind)
                    .bind(&r.summary)
                    .bind(details.as_deref())
                    .bind(&r.verdict)
                    .bind(r.decided_by.as_deref())
                    .bind(r.request_id.as_deref())
                    .bind(r.reason.as_deref())
                    .bind(r.duration_us)
                    .bind(r.error.as_deref())
                    .bind(r.payload.as_deref())
                    .bind(&r.hash)
            },
            mark.map(|mark| self.mark_query(mark)),
        )
        .await
    }

    /// Up to `limit` events of `session` in `seq` order, those after `after_seq` (0
    /// for the start). A session recorded before events existed has its statements
    /// read as `sql` events. To read them all, call again with the last `seq`
    /// returned until the answer is shorter than `limit`.
    pub async fn events(
        &self,
        session: &SessionId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let events = self.stored_events(session, after_seq, limit).await?;
        if !events.is_empty() {
            return Ok(events);
        }
        let legacy = self.statements(session, after_seq, limit).await?;
        Ok(legacy
            .into_iter()
            .map(EventRecord::from_statement)
            .collect())
    }

    async fn stored_events(
        &self,
        session: &SessionId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM events WHERE session_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ))
        .bind(session.as_str())
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|source| self.query_error("read recorded events", source))?;
        rows.iter()
            .map(|row| self.event_from_row(session, row))
            .collect()
    }

    /// Why the events (or, for a session recorded before events existed, the
    /// statements) stored for the session a `session_closed` audit record closed do
    /// not match the digest it carries; `None` if they match or it carries none.
    pub(in crate::record) async fn chain_misfit(
        &self,
        kind: &str,
        subject: &str,
        data: &str,
    ) -> Result<Option<String>, StoreError> {
        if kind != "session_closed" {
            return Ok(None);
        }
        // Data that is not JSON cannot carry a digest; the audit chain judges it.
        let Ok(mut data) = serde_json::from_str::<Value>(data) else {
            return Ok(None);
        };
        // SessionId's constructor is private to `session`; its serde form is the id.
        let Ok(session) = serde_json::from_value::<SessionId>(Value::from(subject)) else {
            return Ok(None);
        };
        for (key, noun) in [("events", "event"), ("statements", "statement")] {
            let Some(digest) = data.get_mut(key).map(Value::take).filter(|d| !d.is_null()) else {
                continue;
            };
            let why = match serde_json::from_value::<ChainDigest>(digest) {
                Err(e) => Some(format!("the digest in this record is unreadable ({e})")),
                Ok(digest) if key == "events" => {
                    let pages = |after| self.stored_events(&session, after, VERIFY_PAGE);
                    walk(pages, &digest, noun).await?
                }
                Ok(digest) => {
                    let pages = |after| self.statements(&session, after, VERIFY_PAGE);
                    walk(pages, &digest, noun).await?
                }
            };
            if let Some(why) = why {
                return Ok(Some(format!("{key} of session {subject}: {why}")));
            }
        }
        Ok(None)
    }

    fn event_from_row(&self, session: &SessionId, row: &AnyRow) -> Result<EventRecord, StoreError> {
        let read = |source| self.query_error("read a recorded event", source);
        let seq: i64 = row.try_get("seq").map_err(read)?;
        let details: Option<String> = row.try_get("details").map_err(read)?;
        let details = details
            .map(|t| serde_json::from_str(&t))
            .transpose()
            .map_err(|e| StoreError::Corrupt {
                url: self.url.to_string(),
                id: session.to_string(),
                column: "details",
                detail: format!("event {seq}: {e}"),
            })?;
        Ok(EventRecord {
            session_id: session.clone(),
            seq,
            at_ms: row.try_get("at_ms").map_err(read)?,
            kind: row.try_get("kind").map_err(read)?,
            summary: row.try_get("summary").map_err(read)?,
            details,
            verdict: row.try_get("verdict").map_err(read)?,
            decided_by: row.try_get("decided_by").map_err(read)?,
            request_id: row.try_get("request_id").map_err(read)?,
            reason: row.try_get("reason").map_err(read)?,
            duration_us: row.try_get("duration_us").map_err(read)?,
            error: row.try_get("error").map_err(read)?,
            payload: row.try_get("payload").map_err(read)?,
            hash: row.try_get("hash").map_err(read)?,
        })
    }
}

/// Walks a session's stored chain page by page (`pages(after_seq)`) and says why it
/// does not match `digest`, naming links as `noun`s; `None` if it matches.
async fn walk<L: Link, F>(
    mut pages: impl FnMut(i64) -> F,
    digest: &ChainDigest,
    noun: &str,
) -> Result<Option<String>, StoreError>
where
    F: Future<Output = Result<Vec<L>, StoreError>>,
{
    let mut chain = ChainDigest::empty();
    loop {
        let page = match pages(chain.count).await {
            Ok(page) => page,
            Err(StoreError::Corrupt { detail, .. }) => {
                return Ok(Some(format!("a stored row is unreadable ({detail})")));
            }
            Err(other) => return Err(other),
        };
        let full = page.len() >= VERIFY_PAGE as usize;
        for link in page {
            let want = chain.count.saturating_add(1);
            if link.seq() != want {
                return Ok(Some(format!(
                    "{noun} {want} is missing (the next stored is {}): deleted?",
                    link.seq()
                )));
            }
            if link.chain_hash(&chain.last_hash) != link.hash() {
                return Ok(Some(format!(
                    "{noun} {} does not match its hash: edited, or the one before it rewritten",
                    link.seq()
                )));
            }
            chain.count = link.seq();
            link.hash().clone_into(&mut chain.last_hash);
        }
        if !full {
            break;
        }
    }
    Ok(match chain.count.cmp(&digest.count) {
        Ordering::Greater => Some(format!(
            "{} {noun}s are stored but {} were recorded: rows inserted after the session closed",
            chain.count, digest.count
        )),
        Ordering::Less => Some(format!(
            "{} {noun}s were recorded but only {} are stored: deleted, or lost to a write \
             failure (the daemon's log says `Events lost` then)",
            digest.count, chain.count
        )),
        Ordering::Equal if chain.last_hash != digest.last_hash => Some(format!(
            "the last {noun}'s hash differs from the one recorded at close: the rows were \
             rewritten"
        )),
        Ordering::Equal => None,
    })
}
