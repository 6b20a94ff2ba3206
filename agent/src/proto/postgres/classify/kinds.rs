//! What each kind of statement does, by the name of its parse node ("`DropStmt`").
//!
//! Names come from two places that spell three of them differently: the summary
//! (PostgreSQL's C names, `AlterTSConfigurationStmt`) and the parse tree's Rust enum
//! (`AlterTsconfigurationStmt`); both spellings are listed.

use crate::policy::{SqlClass, SqlClasses};
use SqlClass::{
    Admin, CopyProgram, Ddl, DeleteWithoutWhere, Drop, Dynamic, Read, Session, Truncate,
    UpdateWithoutWhere, Write,
};

/// The classes of a statement kind whose effect does not depend on its details, or
/// `None` for a kind this table does not know (a newer parser; the caller fails closed)
/// and for the kinds whose details matter (a WHERE clause, EXPLAIN's options, COPY's
/// direction, nested statements): the walker in `analyze` reads those from the tree,
/// and [`worst_case`] covers them when it cannot.
pub(super) fn fixed(kind: &str) -> Option<SqlClasses> {
    let classes: &[SqlClass] = match kind {
        "VariableSetStmt" | "VariableShowStmt" | "TransactionStmt" | "DeallocateStmt"
        | "DiscardStmt" | "ListenStmt" | "UnlistenStmt" | "NotifyStmt" | "ClosePortalStmt"
        | "ConstraintsSetStmt" => &[Session],
        // FETCH reads from a cursor whose query was judged at DECLARE.
        "FetchStmt" | "SetOperationStmt" => &[Read],
        // LOCK takes the locks writers take (and needs UPDATE/DELETE/TRUNCATE for most
        // modes); REFRESH rewrites a materialized view's rows.
        "LockStmt" | "RefreshMatViewStmt" => &[Write],
        "TruncateStmt" => &[Ddl, Truncate, Write],
        "DropStmt" | "DropUserMappingStmt" => &[Ddl, Drop],
        "DropRoleStmt"
        | "DropdbStmt"
        | "DropTableSpaceStmt"
        | "DropSubscriptionStmt"
        | "DropOwnedStmt" => &[Ddl, Drop, Admin],
        "GrantStmt" | "GrantRoleStmt" | "CreateRoleStmt" | "AlterRoleStmt" | "AlterRoleSetStmt"
        | "AlterSystemStmt" | "CheckPointStmt" | "LoadStmt" => &[Admin],
        // Schema changes that need a superuser or act on the whole cluster or database.
        "AlterDatabaseStmt"
        | "AlterDatabaseSetStmt"
        | "AlterDatabaseRefreshCollStmt"
        | "CreatedbStmt"
        | "CreateTableSpaceStmt"
        | "AlterTableSpaceOptionsStmt"
        | "AlterDefaultPrivilegesStmt"
        | "ReassignOwnedStmt"
        | "CreateEventTrigStmt"
        | "AlterEventTrigStmt"
        | "CreateFdwStmt"
        | "AlterFdwStmt"
        | "CreateAmStmt"
        | "CreatePLangStmt"
        | "CreatePlangStmt"
        | "CreatePublicationStmt"
        | "AlterPublicationStmt"
        | "CreateSubscriptionStmt"
        | "AlterSubscriptionStmt" => &[Ddl, Admin],
        "AlterCollationStmt"
        | "AlterDomainStmt"
        | "AlterEnumStmt"
        | "AlterExtensionContentsStmt"
        | "AlterExtensionStmt"
        | "AlterForeignServerStmt"
        | "AlterFunctionStmt"
        | "AlterObjectDependsStmt"
        | "AlterObjectSchemaStmt"
        | "AlterOpFamilyStmt"
        | "AlterOperatorStmt"
        | "AlterOwnerStmt"
        | "AlterPolicyStmt"
        | "AlterSeqStmt"
        | "AlterStatsStmt"
        | "AlterTableCmd"
        | "AlterTableMoveAllStmt"
        | "AlterTableStmt"
        | "AlterTSConfigurationStmt"
        | "AlterTsconfigurationStmt"
        | "AlterTSDictionaryStmt"
        | "AlterTsdictionaryStmt"
        | "AlterTypeStmt"
        | "AlterUserMappingStmt"
        | "ClusterStmt"
        | "CommentStmt"
        | "CompositeTypeStmt"
        | "CreateCastStmt"
        | "CreateConversionStmt"
        | "CreateDomainStmt"
        | "CreateEnumStmt"
        | "CreateExtensionStmt"
        | "CreateForeignServerStmt"
        | "CreateForeignTableStmt"
        | "CreateFunctionStmt"
        | "CreateOpClassStmt"
        | "CreateOpFamilyStmt"
        | "CreatePolicyStmt"
        | "CreateRangeStmt"
        | "CreateSeqStmt"
        | "CreateStatsStmt"
        | "CreateStmt"
        | "CreateTransformStmt"
        | "CreateTrigStmt"
        | "CreateUserMappingStmt"
        | "DefineStmt"
        | "ImportForeignSchemaStmt"
        | "IndexStmt"
        | "ReindexStmt"
        | "RenameStmt"
        | "ReplicaIdentityStmt"
        | "RuleStmt"
        | "SecLabelStmt"
        | "VacuumStmt" => &[Ddl],
        "DoStmt" | "CallStmt" => &[Dynamic],
        _ => return None,
    };
    Some(classes.iter().copied().collect())
}

/// The classes of a statement kind when its details cannot be seen (the parse tree was
/// too deep to decode, or the statement sits where the walker does not look): the worst
/// case of every detail. `None` for an unknown kind.
pub(super) fn worst_case(kind: &str) -> Option<SqlClasses> {
    let classes: &[SqlClass] = match kind {
        "SelectStmt" | "ExplainStmt" => &[Read],
        "InsertStmt" | "MergeStmt" => &[Write],
        "UpdateStmt" => &[Write, UpdateWithoutWhere],
        "DeleteStmt" => &[Write, DeleteWithoutWhere],
        "PrepareStmt" => &[Session],
        "ExecuteStmt" => &[Dynamic],
        "CopyStmt" => &[Read, Write, CopyProgram],
        "CreateTableAsStmt" => &[Ddl, Write, Read],
        // The cursor's query is invisible to the summary: any function may be in it.
        "DeclareCursorStmt" => &[Session, Read, Dynamic],
        "ViewStmt" => &[Ddl],
        // CREATE SCHEMA … GRANT … is allowed.
        "CreateSchemaStmt" => &[Ddl, Admin],
        _ => return fixed(kind),
    };
    Some(classes.iter().copied().collect())
}

/// The name of a node's kind ("`SelectStmt`"), as [`fixed`] and [`worst_case`] know it.
/// prost generates no accessor for it, but serde's derive hands it to
/// `serialize_newtype_variant`, where [`KindName`] stops without serializing the node.
pub(super) fn kind_name(node: &pg_query::NodeEnum) -> &'static str {
    serde::Serialize::serialize(node, KindName).unwrap_or("an unnamed node")
}

/// A serializer that accepts only an enum variant, and returns its name.
struct KindName;

#[derive(Debug)]
struct NotAVariant;

impl std::fmt::Display for NotAVariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not an enum variant")
    }
}

impl std::error::Error for NotAVariant {}

impl serde::ser::Error for NotAVariant {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        NotAVariant
    }
}

type Refused = serde::ser::Impossible<&'static str, NotAVariant>;

/// Serializer methods that refuse anything but a variant.
macro_rules! refuse {
    ($($method:ident($($arg:ty),*) -> $ok:ty;)*) => {$(
        fn $method(self, $(_: $arg),*) -> Result<$ok, NotAVariant> {
            Err(NotAVariant)
        }
    )*};
}

impl serde::Serializer for KindName {
    type Ok = &'static str;
    type Error = NotAVariant;
    type SerializeSeq = Refused;
    type SerializeTuple = Refused;
    type SerializeTupleStruct = Refused;
    type SerializeTupleVariant = Refused;
    type SerializeMap = Refused;
    type SerializeStruct = Refused;
    type SerializeStructVariant = Refused;

    fn serialize_newtype_variant<T: ?Sized + serde::Serialize>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: &T,
    ) -> Result<&'static str, NotAVariant> {
        Ok(variant)
    }

    fn serialize_some<T: ?Sized + serde::Serialize>(
        self,
        _: &T,
    ) -> Result<&'static str, NotAVariant> {
        Err(NotAVariant)
    }

    fn serialize_newtype_struct<T: ?Sized + serde::Serialize>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<&'static str, NotAVariant> {
        Err(NotAVariant)
    }

    refuse! {
        serialize_bool(bool) -> &'static str;
        serialize_i8(i8) -> &'static str;
        serialize_i16(i16) -> &'static str;
        serialize_i32(i32) -> &'static str;
        serialize_i64(i64) -> &'static str;
        serialize_u8(u8) -> &'static str;
        serialize_u16(u16) -> &'static str;
        serialize_u32(u32) -> &'static str;
        serialize_u64(u64) -> &'static str;
        serialize_f32(f32) -> &'static str;
        serialize_f64(f64) -> &'static str;
        serialize_char(char) -> &'static str;
        serialize_str(&str) -> &'static str;
        serialize_bytes(&[u8]) -> &'static str;
        serialize_none() -> &'static str;
        serialize_unit() -> &'static str;
        serialize_unit_struct(&'static str) -> &'static str;
        serialize_unit_variant(&'static str, u32, &'static str) -> &'static str;
        serialize_seq(Option<usize>) -> Refused;
        serialize_tuple(usize) -> Refused;
        serialize_tuple_struct(&'static str, usize) -> Refused;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Refused;
        serialize_map(Option<usize>) -> Refused;
        serialize_struct(&'static str, usize) -> Refused;
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Refused;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every statement type name `libpg_query`'s summary reports (its
    /// `pg_query_summary_statement_type.c`), plus the parse tree's statement variants
    /// that are spelled differently or that the summary never names.
    #[rustfmt::skip]
    const KNOWN: &[&str] = &[
        "AlterCollationStmt", "AlterDatabaseSetStmt", "AlterDatabaseStmt",
        "AlterDefaultPrivilegesStmt", "AlterDomainStmt", "AlterEnumStmt", "AlterEventTrigStmt",
        "AlterExtensionContentsStmt", "AlterExtensionStmt", "AlterFdwStmt",
        "AlterForeignServerStmt", "AlterFunctionStmt", "AlterObjectDependsStmt",
        "AlterObjectSchemaStmt", "AlterOpFamilyStmt", "AlterOperatorStmt", "AlterOwnerStmt",
        "AlterPolicyStmt", "AlterPublicationStmt", "AlterRoleSetStmt", "AlterRoleStmt",
        "AlterSeqStmt", "AlterStatsStmt", "AlterSubscriptionStmt", "AlterSystemStmt",
        "AlterTableCmd", "AlterTableMoveAllStmt", "AlterTableSpaceOptionsStmt",
        "AlterTableStmt", "AlterTSConfigurationStmt", "AlterTSDictionaryStmt", "AlterTypeStmt",
        "AlterUserMappingStmt", "CallStmt", "CheckPointStmt", "ClosePortalStmt", "ClusterStmt",
        "CommentStmt", "CompositeTypeStmt", "ConstraintsSetStmt", "CopyStmt", "CreateAmStmt",
        "CreateCastStmt", "CreateConversionStmt", "CreateDomainStmt", "CreateEnumStmt",
        "CreateEventTrigStmt", "CreateExtensionStmt", "CreateFdwStmt",
        "CreateForeignServerStmt", "CreateForeignTableStmt", "CreateFunctionStmt",
        "CreateOpClassStmt", "CreateOpFamilyStmt", "CreatePLangStmt", "CreatePolicyStmt",
        "CreatePublicationStmt", "CreateRangeStmt", "CreateRoleStmt", "CreateSchemaStmt",
        "CreateSeqStmt", "CreateStatsStmt", "CreateStmt", "CreateSubscriptionStmt",
        "CreateTableAsStmt", "CreateTableSpaceStmt", "CreateTransformStmt", "CreateTrigStmt",
        "CreateUserMappingStmt", "CreatedbStmt", "DeallocateStmt", "DeclareCursorStmt",
        "DefineStmt", "DeleteStmt", "DiscardStmt", "DoStmt", "DropOwnedStmt", "DropRoleStmt",
        "DropStmt", "DropSubscriptionStmt", "DropTableSpaceStmt", "DropUserMappingStmt",
        "DropdbStmt", "ExecuteStmt", "ExplainStmt", "FetchStmt", "GrantRoleStmt", "GrantStmt",
        "ImportForeignSchemaStmt", "IndexStmt", "InsertStmt", "ListenStmt", "LoadStmt",
        "LockStmt", "MergeStmt", "NotifyStmt", "PrepareStmt", "ReassignOwnedStmt",
        "RefreshMatViewStmt", "ReindexStmt", "RenameStmt", "ReplicaIdentityStmt", "RuleStmt",
        "SecLabelStmt", "SelectStmt", "SetOperationStmt", "TransactionStmt", "TruncateStmt",
        "UnlistenStmt", "UpdateStmt", "VacuumStmt", "VariableSetStmt", "VariableShowStmt",
        "ViewStmt",
        // Parse-tree spellings and the one statement the summary does not name.
        "AlterTsconfigurationStmt", "AlterTsdictionaryStmt", "CreatePlangStmt",
        "AlterDatabaseRefreshCollStmt",
    ];

    /// The kinds the walker in `analyze` reads from the tree.
    #[rustfmt::skip]
    const DETAILED: &[&str] = &[
        "CopyStmt", "CreateSchemaStmt", "CreateTableAsStmt", "DeclareCursorStmt", "DeleteStmt",
        "ExecuteStmt", "ExplainStmt", "InsertStmt", "MergeStmt", "PrepareStmt", "SelectStmt",
        "UpdateStmt", "ViewStmt",
    ];

    #[test]
    fn every_statement_kind_has_classes() {
        for kind in KNOWN {
            let worst = worst_case(kind);
            assert!(
                worst.is_some_and(|c| !c.is_empty()),
                "{kind} has no classes"
            );
        }
        for kind in DETAILED {
            assert_eq!(fixed(kind), None, "{kind} is read from the tree");
        }
        assert_eq!(
            worst_case("PlassignStmt"),
            None,
            "not a top-level statement"
        );
        assert_eq!(worst_case("NewStmtFromTheFuture"), None);
    }

    #[test]
    fn kind_names_come_from_the_tree() {
        let tree = pg_query::parse(
            "DROP TABLE t; ALTER TEXT SEARCH CONFIGURATION c OWNER TO r",
            0,
        );
        let names: Vec<_> = tree
            .iter()
            .flat_map(|tree| &tree.protobuf.stmts)
            .filter_map(|raw| raw.stmt.as_ref().and_then(|stmt| stmt.node.as_ref()))
            .map(kind_name)
            .collect();
        assert_eq!(names, ["DropStmt", "AlterOwnerStmt"]);
    }
}
