//! Issue 17 (one event log): what a crash keeps. The daemon is killed with SIGKILL in
//! the middle of a PostgreSQL session; the statements the recorder had committed are
//! still there after a restart, readable as events, and `audit verify` still passes
//! (a session cut off by a crash has no `session_closed` record to check against).
//!
//! Issue 21: the HTTPS CA a killed daemon left in the trust store is swept by the
//! next daemon's start, while a running daemon's stays.
#![expect(
    clippy::panic,
    clippy::indexing_slicing,
    reason = "root tests panic with a message"
)]

use portcullis_tests::{
    cgroup::{TestCgroup, can_run_ebpf_tests},
    daemon::TestDaemon,
    pgproxy::setup,
};
use serde_json::Value;
use std::{
    io::Write as _,
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
    let start =
        |name: &str| TestDaemon::start(name, &cg, "", &extra).unwrap_or_else(|e| panic!("{e:#}"));
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
    assert_eq!(trusted(trust.path()), Vec::<String>::new());
    drop(killed);
}
