//! Session workers (`session_workers = N`, off by default): single-threaded tokio
//! runtimes, each serving the connections handed to it from accept to close.
//!
//! A proxied round trip wakes the session twice (the client's bytes, then the
//! server's). On a work-stealing runtime those wake-ups often land on another thread
//! than the one that last ran the session, which costs a context switch and a cold
//! cache each time; pinned to one thread, a session's loops, its sockets and its
//! reactor stay together, as in pgbouncer's single event loop. The accept loop stays
//! on the main runtime and hands accepted sockets out round-robin.
//!
//! Measured (`cargo xtask bench postgres`, 2 cores): the same TPS as the main
//! runtime and more context switches per transaction, which is why it is off by
//! default; kept so the next measurement on other hardware is a config line.
//!
//! Everything a session touches elsewhere (the gate, the recorder's queue, the store's
//! pools, the API) is shared through `Send` handles that work from any runtime.

use std::{
    future::Future,
    pin::Pin,
    sync::atomic::{AtomicUsize, Ordering},
    thread,
};
use tokio::sync::mpsc;

/// A connection's whole life, as a worker runs it.
pub(super) type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Jobs a worker may have waiting before [`Workers::run`] waits for room: accepting
/// is already bounded by `max_connections`; this keeps a stuck worker from hiding it.
const QUEUE: usize = 1024;

/// The worker threads and the way to them.
pub(super) struct Workers {
    queues: Vec<mpsc::Sender<Job>>,
    next: AtomicUsize,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Workers {
    /// Starts `count` workers, named `portcullis-session-N`; with none, every job
    /// runs on the caller's runtime.
    pub(super) fn start(count: usize) -> std::io::Result<Workers> {
        let mut queues = Vec::new();
        let mut threads = Vec::new();
        for n in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_name(format!("portcullis-session-{n}"))
                .build()?;
            let (tx, mut rx) = mpsc::channel::<Job>(QUEUE);
            let thread = thread::Builder::new()
                .name(format!("portcullis-session-{n}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        while let Some(job) = rx.recv().await {
                            tokio::spawn(job);
                        }
                    });
                    // Dropping the runtime cancels what is left: the daemon has
                    // already ended every session (shutdown grace, then hard stop).
                })?;
            queues.push(tx);
            threads.push(thread);
        }
        Ok(Workers {
            queues,
            next: AtomicUsize::new(0),
            threads,
        })
    }

    /// How many workers there are.
    pub(super) fn len(&self) -> usize {
        self.queues.len()
    }

    /// Runs `job` on the next worker in turn. A worker that is gone (its thread
    /// panicked) is skipped; with none (left) the job runs on the caller's runtime,
    /// so a connection is never dropped unanswered.
    pub(super) async fn run(&self, job: Job) {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut job = job;
        for i in 0..self.queues.len() {
            let Some(queue) = self.queues.get((start + i) % self.queues.len()) else {
                continue;
            };
            match queue.send(job).await {
                Ok(()) => return,
                Err(mpsc::error::SendError(back)) => job = back,
            }
        }
        tokio::spawn(job);
    }

    /// Stops taking jobs and waits for the worker threads to end.
    pub(super) fn join(self) {
        drop(self.queues);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn jobs_run_round_robin_each_on_one_thread() {
        let workers = Workers::start(2).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(workers.len(), 2);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (done_tx, mut done_rx) = mpsc::channel(8);
        for _ in 0..4 {
            let seen = Arc::clone(&seen);
            let done = done_tx.clone();
            workers
                .run(Box::pin(async move {
                    let before = thread::current().name().map(str::to_owned);
                    tokio::task::yield_now().await;
                    let after = thread::current().name().map(str::to_owned);
                    assert_eq!(before, after, "a job stays on its worker");
                    seen.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(after);
                    let _ = done.send(()).await;
                }))
                .await;
        }
        for _ in 0..4 {
            done_rx.recv().await;
        }
        let names: HashSet<_> = seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .flatten()
            .cloned()
            .collect();
        assert_eq!(
            names,
            HashSet::from(["portcullis-session-0".into(), "portcullis-session-1".into()])
        );
        tokio::task::spawn_blocking(move || workers.join())
            .await
            .unwrap_or_else(|e| unreachable!("{e}"));
    }
}
