//! Multi-row `INSERT`s in one transaction: how the recorder writes a batch of
//! events (or, in tests, of old-style statements) with a few round trips to the
//! store's worker instead of one per row, and safely again after a lost answer.

use super::{Store, StoreError};

/// Rows written by one multi-row `INSERT` (17 parameters a statement, 14 an event:
/// well under SQLite's 32766 and PostgreSQL's 65535). One row per `INSERT` would cost
/// a round trip to the store's worker thread per row.
pub(super) const ROWS_PER_INSERT: usize = 64;

/// `head` (`INSERT INTO t (…) VALUES `) followed by 0, 1, … [`ROWS_PER_INSERT`] rows of
/// `columns` placeholders, indexed by row count, for a table whose key makes a row
/// already stored a no-op. PostgreSQL numbers its parameters (`$1`); `SQLite` gets
/// anonymous `?`, because looking a numbered parameter up by name costs SQLite a scan
/// of all of them, quadratic over a long `INSERT`.
pub(super) fn batch_inserts(head: &str, columns: usize, numbered: bool) -> Vec<String> {
    (0..=ROWS_PER_INSERT)
        .map(|n| batch_insert(head, columns, n, numbered))
        .collect()
}

/// `head` followed by `rows` rows of `columns` placeholders (see [`batch_inserts`]).
pub(super) fn batch_insert(head: &str, columns: usize, rows: usize, numbered: bool) -> String {
    let mut sql = String::from(head);
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 1..=columns {
            if column > 1 {
                sql.push_str(", ");
            }
            if numbered {
                sql.push('$');
                sql.push_str(&(row * columns + column).to_string());
            } else {
                sql.push('?');
            }
        }
        sql.push(')');
    }
    sql.push_str(" ON CONFLICT (session_id, seq) DO NOTHING");
    sql
}

/// A query on the store, as the batch inserts build it.
pub(super) type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

impl Store {
    /// Writes `rows` in one transaction through the recorder's connection (`op` names
    /// it in errors): all of them or none, and `then` (the journal's new position)
    /// with them. Each `INSERT` takes the next `chunk(rest)` rows, with the text
    /// `sql(count)` and each row's values from `bind`. A row whose key is already
    /// stored is skipped with a warning naming `noun`, so writing a batch again after
    /// a commit whose answer was lost is safe.
    pub(super) async fn insert_batch<'q, T>(
        &self,
        (op, noun): (&'static str, &str),
        rows: &'q [T],
        sql: impl Fn(usize) -> &'static str,
        chunk: impl Fn(&[T]) -> usize,
        bind: impl Fn(AnyQuery<'q>, &'q T) -> AnyQuery<'q>,
        then: Option<AnyQuery<'q>>,
    ) -> Result<(), StoreError> {
        if rows.is_empty() && then.is_none() {
            return Ok(());
        }
        // One INSERT is a transaction of its own: a batch that fits in one goes
        // without BEGIN and COMMIT, a third of the round trips to the store.
        if then.is_none() && chunk(rows) >= rows.len() {
            let query = rows.iter().fold(sqlx::query(sql(rows.len())), &bind);
            let done = query
                .execute(&self.writer)
                .await
                .map_err(|source| self.query_error(op, source))?;
            let skipped = (rows.len() as u64).saturating_sub(done.rows_affected());
            self.warn_skipped(noun, skipped);
            return Ok(());
        }
        let mut tx = self
            .writer
            .begin()
            .await
            .map_err(|source| self.query_error(op, source))?;
        let mut skipped = 0_u64;
        let mut rest = rows;
        while !rest.is_empty() {
            let (now, tail) = rest.split_at(chunk(rest).clamp(1, rest.len()));
            rest = tail;
            let query = now.iter().fold(sqlx::query(sql(now.len())), &bind);
            let done = query
                .execute(&mut *tx)
                .await
                .map_err(|source| self.query_error(op, source))?;
            skipped += (now.len() as u64).saturating_sub(done.rows_affected());
        }
        if let Some(then) = then {
            then.execute(&mut *tx)
                .await
                .map_err(|source| self.query_error(op, source))?;
        }
        tx.commit()
            .await
            .map_err(|source| self.query_error(op, source))?;
        self.warn_skipped(noun, skipped);
        Ok(())
    }

    /// Says that `skipped` rows of a batch were already stored (the insert ignores
    /// duplicates).
    fn warn_skipped(&self, noun: &str, skipped: u64) {
        if skipped > 0 {
            tracing::warn!(
                store = %self.url,
                skipped,
                "{noun} already stored were kept as they were (a retried write, or a \
                 session recorded twice)"
            );
        }
    }
}
