//! The walker over `pg_query::parse`'s full tree: what each statement does, read
//! from the places statements nest (top level, WITH, set operations, INSERT's source,
//! EXPLAIN, PREPARE, COPY, CREATE TABLE AS, CREATE VIEW, CREATE SCHEMA), and the
//! parts to classify as their own text (a cursor's query, COPY's WHERE, EXECUTE's
//! arguments).

use super::super::{
    CopyFormat, CopyOut,
    kinds::{self, kind_name},
};
use super::Part;
use crate::policy::{SqlClass, SqlClasses};
use pg_query::NodeEnum;
use pg_query::protobuf::{self, Node};

/// Walks the places where statements nest, adding each statement's classes when it
/// `runs` (not under a plain EXPLAIN or inside a view's definition).
#[derive(Default)]
pub(super) struct Walker {
    pub(super) classes: SqlClasses,
    /// Kinds of every statement visited, run or not.
    pub(super) seen: Vec<&'static str>,
    /// Parts to classify as their own text (see [`classify_part`]).
    pub(super) parts: Vec<Part>,
    pub(super) unknown: Vec<&'static str>,
    /// The `COPY … TO STDOUT`s met, in order.
    pub(super) copy_out: Vec<CopyOut>,
}

impl Walker {
    pub(super) fn walk(tree: &protobuf::ParseResult) -> Walker {
        let mut walker = Walker::default();
        for raw in &tree.stmts {
            if let Some(statement) = inner(raw.stmt.as_deref()) {
                walker.statement(statement, true);
            }
        }
        walker
    }

    fn add(&mut self, runs: bool, classes: impl IntoIterator<Item = SqlClass>) {
        if runs {
            self.classes = self.classes.union(classes.into_iter().collect());
        }
    }

    fn statement(&mut self, statement: &NodeEnum, runs: bool) {
        use SqlClass::{
            CopyProgram, Ddl, DeleteWithoutWhere, Dynamic, Read, Session, UpdateWithoutWhere, Write,
        };
        let kind = kind_name(statement);
        self.seen.push(kind);
        match statement {
            NodeEnum::SelectStmt(select) => self.select(select, runs),
            NodeEnum::InsertStmt(insert) => {
                self.add(runs, [Write]);
                self.with(insert.with_clause.as_ref(), runs);
                match inner(insert.select_stmt.as_deref()) {
                    // VALUES rows read nothing; what they compute is the summary's part.
                    Some(NodeEnum::SelectStmt(rows)) if !rows.values_lists.is_empty() => {
                        self.seen.push("SelectStmt");
                        self.with(rows.with_clause.as_ref(), runs);
                    }
                    Some(source) => self.statement(source, runs),
                    None => {}
                }
            }
            NodeEnum::UpdateStmt(update) => {
                self.add(runs, [Write]);
                if update.where_clause.is_none() {
                    self.add(runs, [UpdateWithoutWhere]);
                }
                self.with(update.with_clause.as_ref(), runs);
            }
            NodeEnum::DeleteStmt(delete) => {
                self.add(runs, [Write]);
                if delete.where_clause.is_none() {
                    self.add(runs, [DeleteWithoutWhere]);
                }
                self.with(delete.with_clause.as_ref(), runs);
            }
            NodeEnum::MergeStmt(merge) => {
                self.add(runs, [Write]);
                self.with(merge.with_clause.as_ref(), runs);
            }
            NodeEnum::ExplainStmt(explain) => {
                self.add(runs, [Read]);
                // ANALYZE runs the statement; its argument is not read (ANALYZE false
                // counts too), so a literal's value never changes a classification.
                let analyze = explain.options.iter().any(|option| {
                    matches!(&option.node, Some(NodeEnum::DefElem(d)) if d.defname == "analyze")
                });
                self.nested(explain.query.as_deref(), runs && analyze);
            }
            NodeEnum::PrepareStmt(prepare) => {
                self.add(runs, [Session]);
                self.nested(prepare.query.as_deref(), runs);
            }
            NodeEnum::ExecuteStmt(execute) => {
                self.add(runs, [Dynamic]);
                if runs && !execute.params.is_empty() {
                    self.parts
                        .push(Part::Expressions(select_list(&execute.params)));
                }
            }
            NodeEnum::CopyStmt(copy) => {
                if copy.relation.is_some() {
                    self.add(runs, [if copy.is_from { Write } else { Read }]);
                }
                if copy.query.is_some() {
                    self.add(runs, [Read]);
                    self.nested(copy.query.as_deref(), runs);
                }
                // An empty name is STDIN/STDOUT (or `''`, which the server refuses).
                if copy.is_program || !copy.filename.is_empty() {
                    self.add(runs, [CopyProgram]);
                } else if !copy.is_from && runs {
                    self.copy_out.push(copy_out(copy));
                }
                if let Some(condition) = inner(copy.where_clause.as_deref()).filter(|_| runs) {
                    self.parts.push(Part::Expressions(select_where(condition)));
                }
            }
            NodeEnum::CreateTableAsStmt(create) => {
                self.add(runs, [Ddl, Write]);
                self.nested(create.query.as_deref(), runs);
            }
            NodeEnum::DeclareCursorStmt(declare) => {
                self.add(runs, [Session]);
                if let Some(query) = inner(declare.query.as_deref()).filter(|_| runs) {
                    self.parts.push(Part::Query(query.clone()));
                }
            }
            NodeEnum::ViewStmt(view) => {
                self.add(runs, [Ddl]);
                self.nested(view.query.as_deref(), false);
            }
            NodeEnum::CreateSchemaStmt(schema) => {
                self.add(runs, [Ddl]);
                for element in &schema.schema_elts {
                    self.nested(Some(element), runs);
                }
            }
            _ => match kinds::fixed(kind) {
                Some(fixed) => self.add(runs, fixed.iter()),
                None => self.unknown.push(kind),
            },
        }
    }

    fn nested(&mut self, node: Option<&Node>, runs: bool) {
        if let Some(statement) = inner(node) {
            self.statement(statement, runs);
        }
    }

    fn select(&mut self, select: &protobuf::SelectStmt, runs: bool) {
        self.add(runs, [SqlClass::Read]);
        // FOR UPDATE / SHARE locks rows as a write would (and needs UPDATE privilege):
        // a read-only rule must not let it block the writers.
        if select.into_clause.is_some() || !select.locking_clause.is_empty() {
            self.add(runs, [SqlClass::Write]);
        }
        if select.into_clause.is_some() {
            self.add(runs, [SqlClass::Ddl]);
        }
        self.with(select.with_clause.as_ref(), runs);
        for arm in [&select.larg, &select.rarg].into_iter().flatten() {
            self.select(arm, runs);
        }
    }

    /// Common table expressions: a data-modifying one runs with its statement.
    fn with(&mut self, with: Option<&protobuf::WithClause>, runs: bool) {
        for cte in with.iter().flat_map(|with| &with.ctes) {
            if let Some(NodeEnum::CommonTableExpr(cte)) = &cte.node {
                self.nested(cte.ctequery.as_deref(), runs);
            }
        }
    }
}

fn inner(node: Option<&Node>) -> Option<&NodeEnum> {
    node.and_then(|node| node.node.as_ref())
}

/// `SELECT <expressions>`, to classify EXECUTE's arguments.
fn select_list(expressions: &[Node]) -> NodeEnum {
    let target = |expression: &Node| Node {
        node: Some(NodeEnum::ResTarget(Box::new(protobuf::ResTarget {
            val: Some(Box::new(expression.clone())),
            ..protobuf::ResTarget::default()
        }))),
    };
    NodeEnum::SelectStmt(Box::new(protobuf::SelectStmt {
        target_list: expressions.iter().map(target).collect(),
        ..bare_select()
    }))
}

/// `SELECT WHERE <condition>`, to classify COPY FROM's WHERE.
fn select_where(condition: &NodeEnum) -> NodeEnum {
    NodeEnum::SelectStmt(Box::new(protobuf::SelectStmt {
        where_clause: Some(Box::new(Node {
            node: Some(condition.clone()),
        })),
        ..bare_select()
    }))
}

fn bare_select() -> protobuf::SelectStmt {
    protobuf::SelectStmt {
        op: protobuf::SetOperation::SetopNone.into(),
        limit_option: protobuf::LimitOption::Default.into(),
        ..protobuf::SelectStmt::default()
    }
}

// ---- COPY TO STDOUT: its columns and format, for masking -------------------------------

/// What masking needs of a `COPY … TO STDOUT`: [`CopyOut::Other`] for anything but a
/// table or a query in text or CSV with options read in full.
fn copy_out(copy: &protobuf::CopyStmt) -> CopyOut {
    let Some(format) = copy_format(&copy.options) else {
        return CopyOut::Other;
    };
    let relation = match (&copy.relation, copy.query.as_deref()) {
        (Some(relation), None) => relation,
        (None, Some(Node { node: Some(query) })) => {
            return match query.deparse(pg_query::DeparseOptions::default()) {
                Ok(query) => CopyOut::Query { query, format },
                Err(_) => CopyOut::Other,
            };
        }
        _ => return CopyOut::Other,
    };
    let columns: Option<Vec<String>> = copy
        .attlist
        .iter()
        .map(|c| match &c.node {
            Some(NodeEnum::String(s)) => Some(s.sval.clone()),
            _ => None,
        })
        .collect();
    match columns {
        Some(columns) => CopyOut::Table {
            schema: Some(relation.schemaname.clone()).filter(|s| !s.is_empty()),
            table: relation.relname.clone(),
            columns,
            format,
        },
        None => CopyOut::Other,
    }
}

/// The options of a text or CSV COPY, as the server applies them; `None` for binary
/// or anything unexpected (which then cannot be masked by column).
fn copy_format(options: &[Node]) -> Option<CopyFormat> {
    let mut csv = false;
    let (mut delimiter, mut null, mut quote, mut escape) = (None, None, None, None);
    let mut header = false;
    for option in options {
        let Some(NodeEnum::DefElem(d)) = &option.node else {
            return None;
        };
        let text = match d.arg.as_deref().and_then(|a| a.node.as_ref()) {
            Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
            _ => None,
        };
        let byte = || match text.map(str::as_bytes) {
            Some(&[b]) => Some(b),
            _ => None,
        };
        match d.defname.as_str() {
            "format" => match text? {
                "csv" => csv = true,
                "text" => csv = false,
                _ => return None,
            },
            "delimiter" => delimiter = Some(byte()?),
            "null" => null = Some(text?.as_bytes().to_vec()),
            "quote" => quote = Some(byte()?),
            "escape" => escape = Some(byte()?),
            "header" => {
                header = match d.arg.as_deref().and_then(|a| a.node.as_ref()) {
                    None => true,
                    Some(NodeEnum::Boolean(b)) => b.boolval,
                    Some(NodeEnum::Integer(i)) => i.ival != 0,
                    Some(NodeEnum::String(s)) => match s.sval.to_ascii_lowercase().as_str() {
                        "true" | "on" | "1" => true,
                        "false" | "off" | "0" => false,
                        _ => return None,
                    },
                    _ => return None,
                }
            }
            // FORCE_QUOTE and ENCODING change only how values are quoted or encoded,
            // not where they start and end.
            "force_quote" | "encoding" => {}
            _ => return None,
        }
    }
    let quote = quote.unwrap_or(b'"');
    Some(CopyFormat {
        csv,
        delimiter: delimiter.unwrap_or(if csv { b',' } else { b'\t' }),
        null: null.unwrap_or_else(|| if csv { Vec::new() } else { b"\\N".to_vec() }),
        quote,
        escape: escape.unwrap_or(quote),
        header,
    })
}
