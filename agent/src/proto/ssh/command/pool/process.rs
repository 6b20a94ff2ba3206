//! One parse worker process as the pool drives it: the command it runs
//! ([`WorkerCommand`]), its pipes, a thread reading its replies (each line at most
//! [`MAX_REPLY`] bytes), one request at a time with a deadline, and its end.

use super::super::{
    MAX_COMMANDS, MAX_LINE, Split,
    worker::{Reply, Request},
};
use std::{
    borrow::Cow,
    ffi::OsString,
    io::{BufRead, BufReader, Read, Write},
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// A reply line longer than this ends its worker (no real split comes near it).
const MAX_REPLY: usize = 16 * MAX_LINE;

/// mimalloc (the binary's allocator) reserves a gigabyte of address space up front
/// unless told not to: inside it the worker's memory limit would not bind.
const ALLOCATOR_RESERVE: (&str, &str) = ("MIMALLOC_ARENA_RESERVE", "0");

/// The program a worker runs, its arguments and its whole environment.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
}

impl WorkerCommand {
    /// `program` with no arguments and an empty environment.
    #[must_use]
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    #[must_use]
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    #[must_use]
    pub fn env(mut self, name: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// This binary, re-executed as a worker: `/proc/self/exe`, which still runs the
    /// daemon's own build after a package upgrade replaced the file on disk.
    #[must_use]
    #[cfg(not(test))]
    pub fn this_binary() -> Self {
        Self::new("/proc/self/exe")
            .arg(super::super::worker::WORKER_ARG)
            .env(ALLOCATOR_RESERVE.0, ALLOCATOR_RESERVE.1)
    }

    /// Under `cargo test` this binary is the unit-test binary: its worker is the
    /// test `worker::tests::worker_process`, selected alone.
    #[must_use]
    #[cfg(test)]
    pub fn this_binary() -> Self {
        use super::super::worker::tests::{AS_WORKER, ENTRY};
        Self::new("/proc/self/exe")
            .arg(ENTRY)
            .args(["--exact", "--nocapture", "--test-threads=1", "-q"])
            .env(AS_WORKER, "1")
            .env(ALLOCATOR_RESERVE.0, ALLOCATOR_RESERVE.1)
    }

    #[cfg(test)]
    fn args<const N: usize>(mut self, args: [&str; N]) -> Self {
        self.args.extend(args.into_iter().map(OsString::from));
        self
    }

    fn spawn(&self) -> std::io::Result<Child> {
        Command::new(&self.program)
            .args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
    }
}

/// How one request to a worker went.
pub(super) enum Answer {
    Split(Split),
    /// The request could not be written: the worker had already ended.
    NotSent,
    TimedOut,
    /// The worker ended (or wrote nonsense) before answering.
    Ended,
}

/// What the reader thread saw on a worker's stdout.
enum Reading {
    Line(Vec<u8>),
    /// A line longer than [`MAX_REPLY`]: the thread stops, the worker is ended.
    TooLong,
}

/// One worker process, its stdin, and the replies its reader thread passes on.
pub(super) struct Worker {
    child: Child,
    stdin: ChildStdin,
    replies: mpsc::Receiver<Reading>,
    /// Lines sent to it so far.
    pub(super) served: u32,
}

impl Worker {
    pub(super) fn start(command: &WorkerCommand) -> std::io::Result<Self> {
        let mut child = command.spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other("the worker has no pipes"));
        };
        let (send, replies) = mpsc::sync_channel(4);
        let reader = std::thread::Builder::new()
            .name("ssh-split-reader".into())
            .spawn(move || read_replies(stdout, &send));
        if let Err(error) = reader {
            let _ = child.kill();
            let _ = child.wait();
            return Err(error);
        }
        Ok(Self {
            child,
            stdin,
            replies,
            served: 0,
        })
    }

    /// Sends `line` and waits up to `deadline` for its reply; lines that are not
    /// its reply are skipped (a unit-test worker's libtest output).
    pub(super) fn ask(&mut self, id: u64, line: &str, deadline: Duration) -> Answer {
        let request = Request {
            id,
            line: Cow::Borrowed(line),
        };
        let Ok(mut bytes) = serde_json::to_vec(&request) else {
            return Answer::Split(Split::Unparsed);
        };
        bytes.push(b'\n');
        if self
            .stdin
            .write_all(&bytes)
            .and_then(|()| self.stdin.flush())
            .is_err()
        {
            return Answer::NotSent;
        }
        self.served += 1;
        let until = Instant::now() + deadline;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.replies.recv_timeout(left) {
                Ok(Reading::Line(reply)) => match serde_json::from_slice::<Reply>(&reply) {
                    Ok(reply) if reply.id == id => return Answer::Split(checked(reply)),
                    _ => {}
                },
                Ok(Reading::TooLong) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Answer::Ended;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => return Answer::TimedOut,
            }
        }
    }

    /// Kills (if still running) and reaps the worker; its exit status if known.
    pub(super) fn end(&mut self) -> Option<ExitStatus> {
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.end();
    }
}

/// A reply as a split; more commands than the splitter ever gives is unparsed.
fn checked(reply: Reply) -> Split {
    match reply.commands {
        Some(commands) if commands.len() <= MAX_COMMANDS => Split::Commands(commands),
        _ => Split::Unparsed,
    }
}

/// Passes each line of a worker's stdout on, until it ends or the pool stops
/// listening.
fn read_replies(stdout: ChildStdout, send: &mpsc::SyncSender<Reading>) {
    let mut reader = BufReader::new(stdout);
    let limit = u64::try_from(MAX_REPLY + 1).unwrap_or(u64::MAX);
    loop {
        let mut line = Vec::new();
        match (&mut reader).take(limit).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line.ends_with(b"\n") => {
                if send.send(Reading::Line(line)).is_err() {
                    return;
                }
            }
            Ok(_) => {
                let _ = send.send(Reading::TooLong);
                return;
            }
        }
    }
}
