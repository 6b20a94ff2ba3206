//! `discover`: learning ahead of use. Samples a bounded number of rows of every
//! table the target's login may read, in every database it may connect to, and
//! teaches the learned set each column where a recognizer fires, so the first
//! statement a client ever sends is already protected (issue 22).
//!
//! A scan never gets in a writer's way: every statement runs alone in a read-only
//! transaction (`default_transaction_read_only`) that takes only `ACCESS SHARE`
//! locks, gives up on a lock it cannot get at once (`lock_timeout`) and after
//! `statement_timeout`; big tables are read through `TABLESAMPLE SYSTEM` (a few
//! random pages), small ones with `LIMIT`, and each value is cut short on the server.
//! What cannot be sampled (no privilege, a foreign table, a timeout, a target that
//! goes away) is skipped with a note; nothing here stops the daemon.

mod conn;

use crate::{
    mask::{
        Masker,
        learned::{ColumnId, Learned, LearnedSet},
    },
    proto::Session,
    record::{StatementRecord, now_ms},
};
use conn::{Conn, ConnError, quote_ident};
use serde::Serialize;
use std::time::{Duration, Instant};

/// How much a scan reads.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Rows sampled per table.
    pub rows: usize,
    /// Bytes kept of each value (cut on the server).
    pub value_bytes: usize,
    /// Columns sampled per table.
    pub columns: usize,
    /// Tables sampled per database.
    pub tables: usize,
    /// Databases scanned.
    pub databases: usize,
    /// `statement_timeout` of each sampling statement.
    pub statement_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            rows: 200,
            value_bytes: 2048,
            columns: 400,
            tables: 10_000,
            databases: 64,
            statement_timeout: Duration::from_secs(5),
        }
    }
}

/// What a scan did, for the person who asked and the log.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub target: String,
    /// The session its statements are recorded in.
    pub session: String,
    pub databases: Vec<String>,
    pub tables_sampled: usize,
    pub columns_sampled: usize,
    /// `schema.table.column (recognizer)` of each column learned by this scan.
    pub learned: Vec<String>,
    /// Columns where a recognizer fired that were learned already.
    pub already_learned: usize,
    /// What was skipped, and why.
    pub notes: Vec<String>,
    pub duration_ms: u64,
}

/// The categories of types whose text may hold personal data: strings, user types
/// (`json`, `citext`…), arrays, numbers (card numbers in a `bigint`), network addresses.
const SAMPLED_CATEGORIES: &[&str] = &["S", "U", "A", "N", "I"];
/// Most notes kept in a report.
const MAX_NOTES: usize = 200;

/// Scans the target of `session`, teaching `set` with `masker`'s recognizers.
pub async fn scan(session: &Session, masker: &Masker, set: &LearnedSet, limits: Limits) -> Report {
    let started = Instant::now();
    let mut scan = Scan {
        session,
        masker,
        set,
        limits,
        report: Report {
            target: session.target.name.clone(),
            session: session.id.to_string(),
            ..Report::default()
        },
    };
    let databases = match scan.databases().await {
        Ok(list) => list,
        Err(e) => {
            scan.note(&format!("cannot list the databases: {e}"));
            Vec::new()
        }
    };
    for database in databases.into_iter().take(limits.databases) {
        scan.report.databases.push(database.clone());
        if let Err(e) = scan.database(&database).await {
            scan.note(&format!(
                "database {database}: {e}; the rest of it is skipped"
            ));
        }
    }
    scan.report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    scan.report
}

/// One scan under way.
struct Scan<'a> {
    session: &'a Session,
    masker: &'a Masker,
    set: &'a LearnedSet,
    limits: Limits,
    report: Report,
}

/// A relation to sample.
struct Relation {
    oid: String,
    schema: String,
    name: String,
    kind: String,
    tuples: f64,
    readable: bool,
}

impl Scan<'_> {
    /// Adds a note (masked: a server message may quote a value) to the report.
    fn note(&mut self, note: &str) {
        let note = self.masker.mask_str(note).into_owned();
        tracing::info!(target = %self.report.target, %note, "Discover skipped something");
        if self.report.notes.len() < MAX_NOTES {
            self.report.notes.push(note);
        }
    }

    /// The databases the login may connect to, listed from the `postgres` database
    /// (or, failing that, the login's own).
    async fn databases(&mut self) -> Result<Vec<String>, ConnError> {
        let mut conn = match Conn::open(self.session, "postgres").await {
            Ok(c) => c,
            Err(_) => Conn::open(self.session, "").await?,
        };
        let sql = "SELECT datname FROM pg_catalog.pg_database WHERE datallowconn \
                   AND NOT datistemplate AND pg_catalog.has_database_privilege(datname, 'CONNECT') \
                   ORDER BY datname";
        let rows = self.run(&mut conn, sql, &[], self.limits.databases).await?;
        Ok(rows.rows.iter().filter_map(|r| text(r.first())).collect())
    }

    /// Samples every readable table of `database`.
    async fn database(&mut self, database: &str) -> Result<(), ConnError> {
        let mut conn = Conn::open(self.session, database).await?;
        let timeout = format!("{}ms", self.limits.statement_timeout.as_millis());
        for (setting, value) in [
            ("default_transaction_read_only", "on"),
            ("statement_timeout", timeout.as_str()),
            ("lock_timeout", "100ms"),
            ("idle_in_transaction_session_timeout", "10s"),
        ] {
            self.run(
                &mut conn,
                "SELECT pg_catalog.set_config($1, $2, false)",
                &[setting, value],
                1,
            )
            .await?;
        }
        let sql = "SELECT c.oid::text, n.nspname, c.relname, c.relkind::text, \
                   c.reltuples::float8::text, \
                   pg_catalog.has_any_column_privilege(c.oid, 'SELECT')::text \
                   FROM pg_catalog.pg_class c \
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                   WHERE c.relkind IN ('r', 'm', 'f') \
                   AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                   AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%' \
                   ORDER BY n.nspname, c.relname";
        let rows = self
            .run(&mut conn, sql, &[], self.limits.tables + 1)
            .await?;
        if rows.rows.len() > self.limits.tables {
            self.note(&format!(
                "database {database}: more than {} tables; only the first are sampled",
                self.limits.tables
            ));
        }
        let relations: Vec<Relation> = rows
            .rows
            .iter()
            .take(self.limits.tables)
            .filter_map(|r| {
                Some(Relation {
                    oid: text(r.first())?,
                    schema: text(r.get(1))?,
                    name: text(r.get(2))?,
                    kind: text(r.get(3))?,
                    tuples: text(r.get(4))?.parse().unwrap_or(-1.0),
                    readable: text(r.get(5))? == "true",
                })
            })
            .collect();
        for relation in relations {
            let what = format!("{database}.{}.{}", relation.schema, relation.name);
            if relation.kind == "f" {
                self.note(&format!(
                    "{what}: a foreign table (its rows are on another server); not sampled"
                ));
            } else if !relation.readable {
                self.note(&format!(
                    "{what}: the target's login may not read it; not sampled"
                ));
            } else {
                match self.relation(&mut conn, &relation).await {
                    Ok(()) => self.report.tables_sampled += 1,
                    Err(ConnError::Server { code, message }) => {
                        self.note(&format!("{what}: {code} {message}; not sampled"));
                    }
                    Err(lost) => return Err(lost),
                }
            }
        }
        Ok(())
    }

    /// Samples the readable columns of one table or materialized view.
    async fn relation(&mut self, conn: &mut Conn, r: &Relation) -> Result<(), ConnError> {
        let sql = "SELECT a.attnum::text, a.attname, t.typcategory::text, t.typname, \
                   (CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END)::text, \
                   pg_catalog.has_column_privilege(a.attrelid, a.attnum, 'SELECT')::text \
                   FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
                   WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped \
                   ORDER BY a.attnum";
        let columns = self.run(conn, sql, &[&r.oid], 1600).await?;
        let mut chosen: Vec<ColumnId> = Vec::new();
        for c in &columns.rows {
            let (Some(attnum), Some(name), Some(category), Some(type_name), Some(type_oid)) = (
                text(c.first()),
                text(c.get(1)),
                text(c.get(2)),
                text(c.get(3)),
                text(c.get(4)),
            ) else {
                continue;
            };
            if text(c.get(5)).as_deref() != Some("true") {
                continue;
            }
            if type_name == "bytea" || !SAMPLED_CATEGORIES.contains(&category.as_str()) {
                if !matches!(category.as_str(), "B" | "D" | "T" | "E" | "V") {
                    self.note(&format!(
                        "{}.{}.{name}: type {type_name} is not sampled",
                        r.schema, r.name
                    ));
                }
                continue;
            }
            if chosen.len() >= self.limits.columns {
                self.note(&format!(
                    "{}.{}: more than {} columns; the rest are not sampled",
                    r.schema, r.name, self.limits.columns
                ));
                break;
            }
            chosen.push(ColumnId {
                schema: r.schema.clone(),
                table: r.name.clone(),
                column: name,
                relid: r.oid.parse().unwrap_or(0),
                attnum: attnum.parse().unwrap_or(0),
                type_oid: type_oid.parse().unwrap_or(0),
            });
        }
        if chosen.is_empty() {
            return Ok(());
        }
        let sql = self.sample_sql(r, &chosen);
        let sample = self.run(conn, &sql, &[], self.limits.rows).await?;
        self.report.columns_sampled += chosen.len();
        self.learn(&chosen, &sample.rows);
        Ok(())
    }

    /// The statement that samples `columns` of `r`: a few random pages of a big table,
    /// the first rows of a small one; each value cut short on the server.
    fn sample_sql(&self, r: &Relation, columns: &[ColumnId]) -> String {
        let cut = self.limits.value_bytes;
        let list: Vec<String> = columns
            .iter()
            .map(|c| format!("left({}::text, {cut})", quote_ident(&c.column)))
            .collect();
        let only = if r.kind == "r" { "ONLY " } else { "" };
        let rows = self.limits.rows;
        // Pages holding about four times the rows wanted, when that is a small part.
        #[expect(clippy::cast_precision_loss, reason = "a sampling percentage")]
        let percent = 100.0 * (rows as f64) * 4.0 / r.tuples.max(1.0);
        let sample = if r.tuples > 0.0 && percent < 50.0 {
            format!(" TABLESAMPLE SYSTEM ({:.6})", percent.max(0.000_001))
        } else {
            String::new()
        };
        format!(
            "SELECT {} FROM {only}{}.{}{sample} LIMIT {rows}",
            list.join(", "),
            quote_ident(&r.schema),
            quote_ident(&r.name)
        )
    }

    /// Teaches the set each column where a recognizer fires on a sampled value.
    fn learn(&mut self, columns: &[ColumnId], rows: &[Vec<conn::Value>]) {
        for (i, id) in columns.iter().enumerate() {
            let hit = rows
                .iter()
                .filter_map(|row| row.get(i).and_then(Option::as_deref))
                .find_map(|v| self.masker.recognized(v));
            let Some(recognizer) = hit else { continue };
            let how = Learned {
                by: "discover",
                session: Some(&self.report.session),
            };
            if self.set.learn(id, &recognizer, how) {
                self.report
                    .learned
                    .push(format!("{} ({recognizer})", id.qualified()));
            } else {
                self.report.already_learned += 1;
            }
        }
    }

    /// Runs one statement and records it in the discover session (never its rows:
    /// they are the very data being looked for).
    async fn run(
        &mut self,
        conn: &mut Conn,
        sql: &str,
        params: &[&str],
        max_rows: usize,
    ) -> Result<conn::Rows, ConnError> {
        let started = Instant::now();
        let result = conn.query(sql, params, max_rows).await;
        let record = StatementRecord {
            session_id: self.session.id.clone(),
            seq: 0,
            at_ms: now_ms(),
            text: sql.to_owned(),
            params: (!params.is_empty()).then(|| serde_json::json!(params)),
            classes: vec!["read".into()],
            tables: Vec::new(),
            verdict: "allowed".into(),
            decided_by: Some("portcullis discover".into()),
            request_id: None,
            reason: Some("masking discover samples the target's tables".into()),
            duration_us: Some(i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX)),
            rows_affected: result
                .as_ref()
                .ok()
                .map(|r| i64::try_from(r.rows.len()).unwrap_or(i64::MAX)),
            command_tag: None,
            error: result
                .as_ref()
                .err()
                .map(|e| self.masker.mask_str(&e.to_string()).into_owned()),
            rows: None,
            hash: String::new(),
        };
        // A stalled recorder has logged it; the scan goes on.
        let _ = self.session.recorder.record(record).await;
        result
    }
}

/// A text value, if not NULL.
fn text(v: Option<&conn::Value>) -> Option<String> {
    v?.as_deref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
}
