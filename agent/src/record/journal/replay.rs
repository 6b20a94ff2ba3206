//! Opening the journal at start: what the previous run appended but did not store
//! (it died first) is stored now, each record the next link of its session's chain as
//! the store has it; then every old segment goes and a fresh one starts. Also the
//! store's side of the journal: its position row and the mark written with batches.

use super::{
    Journal, JournalError, Open, Position, create_segment, io_error, prepare_dir, read_segment,
    segment_path, segments,
};
use crate::record::{
    ChainDigest, GENESIS_HASH, Recordable, SessionId, Store, StoreError, batch::AnyQuery,
    events::Encoded, now_ms,
};
use sqlx::Row as _;
use std::{
    collections::HashMap,
    fs,
    path::Path,
    sync::{Arc, Mutex, atomic::AtomicU64},
};

/// Records stored per transaction while replaying.
const REPLAY_BATCH: usize = 512;

/// The journal's position written in the transaction of a batch of its records.
#[derive(Debug, Clone)]
pub struct Mark {
    pub journal: Arc<str>,
    pub position: Position,
}

impl Journal {
    /// Opens the journal in `dir` (made on first use), stores what it holds past
    /// the position `store` has for it, and starts a fresh segment. Fails when the
    /// store refuses the replayed records: the journal is then kept as it was.
    pub async fn open(dir: &Path, store: &Store) -> Result<Journal, JournalError> {
        let (id, lock) = prepare_dir(dir)?;
        let id: Arc<str> = id.into();
        let stored = store.journal_position(&id).await?;
        let numbers = segments(dir)?;
        let replayed = replay(dir, &id, &numbers, stored, store).await?;
        if replayed > 0 {
            tracing::warn!(
                records = replayed,
                journal = %dir.display(),
                "Stored the records the previous run had journaled but not written (it did \
                 not stop cleanly)"
            );
        }
        for &number in &numbers {
            let path = segment_path(dir, number);
            fs::remove_file(&path).map_err(io_error(&path))?;
        }
        let last = numbers.last().copied().max(stored.map(|p| p.segment));
        let number = last.unwrap_or(0).saturating_add(1);
        let file = create_segment(dir, number)?;
        Ok(Journal {
            dir: dir.to_owned(),
            id,
            _lock: lock,
            open: Mutex::new(Open {
                number,
                file,
                end: super::MAGIC.len() as u64,
                broken: false,
            }),
            oldest: AtomicU64::new(number),
        })
    }
}

/// Stores the records of segments `numbers` past `stored`; returns how many.
async fn replay(
    dir: &Path,
    id: &Arc<str>,
    numbers: &[u64],
    stored: Option<Position>,
    store: &Store,
) -> Result<usize, JournalError> {
    let mut chains: HashMap<SessionId, ChainDigest> = HashMap::new();
    let mut batch = Vec::with_capacity(REPLAY_BATCH);
    let mut count = 0;
    let mut last = None;
    for &number in numbers {
        let from = match stored {
            Some(p) if p.segment > number => continue,
            Some(p) if p.segment == number => p.end,
            _ => 0,
        };
        let (entries, problem) = read_segment(dir, number, from)?;
        if let Some(problem) = problem {
            tracing::warn!(segment = %segment_path(dir, number).display(), %problem, "Journal segment read up to a damaged tail");
        }
        for (position, payload) in entries {
            let record: Recordable = match rmp_serde::from_slice(&payload) {
                Ok(record) => record,
                Err(error) => {
                    tracing::error!(%error, lost = 1, "A journal entry cannot be read back; its record is lost");
                    continue;
                }
            };
            let session = record.session_id().clone();
            if !chains.contains_key(&session) {
                let chain = store.chain_digest(&session).await?;
                chains.insert(session.clone(), chain);
            }
            if let Some(chain) = chains.get_mut(&session) {
                batch.push(record.link(chain));
            }
            count += 1;
            last = Some(position);
            if batch.len() >= REPLAY_BATCH {
                write(store, &mut batch, id, position).await?;
            }
        }
    }
    if let Some(position) = last.filter(|_| !batch.is_empty()) {
        write(store, &mut batch, id, position).await?;
    }
    Ok(count)
}

async fn write(
    store: &Store,
    batch: &mut Vec<Encoded>,
    id: &Arc<str>,
    position: Position,
) -> Result<(), StoreError> {
    let mark = Mark {
        journal: Arc::clone(id),
        position,
    };
    store.insert_events(batch, Some(&mark)).await?;
    batch.clear();
    Ok(())
}

impl Store {
    /// Where the journal `id` stands in this store: `None` before its first record.
    async fn journal_position(&self, id: &str) -> Result<Option<Position>, StoreError> {
        let row = sqlx::query("SELECT segment, position FROM journal_positions WHERE journal = $1")
            .bind(id)
            .fetch_optional(&self.writer)
            .await
            .map_err(|source| self.query_error("read the journal position", source))?;
        Ok(row.map(|row| Position {
            segment: row
                .try_get::<i64, _>(0)
                .map_or(0, |n| u64::try_from(n).unwrap_or(0)),
            end: row
                .try_get::<i64, _>(1)
                .map_or(0, |n| u64::try_from(n).unwrap_or(0)),
        }))
    }

    /// Where `session`'s event chain stands in the store.
    async fn chain_digest(&self, session: &SessionId) -> Result<ChainDigest, StoreError> {
        let row = sqlx::query(
            "SELECT seq, hash FROM events WHERE session_id = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(session.as_str())
        .fetch_optional(&self.writer)
        .await
        .map_err(|source| self.query_error("read a session's last event", source))?;
        Ok(match row {
            Some(row) => ChainDigest {
                count: row
                    .try_get(0)
                    .map_err(|source| self.query_error("read a session's last event", source))?,
                last_hash: row
                    .try_get(1)
                    .map_err(|source| self.query_error("read a session's last event", source))?,
            },
            None => ChainDigest {
                count: 0,
                last_hash: GENESIS_HASH.to_owned(),
            },
        })
    }

    /// The statement that moves `mark`'s journal row to its position.
    pub(in crate::record) fn mark_query<'q>(&'q self, mark: &'q Mark) -> AnyQuery<'q> {
        sqlx::query(
            "INSERT INTO journal_positions (journal, host, segment, position, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (journal) DO UPDATE SET \
             segment = excluded.segment, position = excluded.position, \
             updated_at_ms = excluded.updated_at_ms",
        )
        .bind(&*mark.journal)
        .bind(self.host())
        .bind(i64::try_from(mark.position.segment).unwrap_or(i64::MAX))
        .bind(i64::try_from(mark.position.end).unwrap_or(i64::MAX))
        .bind(now_ms())
    }
}
