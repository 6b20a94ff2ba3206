//! The relations and columns a parsed text names ([`Refs`]), for masking by column,
//! and, for classifying, the functions it calls and whether it locks rows.
//!
//! The walk goes over the whole tree in its serialized form, so no node kind can be
//! missed (a hand-written walker over PostgreSQL's hundreds of node kinds could miss
//! one, and with it a column reference): every `ColumnRef`, `RangeVar`, alias and
//! `FuncCall` is seen wherever it sits, in utility statements too (a column's
//! `DEFAULT`, which the summary's function list leaves out), and so is every `FOR
//! UPDATE`/`FOR SHARE`, in a subquery as well.

use super::Refs;
use pg_query::protobuf::ParseResult;
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// A function call: schema (if written) and name, as written.
pub(super) type Call = (Option<String>, String);

/// What the walk of a tree found.
pub(super) struct Found {
    pub(super) refs: Refs,
    pub(super) calls: BTreeSet<Call>,
    /// Some `SELECT` has a locking clause (`FOR UPDATE`, `FOR SHARE`…).
    pub(super) locks_rows: bool,
}

/// What `tree` names, the functions it calls and whether it locks rows; `unknown`
/// (and, failing closed, a lock) when it cannot be walked.
pub(super) fn of(tree: &ParseResult) -> Found {
    let Ok(json) = serde_json::to_value(tree) else {
        let refs = Refs {
            unknown: true,
            ..Refs::default()
        };
        return Found {
            refs,
            calls: BTreeSet::new(),
            locks_rows: true,
        };
    };
    let mut walk = Walk::default();
    walk.value(&json);
    let whole_rows = walk.unnamed
        || walk
            .single_names
            .iter()
            .any(|n| walk.relations.contains(n) || walk.aliases.contains(n));
    let refs = Refs {
        relations: walk.relations.into_iter().collect(),
        columns: walk.columns.into_iter().collect(),
        whole_rows,
        unknown: walk.unknown,
    };
    Found {
        refs,
        calls: walk.calls,
        locks_rows: walk.locks_rows,
    }
}

#[derive(Default)]
struct Walk {
    relations: BTreeSet<String>,
    aliases: BTreeSet<String>,
    columns: BTreeSet<String>,
    /// Column references of one name (`x`): a column, or a whole row if it names a
    /// relation or alias.
    single_names: BTreeSet<String>,
    /// Any column may be used under no name of its own: `t.*` or `*` somewhere other
    /// than as a result column of its own, or columns renamed by a list (`AS c(a, b)`,
    /// `WITH x(a, b)`), whose new names say nothing of which columns they are.
    unnamed: bool,
    unknown: bool,
    calls: BTreeSet<Call>,
    locks_rows: bool,
}

impl Walk {
    fn value(&mut self, v: &Value) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| self.value(i)),
            Value::Object(map) => self.object(map),
            _ => {}
        }
    }

    fn object(&mut self, map: &Map<String, Value>) {
        // A `RangeVar`, also where a statement holds one directly rather than as a node
        // (the target of INSERT, UPDATE, DELETE, MERGE, COPY).
        if let Some(name) = map.get("relname").and_then(Value::as_str) {
            self.relations.insert(name.to_owned());
        }
        for (key, value) in map {
            match key.as_str() {
                "ColumnRef" => self.column_ref(value, false),
                // `SELECT t.*` and `RETURNING *` expand to the columns themselves, which
                // `RowDescription` names; anywhere else a star is a whole row.
                "ResTarget" => {
                    let star = value
                        .pointer("/val/node/ColumnRef")
                        .filter(|c| ends_in_star(c));
                    match (star, value) {
                        (Some(column_ref), Value::Object(target)) => {
                            self.column_ref(column_ref, true);
                            target
                                .iter()
                                .filter(|(k, _)| k.as_str() != "val")
                                .for_each(|(_, v)| self.value(v));
                        }
                        _ => self.value(value),
                    }
                }
                "alias" => {
                    if let Some(name) = value.get("aliasname").and_then(Value::as_str) {
                        self.aliases.insert(name.to_owned());
                    }
                    self.unnamed |= non_empty(value.get("colnames"));
                    self.value(value);
                }
                "aliascolnames" => {
                    self.unnamed |= non_empty(Some(value));
                    self.value(value);
                }
                "FuncCall" => {
                    let names: Vec<&str> = value
                        .get("funcname")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|n| n.pointer("/node/String/sval").and_then(Value::as_str))
                        .collect();
                    match names.as_slice() {
                        [name] => self.calls.insert((None, (*name).to_owned())),
                        [.., schema, name] => self
                            .calls
                            .insert((Some((*schema).to_owned()), (*name).to_owned())),
                        [] => false,
                    };
                    self.value(value);
                }
                "locking_clause" => {
                    self.locks_rows |= value.as_array().is_some_and(|l| !l.is_empty());
                    self.value(value);
                }
                // Rows from a statement prepared or declared elsewhere.
                "FetchStmt" | "ExecuteStmt" => {
                    self.unknown = true;
                    self.value(value);
                }
                _ => self.value(value),
            }
        }
    }

    fn column_ref(&mut self, column_ref: &Value, expansion: bool) {
        let fields: Vec<&Value> = column_ref
            .get("fields")
            .and_then(Value::as_array)
            .map(|f| f.iter().collect())
            .unwrap_or_default();
        let names: Vec<&str> = fields
            .iter()
            .filter_map(|f| f.pointer("/node/String/sval").and_then(Value::as_str))
            .collect();
        if ends_in_star(column_ref) {
            self.unnamed |= !expansion;
        } else if let Some(last) = names.last() {
            self.columns.insert((*last).to_owned());
            if let [only] = names.as_slice() {
                self.single_names.insert((*only).to_owned());
            }
        }
        if names.len() + usize::from(ends_in_star(column_ref)) != fields.len() {
            // A part that is neither a name nor `*`: not expected; assume the worst.
            self.unknown = true;
        }
    }
}

/// Whether `list` is an array with something in it.
fn non_empty(list: Option<&Value>) -> bool {
    list.and_then(Value::as_array)
        .is_some_and(|l| !l.is_empty())
}

/// Whether a `ColumnRef` ends in `*`.
fn ends_in_star(column_ref: &Value) -> bool {
    column_ref
        .get("fields")
        .and_then(Value::as_array)
        .and_then(|f| f.last())
        .is_some_and(|last| last.pointer("/node/AStar").is_some())
}

#[cfg(test)]
mod tests {
    #![expect(clippy::panic, reason = "tests")]

    use super::*;

    fn refs(sql: &str) -> Refs {
        let tree = pg_query::parse(sql, pg_query::ParserOptions::DEFAULT)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        of(&tree.protobuf).refs
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn columns_and_relations_are_found_in_any_expression() {
        let r = refs(
            "SELECT upper(c.password_hash), (SELECT max(ssn) FROM people) FROM public.customers c \
             WHERE id = ANY(ARRAY[1, 2]) ORDER BY note",
        );
        assert_eq!(r.relations, names(&["customers", "people"]));
        assert_eq!(r.columns, names(&["id", "note", "password_hash", "ssn"]));
        assert!(!r.whole_rows && !r.unknown);
        // Deep in node kinds a hand-written walker might skip.
        let r = refs("SELECT xmlelement(name x, password_hash) FROM customers");
        assert_eq!(r.columns, names(&["password_hash"]));
        let r = refs("SELECT json_object('k': password_hash) FROM customers");
        assert_eq!(r.columns, names(&["password_hash"]));
    }

    #[test]
    fn a_statements_own_target_is_a_relation() {
        // Held directly, not as a node, by these statements.
        for sql in [
            "DELETE FROM customers RETURNING upper(password_hash)",
            "UPDATE customers SET note = 'x'",
            "INSERT INTO customers (id) VALUES (1)",
            "MERGE INTO customers c USING (SELECT 1 AS id) s ON c.id = s.id \
             WHEN MATCHED THEN DELETE",
            "COPY customers TO STDOUT",
        ] {
            assert_eq!(refs(sql).relations, names(&["customers"]), "{sql}");
        }
    }

    #[test]
    fn whole_rows_are_told_from_expanded_stars() {
        for sql in [
            "SELECT * FROM customers",
            "SELECT c.* FROM customers c",
            "UPDATE customers SET id = 1 RETURNING *",
            "SELECT count(*) FROM customers",
            "SELECT x.h FROM customers AS x",
            "WITH x AS (SELECT * FROM customers) SELECT * FROM x",
        ] {
            assert!(!refs(sql).whole_rows, "{sql}");
        }
        for sql in [
            "SELECT c FROM customers c",
            "SELECT customers FROM customers",
            "SELECT row_to_json(c.*) FROM customers c",
            "SELECT to_jsonb(c) FROM customers c",
            "SELECT (c).password_hash FROM customers c",
            "SELECT s FROM (SELECT * FROM customers) s",
            // Renamed columns may be any.
            "SELECT upper(h) FROM customers AS c(i, h)",
            "SELECT h FROM (SELECT * FROM customers) s(i, h)",
            "WITH x(i, h) AS (SELECT * FROM customers) SELECT h || '' FROM x",
        ] {
            assert!(refs(sql).whole_rows, "{sql}");
        }
    }

    #[test]
    fn calls_are_found_in_utility_statements() {
        let tree = pg_query::parse(
            "ALTER TABLE t ADD COLUMN z int DEFAULT pg_catalog.pg_terminate_backend(now())",
            pg_query::ParserOptions::DEFAULT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let calls = of(&tree.protobuf).calls;
        let expected: BTreeSet<Call> = [
            (Some("pg_catalog".into()), "pg_terminate_backend".into()),
            (None, "now".into()),
        ]
        .into();
        assert_eq!(calls, expected);
    }

    #[test]
    fn rows_from_elsewhere_are_unknown() {
        assert!(refs("EXECUTE p(1)").unknown);
        assert!(refs("FETCH 10 FROM c").unknown);
        assert!(!refs("SELECT 1").unknown);
    }
}
