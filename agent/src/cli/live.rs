//! Live sessions from the CLI: `sessions kill ID --reason WHY` ends one;
//! `portcullis sessions watch ID` follows one until it ends. An SSH
//! shell's terminal output is written to stdout as it happens (masked, as the
//! recording has it); each event recorded meanwhile is a `[portcullis]` line on
//! stderr, so the terminal view stays clean when stderr goes elsewhere.

use super::client::Client;
use serde_json::Value;
use std::io::Write as _;

/// Ends session `id` (any protocol) with `reason`.
pub async fn kill(client: &Client, id: &str, reason: &str) -> anyhow::Result<()> {
    let body = serde_json::json!({ "reason": reason });
    let done = client
        .post(&format!("/v1/sessions/{id}/kill"), Some(&body))
        .await?;
    let message = done.get("message").and_then(Value::as_str);
    println!("{}", message.unwrap_or("killed"));
    Ok(())
}

/// Streams `/v1/sessions/ID/watch` to the terminal.
pub async fn follow(client: &Client, id: &str) -> anyhow::Result<()> {
    eprintln!("[portcullis] watching session {id}; Ctrl-C stops watching (the session goes on)");
    client
        .stream(&format!("/v1/sessions/{id}/watch"), |line| {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                return;
            };
            show(&v);
        })
        .await
}

fn show(v: &Value) {
    let text = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or_default();
    // Recorded text printed as a line: no control characters reach the terminal.
    let clean = |p: &str| -> String {
        text(p)
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect()
    };
    match text("/type") {
        "output" => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text("/data").as_bytes());
            let _ = out.flush();
        }
        "event" => {
            let error = clean("/event/error");
            let error = if error.is_empty() {
                String::new()
            } else {
                format!(" ({error})")
            };
            eprintln!(
                "\r\n[portcullis] {} {}: {}{error}",
                clean("/event/kind"),
                clean("/event/verdict"),
                clean("/event/summary")
            );
        }
        "skipped" => eprintln!(
            "\r\n[portcullis] this watcher fell behind: {} chunks of output skipped",
            v.pointer("/chunks").and_then(Value::as_u64).unwrap_or(0)
        ),
        "ended" => eprintln!("\r\n[portcullis] the session ended"),
        _ => {}
    }
}
