//! Human-readable output of API answers (`--json` prints them as they are).

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
    }
    println!(
        "Approve with `portcullis approve ID [--reason …]`, deny with `portcullis deny ID --reason …`."
    );
    Ok(())
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
}
