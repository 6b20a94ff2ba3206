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
}

pub fn run(what: Bench) -> anyhow::Result<()> {
    let bin = build_agent(true)?;
    let name = match what {
        Bench::Tcp => "bench-tcp",
        Bench::Gate => "bench-gate",
        Bench::Postgres => "bench-postgres",
        Bench::Mask => "bench-mask",
    };
    sh(Command::new("cargo")
        .args([
            "run",
            "--quiet",
            "--release",
            "--package",
            "portcullis-tests",
            "--bin",
            name,
        ])
        .env("PORTCULLIS_BIN", bin))
}
