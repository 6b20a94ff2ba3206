//! `cargo xtask bench tcp`: what interception costs, measured in one run.
//!
//! With a daemon running and its programs attached to the bench's cgroup, the same
//! measurement runs in a child process outside that cgroup (no programs run for its
//! connects) and in one inside it, in interleaved rounds:
//! 1. `connect()`+close latency to an address that is NOT protected: the cost every
//!    connect on the host pays for the programs;
//! 2. bulk throughput to a protected sink: direct (outside) vs through Portcullis
//!    (inside), and through socat (the relay a user might pick) for scale.
//!
//! Prints absolute numbers and ratios; asserts nothing.

use portcullis_tests::{
    cgroup::{TestCgroup, is_root},
    daemon::TestDaemon,
    net::free_port,
};
use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

const CONNECTS: u32 = 5_000;
const BULK_BYTES: u64 = 1 << 30;
const ROUNDS: usize = 5;

fn main() -> anyhow::Result<()> {
    // Child modes: one measurement, printed as a number.
    let args: Vec<String> = std::env::args().collect();
    if let [_, mode, addr] = args.as_slice() {
        let addr: SocketAddr = addr.parse()?;
        let value = match mode.as_str() {
            "connect-loop" => connect_latency(addr),
            "bulk" => bulk(addr),
            other => anyhow::bail!("unknown mode {other}"),
        };
        println!("{}", value.value());
        return Ok(());
    }
    if !is_root() {
        anyhow::bail!("bench tcp needs root (eBPF, cgroups)");
    }
    let cg = TestCgroup::new("bench-tcp")?;
    let plain = accept_and_close("127.0.0.5")?;
    let sink = sink_server("127.0.0.2")?;
    let policy = format!(
        "[[target]]\nname = \"sink\"\nprotocol = \"tcp\"\naddress = \"{sink}\"\n\n\
         [[rule]]\nname = \"all\"\ntargets = [\"*\"]\naction = \"allow\"\n"
    );
    let _daemon = TestDaemon::start("bench-tcp", &cg, &policy, "")?;
    let relay = socat_relay(sink)?;

    // The same measurement from a child outside the cgroup (no programs run for its
    // connects) and one inside (every connect runs them), rounds interleaved so
    // machine noise hits both alike.
    let (mut detached, mut attached, mut direct, mut proxied, mut socat) =
        (vec![], vec![], vec![], vec![], vec![]);
    let _ = child(None, "connect-loop", plain); // warm-up
    for _ in 0..ROUNDS {
        detached.push(child(None, "connect-loop", plain)?);
        attached.push(child(Some(&cg), "connect-loop", plain)?);
        direct.push(child(None, "bulk", sink)?);
        proxied.push(child(Some(&cg), "bulk", sink)?);
        if let Some(r) = &relay {
            socat.push(child(None, "bulk", r.addr)?);
        }
    }
    let (detached, attached) = (min(&detached), min(&attached));
    let (direct, proxied) = (max(&direct), max(&proxied));

    println!(
        "Portcullis TCP benchmark (best of {ROUNDS} interleaved rounds, loopback, {} cores)",
        thread::available_parallelism().map_or(0, usize::from)
    );
    println!();
    println!("connect()+close to a non-protected address, median of {CONNECTS} per round:");
    println!(
        "  programs detached   {detached:>8.1} µs/connect   (client outside the attached cgroup)"
    );
    println!(
        "  programs attached   {attached:>8.1} µs/connect   ratio {:.3} (attached / detached)",
        attached / detached
    );
    println!();
    println!("bulk transfer of {} MiB to one server:", BULK_BYTES >> 20);
    println!("  direct              {direct:>8.0} MiB/s");
    println!(
        "  through Portcullis  {proxied:>8.0} MiB/s   ratio {:.2} of direct",
        proxied / direct
    );
    if socat.is_empty() {
        println!("  through socat       (socat not installed; skipped)");
    } else {
        let s = max(&socat);
        println!(
            "  through socat       {s:>8.0} MiB/s   ratio {:.2} of direct (Portcullis / socat = {:.2})",
            s / direct,
            proxied / s
        );
    }
    Ok(())
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

/// Runs this binary in `mode` against `addr`, inside `cg` if given; its number.
fn child(cg: Option<&TestCgroup>, mode: &str, addr: SocketAddr) -> anyhow::Result<f64> {
    let me = std::env::current_exe()?.display().to_string();
    let addr = addr.to_string();
    let mut cmd = if let Some(cg) = cg {
        cg.command(None, &[&me, mode, &addr])
    } else {
        let mut c = Command::new(&me);
        c.args([mode, &addr]);
        c
    };
    let out = cmd.stderr(Stdio::inherit()).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("child {mode} printed {text:?}: {e}"))
}

enum Measured {
    Latency(f64),
    Throughput(f64),
}

impl Measured {
    fn value(&self) -> f64 {
        match self {
            Self::Latency(v) | Self::Throughput(v) => *v,
        }
    }
}

/// Median µs per connect()+close. The median, not the mean: on a busy 2-core
/// machine the accept queue occasionally overflows, and one dropped SYN (retried
/// after 1 s) would add 200 µs to the mean of 5000 connects.
fn connect_latency(addr: SocketAddr) -> Measured {
    let mut each = Vec::with_capacity(CONNECTS as usize);
    for _ in 0..CONNECTS {
        let start = Instant::now();
        if let Ok(s) = TcpStream::connect(addr) {
            reset_on_close(&s);
        }
        each.push(start.elapsed().as_secs_f64() * 1e6);
    }
    each.sort_by(f64::total_cmp);
    Measured::Latency(each.get(each.len() / 2).copied().unwrap_or(f64::NAN))
}

fn bulk(addr: SocketAddr) -> Measured {
    let buf = vec![0x5a_u8; 256 * 1024];
    let Ok(mut s) = TcpStream::connect(addr) else {
        return Measured::Throughput(0.0);
    };
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < BULK_BYTES {
        if s.write_all(&buf).is_err() {
            return Measured::Throughput(0.0);
        }
        sent += buf.len() as u64;
    }
    let _ = s.shutdown(Shutdown::Write);
    let mut ack = [0u8; 8];
    let _ = s.read_exact(&mut ack);
    let secs = start.elapsed().as_secs_f64();
    if u64::from_le_bytes(ack) != sent {
        eprintln!("sink saw {} of {sent} bytes", u64::from_le_bytes(ack));
    }
    #[expect(clippy::cast_precision_loss, reason = "MiB/s needs no exactness")]
    Measured::Throughput(sent as f64 / f64::from(1 << 20) / secs)
}

/// `SO_LINGER` 0: close with a reset, so thousands of connects leave no `TIME_WAIT`
/// sockets behind to exhaust the ephemeral ports.
fn reset_on_close(s: &TcpStream) {
    use std::os::fd::AsRawFd as _;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let len = libc::socklen_t::try_from(size_of::<libc::linger>()).unwrap_or(8);
    // SAFETY: a valid socket fd and a linger struct whose size we pass.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            len,
        )
    };
}

/// Accepts and drops connections.
fn accept_and_close(ip: &str) -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind((ip, 0))?;
    let addr = l.local_addr()?;
    thread::spawn(move || {
        for s in l.incoming() {
            drop(s);
        }
    });
    Ok(addr)
}

/// Reads everything, then answers with the byte count (8 bytes, little endian).
fn sink_server(ip: &str) -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind((ip, 0))?;
    let addr = l.local_addr()?;
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            thread::spawn(move || {
                let mut s = s;
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0u64;
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    total += n as u64;
                }
                let _ = s.write_all(&total.to_le_bytes());
            });
        }
    });
    Ok(addr)
}

struct Relay {
    addr: SocketAddr,
    child: std::process::Child,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// socat relaying 127.0.0.1:<free> to `to`, if socat is installed.
fn socat_relay(to: SocketAddr) -> anyhow::Result<Option<Relay>> {
    let port = free_port("127.0.0.1")?;
    let Ok(child) = Command::new("socat")
        .args([
            format!("TCP4-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"),
            format!("TCP4:{to}"),
        ])
        .stderr(Stdio::null())
        .spawn()
    else {
        return Ok(None);
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    for _ in 0..100 {
        if TcpStream::connect(addr).is_ok() {
            return Ok(Some(Relay { addr, child }));
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(Some(Relay { addr, child }))
}
