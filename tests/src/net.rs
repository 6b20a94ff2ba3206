//! Real peers on loopback: echo servers, and a Python client that reports what
//! happened as JSON.

use serde_json::Value;
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener},
    process::Command,
    sync::Arc,
    sync::atomic::{AtomicBool, Ordering},
    thread,
};

/// A TCP echo server on `ip` (a loopback address), port chosen by the kernel.
pub struct EchoServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl EchoServer {
    pub fn start(ip: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind((ip, 0))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut s) = stream else { continue };
                thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(buf.get(..n).unwrap_or_default()).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Ok(Self { addr, stop })
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = std::net::TcpStream::connect(self.addr);
    }
}

/// The client: connects to HOST PORT, sends a line, reads the echo, prints JSON
/// `{pid, exe, peer, reply}` or `{pid, exe, error, errno}`.
pub const CLIENT_PY: &str = r#"
import json, os, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
out = {"pid": os.getpid(), "exe": os.path.realpath("/proc/self/exe")}
try:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect((host, port))
    out["peer"] = list(s.getpeername()[:2])
    msg = b"hello portcullis\n"
    s.sendall(msg)
    got = b""
    while len(got) < len(msg):
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    out["reply"] = got.decode(errors="replace")
except OSError as e:
    out["error"] = str(e)
    out["errno"] = e.errno
print(json.dumps(out))
"#;

/// Runs the Python client through `cmd_prefix` (which must exec its arguments) and
/// parses its JSON report.
pub fn run_client(mut cmd: Command) -> anyhow::Result<Value> {
    let out = cmd.output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).map_err(|e| {
        anyhow::anyhow!(
            "client printed no JSON ({e}): stdout={stdout:?} stderr={:?}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A port that is free on `ip` right now.
pub fn free_port(ip: &str) -> anyhow::Result<u16> {
    Ok(TcpListener::bind((ip, 0))?.local_addr()?.port())
}
