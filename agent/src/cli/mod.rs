//! The `portcullis` command line. `daemon` runs the agent; every other verb is a
//! client of the daemon's local socket API (`policy check` also works offline).

mod asciicast;
mod client;
mod live;
mod masking;
mod policies;
mod print;
mod sessions;
mod web;

use crate::config::{self, Config};
use clap::{Parser, Subcommand};
use client::Client;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "portcullis",
    version,
    about = "A human in the loop between programs and the systems they reach"
)]
pub struct Cli {
    /// The daemon's API socket.
    #[arg(long, global = true, env = "PORTCULLIS_SOCKET", default_value = config::DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent (as root): intercept, gate, proxy and record.
    Daemon {
        #[arg(long, default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Remove the pinned eBPF programs and maps (protected targets open up again) and exit.
        #[arg(long)]
        release: bool,
    },
    /// What the daemon is doing: policy, interception, sessions.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Recorded sessions (yours, or everyone's for admins).
    Sessions {
        #[command(subcommand)]
        show: Option<sessions::SessionsCommand>,
        #[arg(long)]
        json: bool,
        /// How many, newest first.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Check or reload policy files.
    Policy {
        #[command(subcommand)]
        command: policies::PolicyCommand,
    },
    /// Held actions waiting for approval (those you may see).
    Approvals {
        #[command(subcommand)]
        watch: Option<ApprovalsCommand>,
        #[arg(long)]
        json: bool,
        /// Decided requests too.
        #[arg(long)]
        all: bool,
    },
    /// Approve a held action (counts once per approver; never your own).
    Approve {
        /// Request id, or a unique prefix of it.
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Deny a held action: final, and the client is told who and why.
    Deny {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Say why you need a held action of yours; approvers see it everywhere.
    Justify {
        /// Request id, or a unique prefix of it.
        id: String,
        /// Why, in a sentence (a ticket, an incident…).
        text: String,
    },
    /// A one-time link that signs you in to the web console as yourself (a local
    /// approver, by this socket's credentials); it works once, within two minutes.
    WebLogin,
    /// Link your account on this host to your identity-provider identity (device
    /// sign-in, RFC 8628) for a while: approvers see it, and you cannot approve
    /// your own requests under it.
    Login,
    /// End the links `login` made.
    Logout,
    /// The daemon's Prometheus metrics.
    Metrics,
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Columns masking learned: list, forget, pin, discover.
    Masking {
        #[command(subcommand)]
        command: masking::MaskingCommand,
    },
    /// Install (or upgrade) the daemon as a systemd service (as root).
    Install {
        #[command(flatten)]
        at: InstallArgs,
        /// Do not enable and (re)start the service.
        #[arg(long)]
        no_enable: bool,
    },
    /// Stop and remove the service, its unit, binary and pins (as root).
    Uninstall {
        #[command(flatten)]
        at: InstallArgs,
        /// Also remove /etc/portcullis and /var/lib/portcullis.
        #[arg(long)]
        purge: bool,
    },
}

/// Where `install` and `uninstall` work.
#[derive(Debug, clap::Args)]
struct InstallArgs {
    /// Write under this directory instead of / (staging, tests); groups, pins and
    /// systemd are left alone then.
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// Where the binary goes.
    #[arg(long, default_value = "/usr/local/bin/portcullis")]
    bin: PathBuf,
    /// Run from the Debian package's maintainer scripts: dpkg owns the binary and unit.
    #[arg(long)]
    packaged: bool,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Walk the hash chain; name the first record that does not fit (exit 1 then).
    Verify {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ApprovalsCommand {
    /// Print new requests and decisions as they happen (JSON lines).
    Watch,
}

/// Runs the command line; the process exit code follows the result.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = Client::new(cli.socket);
    match cli.command {
        Command::Daemon { config, release } => daemon(&config, release).await,
        Command::Status { json } => {
            let status = client.get("/v1/status").await?;
            print::status(&status, json)
        }
        Command::Sessions { show, json, limit } => sessions::run(&client, show, json, limit).await,
        Command::Approvals {
            watch: Some(ApprovalsCommand::Watch),
            ..
        } => {
            client
                .stream("/v1/approvals/watch", |line| {
                    println!("{line}");
                })
                .await
        }
        Command::Approvals {
            watch: None,
            json,
            all,
        } => {
            let list = client.get(&format!("/v1/approvals?all={all}")).await?;
            print::approvals(&list, json)
        }
        Command::Approve { id, reason } => decide(&client, "approve", &id, reason.as_deref()).await,
        Command::Deny { id, reason } => decide(&client, "deny", &id, Some(&reason)).await,
        Command::Justify { id, text } => web::justify(&client, &id, &text).await,
        Command::Login => web::login(&client).await,
        Command::Logout => web::logout(&client).await,
        Command::WebLogin => web::web_login(&client).await,
        Command::Audit {
            command: AuditCommand::Verify { json },
        } => audit_verify(&client, json).await,
        Command::Masking { command } => masking::run(&client, command).await,
        Command::Install { at, no_enable } => {
            crate::install::install(&install_options(at, !no_enable))?;
            Ok(())
        }
        Command::Uninstall { at, purge } => {
            crate::install::uninstall(&install_options(at, false), purge)?;
            Ok(())
        }
        Command::Metrics => {
            let text = client.get("/metrics").await?;
            print!("{}", text.as_str().unwrap_or_default());
            Ok(())
        }
        Command::Policy { command } => policies::run(&client, command).await,
    }
}

/// `daemon`: runs the agent, or with `--release` removes what it left in the system
/// (the eBPF pins, the SSH `known_hosts` block, the HTTPS CA in the trust store).
async fn daemon(config: &std::path::Path, release: bool) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    if !release {
        return crate::daemon::run(config).await;
    }
    let n = crate::intercept::release(&config.bpf_pin_dir)?;
    if let Err(error) = crate::proto::ssh::release(&config.ssh) {
        eprintln!("warning: {error}");
    }
    println!(
        "Removed {n} pins from {}; protected targets are no longer intercepted.",
        config.bpf_pin_dir.display()
    );
    if config.http.trust_store
        && let Some(path) = crate::proto::http::uninstall(
            config.http.ca_cert.as_deref(),
            &config.http.state_dir,
            &config.http.trust_dir,
        )?
    {
        println!(
            "Removed the HTTPS CA {} from the trust store.",
            path.display()
        );
    }
    Ok(())
}

/// `audit verify`: the daemon's verdict on every chain; an error when one is broken.
async fn audit_verify(client: &Client, json: bool) -> anyhow::Result<()> {
    let answer = client.get("/v1/audit/verify").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        println!(
            "{}",
            answer
                .get("summary")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("?")
        );
    }
    if answer.get("intact") == Some(&serde_json::Value::Bool(true)) {
        Ok(())
    } else {
        anyhow::bail!(
            "the audit log has been tampered with or damaged; keep a copy of the database and investigate"
        )
    }
}

fn install_options(at: InstallArgs, enable: bool) -> crate::install::Options {
    crate::install::Options {
        root: at.root,
        bin: at.bin,
        packaged: at.packaged,
        enable,
    }
}

/// Approves or denies request `id` and prints what that did.
async fn decide(client: &Client, verb: &str, id: &str, reason: Option<&str>) -> anyhow::Result<()> {
    let body = serde_json::json!({ "reason": reason });
    let done = client
        .post(&format!("/v1/approvals/{id}/{verb}"), Some(&body))
        .await?;
    println!(
        "{}",
        done.get("message")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("done")
    );
    Ok(())
}
