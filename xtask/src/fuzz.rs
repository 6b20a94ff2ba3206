//! `cargo xtask fuzz [--seconds N] [TARGET…]`: builds the cargo-fuzz targets in
//! `tests/fuzz` on the nightly toolchain and runs each for a bounded time, starting
//! from the committed seeds (`tests/fuzz/seeds/TARGET`) and the corpus earlier runs
//! grew (`tests/fuzz/corpus/TARGET`, not committed). A crash fails the run; its input
//! is in `tests/fuzz/artifacts/TARGET/`: replay it with
//! `cargo +nightly fuzz run --sanitizer none TARGET FILE` there, then make it a
//! regression unit test beside the code and fix the code.
//!
//! No sanitizer: the code under test is safe Rust (what fuzzing finds there is a
//! panic, an overflow or an unbounded allocation, which the targets see without one),
//! and `ASan` would double the build and halve the executions per second.

use crate::sh;
use anyhow::Context as _;
use std::{path::Path, process::Command};

/// `cargo fuzz` in `dir`, on nightly, without building the eBPF programs (the
/// targets never load them).
fn cargo_fuzz(dir: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.args(["+nightly", "fuzz"])
        .current_dir(dir)
        .env("AYA_BUILD_SKIP", "1");
    cmd
}

pub fn run(seconds: u32, only: &[String]) -> anyhow::Result<()> {
    let dir = Path::new("tests/fuzz");
    sh(cargo_fuzz(dir).args(["build", "--sanitizer", "none"]))?;
    let targets = if only.is_empty() {
        list(dir)?
    } else {
        only.to_vec()
    };
    let mut failed = Vec::new();
    for target in &targets {
        let corpus = dir.join("corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        println!("xtask fuzz: {target} for {seconds} s");
        let status = cargo_fuzz(dir)
            .args(["run", "--sanitizer", "none", target])
            .arg(format!("corpus/{target}"))
            .arg(format!("seeds/{target}"))
            .args([
                "--",
                &format!("-max_total_time={seconds}"),
                "-timeout=20",
                "-rss_limit_mb=2048",
                "-max_len=65536",
                "-print_final_stats=1",
            ])
            .status()
            .with_context(|| format!("cannot run cargo fuzz for {target}"))?;
        if !status.success() {
            eprintln!("xtask fuzz: {target} FAILED ({status}); see tests/fuzz/artifacts/{target}/");
            failed.push(target.clone());
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("fuzz targets crashed: {}", failed.join(", "));
    }
    Ok(())
}

/// The targets `cargo fuzz list` names.
fn list(dir: &Path) -> anyhow::Result<Vec<String>> {
    let out = cargo_fuzz(dir).arg("list").output()?;
    anyhow::ensure!(out.status.success(), "cargo fuzz list failed");
    Ok(String::from_utf8(out.stdout)?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(ToOwned::to_owned)
        .collect())
}
