//! What the `kill -9` tests share (`tests/tests/{crash,http_crash}.rs`): Python client
//! scripts print how many results they have received, one count per line, and a JSON
//! report last; the test reads the counts to time its kill and restart, then checks
//! the report against what was recorded.

#![expect(
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers fail the test with a message"
)]

use serde_json::Value;

/// The end every client script shares: it starts `n` threads of the script's
/// `run(i)`, prints `len(received)` every 0.2 s until standard input closes (the
/// test's signal to stop), then the JSON report of the script's `received`,
/// `refused`, `cut`, `other` and `connects` (guarded by `lock`, ended by `stop`).
const DRIVER_PY: &str = r#"def until_stdin_closes():
    sys.stdin.read()
    stop.set()
threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
for t in threads: t.start()
threading.Thread(target=until_stdin_closes, daemon=True).start()
while not stop.wait(0.2):
    with lock:
        k = len(received)
    print(k, flush=True)
for t in threads: t.join()
print(json.dumps({"received": received, "refused": refused[0], "cut": cut[0], "other": other,
                  "connects": connects[0]}))
"#;

/// A whole client script: `clients` (imports, state, `run(i)`) then the shared
/// driver ([`DRIVER_PY`]).
#[must_use]
pub fn client_script(clients: &str) -> String {
    format!("{clients}{DRIVER_PY}")
}
use std::{
    io::BufRead,
    time::{Duration, Instant},
};

/// Reads the clients' progress lines until they have received `n` results (at most
/// a minute); returns the count reached. `logs` says what the daemon and servers
/// logged, for the failure message.
///
/// # Panics
/// When the clients stop early or take longer than a minute.
pub fn wait_received(progress: &mut impl BufRead, n: u64, logs: &dyn Fn() -> String) -> u64 {
    let deadline = Instant::now() + Duration::from_mins(1);
    let mut line = String::new();
    loop {
        line.clear();
        let read = progress.read_line(&mut line).unwrap_or(0);
        assert!(read > 0, "the clients stopped early; {}", logs());
        let count: u64 = line.trim().parse().unwrap_or(0);
        if count >= n {
            return count;
        }
        assert!(
            Instant::now() < deadline,
            "the clients received {count} results of {n} in 60 s; {}",
            logs()
        );
    }
}

/// The clients' final report (the last line of `rest`), and its `received` pairs
/// `(client, count)`: what each client got back.
///
/// # Panics
/// When the last line is not a JSON report.
#[must_use]
pub fn parse_report(rest: &str) -> (Value, Vec<(u64, u64)>) {
    let report: Value = rest
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("the clients printed no report: {rest:?}"));
    let received = report["received"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| Some((p[0].as_u64()?, p[1].as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    (report, received)
}
