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
//!
//! Layout: this file resolves columns and inheritance; [`views`] follows views;
//! [`side`] is the side connection the lookups run on.

use super::super::{
    classify::{Classifier, Refs},
    tls::BackendStream,
    wire::MessageReader,
};
use crate::{
    mask::{ColumnMask, Masker},
    proto::Session,
};
use std::{collections::HashMap, time::Duration};

mod side;
mod views;

use side::oid;
use views::Views;

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
