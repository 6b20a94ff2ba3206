//! What can go wrong with the store. Every URL in a message is redacted (see
//! [`super::redact_url`]): a password in the store URL never reaches an error or a log.

use std::path::PathBuf;

/// A store operation that failed, with the (redacted) store URL and what was attempted.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "invalid store URL `{url}`: {reason}; use sqlite:///PATH/TO/FILE.db or \
         postgres://USER@HOST[:PORT]/DATABASE"
    )]
    InvalidUrl { url: String, reason: &'static str },

    #[error(
        "cannot create the directory {path} for the store {url}: {source}; create it or \
         fix its permissions"
    )]
    CreateDir {
        url: String,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(
        "cannot connect to the store {url}: {source}; check that the database is up and \
         reachable and that the store URL in the config is right"
    )]
    Connect { url: String, source: sqlx::Error },

    #[error(
        "cannot bring the schema of the store {url} up to date: {source}; check that every \
         host sharing this store runs the same Portcullis version and that the database \
         user may create tables"
    )]
    Migrate {
        url: String,
        source: sqlx::migrate::MigrateError,
    },

    #[error(
        "store {url}: cannot {op}: {source}; check that the database is up and writable \
         (its server log may say more)"
    )]
    Query {
        url: String,
        op: &'static str,
        source: sqlx::Error,
    },

    #[error("cannot {op}: {source}; this is a bug in Portcullis, please report it")]
    Encode {
        op: &'static str,
        source: serde_json::Error,
    },

    #[error("store {url}: no session {id}; `portcullis sessions` lists the recorded ones")]
    NotFound { url: String, id: String },

    #[error(
        "session id prefix `{prefix}` matches more than one session; give more characters \
         of the id (`portcullis sessions` lists them)"
    )]
    Ambiguous { prefix: String },

    #[error("{id:?} is not a session id: {reason}; `portcullis sessions` lists the ids")]
    InvalidId { id: String, reason: &'static str },

    #[error(
        "store {url}: session {id} has an unreadable {column} ({detail}); was the row \
         written by a newer Portcullis or edited by hand?"
    )]
    Corrupt {
        url: String,
        id: String,
        column: &'static str,
        detail: String,
    },

    #[error(
        "audit entry `{kind}`: its data must be a JSON object, not {found}; this is a bug \
         in Portcullis, please report it"
    )]
    AuditData { kind: String, found: &'static str },

    #[error(
        "store {url}: audit record {seq} has an unreadable {column} ({detail}); \
         `portcullis audit verify` checks the log for tampering"
    )]
    CorruptAudit {
        url: String,
        seq: i64,
        column: &'static str,
        detail: String,
    },
}
