//! What calling a function does, beyond the statement it sits in.
//!
//! A name on [`READ_ONLY`] adds nothing (the statement's own class stands); the admin,
//! write and session lists add their class; any other function adds `Dynamic`, since a
//! user-defined function can do anything. The lists apply to built-ins only: a name
//! qualified with a schema other than `pg_catalog` is always `Dynamic`, and a quoted name
//! (`"Count"`) is a different function from `count`. `coalesce`, `greatest`, `least` and
//! `nullif` are syntax, not function calls, so a call spelled that way (`"coalesce"(…)`)
//! can only be a user's function.
//!
//! What the lists cannot see: a user who may run DDL can shadow a built-in (an overload
//! for their own type, or a schema placed before `pg_catalog` in `search_path`), and
//! operators, casts, defaults and triggers run functions too. That power comes with DDL,
//! which is classed on its own.

use crate::policy::{SqlClass, SqlClasses};

/// The classes a call adds: empty for a read-only built-in.
pub(super) fn call_classes(schema: Option<&str>, name: &str) -> SqlClasses {
    let class = match schema {
        Some(schema) if schema != "pg_catalog" => Some(SqlClass::Dynamic),
        _ if ADMIN.binary_search(&name).is_ok()
            || ADMIN_PREFIXES.iter().any(|prefix| name.starts_with(prefix)) =>
        {
            Some(SqlClass::Admin)
        }
        _ if WRITE.binary_search(&name).is_ok() => Some(SqlClass::Write),
        _ if SESSION.binary_search(&name).is_ok() => Some(SqlClass::Session),
        _ if READ_ONLY.binary_search(&name).is_ok() => None,
        _ => Some(SqlClass::Dynamic),
    };
    class.into_iter().collect()
}

/// Side-effect and superuser functions: signal or stop backends, reload or change
/// configuration, read or write server files, replication and backup control.
#[rustfmt::skip]
const ADMIN: [&str; 20] = [
    "lo_export", "lo_import", "pg_backup_start", "pg_backup_stop", "pg_cancel_backend",
    "pg_drop_replication_slot", "pg_import_system_collations",
    "pg_log_backend_memory_contexts", "pg_log_standby_snapshot", "pg_promote",
    "pg_reload_conf", "pg_replication_slot_advance", "pg_rotate_logfile", "pg_start_backup",
    "pg_stat_file", "pg_stop_backup", "pg_switch_wal", "pg_sync_replication_slots",
    "pg_terminate_backend", "set_config",
];

/// Families of admin functions (`dblink_exec`, `pg_ls_waldir`, `pg_read_binary_file`…).
#[rustfmt::skip]
const ADMIN_PREFIXES: [&str; 10] = [
    "dblink", "pg_copy_", "pg_create_", "pg_file_", "pg_logical_", "pg_ls_", "pg_read_",
    "pg_replication_origin_", "pg_stat_reset", "pg_wal_replay_",
];

/// Functions that change data: sequences and large objects.
#[rustfmt::skip]
const WRITE: [&str; 10] = [
    "lo_creat", "lo_create", "lo_from_bytea", "lo_put", "lo_truncate", "lo_truncate64",
    "lo_unlink", "lowrite", "nextval", "setval",
];

/// Functions that act on the session: advisory locks, NOTIFY, sleeping, the random seed.
#[rustfmt::skip]
const SESSION: [&str; 16] = [
    "pg_advisory_lock", "pg_advisory_lock_shared", "pg_advisory_unlock",
    "pg_advisory_unlock_all", "pg_advisory_unlock_shared", "pg_advisory_xact_lock",
    "pg_advisory_xact_lock_shared", "pg_notify", "pg_sleep", "pg_sleep_for",
    "pg_sleep_until", "pg_try_advisory_lock", "pg_try_advisory_lock_shared",
    "pg_try_advisory_xact_lock", "pg_try_advisory_xact_lock_shared", "setseed",
];

/// Built-ins that only compute or read: aggregates and window functions, math, strings,
/// dates, JSON, arrays, text search, and catalog or session information. Not on it (so
/// `Dynamic`): functions that run a query given as text (`query_to_xml`, `ts_stat`…).
#[rustfmt::skip]
const READ_ONLY: [&str; 353] = [
    "abs", "acos", "acosd", "acosh", "age", "any_value", "array_agg", "array_append",
    "array_cat", "array_dims", "array_fill", "array_length", "array_lower", "array_ndims",
    "array_position", "array_positions", "array_prepend", "array_remove", "array_replace",
    "array_to_json", "array_to_string", "array_upper", "ascii", "asin", "asind", "asinh",
    "atan", "atan2", "atan2d", "atand", "atanh", "avg", "bit_and", "bit_count",
    "bit_length", "bit_or", "bit_xor", "bool_and", "bool_or", "btrim", "cardinality",
    "cbrt", "ceil", "ceiling", "char_length", "character_length", "chr", "clock_timestamp",
    "col_description", "concat", "concat_ws", "convert", "convert_from", "convert_to",
    "corr", "cos", "cosd", "cosh", "cot", "cotd", "count", "covar_pop", "covar_samp",
    "cume_dist", "current_database", "current_query", "current_schema", "current_schemas",
    "current_setting", "date_add", "date_bin", "date_part", "date_subtract", "date_trunc",
    "decode", "degrees", "dense_rank", "div", "encode", "every", "exp", "extract",
    "factorial", "first_value", "floor", "format", "format_type", "gcd", "gen_random_uuid",
    "generate_series", "generate_subscripts", "get_bit", "get_byte", "grouping",
    "has_any_column_privilege", "has_column_privilege", "has_database_privilege",
    "has_function_privilege", "has_schema_privilege", "has_sequence_privilege",
    "has_table_privilege", "inet_client_addr", "inet_client_port", "inet_server_addr",
    "inet_server_port", "initcap", "is_normalized", "isfinite", "json_agg",
    "json_agg_strict", "json_array_elements", "json_array_elements_text",
    "json_array_length", "json_build_array", "json_build_object", "json_each",
    "json_each_text", "json_extract_path", "json_extract_path_text", "json_object",
    "json_object_agg", "json_object_agg_strict", "json_object_agg_unique",
    "json_object_agg_unique_strict", "json_object_keys", "json_populate_record",
    "json_populate_recordset", "json_scalar", "json_strip_nulls", "json_to_record",
    "json_to_recordset", "json_typeof", "jsonb_agg", "jsonb_agg_strict",
    "jsonb_array_elements", "jsonb_array_elements_text", "jsonb_array_length",
    "jsonb_build_array", "jsonb_build_object", "jsonb_each", "jsonb_each_text",
    "jsonb_extract_path", "jsonb_extract_path_text", "jsonb_insert", "jsonb_object",
    "jsonb_object_agg", "jsonb_object_agg_strict", "jsonb_object_agg_unique",
    "jsonb_object_agg_unique_strict", "jsonb_object_keys", "jsonb_path_exists",
    "jsonb_path_match", "jsonb_path_query", "jsonb_path_query_array",
    "jsonb_path_query_first", "jsonb_populate_record", "jsonb_populate_recordset",
    "jsonb_pretty", "jsonb_set", "jsonb_set_lax", "jsonb_strip_nulls", "jsonb_to_record",
    "jsonb_to_recordset", "jsonb_typeof", "justify_days", "justify_hours",
    "justify_interval", "lag", "last_value", "lcm", "lead", "left", "length", "ln",
    "lo_close", "lo_get", "lo_lseek", "lo_lseek64", "lo_open", "lo_tell", "lo_tell64",
    "log", "log10", "loread", "lower", "lpad", "ltrim", "make_date", "make_interval",
    "make_time", "make_timestamp", "make_timestamptz", "max", "md5", "min", "min_scale",
    "mod", "mode", "normalize", "now", "nth_value", "ntile", "num_nonnulls", "num_nulls",
    "obj_description", "octet_length", "overlaps", "overlay", "parse_ident", "percent_rank",
    "percentile_cont", "percentile_disc", "pg_backend_pid", "pg_client_encoding",
    "pg_collation_for", "pg_column_size", "pg_conf_load_time", "pg_current_wal_lsn",
    "pg_current_xact_id", "pg_database_size", "pg_encoding_to_char",
    "pg_function_is_visible", "pg_get_constraintdef", "pg_get_expr",
    "pg_get_function_arguments", "pg_get_function_identity_arguments",
    "pg_get_function_result", "pg_get_functiondef", "pg_get_indexdef", "pg_get_keywords",
    "pg_get_serial_sequence", "pg_get_triggerdef", "pg_get_userbyid", "pg_get_viewdef",
    "pg_has_role", "pg_indexes_size", "pg_is_in_recovery", "pg_is_other_temp_schema",
    "pg_jit_available", "pg_last_wal_receive_lsn", "pg_last_wal_replay_lsn",
    "pg_last_xact_replay_timestamp", "pg_my_temp_schema", "pg_postmaster_start_time",
    "pg_relation_size", "pg_size_bytes", "pg_size_pretty", "pg_table_is_visible",
    "pg_table_size", "pg_tablespace_size", "pg_total_relation_size", "pg_trigger_depth",
    "pg_type_is_visible", "pg_typeof", "phraseto_tsquery", "pi", "plainto_tsquery",
    "position", "power", "quote_ident", "quote_literal", "quote_nullable", "radians",
    "random", "random_normal", "range_agg", "rank", "regexp_count", "regexp_instr",
    "regexp_like", "regexp_match", "regexp_matches", "regexp_replace",
    "regexp_split_to_array", "regexp_split_to_table", "regexp_substr", "repeat", "replace",
    "reverse", "right", "round", "row_number", "row_to_json", "rpad", "rtrim", "scale",
    "setweight", "sha224", "sha256", "sha384", "sha512", "shobj_description", "sign",
    "similar_to_escape", "sin", "sind", "sinh", "split_part", "sqrt", "starts_with",
    "statement_timestamp", "stddev", "stddev_pop", "stddev_samp", "string_agg",
    "string_to_array", "string_to_table", "strpos", "substr", "substring", "sum",
    "system_user", "tan", "tand", "tanh", "timeofday", "timezone", "to_char", "to_date",
    "to_hex", "to_json", "to_jsonb", "to_number", "to_regclass", "to_regnamespace",
    "to_regproc", "to_regprocedure", "to_regrole", "to_regtype", "to_timestamp",
    "to_tsquery", "to_tsvector", "transaction_timestamp", "translate", "trim_array",
    "trim_scale", "trunc", "ts_headline", "ts_rank", "ts_rank_cd", "txid_current", "unistr",
    "unnest", "upper", "uuidv4", "uuidv7", "var_pop", "var_samp", "variance", "version",
    "websearch_to_tsquery", "width_bucket", "xmlagg",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_sorted_and_disjoint() {
        let lists: [&[&str]; 4] = [&READ_ONLY, &ADMIN, &WRITE, &SESSION];
        for list in lists {
            let sorted = list.windows(2).all(|pair| matches!(pair, [a, b] if a < b));
            assert!(sorted, "not sorted: {list:?}");
        }
        for (i, a) in lists.iter().enumerate() {
            for name in *a {
                let elsewhere = lists.iter().skip(i + 1).any(|b| b.contains(name));
                let admin_prefixed = ADMIN_PREFIXES.iter().any(|p| name.starts_with(p));
                assert!(!elsewhere, "{name} is on two lists");
                assert!(
                    i == 1 || !admin_prefixed,
                    "{name} also matches an admin prefix"
                );
            }
        }
    }

    #[test]
    fn calls_are_classed_by_name_and_schema() {
        let class = |schema, name| call_classes(schema, name).names();
        assert_eq!(class(None, "count"), "");
        assert_eq!(class(Some("pg_catalog"), "extract"), "");
        assert_eq!(class(None, "pg_terminate_backend"), "admin");
        assert_eq!(class(Some("pg_catalog"), "pg_read_binary_file"), "admin");
        assert_eq!(class(None, "dblink_exec"), "admin");
        assert_eq!(class(None, "nextval"), "write");
        assert_eq!(class(None, "pg_advisory_lock"), "session");
        assert_eq!(class(None, "query_to_xml"), "dynamic");
        assert_eq!(class(Some("public"), "count"), "dynamic");
        assert_eq!(class(None, "Count"), "dynamic");
    }
}
