//! `cargo xtask bench recorder`: what recording an event costs, measured in one run.
//!
//! The real recorder task writes events into a real `SQLite` store (a WAL file in a
//! temp dir, as the daemon's default store), each event a link of its session's hash
//! chain: `BENCH_EVENTS` (default 200,000) `sql` events shaped like a `pgbench -S`
//! statement with one sampled row, over 8 sessions sent from 8 tasks. It prints
//! events per second of wall time and per second of the process's CPU time (user +
//! system, all threads: the sending tasks, the recorder task and `SQLite`'s worker),
//! which is the per-core figure. It does so twice: without a journal, and with every
//! event first appended to the local journal as the daemon does (the second figure
//! includes that `write(2)`). Asserts nothing. Goal: ≥ 200,000 events/s per core.

use portcullis::record::{Journal, Recorder, SessionId, StatementRecord, Store};

/// The daemon's allocator, so the figures are the daemon's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use serde_json::json;
use std::time::{Duration, Instant};

/// Sessions recorded at once, each from its own task.
const SESSIONS: usize = 8;

fn main() -> anyhow::Result<()> {
    let events: usize = match std::env::var("BENCH_EVENTS") {
        Ok(n) => n.parse()?,
        Err(_) => 200_000,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(events))
}

async fn run(events: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&format!(
        "sqlite://{}",
        dir.path().join("bench.db").display()
    ))
    .await?
    .with_host("bench");
    // A warm-up that also creates the file's first pages.
    measure(&store, 2_000, None).await?;
    for journaled in [false, true] {
        let journal = if journaled {
            Some(Journal::open(&dir.path().join("journal"), &store).await?)
        } else {
            None
        };
        let (wall, cpu) = measure(&store, events, journal).await?;
        let per = |d: Duration| events as f64 / d.as_secs_f64();
        let how = if journaled {
            "journaled first (the daemon's path)"
        } else {
            "no journal"
        };
        println!(
            "Recorder into SQLite (WAL), {events} sql events over {SESSIONS} sessions, chained, {how}:"
        );
        println!(
            "  wall {:>8.3} s   {:>10.0} events/s",
            wall.as_secs_f64(),
            per(wall)
        );
        println!(
            "  cpu  {:>8.3} s   {:>10.0} events/s per core   (goal ≥ 200000)",
            cpu.as_secs_f64(),
            per(cpu)
        );
        println!(
            "  {:.2} µs of CPU per event",
            cpu.as_secs_f64() * 1e6 / events as f64
        );
    }
    store.close().await;
    Ok(())
}

/// Records `events` events and waits until they are written; wall and CPU time.
async fn measure(
    store: &Store,
    events: usize,
    journal: Option<Journal>,
) -> anyhow::Result<(Duration, Duration)> {
    let recorder = match journal {
        Some(journal) => Recorder::spawn_journaled(store.clone(), journal),
        None => Recorder::spawn(store.clone()),
    };
    let cpu_before = cpu_time();
    let started = Instant::now();
    let mut senders = Vec::new();
    for s in 0..SESSIONS {
        let recorder = recorder.clone();
        let count = events / SESSIONS + usize::from(s < events % SESSIONS);
        senders.push(tokio::spawn(async move {
            let session: SessionId = serde_json::from_value(json!(format!("bench-{events}-{s}")))?;
            for i in 0..count {
                recorder.record(statement(&session, i)).await?;
            }
            recorder.finish_session(&session).await;
            Ok::<_, anyhow::Error>(())
        }));
    }
    for sender in senders {
        sender.await??;
    }
    let wall = started.elapsed();
    let cpu = cpu_time().saturating_sub(cpu_before);
    recorder.shutdown().await;
    Ok((wall, cpu))
}

/// A `pgbench -S` statement as the PostgreSQL proxy records it.
fn statement(session: &SessionId, i: usize) -> StatementRecord {
    let aid = (i * 7919) % 1_000_000 + 1;
    StatementRecord {
        session_id: session.clone(),
        seq: 0,
        at_ms: 1_700_000_000_000 + i64::try_from(i).unwrap_or(0),
        text: format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid};"),
        params: None,
        classes: vec!["read".into()],
        tables: vec!["pgbench_accounts".into()],
        verdict: "allowed".into(),
        decided_by: None,
        request_id: None,
        reason: None,
        duration_us: Some(45),
        rows_affected: Some(1),
        command_tag: Some("SELECT 1".into()),
        error: None,
        rows: Some(json!({ "columns": ["abalance"], "rows": [["0"]], "truncated": false })),
        hash: String::new(),
    }
}

/// CPU time of this process so far, all threads.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct we pass; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid out pointer.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &raw mut usage) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}
