//! `cargo xtask bench ssh`: what the SSH proxy costs, measured in one run against a
//! real Debian `sshd` on a loopback alias:
//!
//! - direct: OpenSSH straight to the server (outside the bench's cgroup);
//! - Portcullis: the same client inside the cgroup, so its connection is redirected
//!   to the proxy, which decides, records and relays each action;
//! - `ssh -J`: through a second, plain OpenSSH server as a jump host (what a user
//!   would otherwise put in between).
//!
//! Measures bulk `scp` (SFTP) download and upload of one file (`BENCH_SSH_MB`, default
//! 256 MiB) and `BENCH_SSH_EXECS` (default 200) sequential `ssh host true`, in
//! interleaved rounds, and prints the best round of each with ratios to direct.
//! Every path logs in as [`BENCH_USER`], a system user whose shell is `/bin/sh` with
//! no profile, so an exec's time is the connection's and not a login shell's (root's
//! `.bashrc` on a developer machine can take hundreds of milliseconds).
//! `BENCH_IDLE=1` measures memory per idle session instead (`sshidle`).
//! Asserts nothing: the machine is shared and noisy.

#![expect(clippy::indexing_slicing, reason = "fixed-size arrays of three paths")]

use portcullis_tests::{
    cgroup::{TestCgroup, is_root},
    daemon::TestDaemon,
    sshd::Sshd,
};
use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const ROUNDS: usize = 3;

/// The key exchange every client uses. Left to choose, OpenSSH 9.2 picks
/// `sntrup761x25519-sha512` with an OpenSSH server, which russh does not offer, so
/// the proxy's legs would use curve25519 while the direct one pays for the
/// post-quantum key generation (~25 ms per connection here): the same exchange
/// everywhere compares the paths, not the algorithms.
const KEX: &str = "curve25519-sha256";

/// The user every path logs in as (created on first use).
const BENCH_USER: &str = "portcullis-bench";

/// How a client reaches the server.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path3 {
    Direct,
    Portcullis,
    Jump,
}

struct Bench {
    target: Sshd,
    jump: Sshd,
    cg: TestCgroup,
    /// A `known_hosts` with both servers' keys, for the direct and jump clients.
    known_hosts: String,
}

fn env_or(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    anyhow::ensure!(is_root(), "bench ssh needs root (eBPF, cgroups, sshd)");
    if std::env::var("BENCH_IDLE").is_ok_and(|v| v == "1") {
        return portcullis_tests::sshidle::run();
    }
    let mb = env_or("BENCH_SSH_MB", 256);
    let execs = env_or("BENCH_SSH_EXECS", 200);
    let target = Sshd::start_or_skip("127.0.0.71").ok_or_else(|| anyhow::anyhow!("no sshd"))?;
    let jump = Sshd::start_or_skip("127.0.0.72").ok_or_else(|| anyhow::anyhow!("no sshd"))?;
    let both = target.dir().join("both_known_hosts");
    let text = std::fs::read_to_string(target.known_hosts())?
        + &std::fs::read_to_string(jump.known_hosts())?;
    std::fs::write(&both, text)?;
    let cg = TestCgroup::new("bench-ssh")?;
    bench_user()?;
    let policy = target.target_policy_as(
        BENCH_USER,
        "\n[[rule]]\nname = \"all\"\ntargets = [\"*\"]\naction = \"allow\"\n",
    );
    let _daemon = TestDaemon::start("bench-ssh", &cg, &policy, "")?;
    let file = target.dir().join("payload");
    make_file(&file, mb)?;
    // The bench user reads the payload from the server's (private) directory.
    std::fs::set_permissions(
        target.dir(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let bench = Bench {
        known_hosts: both.display().to_string(),
        target,
        jump,
        cg,
    };
    let paths = [Path3::Direct, Path3::Portcullis, Path3::Jump];
    let mut down = [f64::MAX; 3];
    let mut up = [f64::MAX; 3];
    let mut exec = [f64::MAX; 3];
    // Machine CPU seconds per transfer (every process: client, proxy, servers).
    let mut down_cpu = [f64::MAX; 3];
    let mut up_cpu = [f64::MAX; 3];
    let remote_file = file.display().to_string();
    for _ in 0..ROUNDS {
        for (i, p) in paths.iter().enumerate() {
            let (t, cpu) = bench.time(
                *p,
                &["scp", "-q", &format!("{{HOST}}:{remote_file}"), "/dev/null"],
            )?;
            down[i] = down[i].min(t);
            down_cpu[i] = down_cpu[i].min(cpu);
            let (t, cpu) = bench.time(*p, &["scp", "-q", &remote_file, "{HOST}:/dev/null"])?;
            up[i] = up[i].min(t);
            up_cpu[i] = up_cpu[i].min(cpu);
            let start = Instant::now();
            for _ in 0..execs {
                bench.run(*p, &["ssh", "{HOST}", "true"])?;
            }
            exec[i] = exec[i].min(start.elapsed().as_secs_f64());
        }
    }
    println!(
        "Portcullis SSH benchmark (best of {ROUNDS} interleaved rounds, loopback sshd, {} cores)",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!();
    let mib = f64::from(mb);
    println!("scp (SFTP) of a {mb} MiB file, MiB/s:");
    report(paths, &down.map(|t| mib / t), "download", true);
    report(paths, &up.map(|t| mib / t), "upload", true);
    println!("Machine CPU per MiB moved (all processes; ms), lower is better:");
    report(
        paths,
        &down_cpu.map(|c| c * 1000.0 / mib),
        "download",
        false,
    );
    report(paths, &up_cpu.map(|c| c * 1000.0 / mib), "upload", false);
    println!(
        "  (a transfer that keeps all {} cores busy moves at a rate inversely proportional to these)",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!();
    println!(
        "{execs} sequential `ssh host true` (new connection each, {KEX}, as {BENCH_USER}), ms per exec:"
    );
    report(
        paths,
        &exec.map(|t| t * 1000.0 / f64::from(execs)),
        "exec",
        false,
    );
    let added = (exec[1] - exec[0]) * 1000.0 / f64::from(execs);
    println!("  time Portcullis adds per exec: {added:.1} ms");
    Ok(())
}

fn report(paths: [Path3; 3], values: &[f64; 3], what: &str, higher_is_better: bool) {
    let base = values[0];
    for (p, v) in paths.iter().zip(values) {
        let ratio = if higher_is_better { v / base } else { base / v };
        println!(
            "  {what:<9} {:<11} {v:>9.1}   {ratio:.2}x direct",
            format!("{p:?}")
        );
    }
}

impl Bench {
    /// The command line for `argv` (`{HOST}` replaced) on path `p`.
    fn command(&self, p: Path3, argv: &[&str]) -> Command {
        let host = format!("{BENCH_USER}@{}", self.target.addr.ip());
        let key = self.target.client_key().display().to_string();
        let jump_key = self.jump.client_key().display().to_string();
        let bin = format!("/usr/bin/{}", argv[0]);
        let mut opts: Vec<String> = vec!["-o".into(), "BatchMode=yes".into()];
        opts.extend(["-o".into(), format!("KexAlgorithms={KEX}")]);
        match p {
            Path3::Direct | Path3::Jump => {
                opts.extend([
                    "-o".into(),
                    format!("UserKnownHostsFile={}", self.known_hosts),
                ]);
                opts.extend(["-i".into(), key]);
            }
            Path3::Portcullis => {}
        }
        if p == Path3::Jump {
            let proxy = format!(
                "ProxyCommand=/usr/bin/ssh -o BatchMode=yes -o KexAlgorithms={KEX} -o UserKnownHostsFile={} -i {jump_key} -W %h:%p root@{}",
                self.known_hosts,
                self.jump.addr.ip()
            );
            opts.extend(["-o".into(), proxy]);
        }
        opts.extend(argv[1..].iter().map(|a| a.replace("{HOST}", &host)));
        let mut cmd = if p == Path3::Portcullis {
            let mut all = vec![bin.as_str()];
            all.extend(opts.iter().map(String::as_str));
            self.cg.command(None, &all)
        } else {
            let mut cmd = Command::new(&bin);
            cmd.args(&opts);
            cmd
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    }

    fn run(&self, p: Path3, argv: &[&str]) -> anyhow::Result<()> {
        let out = self.command(p, argv).output()?;
        anyhow::ensure!(
            out.status.success(),
            "{p:?} {argv:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Wall-clock seconds of `argv` on path `p`, and the machine's busy CPU seconds
    /// meanwhile.
    fn time(&self, p: Path3, argv: &[&str]) -> anyhow::Result<(f64, f64)> {
        let busy = busy_seconds();
        let start = Instant::now();
        self.run(p, argv)?;
        let wall = start.elapsed().max(Duration::from_micros(1)).as_secs_f64();
        Ok((wall, busy_seconds() - busy))
    }
}

/// CPU seconds the whole machine has spent busy (not idle or waiting for I/O), from
/// the first line of `/proc/stat` (in `USER_HZ`, 100 per second on Linux).
fn busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle and iowait.
    let busy: f64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    busy / 100.0
}

/// Creates [`BENCH_USER`] unless it exists: a system user with `/bin/sh` and `/` as
/// its home, so that sshd starts `sh -c COMMAND` and nothing else.
fn bench_user() -> anyhow::Result<()> {
    let exists = Command::new("id")
        .arg(BENCH_USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?
        .success();
    if exists {
        return Ok(());
    }
    // `*`: no password, yet not locked (sshd without PAM refuses a locked account).
    let status = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--home-dir",
            "/",
            "--shell",
            "/bin/sh",
        ])
        .args(["--password", "*"])
        .arg(BENCH_USER)
        .status()?;
    anyhow::ensure!(status.success(), "useradd {BENCH_USER} failed");
    Ok(())
}

/// A file of `mb` MiB of random-looking bytes (so nothing compresses it away).
fn make_file(path: &Path, mb: u32) -> anyhow::Result<()> {
    let status = Command::new("dd")
        .args([
            "if=/dev/urandom",
            &format!("of={}", path.display()),
            "bs=1M",
            &format!("count={mb}"),
            "status=none",
        ])
        .status()?;
    anyhow::ensure!(status.success(), "dd failed");
    Ok(())
}
