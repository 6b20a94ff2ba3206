//! Issue 19 (HTTP): `kill -9` while 32 keep-alive clients send requests through the
//! daemon to a real nginx loses the record of no response a client received, and no
//! request reaches nginx directly while the daemon is down; after a restart the
//! clients run on and `audit verify` passes. The HTTP twin of `crash.rs`'s
//! PostgreSQL test.
//!
//! Every request is numbered in its path (`/n/CLIENT/COUNT`; query values are
//! masked in records, paths are not), so each response a client received can be
//! looked up among the recorded `http` events. nginx logs each request with the
//! `Authorization` header it came with: the daemon injects the target's token, the
//! clients hold none, so a logged request without the token went around the daemon.
#![expect(
    clippy::panic,
    clippy::indexing_slicing,
    reason = "root tests panic with a message"
)]

use portcullis_tests::{
    cgroup::{TestCgroup, can_run_ebpf_tests},
    crashkit::{client_script, parse_report, wait_received},
    daemon::TestDaemon,
    http::{IP, NOBODY},
    net::free_port,
};
use serde_json::Value;
use std::{
    collections::HashSet,
    io::{BufReader, Read as _},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Keep-alive clients sending requests when the daemon is killed.
const CLIENTS: usize = 32;
/// Responses received before the kill, and again after the restart.
const RESPONSES: u64 = 500;
/// The token the daemon injects; nginx's log shows it on every request it forwarded.
const TOKEN: &str = "tok-crash-7Qx";

/// `N HOST PORT`: N threads each keep one HTTP/1.1 connection (`http.client`,
/// reopened when refused or cut off) and send `GET /n/I/J`, J counting up, until
/// stdin closes, printing the count of responses received so far every 0.2 s; then
/// prints `{"received": [[i, j]…], "refused": …, "cut": …, "other": […],
/// "connects": …}`: every request whose whole response came back, and the requests
/// that failed: connects refused, connects or requests cut off (by the crash), or
/// otherwise.
const CLIENTS_PY: &str = r#"
import http.client, json, socket, sys, threading, time
n, host, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
stop = threading.Event()
lock = threading.Lock()
received, refused, cut, other, connects = [], [0], [0], [], [0]
CUT = (http.client.RemoteDisconnected, http.client.IncompleteRead, ConnectionResetError,
       BrokenPipeError, ConnectionAbortedError)
def run(i):
    j = 0
    while not stop.is_set():
        c = http.client.HTTPConnection(host, port, timeout=10)
        try:
            c.connect()
        except ConnectionRefusedError:
            with lock:
                refused[0] += 1
            time.sleep(0.05)
            continue
        except (ConnectionResetError, ConnectionAbortedError):
            # Accepted in the kernel, then reset as the killed daemon's socket closed.
            with lock:
                cut[0] += 1
            continue
        except OSError as e:
            with lock:
                if len(other) < 20:
                    other.append("connect: " + repr(e))
            time.sleep(0.05)
            continue
        with lock:
            connects[0] += 1
        try:
            while not stop.is_set():
                c.request("GET", "/n/%d/%d" % (i, j))
                r = c.getresponse()
                body = r.read()
                if r.status == 200 and body == b"ok\n":
                    with lock:
                        received.append((i, j))
                elif len(other) < 20:
                    with lock:
                        other.append("%d %r" % (r.status, body[:200]))
                j += 1
        except CUT:
            with lock:
                cut[0] += 1
            j += 1
        except OSError as e:
            with lock:
                if len(other) < 20:
                    other.append(repr(e))
            j += 1
        c.close()
"#;

/// nginx on `IP:port`, answering `ok` to every request and logging each one's URI
/// with the `Authorization` header it came with.
struct Nginx {
    dir: tempfile::TempDir,
    child: Child,
}

impl Nginx {
    fn start(port: u16) -> Nginx {
        let dir = tempfile::Builder::new()
            .prefix("pc-http-crash-")
            .tempdir()
            .unwrap_or_else(|e| panic!("{e}"));
        let d = dir.path().display();
        let conf = format!(
            "daemon off;
user root;
worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format crash '$request_uri|$http_authorization';
    access_log {d}/access.log crash;
    client_body_temp_path {d}/body;
    keepalive_requests 1000000;
    server {{
        listen {IP}:{port};
        location / {{
            default_type text/plain;
            return 200 'ok\\n';
        }}
    }}
}}
"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new("/usr/sbin/nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nginx: {e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect((IP, port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx does not listen on {IP}:{port}: {}",
                std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx { dir, child }
    }

    fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // nginx's master stops its workers on SIGTERM (SIGKILL would orphan them).
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: plain kill(2) on our own child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let _ = self.child.wait();
    }
}

#[test]
fn kill_9_under_32_keep_alive_clients_loses_no_received_response_and_nothing_goes_direct() {
    if !can_run_ebpf_tests("http-crash") {
        return;
    }
    if !Path::new("/usr/sbin/nginx").exists() {
        eprintln!("SKIP: /usr/sbin/nginx missing (cargo xtask setup installs nginx-light)");
        return;
    }
    let port = free_port(IP).unwrap_or_else(|e| panic!("{e}"));
    let nginx = Nginx::start(port);
    let token = nginx.dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap_or_else(|e| panic!("{e}"));
    let policy = format!(
        "[[target]]\nname = \"web\"\nprotocol = \"http\"\naddress = \"{IP}:{port}\"\n\
         credentials = {{ header = \"Authorization\", value_file = \"{}\", prefix = \"Bearer \" }}\n\n\
         [[rule]]\nname = \"all\"\ntargets = [\"web\"]\naction = \"allow\"\n",
        token.display()
    );
    let cg = TestCgroup::new("http-crash").unwrap_or_else(|e| panic!("{e}"));
    let mut d =
        TestDaemon::start("http-crash", &cg, &policy, "").unwrap_or_else(|e| panic!("{e:#}"));
    let n = CLIENTS.to_string();
    let port_arg = port.to_string();
    let mut clients = cg
        .command(
            Some(NOBODY),
            &[
                "/usr/bin/python3",
                "-c",
                &client_script(CLIENTS_PY),
                &n,
                IP,
                &port_arg,
            ],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut progress = BufReader::new(clients.stdout.take().unwrap_or_else(|| panic!("no stdout")));
    let logs = |d: &TestDaemon| format!("daemon log:\n{}", d.log());

    // Killed while the requests flow, restarted, and run on until as many more have
    // been answered again.
    let before = wait_received(&mut progress, RESPONSES, &|| logs(&d));
    d.kill9();
    // Down: every connect meets the pinned redirect to a port nobody listens on.
    std::thread::sleep(Duration::from_secs(2));
    d.spawn()
        .unwrap_or_else(|e| panic!("the daemon does not start again after a crash: {e:#}"));
    wait_received(&mut progress, before + RESPONSES, &|| logs(&d));
    drop(clients.stdin.take());
    let mut rest = String::new();
    progress
        .read_to_string(&mut rest)
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = clients.wait();
    let (report, received) = parse_report(&rest);
    let recorded = recorded_paths(&d);
    let missing: Vec<&(u64, u64)> = received
        .iter()
        .filter(|(i, j)| !recorded.contains(&format!("/n/{i}/{j}")))
        .collect();
    let log = nginx.access_log();
    println!(
        "kill -9 under {CLIENTS} keep-alive clients: {} responses received, {} requests \
         recorded, {} reached nginx, {} connects refused while down, {} requests cut off \
         by the crash, {} connects",
        received.len(),
        recorded.len(),
        log.lines().count(),
        report["refused"],
        report["cut"],
        report["connects"]
    );
    assert!(
        missing.is_empty(),
        "{} responses a client received are not recorded, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_all_forwarded(&log, received.len());
    assert!(
        report["refused"].as_u64().unwrap_or(0) > 0,
        "no connect was tried while the daemon was down: {report}"
    );
    assert_eq!(
        report["other"],
        Value::Array(Vec::new()),
        "{report}\n{}",
        d.log()
    );
    let verify = d.cli(&["audit", "verify"]);
    assert!(
        verify.status.success(),
        "audit verify after a crash under load: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// Every request in nginx's `log` came with the daemon's token (none went around
/// it), and there are at least as many as the clients received responses.
fn assert_all_forwarded(log: &str, received: usize) {
    let direct: Vec<&str> = log
        .lines()
        .filter(|l| !l.ends_with(&format!("|Bearer {TOKEN}")))
        .collect();
    assert!(
        direct.is_empty(),
        "{} requests reached nginx without the daemon's token, e.g. {:?}",
        direct.len(),
        &direct[..direct.len().min(5)]
    );
    assert!(
        log.lines().count() >= received,
        "nginx logged fewer requests than the clients received responses"
    );
}

/// The path of every `http` event of every session.
fn recorded_paths(d: &TestDaemon) -> HashSet<String> {
    let sessions = d.sessions().unwrap_or_else(|e| panic!("{e:#}"));
    let mut paths = HashSet::new();
    for id in sessions
        .iter()
        .filter(|x| x["target"] == "web")
        .filter_map(|x| x["id"].as_str())
    {
        let out = d.cli(&["sessions", "replay", id, "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        for e in v["events"].as_array().into_iter().flatten() {
            if e["kind"] == "http"
                && let Some(path) = e["details"]["path"].as_str()
            {
                paths.insert(path.to_owned());
            }
        }
    }
    paths
}
