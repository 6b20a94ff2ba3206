//! The side connection the catalog lookups run on: opened with the session's login
//! on first use, it only parses, describes and runs the proxy's own catalog
//! queries (parameters bound, never spliced into the SQL), one exchange at a time.

use super::super::super::{
    backend,
    wire::{self, Builder, Fields, MessageReader, WireError},
};
use super::Catalog;
use crate::proto::Session;
use tokio::io::AsyncWriteExt as _;

/// The most rows one catalog lookup may return (columns of same-named tables).
const MAX_CATALOG_ROWS: usize = 20_000;

impl Catalog<'_> {
    /// The name and origin (relation, attribute) of each result column of `sql` (`what`
    /// for the error), which is parsed and described on the side connection, never run.
    pub(super) async fn describe(
        &mut self,
        session: &Session,
        sql: &str,
        what: &str,
    ) -> Result<Vec<(String, (i32, i16))>, String> {
        let describe = Builder::new(b'D').u8(b'S').cstr("").finish();
        let mut columns = Vec::new();
        let mut failed = false;
        self.exchange(session, sql, &describe, |tag, body| match tag {
            b'T' => {
                let mut f = Fields(body);
                let described = (|| -> Result<(), WireError> {
                    for _ in 0..f.count16()? {
                        let name = String::from_utf8_lossy(f.cstr_bytes()?).into_owned();
                        let table = f.i32()?;
                        let attnum = f.i16()?;
                        f.take(12)?;
                        columns.push((name, (table, attnum)));
                    }
                    Ok(())
                })();
                failed |= described.is_err();
            }
            b'E' => failed = true,
            _ => {}
        })
        .await?;
        if failed {
            return Err(format!("{what} could not be described for masking"));
        }
        Ok(columns)
    }

    /// The name and origin of each column of `COPY (query) TO`, described on the side
    /// connection. Refused when a relation the query names is ambiguous: the side
    /// connection could then describe another relation than the client's reads.
    pub async fn copy_query_columns(
        &mut self,
        session: &Session,
        query: &str,
    ) -> Result<Vec<(String, (i32, i16))>, String> {
        let classified = self.classifier.classify(query, true).await;
        if let Some(name) = self.ambiguous(session, &classified.refs.relations).await? {
            return Err(format!(
                "more than one relation is named {name}, and which one the query reads \
                 is not known here"
            ));
        }
        self.describe(session, query, "the query").await
    }

    /// The first of `names` that more than one relation has (in different schemas,
    /// including other sessions' temporary ones): which of them a statement means
    /// depends on a `search_path` not known here.
    pub(super) async fn ambiguous<'n>(
        &mut self,
        session: &Session,
        names: &'n [String],
    ) -> Result<Option<&'n str>, String> {
        for name in names {
            let rows = self
                .query(
                    session,
                    "SELECT count(*)::text FROM pg_catalog.pg_class \
                     WHERE relname = $1 AND relkind NOT IN ('i', 'I')",
                    &[Some(name)],
                )
                .await?;
            let count = rows
                .first()
                .and_then(|row| row.first())
                .and_then(|v| v.as_deref()?.parse::<u64>().ok());
            if count != Some(0) && count != Some(1) {
                return Ok(Some(name));
            }
        }
        Ok(None)
    }

    /// The OIDs the one-column catalog query `sql` returns for its one parameter.
    pub(super) async fn oids(
        &mut self,
        session: &Session,
        sql: &str,
        param: &str,
    ) -> Result<Vec<i32>, String> {
        let rows = self.query(session, sql, &[Some(param)]).await?;
        Ok(rows.iter().filter_map(|row| oid(row.first())).collect())
    }

    /// Runs one catalog query with text parameters (never spliced into the SQL) and
    /// returns its rows as text.
    pub(super) async fn query(
        &mut self,
        session: &Session,
        sql: &str,
        params: &[Option<&str>],
    ) -> Result<Vec<Vec<Option<String>>>, String> {
        let mut run = wire::bind_text(params.iter().copied()).to_vec();
        run.extend_from_slice(&Builder::new(b'E').cstr("").i32(0).finish());
        let mut rows = Vec::new();
        let mut failed = false;
        self.exchange(session, sql, &run, |tag, body| match tag {
            b'D' if rows.len() < MAX_CATALOG_ROWS => {
                let mut f = Fields(body);
                let row = (|| -> Result<Vec<Option<String>>, WireError> {
                    let count = f.count16()?;
                    let mut row = Vec::with_capacity(count);
                    for _ in 0..count {
                        row.push(f.value()?.map(|v| String::from_utf8_lossy(v).into_owned()));
                    }
                    Ok(row)
                })();
                match row {
                    Ok(row) => rows.push(row),
                    Err(_) => failed = true,
                }
            }
            // Too many rows, or an error: the lookup cannot be trusted.
            b'D' | b'E' => failed = true,
            _ => {}
        })
        .await?;
        if failed {
            return Err("the catalog lookup for masking failed".into());
        }
        Ok(rows)
    }

    /// Sends `Parse` of `sql` (unnamed), the messages in `then` and `Sync` on the side
    /// connection, opening it on first use, and hands each message of the answer to
    /// `each` until `ReadyForQuery`.
    pub(super) async fn exchange(
        &mut self,
        session: &Session,
        sql: &str,
        then: &[u8],
        mut each: impl FnMut(u8, &[u8]),
    ) -> Result<(), String> {
        if self.conn.is_none() {
            let b = backend::login(session, &self.params)
                .await
                .map_err(|e| match e {
                    backend::LoginError::Server { message, .. }
                    | backend::LoginError::Proxy(message) => {
                        format!("cannot open the catalog connection for masking: {message}")
                    }
                })?;
            self.conn = Some(MessageReader::with_buffer(b.stream, 1 << 20, b.leftover));
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err("no catalog connection".into());
        };
        let io = |e: std::io::Error| format!("catalog connection: {e}");
        let mut batch = Builder::new(b'P')
            .cstr("")
            .cstr(sql)
            .i16(0)
            .finish()
            .to_vec();
        batch.extend_from_slice(then);
        batch.extend_from_slice(&Builder::new(b'S').finish());
        conn.get_mut().write_all(&batch).await.map_err(io)?;
        conn.get_mut().flush().await.map_err(io)?;
        loop {
            let m = match conn.next().await {
                Ok(Some(m)) => m,
                Ok(None) => return Err("the catalog connection closed".into()),
                Err(e) => return Err(format!("catalog connection: {e}")),
            };
            if m.tag() == b'Z' {
                return Ok(());
            }
            each(m.tag(), m.body());
        }
    }
}

/// An OID the server printed, as `RowDescription` carries it.
pub(super) fn oid(text: Option<&Option<String>>) -> Option<i32> {
    let oid: u32 = text?.as_deref()?.parse().ok()?;
    Some(i32::from_ne_bytes(oid.to_ne_bytes()))
}
