//! The vocabulary of `[[rule]] sql = [...]`: what a SQL statement does, by effect.
//!
//! The PostgreSQL proxy classifies each statement (on the real parser) into a set of
//! these classes; rules name the classes they apply to. A multi-statement string has
//! the union of its statements' classes.

use serde::{Serialize, Serializer, ser::SerializeSeq as _};
use std::fmt;

/// One class of SQL statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SqlClass {
    /// Reads data and changes nothing (SELECT, plain EXPLAIN, TABLE, VALUES).
    Read,
    /// Changes rows (INSERT, UPDATE, DELETE, MERGE, SELECT INTO, COPY FROM STDIN…).
    Write,
    /// Changes the schema (CREATE, ALTER, COMMENT…); DROP and TRUNCATE also carry this.
    Ddl,
    /// DROP of any object.
    Drop,
    /// TRUNCATE.
    Truncate,
    /// DELETE with no WHERE clause.
    DeleteWithoutWhere,
    /// UPDATE with no WHERE clause.
    UpdateWithoutWhere,
    /// GRANT/REVOKE, roles, ALTER SYSTEM, side-effect admin functions
    /// (`pg_terminate_backend`, …).
    Admin,
    /// COPY to or from a PROGRAM or a server-side file.
    CopyProgram,
    /// Code whose effect cannot be read from the text: DO, CALL, EXECUTE of a prepared
    /// statement, functions not known to be read-only.
    Dynamic,
    /// Session and transaction control: SET, SHOW, BEGIN, COMMIT, PREPARE, LISTEN…
    Session,
    /// The parser rejected it: treated as the most restrictive (it matches every rule
    /// that names any class).
    Unparsed,
}

impl SqlClass {
    pub const ALL: [SqlClass; 12] = [
        SqlClass::Read,
        SqlClass::Write,
        SqlClass::Ddl,
        SqlClass::Drop,
        SqlClass::Truncate,
        SqlClass::DeleteWithoutWhere,
        SqlClass::UpdateWithoutWhere,
        SqlClass::Admin,
        SqlClass::CopyProgram,
        SqlClass::Dynamic,
        SqlClass::Session,
        SqlClass::Unparsed,
    ];

    /// The name used in policy files.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            SqlClass::Read => "read",
            SqlClass::Write => "write",
            SqlClass::Ddl => "ddl",
            SqlClass::Drop => "drop",
            SqlClass::Truncate => "truncate",
            SqlClass::DeleteWithoutWhere => "delete_without_where",
            SqlClass::UpdateWithoutWhere => "update_without_where",
            SqlClass::Admin => "admin",
            SqlClass::CopyProgram => "copy_program",
            SqlClass::Dynamic => "dynamic",
            SqlClass::Session => "session",
            SqlClass::Unparsed => "unparsed",
        }
    }

    /// The class called `name` in a policy file.
    #[must_use]
    pub fn from_name(name: &str) -> Option<SqlClass> {
        SqlClass::ALL.into_iter().find(|c| c.name() == name)
    }

    fn bit(self) -> u16 {
        1 << (self as u8)
    }
}

impl fmt::Display for SqlClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of [`SqlClass`]es (a bit set: copying and testing are free).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SqlClasses(u16);

impl SqlClasses {
    #[must_use]
    pub fn empty() -> Self {
        Self(0)
    }

    #[must_use]
    pub fn with(self, class: SqlClass) -> Self {
        Self(self.0 | class.bit())
    }

    pub fn insert(&mut self, class: SqlClass) {
        self.0 |= class.bit();
    }

    #[must_use]
    pub fn union(self, other: SqlClasses) -> Self {
        Self(self.0 | other.0)
    }

    #[must_use]
    pub fn contains(self, class: SqlClass) -> bool {
        self.0 & class.bit() != 0
    }

    #[must_use]
    pub fn intersects(self, other: SqlClasses) -> bool {
        self.0 & other.0 != 0
    }

    #[must_use]
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = SqlClass> {
        SqlClass::ALL.into_iter().filter(move |c| self.contains(*c))
    }

    /// Names, comma-separated (for summaries and records).
    #[must_use]
    pub fn names(self) -> String {
        self.iter()
            .map(SqlClass::name)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl FromIterator<SqlClass> for SqlClasses {
    fn from_iter<I: IntoIterator<Item = SqlClass>>(iter: I) -> Self {
        iter.into_iter().fold(Self::empty(), SqlClasses::with)
    }
}

impl Serialize for SqlClasses {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(None)?;
        for class in self.iter() {
            seq.serialize_element(class.name())?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sets_behave() {
        for class in SqlClass::ALL {
            assert_eq!(SqlClass::from_name(class.name()), Some(class));
        }
        assert_eq!(SqlClass::from_name("DDL"), None);
        let set: SqlClasses = [SqlClass::Ddl, SqlClass::Drop].into_iter().collect();
        assert!(set.contains(SqlClass::Drop) && !set.contains(SqlClass::Read));
        assert!(set.intersects(SqlClasses::empty().with(SqlClass::Ddl)));
        assert_eq!(set.names(), "ddl,drop");
        assert_eq!(
            serde_json::to_string(&set).ok().as_deref(),
            Some(r#"["ddl","drop"]"#)
        );
    }
}
