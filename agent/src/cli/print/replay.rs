//! One event of a replay transcript: a line every kind shares (number, time,
//! verdict, a tag), the kind's own lines, then why and how it went. Each kind that
//! shows more than its summary has one small formatter here.

use super::{at, cell, clean, duration, field, time_ms};
use serde_json::Value;

/// What a kind's formatter adds to an event's transcript.
#[derive(Default)]
pub(super) struct Shown {
    /// In the first line's brackets (`[read, write]`, `[exec]`).
    pub(super) tag: String,
    /// After the first line.
    pub(super) lines: Vec<String>,
    /// The start of the `result` line (a command tag, an exit status).
    pub(super) result: Option<String>,
    /// After everything else (a table of rows).
    pub(super) tail: Vec<String>,
}

/// One event of a replay transcript, as the API serves it.
pub fn replay_event(ev: &Value) -> String {
    let kind = at(ev, "/kind").as_str().unwrap_or("sql");
    let details = at(ev, "/details");
    let shown = match kind {
        "sql" => sql(details),
        "exec" | "scp" | "shell" | "shell-line" | "sftp" | "forward" | "agent" | "x11" => {
            let (tag, lines, result) = super::ssh::shown(kind, details);
            Shown {
                tag,
                lines,
                result,
                tail: Vec::new(),
            }
        }
        "http" => super::http::http(details),
        other => generic(other, ev),
    };
    let mut verdict = field(ev, "/verdict");
    if let Some(by) = at(ev, "/decided_by").as_str() {
        verdict = format!("{verdict} by {}", clean(by, false));
    }
    if let Some(request) = at(ev, "/request_id").as_str() {
        verdict = format!("{verdict} (request {})", clean(request, false));
    }
    let mut lines = vec![
        String::new(),
        format!(
            "#{}  {}  {verdict}  [{}]",
            field(ev, "/seq"),
            time_ms(at(ev, "/at_ms")),
            shown.tag
        ),
    ];
    lines.extend(shown.lines);
    if let Some(reason) = at(ev, "/reason").as_str() {
        lines.push(format!("    reason   {}", clean(reason, false)));
    }
    let mut result: Vec<String> = shown.result.into_iter().collect();
    if let Some(us) = at(ev, "/duration_us").as_i64() {
        result.push(format!("in {}", duration(us)));
    }
    if !result.is_empty() {
        lines.push(format!("    result   {}", result.join(" ")));
    }
    if let Some(error) = at(ev, "/error").as_str() {
        lines.push(format!("    error    {}", clean(error, false)));
    }
    if let Some(digest) = at(ev, "/payload").as_str() {
        lines.push(format!("    payload  sha256 {}", clean(digest, false)));
    }
    lines.extend(shown.tail);
    lines.push(String::new());
    lines.join("\n")
}

/// A SQL statement: its classes, text, parameters, command tag and sampled rows.
fn sql(d: &Value) -> Shown {
    let classes: Vec<String> = at(d, "/classes")
        .as_array()
        .into_iter()
        .flatten()
        .map(cell)
        .collect();
    let text = clean(at(d, "/text").as_str().unwrap_or_default().trim_end(), true);
    let mut lines: Vec<String> = text.lines().map(|line| format!("    {line}")).collect();
    if let Some(params) = at(d, "/params").as_array().filter(|p| !p.is_empty()) {
        let params: Vec<String> = params
            .iter()
            .enumerate()
            .map(|(i, p)| match p {
                Value::String(s) => format!("${} = '{}'", i + 1, clean(s, false)),
                other => format!("${} = {}", i + 1, cell(other)),
            })
            .collect();
        lines.push(format!("    params   {}", params.join(", ")));
    }
    let result = match (
        at(d, "/command_tag").as_str(),
        at(d, "/rows_affected").as_i64(),
    ) {
        (Some(tag), _) => Some(clean(tag, false)),
        (None, Some(n)) => Some(format!("{n} rows")),
        (None, None) => None,
    };
    let mut tail = Vec::new();
    if let Some(rows) = at(d, "/rows").as_object() {
        tail.extend(rows_table(rows.get("columns"), rows.get("rows"), "      "));
        if rows.get("truncated").and_then(Value::as_bool) == Some(true) {
            tail.push("      … (more rows were not recorded)".to_owned());
        }
    }
    Shown {
        tag: classes.join(", "),
        lines,
        result,
        tail,
    }
}

/// A kind without a formatter of its own: its summary, and its details as they are.
fn generic(kind: &str, ev: &Value) -> Shown {
    let mut lines = vec![format!("    {}", clean(&field(ev, "/summary"), false))];
    if let Some(details) = at(ev, "/details").as_object() {
        for (key, value) in details {
            let value = match value {
                Value::String(s) => clean(s, false),
                other => clean(&other.to_string(), false),
            };
            lines.push(format!("    {key:<8} {value}"));
        }
    }
    Shown {
        tag: clean(kind, false),
        lines,
        ..Shown::default()
    }
}

/// Recorded result rows as the lines of an aligned table, each starting with `indent`.
fn rows_table(columns: Option<&Value>, rows: Option<&Value>, indent: &str) -> Vec<String> {
    let header: Vec<String> = columns
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(cell)
        .collect();
    let body: Vec<Vec<String>> = rows
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|row| row.as_array().into_iter().flatten().map(cell).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &body {
        for (i, value) in row.iter().enumerate() {
            let width = value.chars().count();
            match widths.get_mut(i) {
                Some(w) => *w = (*w).max(width),
                None => widths.push(width),
            }
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = widths
            .iter()
            .enumerate()
            .map(|(i, w)| format!("{:<w$}", cells.get(i).map_or("", String::as_str)))
            .collect();
        format!("{indent}{}", padded.join(" | ").trim_end())
    };
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    let mut lines = vec![line(&header), format!("{indent}{}", rule.join("-+-"))];
    lines.extend(body.iter().map(|row| line(row)));
    lines
}
