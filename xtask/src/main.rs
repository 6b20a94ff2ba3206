//! Build orchestration for Portcullis: `cargo xtask setup | run | test | bench`.
//!
//! `run` and `test` perform `setup` first (it is idempotent and quick when done), so
//! the README's two commands work on a fresh machine as root.

mod bench;
mod fuzz;
mod package;
mod setup;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use std::{
    path::{Path, PathBuf},
    process::Command,
};

#[derive(Parser)]
#[command(name = "xtask", about = "Portcullis build orchestration")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building and testing need: apt packages, rust-src, bpf-linker.
    Setup,
    /// Build and run the daemon on the repo's `policies/` with an embedded `SQLite` store
    /// under .state/ (needs root).
    Run {
        /// Build with optimizations.
        #[arg(long)]
        release: bool,
    },
    /// Run every test, including the root-only eBPF integration tests.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Benchmarks that compare with a direct connection, printed as ratios.
    Bench {
        #[command(subcommand)]
        what: bench::Bench,
    },
    /// Run each fuzz target (tests/fuzz) for a bounded time; fails on a crash.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u32,
        /// Only these targets (default: all).
        targets: Vec<String>,
    },
    /// Build in release and install on this host as a systemd service (as root).
    Install {
        /// Extra arguments for `portcullis install` (e.g. --no-enable).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build a Debian package (cargo-deb) in target/debian/.
    Deb,
    /// Remove the pinned eBPF programs of `cargo xtask run` (protected targets open up).
    Uninstall,
}

fn main() -> anyhow::Result<()> {
    let root = workspace_root()?;
    std::env::set_current_dir(&root)?;
    match Cli::parse().command {
        Cmd::Setup => setup::run(),
        Cmd::Run { release } => {
            setup::run()?;
            run_daemon(&root, release)
        }
        Cmd::Test { args } => {
            setup::run()?;
            test(&args)
        }
        Cmd::Bench { what } => {
            setup::run()?;
            bench::run(what)
        }
        Cmd::Fuzz { seconds, targets } => {
            setup::run()?;
            fuzz::run(seconds, &targets)
        }
        Cmd::Install { args } => {
            setup::run()?;
            package::install(&args)
        }
        Cmd::Deb => {
            setup::run()?;
            package::deb().map(drop)
        }
        Cmd::Uninstall => {
            let config = write_run_config(&root)?;
            let bin = build_agent(false)?;
            sh(Command::new(bin)
                .args(["daemon", "--release", "--config"])
                .arg(config))
        }
    }
}

pub fn workspace_root() -> anyhow::Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    dir.parent()
        .map(Path::to_path_buf)
        .context("xtask has no parent directory")
}

/// Builds the `portcullis` binary (with its eBPF programs); returns its path.
pub fn build_agent(release: bool) -> anyhow::Result<PathBuf> {
    let mut cmd = Command::new("cargo");
    cmd.args(["build", "--package", "portcullis"]);
    if release {
        cmd.arg("--release");
    }
    sh(&mut cmd)?;
    // Where cargo put it: `CARGO_TARGET_DIR` if set (relative to the workspace).
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| "target".into(), PathBuf::from);
    Ok(target
        .join(if release { "release" } else { "debug" })
        .join("portcullis")
        .canonicalize()?)
}

/// The config `cargo xtask run` uses: the repo's policies, state under `.state/`.
fn write_run_config(root: &Path) -> anyhow::Result<PathBuf> {
    let state = root.join(".state");
    std::fs::create_dir_all(&state)?;
    let config = state.join("portcullis.toml");
    std::fs::write(
        &config,
        "# Written by `cargo xtask run`: the repo's policies, an embedded SQLite store here.\n\
         policies = \"../policies\"\n\
         store = \"sqlite://portcullis.db\"\n\
         api_socket = \"api.sock\"\n\
         listen = [\"127.0.0.1:7450\", \"[::1]:7450\"]\n\
         bpf_pin_dir = \"/sys/fs/bpf/portcullis\"\n",
    )?;
    Ok(config)
}

fn run_daemon(root: &Path, release: bool) -> anyhow::Result<()> {
    require_root("run")?;
    let config = write_run_config(root)?;
    let bin = build_agent(release)?;
    let socket = root.join(".state/api.sock");
    println!("Portcullis daemon: config {}", config.display());
    println!(
        "  API socket: {}  (try: PORTCULLIS_SOCKET={} {} status)",
        socket.display(),
        socket.display(),
        bin.display()
    );
    println!("  Protected targets (from policies/):");
    sh(Command::new(&bin)
        .args(["policy", "check"])
        .arg(root.join("policies")))?;
    sh(Command::new(bin).args(["daemon", "--config"]).arg(config))
}

fn test(extra: &[String]) -> anyhow::Result<()> {
    require_root("test")?;
    if extra.is_empty() {
        clippy()?;
    }
    let bin = build_agent(false)?;
    // The shipped policies' own tests (policies/tests/), as an operator runs them.
    sh(Command::new(&bin).args(["policy", "test", "policies"]))?;
    let mut cmd = Command::new("cargo");
    cmd.args(["test", "--workspace", "--exclude", "portcullis-ebpf"])
        .args(extra)
        .env("PORTCULLIS_BIN", bin);
    // The dpkg test (tests/tests/install.rs) installs a package of this build.
    if extra.is_empty() || extra.iter().any(|a| a == "install") {
        cmd.env("PORTCULLIS_DEB", package::test_deb()?);
    }
    sh(&mut cmd)
}

/// The full `cargo xtask test` (what CI runs) first runs clippy on every crate and
/// target, failing on the workspace's deny-level lints (`unwrap_used`, `panic`, …);
/// pedantic lints stay warnings. A filtered run (`cargo xtask test -- --test X`)
/// skips it.
fn clippy() -> anyhow::Result<()> {
    println!("xtask test: cargo clippy (deny-level lints fail the run)");
    sh(Command::new("cargo").args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--exclude",
        "portcullis-ebpf",
    ]))
}

pub fn require_root(what: &str) -> anyhow::Result<()> {
    if !nix_is_root() {
        bail!("`cargo xtask {what}` needs root (eBPF programs and cgroups); run it with sudo");
    }
    Ok(())
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|u| u.split_whitespace().next() == Some("0"))
        })
        .unwrap_or(false)
}

/// Runs `cmd`, failing with its command line if it fails.
pub fn sh(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}
