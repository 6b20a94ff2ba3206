//! Human-readable output of API answers (`--json` prints them as they are).

mod http;
mod identity;
mod replay;
mod ssh;

pub use replay::replay_event;
use serde_json::Value;

/// The value at JSON pointer `path` (`/a/b`), or null.
fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    v.pointer(path).unwrap_or(&Value::Null)
}

/// The value at `path` as display text: strings bare, others as JSON, null as `-`.
fn text(v: &Value, path: &str) -> String {
    match at(v, path) {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn status(s: &Value, json: bool) -> anyhow::Result<()> {
    if json {
        return pretty(s);
    }
    println!(
        "Portcullis {} on {} (pid {}, up {}s)",
        text(s, "/version"),
        text(s, "/host"),
        text(s, "/pid"),
        text(s, "/uptime_seconds")
    );
    println!("  store      {}", text(s, "/store"));
    println!("  api        {}", text(s, "/api_socket"));
    println!(
        "  intercept  cgroup {} · pins {} · {} addresses protected",
        text(s, "/intercept/cgroup"),
        text(s, "/intercept/pin_dir"),
        text(s, "/intercept/protected_addresses")
    );
    println!(
        "  sessions   {} active, {} since start",
        text(s, "/sessions/active"),
        text(s, "/sessions/total")
    );
    println!(
        "  policy     {} ({} rules)",
        text(s, "/policy/dir"),
        text(s, "/policy/rules")
    );
    for t in at(s, "/policy/targets").as_array().into_iter().flatten() {
        let addrs: Vec<&str> = at(t, "/addresses")
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!(
            "    {:<20} {:<8} {}",
            text(t, "/name"),
            text(t, "/protocol"),
            addrs.join(", ")
        );
    }
    Ok(())
}

pub fn sessions(list: &Value, json: bool) -> anyhow::Result<()> {
    if json {
        return pretty(list);
    }
    let rows = list.as_array().map_or(&[][..], Vec::as_slice);
    if rows.is_empty() {
        println!("No sessions recorded yet.");
        return Ok(());
    }
    println!(
        "{:<36}  {:<19}  {:<8}  {:<14}  {:<18}  {:>9}  {:>9}",
        "ID", "STARTED (UTC)", "OUTCOME", "TARGET", "WHO", "UP", "DOWN"
    );
    for s in rows {
        let who = if at(s, "/principal").is_null() {
            "-".to_owned()
        } else {
            format!(
                "{}/{}",
                text(s, "/principal/user"),
                text(s, "/principal/pid")
            )
        };
        println!(
            "{:<36}  {:<19}  {:<8}  {:<14}  {:<18}  {:>9}  {:>9}",
            text(s, "/id"),
            time(at(s, "/started_at")),
            text(s, "/outcome"),
            text(s, "/target"),
            who,
            text(s, "/bytes_up"),
            text(s, "/bytes_down"),
        );
    }
    Ok(())
}

pub fn session(s: &Value, json: bool) -> anyhow::Result<()> {
    if json {
        return pretty(s);
    }
    let reason = at(s, "/reason")
        .as_str()
        .map_or(String::new(), |r| format!(" — {r}"));
    println!("Session {}", text(s, "/id"));
    println!("  outcome    {}{reason}", text(s, "/outcome"));
    println!("  rule       {}", text(s, "/rule"));
    println!(
        "  target     {} ({}) at {}",
        text(s, "/target"),
        text(s, "/protocol"),
        text(s, "/orig_dst")
    );
    println!(
        "  client     {} on host {}",
        text(s, "/client_addr"),
        text(s, "/host")
    );
    println!(
        "  started    {}   ended {}",
        time(at(s, "/started_at")),
        time(at(s, "/ended_at"))
    );
    println!(
        "  traffic    {} bytes up, {} bytes down",
        text(s, "/bytes_up"),
        text(s, "/bytes_down")
    );
    if !at(s, "/principal").is_null() {
        let p = |k: &str| text(s, &format!("/principal/{k}"));
        println!(
            "  user       {} (uid {}, gid {}) groups {}",
            p("user"),
            p("uid"),
            p("gid"),
            p("unix_groups")
        );
        if let Some(linked) = identity::linked(s) {
            println!("  identity   {linked}");
        }
        println!(
            "  process    pid {} (parent {}) {} — {}",
            p("pid"),
            p("ppid"),
            p("exe"),
            p("cmdline")
        );
        println!("  cgroup     {}", p("cgroup"));
    }
    Ok(())
}

pub fn approvals(list: &Value, json: bool) -> anyhow::Result<()> {
    if json {
        return pretty(list);
    }
    let rows = list.as_array().map_or(&[][..], Vec::as_slice);
    if rows.is_empty() {
        println!("No requests waiting for you.");
        return Ok(());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    println!(
        "{:<36}  {:<9}  {:<14}  {:<26}  {:<22}  {:>6}  {:>7}",
        "ID", "STATUS", "TARGET", "WHO (PROCESS)", "WHAT", "AGE", "VOTES"
    );
    for r in rows {
        let created = at(r, "/created_at")
            .as_i64()
            .and_then(|ms| u64::try_from(ms / 1000).ok())
            .unwrap_or(now);
        let votes = format!(
            "{}/{}",
            at(r, "/approvals").as_array().map_or(0, Vec::len),
            text(r, "/quorum")
        );
        println!(
            "{:<36}  {:<9}  {:<14}  {:<26}  {:<22}  {:>5}s  {:>7}",
            text(r, "/id"),
            text(r, "/status"),
            text(r, "/target"),
            format!(
                "{} (pid {} {})",
                text(r, "/principal/user"),
                text(r, "/principal/pid"),
                text(r, "/principal/comm")
            ),
            text(r, "/summary"),
            now.saturating_sub(created),
            votes,
        );
        if let Some(why) = at(r, "/justification").as_str() {
            println!("{:<36}  why: {why}", "");
        }
    }
    println!(
        "Approve with `portcullis approve ID [--reason …]`, deny with `portcullis deny ID --reason …`."
    );
    Ok(())
}

// ---- sessions replay ----

/// Widest a cell of a recorded result is printed; longer values end in `…`.
const MAX_CELL: usize = 40;

/// The head of a replay transcript: the session, who ran it, where, when, and how it
/// ended.
pub fn replay_header(s: &Value) -> String {
    let who = if at(s, "/principal").is_null() {
        "unknown (the connection could not be attributed to a process)".to_owned()
    } else {
        let p = |k: &str| field(s, &format!("/principal/{k}"));
        format!(
            "{} (uid {}) · pid {} {} · {}",
            p("user"),
            p("uid"),
            p("pid"),
            p("exe"),
            p("cmdline")
        ) + &identity::linked(s).map_or(String::new(), |l| format!(" · {l}"))
    };
    let reason = at(s, "/reason")
        .as_str()
        .map_or(String::new(), |r| format!(" — {}", clean(r, false)));
    format!(
        "Session {}\n  who        {who}\n  target     {} ({}) at {}\n  client     {} on host {}\n  \
         started    {}   ended {}\n  outcome    {}{reason}\n",
        field(s, "/id"),
        field(s, "/target"),
        field(s, "/protocol"),
        field(s, "/orig_dst"),
        field(s, "/client_addr"),
        field(s, "/host"),
        time(at(s, "/started_at")),
        time(at(s, "/ended_at")),
        field(s, "/outcome"),
    )
}

/// The end of a replay transcript.
pub fn replay_footer(count: u64) -> String {
    match count {
        0 => "\nNo events recorded in this session.\n".to_owned(),
        1 => "\n1 event.\n".to_owned(),
        n => format!("\n{n} events.\n"),
    }
}

/// One value of a recorded row (or a class, a column name) on one line: strings bare,
/// null as `NULL`, anything else as JSON; at most [`MAX_CELL`] characters.
fn cell(v: &Value) -> String {
    let text = match v {
        Value::Null => "NULL".to_owned(),
        Value::String(s) => clean(s, false),
        other => clean(&other.to_string(), false),
    };
    if text.chars().count() <= MAX_CELL {
        return text;
    }
    let mut cut: String = text.chars().take(MAX_CELL - 1).collect();
    cut.push('…');
    cut
}

/// [`text`], cleaned for the terminal.
fn field(v: &Value, path: &str) -> String {
    clean(&text(v, path), false)
}

/// `s` with its control characters escaped (`\u{1b}`), so that recorded text, which a
/// client chose, cannot drive the reader's terminal; with `multiline`, newlines and
/// tabs are kept.
fn clean(s: &str, multiline: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() && !(multiline && matches!(c, '\n' | '\t')) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Microseconds for a person: `850 µs`, `12.3 ms`, `2.41 s`.
fn duration(us: i64) -> String {
    match us {
        ..1_000 => format!("{us} µs"),
        1_000..1_000_000 => format!("{}.{} ms", us / 1_000, us % 1_000 / 100),
        _ => format!("{}.{:02} s", us / 1_000_000, us % 1_000_000 / 10_000),
    }
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS.mmm` (UTC).
fn time_ms(v: &Value) -> String {
    match v.as_i64() {
        Some(ms) => format!("{}.{:03}", time(v), ms.rem_euclid(1000)),
        None => "-".into(),
    }
}

fn pretty(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS` (UTC).
fn time(v: &Value) -> String {
    let Some(ms) = v.as_i64() else {
        return "-".into();
    };
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_times() {
        assert_eq!(time(&Value::from(0)), "1970-01-01 00:00:00");
        assert_eq!(
            time(&Value::from(1_795_000_000_000_i64)),
            "2026-11-18 11:06:40"
        );
        assert_eq!(time(&Value::Null), "-");
    }

    fn session() -> Value {
        serde_json::json!({
            "id": "0196f0c2-0000-7000-8000-000000000001",
            "host": "gw1",
            "started_at": 1_700_000_000_000_i64,
            "ended_at": 1_700_000_065_000_i64,
            "protocol": "postgres",
            "target": "db1",
            "client_addr": "127.0.0.1:40000",
            "orig_dst": "10.0.0.5:5432",
            "principal": {
                "pid": 4242, "ppid": 1, "uid": 1000, "gid": 1000, "user": "alice",
                "unix_groups": ["dev"], "exe": "/usr/bin/psql",
                "cmdline": "psql -h 10.0.0.5", "comm": "psql", "cgroup": null
            },
            "outcome": "closed",
            "rule": "allow-dev",
            "reason": null,
            "bytes_up": 10,
            "bytes_down": 20
        })
    }

    /// A recorded statement.
    fn statement() -> crate::record::StatementRecord {
        crate::record::StatementRecord {
            session_id: serde_json::from_value(at(&session(), "/id").clone()).unwrap(),
            seq: 3,
            at_ms: 1_700_000_001_234,
            text: "SELECT id, name\n  FROM users WHERE team = $1 AND note = $2\n".into(),
            params: Some(serde_json::json!(["red\u{1b}[2J", null])),
            classes: vec!["read".into()],
            tables: vec!["users".into()],
            verdict: "approved".into(),
            decided_by: Some("bob, carol".into()),
            request_id: Some("0196f0c2-aaaa".into()),
            reason: None,
            duration_us: Some(12_345),
            rows_affected: Some(2),
            command_tag: Some("SELECT 2".into()),
            error: None,
            rows: Some(serde_json::json!({
                "columns": ["id", "name"],
                "rows": [[1, "alice"], ["22", null]],
                "truncated": true
            })),
            hash: "ab".repeat(32),
        }
    }

    #[test]
    fn a_replay_reads_like_a_transcript() {
        let st = event(statement());
        let transcript = replay_header(&session()) + &replay_event(&st) + &replay_footer(1);
        assert_eq!(
            transcript,
            "Session 0196f0c2-0000-7000-8000-000000000001
  who        alice (uid 1000) · pid 4242 /usr/bin/psql · psql -h 10.0.0.5
  target     db1 (postgres) at 10.0.0.5:5432
  client     127.0.0.1:40000 on host gw1
  started    2023-11-14 22:13:20   ended 2023-11-14 22:14:25
  outcome    closed

#3  2023-11-14 22:13:21.234  approved by bob, carol (request 0196f0c2-aaaa)  [read]
    SELECT id, name
      FROM users WHERE team = $1 AND note = $2
    params   $1 = 'red\\u{1b}[2J', $2 = NULL
    result   SELECT 2 in 12.3 ms
      id | name
      ---+------
      1  | alice
      22 | NULL
      … (more rows were not recorded)

1 event.
"
        );
    }

    #[test]
    fn a_denied_statement_shows_why_and_the_error() {
        let mut record = statement();
        record.verdict = "denied".into();
        record.decided_by = Some("no-drop".into());
        record.request_id = None;
        record.text = "DROP TABLE users".into();
        record.params = None;
        record.classes = vec!["ddl".into(), "drop".into()];
        record.reason = Some("dropping tables needs a review".into());
        record.duration_us = None;
        record.rows_affected = None;
        record.command_tag = None;
        record.error = Some("42501 Portcullis: denied by no-drop".into());
        record.rows = None;
        let st = event(record);
        assert_eq!(
            replay_event(&st),
            "
#3  2023-11-14 22:13:21.234  denied by no-drop  [ddl, drop]
    DROP TABLE users
    reason   dropping tables needs a review
    error    42501 Portcullis: denied by no-drop
"
        );
        assert_eq!(replay_footer(0), "\nNo events recorded in this session.\n");
    }

    /// A statement as the API serves it: an event of kind `sql`.
    fn event(st: crate::record::StatementRecord) -> Value {
        serde_json::to_value(crate::record::EventRecord::from_statement(st)).unwrap()
    }

    #[test]
    fn a_kind_without_a_formatter_shows_its_summary_and_details() {
        let mut ev = event(statement());
        ev["kind"] = "x-custom".into();
        ev["summary"] = "systemctl restart app".into();
        ev["details"] = serde_json::json!({ "command": "systemctl restart app", "exit": 0 });
        ev["payload"] = "cd".repeat(32).into();
        ev["duration_us"] = Value::Null;
        assert_eq!(
            replay_event(&ev),
            format!(
                "
#3  2023-11-14 22:13:21.234  approved by bob, carol (request 0196f0c2-aaaa)  [x-custom]
    systemctl restart app
    command  systemctl restart app
    exit     0
    payload  sha256 {}
",
                "cd".repeat(32)
            )
        );
    }

    #[test]
    fn replay_helpers() {
        assert_eq!(duration(850), "850 µs");
        assert_eq!(duration(12_345), "12.3 ms");
        assert_eq!(duration(2_410_000), "2.41 s");
        assert_eq!(cell(&Value::from("x".repeat(50))).chars().count(), MAX_CELL);
        assert_eq!(cell(&Value::from("a\nb")), "a\\nb");
        assert_eq!(clean("a\n\tb\u{7}", true), "a\n\tb\\u{7}");
        let unattributed = serde_json::json!({ "id": "x", "principal": null });
        assert!(replay_header(&unattributed).contains("who        unknown"));
    }
}
