//! `cargo xtask bench learn`: what learned columns (issue 22) cost, in one run.
//!
//! 1. The hot path, in process: per value of an address column, masking by value
//!    (learning off) next to the learned column masked whole, and the learned-set
//!    lookups (`column_rule` once per result column, a recognizer hit on a column
//!    already learned) in ns.
//! 2. The hot path, end to end: `pgbench` reading 10 rows with an address each
//!    (`SELECT … WHERE id BETWEEN :a AND :a + 9`) directly, through a daemon whose rule
//!    masks by value with `mask_learn = "off"`, and through one with `"results"` (the
//!    column learned on the first read): TPS and the daemon's CPU per transaction.
//! 3. `discover` on a generated table set (`BENCH_DISCOVER_MB`, 256 MB unless told;
//!    1024 for the 1 GB): its duration, tables sampled and columns learned.
//!
//! Prints numbers and ratios; asserts nothing. `BENCH_SECONDS` sets each pgbench run.

use anyhow::{Context as _, bail};
use portcullis::mask::{
    LearnedSet, MaskSpec, Masker,
    learned::{ColumnId, Learned},
};
use portcullis_tests::{
    cgroup::{TestCgroup, is_root},
    daemon::TestDaemon,
    postgres::PgServer,
};
use std::{hint::black_box, path::Path, process::Command, sync::Arc, time::Instant};

const DATABASE: &str = "bench";
const PEOPLE: u32 = 100_000;

fn main() -> anyhow::Result<()> {
    in_process()?;
    if !is_root() {
        bail!("the end-to-end parts need root (eBPF, cgroups, a PostgreSQL run as `postgres`)");
    }
    let pg = PgServer::start().context("cannot start PostgreSQL")?;
    pg.create_database(DATABASE)?;
    pg.psql(
        DATABASE,
        &format!(
            "CREATE TABLE people AS SELECT g AS id, 'name ' || g AS name, \
             'user' || g || '@example.com' AS email, md5(g::text) AS note \
             FROM generate_series(1, {PEOPLE}) g; \
             ALTER TABLE people ADD PRIMARY KEY (id); ANALYZE people;"
        ),
    )?;
    end_to_end(&pg)?;
    discover(&pg)
}

/// Nanoseconds per call of `f`, the fastest of five runs of `n` calls.
fn ns_per(n: u32, mut f: impl FnMut(u32)) -> f64 {
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for i in 0..n {
                f(i);
            }
            t.elapsed().as_secs_f64() * 1e9 / f64::from(n)
        })
        .fold(f64::INFINITY, f64::min)
}

fn in_process() -> anyhow::Result<()> {
    let spec = MaskSpec {
        mask: vec!["email".into(), "credit_card".into()],
        ..MaskSpec::default()
    };
    let set = Arc::new(LearnedSet::new("db", None));
    let masker = Masker::compile(std::slice::from_ref(&spec), None)?.with_learned(Arc::clone(&set));
    // A thousand learned columns, as a big schema might have.
    for i in 0..1000 {
        set.learn(&id(&format!("t{i}"), "email"), "email", HOW);
    }
    set.learn(&id("people", "email"), "email", HOW);
    let values: Vec<Vec<u8>> = (0..1000)
        .map(|i| format!("user{i}@example.com").into_bytes())
        .collect();
    let pick = |i: u32| {
        values
            .get(i as usize % values.len())
            .map_or(&[][..], Vec::as_slice)
    };
    let by_value = ns_per(200_000, |i| {
        black_box(masker.mask_value(black_box(pick(i))));
    });
    let rule = masker
        .column_rule("people", "email")
        .context("the learned column has no rule")?;
    let whole = ns_per(200_000, |i| {
        black_box(masker.mask_column_value(&rule, black_box(pick(i))));
    });
    let lookup = ns_per(1_000_000, |_| {
        black_box(masker.column_rule(black_box("people"), black_box("email")));
    });
    let plain_lookup = ns_per(1_000_000, |_| {
        black_box(masker.column_rule(black_box("people"), black_box("note")));
    });
    let again = ns_per(1_000_000, |_| {
        black_box(set.learn(black_box(&id("people", "email")), "email", HOW));
    });
    println!("Learned columns, in process (1,001 learned columns):");
    println!("  address masked by value (learning off)     {by_value:>8.1} ns/value");
    println!(
        "  address in a learned column, masked whole  {whole:>8.1} ns/value ({:.2}x of by value)",
        whole / by_value
    );
    println!(
        "  column_rule of a learned column           {lookup:>8.1} ns (once per result column)"
    );
    println!("  column_rule of a plain column             {plain_lookup:>8.1} ns");
    println!(
        "  a hit on a column already learned         {again:>8.1} ns (one snapshot load, no write)"
    );
    Ok(())
}

const HOW: Learned<'static> = Learned {
    by: "results",
    session: None,
};

fn id(table: &str, column: &str) -> ColumnId {
    ColumnId {
        schema: "public".into(),
        table: table.into(),
        column: column.into(),
        relid: 1,
        attnum: 3,
        type_oid: 25,
    }
}

/// The policy of a daemon in front of `pg` whose rule masks by value, learning `learn`.
fn policy(pg: &PgServer, learn: &str) -> String {
    format!(
        "[[target]]\nname = \"db\"\nprotocol = \"postgres\"\naddress = \"{}:{}\"\n\
         tls = \"disable\"\ncredentials = {{ user = \"{}\" }}\n\n\
         [[rule]]\nname = \"all\"\ntargets = [\"db\"]\naction = \"allow\"\n\
         mask = [\"email\", \"credit_card\"]\nmask_learn = \"{learn}\"\n",
        pg.host(),
        pg.port(),
        PgServer::USER
    )
}

fn end_to_end(pg: &PgServer) -> anyhow::Result<()> {
    let script = tempfile::Builder::new()
        .prefix("bench-learn-")
        .suffix(".sql")
        .tempfile_in("/tmp")?;
    std::fs::write(
        script.path(),
        format!(
            "\\set a random(1, {})\nSELECT id, name, email, note FROM people \
             WHERE id BETWEEN :a AND :a + 9;\n",
            PEOPLE - 10
        ),
    )?;
    std::fs::set_permissions(
        script.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;
    let seconds = std::env::var("BENCH_SECONDS").unwrap_or_else(|_| "10".into());
    let conninfo = format!(
        "host={} port={} dbname={DATABASE} user={} sslmode=disable",
        pg.host(),
        pg.port(),
        PgServer::USER
    );
    let pgbench = pg.bindir().join("pgbench").display().to_string();
    let script = script.path().display().to_string();
    let run = |cg: Option<&TestCgroup>,
               daemon: Option<&TestDaemon>|
     -> anyhow::Result<(f64, Option<f64>)> {
        let argv = [
            pgbench.as_str(),
            "-n",
            "-f",
            &script,
            "-T",
            &seconds,
            "-c",
            "4",
            "-j",
            "4",
            "-M",
            "prepared",
            &conninfo,
        ];
        let mut cmd = match cg {
            Some(cg) => cg.command(None, &argv),
            None => {
                let mut c = Command::new(&pgbench);
                c.args(argv.get(1..).unwrap_or_default());
                c
            }
        };
        let pid = daemon.map(|d| daemon_pid(&d.config)).transpose()?;
        let before = pid.map(cpu_seconds).transpose()?;
        let out = cmd.output().context("cannot run pgbench")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "pgbench failed: {}{stdout}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let field = |prefix: &str| -> anyhow::Result<f64> {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(prefix))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("no `{prefix}` in pgbench's output:\n{stdout}"))
        };
        let tx = field("number of transactions actually processed: ")?;
        let cpu = match (pid, before) {
            (Some(pid), Some(before)) => Some((cpu_seconds(pid)? - before) * 1e6 / tx.max(1.0)),
            _ => None,
        };
        Ok((field("tps = ")?, cpu))
    };
    let cg_off = TestCgroup::new("bench-learn-off")?;
    let cg_on = TestCgroup::new("bench-learn-on")?;
    let off = TestDaemon::start("bench-learn-off", &cg_off, &policy(pg, "off"), "")?;
    let on = TestDaemon::start("bench-learn-on", &cg_on, &policy(pg, "results"), "")?;
    // Warm-up; the first read through `on` teaches people.email.
    run(Some(&cg_off), Some(&off))?;
    run(Some(&cg_on), Some(&on))?;
    let learned = on.cli(&["masking", "learned", "--json"]);
    let learned = String::from_utf8_lossy(&learned.stdout);
    if !learned.contains("\"people\"") {
        bail!("people.email was not learned: {learned}\n{}", on.log());
    }
    let direct = run(None, None)?;
    let by_value = run(Some(&cg_off), Some(&off))?;
    let whole = run(Some(&cg_on), Some(&on))?;
    let cpu = |c: Option<f64>| c.map_or("-".into(), |c| format!("{c:.1}"));
    println!("\npgbench, 4 clients, -M prepared, 10 rows with an address each, {seconds} s:");
    println!("  {:<34} {:>9} {:>14}", "path", "TPS", "daemon µs/tx");
    println!("  {:<34} {:>9.0} {:>14}", "direct", direct.0, "-");
    println!(
        "  {:<34} {:>9.0} {:>14}",
        "mask_learn = off (by value)",
        by_value.0,
        cpu(by_value.1)
    );
    println!(
        "  {:<34} {:>9.0} {:>14}",
        "mask_learn = results (learned)",
        whole.0,
        cpu(whole.1)
    );
    if let (Some(a), Some(b)) = (by_value.1, whole.1) {
        println!("  learned/off daemon CPU per transaction: {:.2}x", b / a);
    }
    Ok(())
}

/// Tables of the generated set.
const TABLES: u64 = 200;

/// Generates `BENCH_DISCOVER_MB` of tables (one in four with an address column) and
/// times `portcullis masking discover`.
fn discover(pg: &PgServer) -> anyhow::Result<()> {
    let mb: u64 = std::env::var("BENCH_DISCOVER_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    // About 330 bytes a row on disk.
    let rows = (mb * 1024 * 1024 / 330 / TABLES).max(1);
    println!("\nGenerating {TABLES} tables, {rows} rows each (~{mb} MB)…");
    let started = Instant::now();
    for t in 0..TABLES {
        let email = if t % 4 == 0 {
            "'u' || g || '@example.com'"
        } else {
            "'customer ' || g"
        };
        pg.psql(
            DATABASE,
            &format!(
                "CREATE TABLE set_{t} AS SELECT g AS id, {email} AS contact, md5(g::text) AS a, \
                 repeat(md5(g::text), 6) AS pad, now() AS at FROM generate_series(1, {rows}) g; \
                 ANALYZE set_{t};"
            ),
        )?;
    }
    let size = pg.psql(
        DATABASE,
        "SELECT pg_size_pretty(pg_database_size(current_database()))",
    )?;
    println!(
        "  generated in {:.1} s; database size {}",
        started.elapsed().as_secs_f64(),
        size.trim()
    );
    let cg = TestCgroup::new("bench-learn-discover")?;
    let d = TestDaemon::start("bench-learn-discover", &cg, &policy(pg, "results"), "")?;
    let t = Instant::now();
    let out = d.cli(&["masking", "discover", "db", "--json"]);
    let wall = t.elapsed();
    if !out.status.success() {
        bail!(
            "discover failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            d.log()
        );
    }
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    println!(
        "discover: {} tables, {} columns sampled, {} columns learned, {} notes, {} ms \
         (CLI wall time {:.0} ms)",
        report.get("tables_sampled").unwrap_or_default(),
        report.get("columns_sampled").unwrap_or_default(),
        report
            .get("learned")
            .and_then(serde_json::Value::as_array)
            .map_or(0, Vec::len),
        report
            .get("notes")
            .and_then(serde_json::Value::as_array)
            .map_or(0, Vec::len),
        report.get("duration_ms").unwrap_or_default(),
        wall.as_secs_f64() * 1000.0
    );
    Ok(())
}

/// User plus system CPU seconds of process `pid`.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: f64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse::<f64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    #[expect(clippy::cast_precision_loss, reason = "clock ticks per second")]
    Ok(ticks / hz.max(1) as f64)
}

/// The process running `portcullis daemon --config <config>`.
fn daemon_pid(config: &Path) -> anyhow::Result<u32> {
    let wanted = config.as_os_str().as_encoded_bytes();
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        if args.contains(&b"daemon".as_slice()) && args.contains(&wanted) {
            return Ok(pid);
        }
    }
    bail!(
        "no process runs `portcullis daemon --config {}`",
        config.display()
    )
}
