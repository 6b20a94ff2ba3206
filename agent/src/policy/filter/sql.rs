//! The `sql` / `tables` filter of a rule: which SQL statements it decides, by what
//! they do (classes, see [`crate::policy::SqlClass`]) and which tables they name.
//!
//! Default: on a connection the policy allowed, a statement no filter matches is
//! allowed, except an unparsed one, which is denied (see [`unmatched`]).

use crate::policy::{
    Decision, PolicyError, SqlClass, SqlClasses, Statement, Verdict, file::RuleFile, load::Source,
    matching::glob_match,
};

/// A rule's `sql` and `tables`: both must match (an absent one matches anything).
#[derive(Debug, Clone)]
pub(in crate::policy) struct SqlFilter {
    /// Empty: any class.
    pub classes: SqlClasses,
    /// Lowercase patterns: `name` (any schema) or `schema.name`, `*` globs. Empty: any.
    pub tables: Vec<String>,
}

impl SqlFilter {
    /// A rule's `sql` and `tables`: `None` when it has neither.
    pub(in crate::policy) fn parse(
        src: &Source,
        rule: &str,
        file: &RuleFile,
    ) -> Result<Option<SqlFilter>, PolicyError> {
        if file.sql.is_none() && file.tables.is_none() {
            return Ok(None);
        }
        let mut classes = SqlClasses::empty();
        for class in file.sql.iter().flat_map(toml::Spanned::get_ref) {
            let Some(found) = SqlClass::from_name(class.get_ref()) else {
                let known: Vec<_> = SqlClass::ALL.iter().map(|c| c.name()).collect();
                return Err(src.error(
                    class.span(),
                    format!(
                        "unknown sql class `{}` in rule `{rule}`; use one of {}",
                        class.get_ref(),
                        known.join(", ")
                    ),
                ));
            };
            classes.insert(found);
        }
        for list in [&file.sql, &file.tables].into_iter().flatten() {
            if list.get_ref().is_empty() {
                return Err(src.error(
                    list.span(),
                    format!("empty list in rule `{rule}`; remove the key or name what it covers"),
                ));
            }
        }
        let tables = file
            .tables
            .iter()
            .flat_map(toml::Spanned::get_ref)
            .map(|t| t.get_ref().to_lowercase())
            .collect();
        Ok(Some(SqlFilter { classes, tables }))
    }

    /// Whether the filter covers `statement`; `verdict` is its rule's (an unknown
    /// schema counts only for restricting rules). An unparsed statement could be
    /// anything, so every statement filter covers it.
    pub(in crate::policy) fn covers(&self, statement: &Statement<'_>, verdict: Verdict) -> bool {
        if statement.classes.contains(SqlClass::Unparsed) {
            return true;
        }
        let classes = self.classes.is_empty() || self.classes.intersects(statement.classes);
        let restricting = verdict > Verdict::Allow;
        let tables = self.tables.is_empty()
            || statement.tables.iter().any(|table| {
                let table = table.to_lowercase();
                self.tables
                    .iter()
                    .any(|pattern| table_matches(pattern, &table, restricting))
            });
        classes && tables
    }
}

/// Whether `table` (`name` or `schema.name`, as written in the statement) matches
/// `pattern`. An unqualified name's schema is unknown (it depends on `search_path`):
/// it satisfies a schema-qualified pattern only on a restricting rule, or when the
/// pattern's schema is `*`.
fn table_matches(pattern: &str, table: &str, restricting: bool) -> bool {
    match (pattern.split_once('.'), table.rsplit_once('.')) {
        (None, Some((_, name))) => glob_match(pattern, name),
        (None, None) => glob_match(pattern, table),
        (Some((ps, pn)), Some((schema, name))) => glob_match(ps, schema) && glob_match(pn, name),
        (Some((ps, pn)), None) => glob_match(pn, table) && (restricting || ps == "*"),
    }
}

/// The decision for a statement no `sql`/`tables` rule matched, on target `target`.
pub(in crate::policy) fn unmatched(statement: &Statement<'_>, target: &str) -> Decision {
    if statement.classes.contains(SqlClass::Unparsed) {
        return Decision::deny_unmatched(format!(
            "the statement could not be parsed, and no rule allows unparsed SQL on target {target}"
        ));
    }
    Decision {
        verdict: Verdict::Allow,
        rule: None,
        reason: String::new(),
        review: None,
    }
}
