//! Issue 4 (PostgreSQL): compatibility with the clients people actually use, through
//! the proxy: psql (commands, scripts, `\copy`, COPY), pgbench in all three protocol
//! modes and with pipelining, psycopg2 (parameters, transactions, server-side cursors,
//! LISTEN/NOTIFY, errors), `pg_dump`/`pg_restore`, libpq's `sslmode`s, and a raw
//! extended-protocol pipeline. Every client runs as `nobody` inside the test cgroup
//! and knows only the server's address and a made-up user name.
#![expect(
    clippy::panic,
    clippy::indexing_slicing,
    reason = "root tests panic with a message"
)]

use portcullis_tests::pgproxy::{
    ALLOW_ALL_RULES, RAW_CLIENT, Setup, setup, setup_with_rules, text,
};
use std::{
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::{Output, Stdio},
};

// ---- helpers ----

/// A directory under /tmp that `nobody` can read and write (client files live here).
fn shared_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("portcullis-compat-")
        .tempdir_in("/tmp")
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
        .unwrap_or_else(|e| panic!("{e}"));
    dir
}

/// Writes `content` to `path`, readable by `nobody`.
fn write_file(path: &Path, content: &str) {
    std::fs::write(path, content).unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Panics with everything useful unless `out` succeeded; returns its stdout.
fn ok(s: &Setup, what: &str, out: &Output) -> String {
    let (stdout, stderr) = text(out);
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}\ndaemon log:\n{}",
        out.status,
        s.d.log()
    );
    stdout
}

fn run(s: &Setup, argv: &[&str]) -> Output {
    s.client_command(argv)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"))
}

/// Runs a Python script as `nobody` through the redirect, with the connection string
/// of database `app` as `sys.argv[1]` (and the server's host and port after it).
fn python(s: &Setup, script: &str) -> Output {
    s.python(script, &[&s.conninfo("app", "disable")])
}

/// Whether Debian's python3-psycopg2 is importable; says why a test skips if not.
fn has_psycopg2(test: &str) -> bool {
    let found = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import psycopg2"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!(
            "SKIP {test}: /usr/bin/python3 cannot import psycopg2 (apt install python3-psycopg2)"
        );
    }
    found
}

/// The lines of `stdout`, trimmed.
fn lines(stdout: &str) -> Vec<&str> {
    stdout.lines().map(str::trim).collect()
}

// ---- psql ----

#[test]
fn psql_commands_scripts_and_multi_statement_strings() {
    let Some(s) = setup("pgc-psql") else { return };
    let out = s.psql(&["-c", "SELECT count(*), sum(balance) FROM accounts"]);
    assert_eq!(ok(&s, "psql -c", &out).trim(), "10|1000");

    // A script of several statements, each answered in order.
    let dir = shared_dir();
    let script = dir.path().join("script.sql");
    write_file(
        &script,
        "INSERT INTO accounts VALUES (11, 'script', 5);\n\
         UPDATE accounts SET balance = balance + 1 WHERE id <= 5;\n\
         SELECT count(*), sum(balance) FROM accounts;\n",
    );
    let out = s.psql(&["-f", &script.display().to_string()]);
    let stdout = ok(&s, "psql -f", &out);
    assert_eq!(lines(&stdout), ["INSERT 0 1", "UPDATE 5", "11|1010"]);
    assert_eq!(
        s.direct("SELECT count(*), sum(balance) FROM accounts"),
        "11|1010"
    );

    // One Query message with two statements: psql 15 shows both results.
    let out = s.psql(&["-c", "SELECT 1; SELECT 2"]);
    assert_eq!(lines(&ok(&s, "multi-statement -c", &out)), ["1", "2"]);

    // A multi-statement string is one implicit transaction: a later error undoes
    // the earlier insert.
    let out = s.psql(&[
        "-c",
        "INSERT INTO accounts VALUES (12, 'doomed', 1); SELECT 1/0",
    ]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("division by zero"), "{stderr}");
    assert_eq!(s.direct("SELECT count(*) FROM accounts WHERE id = 12"), "0");
}

#[test]
fn psql_copy_to_and_from_files_and_copy_to_stdout() {
    let Some(s) = setup("pgc-copy") else { return };
    let dir = shared_dir();
    let exported = dir.path().join("accounts.csv");
    let out = s.psql(&[
        "-c",
        &format!(
            "\\copy (SELECT * FROM accounts ORDER BY id) TO '{}' WITH (FORMAT csv)",
            exported.display()
        ),
    ]);
    assert_eq!(ok(&s, "\\copy TO", &out).trim(), "COPY 10");
    let csv = std::fs::read_to_string(&exported).unwrap_or_else(|e| panic!("{e}"));
    let expected: Vec<String> = (1..=10).map(|i| format!("{i},user{i},100")).collect();
    assert_eq!(lines(&csv), expected);

    // Rows from a file arrive on the server.
    let imported = dir.path().join("more.csv");
    let rows: String = (101..=150)
        .map(|i| format!("{i},imported{i},{i}\n"))
        .collect();
    write_file(&imported, &rows);
    let out = s.psql(&[
        "-c",
        &format!(
            "\\copy accounts FROM '{}' WITH (FORMAT csv)",
            imported.display()
        ),
    ]);
    assert_eq!(ok(&s, "\\copy FROM", &out).trim(), "COPY 50");
    assert_eq!(
        s.direct("SELECT count(*), sum(balance) FROM accounts WHERE owner LIKE 'imported%'"),
        "50|6275"
    );

    // A file that breaks a constraint halfway: the server's error reaches psql and
    // no row of the file stays.
    let clash = dir.path().join("clash.csv");
    write_file(&clash, "200,new,1\n201,new,1\n5,duplicate,1\n202,new,1\n");
    let out = s.psql(&[
        "-c",
        &format!(
            "\\copy accounts FROM '{}' WITH (FORMAT csv)",
            clash.display()
        ),
    ]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("duplicate key value"), "{stderr}");
    assert_eq!(
        s.direct("SELECT count(*) FROM accounts WHERE id >= 200"),
        "0"
    );

    // COPY … TO STDOUT on the same kind of connection.
    let out = s.psql(&[
        "-c",
        "COPY (SELECT id, owner FROM accounts WHERE id <= 3 ORDER BY id) TO STDOUT WITH (FORMAT csv)",
    ]);
    assert_eq!(
        lines(&ok(&s, "COPY TO STDOUT", &out)),
        ["1,user1", "2,user2", "3,user3"]
    );

    // COPY … FROM STDIN fed on psql's standard input.
    let out = s.psql_with_input(
        &s.conninfo("app", "disable"),
        &["-c", "COPY accounts FROM STDIN WITH (FORMAT csv)"],
        b"300,stdin,7\n301,stdin,8\n",
    );
    assert_eq!(ok(&s, "COPY FROM STDIN", &out).trim(), "COPY 2");
    assert_eq!(
        s.direct(
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM accounts WHERE owner = 'stdin'"
        ),
        "300,301"
    );
}

// ---- pgbench ----

/// A target whose policy allows everything, initialized with `pgbench -i -s 1`
/// through the proxy (pgbench drops, creates and truncates its tables).
fn pgbench_setup(name: &str) -> Option<Setup> {
    let s = setup_with_rules(name, ALLOW_ALL_RULES)?;
    let pgbench = s.client_bin("pgbench");
    let conninfo = s.conninfo("app", "disable");
    let out = run(&s, &[&pgbench, "-i", "-s", "1", &conninfo]);
    ok(&s, "pgbench -i", &out);
    assert_eq!(
        s.direct(
            "SELECT (SELECT count(*) FROM pgbench_accounts), (SELECT count(*) FROM pgbench_tellers), \
             (SELECT count(*) FROM pgbench_branches), (SELECT count(*) FROM pgbench_history)"
        ),
        "100000|10|1|0"
    );
    Some(s)
}

/// Runs the default (TPC-B-like) pgbench script 200 times on each of 2 clients in
/// `mode`; every transaction must be processed and leave its history row.
fn pgbench_run(s: &Setup, mode: &str) {
    let pgbench = s.client_bin("pgbench");
    let conninfo = s.conninfo("app", "disable");
    let out = run(
        s,
        &[
            &pgbench, "-n", "-t", "200", "-c", "2", "-M", mode, &conninfo,
        ],
    );
    let stdout = ok(s, &format!("pgbench -M {mode}"), &out);
    assert!(
        stdout.contains("number of transactions actually processed: 400/400"),
        "{stdout}"
    );
    assert!(
        stdout.contains("number of failed transactions: 0"),
        "{stdout}"
    );
    assert_eq!(s.direct("SELECT count(*) FROM pgbench_history"), "400");
    // Each transaction moved a delta between an account and its branch; the totals
    // agree only if every statement of every transaction ran.
    assert_eq!(
        s.direct(
            "SELECT (SELECT sum(abalance) FROM pgbench_accounts) = (SELECT sum(bbalance) FROM pgbench_branches)"
        ),
        "t"
    );
}

#[test]
fn pgbench_initializes_and_runs_in_simple_mode() {
    let Some(s) = pgbench_setup("pgc-bench-simple") else {
        return;
    };
    pgbench_run(&s, "simple");
}

#[test]
fn pgbench_runs_in_extended_mode() {
    let Some(s) = pgbench_setup("pgc-bench-ext") else {
        return;
    };
    pgbench_run(&s, "extended");
}

#[test]
fn pgbench_runs_in_prepared_mode() {
    let Some(s) = pgbench_setup("pgc-bench-prep") else {
        return;
    };
    pgbench_run(&s, "prepared");
}

#[test]
fn pgbench_pipelines_in_extended_and_prepared_modes() {
    // Under the default policy: the statements are plain reads and writes.
    let Some(s) = setup("pgc-pipeline") else {
        return;
    };
    s.direct("SET ROLE app_owner; CREATE TABLE piped (n int, mode text)");
    let dir = shared_dir();
    let script = dir.path().join("pipeline.sql");
    write_file(
        &script,
        "\\set n random(1, 1000)\n\
         \\startpipeline\n\
         INSERT INTO piped VALUES (:n, :mode);\n\
         SELECT count(*) FROM piped;\n\
         UPDATE accounts SET balance = balance + 1 WHERE id = 1;\n\
         \\endpipeline\n",
    );
    let pgbench = s.client_bin("pgbench");
    let conninfo = s.conninfo("app", "disable");
    let script = script.display().to_string();
    for (mode, total) in [("extended", 100), ("prepared", 200)] {
        let define = format!("mode={mode}");
        let out = run(
            &s,
            &[
                &pgbench, "-n", "-t", "50", "-c", "2", "-M", mode, "-D", &define, "-f", &script,
                &conninfo,
            ],
        );
        let stdout = ok(&s, &format!("pipelined pgbench -M {mode}"), &out);
        assert!(
            stdout.contains("number of transactions actually processed: 100/100"),
            "{stdout}"
        );
        assert_eq!(
            s.direct(&format!("SELECT count(*) FROM piped WHERE mode = '{mode}'")),
            "100"
        );
        assert_eq!(
            s.direct("SELECT balance FROM accounts WHERE id = 1"),
            (100 + total).to_string()
        );
    }
}

// ---- psycopg2 ----

const PSYCOPG2_PARAMS: &str = r#"
import sys, psycopg2
conn = psycopg2.connect(sys.argv[1])
cur = conn.cursor()
cur.execute("SELECT owner, balance FROM accounts WHERE id = %s", (3,))
print("row", *cur.fetchone())
cur.execute("SELECT %s || %s, %s::int + 1, %s IS NULL", ("it's ", "quoted; DROP TABLE x", 41, None))
print("values", *cur.fetchone(), sep="|")
cur.executemany(
    "INSERT INTO accounts VALUES (%s, %s, %s)",
    [(i, "many%d" % i, i) for i in range(100, 120)],
)
conn.commit()
cur.execute("UPDATE accounts SET balance = balance - 10 WHERE id = %s", (1,))
cur.execute("UPDATE accounts SET balance = balance + 10 WHERE id = %s", (2,))
conn.commit()
cur.execute("UPDATE accounts SET balance = 0 WHERE id = 3")
cur.execute("DELETE FROM accounts WHERE id = 4")
cur.execute("SELECT count(*) FROM accounts")
print("inside", cur.fetchone()[0])
conn.rollback()
cur.execute("SELECT balance FROM accounts WHERE id IN (1, 2, 3) ORDER BY id")
print("after", *[r[0] for r in cur.fetchall()])
"#;

#[test]
fn psycopg2_parameters_executemany_commit_and_rollback() {
    if !has_psycopg2("pgc-py-params") {
        return;
    }
    let Some(s) = setup("pgc-py-params") else {
        return;
    };
    let out = python(&s, PSYCOPG2_PARAMS);
    let stdout = ok(&s, "psycopg2 script", &out);
    assert_eq!(
        lines(&stdout),
        [
            "row user3 100",
            "values|it's quoted; DROP TABLE x|42|True",
            "inside 29",
            "after 90 110 100",
        ]
    );
    assert_eq!(
        s.direct("SELECT count(*), sum(balance) FROM accounts WHERE owner LIKE 'many%'"),
        "20|2190"
    );
    assert_eq!(
        s.direct("SELECT string_agg(balance::text, ',' ORDER BY id) FROM accounts WHERE id <= 4"),
        "90,110,100,100"
    );
}

const PSYCOPG2_NAMED_CURSOR: &str = r#"
import sys, psycopg2
conn = psycopg2.connect(sys.argv[1])
cur = conn.cursor(name="big_scan")
cur.execute("SELECT g FROM generate_series(1, 1000) g ORDER BY g")
batches, total = [], 0
while True:
    rows = cur.fetchmany(300)
    if not rows:
        break
    batches.append(len(rows))
    total += sum(r[0] for r in rows)
    if len(batches) == 1:
        other = conn.cursor()
        other.execute("SELECT name FROM pg_cursors")
        print("open", *[r[0] for r in other.fetchall()])
print("batches", *batches)
print("total", total)
cur.close()
conn.commit()
"#;

#[test]
fn psycopg2_named_cursor_fetches_in_batches() {
    if !has_psycopg2("pgc-py-cursor") {
        return;
    }
    let Some(s) = setup("pgc-py-cursor") else {
        return;
    };
    let out = python(&s, PSYCOPG2_NAMED_CURSOR);
    let stdout = ok(&s, "psycopg2 named cursor", &out);
    assert_eq!(
        lines(&stdout),
        ["open big_scan", "batches 300 300 300 100", "total 500500"]
    );
}

const PSYCOPG2_NOTIFY: &str = r#"
import sys, select, time, psycopg2
listener = psycopg2.connect(sys.argv[1])
listener.autocommit = True
listener.cursor().execute("LISTEN portcullis_events")
sender = psycopg2.connect(sys.argv[1])
sender.autocommit = True
cur = sender.cursor()
cur.execute("SELECT pg_backend_pid()")
sender_pid = cur.fetchone()[0]
cur.execute("NOTIFY portcullis_events, 'first'")
cur.execute("SELECT pg_notify('portcullis_events', %s)", ("second, with a parameter",))
got = []
deadline = time.time() + 10
while len(got) < 2 and time.time() < deadline:
    if select.select([listener], [], [], 1) != ([], [], []):
        listener.poll()
        while listener.notifies:
            got.append(listener.notifies.pop(0))
for n in got:
    print("notify", n.channel, n.payload, n.pid == sender_pid, sep="|")
# UNLISTEN, then nothing more arrives; the connection still answers.
listener.cursor().execute("UNLISTEN portcullis_events")
cur.execute("NOTIFY portcullis_events, 'unheard'")
time.sleep(0.5)
listener.poll()
print("after unlisten", len(listener.notifies))
"#;

#[test]
fn psycopg2_listen_notify_round_trip() {
    if !has_psycopg2("pgc-py-notify") {
        return;
    }
    let Some(s) = setup("pgc-py-notify") else {
        return;
    };
    let out = python(&s, PSYCOPG2_NOTIFY);
    let stdout = ok(&s, "psycopg2 LISTEN/NOTIFY", &out);
    assert_eq!(
        lines(&stdout),
        [
            "notify|portcullis_events|first|True",
            "notify|portcullis_events|second, with a parameter|True",
            "after unlisten 0",
        ]
    );
}

/// A notification from a session outside the proxy reaches an idle proxied
/// listener: the proxy relays the server's asynchronous messages while the client
/// waits, not only in answer to a query.
const PSYCOPG2_NOTIFY_IDLE: &str = r#"
import sys, select, time, psycopg2
listener = psycopg2.connect(sys.argv[1])
listener.autocommit = True
listener.cursor().execute("LISTEN outside")
open("/tmp/" + sys.argv[4], "w").write("listening")
deadline = time.time() + 20
while not listener.notifies and time.time() < deadline:
    if select.select([listener], [], [], 1) != ([], [], []):
        listener.poll()
print(*[(n.channel, n.payload) for n in listener.notifies])
"#;

#[test]
fn psycopg2_idle_listener_gets_notifications_from_outside() {
    if !has_psycopg2("pgc-py-idle") {
        return;
    }
    let Some(s) = setup("pgc-py-idle") else {
        return;
    };
    let dir = shared_dir();
    let flag = format!(
        "{}/ready",
        dir.path()
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
    );
    let conninfo = s.conninfo("app", "disable");
    let child = s
        .client_command(&[
            "/usr/bin/python3",
            "-c",
            PSYCOPG2_NOTIFY_IDLE,
            &conninfo,
            "",
            "",
            &flag,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let ready = Path::new("/tmp").join(&flag);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !ready.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(ready.exists(), "the listener never got to LISTEN");
    s.direct("NOTIFY outside, 'from a direct session'");
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let stdout = ok(&s, "idle listener", &out);
    assert_eq!(stdout.trim(), "('outside', 'from a direct session')");
}

const PSYCOPG2_ERROR: &str = r#"
import sys, psycopg2, psycopg2.errors
conn = psycopg2.connect(sys.argv[1])
cur = conn.cursor()
cur.execute("INSERT INTO accounts VALUES (77, 'lost', 1)")
try:
    cur.execute("SELECT 1/0")
except psycopg2.errors.DivisionByZero as e:
    print("error", e.pgcode)
try:
    cur.execute("SELECT 1")
except psycopg2.errors.InFailedSqlTransaction as e:
    print("aborted", e.pgcode)
conn.rollback()
cur.execute("SELECT count(*) FROM accounts")
print("after", cur.fetchone()[0])
cur.execute("INSERT INTO accounts VALUES (78, 'kept', 1)")
conn.commit()
"#;

#[test]
fn psycopg2_error_then_rollback_keeps_the_connection_usable() {
    if !has_psycopg2("pgc-py-error") {
        return;
    }
    let Some(s) = setup("pgc-py-error") else {
        return;
    };
    let out = python(&s, PSYCOPG2_ERROR);
    let stdout = ok(&s, "psycopg2 error handling", &out);
    assert_eq!(lines(&stdout), ["error 22012", "aborted 25P02", "after 10"]);
    assert_eq!(
        s.direct("SELECT string_agg(id::text, ',') FROM accounts WHERE id > 10"),
        "78"
    );
}

const PSYCOPG2_BACKEND_PID: &str = r#"
import sys, psycopg2
conn = psycopg2.connect(sys.argv[1])
cur = conn.cursor()
cur.execute("SELECT pg_backend_pid()")
print(conn.get_backend_pid() == cur.fetchone()[0])
"#;

/// libpq's `PQbackendPID` (from `BackendKeyData`) is what programs compare with a
/// notification's sender pid to skip their own notifications, and what they pass to
/// `pg_cancel_backend` or look up in `pg_stat_activity`.
#[test]
fn backend_pid_seen_by_the_client_is_the_servers() {
    if !has_psycopg2("pgc-py-pid") {
        return;
    }
    let Some(s) = setup("pgc-py-pid") else { return };
    let out = python(&s, PSYCOPG2_BACKEND_PID);
    assert_eq!(ok(&s, "backend pid", &out).trim(), "True");
}

// ---- pg_dump / pg_restore ----

/// More to dump than one table: a serial column, a foreign key, an index, a view.
fn add_schema(s: &Setup) {
    s.direct(
        "SET ROLE app_owner;
         CREATE TABLE notes (id serial PRIMARY KEY, account int REFERENCES accounts, body text);
         INSERT INTO notes (account, body) SELECT i % 10 + 1, md5(i::text) FROM generate_series(1, 500) i;
         CREATE INDEX notes_account ON notes (account);
         CREATE VIEW rich AS SELECT id, owner FROM accounts WHERE balance > 50",
    );
}

const COUNTS: &str = "SELECT (SELECT count(*) FROM accounts), (SELECT count(*) FROM notes), \
     (SELECT count(*) FROM rich), (SELECT md5(string_agg(body, ',' ORDER BY id)) FROM notes), \
     (SELECT last_value FROM notes_id_seq), \
     (SELECT count(*) FROM pg_indexes WHERE indexname = 'notes_account')";

#[test]
fn pg_dump_and_pg_restore_round_trip_through_the_proxy() {
    let Some(s) = setup_with_rules("pgc-dump", ALLOW_ALL_RULES) else {
        return;
    };
    add_schema(&s);
    let expected = s.direct(COUNTS);
    let dir = shared_dir();
    let dump = dir.path().join("app.dump").display().to_string();
    let out = run(
        &s,
        &[
            &s.client_bin("pg_dump"),
            "-Fc",
            "-f",
            &dump,
            "-d",
            &s.conninfo("app", "disable"),
        ],
    );
    ok(&s, "pg_dump -Fc", &out);

    s.pg.psql("postgres", "CREATE DATABASE restored OWNER app_owner")
        .unwrap_or_else(|e| panic!("{e:#}"));
    let out = run(
        &s,
        &[
            &s.client_bin("pg_restore"),
            "--exit-on-error",
            "--no-owner",
            "-d",
            &s.conninfo("restored", "disable"),
            &dump,
        ],
    );
    ok(&s, "pg_restore through the proxy", &out);
    let restored =
        s.pg.psql("restored", COUNTS)
            .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(restored.trim(), expected);
    assert!(expected.starts_with("10|500|10|"), "{expected}");
}

#[test]
fn pg_dump_works_under_a_policy_that_reviews_ddl() {
    // A backup only reads: it must not be held by the `ddl` review rule.
    let Some(s) = setup("pgc-dump-review") else {
        return;
    };
    add_schema(&s);
    let expected = s.direct(COUNTS);
    let dir = shared_dir();
    let dump = dir.path().join("app.dump").display().to_string();
    let out = run(
        &s,
        &[
            &s.client_bin("pg_dump"),
            "-Fc",
            "-f",
            &dump,
            "-d",
            &s.conninfo("app", "disable"),
        ],
    );
    ok(&s, "pg_dump -Fc", &out);
    s.pg.create_database("restored")
        .unwrap_or_else(|e| panic!("{e:#}"));
    let restore = std::process::Command::new(s.pg.bindir().join("pg_restore"))
        .args(["--exit-on-error", "--no-owner", "-U", "postgres", "-h"])
        .arg(s.pg.socket_dir())
        .args(["-p", &s.pg.port().to_string(), "-d", "restored", &dump])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    ok(&s, "pg_restore directly", &restore);
    let restored =
        s.pg.psql("restored", COUNTS)
            .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(restored.trim(), expected);
}

// ---- TLS ----

#[test]
fn sslmode_disable_prefer_and_require_all_work() {
    let Some(s) = setup("pgc-sslmode") else {
        return;
    };
    for (mode, client_tls) in [("require", true), ("prefer", true), ("disable", false)] {
        let out = s
            .psql_command_to(
                &s.conninfo("app", mode),
                &[
                    "-c",
                    "\\conninfo",
                    "-c",
                    "SELECT count(*) FROM accounts",
                    // The proxy→server leg, whatever it is; the query must work.
                    "-c",
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                ],
            )
            // setpriv keeps root's HOME, where libpq would look for a client
            // certificate that `nobody` may not read.
            .env("HOME", "/nonexistent")
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let stdout = ok(&s, &format!("psql sslmode={mode}"), &out);
        let mut lines = lines(&stdout);
        assert!(
            lines[0].starts_with("You are connected to database \"app\""),
            "{stdout}"
        );
        let tls = lines[1].starts_with("SSL connection (protocol: TLS");
        assert_eq!(
            tls,
            client_tls,
            "sslmode={mode}: the client leg should {}be TLS: {stdout}\n{}",
            if client_tls { "" } else { "not " },
            s.d.log()
        );
        if tls {
            lines.remove(1);
        }
        assert_eq!(lines.len(), 3, "sslmode={mode}: {stdout}");
        assert_eq!(lines[1], "10", "sslmode={mode}: {stdout}");
        assert!(["t", "f"].contains(&lines[2]), "sslmode={mode}: {stdout}");
    }

    // The certificate the client checked is the one the daemon generated: the client
    // leg really ends at the proxy.
    let dir = shared_dir();
    let ca = dir.path().join("proxy.crt");
    std::fs::copy(s.d.dir().join("state/pg-proxy.crt"), &ca)
        .unwrap_or_else(|e| panic!("the daemon wrote no client certificate: {e}"));
    std::fs::set_permissions(&ca, std::fs::Permissions::from_mode(0o644))
        .unwrap_or_else(|e| panic!("{e}"));
    let conninfo = format!(
        "{} sslrootcert={}",
        s.conninfo("app", "verify-ca"),
        ca.display()
    );
    let out = s
        .psql_command_to(&conninfo, &["-c", "SELECT count(*) FROM accounts"])
        .env("HOME", "/nonexistent")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok(&s, "psql sslmode=verify-ca", &out).trim(), "10");
}

// ---- raw extended protocol ----

/// Three batches of extended-protocol messages, each written at once and ended by
/// one Sync; prints what came back per batch: `1` `2` ParseComplete/BindComplete,
/// `D:<first column>`, `C:<tag>`, `E:<sqlstate>`, `Z:<status>`.
/// Follows [`RAW_CLIENT`].
const RAW_PIPELINE: &str = r#"
def batch():
    out = []
    while True:
        t, m = read_msg()
        if t in (b"1", b"2"):
            out.append(t.decode())
        elif t == b"D":
            n = struct.unpack("!i", m[2:6])[0]
            out.append("D:" + m[6:6 + n].decode())
        elif t == b"C":
            out.append("C:" + m[:-1].decode())
        elif t == b"E":
            fields = dict((f[:1], f[1:].decode()) for f in m.split(b"\0") if f)
            out.append("E:" + fields.get(b"C", "?"))
        elif t == b"Z":
            out.append("Z:" + m.decode())
            return " ".join(out)
        elif t in (b"N", b"S", b"K", b"R"):
            pass
        else:
            out.append(t.decode())
batch()  # the login's greeting
def parse(name, q): return msg(b"P", cstr(name) + cstr(q) + struct.pack("!H", 0))
def bind(stmt, *params):
    b = cstr("") + cstr(stmt) + struct.pack("!HH", 0, len(params))
    for p in params:
        b += struct.pack("!i", len(p)) + p.encode()
    return msg(b"B", b + struct.pack("!H", 0))
execute = msg(b"E", cstr("") + struct.pack("!i", 0))
sync = msg(b"S", b"")
ins = "INSERT INTO accounts VALUES ($1::int, $2, 0)"
batches = [
    parse("", "SELECT $1::int * 2") + bind("", "21") + execute
    + parse("ins", ins) + bind("ins", "50", "piped") + execute
    + bind("ins", "51", "piped") + execute + sync,
    # An error ends the implicit transaction: 52 is undone, 53 never runs.
    bind("ins", "52", "piped") + execute
    + parse("", "SELECT 1/0") + bind("") + execute
    + bind("ins", "53", "piped") + execute + sync,
    # A denied statement in the middle of a pipeline: same, with the gate's error.
    bind("ins", "60", "piped") + execute
    + parse("", "TRUNCATE accounts") + bind("") + execute
    + bind("ins", "61", "piped") + execute + sync,
    parse("", "SELECT string_agg(id::text, ',' ORDER BY id) FROM accounts WHERE owner = 'piped'")
    + bind("") + execute + sync,
]
s.sendall(b"".join(batches))
for _ in batches:
    print(batch())
s.sendall(msg(b"X", b""))
"#;

#[test]
fn pipelined_extended_protocol_batches_keep_their_semantics() {
    let Some(s) = setup("pgc-raw-pipeline") else {
        return;
    };
    let out = python(&s, &format!("{RAW_CLIENT}{RAW_PIPELINE}"));
    let stdout = ok(&s, "raw pipeline", &out);
    let got = lines(&stdout);
    assert_eq!(got.len(), 4, "{stdout}");
    assert_eq!(
        got[0],
        "1 2 D:42 C:SELECT 1 1 2 C:INSERT 0 1 2 C:INSERT 0 1 Z:I"
    );
    // `1/0` of constants fails when the server plans it, at Bind.
    assert_eq!(got[1], "2 C:INSERT 0 1 1 E:22012 Z:I");
    // How a denial shows up before its error is the proxy's business; what counts:
    // the gate's 42501, nothing run after it, the batch's insert undone.
    assert!(
        got[2].starts_with("2 C:INSERT 0 1 ") && got[2].ends_with(" E:42501 Z:I"),
        "{stdout}\n{}",
        s.d.log()
    );
    assert_eq!(got[3], "1 2 D:50,51 C:SELECT 1 Z:I");
    assert_eq!(
        s.direct(
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM accounts WHERE owner = 'piped'"
        ),
        "50,51"
    );
    assert_eq!(s.direct("SELECT count(*) FROM accounts"), "12");
}
