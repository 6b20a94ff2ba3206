//! `portcullis masking …`: the columns masking learned (issue 22).

use super::client::Client;
use clap::Subcommand;
use serde_json::{Value, json};
use std::fmt::Write as _;

#[derive(Debug, Subcommand)]
pub enum MaskingCommand {
    /// The columns masked because a recognizer found personal data in them.
    Learned {
        /// Only this target's.
        #[arg(long)]
        target: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Stop masking a learned column (root or admin group); it is learned again if a
    /// recognizer fires on it again.
    Forget {
        target: String,
        /// `schema.table.column`, or `table.column` when one schema has it.
        column: String,
    },
    /// Keep a learned column masked for good, even when it is dropped or retyped.
    Pin { target: String, column: String },
    /// Undo `pin`.
    Unpin { target: String, column: String },
    /// Sample the target's tables now and learn where recognizers fire.
    Discover {
        target: String,
        #[arg(long)]
        json: bool,
    },
}

/// Runs one `masking` command.
pub async fn run(client: &Client, command: MaskingCommand) -> anyhow::Result<()> {
    match command {
        MaskingCommand::Learned { target, json } => {
            let path = match &target {
                Some(t) => format!("/v1/masking/learned?target={}", encode(t)),
                None => "/v1/masking/learned".to_owned(),
            };
            let list = client.get(&path).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", learned_table(&list));
            }
            Ok(())
        }
        MaskingCommand::Forget { target, column } => {
            let body = json!({ "target": target, "column": column });
            say(&client.post("/v1/masking/forget", Some(&body)).await?);
            Ok(())
        }
        MaskingCommand::Pin { target, column } => pin(client, &target, &column, true).await,
        MaskingCommand::Unpin { target, column } => pin(client, &target, &column, false).await,
        MaskingCommand::Discover { target, json } => {
            let body = json!({ "target": target });
            let report = client.post("/v1/masking/discover", Some(&body)).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", discover_report(&report));
            }
            Ok(())
        }
    }
}

async fn pin(client: &Client, target: &str, column: &str, pinned: bool) -> anyhow::Result<()> {
    let body = json!({ "target": target, "column": column, "pinned": pinned });
    say(&client.post("/v1/masking/pin", Some(&body)).await?);
    Ok(())
}

fn say(answer: &Value) {
    println!(
        "{}",
        answer
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("done")
    );
}

/// A query-string value, percent-encoded.
fn encode(text: &str) -> String {
    text.bytes().fold(String::new(), |mut out, b| {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
        out
    })
}

fn field<'v>(v: &'v Value, name: &str) -> &'v str {
    v.get(name).and_then(Value::as_str).unwrap_or("")
}

/// The learned columns as a table.
fn learned_table(list: &Value) -> String {
    let rows = list.as_array().map_or(&[][..], Vec::as_slice);
    if rows.is_empty() {
        return "No learned columns.\n".to_owned();
    }
    let mut out = format!(
        "{:<16} {:<40} {:<14} {:<9} {:<6} {}\n",
        "TARGET", "COLUMN", "RECOGNIZER", "BY", "PINNED", "FIRST SESSION"
    );
    for c in rows {
        let column = format!(
            "{}.{}.{}",
            field(c, "schema"),
            field(c, "table"),
            field(c, "column")
        );
        let pinned = if c.get("pinned") == Some(&Value::Bool(true)) {
            "yes"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{:<16} {column:<40} {:<14} {:<9} {pinned:<6} {}",
            field(c, "target"),
            field(c, "recognizer"),
            field(c, "learned_by"),
            field(c, "first_session"),
        );
    }
    out.push_str(
        "\nOver-masked? `portcullis masking forget TARGET COLUMN` (admins); set mask_learn = \"off\" \
         on the rule to stop learning.\n",
    );
    out
}

/// A discover report for a person.
fn discover_report(r: &Value) -> String {
    let count = |k: &str| r.get(k).and_then(Value::as_u64).unwrap_or(0);
    let list = |k: &str| -> Vec<String> {
        r.get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let learned = list("learned");
    let mut out = format!(
        "Discover of {}: {} tables ({} columns) sampled in {} ms; {} columns learned, {} already known.\n",
        field(r, "target"),
        count("tables_sampled"),
        count("columns_sampled"),
        count("duration_ms"),
        learned.len(),
        count("already_learned"),
    );
    for l in &learned {
        let _ = writeln!(out, "  learned  {l}");
    }
    for n in list("notes") {
        let _ = writeln!(out, "  skipped  {n}");
    }
    let _ = writeln!(
        out,
        "Its queries are recorded in session {}.",
        field(r, "session")
    );
    out
}
