//! One SQL text through the parser, to a [`Classified`].
//!
//! Two views of the same parse, each used for what it does best:
//!
//! - **`pg_query::summary`** walks the tree in C with PostgreSQL's own
//!   `raw_expression_tree_walker`, so it misses no function call or subquery inside an
//!   expression, and it copes with any depth PostgreSQL accepts. It gives the functions
//!   called, the tables touched, and the kinds of all statements it met, nested ones
//!   included. It does not look inside most utility statements (a cursor's query, COPY's
//!   WHERE, EXECUTE's arguments) and it cannot say whether a DELETE has a WHERE.
//! - **`pg_query::parse`** gives the full tree, decoded into Rust. A walker
//!   (`walker.rs`) reads what each statement does from the places statements nest:
//!   top level, WITH,
//!   set operations, INSERT's source, EXPLAIN, PREPARE, COPY, CREATE TABLE AS, CREATE
//!   VIEW, CREATE SCHEMA. The decoding stops at 100 nested messages, which a
//!   `1+1+…` of ~48 terms or ~20 nested subqueries already reach.
//!
//! Every text goes through both (summary ~2.5 µs, parse ~8 µs for the pgbench query;
//! cached afterwards). Any statement kind the summary met where the walker did not look
//! is added at its worst case. A kind the walker saw anywhere counts as seen: where it
//! does not look (expressions, subqueries in FROM) PostgreSQL runs no data-modifying
//! statement ("WITH clause containing a data-modifying statement must be at the top
//! level"), so what that can hide is a SELECT. When the tree cannot be decoded, the text is split into
//! statements and each too-deep one is judged from its summary at the worst case of
//! every detail: DELETE and UPDATE count as having no WHERE, EXPLAIN as ANALYZE, COPY as
//! reading, writing and using a server file.
//!
//! The parts the summary does not look into and that run in this session (a cursor's
//! query, COPY's WHERE, EXECUTE's arguments) are deparsed and classified as their own
//! text, so the functions they call are seen.

use super::{Classified, CopyOut, ParseError, Refs, functions, kinds, refs};
use crate::policy::{SqlClass, SqlClasses};
use pg_query::protobuf::summary_result::Context;
use pg_query::{NodeEnum, ParserOptions, SummaryResult};
use std::collections::BTreeSet;
use walker::Walker;

mod walker;

/// Classifies `sql` as a server with this `standard_conforming_strings` would parse it.
pub(super) fn classify_text(sql: &str, standard_conforming_strings: bool) -> Classified {
    classify(sql, standard_conforming_strings, Nesting::Text)
}

/// Whether a text is what the client sent or a part deparsed from it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Nesting {
    Text,
    Part,
}

fn classify(sql: &str, standard_conforming_strings: bool, nesting: Nesting) -> Classified {
    let options = if standard_conforming_strings {
        ParserOptions::DEFAULT
    } else {
        ParserOptions::DISABLE_STANDARD_CONFORMING_STRINGS
    };
    let summary = match pg_query::summary(sql, options, -1) {
        Ok(summary) => summary,
        Err(error) => return Classified::unparsed(ParseError::from_pg_query(sql, options, &error)),
    };
    let mut outcome = Outcome::from_summary(&summary);
    match pg_query::parse(sql, options) {
        Ok(tree) => {
            let found = refs::of(&tree.protobuf);
            outcome.refs = outcome.refs.union(&found.refs);
            outcome.add_calls(&found.calls);
            // A row lock in a subquery, which the statement walk does not enter.
            if found.locks_rows {
                outcome.add(SqlClasses::empty().with(SqlClass::Write));
            }
            outcome.add_walk(Walker::walk(&tree.protobuf), &summary, nesting);
        }
        // The tree is too deep to decode (summary parsed the same text).
        Err(_) => match split(sql, standard_conforming_strings) {
            Some(statements) if statements.len() > 1 => {
                for statement in statements {
                    outcome.merge(&classify(statement, standard_conforming_strings, nesting));
                }
            }
            Some(_) => outcome.add_worst_case(&summary),
            None => outcome
                .fail("too deeply nested to classify with backslashes read as escapes".into()),
        },
    }
    outcome.finish()
}

/// The statements of `sql`, when they can be found the way the server would: the
/// splitter parses with `standard_conforming_strings` on, which reads a text without
/// backslashes the same way either setting does.
fn split(sql: &str, standard_conforming_strings: bool) -> Option<Vec<&str>> {
    if !standard_conforming_strings && sql.contains('\\') {
        return None;
    }
    pg_query::split_with_parser(sql).ok()
}

/// `name` (`schema.table`, each part quoted as PostgreSQL's `quote_ident` quotes it)
/// without the quotes on a part that reads the same unquoted: lowercase letters, any
/// of them non-ASCII, digits and `_` (`quote_ident` quotes every non-ASCII name). So
/// a rule names `tarifs_été` as a statement writes it.
fn unquote_plain(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    loop {
        // One part: a quoted one, or up to the next dot.
        let (part, after) = match rest.strip_prefix('"').map(|q| (q, closing_quote(q))) {
            Some((quoted, Some(end))) => {
                let (inner, _) = quoted.split_at(end);
                let (whole, after) = rest.split_at(end + 2);
                (if reads_unquoted(inner) { inner } else { whole }, after)
            }
            Some((_, None)) => (rest, ""),
            None => rest.split_at(rest.find('.').unwrap_or(rest.len())),
        };
        out.push_str(part);
        match after.strip_prefix('.') {
            Some(next) => {
                out.push('.');
                rest = next;
            }
            None => {
                out.push_str(after);
                return out;
            }
        }
    }
}

/// Whether a quoted identifier with a non-ASCII character reads the same unquoted.
fn reads_unquoted(inner: &str) -> bool {
    !inner.is_ascii()
        && !inner.starts_with(|c: char| c.is_ascii_digit())
        && inner.chars().all(|c| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || c == '_'
                || (!c.is_ascii() && !c.is_uppercase())
        })
}

/// Where the quoted part that `text` starts inside ends: its first `"` not doubled.
fn closing_quote(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = 0;
    loop {
        match (bytes.get(i)?, bytes.get(i + 1)) {
            (b'"', Some(b'"')) => i += 2,
            (b'"', _) => return Some(i),
            _ => i += 1,
        }
    }
}

fn classes(list: &[SqlClass]) -> SqlClasses {
    list.iter().copied().collect()
}

// ---- Outcome: what the text does, gathered from both views --------------------------

struct Outcome {
    classes: SqlClasses,
    tables: BTreeSet<String>,
    functions: BTreeSet<String>,
    error: Option<ParseError>,
    copy_out: Vec<CopyOut>,
    refs: Refs,
}

impl Outcome {
    /// Tables, and functions called with the classes they add.
    fn from_summary(summary: &SummaryResult) -> Outcome {
        let mut outcome = Outcome {
            classes: SqlClasses::empty(),
            tables: summary
                .tables
                .iter()
                .map(|t| unquote_plain(&t.name))
                .collect(),
            functions: BTreeSet::new(),
            error: None,
            copy_out: Vec::new(),
            refs: Refs::default(),
        };
        for function in summary
            .functions
            .iter()
            .filter(|f| f.context == Context::Call)
        {
            outcome.functions.insert(function.name.to_lowercase());
            let called =
                functions::call_classes(function.schema_name.as_deref(), &function.function_name);
            outcome.classes = outcome.classes.union(called);
        }
        outcome
    }

    fn add(&mut self, classes: SqlClasses) {
        self.classes = self.classes.union(classes);
    }

    /// Calls the tree walk found, some of which the summary does not list.
    fn add_calls(&mut self, calls: &BTreeSet<refs::Call>) {
        for (schema, name) in calls {
            let shown = match schema {
                Some(schema) => format!("{schema}.{name}"),
                None => name.clone(),
            };
            self.functions.insert(shown.to_lowercase());
            self.add(functions::call_classes(schema.as_deref(), name));
        }
    }

    /// Fails closed: `Unparsed` matches every rule that names any class. The only way
    /// `Unparsed` gets in, so `error` says why whenever it is there.
    fn fail(&mut self, error: String) {
        self.refs.unknown = true;
        self.classes.insert(SqlClass::Unparsed);
        self.error.get_or_insert(ParseError::unclassifiable(error));
    }

    fn add_kind(&mut self, kind: &str, classes: Option<SqlClasses>) {
        match classes {
            Some(classes) => self.add(classes),
            None => self.fail(format!(
                "statement kind {kind} is unknown to the classifier"
            )),
        }
    }

    fn add_walk(&mut self, walk: Walker, summary: &SummaryResult, nesting: Nesting) {
        self.add(walk.classes);
        self.copy_out.extend(walk.copy_out);
        for kind in walk.unknown {
            self.add_kind(kind, None);
        }
        let seen = |kind: &str| walk.seen.iter().any(|s| s.eq_ignore_ascii_case(kind));
        for kind in summary.statement_types.iter().filter(|kind| !seen(kind)) {
            self.add_kind(kind, kinds::worst_case(kind));
        }
        for part in walk.parts {
            self.merge(&classify_part(&part, nesting));
        }
    }

    /// Judges a single statement from its summary alone (its tree was too deep).
    fn add_worst_case(&mut self, summary: &SummaryResult) {
        self.refs.unknown = true;
        if summary.statement_types.is_empty() {
            self.fail("a statement kind the summary does not name is too deep to classify".into());
        }
        for kind in &summary.statement_types {
            self.add_kind(kind, kinds::worst_case(kind));
            if kind == "CopyStmt" {
                self.copy_out.push(CopyOut::Other);
            }
        }
        // SELECT … INTO: the summary lists its target as a DDL table.
        let selects = summary.statement_types.iter().any(|k| k == "SelectStmt");
        if selects && summary.tables.iter().any(|t| t.context == Context::Ddl) {
            self.add(classes(&[SqlClass::Write, SqlClass::Ddl]));
        }
    }

    fn merge(&mut self, other: &Classified) {
        self.add(other.classes);
        self.tables.extend(other.tables.iter().cloned());
        self.functions.extend(other.functions.iter().cloned());
        // Another text's error (a statement of this one, which parsed as a whole): not
        // the server's answer to this text, and its position is not in this text.
        if let Some(error) = &other.error {
            self.error
                .get_or_insert_with(|| ParseError::unclassifiable(error.message.clone()));
        }
        self.copy_out.extend(other.copy_out.iter().cloned());
        self.refs = self.refs.union(&other.refs);
    }

    fn finish(self) -> Classified {
        Classified {
            // Nothing to run (an empty text, only comments): session-level at most.
            classes: if self.classes.is_empty() {
                classes(&[SqlClass::Session])
            } else {
                self.classes
            },
            tables: self.tables.into_iter().collect(),
            functions: self.functions.into_iter().collect(),
            error: self.error,
            copy_out: self.copy_out,
            // What a function Portcullis cannot see into reads is not known.
            refs: Refs {
                unknown: self.refs.unknown || self.classes.contains(SqlClass::Dynamic),
                ..self.refs
            },
        }
    }
}

/// A part of a statement that runs but that the summary does not look into.
enum Part {
    /// A query: a cursor's.
    Query(NodeEnum),
    /// Expressions (EXECUTE's arguments, COPY's WHERE) wrapped in a `SELECT`, whose
    /// `Read` is the wrapper's, not theirs (PostgreSQL allows no subquery there).
    Expressions(NodeEnum),
}

/// Classifies a part deparsed to SQL (which the deparser writes with
/// standard-conforming strings). Anything that goes wrong makes it `Dynamic`: its
/// effect could not be read.
fn classify_part(part: &Part, nesting: Nesting) -> Classified {
    let dynamic = || Classified {
        classes: classes(&[SqlClass::Dynamic]),
        tables: Vec::new(),
        functions: Vec::new(),
        error: None,
        copy_out: Vec::new(),
        refs: Refs {
            unknown: true,
            ..Refs::default()
        },
    };
    if nesting == Nesting::Part {
        return dynamic(); // parts of parts cannot occur; never loop if they did
    }
    let (Part::Query(node) | Part::Expressions(node)) = part;
    let Ok(sql) = node.deparse(pg_query::DeparseOptions::default()) else {
        return dynamic();
    };
    let mut classified = classify(&sql, true, Nesting::Part);
    if classified.classes.contains(SqlClass::Unparsed) {
        return dynamic();
    }
    if let Part::Expressions(_) = part {
        classified.classes = classified
            .classes
            .iter()
            .filter(|&c| c != SqlClass::Read)
            .collect();
    }
    classified
}
