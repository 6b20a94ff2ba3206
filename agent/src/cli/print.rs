//! Human-readable output of API answers (`--json` prints them as they are).

use serde_json::Value;

pub fn status(s: &Value, json: bool) -> anyhow::Result<()> {
    if json {
        return pretty(s);
    }
    println!("Portcullis {} on {} (pid {}, up {}s)", s["version"].as_str().unwrap_or("?"), s["host"].as_str().unwrap_or("?"), s["pid"], s["uptime_seconds"]);
    println!("  store      {}", s["store"].as_str().unwrap_or("?"));
    println!("  api        {}", s["api_socket"].as_str().unwrap_or("?"));
    println!("  intercept  cgroup {} · pins {} · {} addresses protected", s["intercept"]["cgroup"].as_str().unwrap_or("?"), s["intercept"]["pin_dir"].as_str().unwrap_or("?"), s["intercept"]["protected_addresses"]);
    println!("  sessions   {} active, {} since start", s["sessions"]["active"], s["sessions"]["total"]);
    println!("  policy     {} ({} rules)", s["policy"]["dir"].as_str().unwrap_or("?"), s["policy"]["rules"]);
    for t in s["policy"]["targets"].as_array().into_iter().flatten() {
        let addrs: Vec<&str> = t["addresses"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        println!("    {:<20} {:<8} {}", t["name"].as_str().unwrap_or("?"), t["protocol"].as_str().unwrap_or("?"), addrs.join(", "));
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
    println!("{:<13} {:<20} {:<9} {:<16} {:<22} {:>10} {:>10}", "ID", "STARTED", "OUTCOME", "TARGET", "WHO", "UP", "DOWN");
    for s in rows {
        let who = s["principal"].as_object().map_or_else(|| "-".to_owned(), |p| format!("{}/{}", p.get("user").and_then(Value::as_str).unwrap_or("?"), p.get("pid").unwrap_or(&Value::Null)));
        println!(
            "{:<13} {:<20} {:<9} {:<16} {:<22} {:>10} {:>10}",
            s["id"].as_str().unwrap_or("?").get(..13).unwrap_or("?"),
            time(&s["started_at"]),
            s["outcome"].as_str().unwrap_or("?"),
            s["target"].as_str().unwrap_or("-"),
            who,
            s["bytes_up"],
            s["bytes_down"],
        );
    }
    Ok(())
}

pub fn session(s: &Value, json: bool) -> anyhow::Result<()> {
    if json {
        return pretty(s);
    }
    let field = |k: &str| s[k].as_str().map_or_else(|| s[k].to_string(), str::to_owned);
    println!("Session {}", field("id"));
    println!("  outcome    {}{}", field("outcome"), s["reason"].as_str().map_or(String::new(), |r| format!(" — {r}")));
    println!("  rule       {}", s["rule"].as_str().unwrap_or("-"));
    println!("  target     {} ({}) at {}", s["target"].as_str().unwrap_or("-"), field("protocol"), s["orig_dst"].as_str().unwrap_or("-"));
    println!("  client     {} on host {}", field("client_addr"), field("host"));
    println!("  started    {}   ended {}", time(&s["started_at"]), time(&s["ended_at"]));
    println!("  traffic    {} bytes up, {} bytes down", s["bytes_up"], s["bytes_down"]);
    if let Some(p) = s["principal"].as_object() {
        let get = |k: &str| p.get(k).map_or_else(String::new, |v| v.as_str().map_or_else(|| v.to_string(), str::to_owned));
        println!("  user       {} (uid {}, gid {}) groups {}", get("user"), get("uid"), get("gid"), get("unix_groups"));
        println!("  process    pid {} (parent {}) {} — {}", get("pid"), get("ppid"), get("exe"), get("cmdline"));
        println!("  cgroup     {}", get("cgroup"));
    }
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
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
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
        assert_eq!(time(&Value::from(1_795_000_000_000_i64)), "2026-11-18 11:06:40");
        assert_eq!(time(&Value::Null), "-");
    }
}
