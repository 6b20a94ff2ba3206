//! What the catalog says of views: the origin of each column (the view's definition
//! described on the side connection), whether a definition uses a masked column,
//! and the definitions themselves; all of it forgotten after [`VIEW_TTL`].

use super::{Catalog, MAX_VIEWS, VIEW_TTL, oid_text, uses};
use crate::{mask::Masker, proto::Session};
use std::{
    collections::{HashMap, HashSet},
    time::Instant,
};

/// What is known of views, since `since`.
#[derive(Default)]
pub(super) struct Views {
    pub(super) since: Option<Instant>,
    /// The origin (relation, attribute) of each column of a view, in order;
    /// `(0, 0)` for a computed one.
    pub(super) origins: HashMap<i32, Vec<(i32, i16)>>,
    /// Whether a view's definition, or a view it uses, uses a masked column.
    pub(super) reveals: HashMap<i32, bool>,
    /// The columns of the relations so named, in any schema, that show a masked
    /// column: a view's, or a table's that inherits a column rule.
    pub(super) named: HashMap<String, Vec<String>>,
    /// The columns of the tables so named that inherit a column rule.
    pub(super) inherited: HashMap<String, Vec<String>>,
    /// The names of the tables a table inherits from or that inherit from it.
    pub(super) kin: HashMap<i32, Vec<String>>,
    /// Each view's `SELECT`, as the server prints it.
    pub(super) definitions: HashMap<i32, String>,
}

impl Views {
    /// Forgets everything once it is older than [`VIEW_TTL`].
    pub(super) fn fresh(&mut self) -> &mut Self {
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

impl Catalog<'_> {
    /// Where each column of `view` comes from, as the server describes its definition.
    pub(super) async fn origins(
        &mut self,
        session: &Session,
        view: i32,
    ) -> Result<Vec<(i32, i16)>, String> {
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
    pub(super) async fn reveals(
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
    pub(super) async fn definition(
        &mut self,
        session: &Session,
        view: i32,
    ) -> Result<String, String> {
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
}
