//! The store where every session is recorded: `SQLite` (embedded, the default) or
//! `PostgreSQL` (shared by several gateway hosts), behind one [`Store`].
//!
//! Layout: [`Store`] (this file) opens the database and brings its schema up to date;
//! `session` holds the session types and the queries on them; `audit` is the
//! hash-chained audit log (append, verify, export); `events` is the event log, every
//! action of a session in a per-session hash chain, written in batches by the
//! `recorder` task; `statements` is the SQL statement record (and the table sessions
//! were recorded in before events existed); `requests` holds approval requests and
//! their approvals; `learned` keeps the columns masking learned; `links` ties local accounts to identity-provider identities;
//! `url` parses store URLs and
//! redacts their passwords; `error` is [`StoreError`]. The schema lives in
//! `agent/migrations/{sqlite,postgres}`, one numbered file per change, embedded in the
//! binary and applied by [`Store::open`].
//!
//! Both backends go through sqlx's `Any` driver with the same SQL: `$1, $2…`
//! placeholders, times as BIGINT unix milliseconds, ids as `UUIDv7` text, and only the
//! types `Any` carries (`i64`, `String`, their `Option`s).

mod audit;
mod batch;
mod canonical;
mod changes;
mod error;
mod events;
mod journal;
mod justification;
mod learned;
mod links;
mod recorder;
mod requests;
mod session;
mod statements;
mod url;

#[cfg(test)]
mod audit_tests;
#[cfg(test)]
mod events_tests;
#[cfg(test)]
mod journal_tests;
#[cfg(test)]
mod requests_tests;
#[cfg(test)]
mod statements_tests;
#[cfg(test)]
mod tests;

pub use audit::{AuditEntry, AuditRecord, AuditReport, BadRecord, GENESIS_HASH};
pub use changes::RequestChanges;
pub use error::StoreError;
pub use events::{ChainDigest, EventRecord, one_line};
pub use journal::{Journal, JournalError};
pub use links::IdentityLink;
pub use recorder::{Recordable, Recorder, STALL_LIMIT, Stalled, Waiting};
pub use requests::{ApprovalRecord, NewRequest, RequestRecord, RequestStatus};
pub use session::now_ms;
pub use session::{
    DEFAULT_LIMIT, MIN_PREFIX, NewSession, Outcome, SessionEnd, SessionFilter, SessionId,
    SessionRecord, UnknownOutcome,
};
pub use statements::{StatementRecord, StatementsDigest};
pub use url::redact_url;

use sqlx::{AnyConnection, AnyPool, Connection as _, any::AnyPoolOptions, migrate::Migrator};
use std::{fmt, sync::Arc, time::Duration};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// How long to wait for a database connection before giving up (`PostgreSQL` retries
/// a refused connection until then).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which database a [`Store`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        })
    }
}

/// A connection pool to the store; cheap to clone, all clones share the pool.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// What the recorder writes statements through. For a `SQLite` file, a pool of one
    /// connection of its own: a connection drops its page cache whenever another one
    /// has committed, so sharing `pool` made every batch read back the pages it was
    /// about to change. Otherwise the same pool as `pool`.
    writer: AnyPool,
    backend: Backend,
    /// The store URL without its password, for messages.
    url: Arc<str>,
    /// This gateway's name, written into every session it records.
    host: Arc<str>,
    /// PostgreSQL only: the full URL (with credentials) for the LISTEN connection.
    /// Never printed: `Debug` and every message use `url`.
    listen_url: Option<Arc<str>>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .field("url", &self.url)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Connects to the store at `url` (`sqlite://PATH`, `postgres://…`) and applies the
    /// migrations it lacks. A `SQLite` file and its directory are created if missing, and
    /// the file is switched to WAL. Sessions are recorded under this machine's host
    /// name (see [`Store::with_host`]).
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let parsed = url::parse(url)?;
        let redacted = parsed.redacted.clone();
        if let Some(dir) = parsed
            .sqlite_file
            .as_deref()
            .and_then(std::path::Path::parent)
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                url: redacted.clone(),
                path: dir.to_owned(),
                source,
            })?;
        }
        let (pool, writer) = connect(&parsed).await?;
        let store = Store {
            pool,
            writer,
            backend: parsed.backend,
            url: redacted.into(),
            host: local_hostname().into(),
            listen_url: (parsed.backend == Backend::Postgres).then(|| url.into()),
        };
        if parsed.sqlite_file.is_some() {
            store.use_wal().await?;
        }
        let migrator = match store.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator
            .run(&store.pool)
            .await
            .map_err(|source| StoreError::Migrate {
                url: store.url.to_string(),
                source,
            })?;
        tracing::info!(store = %store.url, backend = %store.backend, "Store ready");
        Ok(store)
    }

    /// The same store, recording sessions under `host` instead of this machine's name.
    #[must_use]
    pub fn with_host(mut self, host: impl Into<String>) -> Store {
        self.host = host.into().into();
        self
    }

    /// Which database this store uses.
    #[must_use]
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The store URL, password removed.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The host name written into the sessions this store records.
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Closes every connection after in-flight queries finish; later calls fail.
    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }

    /// WAL lets readers (the API) work while a session is written. It is a property of
    /// the file, so setting it once per open is enough.
    async fn use_wal(&self) -> Result<(), StoreError> {
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode = WAL")
            .fetch_one(&self.pool)
            .await
            .map_err(|source| self.query_error("switch the SQLite journal to WAL", source))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(store = %self.url, journal_mode = %mode, "SQLite refused WAL mode");
        }
        Ok(())
    }

    fn query_error(&self, op: &'static str, source: sqlx::Error) -> StoreError {
        StoreError::Query {
            url: self.url.to_string(),
            op,
            source,
        }
    }
}

/// Opens the pools for `parsed`: the shared one, and the recorder's ([`Store`]'s
/// `writer`). One plain connection comes first: it fails at once with the real cause
/// (refused, bad password, no such database), where the pool would retry until its
/// timeout and then report only that it timed out.
async fn connect(parsed: &url::StoreUrl) -> Result<(AnyPool, AnyPool), StoreError> {
    let error = |source| StoreError::Connect {
        url: parsed.redacted.clone(),
        source,
    };
    sqlx::any::install_default_drivers();
    let probe = tokio::time::timeout(ACQUIRE_TIMEOUT, AnyConnection::connect(&parsed.connect))
        .await
        .map_err(|_| {
            error(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {}s", ACQUIRE_TIMEOUT.as_secs()),
            )))
        })?
        .map_err(error)?;
    // Closing is a courtesy to the server; the pool below is what matters.
    let _ = probe.close().await;
    let options = AnyPoolOptions::new().acquire_timeout(ACQUIRE_TIMEOUT);
    let writer = match parsed.backend {
        Backend::Sqlite if parsed.sqlite_file.is_some() => Some(
            sqlite_options(options.clone(), Synchronous::Normal)
                .max_connections(1)
                .connect(&parsed.connect)
                .await
                .map_err(error)?,
        ),
        _ => None,
    };
    let options = match parsed.backend {
        // In-memory SQLite lives as long as one connection does: keep exactly one.
        Backend::Sqlite if parsed.sqlite_file.is_none() => {
            sqlite_options(options, Synchronous::Full)
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        }
        Backend::Sqlite => sqlite_options(options, Synchronous::Full).max_connections(4),
        Backend::Postgres => options.max_connections(8),
    };
    let pool = options.connect(&parsed.connect).await.map_err(error)?;
    let writer = writer.unwrap_or_else(|| pool.clone());
    Ok((pool, writer))
}

/// When a `SQLite` commit is on disk (`PRAGMA synchronous`).
#[derive(Clone, Copy)]
enum Synchronous {
    /// Before the commit returns: the WAL is synced on every commit.
    Full,
    /// At the next `Full` commit or checkpoint. For the recorder's connection only:
    /// the WAL is one file written in commit order, so syncing a later commit (every
    /// `session_closed` audit record is one, made after its session's statements are
    /// written) syncs every statement before it. A power cut can lose only statements
    /// of sessions not yet closed, and their close records with them: the chains
    /// still verify. Each batch no longer waits for a disk flush.
    Normal,
}

/// What every SQLite pool gets, file or memory.
fn sqlite_options(options: AnyPoolOptions, synchronous: Synchronous) -> AnyPoolOptions {
    let synchronous = match synchronous {
        Synchronous::Full => "PRAGMA synchronous = FULL",
        Synchronous::Normal => "PRAGMA synchronous = NORMAL",
    };
    options
        .test_before_acquire(false)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                sqlx::query(synchronous).execute(&mut *conn).await?;
                // A multi-row INSERT inside a transaction keeps a statement journal (the
                // pages it changes, to undo it alone); in a temporary file that costs two
                // writes per page, more system calls than the commit itself. In memory it
                // holds at most the pages one INSERT of a batch changes.
                sqlx::query("PRAGMA temp_store = MEMORY")
                    .execute(&mut *conn)
                    .await?;
                // Recordings are appended, a few hundred bytes a row: a 16 KiB page holds
                // four times the rows of a 4 KiB one, and each page costs two writes in the
                // WAL and one more at its checkpoint (under pgbench, half the `pwrite`
                // calls). It only takes effect on a file that is still empty; an existing
                // file keeps the size it was created with.
                sqlx::query("PRAGMA page_size = 16384")
                    .execute(conn)
                    .await
                    .map(drop)
            })
        })
}

/// This machine's host name, as the kernel has it.
fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
