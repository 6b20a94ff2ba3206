#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    reason = "tests"
)]

use super::*;
use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::LazyLock,
    time::{Duration, Instant},
};

static CLASSIFIER: LazyLock<Classifier> = LazyLock::new(|| Classifier::new(10_000));

/// The classes of `sql` (standard-conforming strings), as policy names.
fn classes(sql: &str) -> String {
    CLASSIFIER.classify_blocking(sql, true).classes.names()
}

#[track_caller]
fn assert_classes(cases: &[(&str, &str)]) {
    for (sql, expected) in cases {
        assert_eq!(classes(sql), *expected, "{sql}");
    }
}

#[test]
fn reads() {
    assert_classes(&[
        ("SELECT a FROM t WHERE b = 1", "read"),
        ("TABLE t", "read"),
        ("VALUES (1, 'a'), (2, 'b')", "read"),
        ("SELECT 1 UNION SELECT 2", "read"),
        ("EXPLAIN SELECT * FROM t", "read"),
        (
            "SELECT count(*), now(), lower(name), jsonb_build_object('a', 1) FROM t",
            "read",
        ),
        ("FETCH 10 FROM c", "read"),
    ]);
}

#[test]
fn writes_by_effect() {
    assert_classes(&[
        ("INSERT INTO t VALUES (1)", "write"),
        ("INSERT INTO t SELECT * FROM u", "read,write"),
        ("UPDATE t SET a = 1 WHERE id = 2", "write"),
        ("UPDATE t SET a = 1", "write,update_without_where"),
        ("UPDATE t SET a = 1 WHERE CURRENT OF c", "write"),
        ("DELETE FROM t WHERE id = 2", "write"),
        ("DELETE FROM t", "write,delete_without_where"),
        ("DELETE FROM t WHERE CURRENT OF c", "write"),
        (
            "MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE",
            "write",
        ),
        ("SELECT * INTO new_t FROM t", "read,write,ddl"),
        ("CREATE TABLE new_t AS SELECT * FROM t", "read,write,ddl"),
        (
            "CREATE MATERIALIZED VIEW mv AS SELECT * FROM t",
            "read,write,ddl",
        ),
        ("SELECT nextval('s')", "read,write"),
        // Data-modifying CTEs run with the statement that holds them.
        (
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
            "read,write,delete_without_where",
        ),
        (
            "WITH d AS (DELETE FROM t WHERE id = 1 RETURNING *) SELECT * FROM d",
            "read,write",
        ),
        (
            "WITH u AS (UPDATE t SET a = 1 RETURNING *) INSERT INTO log SELECT * FROM u",
            "read,write,update_without_where",
        ),
        (
            "INSERT INTO log WITH d AS (DELETE FROM t WHERE id = 1 RETURNING 1) VALUES (1)",
            "write",
        ),
    ]);
}

#[test]
fn explain_runs_the_statement_only_with_analyze() {
    assert_classes(&[
        ("EXPLAIN DELETE FROM t", "read"),
        ("EXPLAIN (VERBOSE, COSTS off) UPDATE t SET a = 1", "read"),
        (
            "EXPLAIN ANALYZE DELETE FROM t",
            "read,write,delete_without_where",
        ),
        (
            "EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET a = 1 WHERE id = 1",
            "read,write",
        ),
        // The argument is not read, so that no literal's value changes a class.
        (
            "EXPLAIN (ANALYZE false) DELETE FROM t",
            "read,write,delete_without_where",
        ),
        (
            "EXPLAIN DELETE FROM t WHERE id IN (SELECT id FROM u)",
            "read",
        ),
    ]);
}

#[test]
fn copy() {
    assert_classes(&[
        ("COPY t FROM STDIN", "write"),
        ("COPY t TO STDOUT", "read"),
        ("COPY (SELECT * FROM t) TO STDOUT", "read"),
        (
            "COPY (DELETE FROM t RETURNING *) TO STDOUT",
            "read,write,delete_without_where",
        ),
        ("COPY t TO PROGRAM 'gzip > /tmp/t.gz'", "read,copy_program"),
        ("COPY t FROM PROGRAM 'curl evil'", "write,copy_program"),
        ("COPY t FROM '/etc/passwd'", "write,copy_program"),
        ("COPY t TO '/tmp/t.csv' (FORMAT csv)", "read,copy_program"),
        // COPY's WHERE runs per row; the summary does not look into it.
        (
            "COPY t FROM STDIN WHERE pg_terminate_backend(a)",
            "write,admin",
        ),
    ]);
}

/// What masking by column learns of each `COPY … TO STDOUT`: the table, the columns
/// and the format, or `Other` when the rows' columns cannot be known.
#[test]
fn copy_out_columns_and_format() {
    let copy = |sql: &str| analyze::classify_text(sql, true).copy_out;
    let text = CopyFormat {
        csv: false,
        delimiter: b'\t',
        null: b"\\N".to_vec(),
        quote: b'"',
        escape: b'"',
        header: false,
    };
    assert_eq!(
        copy("COPY public.\"Users\" (id, email) TO STDOUT"),
        [CopyOut::Table {
            schema: Some("public".into()),
            table: "Users".into(),
            columns: vec!["id".into(), "email".into()],
            format: text.clone(),
        }]
    );
    let csv = CopyFormat {
        csv: true,
        delimiter: b';',
        null: b"NULL".to_vec(),
        header: true,
        escape: b'\\',
        ..text.clone()
    };
    // The old option syntax reads the same as the new.
    for sql in [
        "COPY t TO STDOUT (FORMAT csv, DELIMITER ';', NULL 'NULL', HEADER, ESCAPE '\\')",
        "COPY t TO STDOUT WITH CSV HEADER DELIMITER ';' NULL 'NULL' ESCAPE '\\'",
    ] {
        assert_eq!(
            copy(sql),
            [CopyOut::Table {
                schema: None,
                table: "t".into(),
                columns: Vec::new(),
                format: csv.clone(),
            }],
            "{sql}"
        );
    }
    // A query's text is deparsed from the tree, whatever the statement's spelling.
    assert_eq!(
        copy("copy (select a, b as \"B\" from s.t where x = 'it''s') to stdout csv header"),
        [CopyOut::Query {
            query: "SELECT a, b AS \"B\" FROM s.t WHERE x = 'it''s'".into(),
            format: CopyFormat {
                csv: true,
                delimiter: b',',
                null: Vec::new(),
                header: true,
                ..text.clone()
            },
        }]
    );
    assert_eq!(
        copy("COPY (SELECT 1) TO STDOUT (FORMAT binary)"),
        [CopyOut::Other]
    );
    assert_eq!(copy("COPY t TO STDOUT (FORMAT binary)"), [CopyOut::Other]);
    assert_eq!(copy("COPY t FROM STDIN"), []);
    assert_eq!(copy("COPY t TO '/tmp/x'"), []);
    // Two in one text, in order.
    assert_eq!(
        copy("COPY a TO STDOUT; SELECT 1; COPY (SELECT 2) TO STDOUT").len(),
        2
    );
}

#[test]
fn ddl_drop_truncate() {
    assert_classes(&[
        ("CREATE TABLE t (a int)", "ddl"),
        ("ALTER TABLE t ADD COLUMN b text", "ddl"),
        ("COMMENT ON TABLE t IS 'x'", "ddl"),
        ("CREATE INDEX ON t (a)", "ddl"),
        ("CREATE VIEW v AS SELECT * FROM t", "ddl"),
        (
            "CREATE VIEW v AS SELECT * FROM t WHERE a IN (SELECT 1)",
            "ddl",
        ),
        (
            "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'DELETE FROM t'",
            "ddl",
        ),
        (
            "CREATE PROCEDURE p() BEGIN ATOMIC DELETE FROM t; END",
            "ddl",
        ),
        ("DROP TABLE t", "ddl,drop"),
        ("DROP INDEX i", "ddl,drop"),
        ("TRUNCATE t", "write,ddl,truncate"),
        ("VACUUM t", "ddl"),
        ("CREATE SCHEMA s CREATE TABLE t (a int)", "ddl"),
        (
            "CREATE SCHEMA s CREATE TABLE t (a int) GRANT SELECT ON t TO r",
            "ddl,admin",
        ),
    ]);
}

#[test]
fn admin() {
    assert_classes(&[
        ("GRANT SELECT ON t TO bob", "admin"),
        ("REVOKE ALL ON t FROM bob", "admin"),
        ("GRANT admin TO bob", "admin"),
        ("CREATE ROLE bob LOGIN", "admin"),
        ("CREATE USER bob", "admin"),
        ("ALTER USER bob WITH SUPERUSER", "admin"),
        ("DROP ROLE bob", "ddl,drop,admin"),
        ("ALTER SYSTEM SET work_mem = '1GB'", "admin"),
        ("ALTER DATABASE d SET work_mem = '1GB'", "ddl,admin"),
        ("ALTER ROLE bob SET search_path = x", "admin"),
        ("LOAD 'plugin'", "admin"),
        (
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
            "read,admin",
        ),
        (
            "SELECT pg_catalog.pg_read_file('/etc/passwd')",
            "read,admin",
        ),
        ("SELECT set_config('role', 'x', false)", "read,admin"),
        (
            "SELECT * FROM dblink('host=x', 'SELECT 1') AS r(a int)",
            "read,admin",
        ),
        ("SELECT lo_import('/etc/passwd')", "read,admin"),
        // Inside expressions and subqueries too.
        ("SELECT ARRAY[(SELECT pg_cancel_backend(1))]", "read,admin"),
    ]);
}

#[test]
fn dynamic() {
    assert_classes(&[
        ("DO $$BEGIN DELETE FROM t; END$$", "dynamic"),
        ("CALL p(1)", "dynamic"),
        ("EXECUTE p", "dynamic"),
        ("EXECUTE p(pg_terminate_backend(1))", "admin,dynamic"),
        ("SELECT my_function(1)", "read,dynamic"),
        ("SELECT public.count(1)", "read,dynamic"),
        ("SELECT \"Count\"(1)", "read,dynamic"),
        (
            "SELECT query_to_xml('DELETE FROM t', true, true, '')",
            "read,dynamic",
        ),
        ("CREATE TABLE t2 AS EXECUTE p", "write,ddl,dynamic"),
    ]);
}

#[test]
fn session() {
    assert_classes(&[
        ("SET search_path = a, b", "session"),
        ("RESET ALL", "session"),
        ("SHOW work_mem", "session"),
        ("BEGIN", "session"),
        ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE", "session"),
        ("COMMIT", "session"),
        ("ROLLBACK", "session"),
        ("SAVEPOINT s", "session"),
        ("RELEASE SAVEPOINT s", "session"),
        ("DEALLOCATE ALL", "session"),
        ("DISCARD ALL", "session"),
        ("LISTEN c", "session"),
        ("NOTIFY c, 'x'", "session"),
        ("SELECT pg_advisory_lock(1)", "read,session"),
        ("PREPARE p AS SELECT 1", "read,session"),
        (
            "PREPARE p AS DELETE FROM t",
            "write,delete_without_where,session",
        ),
        ("DECLARE c CURSOR FOR SELECT * FROM t", "read,session"),
        ("", "session"),
        ("-- nothing\n/* at all */", "session"),
    ]);
}

#[test]
fn cursor_queries_are_classified() {
    let sql =
        "DECLARE c CURSOR WITH HOLD FOR SELECT pg_terminate_backend(pid) FROM pg_stat_activity";
    let classified = CLASSIFIER.classify_blocking(sql, true);
    assert_eq!(classified.classes.names(), "read,admin,session");
    assert_eq!(classified.functions, ["pg_terminate_backend"]);
    assert_eq!(classified.tables, ["pg_stat_activity"]);
}

#[test]
fn several_statements_are_the_union() {
    assert_classes(&[
        ("SELECT 1; DROP TABLE t", "read,ddl,drop"),
        (
            "BEGIN; UPDATE t SET a = 1; COMMIT",
            "write,update_without_where,session",
        ),
        ("SELECT 1;;", "read"),
    ]);
}

#[test]
fn tables_and_functions_are_recorded() {
    let classified = CLASSIFIER.classify_blocking(
        "WITH recent AS (SELECT * FROM audit.log) \
         SELECT upper(u.name), Count(*) FROM public.\"Users\" u JOIN orders o ON o.uid = u.id \
         WHERE u.id IN (SELECT uid FROM recent) AND extract(year FROM o.at) = 2024",
        true,
    );
    assert_eq!(classified.classes.names(), "read");
    assert_eq!(
        classified.tables,
        ["audit.log", "orders", "public.\"Users\""]
    );
    assert_eq!(
        classified.functions,
        ["count", "pg_catalog.extract", "upper"]
    );
    assert_eq!(classified.error, None);
}

#[test]
fn rejected_text_is_unparsed() {
    for sql in [
        "SELEC 1",
        "SELECT FROM WHERE",
        "DELETE t",
        "SELECT 'unterminated",
        "SELECT 1\0; DROP TABLE t",
    ] {
        let classified = CLASSIFIER.classify_blocking(sql, true);
        assert_eq!(classified.classes.names(), "unparsed", "{sql}");
        assert!(classified.error.is_some(), "{sql}");
    }
    let error = CLASSIFIER
        .classify_blocking("SELECT FROM WHERE", true)
        .error
        .clone()
        .unwrap();
    assert_eq!(error.message, "syntax error at or near \"WHERE\"");
    assert!(error.syntax);
    assert_eq!(error.position.map(NonZeroU32::get), Some(13));
}

#[test]
fn standard_conforming_strings_off_reads_backslash_escapes() {
    let sql = "SELECT 'a\\'' ; DROP TABLE users; --'";
    assert_eq!(
        CLASSIFIER.classify_blocking(sql, false).classes.names(),
        "read,ddl,drop"
    );
    assert_eq!(CLASSIFIER.classify_blocking(sql, false).tables, ["users"]);
    assert_eq!(
        CLASSIFIER.classify_blocking(sql, true).classes.names(),
        "read"
    );
    // E'' strings escape under either setting.
    let escaped = "SELECT E'a\\'' ; DROP TABLE users; --'";
    assert_eq!(
        CLASSIFIER.classify_blocking(escaped, true).classes.names(),
        "read,ddl,drop"
    );
}

// ---- Deep input ----------------------------------------------------------------------

/// `1+1+…`: each `+` nests the tree one level deeper.
fn sum_of(terms: usize) -> String {
    format!("1{}", "+1".repeat(terms - 1))
}

#[test]
fn deep_input_returns_without_crashing() {
    let nested_subqueries =
        |depth| format!("SELECT {}1{}", "(SELECT ".repeat(depth), ")".repeat(depth));
    // libpg_query stops at 2 MiB of stack ("stack depth limit exceeded"): 10,000 terms
    // fit in a release build, not with the larger frames of unoptimized C.
    let sum = CLASSIFIER.classify_blocking(&format!("SELECT {}", sum_of(10_000)), true);
    let depth_limit = Some("stack depth limit exceeded");
    assert!(
        sum.classes.names() == "read"
            || sum.error.as_ref().map(|e| e.message.as_str()) == depth_limit,
        "{sum:?}"
    );
    let cases = [
        (format!("SELECT {}", sum_of(100_000)), "unparsed"),
        (
            format!("SELECT {}1{}", "(".repeat(5_000), ")".repeat(5_000)),
            "read",
        ),
        (nested_subqueries(30), "read"), // too deep for the tree: judged from the summary
        (nested_subqueries(5_000), "unparsed"), // the grammar's own stack runs out
        (
            format!("SELECT {}1{}", "ARRAY[".repeat(300), "]".repeat(300)),
            "read",
        ),
    ];
    for (sql, expected) in &cases {
        let started = Instant::now();
        assert_eq!(classes(sql), *expected, "{}…", &sql[..40]);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{}…",
            &sql[..40]
        );
    }
}

#[test]
fn too_deep_statements_are_judged_at_their_worst() {
    let deep = sum_of(100);
    assert_classes(&[
        // Each detail at its worst: no WHERE seen, EXPLAIN as ANALYZE, COPY as anything.
        (
            &format!("DELETE FROM t WHERE a = {deep}"),
            "write,delete_without_where",
        ),
        (
            &format!("UPDATE t SET a = {deep} WHERE id = 1"),
            "write,update_without_where",
        ),
        (
            &format!("EXPLAIN DELETE FROM t WHERE a = {deep}"),
            "read,write,delete_without_where",
        ),
        (
            &format!("COPY (SELECT {deep}) TO STDOUT"),
            "read,write,copy_program",
        ),
        (&format!("SELECT {deep} INTO t2"), "read,write,ddl"),
        (
            &format!("SELECT pg_terminate_backend({deep})"),
            "read,admin",
        ),
        // Other statements of the text keep their precise classes.
        (
            &format!("DELETE FROM t WHERE id = 1; SELECT {deep}"),
            "read,write",
        ),
        (
            &format!("GRANT SELECT ON t TO bob; SELECT {deep}"),
            "read,admin",
        ),
        (
            &format!("ALTER DATABASE d REFRESH COLLATION VERSION; SELECT {deep}"),
            "read,ddl,admin",
        ),
    ]);
    let backslash = format!("SELECT 'a\\'' ; DROP TABLE users; SELECT {deep}; --'");
    assert_eq!(
        CLASSIFIER
            .classify_blocking(&backslash, false)
            .classes
            .names(),
        "unparsed"
    );
}

#[tokio::test]
async fn classify_waits_without_blocking_the_runtime() {
    let classifier = Arc::new(Classifier::new(100));
    let deep = Arc::<str>::from(format!("SELECT {}", sum_of(100)));
    let slow = tokio::spawn({
        let (classifier, deep) = (Arc::clone(&classifier), Arc::clone(&deep));
        async move { classifier.classify(&deep, true).await }
    });
    assert_eq!(
        classifier
            .classify("DELETE FROM t", true)
            .await
            .classes
            .names(),
        "write,delete_without_where"
    );
    assert_eq!(slow.await.unwrap().classes.names(), "read");
}

// ---- Cache ---------------------------------------------------------------------------

#[test]
fn literals_share_a_cache_entry() {
    let classifier = Classifier::new(100);
    let pgbench = |aid: u32| format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid};");
    let first = classifier.classify_blocking(&pgbench(40_000), true);
    let second = classifier.classify_blocking(&pgbench(67_890), true);
    assert!(Arc::ptr_eq(&first, &second));
    assert_eq!(classifier.cache.len(), 1);
}

#[test]
fn errors_are_cached_under_their_own_text() {
    let classifier = Classifier::new(100);
    let first = classifier.classify_blocking("SELECT 'secret' 'a'", true);
    let second = classifier.classify_blocking("SELECT 'other' 'a'", true);
    assert_eq!(
        first.error.as_ref().map(|e| e.message.as_str()),
        Some("syntax error at or near \"'a'\"")
    );
    assert!(!Arc::ptr_eq(&first, &second));
    assert!(Arc::ptr_eq(
        &first,
        &classifier.classify_blocking("SELECT 'secret' 'a'", true)
    ));
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn number(&mut self) -> String {
        let edges = [
            "0",
            "1",
            "24",
            "25",
            "53",
            "54",
            "32767",
            "32768",
            "999999999",
            "1234567890",
            "007",
        ];
        match self.below(3) {
            0 => self.pick(&edges).to_owned(),
            _ => (self.next() % 100_000).to_string(),
        }
    }

    fn string(&mut self) -> String {
        let strings = [
            "''",
            "'x'",
            "'it''s'",
            "'stdin'",
            "'/etc/passwd'",
            "'on'",
            "'off'",
            "'1'",
            "'a b\nc'",
            "'DROP TABLE t'",
        ];
        self.pick(&strings).to_owned()
    }
}

/// Fills `{n}` with numbers and `{s}` with string literals.
fn instantiate(template: &str, random: &mut Random) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(at) = rest.find('{') {
        out.push_str(&rest[..at]);
        out.push_str(&if rest[at..].starts_with("{n}") {
            random.number()
        } else {
            random.string()
        });
        rest = &rest[at + 3..];
    }
    out + rest
}

/// Statements where literals matter most to the parser or the classifier.
const TEMPLATES: &[&str] = &[
    "SELECT abalance FROM pgbench_accounts WHERE aid = {n};",
    "UPDATE pgbench_accounts SET abalance = abalance + {n} WHERE aid = {n};",
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ({n}, {n}, {n}, {n}, CURRENT_TIMESTAMP);",
    "SELECT 1::float({n})",
    "SELECT {n}::numeric({n}, {n}), {s}::varchar({n})",
    "ALTER TABLE t ALTER {n} SET STATISTICS {n}",
    "ALTER INDEX i ALTER COLUMN {n} SET STATISTICS {n}",
    "EXPLAIN (ANALYZE {n}) DELETE FROM t",
    "EXPLAIN (ANALYZE {s}) DELETE FROM t",
    "COPY t TO {s}",
    "COPY t FROM {s} WITH (FORMAT csv, DELIMITER {s})",
    "SELECT {s} {s}",
    "SELECT {s}\n{s}",
    "SELECT * FROM t WHERE a IN ({n}, {n}) LIMIT {n} OFFSET {n}",
    "SELECT {n}.{n}, {n}e{n}, t{n} FROM t{n}",
    "SET search_path = {s}; SET work_mem = {n}",
    "DO {s}",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS {s}",
    "FETCH {n} FROM c; MOVE {n} IN c",
    "PREPARE p AS SELECT {n}; EXECUTE p({n}, {s})",
    "SELECT interval {s} hour, date {s}",
    "SELECT * FROM t WHERE a = {n}; DELETE FROM t",
    "CREATE TABLE p{n} PARTITION OF t FOR VALUES WITH (MODULUS {n}, REMAINDER {n})",
    "SELECT * FROM t FETCH FIRST {n} ROWS WITH TIES",
    "SELECT ({n}, {s})::t, ARRAY[{n}][{n}:{n}]",
    "CREATE SEQUENCE s INCREMENT {n} START {n}; ALTER SEQUENCE s RESTART {n}",
];
/// Tokens for random statements (mostly rejected by the parser).
const SOUP: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "t",
    "\"T\"",
    "(",
    ")",
    ",",
    "=",
    "+",
    "-",
    "::",
    "float",
    "int",
    "{n}",
    "{s}",
    "{n}",
    "{s}",
    ";",
    "DELETE",
    "UPDATE",
    "SET",
    "INSERT",
    "INTO",
    "VALUES",
    "EXPLAIN",
    "ANALYZE",
    "COPY",
    "TO",
    "STDIN",
    "LIMIT",
    "AND",
    "IN",
    ".",
    "*",
    "ALTER",
    "TABLE",
    "COLUMN",
    "STATISTICS",
    "DROP",
    "\n",
];

/// The invariant of `key`: texts with the same key classify alike, so a cached answer
/// is the answer. Checked over templates where literals matter most, and over random
/// token soups (mostly rejected by the parser, which must then reject all alike).
#[test]
fn same_key_means_same_classification() {
    let mut random = Random(0x5eed_cafe_f00d_0001);
    let mut soups: Vec<String> = Vec::new();
    for _ in 0..300 {
        let length = 2 + random.below(10);
        let tokens: Vec<&str> = (0..length).map(|_| random.pick(SOUP)).collect();
        soups.push(tokens.join(if random.below(4) == 0 { "" } else { " " }));
    }
    let templates = TEMPLATES
        .iter()
        .copied()
        .chain(soups.iter().map(String::as_str));
    let classifier = Classifier::new(100_000);
    let mut checked = 0;
    for template in templates {
        let mut by_key: HashMap<Key, Classified> = HashMap::new();
        for _ in 0..40 {
            let sql = instantiate(template, &mut random);
            let uncached = analyze::classify_text(&sql, true);
            let cached = classifier.classify_blocking(&sql, true);
            assert_eq!(*cached, uncached, "cached answer differs for {sql:?}");
            let key = Key::new(&sql, true);
            if let Some(other) = by_key.get(&key) {
                let same = (other.classes, &other.tables, &other.functions)
                    == (uncached.classes, &uncached.tables, &uncached.functions);
                assert!(
                    same,
                    "same key, different classes: {sql:?} {uncached:?} vs {other:?}"
                );
                checked += 1;
            } else {
                by_key.insert(key, uncached);
            }
        }
    }
    assert!(checked > 5_000, "only {checked} pairs shared a key");
}

// ---- Timings -------------------------------------------------------------------------

/// `AYA_BUILD_SKIP=1 cargo test --release -p portcullis --lib classify::tests::timings --
/// --ignored --nocapture`
#[test]
#[ignore = "benchmark"]
fn timings() {
    let pgbench = |aid: u64| format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid};");
    let per_call = |started: Instant, calls: u32| started.elapsed() / calls;

    let calls = 20_000;
    let started = Instant::now();
    for aid in 0..u64::from(calls) {
        std::hint::black_box(analyze::classify_text(&pgbench(aid), true));
    }
    println!(
        "cold classification (summary + parse + walk), pgbench -S query: {:?}",
        per_call(started, calls)
    );

    let started = Instant::now();
    for aid in 0..u64::from(calls) {
        std::hint::black_box(Key::new(&pgbench(aid), true));
    }
    println!("cache key alone: {:?}", per_call(started, calls));

    let classifier = Classifier::new(10_000);
    classifier.classify_blocking(&pgbench(1), true);
    let calls = 200_000;
    let texts: Vec<String> = (0..1_000).map(|aid| pgbench(10_000 + aid)).collect();
    let started = Instant::now();
    for i in 0..calls {
        std::hint::black_box(classifier.classify_blocking(&texts[i as usize % texts.len()], true));
    }
    println!(
        "cache hit, pgbench -S query with varying aid: {:?}",
        per_call(started, calls)
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let started = Instant::now();
    runtime.block_on(async {
        for i in 0..calls {
            std::hint::black_box(
                classifier
                    .classify(&texts[i as usize % texts.len()], true)
                    .await,
            );
        }
    });
    println!(
        "cache hit through the async API: {:?}",
        per_call(started, calls)
    );

    let miss = Classifier::new(0);
    let calls = 5_000;
    let started = Instant::now();
    for aid in 0..u64::from(calls) {
        std::hint::black_box(miss.classify_blocking(&pgbench(aid), true));
    }
    println!(
        "cache miss through a parser thread: {:?}",
        per_call(started, calls)
    );

    for (name, sql) in [
        (
            "SELECT 1+1+… (10,000 terms)",
            format!("SELECT {}", sum_of(10_000)),
        ),
        (
            "SELECT 1+1+… (100,000 terms)",
            format!("SELECT {}", sum_of(100_000)),
        ),
        (
            "5,000 nested parentheses",
            format!("SELECT {}1{}", "(".repeat(5_000), ")".repeat(5_000)),
        ),
        (
            "5,000 nested subqueries",
            format!("SELECT {}1{}", "(SELECT ".repeat(5_000), ")".repeat(5_000)),
        ),
    ] {
        let started = Instant::now();
        let result = miss.classify_blocking(&sql, true);
        println!(
            "{name}: {} in {:?} {:?}",
            result.classes.names(),
            started.elapsed(),
            result.error
        );
    }
}

#[test]
fn row_locks_and_calls_in_utility_statements() {
    assert_classes(&[
        // A row lock blocks writers (and needs UPDATE privilege): not a plain read.
        ("SELECT * FROM t FOR UPDATE", "read,write"),
        (
            "SELECT * FROM t WHERE id = 1 FOR SHARE SKIP LOCKED",
            "read,write",
        ),
        (
            "WITH l AS (SELECT * FROM t FOR NO KEY UPDATE) SELECT 1",
            "read,write",
        ),
        // Wherever the locking SELECT sits: a subquery in FROM, WHERE or the list.
        ("SELECT * FROM (SELECT * FROM t FOR UPDATE) s", "read,write"),
        (
            "SELECT 1 WHERE EXISTS (SELECT 1 FROM t FOR KEY SHARE)",
            "read,write",
        ),
        ("SELECT (SELECT id FROM t LIMIT 1 FOR UPDATE)", "read,write"),
        // A volatile DEFAULT runs once per existing row, at ALTER time.
        (
            "ALTER TABLE t ADD COLUMN z int DEFAULT pg_terminate_backend(1)",
            "ddl,admin",
        ),
        (
            "ALTER TABLE t ALTER COLUMN z SET DEFAULT lo_import('/etc/passwd')",
            "ddl,admin",
        ),
    ]);
}

#[test]
fn non_ascii_names_are_written_unquoted_where_postgresql_reads_them_so() {
    let tables = |sql: &str| CLASSIFIER.classify_blocking(sql, true).tables.clone();
    assert_eq!(
        tables(
            "INSERT INTO tarifs_été VALUES (1); SELECT * FROM \"données\".\"Été\", \"a.b\".\"x\"\"é\""
        ),
        ["\"a.b\".\"x\"\"é\"", "données.\"Été\"", "tarifs_été"]
    );
    assert_eq!(
        tables("SELECT * FROM \"My Table\", \"user\""),
        ["\"My Table\"", "\"user\""]
    );
}
