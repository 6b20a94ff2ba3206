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
//! medians and the ratios Portcullis/direct and Portcullis/pgbouncer. Asserts
//! nothing. Servers, daemon, cgroup and pins are removed on the way out, on error or
//! Ctrl-C as well.

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
/// Seconds per pgbench run (`-T`).
const SECONDS: &str = "10";
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
        libc::signal(libc::SIGINT, on_signal as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as libc::sighandler_t);
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
    let policy = format!(
        "[[target]]\nname = \"db\"\nprotocol = \"postgres\"\naddress = \"{}:{}\"\ntls = \"disable\"\n\n\
         [[rule]]\nname = \"all\"\ntargets = [\"db\"]\naction = \"allow\"\n",
        pg.host(),
        pg.port()
    );
    let _daemon = TestDaemon::start("bench-pg", &cg, &policy, "")?;
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
        server,
        pooled,
    };

    // Warm-up: caches, the proxy's classification cache, pgbouncer's pool.
    for path in ROUTES {
        bench.pgbench(path, 8, "simple", "2")?;
    }
    let mut runs: Vec<Vec<Vec<Run>>> = vec![vec![Vec::new(); ROUTES.len()]; CONFIGS.len()];
    for round in 0..ROUNDS {
        for (c, &(clients, mode)) in CONFIGS.iter().enumerate() {
            // Rotate the order each round so no path always runs first.
            for k in 0..ROUTES.len() {
                let p = (k + round) % ROUTES.len();
                let Some(path) = ROUTES.get(p).copied() else {
                    continue;
                };
                let run = bench.pgbench(path, clients, mode, SECONDS)?;
                eprintln!(
                    "  round {}/{ROUNDS}: {clients} client(s), -M {mode}, {:<10} {:>9.0} TPS {:>7.3} ms",
                    round + 1,
                    path.label(),
                    run.tps,
                    run.latency_ms
                );
                if let Some(slot) = runs.get_mut(c).and_then(|r| r.get_mut(p)) {
                    slot.push(run);
                }
            }
        }
    }
    print!("{}", table(&runs));
    Ok(())
}

struct Bench<'a> {
    pgbench: String,
    cg: &'a TestCgroup,
    /// libpq connection string of the real server.
    server: String,
    /// libpq connection string of pgbouncer.
    pooled: String,
}

impl Bench<'_> {
    /// `pgbench -n -S` for `seconds` with `clients` clients and threads.
    fn pgbench(&self, path: Route, clients: u32, mode: &str, seconds: &str) -> anyhow::Result<Run> {
        if STOP.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        let clients = clients.to_string();
        let conninfo = match path {
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
        let mut cmd = match path {
            // Inside the cgroup: its connects to the server's address are redirected.
            Route::Portcullis => self.cg.command(None, &argv),
            Route::Direct | Route::Pgbouncer => {
                let mut c = Command::new(&self.pgbench);
                c.args(argv.get(1..).unwrap_or_default());
                c
            }
        };
        let out = cmd.output().context("cannot run pgbench")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || STOP.load(Ordering::SeqCst) {
            bail!(
                "pgbench via {} failed ({}): {}{stdout}",
                path.label(),
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
        Ok(Run {
            tps: field("tps = ")?,
            latency_ms: field("latency average = ")?,
        })
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The results: per configuration, median TPS and latency per path, and the ratios.
fn table(runs: &[Vec<Vec<Run>>]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "\nPortcullis PostgreSQL benchmark: pgbench -S (select-only), scale {SCALE}, {SECONDS} s \
         per run,\nmedian of {ROUNDS} interleaved rounds, loopback, sslmode=disable on every leg, \
         {} cores\n",
        thread::available_parallelism().map_or(0, usize::from)
    );
    let _ = writeln!(
        t,
        "{:<8} {:<9} {:<11} {:>10} {:>12}   {:>8} {:>10}",
        "clients", "mode", "path", "TPS", "latency ms", "P/direct", "P/bouncer"
    );
    for (&(clients, mode), per_path) in CONFIGS.iter().zip(runs) {
        let med: Vec<(f64, f64)> = per_path
            .iter()
            .map(|r| {
                (
                    median(r.iter().map(|x| x.tps).collect()),
                    median(r.iter().map(|x| x.latency_ms).collect()),
                )
            })
            .collect();
        let tps = |p: Route| {
            ROUTES
                .iter()
                .position(|&q| q == p)
                .and_then(|i| med.get(i))
                .map_or(f64::NAN, |m| m.0)
        };
        for (path, (tps_p, lat)) in ROUTES.iter().zip(&med) {
            let ratios = if *path == Route::Portcullis {
                format!(
                    "{:>8.2} {:>10.2}",
                    tps_p / tps(Route::Direct),
                    tps_p / tps(Route::Pgbouncer)
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                t,
                "{clients:<8} {mode:<9} {:<11} {tps_p:>10.0} {lat:>12.3}   {ratios}",
                path.label()
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
