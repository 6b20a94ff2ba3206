//! The SSH command-line splitter as the daemon runs it: each line goes to a bounded
//! parse worker (`proto::ssh::command::pool`), here this fuzz binary re-executed as
//! the worker. Properties: nothing in this process panics or grows, whatever the
//! parser does in its worker (a worker that panics, spins or allocates without bound
//! is killed and the line is `Unparsed`); the answer is bounded (at most 256 simple
//! commands, none longer than twice the line: words of the line with quotes
//! removed, joined by spaces); two answers that both split agree. This is what CI
//! fuzzes: brush-parser's own blowups (issue 18) are contained, not failures.
//!
//! `SSH_COMMAND_IN_PROCESS=1` fuzzes the raw parse (`split_unbounded`) in this
//! process instead, with coverage: that finds new brush-parser blowups to report
//! upstream or to guard against (`command/guards.rs`), and it is not for CI.
#![no_main]

use portcullis::proto::ssh::command::{
    MAX_LINE, Split,
    pool::{Limits, Splitter, WorkerCommand},
    split_unbounded, worker,
};
use std::sync::OnceLock;

/// Set in the environment of this binary run as the parse worker.
const AS_WORKER: &str = "PORTCULLIS_FUZZ_SPLIT_WORKER";

fn in_process() -> bool {
    static IN_PROCESS: OnceLock<bool> = OnceLock::new();
    *IN_PROCESS.get_or_init(|| std::env::var_os("SSH_COMMAND_IN_PROCESS").is_some())
}

fn pool() -> &'static Splitter {
    static POOL: OnceLock<Splitter> = OnceLock::new();
    POOL.get_or_init(|| {
        let this = std::env::current_exe().expect("the fuzz binary's path");
        // A line takes well under a millisecond here (a release build); a short
        // deadline keeps the many inputs that make the parser spin from slowing
        // the run. A line that misses it is unparsed, which every property allows.
        let limits = Limits {
            workers: 1,
            deadline: std::time::Duration::from_millis(300),
            ..Limits::default()
        };
        Splitter::new(WorkerCommand::new(this).env(AS_WORKER, "1"), limits)
    })
}

libfuzzer_sys::fuzz_target!(
    init: {
        if std::env::var_os(AS_WORKER).is_some() {
            let ok = worker::serve() == std::process::ExitCode::SUCCESS;
            std::process::exit(i32::from(!ok));
        }
        // brush-parser panics on some hostile lines; `split_unbounded` catches those
        // and answers `Unparsed`. libfuzzer-sys's hook aborts on any panic, caught or
        // not, so it is swapped for the default one (which only prints): a panic that
        // escapes still reaches libfuzzer-sys's own catch and aborts.
        drop(std::panic::take_hook());
    },
    |data: &[u8]| {
        let Ok(line) = std::str::from_utf8(data) else {
            return;
        };
        let split = |line: &str| {
            if in_process() {
                split_unbounded(line)
            } else {
                pool().split(line)
            }
        };
        let first = split(line);
        let second = split(line);
        if let (Split::Commands(a), Split::Commands(b)) = (&first, &second) {
            assert_eq!(a, b, "split is not deterministic for {line:?}");
        }
        if line.len() > MAX_LINE {
            assert_eq!(first, Split::Unparsed);
        }
        if let Split::Commands(commands) = first {
            assert!(commands.len() <= 256, "{} commands", commands.len());
            for c in &commands {
                assert!(
                    c.len() <= 2 * line.len(),
                    "a command longer than its line: {c:?} from {line:?}"
                );
            }
        }
    }
);
