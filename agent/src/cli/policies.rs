//! `portcullis policy`: check a policy directory and run its tests without a daemon,
//! or have the running daemon load the files again.

use super::client::Client;
use crate::{
    config::{self, Config},
    policy::Policy,
};
use anyhow::Context as _;
use clap::Subcommand;
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub(super) enum PolicyCommand {
    /// Validate a policy directory without a daemon (default: the configured one).
    Check {
        dir: Option<PathBuf>,
        #[arg(long, default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Run the policy's tests (`DIR/tests/*.toml`) without a daemon: exit 0 when all
    /// pass, 1 when a case fails, 2 when the policy or a test file cannot be used.
    Test {
        dir: Option<PathBuf>,
        #[arg(long, default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Load the policy files again in the running daemon (root or admin group); a
    /// policy whose tests fail is refused.
    Reload,
}

/// Runs `portcullis policy …`.
pub(super) async fn run(client: &Client, command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Check { dir, config } => check(&policy_dir(dir, &config, "check")?),
        PolicyCommand::Test { dir, config } => {
            std::process::exit(policy_test(&policy_dir(dir, &config, "test")?))
        }
        PolicyCommand::Reload => reload(client).await,
    }
}

/// `dir`, or the configured policy directory.
fn policy_dir(dir: Option<PathBuf>, config: &Path, verb: &str) -> anyhow::Result<PathBuf> {
    match dir {
        Some(d) => Ok(d),
        None => Config::load(config)
            .map(|c| c.policies)
            .with_context(|| format!("name the policy directory: `portcullis policy {verb} DIR`")),
    }
}

/// Loads the policy in `dir` and prints its targets.
fn check(dir: &Path) -> anyhow::Result<()> {
    let policy = Policy::load_dir(dir)?;
    println!(
        "{}: OK, {} targets, {} rules",
        dir.display(),
        policy.targets().len(),
        policy.rules_len()
    );
    for target in policy.targets() {
        let addrs: Vec<String> = target.addresses.iter().map(ToString::to_string).collect();
        println!(
            "  {:<20} {:<8} {}",
            target.name,
            target.protocol,
            addrs.join(", ")
        );
    }
    Ok(())
}

/// Has the daemon load its policy files again and prints what it loaded.
async fn reload(client: &Client) -> anyhow::Result<()> {
    let answer = client.post("/v1/policy/reload", None).await?;
    let count = |k: &str| {
        answer
            .get(k)
            .map_or_else(|| "?".to_owned(), ToString::to_string)
    };
    println!(
        "Policy reloaded: {} targets, {} rules.",
        count("targets"),
        count("rules")
    );
    Ok(())
}

/// Runs the tests of the policy in `dir`, prints each failure (`file:line: …`) and a
/// summary; the exit code.
fn policy_test(dir: &Path) -> i32 {
    match crate::policy_test::run_dir(dir) {
        Ok(report) => {
            for failure in &report.failures {
                println!("FAIL {failure}");
            }
            let failed = report.failures.len();
            println!(
                "{}: {} cases, {} passed, {failed} failed",
                dir.display(),
                report.cases,
                report.cases - failed
            );
            i32::from(failed > 0)
        }
        Err(error) => {
            eprintln!("portcullis: {error}");
            2
        }
    }
}
