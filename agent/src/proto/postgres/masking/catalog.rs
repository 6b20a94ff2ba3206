//! Catalog lookups for column rules, over a side connection the proxy opens with the
//! session's login when first needed, cached per session.
//!
//! A `RowDescription` names the relation and attribute each result column comes from;
//! for a view (or materialized view) that is the view's own column, which no rule on
//! the table behind it names. So a view's column is followed to its origin: the view's
//! definition (`pg_get_viewdef`) is described on the side connection, and the server
//! says which table column each of its result columns is, through joins, subqueries
//! and further views. A column the view computes has no origin: it is NULL when the
//! view's definition uses a masked column ([`Catalog::reveals`], read on the same
//! parser and with the same test as a statement the client sends), since it may
//! carry the value in a form no rule recognizes.
//!
//! Likewise `RowDescription` names a partition, or a table that inherits from another,
//! by its own name, and a parent by its name for its children's rows too: a table's
//! columns are masked by the rules of the tables it inherits from and of those that
//! inherit from it as well ([`Catalog::kin`]).
//!
//! Views and inheritance are looked up again after [`VIEW_TTL`]: any session may
//! replace a view under the same OID, or attach a partition.

use super::super::{
    backend,
    classify::{Classifier, Refs},
    tls::BackendStream,
    wire::{Builder, Fields, MessageReader, WireError},
};
use crate::{
    mask::{ColumnMask, Masker},
    proto::Session,
};
use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};
use tokio::io::AsyncWriteExt as _;

/// The most rows one catalog lookup may return (columns of same-named tables).
const MAX_CATALOG_ROWS: usize = 20_000;
/// Views followed from one column, or looked through for one view; more is refused.
const MAX_VIEWS: usize = 64;
/// How long what is known of views is trusted.
const VIEW_TTL: Duration = Duration::from_secs(2);

/// Catalog lookups of `table.column` for column rules, over a side connection.
pub struct Catalog<'c> {
    params: Vec<(String, String)>,
    classifier: &'c Classifier,
    conn: Option<MessageReader<BackendStream>>,
    columns: HashMap<(i32, i16), Option<Relcol>>,
    views: Views,
}

/// What the views and child tables a statement names show of masked columns.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shown {
    /// One of them has a column that shows a masked one.
    pub any: bool,
    /// The statement may use such a column.
    pub used: bool,
}

/// A relation's column, by name.
#[derive(Debug, Clone)]
pub struct Relcol {
    pub schema: String,
    pub table: String,
    pub column: String,
    /// The relation is a view or a materialized view.
    view: bool,
}

/// What is known of views, since `since`.
#[derive(Default)]
struct Views {
    since: Option<Instant>,
    /// The origin (relation, attribute) of each column of a view, in order;
    /// `(0, 0)` for a computed one.
    origins: HashMap<i32, Vec<(i32, i16)>>,
    /// Whether a view's definition, or a view it uses, uses a masked column.
    reveals: HashMap<i32, bool>,
    /// The columns of the relations so named, in any schema, that show a masked
    /// column: a view's, or a table's that inherits a column rule.
    named: HashMap<String, Vec<String>>,
    /// The columns of the tables so named that inherit a column rule.
    inherited: HashMap<String, Vec<String>>,
    /// The names of the tables a table inherits from or that inherit from it.
    kin: HashMap<i32, Vec<String>>,
    /// Each view's `SELECT`, as the server prints it.
    definitions: HashMap<i32, String>,
}

impl Views {
    /// Forgets everything once it is older than [`VIEW_TTL`].
    fn fresh(&mut self) -> &mut Self {
        let now = Instant::now();
        if self
            .since
            .is_none_or(|since| now.duration_since(since) > VIEW_TTL)
        {
            *self = Views {
                since: Some(now),
                ..Views::default()
            };
        }
        self
    }
}

impl<'c> Catalog<'c> {
    /// Logs in with the client's startup `params` when first needed, but always in
    /// UTF-8: names are compared as the proxy reads them. (PostgreSQL applies these
    /// parameters after any `-c` in `options`.) View definitions are read with
    /// `classifier`.
    pub fn new(mut params: Vec<(String, String)>, classifier: &'c Classifier) -> Self {
        params.retain(|(name, _)| name != "client_encoding");
        params.push(("client_encoding".into(), "UTF8".into()));
        Self {
            params,
            classifier,
            conn: None,
            columns: HashMap::new(),
            views: Views::default(),
        }
    }

    /// The rule of result column `name`, which the server says is attribute `attnum`
    /// of relation `oid`: the strictest of the rules on it and, for a view's column,
    /// on the columns behind it; NULL for a column a view computes when the view uses
    /// a masked column. An unknown relation leaves only a rule on the name.
    pub async fn column_rule(
        &mut self,
        session: &Session,
        masker: &Masker,
        origin: (i32, i16),
        name: &str,
    ) -> Result<Option<ColumnMask>, String> {
        Ok(self.column_origin(session, masker, origin, name).await?.0)
    }

    /// [`Catalog::column_rule`], and the table column behind the result column (its
    /// relation OID and attribute number, through views), if there is one.
    pub async fn column_origin(
        &mut self,
        session: &Session,
        masker: &Masker,
        (mut oid, mut attnum): (i32, i16),
        name: &str,
    ) -> Result<(Option<ColumnMask>, Option<(Relcol, i32, i16)>), String> {
        let mut rule = None;
        for hop in 0..MAX_VIEWS {
            let Some(column) = self.column(session, oid, attnum).await? else {
                // A view's origin that has gone since: fail closed.
                return Ok((
                    if hop == 0 {
                        masker.column_rule("", name)
                    } else {
                        Some(ColumnMask::NULL)
                    },
                    None,
                ));
            };
            rule = rule.max(masker.column_rule(&column.table, &column.column));
            if !column.view {
                // A partition or child table is masked as the tables it inherits
                // from, and a parent as its children, whose rows it reads: their
                // columns have the same names.
                for table in self.kin(session, oid).await? {
                    rule = rule.max(masker.column_rule(&table, &column.column));
                }
                return Ok((rule, Some((column, oid, attnum))));
            }
            let origins = self.origins(session, oid).await?;
            let origin = usize::try_from(i32::from(attnum) - 1)
                .ok()
                .and_then(|i| origins.get(i));
            match origin {
                Some(&(table, column)) if table != 0 && column > 0 => {
                    (oid, attnum) = (table, column);
                }
                _ if self.reveals(session, masker, oid).await? => {
                    return Ok((Some(ColumnMask::NULL), None));
                }
                _ => return Ok((rule, None)),
            }
        }
        Err(format!(
            "views nested more than {MAX_VIEWS} deep cannot be followed for masking"
        ))
    }

    /// Whether a relation a statement that names `refs` names, in any schema, is a
    /// view (or materialized view) or a child table with a column that shows a masked
    /// one ([`Catalog::showing`]), and whether the statement may compute a value from
    /// it: it names that column, uses whole rows or runs SQL not seen. `count(*)` over
    /// such a view, or `upper()` of its other columns, computes nothing from it.
    pub async fn reveal_any(
        &mut self,
        session: &Session,
        masker: &Masker,
        refs: &Refs,
    ) -> Result<Shown, String> {
        let mut found = Shown::default();
        for name in &refs.relations {
            let shown = self.showing(session, masker, name).await?;
            found.any |= !shown.is_empty();
            if uses(&shown, refs) {
                found.used = true;
                break;
            }
        }
        Ok(found)
    }

    /// The columns of the relations named `name` (in any schema) that show a masked
    /// column: a view's that a rule follows to one, or that the view computes while
    /// using one; a child table's that a rule on a parent masks.
    async fn showing(
        &mut self,
        session: &Session,
        masker: &Masker,
        name: &str,
    ) -> Result<Vec<String>, String> {
        if let Some(known) = self.views.fresh().named.get(name) {
            return Ok(known.clone());
        }
        let views = self
            .oids(
                session,
                "SELECT c.oid::text FROM pg_catalog.pg_class c \
                 WHERE c.relname = $1 AND c.relkind IN ('v', 'm')",
                name,
            )
            .await?;
        let mut shown = self.inherited(session, masker, name).await?;
        for view in views {
            if !self.reveals(session, masker, view).await? {
                continue;
            }
            let count = self.origins(session, view).await?.len();
            for attnum in 1..=i16::try_from(count).unwrap_or(i16::MAX) {
                let column = self
                    .column(session, view, attnum)
                    .await?
                    .ok_or("a view changed while it was looked up for masking")?
                    .column;
                if self
                    .column_rule(session, masker, (view, attnum), &column)
                    .await?
                    .is_some()
                {
                    shown.push(column);
                }
            }
        }
        self.views
            .fresh()
            .named
            .insert(name.to_owned(), shown.clone());
        Ok(shown)
    }

    /// The columns of the tables named `name` (in any schema) that a rule on a table
    /// they inherit from, or that inherits from them, masks (partitions, parents).
    async fn inherited(
        &mut self,
        session: &Session,
        masker: &Masker,
        name: &str,
    ) -> Result<Vec<String>, String> {
        if let Some(known) = self.views.fresh().inherited.get(name) {
            return Ok(known.clone());
        }
        let tables = self
            .oids(
                session,
                "SELECT c.oid::text FROM pg_catalog.pg_class c WHERE c.relname = $1 \
                 AND EXISTS (SELECT FROM pg_catalog.pg_inherits i \
                             WHERE i.inhrelid = c.oid OR i.inhparent = c.oid)",
                name,
            )
            .await?;
        let mut ruled = Vec::new();
        for table in tables {
            let kin = self.kin(session, table).await?;
            let columns = self
                .query(
                    session,
                    "SELECT attname FROM pg_catalog.pg_attribute \
                     WHERE attrelid = $1::oid AND attnum > 0 AND NOT attisdropped",
                    &[Some(&oid_text(table))],
                )
                .await?;
            for column in columns
                .into_iter()
                .filter_map(|row| row.into_iter().next()?)
            {
                if kin.iter().any(|k| masker.column_rule(k, &column).is_some()) {
                    ruled.push(column);
                }
            }
        }
        self.views
            .fresh()
            .inherited
            .insert(name.to_owned(), ruled.clone());
        Ok(ruled)
    }

    /// The names of the tables `table` inherits from, up the chain (a partition's
    /// parents), and of those that inherit from it, down the chain (a partitioned
    /// table's partitions); none for most.
    async fn kin(&mut self, session: &Session, table: i32) -> Result<Vec<String>, String> {
        if let Some(known) = self.views.fresh().kin.get(&table) {
            return Ok(known.clone());
        }
        let rows = self
            .query(
                session,
                "WITH RECURSIVE up(oid, depth) AS ( \
                     SELECT inhparent, 1 FROM pg_catalog.pg_inherits WHERE inhrelid = $1::oid \
                     UNION ALL SELECT i.inhparent, up.depth + 1 \
                     FROM pg_catalog.pg_inherits i JOIN up ON i.inhrelid = up.oid \
                     WHERE up.depth < 64), \
                 down(oid, depth) AS ( \
                     SELECT inhrelid, 1 FROM pg_catalog.pg_inherits WHERE inhparent = $1::oid \
                     UNION ALL SELECT i.inhrelid, down.depth + 1 \
                     FROM pg_catalog.pg_inherits i JOIN down ON i.inhparent = down.oid \
                     WHERE down.depth < 64) \
                 SELECT DISTINCT c.relname FROM pg_catalog.pg_class c \
                 WHERE c.oid IN (SELECT oid FROM up UNION SELECT oid FROM down)",
                &[Some(&oid_text(table))],
            )
            .await?;
        let names: Vec<String> = rows
            .into_iter()
            .filter_map(|row| row.into_iter().next()?)
            .collect();
        self.views.fresh().kin.insert(table, names.clone());
        Ok(names)
    }

    /// The columns a `COPY table TO` writes (all but dropped and generated ones, in
    /// order) and the names of its inheritance kin ([`Catalog::kin`]), for each
    /// relation the name may mean: with a schema, the one; without, every table or
    /// view so named in any schema (which one the session's `search_path` picks is not
    /// known here).
    pub async fn copy_columns(
        &mut self,
        session: &Session,
        schema: Option<&str>,
        table: &str,
    ) -> Result<Vec<(Vec<String>, Vec<String>)>, String> {
        let rows = self
            .query(
                session,
                "SELECT c.oid::text, a.attname FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid \
                 WHERE c.relname = $1 AND ($2::text IS NULL OR n.nspname = $2) \
                 AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
                 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' \
                 ORDER BY c.oid, a.attnum",
                &[Some(table), schema],
            )
            .await?;
        let mut relations: Vec<(i32, Vec<String>)> = Vec::new();
        for row in rows {
            let mut row = row.into_iter();
            let (Some(relation), Some(Some(column))) = (oid(row.next().as_ref()), row.next())
            else {
                return Err("the catalog lookup for masking failed".into());
            };
            match relations.last_mut() {
                Some((last, columns)) if *last == relation => columns.push(column),
                _ => relations.push((relation, vec![column])),
            }
        }
        let mut found = Vec::new();
        for (relation, columns) in relations {
            found.push((columns, self.kin(session, relation).await?));
        }
        Ok(found)
    }

    /// Attribute `attnum` of relation `oid`, by name.
    async fn column(
        &mut self,
        session: &Session,
        oid: i32,
        attnum: i16,
    ) -> Result<Option<Relcol>, String> {
        if let Some(found) = self.columns.get(&(oid, attnum)) {
            return Ok(found.clone());
        }
        let rows = self
            .query(
                session,
                "SELECT n.nspname, c.relname, a.attname, (c.relkind IN ('v', 'm'))::text \
                 FROM pg_catalog.pg_attribute a \
                 JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE a.attrelid = $1::oid AND a.attnum = $2::int2",
                &[Some(&oid_text(oid)), Some(&attnum.to_string())],
            )
            .await?;
        let found = rows.into_iter().next().and_then(|row| {
            let mut row = row.into_iter();
            Some(Relcol {
                schema: row.next()??,
                table: row.next()??,
                column: row.next()??,
                view: row.next()?? == "true",
            })
        });
        tracing::debug!(oid, attnum, ?found, "Column resolved for masking");
        self.columns.insert((oid, attnum), found.clone());
        Ok(found)
    }

    /// Where each column of `view` comes from, as the server describes its definition.
    async fn origins(&mut self, session: &Session, view: i32) -> Result<Vec<(i32, i16)>, String> {
        if let Some(known) = self.views.fresh().origins.get(&view) {
            return Ok(known.clone());
        }
        let definition = self.definition(session, view).await?;
        let origins: Vec<_> = self
            .describe(session, &definition, "a view's definition")
            .await?
            .into_iter()
            .map(|(_, origin)| origin)
            .collect();
        self.views.fresh().origins.insert(view, origins.clone());
        Ok(origins)
    }

    /// Whether `view`'s definition, or that of a view it uses, may derive a value from
    /// a masked column ([`Masker::may_derive`] on what it names). Too many views to
    /// look through count as yes.
    async fn reveals(
        &mut self,
        session: &Session,
        masker: &Masker,
        view: i32,
    ) -> Result<bool, String> {
        if let Some(&known) = self.views.fresh().reveals.get(&view) {
            return Ok(known);
        }
        let mut todo = vec![view];
        let mut seen = HashSet::new();
        let mut reveals = false;
        while let Some(next) = todo.pop() {
            if !seen.insert(next) {
                continue;
            }
            if seen.len() > MAX_VIEWS {
                reveals = true;
                break;
            }
            let definition = self.definition(session, next).await?;
            let classified = self.classifier.classify(&definition, true).await;
            let refs = &classified.refs;
            let mut derives = masker.may_derive(
                &refs.relations,
                &refs.columns,
                refs.whole_rows,
                refs.unknown,
            );
            for name in &refs.relations {
                derives = derives || uses(&self.inherited(session, masker, name).await?, refs);
            }
            if derives {
                reveals = true;
                break;
            }
            let used = self
                .oids(
                    session,
                    "SELECT DISTINCT d.refobjid::text FROM pg_catalog.pg_rewrite r \
                     JOIN pg_catalog.pg_depend d ON d.objid = r.oid \
                     AND d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass \
                     AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass \
                     JOIN pg_catalog.pg_class c ON c.oid = d.refobjid \
                     WHERE r.ev_class = $1::oid AND c.oid <> $1::oid \
                     AND c.relkind IN ('v', 'm')",
                    &oid_text(next),
                )
                .await?;
            todo.extend(used);
        }
        self.views.fresh().reveals.insert(view, reveals);
        Ok(reveals)
    }

    /// The `SELECT` that defines `view`, as the server prints it for this connection's
    /// `search_path`.
    async fn definition(&mut self, session: &Session, view: i32) -> Result<String, String> {
        if let Some(known) = self.views.fresh().definitions.get(&view) {
            return Ok(known.clone());
        }
        let rows = self
            .query(
                session,
                "SELECT pg_catalog.pg_get_viewdef($1::oid)",
                &[Some(&oid_text(view))],
            )
            .await?;
        let definition = rows
            .into_iter()
            .next()
            .and_then(|row| row.into_iter().next().flatten())
            .ok_or_else(|| format!("the definition of view {} was not found", oid_text(view)))?;
        self.views
            .fresh()
            .definitions
            .insert(view, definition.clone());
        Ok(definition)
    }

    /// The name and origin (relation, attribute) of each result column of `sql` (`what`
    /// for the error), which is parsed and described on the side connection, never run.
    async fn describe(
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
    async fn ambiguous<'n>(
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
    async fn oids(
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
    async fn query(
        &mut self,
        session: &Session,
        sql: &str,
        params: &[Option<&str>],
    ) -> Result<Vec<Vec<Option<String>>>, String> {
        let mut bind = Builder::new(b'B')
            .cstr("")
            .cstr("")
            .i16(0)
            .i16(i16::try_from(params.len()).unwrap_or(0));
        for p in params {
            bind = match p {
                Some(p) => bind
                    .i32(i32::try_from(p.len()).unwrap_or(i32::MAX))
                    .bytes(p.as_bytes()),
                None => bind.i32(-1),
            };
        }
        let mut run = bind.i16(0).finish().to_vec();
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
    async fn exchange(
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

/// Whether a statement that names `refs` may use one of the `shown` columns of a
/// relation it names: it names one, uses whole rows, or runs SQL not seen.
fn uses(shown: &[String], refs: &Refs) -> bool {
    !shown.is_empty()
        && (refs.whole_rows || refs.unknown || refs.columns.iter().any(|c| shown.contains(c)))
}

/// An OID as the server prints it (unsigned).
fn oid_text(oid: i32) -> String {
    u32::from_ne_bytes(oid.to_ne_bytes()).to_string()
}

/// An OID the server printed, as `RowDescription` carries it.
fn oid(text: Option<&Option<String>>) -> Option<i32> {
    let oid: u32 = text?.as_deref()?.parse().ok()?;
    Some(i32::from_ne_bytes(oid.to_ne_bytes()))
}
