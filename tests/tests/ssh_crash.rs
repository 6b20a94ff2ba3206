//! Issue 18 (SSH): results wait for their records. `kill -9` of the daemon while
//! 20 OpenSSH clients run `ssh box 'echo I-J'` execs in a loop through it loses
//! the record of no exec whose result (its output and exit status 0) a client
//! received; while the daemon is down every connect is refused (the pinned
//! redirect) and none reaches the real sshd directly; after a restart the clients
//! run on, and `audit verify` passes over the crashed sessions.
#![expect(
    clippy::panic,
    clippy::indexing_slicing,
    reason = "root tests panic with a message"
)]

use portcullis_tests::sshproxy::{NOBODY, Setup, setup, text};
use std::{
    collections::HashSet,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

/// Clients running execs at once.
const CLIENTS: usize = 20;
/// Results received before the kill, and again after the restart.
const RESULTS: usize = 60;

/// The connection allowed (execs with it): no holds, every exec runs.
const RULES: &str = r#"
[[rule]]
name = "connect"
targets = ["box"]
action = "allow"
"#;

/// What the clients saw, shared by their threads.
#[derive(Default)]
struct Seen {
    /// `I-J` of every exec whose output came back with exit status 0.
    received: Vec<String>,
    /// Connects refused (the daemon was down).
    refused: usize,
    /// Execs cut off (by the crash) or failed otherwise, with a few of the reasons.
    failed: usize,
    reasons: Vec<String>,
}

#[test]
fn kill_9_under_20_exec_clients_loses_no_received_result_and_nothing_goes_direct() {
    let Some(mut s) = setup("ssh-crash", "127.0.0.121", RULES) else {
        return;
    };
    let seen = Mutex::new(Seen::default());
    let stop = AtomicBool::new(false);
    let host = s.sshd.addr.ip().to_string();
    let cg = &s.cg;
    std::thread::scope(|scope| {
        for i in 0..CLIENTS {
            let (seen, stop, host) = (&seen, &stop, host.as_str());
            scope.spawn(move || run_client(cg, host, i, seen, stop));
        }
        let count = || {
            seen.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .received
                .len()
        };
        let logs = |d: &portcullis_tests::daemon::TestDaemon| {
            format!("daemon log:\n{}\nsshd log:\n{}", d.log(), s.sshd.log())
        };
        wait_for(|| count() >= RESULTS, || logs(&s.d));
        let before = count();
        s.d.kill9();
        // Down: every connect meets the pinned redirect to a port nobody listens on.
        std::thread::sleep(Duration::from_secs(2));
        s.d.spawn()
            .unwrap_or_else(|e| panic!("the daemon does not start again after a crash: {e:#}"));
        wait_for(|| count() >= before + RESULTS, || logs(&s.d));
        stop.store(true, Ordering::Relaxed);
    });
    let seen = seen.into_inner().unwrap_or_else(PoisonError::into_inner);
    check(&s, &seen);
}

/// One client: `ssh box 'echo I-J'` with J counting up, until `stop`.
fn run_client(
    cg: &portcullis_tests::cgroup::TestCgroup,
    host: &str,
    i: usize,
    seen: &Mutex<Seen>,
    stop: &AtomicBool,
) {
    let mut j = 0;
    while !stop.load(Ordering::Relaxed) {
        let tag = format!("{i}-{j}");
        j += 1;
        let echo = format!("echo {tag}");
        let argv = [
            "/usr/bin/ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            host,
            echo.as_str(),
        ];
        let out = cg
            .command(Some(NOBODY), &argv)
            .current_dir("/tmp")
            .output()
            .unwrap_or_else(|e| panic!("cannot run ssh: {e}"));
        let (stdout, stderr) = text(&out);
        let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
        if out.status.success() && stdout.trim() == tag {
            seen.received.push(tag);
        } else if stderr.contains("Connection refused") {
            seen.refused += 1;
        } else {
            seen.failed += 1;
            if seen.reasons.len() < 10 {
                seen.reasons
                    .push(format!("{}: {}", out.status, stderr.trim()));
            }
        }
        drop(seen);
        if !out.status.success() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Waits (up to 120 s) until `done`.
fn wait_for(done: impl Fn() -> bool, logs: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_mins(2);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "the clients did not get their results in 120 s; {}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every received result is recorded, the down time was seen, nothing went direct,
/// and the log verifies.
fn check(s: &Setup, seen: &Seen) {
    let recorded = recorded_execs(s);
    let missing: Vec<&String> = seen
        .received
        .iter()
        .filter(|tag| !recorded.contains(&format!("exec: echo {tag}")))
        .collect();
    println!(
        "kill -9 under {CLIENTS} exec clients: {} results received, {} execs recorded, \
         {} connects refused while down, {} execs cut off or failed",
        seen.received.len(),
        recorded.len(),
        seen.refused,
        seen.failed
    );
    assert!(
        missing.is_empty(),
        "{} exec results a client received are not recorded, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(
        seen.refused > 0,
        "no connect was tried while the daemon was down (failures: {:?})",
        seen.reasons
    );
    // The clients run as `nobody`; the proxy logs in as `root`. A connect that went
    // around the proxy would reach sshd as `nobody`.
    let sshd_log = s.sshd.log();
    assert!(
        !sshd_log.contains("nobody"),
        "a client reached sshd directly:\n{sshd_log}"
    );
    assert!(
        sshd_log.contains("Accepted publickey for root"),
        "the proxy's logins are not in sshd's log (is LogLevel VERBOSE?):\n{sshd_log}"
    );
    let verify = s.d.cli(&["audit", "verify"]);
    assert!(
        verify.status.success(),
        "audit verify after a crash under load: {:?}",
        text(&verify)
    );
}

/// The summaries of the `exec` events of every ssh session, allowed and exited 0.
fn recorded_execs(s: &Setup) -> HashSet<String> {
    let sessions = s.d.sessions().unwrap_or_else(|e| panic!("{e:#}"));
    sessions
        .iter()
        .filter(|x| x["protocol"] == "ssh")
        .filter_map(|x| x["id"].as_str())
        .flat_map(|id| s.events_of(id))
        .filter(|e| e["kind"] == "exec" && e["verdict"] == "allowed" && e["exit_status"] == 0)
        .filter_map(|e| e["summary"].as_str().map(str::to_owned))
        .collect()
}
