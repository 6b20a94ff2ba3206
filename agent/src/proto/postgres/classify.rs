//! SQL classification: what a query text does, by effect, read on PostgreSQL's own
//! parser (`libpg_query`). This is the enforcement parser, so it fails closed: a text the
//! parser rejects is `Unparsed` (which matches every rule), and whatever cannot be seen
//! is assumed to be the worse possibility.
//!
//! Layout:
//! - this file: [`Classifier`] (the cache and the parser threads) and [`Classified`];
//! - [`analyze`]: one text through the parser: `libpg_query`'s summary for functions and
//!   tables, the full tree for what each statement does, the fallback for deep trees;
//! - [`kinds`]: statement kind → classes; [`functions`]: function name → classes;
//! - [`key`]: the cache key, with literals replaced, and why that is sound;
//! - [`parse_error`]: why a text is `Unparsed`, and where the parser stopped.
//!
//! # `standard_conforming_strings`
//!
//! With the setting off, a backslash escapes inside `'…'`, so
//! `SELECT 'a\'' ; DROP TABLE users; --'` is two statements, and the second runs.
//! `libpg_query` 17+ takes the setting as a parser option
//! (`DISABLE_STANDARD_CONFORMING_STRINGS`), so the text is parsed exactly as such a
//! server parses it: no rewriting of the text, no second lexer to keep in step. The
//! setting is part of the cache key. The caller passes the value the server last
//! reported. A `SET` (or `set_config`) takes effect only when it runs, so while one may
//! be in flight (pipelined queries), the caller should classify under both values and
//! take the union.
//!
//! # Cost
//!
//! Measured in a release build on the 2-core development VM, for pgbench -S's
//! `SELECT abalance FROM pgbench_accounts WHERE aid = …`: a cache hit (key, lookup,
//! `Arc` clone) takes ~0.15 µs, the key alone ~0.18 µs with the text's formatting; a
//! miss takes ~13 µs to classify (summary ~2.5, full parse ~8, the rest walking) and
//! ~25 µs with the hand-off to a parser thread and back. pgbench's `aid` values fall
//! into two of the key's value buckets, so its query takes two cache entries.
//!
//! # Threads
//!
//! Parsing runs on a few dedicated threads with 64 MiB stacks, never on the async
//! runtime: a large text takes milliseconds, and the parser recurses. `libpg_query` caps
//! its own checked recursion at 2 MiB of stack (deeper input is "stack depth limit
//! exceeded", i.e. `Unparsed`); the measured high-water mark over the deepest inputs is
//! 2.06 MB. On a tokio worker's 2 MiB stack the same cap would shrink with the caller's
//! depth, so whether a deep query parses would depend on where it was called from. The
//! 64 MiB leave 30 times that for the code paths that do not check (bison's error path,
//! protobuf encoding and decoding, our walker), and cost only address space: untouched
//! stack pages are never committed.

mod analyze;
mod functions;
mod key;
mod kinds;
mod parse_error;
mod refs;
#[cfg(test)]
mod tests;

use crate::policy::{SqlClass, SqlClasses};
use key::Key;
pub use parse_error::ParseError;
use quick_cache::{Weighter, sync::Cache};
use std::{
    panic::{self, AssertUnwindSafe},
    sync::{Arc, Mutex, mpsc},
    thread,
};
use tokio::sync::{Semaphore, oneshot};

/// Stack of each parser thread (see the module docs).
const PARSER_STACK: usize = 64 << 20;
/// At most this many parser threads (fewer on smaller machines).
const MAX_PARSER_THREADS: usize = 4;
/// Texts waiting for a parser thread, from async callers; more wait for a place.
const MAX_QUEUED: usize = 1024;
/// Longer texts are not cached: they are rarely sent twice, and would crowd out the
/// short ones that are.
const MAX_CACHED_TEXT: usize = 16 << 10;

/// What a query text does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// Never empty. A text with nothing to run (empty, or only comments) is `Session`.
    pub classes: SqlClasses,
    /// Relations the statements name, deduplicated and sorted: `schema.name` when a
    /// schema is written, else `name`, each part quoted only where PostgreSQL would need
    /// it (`public."Users"`). CTE names are not relations and are left out.
    pub tables: Vec<String>,
    /// Functions called, lowercase, schema-qualified as written (`pg_catalog.extract`
    /// for SQL syntax the parser turns into a call), deduplicated and sorted. For
    /// records: the classes already account for them.
    pub functions: Vec<String>,
    /// Why `Unparsed` is among the classes: the parser's message (and position), or
    /// what could not be read or classified.
    pub error: Option<ParseError>,
    /// Each `COPY … TO STDOUT` of the text, in order: what masking needs to tell the
    /// columns of its rows apart.
    pub copy_out: Vec<CopyOut>,
    /// The names the text uses: whether a computed result column may carry the value
    /// of a masked column.
    pub refs: Refs,
}

/// The relations and columns a text names, for masking by column. A result column
/// computed from a masked one (`upper(password_hash)`, a whole row `t` or
/// `row_to_json(t.*)`, a scalar subquery) has no table in `RowDescription`; these say
/// whether the statement may have computed it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refs {
    /// Relations named (the name without its schema), sorted and deduplicated.
    pub relations: Vec<String>,
    /// Columns named anywhere: the last part of each column reference.
    pub columns: Vec<String>,
    /// A whole row is referenced: a relation's name or alias used as a value, or `t.*`
    /// anywhere but as a result column of its own.
    pub whole_rows: bool,
    /// The rows may come from SQL not in this text (`EXECUTE`, `FETCH`, a `DO` block, a
    /// function Portcullis cannot see into), or the text could not be read in full:
    /// any masked column may be behind them.
    pub unknown: bool,
}

impl Refs {
    /// What both name; unknown if either is.
    #[must_use]
    pub fn union(&self, other: &Refs) -> Refs {
        let joined = |a: &[String], b: &[String]| {
            let mut all: Vec<String> = a.iter().chain(b).cloned().collect();
            all.sort();
            all.dedup();
            all
        };
        Refs {
            relations: joined(&self.relations, &other.relations),
            columns: joined(&self.columns, &other.columns),
            whole_rows: self.whole_rows || other.whole_rows,
            unknown: self.unknown || other.unknown,
        }
    }
}

/// A `COPY … TO STDOUT`, as masking by column needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyOut {
    /// `COPY [schema.]table [(columns)] TO STDOUT` in text or CSV.
    Table {
        /// As the parser normalized it (unquoted names lowercased).
        schema: Option<String>,
        table: String,
        /// The column list; empty for all columns.
        columns: Vec<String>,
        format: CopyFormat,
    },
    /// `COPY (query) TO STDOUT` in text or CSV: its columns are the query's, which
    /// the server describes.
    Query {
        /// The query, deparsed from the tree (so read as the statement was).
        query: String,
        format: CopyFormat,
    },
    /// A binary COPY, or options or a query that could not be read: its columns are
    /// not known here.
    Other,
}

/// How a text or CSV COPY writes its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFormat {
    pub csv: bool,
    pub delimiter: u8,
    /// The text a NULL is written as.
    pub null: Vec<u8>,
    /// CSV only.
    pub quote: u8,
    /// CSV only.
    pub escape: u8,
    /// The first row holds the column names.
    pub header: bool,
}

impl Classified {
    /// A text that cannot be classified: `Unparsed` only.
    pub fn unparsed(error: impl Into<ParseError>) -> Classified {
        Classified {
            classes: SqlClasses::empty().with(SqlClass::Unparsed),
            tables: Vec::new(),
            functions: Vec::new(),
            error: Some(error.into()),
            copy_out: Vec::new(),
            refs: Refs {
                unknown: true,
                ..Refs::default()
            },
        }
    }
}

/// Classifies query texts, with a bounded cache in front of a few parser threads.
pub struct Classifier {
    cache: Cache<Key, Arc<Classified>, ByTextSize>,
    /// `None` when no parser thread could be started: every text is then `Unparsed`.
    jobs: Option<mpsc::Sender<Job>>,
    /// Bounds the texts queued by async callers.
    queued: Semaphore,
}

impl Classifier {
    /// A classifier whose cache holds about `cache_entries` texts (a text over 1 KiB
    /// counts once per KiB). Starts the parser threads; they stop when it is dropped.
    #[must_use]
    pub fn new(cache_entries: usize) -> Self {
        let threads =
            thread::available_parallelism().map_or(1, |n| n.get().min(MAX_PARSER_THREADS));
        Classifier {
            cache: Cache::with_weighter(cache_entries, cache_entries as u64, ByTextSize),
            jobs: start_parsers(threads),
            queued: Semaphore::new(MAX_QUEUED),
        }
    }

    /// Classifies `sql` (possibly several statements: the classes are their union).
    /// `standard_conforming_strings` is the session's value as the server last reported
    /// it (ParameterStatus): it changes where a string ends when the text has a
    /// backslash. Parsing happens on a parser thread; this only waits for it.
    pub async fn classify(&self, sql: &str, standard_conforming_strings: bool) -> Arc<Classified> {
        let key = Key::new(sql, standard_conforming_strings);
        if let Some(hit) = self.cached(&key, sql, standard_conforming_strings) {
            return hit;
        }
        let parsed = match self.queued.acquire().await {
            Ok(_queued) => {
                let (reply, parsed) = oneshot::channel();
                self.submit(
                    sql,
                    standard_conforming_strings,
                    Box::new(move |classified| {
                        let _ = reply.send(classified);
                    }),
                );
                parsed.await.ok()
            }
            Err(_) => None, // the semaphore is never closed
        };
        self.finish(key, sql, standard_conforming_strings, parsed)
    }

    /// [`classify`](Self::classify) for tests and benchmarks: blocks the calling thread.
    pub fn classify_blocking(
        &self,
        sql: &str,
        standard_conforming_strings: bool,
    ) -> Arc<Classified> {
        let key = Key::new(sql, standard_conforming_strings);
        if let Some(hit) = self.cached(&key, sql, standard_conforming_strings) {
            return hit;
        }
        let (reply, parsed) = mpsc::sync_channel(1);
        self.submit(
            sql,
            standard_conforming_strings,
            Box::new(move |classified| {
                let _ = reply.send(classified);
            }),
        );
        self.finish(key, sql, standard_conforming_strings, parsed.recv().ok())
    }

    fn cached(
        &self,
        key: &Key,
        sql: &str,
        standard_conforming_strings: bool,
    ) -> Option<Arc<Classified>> {
        self.cache.get(key).or_else(|| {
            // Failures of a text whose key has literals replaced are kept under its
            // verbatim key (see `store`).
            key.is_replaced()
                .then(|| {
                    self.cache
                        .get(&Key::verbatim(sql, standard_conforming_strings))
                })
                .flatten()
        })
    }

    /// Hands `sql` to a parser thread. If there is none, `reply` is dropped unanswered.
    fn submit(&self, sql: &str, standard_conforming_strings: bool, reply: Reply) {
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(Job {
                sql: sql.into(),
                standard_conforming_strings,
                reply,
            });
        }
    }

    /// Caches and returns a parse's result; a parse that never came back (no parser
    /// thread) is `Unparsed`, and not cached.
    fn finish(
        &self,
        key: Key,
        sql: &str,
        standard_conforming_strings: bool,
        parsed: Option<Classified>,
    ) -> Arc<Classified> {
        let Some(classified) = parsed else {
            return Arc::new(Classified::unparsed("the SQL classifier is not running"));
        };
        let classified = Arc::new(classified);
        if key.len() <= MAX_CACHED_TEXT {
            // An error message quotes the text ("syntax error at or near …"), so it is
            // only ever returned for that very text.
            let key = if classified.error.is_some() && key.is_replaced() {
                Key::verbatim(sql, standard_conforming_strings)
            } else {
                key
            };
            self.cache.insert(key, Arc::clone(&classified));
        }
        classified
    }
}

/// Weighs a cache entry by its text: one, plus one per KiB.
#[derive(Clone)]
struct ByTextSize;

impl Weighter<Key, Arc<Classified>> for ByTextSize {
    fn weight(&self, key: &Key, _: &Arc<Classified>) -> u64 {
        1 + (key.len() / 1024) as u64
    }
}

// ---- Parser threads ------------------------------------------------------------------

type Reply = Box<dyn FnOnce(Classified) + Send>;

/// One text to classify, and where the result goes.
struct Job {
    sql: Box<str>,
    standard_conforming_strings: bool,
    reply: Reply,
}

/// Starts up to `count` parser threads sharing one job queue; `None` if none started.
fn start_parsers(count: usize) -> Option<mpsc::Sender<Job>> {
    let (jobs, queue) = mpsc::channel();
    let queue = Arc::new(Mutex::new(queue));
    let mut started = 0;
    for i in 0..count {
        let queue = Arc::clone(&queue);
        let spawned = thread::Builder::new()
            .name(format!("sql-parser-{i}"))
            .stack_size(PARSER_STACK)
            .spawn(move || parse_jobs(&queue));
        match spawned {
            Ok(_) => started += 1,
            Err(error) => tracing::error!(%error, "Could not start an SQL parser thread"),
        }
    }
    (started > 0).then_some(jobs)
}

/// A parser thread: classifies jobs until the [`Classifier`] is dropped.
fn parse_jobs(queue: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        // The lock is held while waiting, so idle threads queue up behind it.
        let job = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        let Ok(Job {
            sql,
            standard_conforming_strings,
            reply,
        }) = job
        else {
            return; // the classifier is gone
        };
        let classified = panic::catch_unwind(AssertUnwindSafe(|| {
            analyze::classify_text(&sql, standard_conforming_strings)
        }))
        .unwrap_or_else(|_| {
            tracing::error!("The SQL parser panicked; the text is classified as unparsed");
            Classified::unparsed("internal error in the SQL parser")
        });
        reply(classified);
    }
}
