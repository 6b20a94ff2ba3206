//! `BENCH_IDLE=1 cargo xtask bench ssh`: what an idle SSH session costs in memory,
//! with `BENCH_IDLE_SESSIONS` (default 1000) authenticated sessions held at once,
//! each with an open session channel doing nothing:
//!
//! - through Portcullis: one Python process (paramiko, Debian's `python3-paramiko`)
//!   inside the bench's cgroup opens every transport, so each is redirected to the
//!   proxy, which logs in to a real `sshd` for each;
//! - through a plain OpenSSH jump host (`ssh -J`): the same holder, outside the
//!   cgroup, tunnels each transport through a `direct-tcpip` channel of the jump host.
//!
//! Prints the daemon's RSS and PSS (`/proc/PID/smaps_rollup`) before, while the
//! sessions are held and after they closed, and KiB per session; for the jump host,
//! the same summed over its `sshd` processes (per-connection children included).
//! The daemon is measured over two rounds: the second shows whether what the first
//! kept after its sessions closed is reused (allocator caches) or lost (a leak).
//! Asserts nothing: the machine is shared and noisy; the goal (≤ 256 KiB per idle
//! session) is printed.
#![expect(
    clippy::missing_errors_doc,
    reason = "a benchmark's errors are printed"
)]

use crate::{cgroup::TestCgroup, daemon::TestDaemon, sshd::Sshd};
use anyhow::Context as _;
use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The goal per idle session, in KiB (issue 18, item 8).
const GOAL_KIB: f64 = 256.0;

/// `MODE N TARGET KEY [JUMP JUMP_KEY]`: opens N authenticated SSH transports to
/// TARGET:22 (mode `proxy`: `none` authentication, as the proxy accepts; mode
/// `jump`: each through a `direct-tcpip` channel of JUMP:22, both legs with their
/// keys), each with one session channel open and nothing started on it; prints
/// `ready N`, holds them until stdin closes, then closes them all.
const HOLDER: &str = r#"
import sys, threading, paramiko, concurrent.futures as cf
mode, n, target = sys.argv[1], int(sys.argv[2]), sys.argv[3]
key = paramiko.Ed25519Key.from_private_key_file(sys.argv[4])
jump = sys.argv[5] if len(sys.argv) > 5 else None
jump_key = paramiko.Ed25519Key.from_private_key_file(sys.argv[6]) if jump else None
held, lock = [], threading.Lock()
def open_one(i):
    if mode == "proxy":
        t = paramiko.Transport((target, 22))
        t.start_client(timeout=120)
        t.auth_none("root")
        outer = None
    else:
        outer = paramiko.Transport((jump, 22))
        outer.start_client(timeout=120)
        outer.auth_publickey("root", jump_key)
        ch = outer.open_channel("direct-tcpip", (target, 22), ("127.0.0.1", 0))
        t = paramiko.Transport(ch)
        t.start_client(timeout=120)
        t.auth_publickey("root", key)
    s = t.open_session(timeout=120)
    with lock:
        held.append((outer, t, s))
with cf.ThreadPoolExecutor(8) as pool:
    for f in [pool.submit(open_one, i) for i in range(n)]:
        f.result()
print("ready", len(held), flush=True)
sys.stdin.read()
for outer, t, s in held:
    s.close(); t.close()
    if outer: outer.close()
"#;

/// Memory of a process (or a process tree), in KiB.
#[derive(Clone, Copy, Default)]
struct Memory {
    rss: u64,
    pss: u64,
}

impl Memory {
    /// One process's `VmRSS` and `Pss` (0 when unreadable: it has exited).
    fn of(pid: u32) -> Self {
        let field = |file: &str, name: &str| {
            std::fs::read_to_string(format!("/proc/{pid}/{file}"))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        Self {
            rss: field("status", "VmRSS:"),
            pss: field("smaps_rollup", "Pss:"),
        }
    }

    /// `pid` and all its descendants, summed.
    fn of_tree(pid: u32) -> Self {
        descendants(pid)
            .into_iter()
            .chain([pid])
            .map(Self::of)
            .fold(Self::default(), |a, b| Self {
                rss: a.rss + b.rss,
                pss: a.pss + b.pss,
            })
    }
}

/// Every descendant of `root`, from `/proc/*/stat`.
fn descendants(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|pid| {
                    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                    // `pid (comm) state ppid …`: comm may hold spaces and parentheses.
                    let after = stat.rsplit_once(')')?.1;
                    let ppid = after.split_whitespace().nth(1)?.parse().ok()?;
                    Some((pid, ppid))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut found = vec![root];
    let mut i = 0;
    while let Some(&p) = found.get(i) {
        found.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found.retain(|p| *p != root);
    found
}

/// The holder process, with its sessions open.
struct Holder {
    child: Child,
}

impl Holder {
    /// Starts `cmd` (the holder) and waits until it holds all its sessions.
    fn start(mut cmd: Command, n: u32) -> anyhow::Result<Self> {
        let started = Instant::now();
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start python3 (python3-paramiko: cargo xtask setup)")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let holder = Self { child };
        anyhow::ensure!(
            line.trim() == format!("ready {n}"),
            "the holder did not open its {n} sessions (it said {line:?})"
        );
        println!(
            "  {n} sessions opened in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(holder)
    }

    /// Closes every session and waits for the holder to exit.
    fn release(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Measures `measure()` before and while `n` sessions opened by `cmd` are held,
/// prints both and the cost per session; returns KiB per session (PSS).
fn held_cost(
    what: &str,
    n: u32,
    cmd: Command,
    measure: impl Fn() -> Memory,
) -> anyhow::Result<f64> {
    let before = measure();
    let holder = Holder::start(cmd, n)?;
    // Let the sessions settle (the last handshakes' buffers freed).
    std::thread::sleep(Duration::from_secs(3));
    let held = measure();
    holder.release();
    std::thread::sleep(Duration::from_secs(3));
    let after = measure();
    #[expect(clippy::cast_precision_loss, reason = "KiB counts far below 2^52")]
    let per = |a: u64, b: u64| b.saturating_sub(a) as f64 / f64::from(n);
    let (rss, pss) = (per(before.rss, held.rss), per(before.pss, held.pss));
    println!(
        "  {what:<26} RSS {:>8} -> {:>8} KiB ({rss:>6.1} KiB/session)   PSS {:>8} -> {:>8} KiB ({pss:>6.1} KiB/session); {} KiB PSS once closed",
        before.rss, held.rss, before.pss, held.pss, after.pss
    );
    Ok(pss)
}

/// The pid in an sshd's pid file.
fn sshd_pid(sshd: &Sshd) -> anyhow::Result<u32> {
    let text = std::fs::read_to_string(sshd.dir().join("sshd.pid"))?;
    text.trim().parse().context("sshd.pid")
}

/// The idle-memory benchmark (see the module docs).
pub fn run() -> anyhow::Result<()> {
    let n: u32 = std::env::var("BENCH_IDLE_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let target = Sshd::start_or_skip("127.0.0.122").context("no sshd")?;
    let jump = Sshd::start_or_skip("127.0.0.123").context("no sshd")?;
    let cg = TestCgroup::new("bench-ssh-idle")?;
    let policy =
        target.target_policy("\n[[rule]]\nname = \"all\"\ntargets = [\"*\"]\naction = \"allow\"\n");
    let daemon = TestDaemon::start("bench-ssh-idle", &cg, &policy, "")?;
    let pid = daemon.pid().context("the daemon is not running")?;
    let target_ip = target.addr.ip().to_string();
    let key = target.client_key().display().to_string();
    let proxy = |count: u32| {
        let count = count.to_string();
        cg.command(
            None,
            &[
                "/usr/bin/python3",
                "-c",
                HOLDER,
                "proxy",
                &count,
                &target_ip,
                &key,
            ],
        )
    };
    println!(
        "Portcullis SSH idle-session memory ({n} sessions held, each with an idle session channel)"
    );
    // A few sessions first, so what every session shares (parser workers, caches,
    // the runtime's threads) is in the baseline.
    Holder::start(proxy(10), 10)?.release();
    std::thread::sleep(Duration::from_secs(1));
    let first = held_cost("Portcullis daemon, round 1", n, proxy(n), || {
        Memory::of(pid)
    })?;
    let ours = held_cost("Portcullis daemon, round 2", n, proxy(n), || {
        Memory::of(pid)
    })?;
    let ours = ours.max(first);
    let jump_pid = sshd_pid(&jump)?;
    let jump_ip = jump.addr.ip().to_string();
    let jump_key = jump.client_key().display().to_string();
    let mut through_jump = Command::new("/usr/bin/python3");
    through_jump.args(["-c", HOLDER, "jump", &n.to_string(), &target_ip, &key]);
    through_jump.args([&jump_ip, &jump_key]);
    let theirs = held_cost("OpenSSH jump host (sshd)", n, through_jump, || {
        Memory::of_tree(jump_pid)
    })?;
    println!(
        "  per idle session (PSS): Portcullis {ours:.1} KiB, jump host {theirs:.1} KiB \
         ({:.2}x); goal <= {GOAL_KIB} KiB: {}",
        theirs / ours.max(0.1),
        if ours <= GOAL_KIB { "met" } else { "NOT met" }
    );
    let _ = std::io::stdout().flush();
    drop(daemon);
    Ok(())
}
