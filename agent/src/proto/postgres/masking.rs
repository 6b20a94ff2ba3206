//! Masking server messages before they reach the client (and the record).
//!
//! Column rules are resolved from `RowDescription`'s table OID and attribute number,
//! looked up in the server's catalog over a second connection the proxy opens with
//! the same login (cached per session), so an alias or `SELECT *` cannot dodge them,
//! and followed through views ([`catalog`]).
//! A masked column is described to the client as `text`, since its values no longer
//! parse as the original type. Values of other text-format columns are masked by the
//! recognizers; binary values of unmasked columns pass as they are. COPY OUT rows are
//! masked by column from the statement's columns ([`copy`]).

use super::{
    classify::CopyOut,
    encoding::ClientEncoding,
    wire::{self, Builder, Fields},
};
use crate::{
    mask::{ColumnMask, Masked, Masker, learned::ColumnId},
    proto::Session,
};
pub use catalog::{Catalog, Shown};
pub use copy::CopyColumns;

mod catalog;
mod copy;
use bytes::Bytes;
use std::borrow::Cow;

/// The `text` type's OID, which masked columns are described as.
const TEXT_OID: i32 = 25;

/// One result column, as the session masks it.
#[derive(Debug, Clone)]
pub struct Column {
    #[expect(dead_code, reason = "kept for debugging output of resolved columns")]
    pub name: String,
    pub binary: bool,
    pub rule: Option<ColumnMask>,
    /// Computed by the query (no table) or a whole row: it may carry a masked
    /// column's value in a form no rule recognizes.
    pub computed: bool,
    /// The table column behind it, when the session learns columns and no rule
    /// masks it yet: a recognizer firing on one of its values teaches it.
    pub origin: Option<Box<ColumnId>>,
}

/// Reads a `RowDescription` (its names in the client's `encoding`), resolves column
/// rules, and returns the columns and the message to send (rewritten when a masked
/// column must be described as text).
pub async fn row_description(
    masker: &Masker,
    catalog: &mut Catalog<'_>,
    session: &Session,
    body: &[u8],
    encoding: ClientEncoding,
) -> Result<(Vec<Column>, Option<Bytes>), String> {
    let mut f = Fields(body);
    let count = f.count16().map_err(|e| e.to_string())?;
    let mut columns = Vec::with_capacity(count);
    let mut out = Builder::new(b'T').i16(i16::try_from(count).unwrap_or(0));
    let mut changed = false;
    for _ in 0..count {
        let raw_name = f.cstr_bytes().map_err(|e| e.to_string())?;
        let name = &*encoding.lossy(raw_name);
        let table = f.i32().map_err(|e| e.to_string())?;
        let attnum = f.i16().map_err(|e| e.to_string())?;
        let rest = f.take(12).map_err(|e| e.to_string())?;
        let binary = rest.get(10..12) == Some(&[0, 1]);
        let (rule, origin) = if table == 0 || attnum <= 0 {
            // A computed column or a whole row: only a rule on the column's name can
            // apply.
            (masker.column_rule("", name), None)
        } else {
            let type_oid = rest
                .get(..4)
                .and_then(|t| <[u8; 4]>::try_from(t).ok())
                .map_or(0, |t| i64::from(u32::from_be_bytes(t)));
            learnable(masker, catalog, session, (table, attnum), name, type_oid).await?
        };
        out = out.bytes(raw_name).u8(0).i32(table).i16(attnum);
        match rule {
            Some(r) if !r.is_null() => {
                // type oid, size, modifier, format: text
                changed = true;
                out = out.i32(TEXT_OID).i16(-1).i32(-1).i16(0);
            }
            _ => out = out.bytes(rest),
        }
        columns.push(Column {
            name: name.to_owned(),
            binary: binary && rule.is_none_or(crate::mask::ColumnMask::is_null),
            rule,
            // A whole row (`SELECT t FROM t`) has its table and attribute 0.
            computed: table == 0 || attnum <= 0,
            origin: origin.filter(|_| rule.is_none() && !binary),
        });
    }
    Ok((columns, changed.then(|| out.finish())))
}

/// The rule of a table column (`origin`, of type `type_oid`) and, when the session
/// learns columns, its identity: a learned entry whose column was since dropped or
/// retyped is forgotten first, so the column is learned again.
async fn learnable(
    masker: &Masker,
    catalog: &mut Catalog<'_>,
    session: &Session,
    origin: (i32, i16),
    name: &str,
    type_oid: i64,
) -> Result<(Option<ColumnMask>, Option<Box<ColumnId>>), String> {
    let (mut rule, behind) = catalog.column_origin(session, masker, origin, name).await?;
    let (Some(learning), Some((col, oid, attnum))) = (masker.learning(), behind) else {
        return Ok((rule, None));
    };
    let id = ColumnId {
        relid: i64::from(u32::from_ne_bytes(oid.to_ne_bytes())),
        attnum: i64::from(attnum),
        // A view's column has the type of the table column behind it.
        type_oid,
        schema: col.schema,
        table: col.table,
        column: col.column,
    };
    if learning.contains(&id.table, &id.column) && !learning.check(&id) {
        rule = catalog.column_rule(session, masker, origin, name).await?;
    }
    Ok((rule, Some(Box::new(id))))
}

/// A `DataRow` with its values masked, or `None` when nothing changed. With
/// `hide_computed`, computed columns without a rule of their own are NULL: the
/// statement may have derived them from a masked column. A recognizer firing on a
/// value of a table column teaches that column (`session` learned it), which is
/// masked whole from the next row on.
pub fn data_row(
    masker: &Masker,
    columns: &mut [Column],
    body: &[u8],
    (hide_computed, session): (bool, &str),
) -> Option<Bytes> {
    let mut f = Fields(body);
    let count = f.count16().ok()?;
    let mut values: Vec<Option<Cow<'_, [u8]>>> = Vec::with_capacity(count);
    let mut changed = false;
    for i in 0..count {
        let value = f.value().ok()?;
        let column = columns.get(i);
        let masked = match (value, column.and_then(|c| c.rule)) {
            (None, _) => None,
            (Some(_), None) if hide_computed && column.is_none_or(|c| c.computed) => None,
            (Some(v), Some(rule)) => match masker.mask_column_value(&rule, v) {
                Masked::Value(cow) => Some(cow),
                Masked::Null => None,
            },
            (Some(v), None) if column.is_some_and(|c| c.binary) => Some(Cow::Borrowed(v)),
            (Some(v), None) => {
                let value_masked = masker.mask_value(v);
                if matches!(value_masked, Cow::Owned(_)) {
                    learn(masker, columns.get_mut(i), v, session);
                }
                Some(value_masked)
            }
        };
        // Unchanged means the very same bytes came back (a static replacement is
        // borrowed too, from elsewhere).
        changed |= match (&masked, value) {
            (Some(Cow::Borrowed(b)), Some(v)) => !std::ptr::eq(*b, v),
            (None, None) => false,
            _ => true,
        };
        values.push(masked);
    }
    if !changed {
        return None;
    }
    let mut out = Builder::new(b'D').i16(i16::try_from(count).unwrap_or(0));
    for v in &values {
        out = match v {
            None => out.i32(-1),
            Some(bytes) => out
                .i32(i32::try_from(bytes.len()).unwrap_or(i32::MAX))
                .bytes(bytes),
        };
    }
    Some(out.finish())
}

/// Teaches `column` (if it is a table column not masked yet) from `value`, on which
/// something fired: only a recognizer or a custom regex teaches.
#[cold]
fn learn(masker: &Masker, column: Option<&mut Column>, value: &[u8], session: &str) {
    let (Some(learning), Some(column)) = (masker.learning(), column) else {
        return;
    };
    let Some(id) = column.origin.take() else {
        return;
    };
    let Some(recognizer) = masker.recognized(value) else {
        column.origin = Some(id);
        return;
    };
    let how = crate::mask::learned::Learned {
        by: "results",
        session: Some(session),
    };
    learning.learn(&id, &recognizer, how);
    column.rule = masker.column_rule(&id.table, &id.column);
}

/// What the statement a server message answers may expose of masked columns, from
/// least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// Nothing beyond values in text, which are masked by value.
    Values,
    /// It names a relation with masked columns: a message may quote one of its rows
    /// (a constraint's failing row, a trigger's `RAISE`), so only messages of
    /// [`ROWLESS_CLASSES`] keep their text, and no message keeps its detail.
    Rows,
    /// It may compute a value from a masked column: every message is hidden.
    Computed,
}

/// SQLSTATE classes whose messages name objects but never quote a row: connection,
/// not supported, integrity (the row is in the detail), transaction state, statement
/// and cursor names, authorization, catalog and schema, rollback, syntax and access,
/// resources, limits, prerequisite state, operator intervention.
const ROWLESS_CLASSES: &[&str] = &[
    "08", "0A", "23", "25", "26", "28", "34", "3D", "3F", "40", "42", "53", "54", "55", "57",
];

/// What a server message says instead, when its statement may have computed a value
/// from a masked column (which the message could quote).
const HIDDEN_MESSAGE: &str =
    "Portcullis: the server's message is hidden because the statement uses a masked column";

/// What a server message (or its detail) says instead, when its statement names a
/// relation with masked columns.
const HIDDEN_ROW: &str = "Portcullis: hidden because it may quote a row with masked columns";

/// The exposure a server message is shown with, from its statement's and its own
/// `fields`: with column rules, one raised inside a function or trigger (it has a
/// context) may quote a row its statement does not name.
pub fn message_exposure(masker: &Masker, statement: Exposure, fields: &[(u8, &str)]) -> Exposure {
    let context = fields.iter().any(|(code, _)| *code == b'W');
    if statement == Exposure::Values && context && masker.has_column_rules() {
        Exposure::Rows
    } else {
        statement
    }
}

/// The message text of a server message with SQLSTATE `code` as the client and the
/// record may see it.
pub fn message_text<'m>(
    masker: &Masker,
    exposure: Exposure,
    code: &str,
    message: &'m str,
) -> Cow<'m, str> {
    let rowless = || ROWLESS_CLASSES.iter().any(|c| code.get(..2) == Some(*c));
    match exposure {
        Exposure::Computed => Cow::Borrowed(HIDDEN_MESSAGE),
        Exposure::Rows if !rowless() => Cow::Borrowed(HIDDEN_ROW),
        Exposure::Values | Exposure::Rows => masker.mask_str(message),
    }
}

/// An `ErrorResponse`/`NoticeResponse` as the client may see it, or `None` when
/// nothing changed: text fields masked by value, and under [`Exposure::Rows`] or
/// [`Exposure::Computed`] only its severity, SQLSTATE and [`message_text`] kept, with
/// the detail said to be hidden.
pub fn notice(masker: &Masker, tag: u8, body: &[u8], exposure: Exposure) -> Option<Bytes> {
    let fields = wire::notice_fields(body);
    let exposure = message_exposure(masker, exposure, &fields);
    if exposure != Exposure::Values {
        let code = fields.iter().find(|(c, _)| *c == b'C').map_or("", |f| f.1);
        let message = fields.iter().find(|(c, _)| *c == b'M').map_or("", |f| f.1);
        let mut b = Builder::new(tag);
        for (field, value) in &fields {
            if matches!(field, b'S' | b'V' | b'C') {
                b = b.u8(*field).cstr(value);
            }
        }
        b = b
            .u8(b'M')
            .cstr(&message_text(masker, exposure, code, message));
        if exposure == Exposure::Rows {
            b = b.u8(b'D').cstr(HIDDEN_ROW);
        }
        return Some(b.u8(0).finish());
    }
    let masked: Vec<(u8, Cow<'_, str>)> = fields
        .iter()
        .map(|(code, value)| (*code, masker.mask_str(value)))
        .collect();
    if masked.iter().all(|(_, v)| matches!(v, Cow::Borrowed(_))) {
        return None;
    }
    let mut b = Builder::new(tag);
    for (code, value) in &masked {
        b = b.u8(*code).cstr(value);
    }
    Some(b.u8(0).finish())
}

/// A `NotificationResponse` with its payload masked, or `None` when unchanged.
pub fn notification(masker: &Masker, body: &[u8]) -> Option<Bytes> {
    let mut f = Fields(body);
    let pid = f.i32().ok()?;
    let channel = f.cstr().ok()?;
    let payload = f.cstr().ok()?;
    match masker.mask_str(payload) {
        Cow::Borrowed(_) => None,
        Cow::Owned(p) => Some(Builder::new(b'A').i32(pid).cstr(channel).cstr(&p).finish()),
    }
}

/// The columns of a COPY OUT on a session whose policy masks columns, from the
/// statement and the catalog; `count` is the number the server announced. Errs (and
/// the COPY is refused) when they cannot be known for certain.
///
/// `hides_computed`: the statement may compute a value from a masked column, so a
/// column of a `COPY (query)` that no table column is behind is NULL. `first`: the
/// COPY is the first statement of its transaction, so the relations its query reads
/// are those the catalog connection sees (none the transaction created or changed).
pub async fn copy_out(
    masker: &Masker,
    catalog: &mut Catalog<'_>,
    session: &Session,
    copy: &CopyOut,
    (hides_computed, first): (bool, bool),
    count: usize,
) -> Result<CopyColumns, String> {
    let refuse = |why: &str| {
        format!("COPY TO is refused on a session whose policy masks columns: {why}; use SELECT")
    };
    let (format, rules, what) = match copy {
        CopyOut::Table {
            schema,
            table,
            columns,
            format,
        } => (
            format,
            table_rules(
                masker,
                catalog,
                session,
                (schema.as_deref(), table),
                columns,
            )
            .await
            .map_err(|why| refuse(&why))?,
            table.as_str(),
        ),
        CopyOut::Query { .. } if !first => {
            return Err(refuse(
                "a COPY of a query must be the first statement of its transaction, \
                 whose tables the catalog connection may not see",
            ));
        }
        CopyOut::Query { query, format } => {
            let mut rules = Vec::new();
            for (name, origin) in catalog
                .copy_query_columns(session, query)
                .await
                .map_err(|why| refuse(&why))?
            {
                rules.push(match origin {
                    (table, attnum) if table != 0 && attnum > 0 => {
                        catalog.column_rule(session, masker, origin, &name).await?
                    }
                    _ if hides_computed => Some(ColumnMask::NULL),
                    _ => masker.column_rule("", &name),
                });
            }
            (format, rules, "the query")
        }
        CopyOut::Other => {
            return Err(refuse(
                "the columns of a binary COPY, or one whose options cannot be read, \
                 cannot be told apart",
            ));
        }
    };
    if rules.len() != count {
        return Err(refuse(&format!(
            "the server sends {count} columns where {what} has {}",
            rules.len()
        )));
    }
    Ok(CopyColumns {
        format: format.clone(),
        rules,
    })
}

/// The rules of the columns `COPY table [(columns)]` writes: those of its inheritance
/// kin too (a partition is masked as its parents, a parent as its partitions).
async fn table_rules(
    masker: &Masker,
    catalog: &mut Catalog<'_>,
    session: &Session,
    (schema, table): (Option<&str>, &str),
    columns: &[String],
) -> Result<Vec<Option<ColumnMask>>, String> {
    // Every relation the name may mean must be masked alike.
    let mut agreed: Option<Vec<_>> = None;
    for (all, kin) in catalog.copy_columns(session, schema, table).await? {
        let written = if columns.is_empty() { &all } else { columns };
        let rules: Vec<_> = written
            .iter()
            .map(|c| {
                kin.iter()
                    .map(|k| masker.column_rule(k, c))
                    .fold(masker.column_rule(table, c), Ord::max)
            })
            .collect();
        match &agreed {
            Some(before) if *before != rules => {
                return Err(format!(
                    "more than one relation is named {table} and they are masked \
                     differently; name its schema"
                ));
            }
            Some(_) => {}
            None => agreed = Some(rules),
        }
    }
    agreed.ok_or_else(|| format!("the columns of {table} were not found"))
}

/// A server `CopyData` line (text or CSV COPY OUT) masked by value.
pub fn copy_data(masker: &Masker, body: &[u8]) -> Option<Bytes> {
    match masker.mask_value(body) {
        Cow::Borrowed(_) => None,
        Cow::Owned(line) => Some(Builder::new(b'd').bytes(&line).finish()),
    }
}
