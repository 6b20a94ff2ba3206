//! Column patterns of `mask_columns`.

use super::MaskError;

/// A column pattern: `table.column` (both parts globs) or `column` alone (any table).
/// `*` matches any run of characters, `?` one character; letters match ASCII
/// case-insensitively (PostgreSQL folds unquoted names to lower case).
///
/// So `*password*` matches the column `password_hash` of any table, `*.ssn` the `ssn`
/// column of any table (and of none, for a computed column), and `users.email` one
/// column of one table.
#[derive(Debug, Clone)]
pub(super) struct ColumnGlob {
    table: Option<String>,
    column: String,
}

impl ColumnGlob {
    pub(super) fn new(pattern: &str) -> Result<Self, MaskError> {
        let error = |reason| MaskError::Column {
            pattern: pattern.to_owned(),
            reason,
        };
        if pattern.is_empty() {
            return Err(error("it is empty"));
        }
        if pattern.contains(|c: char| c.is_whitespace() || "[]{}\"".contains(c)) {
            return Err(error(
                "quotes, brackets and spaces are not supported; the wildcards are * and ?",
            ));
        }
        let (table, column) = match pattern.split_once('.') {
            None => (None, pattern),
            Some((_, column)) if column.contains('.') => {
                return Err(error(
                    "write table.column or column; schema-qualified names are not supported",
                ));
            }
            Some(("", _) | (_, "")) => {
                return Err(error(
                    "a side of the '.' is empty; write *.column for any table",
                ));
            }
            Some((table, column)) => (Some(table), column),
        };
        Ok(Self {
            table: table.map(str::to_owned),
            column: column.to_owned(),
        })
    }

    /// Whether the column `column` of `table` (empty when the column has no table)
    /// matches.
    pub(super) fn matches(&self, table: &str, column: &str) -> bool {
        self.matches_table(table) && self.matches_column(column)
    }

    /// Whether some column of `table` may match.
    pub(super) fn matches_table(&self, table: &str) -> bool {
        self.table.as_deref().is_none_or(|t| glob(t, table))
    }

    /// Whether a column named `column` of some table may match.
    pub(super) fn matches_column(&self, column: &str) -> bool {
        glob(&self.column, column)
    }
}

/// One part of a pattern against a name, as SQL identifiers match.
fn glob(pattern: &str, text: &str) -> bool {
    crate::glob::matches(pattern, text, crate::glob::Syntax::IDENTIFIER)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, table: &str, column: &str) -> bool {
        ColumnGlob::new(pattern).is_ok_and(|g| g.matches(table, column))
    }

    #[test]
    fn patterns() {
        assert!(m("users.password_hash", "users", "password_hash"));
        assert!(m("users.password_hash", "Users", "PASSWORD_HASH"));
        assert!(!m("users.password_hash", "admins", "password_hash"));
        assert!(m("*.ssn", "people", "ssn"));
        assert!(m("*.ssn", "", "ssn"));
        assert!(!m("*.ssn", "people", "ssn_hint"));
        assert!(m("*password*", "users", "password_hash"));
        assert!(m("*password*", "users", "old_password"));
        assert!(!m("*password*", "password_resets", "id"));
        assert!(m("card_?", "t", "card_1"));
        assert!(m("*a*b*c", "t", "xxaxxbxxbxc"));
        assert!(!m("*a*b*c", "t", "xxaxxbxxbx"));
    }

    #[test]
    fn bad_patterns() {
        for bad in [
            "",
            "public.users.ssn",
            ".ssn",
            "users.",
            "users.[ab]",
            "my col",
        ] {
            assert!(ColumnGlob::new(bad).is_err(), "{bad}");
        }
    }
}
