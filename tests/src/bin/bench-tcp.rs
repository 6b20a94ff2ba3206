//! `cargo xtask bench tcp`: what interception costs, measured in one run.
//!
//! 1. `connect()` latency to an address that is NOT protected, from a process in a
//!    cgroup without the programs, then with them attached (every connect runs them).
//! 2. Bulk throughput to one sink server: direct (before it is protected), through
//!    Portcullis (after), and through socat (the relay a user might pick) for scale.
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
const BULK_BYTES: u64 = 2 << 30;
const ROUNDS: usize = 3;

fn main() -> anyhow::Result<()> {
    if !is_root() {
        anyhow::bail!("bench tcp needs root (eBPF, cgroups)");
    }
    let cg = TestCgroup::new("bench-tcp")?;
    // This process joins the cgroup: its connects are the ones measured.
    std::fs::write(
        cg.path().join("cgroup.procs"),
        std::process::id().to_string(),
    )?;

    let plain = accept_and_close("127.0.0.5")?;
    let sink = sink_server("127.0.0.2")?;

    // Warm up (page cache, allocator, ephemeral ports) so the first phase is not cold.
    let _ = connect_latency(plain);
    let detached_before = best(|| connect_latency(plain));
    let direct = best(|| bulk(sink));
    let socat = socat_relay(sink)?.map(|relay| best(|| bulk(relay.addr)));

    let policy = format!(
        "[[target]]\nname = \"sink\"\nprotocol = \"tcp\"\naddress = \"{sink}\"\n\n\
         [[rule]]\nname = \"all\"\ntargets = [\"*\"]\naction = \"allow\"\n"
    );
    let daemon = TestDaemon::start("bench-tcp", &cg, &policy, "")?;
    let attached_connect = best(|| connect_latency(plain));
    let proxied = best(|| bulk(sink));
    // Releases the pins: the programs detach; measure detached again (A/B/A order).
    drop(daemon);
    let detached_connect = detached_before.min(best(|| connect_latency(plain)));
    // Leave the cgroup so it can be removed.
    let root = portcullis_tests::cgroup::cgroup2_root().unwrap_or_default();
    std::fs::write(root.join("cgroup.procs"), std::process::id().to_string())?;

    println!(
        "Portcullis TCP benchmark (best of {ROUNDS} rounds, loopback, {} cores)",
        thread::available_parallelism().map_or(0, usize::from)
    );
    println!();
    println!("connect()+close to a non-protected address, {CONNECTS} times:");
    println!("  programs detached   {detached_connect:>8.1} µs/connect");
    println!(
        "  programs attached   {:>8.1} µs/connect   ratio {:.3} (attached / detached)",
        attached_connect,
        attached_connect / detached_connect
    );
    println!();
    println!("bulk transfer of {} MiB to one server:", BULK_BYTES >> 20);
    println!("  direct              {direct:>8.0} MiB/s");
    println!(
        "  through Portcullis  {:>8.0} MiB/s   ratio {:.2} of direct",
        proxied,
        proxied / direct
    );
    match socat {
        Some(s) => println!(
            "  through socat       {:>8.0} MiB/s   ratio {:.2} of direct (Portcullis / socat = {:.2})",
            s,
            s / direct,
            proxied / s
        ),
        None => println!("  through socat       (socat not installed; skipped)"),
    }
    Ok(())
}

/// Best (lowest latency / highest throughput) of a few rounds: the machine's noise
/// only ever makes a round worse.
fn best(mut f: impl FnMut() -> Measured) -> f64 {
    let runs: Vec<Measured> = (0..ROUNDS).map(|_| f()).collect();
    match runs.first() {
        Some(Measured::Latency(_)) => runs
            .iter()
            .map(Measured::value)
            .fold(f64::INFINITY, f64::min),
        _ => runs.iter().map(Measured::value).fold(0.0, f64::max),
    }
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

fn connect_latency(addr: SocketAddr) -> Measured {
    let start = Instant::now();
    for _ in 0..CONNECTS {
        if let Ok(s) = TcpStream::connect(addr) {
            reset_on_close(&s);
        }
    }
    Measured::Latency(start.elapsed().as_secs_f64() * 1e6 / f64::from(CONNECTS))
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
