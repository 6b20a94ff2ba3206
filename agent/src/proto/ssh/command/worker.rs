//! The parse worker: the `portcullis` binary re-executed as
//! `portcullis __ssh-command-worker` by [`super::pool`]. It limits its own address
//! space ([`MEMORY_LIMIT`]) and, before each line, its CPU time ([`CPU_PER_LINE`]),
//! then answers one JSON line per request on stdout until stdin ends (the daemon
//! went away). A line that makes brush-parser grow past the memory limit aborts the
//! worker (an allocation failure); one that spins past the CPU limit gets `SIGXCPU`;
//! the pool sees either as the worker's end, and the line is `unparsed`.
//!
//! The worker writes nothing else: not to stderr (the pool discards it), so no
//! command line reaches a log.

use super::{MAX_LINE, Split, split_unbounded};
use nix::sys::resource::{Resource, UsageWho, getrusage, setrlimit};
use serde::{Deserialize, Serialize};
use std::{
    borrow::Cow,
    io::{BufRead, BufReader, Read, Write},
    process::ExitCode,
};

/// The first argument that makes the `portcullis` binary a parse worker. Not a
/// subcommand a person runs: `main` checks it before anything else starts.
pub const WORKER_ARG: &str = "__ssh-command-worker";

/// Address space the worker may add to what it has at start. A parse of the longest
/// line takes a few MiB; the blowups fuzzing found grow past 2 GiB. (The pool starts
/// it with `MIMALLOC_ARENA_RESERVE=0`, so the allocator holds no reserved but unused
/// gigabyte the limit would not see.)
pub const MEMORY_LIMIT: u64 = 512 * 1024 * 1024;
/// CPU seconds a line may use (the soft `RLIMIT_CPU`, moved before each line).
/// The pool's wall-clock deadline is the first bound; this one holds even when the
/// daemon is too busy to notice.
pub const CPU_PER_LINE: u64 = 2;
/// The largest request: a line of [`MAX_LINE`] bytes, each escaped as `\uXXXX`.
pub const MAX_REQUEST: usize = 6 * MAX_LINE + 64;

/// One line to split.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Request<'a> {
    pub id: u64,
    #[serde(borrow)]
    pub line: Cow<'a, str>,
}

/// Its simple commands, or `None`: unparsed.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Reply {
    pub id: u64,
    pub commands: Option<Vec<String>>,
}

/// Runs the worker until stdin ends; a failure to set its limits ends it at once
/// (the pool then answers `unparsed`: closed, not unbounded).
#[must_use]
pub fn serve() -> ExitCode {
    // A parser panic is caught and answered `unparsed`: nothing to print.
    std::panic::set_hook(Box::new(|_| {}));
    let Some(limit) = address_space().map(|size| size.saturating_add(MEMORY_LIMIT)) else {
        return ExitCode::FAILURE;
    };
    if setrlimit(Resource::RLIMIT_AS, limit, limit).is_err() {
        return ExitCode::FAILURE;
    }
    match answer_all(std::io::stdin().lock(), std::io::stdout().lock(), limit_cpu) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

/// Why the worker stops early.
#[derive(Debug, thiserror::Error)]
enum WorkerError {
    #[error("cannot read or answer a request: {0}")]
    Io(#[from] std::io::Error),
    #[error("a request is not one JSON line of at most {MAX_REQUEST} bytes")]
    BadRequest,
    #[error("cannot set the CPU limit: {0}")]
    Limit(#[from] nix::Error),
}

/// Answers each request of `input` on `output`, calling `before_each` (the CPU
/// limit) before parsing each line.
fn answer_all(
    input: impl Read,
    mut output: impl Write,
    mut before_each: impl FnMut() -> Result<(), WorkerError>,
) -> Result<(), WorkerError> {
    let mut input = BufReader::new(input);
    let mut request = Vec::new();
    loop {
        request.clear();
        let limit = u64::try_from(MAX_REQUEST).unwrap_or(u64::MAX);
        if (&mut input).take(limit).read_until(b'\n', &mut request)? == 0 {
            return Ok(());
        }
        let Request { id, line } =
            serde_json::from_slice(&request).map_err(|_| WorkerError::BadRequest)?;
        before_each()?;
        let commands = match split_unbounded(&line) {
            Split::Commands(c) => Some(c),
            Split::Unparsed => None,
        };
        serde_json::to_writer(&mut output, &Reply { id, commands })
            .map_err(std::io::Error::from)?;
        output.write_all(b"\n")?;
        output.flush()?;
    }
}

/// The process's address space now, in bytes (`VmSize` in `/proc/self/status`).
fn address_space() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmSize:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// Moves the soft CPU limit to [`CPU_PER_LINE`] seconds past what the worker has
/// used so far (the hard limit stays: it can only be lowered).
fn limit_cpu() -> Result<(), WorkerError> {
    let usage = getrusage(UsageWho::RUSAGE_SELF)?;
    let used = usage.user_time().tv_sec() + usage.system_time().tv_sec();
    let used = u64::try_from(used).unwrap_or(0);
    // One more second covers the fractions the seconds above leave out.
    let soft = used + CPU_PER_LINE + 1;
    let (_, hard) = nix::sys::resource::getrlimit(Resource::RLIMIT_CPU)?;
    setrlimit(Resource::RLIMIT_CPU, soft.min(hard), hard)?;
    Ok(())
}

#[cfg(test)]
#[expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
pub(super) mod tests {
    use super::*;

    /// The name of [`worker_process`] as libtest knows it, for the pool's tests.
    pub const ENTRY: &str = "proto::ssh::command::worker::tests::worker_process";
    /// Set in a test worker's environment: this "test" is the worker.
    pub const AS_WORKER: &str = "PORTCULLIS_TEST_SPLIT_WORKER";
    /// Set too: the worker hands lines to the raw parser, without the guards.
    pub const UNGUARDED: &str = "PORTCULLIS_TEST_SPLIT_UNGUARDED";

    /// Not a test: the unit tests' parse worker. The pool runs this test binary with
    /// only this test selected and [`AS_WORKER`] set (libtest's own lines on stdout
    /// are skipped by the pool as not being replies). Run plainly, it does nothing.
    #[test]
    fn worker_process() {
        if std::env::var_os(AS_WORKER).is_none() {
            return;
        }
        if std::env::var_os(UNGUARDED).is_some() {
            super::super::guards::UNGUARDED.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        std::process::exit(i32::from(serve() != ExitCode::SUCCESS));
    }

    #[test]
    fn answers_each_request_on_its_own_line() {
        let input = b"{\"id\":7,\"line\":\"ls; rm -rf /x\"}\n{\"id\":8,\"line\":\"echo 'x\"}\n";
        let mut output = Vec::new();
        answer_all(&input[..], &mut output, || Ok(())).unwrap();
        let text = String::from_utf8(output).unwrap();
        let replies: Vec<Reply> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(replies.len(), 2);
        assert_eq!(replies[0].id, 7);
        assert_eq!(
            replies[0].commands.as_deref(),
            Some(&["ls".to_owned(), "rm -rf /x".to_owned()][..])
        );
        assert_eq!((replies[1].id, replies[1].commands.is_none()), (8, true));
    }

    #[test]
    fn a_bad_request_ends_the_worker() {
        let mut output = Vec::new();
        assert!(answer_all(&b"not json\n"[..], &mut output, || Ok(())).is_err());
        assert!(output.is_empty());
    }
}
