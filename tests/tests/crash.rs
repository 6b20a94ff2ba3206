//! Issue 17 (one event log): what a crash keeps. The daemon is killed with SIGKILL in
//! the middle of a PostgreSQL session; the statements the recorder had committed are
//! still there after a restart, readable as events, and `audit verify` still passes
//! (a session cut off by a crash has no `session_closed` record to check against).
//!
//! Issue 21: `kill -9` while 50 sessions run statements loses the record of no
//! result a client received, and no connect goes direct while the daemon is down;
//! the HTTPS CA a killed daemon left in the trust store is swept by the next
//! daemon's start, while a running daemon's stays.
#![expect(
    clippy::panic,
    clippy::indexing_slicing,
    reason = "root tests panic with a message"
)]

use portcullis_tests::{
    cgroup::{TestCgroup, can_run_ebpf_tests},
    crashkit::{client_script, parse_report, wait_received},
    daemon::TestDaemon,
    pgproxy::{Setup, setup, text},
};
use serde_json::Value;
use std::{
    collections::HashSet,
    io::{BufReader, Read as _, Write as _},
    process::Stdio,
    time::{Duration, Instant},
};

/// How many statements the session runs before the crash.
const STATEMENTS: usize = 20;

#[test]
fn kill_9_mid_session_keeps_what_was_recorded_and_the_log_verifies() {
    let Some(mut s) = setup("pg-crash") else {
        return;
    };
    let mut psql = s
        .psql_command(&[])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start psql: {e}"));
    let mut input = psql.stdin.take().unwrap_or_else(|| panic!("no stdin"));
    for i in 0..STATEMENTS {
        writeln!(input, "SELECT {i} AS n;").unwrap_or_else(|e| panic!("psql stdin: {e}"));
    }
    input.flush().unwrap_or_else(|e| panic!("psql stdin: {e}"));

    // The session stays open (psql waits for more input) while its events are read.
    let id = open_session(&s.d);
    let deadline = Instant::now() + Duration::from_secs(20);
    while events(&s.d, &id).len() < STATEMENTS {
        assert!(
            Instant::now() < deadline,
            "the statements were not recorded while the session was open; log:\n{}",
            s.d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    s.d.kill9();
    drop(input);
    let _ = psql.wait();
    s.d.spawn()
        .unwrap_or_else(|e| panic!("the daemon does not start again after a crash: {e:#}"));

    let recorded = events(&s.d, &id);
    assert_eq!(recorded.len(), STATEMENTS, "{recorded:#?}");
    for (i, event) in recorded.iter().enumerate() {
        assert_eq!(event["kind"], "sql");
        assert_eq!(event["summary"], format!("SELECT {i} AS n;"));
        assert_eq!(event["verdict"], "allowed");
    }
    let verify = s.d.cli(&["audit", "verify"]);
    assert!(
        verify.status.success(),
        "audit verify after a crash: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// The id of the postgres session that is open now.
fn open_session(d: &portcullis_tests::daemon::TestDaemon) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let sessions = d.sessions().unwrap_or_default();
        if let Some(id) = sessions
            .iter()
            .find(|s| s["protocol"] == "postgres" && s["ended_at"].is_null())
            .and_then(|s| s["id"].as_str())
        {
            return id.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no open session; log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The events recorded so far for session `id`.
fn events(d: &portcullis_tests::daemon::TestDaemon, id: &str) -> Vec<Value> {
    let out = d.cli(&["sessions", "replay", id, "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v["events"].as_array().cloned().unwrap_or_default()
}

/// Sessions served on worker runtimes (`session_workers = 2`) are decided, answered
/// and recorded as on the main runtime, and the daemon stops cleanly with them.
#[test]
fn sessions_on_worker_runtimes_behave_the_same() {
    let Some(mut s) = portcullis_tests::pgproxy::setup_with_workers("pg-workers", 2) else {
        return;
    };
    for _ in 0..4 {
        let out = s.psql(&["-c", "SELECT count(*) FROM accounts"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "10");
    }
    let out = s.psql(&["-c", "TRUNCATE accounts"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("Portcullis denied this statement"),
        "{stderr}"
    );
    let log = plain(&s.d.log());
    assert!(
        log.contains("session_workers=2"),
        "the daemon did not start its workers: {log}"
    );
    // The last close is recorded just after psql exits: wait for it, bounded.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let sessions = s.d.sessions().unwrap_or_else(|e| panic!("{e:#}"));
        let recorded = sessions
            .iter()
            .filter(|x| x["protocol"] == "postgres" && !x["ended_at"].is_null())
            .count();
        if recorded == 5 {
            break;
        }
        assert!(Instant::now() < deadline, "{sessions:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let stopped = s.d.stop().unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        stopped.success(),
        "the daemon did not stop cleanly: {stopped}"
    );
}

/// `text` without its terminal colour codes (`ESC [ … m`).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The Portcullis CA files in `trust` (certificates only).
fn trusted(trust: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(trust)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("portcullis-http-ca-") && n.ends_with(".crt"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_killed_daemons_https_ca_is_swept_at_the_next_start_a_running_ones_kept() {
    if !can_run_ebpf_tests("ca-sweep") {
        return;
    }
    let trust = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let extra = format!("[http]\ntrust_dir = \"{}\"\n", trust.path().display());
    let cg = TestCgroup::new("ca-sweep").unwrap_or_else(|e| panic!("{e}"));
    // An `https` target is what makes a daemon put its CA into the trust store.
    let https = "[[target]]\nname = \"api\"\nprotocol = \"https\"\naddress = \"127.0.0.1:1\"\n";
    let start_with = |name: &str, policy: &str| {
        TestDaemon::start(name, &cg, policy, &extra).unwrap_or_else(|e| panic!("{e:#}"))
    };
    let start = |name: &str| start_with(name, https);
    let no_https = start_with("ca-none", "");
    assert_eq!(
        trusted(trust.path()),
        Vec::<String>::new(),
        "a daemon without https targets left the trust store alone"
    );
    let mut killed = start("ca-killed");
    let running = start("ca-running");
    let ca = |d: &TestDaemon| {
        std::fs::read_to_string(d.dir().join("state/http-ca.crt"))
            .unwrap_or_else(|e| panic!("the daemon made no CA: {e}"))
    };
    let (killed_ca, running_ca) = (ca(&killed), ca(&running));
    assert_eq!(
        trusted(trust.path()).len(),
        2,
        "each daemon trusts its own CA"
    );
    killed.kill9();
    let next = start("ca-next");
    let after = trusted(trust.path());
    let contents: Vec<String> = after
        .iter()
        .map(|n| std::fs::read_to_string(trust.path().join(n)).unwrap_or_default())
        .collect();
    assert_eq!(contents.len(), 2, "{after:?}");
    assert!(
        !contents.contains(&killed_ca),
        "the killed daemon's CA stayed"
    );
    assert!(
        contents.contains(&running_ca),
        "the running daemon's CA went"
    );
    assert!(
        contents.contains(&ca(&next)),
        "the new daemon's CA is missing"
    );
    assert!(
        next.log().contains("Removed a stale HTTPS CA"),
        "{}",
        next.log()
    );
    // A daemon that stops cleanly keeps its CA (it comes back on the same one)
    // until `daemon --release`, which the test daemons' drop runs.
    drop(running);
    drop(next);
    drop(no_https);
    assert_eq!(trusted(trust.path()), Vec::<String>::new());
    drop(killed);
}

/// Sessions running statements when the daemon is killed.
const CRASH_SESSIONS: usize = 50;

/// `N HOST PORT`: N threads each connect through the redirect (again and again when
/// refused or cut off) and run `SELECT i AS c, j AS s` with j counting up, until
/// stdin closes, printing the count of results received so far every 0.2 s; then
/// prints `{"received": [[i, j]…], "refused": …, "cut": …,
/// "other": […]}`: every statement whose result came back, and the connects that
/// failed: refused, cut off (by the crash, mid-handshake), or otherwise.
const CRASH_CLIENTS: &str = r#"
import json, sys, threading, time, psycopg2
n, host, port = int(sys.argv[1]), sys.argv[2], sys.argv[3]
stop = threading.Event()
lock = threading.Lock()
received, refused, cut, other, connects = [], [0], [0], [], [0]
def run(i):
    j = 0
    while not stop.is_set():
        try:
            c = psycopg2.connect(host=host, port=port, dbname="app", user="whoever",
                                 sslmode="disable", connect_timeout=10)
        except psycopg2.OperationalError as e:
            with lock:
                if "refused" in str(e):
                    refused[0] += 1
                elif "closed the connection unexpectedly" in str(e):
                    cut[0] += 1
                elif len(other) < 20:
                    other.append(repr(e))
            time.sleep(0.05)
            continue
        with lock:
            connects[0] += 1
        c.autocommit = True
        try:
            cur = c.cursor()
            while not stop.is_set():
                cur.execute("SELECT %d AS c, %d AS s" % (i, j))
                if cur.fetchone() == (i, j):
                    with lock:
                        received.append((i, j))
                j += 1
        except psycopg2.Error:
            j += 1
        try:
            c.close()
        except psycopg2.Error:
            pass
"#;

#[test]
fn kill_9_under_50_sessions_loses_no_received_result_and_nothing_goes_direct() {
    let Some(mut s) = setup("crash-50") else {
        return;
    };
    // Every connection the server accepts is logged: a client's own login (user
    // `whoever`, which trust would admit) would be a connect that went direct.
    s.pg.restart_with(&format!(
        "max_connections = {}\nlog_connections = on",
        CRASH_SESSIONS * 2 + 20
    ))
    .unwrap_or_else(|e| panic!("{e:#}"));
    let (host, port) = (s.pg.host().to_string(), s.pg.port().to_string());
    let n = CRASH_SESSIONS.to_string();
    let mut clients = s
        .client_command(&[
            "/usr/bin/python3",
            "-c",
            &client_script(CRASH_CLIENTS),
            &n,
            &host,
            &port,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut progress = BufReader::new(clients.stdout.take().unwrap_or_else(|| panic!("no stdout")));
    // Killed while the statements flow, restarted, and run on until as many more
    // have flowed again.
    let before = wait_received(&mut progress, 500, &|| logs(&s));
    s.d.kill9();
    // Down: every connect meets the pinned redirect to a port nobody listens on.
    std::thread::sleep(Duration::from_secs(2));
    s.d.spawn()
        .unwrap_or_else(|e| panic!("the daemon does not start again after a crash: {e:#}"));
    wait_received(&mut progress, before + 500, &|| logs(&s));
    drop(clients.stdin.take());
    let mut rest = String::new();
    progress
        .read_to_string(&mut rest)
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = clients.wait();
    let (report, received) = parse_report(&rest);
    let recorded = recorded_statements(&s.d);
    let missing: Vec<&(u64, u64)> = received
        .iter()
        .filter(|(c, n)| !recorded.contains(&format!("SELECT {c} AS c, {n} AS s")))
        .collect();
    println!(
        "kill -9 under {CRASH_SESSIONS} sessions: {} results received, {} statements \
         recorded, {} connects refused while down, {} cut off by the crash, {} connects",
        received.len(),
        recorded.len(),
        report["refused"],
        report["cut"],
        report["connects"]
    );
    assert!(
        missing.is_empty(),
        "{} results a client received are not recorded, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(
        report["refused"].as_u64().unwrap_or(0) > 0,
        "no connect was tried while the daemon was down: {report}"
    );
    assert_eq!(
        report["other"],
        Value::Array(Vec::new()),
        "{report}\n{}",
        s.d.log()
    );
    let pg_log = s.pg.log();
    assert!(
        !pg_log.contains("user=whoever"),
        "a client reached the server directly:\n{pg_log}"
    );
    let verify = s.d.cli(&["audit", "verify"]);
    assert!(
        verify.status.success(),
        "audit verify after a crash under load: {:?}",
        text(&verify)
    );
}

/// The daemon's and the server's logs, for a failure message.
fn logs(s: &Setup) -> String {
    format!("daemon log:\n{}\nserver log:\n{}", s.d.log(), s.pg.log())
}

/// The text of every `sql` event of every postgres session.
fn recorded_statements(d: &TestDaemon) -> HashSet<String> {
    let sessions = d.sessions().unwrap_or_else(|e| panic!("{e:#}"));
    sessions
        .iter()
        .filter(|x| x["protocol"] == "postgres")
        .filter_map(|x| x["id"].as_str())
        .flat_map(|id| events(d, id))
        .filter(|e| e["kind"] == "sql")
        .filter_map(|e| e["summary"].as_str().map(str::to_owned))
        .collect()
}
