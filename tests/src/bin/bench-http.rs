//! `cargo xtask bench http`: what the HTTP proxy costs, measured in one run.
//!
//! nginx (Debian's, `worker_processes auto`) on 127.0.0.6 serves a small JSON
//! document and a large file; three ways reach it:
//! 1. direct: the client outside the bench cgroup;
//! 2. Portcullis: the client inside the cgroup, redirected into a daemon whose
//!    policy allows every request (each one still parsed, decided and recorded);
//! 3. nginx as a plain reverse proxy (keep-alive upstream, no buffering): what a user
//!    might put in the path instead.
//!
//! `wrk` measures requests per second and p50/p99 latency at 1 and 32 connections
//! for the small JSON; `curl` the MB/s of the large download; then the MB/s of a JSON
//! array with an email per item through a target whose rule masks emails (and
//! direct, unmasked, for scale). Rounds are interleaved so machine noise hits every
//! path alike; medians and ratios are printed, and the daemon's CPU time per request
//! (user + system from `/proc/PID/stat` over each Portcullis run, less sensitive to
//! a loaded machine than requests per second). Asserts nothing.
//! `BENCH_SECONDS` (wrk duration, default 10), `BENCH_ROUNDS` (default 3) and
//! `BENCH_BULK_MB` (default 1024) change the run. `BENCH_SERVE=SECONDS` measures
//! nothing: it keeps the servers and daemon up that long and prints how to load them
//! (for `perf` on the daemon).

use anyhow::{Context as _, bail};
use portcullis_tests::{
    cgroup::{TestCgroup, is_root},
    daemon::TestDaemon,
    http::{IP, Servers},
};
use std::{fmt::Write as _, process::Command};

/// Connection counts wrk runs with.
const CONNECTIONS: [u32; 2] = [1, 32];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Direct,
    Portcullis,
    Nginx,
}

const ROUTES: [Route; 3] = [Route::Direct, Route::Portcullis, Route::Nginx];

impl Route {
    fn label(self) -> &'static str {
        match self {
            Route::Direct => "direct",
            Route::Portcullis => "Portcullis",
            Route::Nginx => "nginx proxy",
        }
    }
}

/// One wrk run.
#[derive(Clone, Copy, Default)]
struct Load {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// The daemon's CPU microseconds per request (Portcullis runs only).
    cpu_us: f64,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    if !is_root() {
        bail!("bench http needs root (eBPF, cgroups)");
    }
    for tool in ["/usr/bin/wrk", "/usr/bin/curl", "/usr/sbin/nginx"] {
        if !std::path::Path::new(tool).exists() {
            bail!("{tool} is missing; run `cargo xtask setup`");
        }
    }
    let seconds: u32 = env_or("BENCH_SECONDS", 10);
    let rounds: usize = env_or("BENCH_ROUNDS", 3);
    let bulk_mb: usize = env_or("BENCH_BULK_MB", 1024);
    let servers = Servers::start()?.context("nginx is missing")?;
    write_files(&servers, bulk_mb)?;
    let cg = TestCgroup::new("bench-http")?;
    let policy = format!(
        "[[target]]\nname = \"web\"\nprotocol = \"http\"\naddress = \"{IP}:{}\"\n\n\
         [[target]]\nname = \"masked\"\nprotocol = \"http\"\naddress = \"{IP}:{}\"\n\n\
         [[rule]]\nname = \"all\"\ntargets = [\"*\"]\naction = \"allow\"\n\n\
         [[rule]]\nname = \"mask\"\ntargets = [\"masked\"]\naction = \"allow\"\nmask = [\"email\"]\n",
        servers.web_port, servers.alt_port
    );
    let extra = std::env::var("BENCH_DAEMON_CONFIG").unwrap_or_default();
    let daemon = TestDaemon::start("bench-http", &cg, &policy, &extra)?;
    let url = |route: Route, path: &str| {
        let port = match route {
            Route::Nginx => servers.proxy_port,
            Route::Direct | Route::Portcullis => servers.web_port,
        };
        format!("http://{IP}:{port}{path}")
    };
    let cgroup = |route: Route| (route == Route::Portcullis).then_some(&cg);
    if let Some(serve) = std::env::var("BENCH_SERVE")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        println!(
            "daemon pid {}; load it with: echo $$ > {}/cgroup.procs; wrk {}",
            daemon.pid().unwrap_or(0),
            cg.path().display(),
            url(Route::Portcullis, "/small.json")
        );
        std::thread::sleep(std::time::Duration::from_secs(serve));
        return Ok(());
    }

    let mut loads: Vec<Vec<Vec<Load>>> = vec![vec![Vec::new(); ROUTES.len()]; CONNECTIONS.len()];
    let mut bulk: Vec<Vec<f64>> = vec![Vec::new(); ROUTES.len()];
    let mut masked: Vec<Vec<f64>> = vec![Vec::new(); 2];
    for round in 0..rounds {
        eprintln!("bench http: round {}/{rounds}", round + 1);
        for (c, &conns) in CONNECTIONS.iter().enumerate() {
            for (r, &route) in ROUTES.iter().enumerate() {
                let cpu_before = daemon.pid().map(cpu_ticks);
                let mut load = wrk(cgroup(route), &url(route, "/small.json"), conns, seconds)?;
                if route == Route::Portcullis
                    && let (Some(Some(before)), Some(Some(after))) =
                        (cpu_before, daemon.pid().map(cpu_ticks))
                {
                    let requests = load.rps * f64::from(seconds);
                    load.cpu_us =
                        (after - before) as f64 * 1e6 / ticks_per_second() / requests.max(1.0);
                }
                if let Some(runs) = loads.get_mut(c).and_then(|l| l.get_mut(r)) {
                    runs.push(load);
                }
            }
        }
        for (r, &route) in ROUTES.iter().enumerate() {
            let speed = download(cgroup(route), &url(route, "/files/bulk.bin"))?;
            if let Some(runs) = bulk.get_mut(r) {
                runs.push(speed);
            }
        }
        let json = |port| format!("http://{IP}:{port}/files/users.json");
        let direct = download(None, &json(servers.alt_port))?;
        let through = download(Some(&cg), &json(servers.alt_port))?;
        if let [plain, mask] = masked.as_mut_slice() {
            plain.push(direct);
            mask.push(through);
        }
    }
    print!("{}", report(&loads, &bulk, &masked, seconds, bulk_mb));
    drop(daemon);
    Ok(())
}

/// The large download and a JSON array with one email per item.
fn write_files(servers: &Servers, bulk_mb: usize) -> anyhow::Result<()> {
    let chunk = vec![0x5au8; 1024 * 1024];
    let mut file = std::fs::File::create(servers.dir.path().join("www/files/bulk.bin"))?;
    for _ in 0..bulk_mb {
        std::io::Write::write_all(&mut file, &chunk)?;
    }
    let mut users = String::from("[");
    for i in 0..1_000_000 {
        if i > 0 {
            users.push(',');
        }
        let _ = write!(
            users,
            r#"{{"id":{i},"name":"User {i}","email":"user{i}@example.com","plan":"basic","active":true}}"#
        );
    }
    users.push(']');
    servers.add_file("users.json", users.as_bytes())
}

/// A command run inside `cgroup` (redirected) or outside it.
fn command(cgroup: Option<&TestCgroup>, argv: &[&str]) -> Command {
    if let Some(cg) = cgroup {
        return cg.command(None, argv);
    }
    let mut cmd = Command::new(argv.first().copied().unwrap_or("false"));
    cmd.args(argv.get(1..).unwrap_or_default());
    cmd
}

fn wrk(cgroup: Option<&TestCgroup>, url: &str, conns: u32, seconds: u32) -> anyhow::Result<Load> {
    let threads = conns.min(2).to_string();
    let (conns, duration) = (conns.to_string(), format!("{seconds}s"));
    let argv = [
        "wrk",
        "-t",
        &threads,
        "-c",
        &conns,
        "-d",
        &duration,
        "--latency",
        url,
    ];
    let out = command(cgroup, &argv).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("Non-2xx") || text.contains("Socket errors") {
        bail!(
            "wrk {url} failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let field = |prefix: &str| -> Option<&str> {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
    };
    let rps = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    Ok(Load {
        rps,
        p50_ms: field("50%").map_or(0.0, millis),
        p99_ms: field("99%").map_or(0.0, millis),
        cpu_us: 0.0,
    })
}

/// A process's user + system CPU time so far, in clock ticks (`/proc/PID/stat`
/// fields 14 and 15, after the parenthesised command name).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// wrk's latency (`812.00us`, `1.20ms`, `2.01s`) in milliseconds.
fn millis(text: &str) -> f64 {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: f64 = number.parse().unwrap_or(0.0);
    match unit {
        "us" => n / 1000.0,
        "s" => n * 1000.0,
        _ => n,
    }
}

/// MB/s of one download with curl (to /dev/null).
fn download(cgroup: Option<&TestCgroup>, url: &str) -> anyhow::Result<f64> {
    let argv = [
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{speed_download} %{http_code}",
        url,
    ];
    let out = command(cgroup, &argv).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = text.split_whitespace();
    let speed: f64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
    if fields.next() != Some("200") {
        bail!(
            "download {url} failed: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(speed / 1e6)
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn report(
    loads: &[Vec<Vec<Load>>],
    bulk: &[Vec<f64>],
    masked: &[Vec<f64>],
    seconds: u32,
    bulk_mb: usize,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\nSmall JSON (wrk, {seconds}s per run, medians):");
    let _ = writeln!(
        out,
        "{:>6}  {:<12} {:>10} {:>9} {:>9} {:>12}",
        "conns", "path", "req/s", "p50 ms", "p99 ms", "CPU us/req"
    );
    for (c, conns) in CONNECTIONS.iter().enumerate() {
        let mut rps = [0.0; 3];
        for (r, route) in ROUTES.iter().enumerate() {
            let runs = loads
                .get(c)
                .and_then(|l| l.get(r))
                .cloned()
                .unwrap_or_default();
            let pick = |f: fn(&Load) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
            let (req, p50, p99) = (pick(|l| l.rps), pick(|l| l.p50_ms), pick(|l| l.p99_ms));
            let cpu = pick(|l| l.cpu_us);
            let cpu = if cpu > 0.0 {
                format!("{cpu:>12.1}")
            } else {
                String::new()
            };
            if let Some(slot) = rps.get_mut(r) {
                *slot = req;
            }
            let _ = writeln!(
                out,
                "{conns:>6}  {:<12} {req:>10.0} {p50:>9.3} {p99:>9.3} {cpu}",
                route.label()
            );
        }
        let [direct, portcullis, nginx] = rps;
        let _ = writeln!(
            out,
            "        Portcullis/direct {:.2}   Portcullis/nginx {:.2}",
            portcullis / direct.max(1.0),
            portcullis / nginx.max(1.0)
        );
    }
    let _ = writeln!(out, "\n{bulk_mb} MiB download (curl, medians):");
    let mbs: Vec<f64> = bulk.iter().map(|b| median(b)).collect();
    for (route, speed) in ROUTES.iter().zip(&mbs) {
        let _ = writeln!(out, "        {:<12} {speed:>8.0} MB/s", route.label());
    }
    if let [direct, portcullis, nginx] = mbs.as_slice() {
        let _ = writeln!(
            out,
            "        Portcullis/direct {:.2}   Portcullis/nginx {:.2}",
            portcullis / direct.max(1.0),
            portcullis / nginx.max(1.0)
        );
    }
    let (plain, mask) = (
        median(masked.first().map_or(&[][..], Vec::as_slice)),
        median(masked.get(1).map_or(&[][..], Vec::as_slice)),
    );
    let _ = writeln!(
        out,
        "\nJSON with an email per item, masked through Portcullis: {mask:.0} MB/s \
         (direct, unmasked: {plain:.0} MB/s; ratio {:.2})",
        mask / plain.max(1.0)
    );
    out
}
