//! `cargo xtask bench …`: each benchmark is a release binary of the tests crate that
//! measures Portcullis against the direct path in one run and prints ratios.

use crate::{build_agent, sh};
use clap::Subcommand;
use std::process::Command;

#[derive(Debug, Clone, Copy, Subcommand)]
pub enum Bench {
    /// `connect()` latency with the programs attached vs detached; bulk throughput
    /// through the proxy vs direct.
    Tcp,
    /// Approve → release latency of a held connection.
    Gate,
    /// `pgbench -S` TPS and latency: direct vs through the PostgreSQL proxy vs
    /// through pgbouncer.
    Postgres,
    /// Masking throughput (MB/s per core at 1% and 10% PII) and cost per clean row.
    Mask,
    /// Events per second per core that the recorder chains and writes into `SQLite`.
    Recorder,
    /// Learned columns: their cost on the hot path, and `discover` on a table set.
    Learn,
    /// Bulk scp and sequential `ssh host true`: direct vs through the SSH proxy vs
    /// `ssh -J` through a plain OpenSSH jump host. `BENCH_IDLE=1`: memory per idle
    /// session with 1000 held, Portcullis vs the jump host.
    Ssh,
    /// Requests per second and p50/p99 at 1 and 32 connections (wrk), MB/s of a large
    /// download and of a masked JSON body: direct vs Portcullis vs nginx as a proxy.
    Http,
}

pub fn run(what: Bench) -> anyhow::Result<()> {
    let name = match what {
        Bench::Tcp => "bench-tcp",
        Bench::Gate => "bench-gate",
        Bench::Postgres => "bench-postgres",
        Bench::Mask => "bench-mask",
        Bench::Recorder => "bench-recorder",
        Bench::Learn => "bench-learn",
        Bench::Ssh => "bench-ssh",
        Bench::Http => "bench-http",
    };
    let mut cmd = Command::new("cargo");
    cmd.args([
        "run",
        "--quiet",
        "--release",
        "--package",
        "portcullis-tests",
        "--bin",
        name,
    ]);
    if let Bench::Mask | Bench::Recorder = what {
        // The masking and recorder benches call the library in process: they need
        // neither the daemon nor its eBPF programs. `AYA_BUILD_SKIP` keeps the library's build script from
        // compiling them; a target directory of its own keeps that setting from
        // invalidating the full build in `target/release`.
        cmd.args(["--target-dir", "target/bench-mask"])
            .env("AYA_BUILD_SKIP", "1");
    } else {
        cmd.env("PORTCULLIS_BIN", build_agent(true)?);
    }
    sh(&mut cmd)
}
