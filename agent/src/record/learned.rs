//! Learned columns in the store (`learned_columns`, migration 0007): what every gateway
//! sharing the store masks whole because a recognizer found personal data in it
//! ([`crate::mask::learned`]).

use super::{Store, StoreError};
use crate::mask::learned::{ColumnId, LearnedColumn};
use sqlx::{Row as _, any::AnyRow};

/// The columns of a `learned_columns` row, in one place for every `SELECT`.
const SELECT: &str = "SELECT target, schema_name, table_name, column_name, relid, attnum, \
     type_oid, recognizer, learned_by, first_session, at_ms, host, pinned FROM learned_columns";

/// Most rows one listing returns.
const MAX_ROWS: i64 = 100_000;

impl Store {
    /// Stores a learned column under this gateway's host name. `Ok(false)` when the
    /// column was learned already (by any gateway): the first stays.
    pub async fn learn_column(&self, c: &LearnedColumn) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO learned_columns (target, schema_name, table_name, column_name, relid, \
             attnum, type_oid, recognizer, learned_by, first_session, at_ms, host, pinned) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 0) \
             ON CONFLICT (target, schema_name, table_name, column_name) DO NOTHING",
        )
        .bind(&c.target)
        .bind(&c.id.schema)
        .bind(&c.id.table)
        .bind(&c.id.column)
        .bind(c.id.relid)
        .bind(c.id.attnum)
        .bind(c.id.type_oid)
        .bind(&c.recognizer)
        .bind(&c.learned_by)
        .bind(c.first_session.as_deref())
        .bind(c.at_ms)
        .bind(self.host())
        .execute(&self.pool)
        .await
        .map_err(|source| self.query_error("store a learned column", source))?;
        Ok(done.rows_affected() > 0)
    }

    /// The learned columns of `target`, or of every target, ordered by target and
    /// name.
    pub async fn learned_columns(
        &self,
        target: Option<&str>,
    ) -> Result<Vec<LearnedColumn>, StoreError> {
        let sql = format!(
            "{SELECT} WHERE (CAST($1 AS TEXT) IS NULL OR target = $1) \
             ORDER BY target, schema_name, table_name, column_name LIMIT {MAX_ROWS}"
        );
        let rows = sqlx::query(&sql)
            .bind(target)
            .fetch_all(&self.pool)
            .await
            .map_err(|source| self.query_error("list learned columns", source))?;
        rows.iter()
            .map(|row| row_to_column(row).map_err(|e| self.query_error("read a learned column", e)))
            .collect()
    }

    /// Forgets learned column `schema.table.column` of `target`, unless it is pinned
    /// (then `Err` is not returned: the row comes back with `pinned` set, unchanged).
    /// `Ok(None)` when there was no such column.
    pub async fn forget_column(
        &self,
        target: &str,
        (schema, table, column): (&str, &str, &str),
    ) -> Result<Option<LearnedColumn>, StoreError> {
        let Some(found) = self.learned_column(target, (schema, table, column)).await? else {
            return Ok(None);
        };
        if found.pinned {
            return Ok(Some(found));
        }
        sqlx::query(
            "DELETE FROM learned_columns WHERE target = $1 AND schema_name = $2 \
             AND table_name = $3 AND column_name = $4 AND pinned = 0",
        )
        .bind(target)
        .bind(schema)
        .bind(table)
        .bind(column)
        .execute(&self.pool)
        .await
        .map_err(|source| self.query_error("forget a learned column", source))?;
        Ok(Some(found))
    }

    /// Pins (or unpins) learned column `schema.table.column` of `target`. `Ok(None)`
    /// when there is no such column.
    pub async fn pin_column(
        &self,
        target: &str,
        (schema, table, column): (&str, &str, &str),
        pinned: bool,
    ) -> Result<Option<LearnedColumn>, StoreError> {
        sqlx::query(
            "UPDATE learned_columns SET pinned = $5 WHERE target = $1 AND schema_name = $2 \
             AND table_name = $3 AND column_name = $4",
        )
        .bind(target)
        .bind(schema)
        .bind(table)
        .bind(column)
        .bind(i64::from(pinned))
        .execute(&self.pool)
        .await
        .map_err(|source| self.query_error("pin a learned column", source))?;
        self.learned_column(target, (schema, table, column)).await
    }

    /// One learned column, if stored.
    async fn learned_column(
        &self,
        target: &str,
        (schema, table, column): (&str, &str, &str),
    ) -> Result<Option<LearnedColumn>, StoreError> {
        let sql = format!(
            "{SELECT} WHERE target = $1 AND schema_name = $2 AND table_name = $3 \
             AND column_name = $4"
        );
        let row = sqlx::query(&sql)
            .bind(target)
            .bind(schema)
            .bind(table)
            .bind(column)
            .fetch_optional(&self.pool)
            .await
            .map_err(|source| self.query_error("read a learned column", source))?;
        row.as_ref()
            .map(row_to_column)
            .transpose()
            .map_err(|e| self.query_error("read a learned column", e))
    }
}

fn row_to_column(row: &AnyRow) -> Result<LearnedColumn, sqlx::Error> {
    Ok(LearnedColumn {
        target: row.try_get(0)?,
        id: ColumnId {
            schema: row.try_get(1)?,
            table: row.try_get(2)?,
            column: row.try_get(3)?,
            relid: row.try_get(4)?,
            attnum: row.try_get(5)?,
            type_oid: row.try_get(6)?,
        },
        recognizer: row.try_get(7)?,
        learned_by: row.try_get(8)?,
        first_session: row.try_get(9)?,
        at_ms: row.try_get(10)?,
        host: row.try_get(11)?,
        pinned: row.try_get::<i64, _>(12)? != 0,
    })
}

#[cfg(test)]
#[expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    fn column(table: &str) -> LearnedColumn {
        LearnedColumn {
            target: "db".into(),
            id: ColumnId {
                schema: "public".into(),
                table: table.into(),
                column: "email".into(),
                relid: 16_384,
                attnum: 2,
                type_oid: 25,
            },
            recognizer: "email".into(),
            learned_by: "results".into(),
            first_session: Some("s1".into()),
            at_ms: 1,
            host: String::new(),
            pinned: false,
        }
    }

    #[tokio::test]
    async fn learn_list_pin_forget() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        assert!(store.learn_column(&column("customers")).await.unwrap());
        assert!(!store.learn_column(&column("customers")).await.unwrap());
        assert!(store.learn_column(&column("orders")).await.unwrap());
        let all = store.learned_columns(None).await.unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].id, column("customers").id);
        assert_eq!(all[0].host, store.host());
        assert!(
            store
                .learned_columns(Some("other"))
                .await
                .unwrap()
                .is_empty()
        );

        let key = ("public", "customers", "email");
        let pinned = store.pin_column("db", key, true).await.unwrap().unwrap();
        assert!(pinned.pinned);
        let kept = store.forget_column("db", key).await.unwrap().unwrap();
        assert!(kept.pinned, "a pinned column is not forgotten");
        assert_eq!(store.learned_columns(None).await.unwrap().len(), 2);
        store.pin_column("db", key, false).await.unwrap();
        assert!(store.forget_column("db", key).await.unwrap().is_some());
        assert_eq!(store.learned_columns(None).await.unwrap().len(), 1);
        assert!(store.forget_column("db", key).await.unwrap().is_none());
    }
}
