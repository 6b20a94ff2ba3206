//! `portcullis sessions`: the list, one session, its transcript (`replay`), a live
//! session followed (`watch`) or ended (`kill`), and the audit log as JSON lines
//! (`export`).

use super::{asciicast, client::Client, live, print};
use anyhow::Context as _;
use clap::Subcommand;
use std::fmt::Write as _;

#[derive(Debug, Subcommand)]
pub(super) enum SessionsCommand {
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

/// Runs `portcullis sessions` (the list when no subcommand is given).
pub(super) async fn run(
    client: &Client,
    command: Option<SessionsCommand>,
    json: bool,
    limit: u32,
) -> anyhow::Result<()> {
    match command {
        None => {
            let list = client.get(&format!("/v1/sessions?limit={limit}")).await?;
            print::sessions(&list, json)
        }
        Some(SessionsCommand::Show { id, json }) => {
            let one = client.get(&format!("/v1/sessions/{id}")).await?;
            print::session(&one, json)
        }
        Some(SessionsCommand::Replay {
            id,
            json,
            asciicast,
        }) => match asciicast {
            Some(file) => asciicast::export(client, &id, &file).await,
            None => replay(client, &id, json).await,
        },
        Some(SessionsCommand::Watch { id }) => live::follow(client, &id).await,
        Some(SessionsCommand::Kill { id, reason }) => live::kill(client, &id, &reason).await,
        Some(SessionsCommand::Export { since }) => export(client, since.as_deref()).await,
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
