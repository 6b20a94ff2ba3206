//! The `portcullis` command line. `daemon` runs the agent; every other verb is a
//! client of the daemon's local socket API (`policy check` also works offline).

mod asciicast;
mod client;
mod live;
mod masking;
mod print;
mod web;

use crate::{
    config::{self, Config},
    policy::Policy,
};
use anyhow::Context as _;
use clap::{Parser, Subcommand};
use client::Client;
use std::{fmt::Write as _, path::PathBuf};

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
        show: Option<SessionsCommand>,
        #[arg(long)]
        json: bool,
        /// How many, newest first.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Check or reload policy files.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
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

#[derive(Debug, Subcommand)]
enum SessionsCommand {
    /// Audit records (every decision and session event) as JSON lines, for a SIEM.
    Export {
        /// Only records newer than this: a duration ago ("1h", "7d") or unix milliseconds.
        #[arg(long)]
        since: Option<String>,
    },
    /// One session in full.
    Show {
        /// Session id, or a unique prefix of it.
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Follow a live session until it ends: its events as they are recorded, and an
    /// SSH shell's terminal output (masked) as it happens.
    Watch {
        /// Session id, or a unique prefix of it.
        id: String,
    },
    /// End a live session (any protocol), recorded with who and why (admins).
    Kill {
        /// Session id, or a unique prefix of it.
        id: String,
        /// Why, for the session's record and the audit log.
        #[arg(long)]
        reason: String,
    },
    /// A session's transcript: every event (statement, command, request), its
    /// verdict, and how it went.
    Replay {
        /// Session id, or a unique prefix of it.
        id: String,
        /// One JSON document: `{"session": …, "events": […]}`.
        #[arg(long)]
        json: bool,
        /// Write the session's shell recording (asciicast v2, checked against the
        /// digest in its chain) to FILE, for `asciinema play FILE`.
        #[arg(long, value_name = "FILE")]
        asciicast: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
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

/// Runs the command line; the process exit code follows the result.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = Client::new(cli.socket);
    match cli.command {
        Command::Daemon { config, release } => {
            let config = Config::load(&config)?;
            if release {
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
                return Ok(());
            }
            crate::daemon::run(config).await
        }
        Command::Status { json } => {
            let status = client.get("/v1/status").await?;
            print::status(&status, json)
        }
        Command::Sessions {
            show: None,
            json,
            limit,
        } => {
            let list = client.get(&format!("/v1/sessions?limit={limit}")).await?;
            print::sessions(&list, json)
        }
        Command::Sessions {
            show: Some(SessionsCommand::Show { id, json }),
            ..
        } => {
            let one = client.get(&format!("/v1/sessions/{id}")).await?;
            print::session(&one, json)
        }
        Command::Sessions {
            show:
                Some(SessionsCommand::Replay {
                    id,
                    json,
                    asciicast,
                }),
            ..
        } => match asciicast {
            Some(file) => asciicast::export(&client, &id, &file).await,
            None => replay(&client, &id, json).await,
        },
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
        Command::Sessions {
            show: Some(SessionsCommand::Watch { id }),
            ..
        } => live::follow(&client, &id).await,
        Command::Sessions {
            show: Some(SessionsCommand::Kill { id, reason }),
            ..
        } => live::kill(&client, &id, &reason).await,
        Command::Sessions {
            show: Some(SessionsCommand::Export { since }),
            ..
        } => export(&client, since.as_deref()).await,
        Command::Audit {
            command: AuditCommand::Verify { json },
        } => {
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
        Command::Policy {
            command: PolicyCommand::Check { dir, config },
        } => {
            let dir = match dir {
                Some(d) => d,
                None => Config::load(&config)
                    .map(|c| c.policies)
                    .with_context(|| "name the policy directory: `portcullis policy check DIR`")?,
            };
            let policy = Policy::load_dir(&dir)?;
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
        Command::Policy {
            command: PolicyCommand::Test { dir, config },
        } => {
            let dir = match dir {
                Some(d) => d,
                None => Config::load(&config)
                    .map(|c| c.policies)
                    .with_context(|| "name the policy directory: `portcullis policy test DIR`")?,
            };
            std::process::exit(policy_test(&dir))
        }
        Command::Policy {
            command: PolicyCommand::Reload,
        } => {
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

/// Runs the tests of the policy in `dir`, prints each failure (`file:line: …`) and a
/// summary; the exit code.
fn policy_test(dir: &std::path::Path) -> i32 {
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

/// Pages through the audit log and prints each record as one JSON line.
async fn export(client: &Client, since: Option<&str>) -> anyhow::Result<()> {
    let since_ms = match since {
        None => None,
        Some(s) => Some(if let Ok(ms) = s.parse::<i64>() {
            ms
        } else {
            let ago = humantime::parse_duration(s).with_context(|| {
                format!("--since {s}: give a duration like 1h or 7d, or unix milliseconds")
            })?;
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
            i64::try_from(now.saturating_sub(ago).as_millis())?
        }),
    };
    let mut after = 0_i64;
    loop {
        let mut path = format!("/v1/audit?after_seq={after}&limit=1000");
        if let Some(ms) = since_ms {
            let _ = write!(path, "&since_ms={ms}");
        }
        let page = client.get(&path).await?;
        let rows = page.as_array().cloned().unwrap_or_default();
        if rows.is_empty() {
            return Ok(());
        }
        for row in &rows {
            println!("{}", serde_json::to_string(row)?);
            after = row
                .get("seq")
                .and_then(serde_json::Value::as_i64)
                .unwrap_or(after);
        }
    }
}

/// Events fetched per API call by `sessions replay`.
const REPLAY_PAGE: usize = 500;

/// Prints session `id` and every event recorded in it, a page at a time (so a
/// long session is never held whole), as a transcript or as one JSON document.
async fn replay(client: &Client, id: &str, json: bool) -> anyhow::Result<()> {
    let session = client.get(&format!("/v1/sessions/{id}")).await?;
    // The full id from here on: a prefix could come to match a newer session too.
    let id = session
        .get("id")
        .and_then(serde_json::Value::as_str)
        .context("the daemon answered without a session id; is it the same version?")?
        .to_owned();
    let mut out = if json {
        format!(
            "{{\"session\":{},\"events\":[",
            serde_json::to_string(&session)?
        )
    } else {
        print::replay_header(&session)
    };
    let (mut after, mut count) = (0_i64, 0_u64);
    loop {
        let page = client
            .get(&format!(
                "/v1/sessions/{id}/events?after={after}&limit={REPLAY_PAGE}"
            ))
            .await?;
        let events = page.as_array().map_or(&[][..], Vec::as_slice);
        for event in events {
            if json {
                out.push_str(if count == 0 { "\n" } else { ",\n" });
                out += &serde_json::to_string(event)?;
            } else {
                out.push_str(&print::replay_event(event));
            }
            count += 1;
        }
        if !emit(&out)? {
            return Ok(());
        }
        out.clear();
        let last = events
            .last()
            .and_then(|s| s.get("seq"))
            .and_then(serde_json::Value::as_i64);
        match last {
            Some(seq) if events.len() == REPLAY_PAGE && seq > after => after = seq,
            _ => break,
        }
    }
    let end = if json {
        "\n]}\n".to_owned()
    } else {
        print::replay_footer(count)
    };
    emit(&end)?;
    Ok(())
}

/// Writes `text` to stdout; `false` when the reader has gone (`| head`), which ends
/// the output quietly instead of failing.
fn emit(text: &str) -> anyhow::Result<bool> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("cannot write to stdout"),
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
