//! `cargo xtask bench postgres`: what the PostgreSQL proxy costs, measured in one run.
//!
//! One real PostgreSQL (`pgbench -i -s 10`), and three ways for `pgbench -S`
//! (select-only) to reach it, all with `sslmode=disable` on every leg:
//! 1. direct: pgbench outside the bench cgroup connects to the server;
//! 2. Portcullis: pgbench inside the cgroup connects to the same address, the
//!    programs redirect it into a daemon whose policy allows everything (each
//!    statement is still parsed, decided and recorded);
//! 3. pgbouncer in session mode (the pooler a user might put in front instead).
//!
//! Every configuration (clients × protocol mode) runs against every path in each
//! round, rounds interleaved so machine noise hits all alike; the table shows
//! medians and the ratios Portcullis/direct and Portcullis/pgbouncer, the CPU time
//! each proxy process spent per transaction (from `/proc/<pid>/stat`), which stays
//! meaningful when other work on the machine makes TPS noisy, and its threads'
//! context switches per transaction (`/proc/<pid>/task/*/status`). Asserts nothing.
//! `BENCH_SECONDS` and `BENCH_ROUNDS` shorten or lengthen the run;
//! `BENCH_DAEMON_CONFIG` adds lines to the daemon's config (to compare settings);
//! `BENCH_PROTOCOL=tcp` makes the target a plain TCP one, so the "Portcullis" path
//! shows what the redirect and relay alone cost, without the PostgreSQL proxy.
//! Servers, daemon, cgroup and pins are removed on the way out, on error or Ctrl-C
//! as well.

use anyhow::{Context as _, bail};
use portcullis_tests::{
    cgroup::{TestCgroup, is_root},
    daemon::TestDaemon,
    net::free_port,
    postgres::PgServer,
};
use std::{
    fmt::Write as _,
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

/// pgbench `-s`: 1,000,000 rows in `pgbench_accounts`.
const SCALE: &str = "10";
/// Seconds per pgbench run (`-T`), unless `BENCH_SECONDS` says otherwise.
const SECONDS: &str = "10";
/// Rounds, unless `BENCH_ROUNDS` says otherwise.
const ROUNDS: usize = 3;
const DATABASE: &str = "bench";

/// Client count and pgbench protocol mode (`-M`).
const CONFIGS: [(u32, &str); 3] = [(1, "simple"), (8, "simple"), (8, "prepared")];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Direct,
    Portcullis,
    Pgbouncer,
}

const ROUTES: [Route; 3] = [Route::Direct, Route::Portcullis, Route::Pgbouncer];

impl Route {
    fn label(self) -> &'static str {
        match self {
            Route::Direct => "direct",
            Route::Portcullis => "Portcullis",
            Route::Pgbouncer => "pgbouncer",
        }
    }
}

/// One pgbench run's figures.
#[derive(Clone, Copy)]
struct Run {
    tps: f64,
    latency_ms: f64,
    /// CPU time the proxy process (Portcullis or pgbouncer) spent per transaction,
    /// in µs: unlike TPS, barely moved by other load on the machine.
    proxy_cpu_us: Option<f64>,
    /// Times a thread of the proxy stopped running (blocked, or was preempted) per
    /// transaction: each is a trip through the scheduler, a large share of a
    /// loopback proxy's CPU.
    proxy_switches: Option<f64>,
}

/// Set by SIGINT/SIGTERM: the bench stops after the current run and cleans up.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn main() -> anyhow::Result<()> {
    if !is_root() {
        bail!("bench postgres needs root (eBPF, cgroups, a PostgreSQL run as `postgres`)");
    }
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    // Dropped in reverse order: pgbouncer, daemon (pins released), cgroup, server.
    let pg = PgServer::start().context("cannot start PostgreSQL")?;
    pg.create_database(DATABASE)?;
    println!("Initializing pgbench (scale {SCALE}) directly…");
    let init = Command::new(pg.bindir().join("pgbench"))
        .args(["-i", "-q", "-s", SCALE, "-U", PgServer::USER, "-h"])
        .arg(pg.socket_dir())
        .args(["-p", &pg.port().to_string(), DATABASE])
        .output()
        .context("cannot run pgbench -i")?;
    if !init.status.success() {
        bail!(
            "pgbench -i failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
    }
    let cg = TestCgroup::new("bench-pg")?;
    let protocol = std::env::var("BENCH_PROTOCOL").unwrap_or_else(|_| "postgres".into());
    let tls = if protocol == "postgres" {
        "tls = \"disable\"\n"
    } else {
        ""
    };
    let policy = format!(
        "[[target]]\nname = \"db\"\nprotocol = \"{protocol}\"\naddress = \"{}:{}\"\n{tls}\n\
         [[rule]]\nname = \"all\"\ntargets = [\"db\"]\naction = \"allow\"\n",
        pg.host(),
        pg.port()
    );
    // `BENCH_DAEMON_CONFIG` adds lines to the daemon's config (`session_workers = 0`).
    let extra = std::env::var("BENCH_DAEMON_CONFIG").unwrap_or_default();
    let daemon = TestDaemon::start("bench-pg", &cg, &policy, &extra)?;
    let bouncer = Pgbouncer::start(&pg)?;

    let server = format!(
        "host={} port={} dbname={DATABASE} user={} sslmode=disable",
        pg.host(),
        pg.port(),
        PgServer::USER
    );
    let pooled = format!(
        "host=127.0.0.1 port={} dbname={DATABASE} user={} sslmode=disable",
        bouncer.port,
        PgServer::USER
    );
    let bench = Bench {
        pgbench: pg.bindir().join("pgbench").display().to_string(),
        cg: &cg,
        daemon_pid: daemon_pid(&daemon.config)?,
        bouncer_pid: bouncer.child.id(),
        server,
        pooled,
    };

    // Warm-up: caches, the proxy's classification cache, pgbouncer's pool.
    for path in ROUTES {
        bench.pgbench(path, 8, "simple", "2")?;
    }
    let seconds = std::env::var("BENCH_SECONDS").unwrap_or_else(|_| SECONDS.into());
    let rounds = match std::env::var("BENCH_ROUNDS") {
        Ok(n) => n.parse().context("BENCH_ROUNDS: a number of rounds")?,
        Err(_) => ROUNDS,
    };
    let mut runs: Vec<Vec<Vec<Run>>> = vec![vec![Vec::new(); ROUTES.len()]; CONFIGS.len()];
    for round in 0..rounds {
        for (c, &(clients, mode)) in CONFIGS.iter().enumerate() {
            // Rotate the order each round so no path always runs first.
            for k in 0..ROUTES.len() {
                let p = (k + round) % ROUTES.len();
                let Some(path) = ROUTES.get(p).copied() else {
                    continue;
                };
                let run = bench.pgbench(path, clients, mode, &seconds)?;
                eprintln!(
                    "  round {}/{rounds}: {clients} client(s), -M {mode}, {:<10} {:>9.0} TPS {:>7.3} ms{}",
                    round + 1,
                    path.label(),
                    run.tps,
                    run.latency_ms,
                    run.proxy_cpu_us
                        .zip(run.proxy_switches)
                        .map(|(us, n)| format!(", proxy {us:.1} µs CPU and {n:.2} switches/tx"))
                        .unwrap_or_default()
                );
                if let Some(slot) = runs.get_mut(c).and_then(|r| r.get_mut(p)) {
                    slot.push(run);
                }
            }
        }
    }
    print!("{}", table(&runs, &seconds, rounds));
    Ok(())
}

struct Bench<'a> {
    pgbench: String,
    cg: &'a TestCgroup,
    /// The daemon's and pgbouncer's process ids, for their CPU time.
    daemon_pid: u32,
    bouncer_pid: u32,
    /// libpq connection string of the real server.
    server: String,
    /// libpq connection string of pgbouncer.
    pooled: String,
}

impl Bench<'_> {
    /// `pgbench -n -S` for `seconds` with `clients` clients and threads.
    fn pgbench(
        &self,
        route: Route,
        clients: u32,
        mode: &str,
        seconds: &str,
    ) -> anyhow::Result<Run> {
        if STOP.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        let clients = clients.to_string();
        let conninfo = match route {
            Route::Direct | Route::Portcullis => &self.server,
            Route::Pgbouncer => &self.pooled,
        };
        let argv = [
            self.pgbench.as_str(),
            "-n",
            "-S",
            "-T",
            seconds,
            "-c",
            &clients,
            "-j",
            &clients,
            "-M",
            mode,
            conninfo,
        ];
        let mut cmd = match route {
            // Inside the cgroup: its connects to the server's address are redirected.
            Route::Portcullis => self.cg.command(None, &argv),
            Route::Direct | Route::Pgbouncer => {
                let mut c = Command::new(&self.pgbench);
                c.args(argv.get(1..).unwrap_or_default());
                c
            }
        };
        let proxy = match route {
            Route::Direct => None,
            Route::Portcullis => Some(self.daemon_pid),
            Route::Pgbouncer => Some(self.bouncer_pid),
        };
        let usage =
            |pid| -> anyhow::Result<[f64; 2]> { Ok([cpu_seconds(pid)?, context_switches(pid)?]) };
        let before = proxy.map(usage).transpose()?;
        let out = cmd.output().context("cannot run pgbench")?;
        let (cpu, switches) = match (proxy, before) {
            (Some(pid), Some([cpu, switches])) => {
                let [cpu_now, switches_now] = usage(pid)?;
                (Some(cpu_now - cpu), Some(switches_now - switches))
            }
            _ => (None, None),
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || STOP.load(Ordering::SeqCst) {
            bail!(
                "pgbench via {} failed ({}): {}{stdout}",
                route.label(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let field = |prefix: &str| -> anyhow::Result<f64> {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(prefix))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("no `{prefix}` in pgbench's output:\n{stdout}"))
        };
        let transactions = field("number of transactions actually processed: ")?;
        Ok(Run {
            tps: field("tps = ")?,
            latency_ms: field("latency average = ")?,
            proxy_cpu_us: cpu.map(|secs| secs * 1e6 / transactions.max(1.0)),
            proxy_switches: switches.map(|n| n / transactions.max(1.0)),
        })
    }
}

/// User plus system CPU seconds process `pid` (all its threads) has used.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("process {pid} is gone"))?;
    // Fields after the parenthesized command name; utime and stime are the 14th and
    // 15th fields of the line, the 12th and 13th after the name.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse().ok())
        .collect();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    #[expect(clippy::cast_precision_loss, reason = "clock ticks per second, ~100")]
    let per_second = per_second.max(1) as f64;
    Ok(ticks.iter().sum::<f64>() / per_second)
}

/// Context switches, voluntary and not, of every thread process `pid` has now.
fn context_switches(pid: u32) -> anyhow::Result<f64> {
    let mut total = 0.0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .with_context(|| format!("process {pid} is gone"))?
    {
        let status = std::fs::read_to_string(task?.path().join("status")).unwrap_or_default();
        total += status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .sum::<f64>();
    }
    Ok(total)
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The results: per configuration, median TPS, latency and proxy CPU per path, and
/// the ratios.
fn table(runs: &[Vec<Vec<Run>>], seconds: &str, rounds: usize) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "\nPortcullis PostgreSQL benchmark: pgbench -S (select-only), scale {SCALE}, {seconds} s \
         per run,\nmedian of {rounds} interleaved rounds, loopback, sslmode=disable on every leg, \
         {} cores\n",
        thread::available_parallelism().map_or(0, usize::from)
    );
    let _ = writeln!(
        t,
        "{:<8} {:<9} {:<11} {:>9} {:>11} {:>14} {:>12}   {:>8} {:>9}",
        "clients",
        "mode",
        "path",
        "TPS",
        "latency ms",
        "proxy CPU µs",
        "switches/tx",
        "P/direct",
        "P/bouncer"
    );
    for (&(clients, mode), per_path) in CONFIGS.iter().zip(runs) {
        let tps: Vec<f64> = per_path
            .iter()
            .map(|r| median(r.iter().map(|x| x.tps).collect()))
            .collect();
        let of = |route: Route| {
            ROUTES
                .iter()
                .position(|&q| q == route)
                .and_then(|i| tps.get(i))
                .copied()
                .unwrap_or(f64::NAN)
        };
        for ((route, r), tps_r) in ROUTES.iter().zip(per_path).zip(&tps) {
            let latency = median(r.iter().map(|x| x.latency_ms).collect());
            let cpu: Vec<f64> = r.iter().filter_map(|x| x.proxy_cpu_us).collect();
            let cpu = if cpu.is_empty() {
                "-".to_owned()
            } else {
                format!("{:.1}/tx", median(cpu))
            };
            let switches: Vec<f64> = r.iter().filter_map(|x| x.proxy_switches).collect();
            let switches = if switches.is_empty() {
                "-".to_owned()
            } else {
                format!("{:.2}", median(switches))
            };
            let ratios = if *route == Route::Portcullis {
                format!(
                    "{:>8.2} {:>9.2}",
                    tps_r / of(Route::Direct),
                    tps_r / of(Route::Pgbouncer)
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                t,
                "{clients:<8} {mode:<9} {:<11} {tps_r:>9.0} {latency:>11.3} {cpu:>14} {switches:>12}   {ratios}",
                route.label()
            );
        }
    }
    t
}

/// pgbouncer in session mode on a loopback port, run as the `postgres` user with
/// trust authentication; killed on drop.
struct Pgbouncer {
    port: u16,
    child: Child,
    /// Config, user list, log and pid file; removed on drop.
    dir: tempfile::TempDir,
}

impl Pgbouncer {
    const BINARY: &'static str = "/usr/sbin/pgbouncer";

    fn start(pg: &PgServer) -> anyhow::Result<Self> {
        if !Path::new(Self::BINARY).is_file() {
            bail!(
                "{} not found: install Debian's pgbouncer (apt install pgbouncer)",
                Self::BINARY
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("portcullis-pgbouncer-")
            .tempdir_in("/tmp")?;
        let port = free_port("127.0.0.1")?;
        let p = dir.path().display().to_string();
        std::fs::write(
            dir.path().join("userlist.txt"),
            format!("\"{}\" \"\"\n", PgServer::USER),
        )?;
        let config = dir.path().join("pgbouncer.ini");
        std::fs::write(
            &config,
            format!(
                "[databases]\n{DATABASE} = host={} port={} dbname={DATABASE}\n\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {p}/userlist.txt\npool_mode = session\n\
                 max_client_conn = 100\ndefault_pool_size = 20\n\
                 logfile = {p}/pgbouncer.log\npidfile = {p}/pgbouncer.pid\n",
                pg.host(),
                pg.port()
            ),
        )?;
        // The `postgres` user must read its config and write its log and pid file.
        let owner = |flag: &str| -> anyhow::Result<u32> {
            let out = Command::new("id").args([flag, PgServer::USER]).output()?;
            Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
        };
        let (uid, gid) = (owner("-u")?, owner("-g")?);
        for entry in std::fs::read_dir(dir.path())? {
            std::os::unix::fs::chown(entry?.path(), Some(uid), Some(gid))?;
        }
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
        // setpriv execs, so the child is pgbouncer itself (runuser would fork).
        let child = Command::new("setpriv")
            .args([
                format!("--reuid={uid}"),
                format!("--regid={gid}"),
                "--clear-groups".into(),
                Self::BINARY.into(),
            ])
            .arg(&config)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start pgbouncer")?;
        let mut bouncer = Self { port, child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = bouncer.child.try_wait() {
                bail!("pgbouncer exited with {status}: {}", bouncer.log());
            }
            if Instant::now() > deadline {
                bail!("pgbouncer did not listen within 10 s: {}", bouncer.log());
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(bouncer)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for Pgbouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
