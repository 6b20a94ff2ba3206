//! The bounded parse: command lines are split by a small pool of long-lived worker
//! processes ([`super::worker`]), never in the daemon. A line gets at most
//! [`Limits::deadline`] in its worker; a worker that misses it is killed, one that
//! ends (its memory or CPU limit, a crash) is reaped, a new one starts for the next
//! line, and that line is [`Split::Unparsed`], the most restrictive answer. At most
//! [`Limits::workers`] workers run and [`Limits::queue`] lines wait for one; past
//! that a line is unparsed at once rather than queued without bound.
//!
//! std processes, pipes and threads rather than tokio's: the policy's own tests
//! (`policy test`, and every policy load) split lines from blocking code too. Async
//! callers use [`split_async`], which waits on tokio's blocking pool.

use super::{
    MAX_COMMANDS, MAX_LINE, Split,
    worker::{Reply, Request},
};
use std::{
    borrow::Cow,
    ffi::OsString,
    io::{BufRead, BufReader, Read, Write},
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio},
    sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError, atomic, mpsc},
    time::{Duration, Instant},
};

/// A reply line longer than this ends its worker (no real split comes near it).
const MAX_REPLY: usize = 16 * MAX_LINE;

/// mimalloc (the binary's allocator) reserves a gigabyte of address space up front
/// unless told not to: inside it the worker's memory limit would not bind.
const ALLOCATOR_RESERVE: (&str, &str) = ("MIMALLOC_ARENA_RESERVE", "0");

/// How the pool is sized and how long a line may take.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Worker processes at most; each parses one line at a time.
    pub workers: usize,
    /// Lines waiting for a free worker at most; more are unparsed at once.
    pub queue: usize,
    /// Wall-clock time a line may take in its worker.
    pub deadline: Duration,
    /// Time a line may wait for a free worker.
    pub wait: Duration,
    /// Lines a worker parses before it is replaced (bounds what it may hold on to).
    pub recycle_after: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            workers: 2,
            queue: 64,
            deadline: Duration::from_secs(3),
            wait: Duration::from_secs(10),
            recycle_after: 10_000,
        }
    }
}

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
            .arg(super::worker::WORKER_ARG)
            .env(ALLOCATOR_RESERVE.0, ALLOCATOR_RESERVE.1)
    }

    /// Under `cargo test` this binary is the unit-test binary: its worker is the
    /// test `worker::tests::worker_process`, selected alone.
    #[must_use]
    #[cfg(test)]
    pub fn this_binary() -> Self {
        use super::worker::tests::{AS_WORKER, ENTRY};
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

/// A pool of parse workers; see the module's documentation.
pub struct Splitter {
    command: WorkerCommand,
    limits: Limits,
    state: Mutex<State>,
    /// Signalled when a worker is given back or ends.
    freed: Condvar,
    next_id: atomic::AtomicU64,
}

#[derive(Default)]
struct State {
    idle: Vec<Worker>,
    /// Workers running, idle or busy.
    alive: usize,
    /// Lines waiting for a worker.
    waiting: usize,
}

/// What [`Splitter::take`] found.
enum Next {
    Idle(Worker),
    Spawn,
    Busy,
}

impl Splitter {
    #[must_use]
    pub fn new(command: WorkerCommand, limits: Limits) -> Self {
        Self {
            command,
            limits,
            state: Mutex::default(),
            freed: Condvar::new(),
            next_id: atomic::AtomicU64::new(1),
        }
    }

    /// The simple commands `line` runs, or `Unparsed` if it cannot be parsed, is too
    /// long, or its worker fails, misses the deadline or cannot be had in time.
    /// Blocks for at most [`Limits::wait`] plus [`Limits::deadline`] (twice, if an
    /// idle worker turns out to have ended).
    #[must_use]
    pub fn split(&self, line: &str) -> Split {
        if line.len() > MAX_LINE {
            return Split::Unparsed;
        }
        for _ in 0..2 {
            let Some(mut worker) = self.take() else {
                return Split::Unparsed;
            };
            let id = self.next_id.fetch_add(1, atomic::Ordering::Relaxed);
            match worker.ask(id, line, self.limits.deadline) {
                Answer::Split(split) => {
                    self.give_back(Some(worker));
                    return split;
                }
                // It had ended while idle, before seeing this line: try a new one.
                Answer::NotSent => self.give_back(None),
                Answer::TimedOut => {
                    tracing::warn!(
                        deadline = ?self.limits.deadline,
                        "The command-line parser took too long; its worker was killed and the line is unparsed"
                    );
                    self.give_back(None);
                    return Split::Unparsed;
                }
                Answer::Ended => {
                    let status = worker.end();
                    tracing::warn!(
                        status = %status.map_or_else(|| "unknown".to_owned(), |s| s.to_string()),
                        "The command-line parser's worker ended on a line (a memory or CPU limit, or a crash); the line is unparsed"
                    );
                    self.give_back(None);
                    return Split::Unparsed;
                }
            }
        }
        Split::Unparsed
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An idle worker, a new one, or `None` when all are busy and the queue is full
    /// or the wait ran out (each reason logged).
    fn take(&self) -> Option<Worker> {
        let until = Instant::now() + self.limits.wait;
        let mut state = self.lock();
        let mut queued = false;
        let next = loop {
            if let Some(worker) = state.idle.pop() {
                break Next::Idle(worker);
            }
            if state.alive < self.limits.workers {
                state.alive += 1;
                break Next::Spawn;
            }
            if !queued {
                if state.waiting >= self.limits.queue {
                    break Next::Busy;
                }
                state.waiting += 1;
                queued = true;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Next::Busy;
            }
            state = match self.freed.wait_timeout(state, left) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        };
        if queued {
            state.waiting -= 1;
        }
        drop(state);
        match next {
            Next::Idle(worker) => Some(worker),
            Next::Spawn => match Worker::start(&self.command) {
                Ok(worker) => Some(worker),
                Err(error) => {
                    tracing::error!(%error, "Cannot start the command-line parser's worker; the line is unparsed");
                    self.give_back(None);
                    None
                }
            },
            Next::Busy => {
                tracing::warn!("Every command-line parser worker is busy; the line is unparsed");
                None
            }
        }
    }

    /// Puts `worker` back for the next line, or (`None`, or worn out) lets it go.
    fn give_back(&self, worker: Option<Worker>) {
        let kept = worker.filter(|w| w.served < self.limits.recycle_after);
        let mut state = self.lock();
        match kept {
            Some(worker) => state.idle.push(worker),
            None => state.alive = state.alive.saturating_sub(1),
        }
        drop(state);
        self.freed.notify_one();
    }
}

/// How one request to a worker went.
enum Answer {
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
struct Worker {
    child: Child,
    stdin: ChildStdin,
    replies: mpsc::Receiver<Reading>,
    served: u32,
}

impl Worker {
    fn start(command: &WorkerCommand) -> std::io::Result<Self> {
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
    fn ask(&mut self, id: u64, line: &str, deadline: Duration) -> Answer {
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
    fn end(&mut self) -> Option<ExitStatus> {
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

/// The daemon's pool, started on first use.
fn shared() -> &'static Splitter {
    static SHARED: OnceLock<Splitter> = OnceLock::new();
    SHARED.get_or_init(|| Splitter::new(WorkerCommand::this_binary(), Limits::default()))
}

/// The simple commands `line` runs, split in the daemon's worker pool (blocking).
#[must_use]
pub fn split(line: &str) -> Split {
    shared().split(line)
}

/// [`split`] for async code: it waits on tokio's blocking pool.
pub async fn split_async(line: String) -> Split {
    tokio::task::spawn_blocking(move || split(&line))
        .await
        .unwrap_or(Split::Unparsed)
}

/// Starts a worker now (daemon start), so the first exec does not wait for one and
/// a worker that cannot run is reported at once: every exec would be unparsed.
pub fn warm_up() -> Result<(), String> {
    match split("true") {
        Split::Commands(c) if c == ["true"] => Ok(()),
        _ => Err("the command-line parser's worker does not run (see the log above); \
                  every exec command will be unparsed, so denied unless a rule allows \
                  `unparsed`"
            .into()),
    }
}

#[cfg(test)]
mod tests;
