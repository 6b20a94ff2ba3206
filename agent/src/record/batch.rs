//! The recorder's writes: multi-row `INSERT`s in one transaction, through the pool
//! the recorder owns ([`WritePool`]).
//!
//! A `SQLite` file is written through sqlx's native `SQLite` driver. The `Any` driver
//! the rest of the store uses copies every bound value once more on the way
//! (`AnyArguments` into `SqliteArguments`), which at hundreds of thousands of events a
//! second is a share of the recorder's CPU of its own. Rows say how they bind through
//! [`BatchRow`], once for both drivers.

use super::{Store, StoreError};
use sqlx::{
    Any, AnyPool, Database, Executor, IntoArguments, Pool, Sqlite, SqlitePool,
    any::{AnyArguments, AnyQueryResult},
    query::Query,
    sqlite::SqliteArguments,
};

/// The pool the recorder writes through (see [`Store`]'s `writer`).
#[derive(Clone)]
pub(super) enum WritePool {
    /// A `SQLite` file: one native connection of the recorder's own.
    Sqlite(SqlitePool),
    /// `PostgreSQL` or in-memory `SQLite`: the store's shared pool.
    Shared(AnyPool),
}

impl WritePool {
    pub(super) async fn close(&self) {
        match self {
            Self::Sqlite(pool) => pool.close().await,
            Self::Shared(pool) => pool.close().await,
        }
    }

    /// The native `SQLite` pool, for tests that hold or inspect its one connection.
    #[cfg(test)]
    pub(super) fn sqlite(&self) -> &SqlitePool {
        match self {
            Self::Sqlite(pool) => pool,
            Self::Shared(_) => panic!("the store writes through its shared pool"),
        }
    }
}

/// Binds a row's values, in column order, to a query of either driver.
pub(super) trait Binder<'q>: Sized {
    fn text(self, value: &'q str) -> Self;
    fn maybe_text(self, value: Option<&'q str>) -> Self;
    fn int(self, value: i64) -> Self;
    fn maybe_int(self, value: Option<i64>) -> Self;
}

/// Implements [`Binder`] for one driver's query type.
macro_rules! binder {
    ($db:ty, $args:ty) => {
        impl<'q> Binder<'q> for Query<'q, $db, $args> {
            fn text(self, value: &'q str) -> Self {
                self.bind(value)
            }
            fn maybe_text(self, value: Option<&'q str>) -> Self {
                self.bind(value)
            }
            fn int(self, value: i64) -> Self {
                self.bind(value)
            }
            fn maybe_int(self, value: Option<i64>) -> Self {
                self.bind(value)
            }
        }
    };
}
binder!(Any, AnyArguments<'q>);
binder!(Sqlite, SqliteArguments<'q>);

/// A row of a batch insert.
pub(super) trait BatchRow {
    /// Binds this row's values to `query`, in the table's column order.
    fn bind<'q, B: Binder<'q>>(&'q self, query: B) -> B;
}

impl Store {
    /// Writes `rows` in one transaction through the recorder's connection (`op` names
    /// it in errors): all of them or none. Each `INSERT` takes the next `chunk(rest)`
    /// rows, with the text `sql(count)`. A row whose key is already stored is skipped
    /// with a warning naming `noun`, so writing a batch again after a commit whose
    /// answer was lost is safe.
    pub(super) async fn insert_batch<T: BatchRow>(
        &self,
        (op, noun): (&'static str, &str),
        rows: &[T],
        sql: impl Fn(usize) -> &'static str,
        chunk: impl Fn(&[T]) -> usize,
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let skipped = match &self.writer {
            WritePool::Sqlite(pool) => insert_in(pool, rows, &sql, &chunk).await,
            WritePool::Shared(pool) => insert_in(pool, rows, &sql, &chunk).await,
        }
        .map_err(|source| self.query_error(op, source))?;
        if skipped > 0 {
            tracing::warn!(
                store = %self.url,
                skipped,
                "{noun} already stored were kept as they were (a retried write, or a \
                 session recorded twice)"
            );
        }
        Ok(())
    }
}

/// [`Store::insert_batch`] on one driver's pool; how many rows were already stored.
async fn insert_in<'q, DB, T>(
    pool: &Pool<DB>,
    rows: &'q [T],
    sql: &impl Fn(usize) -> &'static str,
    chunk: &impl Fn(&[T]) -> usize,
) -> Result<u64, sqlx::Error>
where
    DB: Database,
    T: BatchRow,
    Query<'q, DB, <DB as Database>::Arguments<'q>>: Binder<'q>,
    <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'c> &'c mut <DB as Database>::Connection: Executor<'c, Database = DB>,
    <DB as Database>::QueryResult: Into<AnyQueryResult>,
{
    let mut tx = pool.begin().await?;
    let mut skipped = 0_u64;
    let mut rest = rows;
    while !rest.is_empty() {
        let (now, tail) = rest.split_at(chunk(rest).clamp(1, rest.len()));
        rest = tail;
        let query = now
            .iter()
            .fold(sqlx::query::<DB>(sql(now.len())), |query, row| {
                row.bind(query)
            });
        let done: AnyQueryResult = query.execute(&mut *tx).await?.into();
        skipped += (now.len() as u64).saturating_sub(done.rows_affected());
    }
    tx.commit().await?;
    Ok(skipped)
}
