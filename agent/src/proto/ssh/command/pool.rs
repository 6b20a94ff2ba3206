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

use super::{MAX_LINE, Split};
use process::{Answer, Worker};
use std::{
    sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError, atomic},
    time::{Duration, Instant},
};

mod process;
pub use process::WorkerCommand;

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
        _ => Err(
            "the command-line parser's worker does not run (see the log above); \
                  every exec command will be unparsed, so denied unless a rule allows \
                  `unparsed`"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests;
