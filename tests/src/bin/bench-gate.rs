//! `cargo xtask bench gate`: approve → release latency of a held connection.
//!
//! A client (as `nobody`, in the bench cgroup) connects to a target whose rule asks
//! for review and waits for its echo. The bench (root, an approver) finds the request
//! and approves it over the API socket. Latency = from just before the approve call
//! to the client receiving its echo, both on `CLOCK_MONOTONIC` (Python's
//! `time.monotonic()` reads the same clock). Goal: ≤ 10 ms on one host.
//!
//! The same again with the approval posted to the web console (issue 20): signed in
//! by a one-time link, the form posted over loopback HTTP with its CSRF token, as a
//! browser would (minus the browser's own time).

use portcullis_tests::{
    cgroup::{TestCgroup, is_root},
    daemon::TestDaemon,
    net::EchoServer,
};
use serde_json::Value;
use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::unix::net::UnixStream,
    process::Stdio,
    time::{Duration, Instant},
};

const ROUNDS: usize = 30;

const CLIENT: &str = r#"
import socket, sys, time
s = socket.create_connection(("127.0.0.2", int(sys.argv[1])), timeout=30)
s.sendall(b"x")
s.recv(1)
print(repr(time.monotonic()), flush=True)
"#;

fn main() -> anyhow::Result<()> {
    if !is_root() {
        anyhow::bail!("bench gate needs root (eBPF, cgroups)");
    }
    let echo = EchoServer::start("127.0.0.2")?;
    let cg = TestCgroup::new("bench-gate")?;
    let policy = format!(
        "[[target]]\nname = \"held\"\nprotocol = \"tcp\"\naddress = \"{}\"\n\n\
         [[group]]\nname = \"approvers\"\nusers = [\"root\"]\n\n\
         [[rule]]\nname = \"review\"\ntargets = [\"held\"]\naction = \"review\"\napprovers = [\"approvers\"]\ntimeout = \"1m\"\n",
        echo.addr
    );
    let web_port = portcullis_tests::net::free_port("127.0.0.1")?;
    let web = format!("127.0.0.1:{web_port}");
    let daemon = TestDaemon::start(
        "bench-gate",
        &cg,
        &policy,
        &format!("[web]\nlisten = \"{web}\"\nplain_http = true\n"),
    )?;
    let port = echo.addr.port().to_string();
    let (mut release, mut api) = rounds(&daemon, &cg, &port, |id| {
        call(&daemon, "POST", &format!("/v1/approvals/{id}/approve"))
    })?;
    let (cookie, csrf) = web_session(&daemon, &web)?;
    let (mut web_release, mut web_post) = rounds(&daemon, &cg, &port, |id| {
        let answer = http(
            &web,
            "POST",
            &format!("/requests/{id}/approve"),
            &cookie,
            &format!("csrf={csrf}"),
        )?;
        anyhow::ensure!(
            answer.starts_with("HTTP/1.1 303"),
            "web approve failed: {answer}"
        );
        Ok("approved".to_owned())
    })?;
    println!(
        "Portcullis gate benchmark: approve → release of a held TCP connection, {ROUNDS} rounds"
    );
    report("approve → client has its echo", &mut release);
    report("approve API call (for scale)  ", &mut api);
    report("web approve → client has echo ", &mut web_release);
    report("web approve POST (for scale)  ", &mut web_post);
    Ok(())
}

/// `ROUNDS` held connections, each released by `approve(id)`: (approve → echo,
/// the approve call itself), in milliseconds.
fn rounds(
    daemon: &TestDaemon,
    cg: &TestCgroup,
    port: &str,
    mut approve: impl FnMut(&str) -> anyhow::Result<String>,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let mut release = Vec::with_capacity(ROUNDS);
    let mut api = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let mut client = cg
            .command(
                Some((65534, 65534)),
                &["/usr/bin/python3", "-c", CLIENT, port],
            )
            .stdout(Stdio::piped())
            .spawn()?;
        let id = pending_id(daemon)?;
        let t0 = monotonic();
        let start = Instant::now();
        let answer = approve(&id)?;
        api.push(start.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(answer.contains("approved"), "approve failed: {answer}");
        let mut line = String::new();
        if let Some(out) = client.stdout.as_mut() {
            BufReader::new(out).read_line(&mut line)?;
        }
        let _ = client.wait();
        let t1: f64 = line
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("client said {line:?}: {e}"))?;
        release.push((t1 - t0) * 1e3);
    }
    Ok((release, api))
}

/// Signs in to the web console with a one-time link (as root): the session cookie
/// and the CSRF token of its forms.
fn web_session(d: &TestDaemon, web: &str) -> anyhow::Result<(String, String)> {
    let out = d.cli(&["web-login"]);
    let link = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let path = link
        .split_once(web)
        .map(|(_, p)| p.to_owned())
        .ok_or_else(|| anyhow::anyhow!("no sign-in link: {link:?}"))?;
    let answer = http(web, "GET", &path, "", "")?;
    let cookie = answer
        .lines()
        .filter_map(|l| l.strip_prefix("set-cookie: portcullis="))
        .find_map(|v| v.split(';').next().filter(|t| !t.is_empty()))
        .ok_or_else(|| anyhow::anyhow!("no session cookie: {answer}"))?
        .to_owned();
    let page = http(web, "GET", "/", &cookie, "")?;
    let csrf = page
        .split_once("name=\"csrf\" value=\"")
        .and_then(|(_, rest)| rest.split('"').next())
        .ok_or_else(|| anyhow::anyhow!("no CSRF token on the page: {page}"))?
        .to_owned();
    Ok((cookie, csrf))
}

/// One HTTP/1.1 exchange with the console on loopback; the whole answer.
fn http(addr: &str, method: &str, path: &str, cookie: &str, form: &str) -> anyhow::Result<String> {
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncookie: portcullis={cookie}\r\n\
         content-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{form}",
        form.len()
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text)
}

fn report(what: &str, ms: &mut [f64]) {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "an index into a small slice"
        )]
        let i = ((ms.len() as f64 - 1.0) * q).round() as usize;
        ms.get(i).copied().unwrap_or(f64::NAN)
    };
    println!(
        "  {what}  median {:>6.2} ms   p95 {:>6.2} ms   max {:>6.2} ms   (goal ≤ 10 ms)",
        at(0.5),
        at(0.95),
        at(1.0)
    );
}

/// `CLOCK_MONOTONIC` in seconds, as Python's `time.monotonic()`.
fn monotonic() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    #[expect(clippy::cast_precision_loss, reason = "seconds as f64, like Python")]
    let secs = ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9;
    secs
}

fn pending_id(d: &TestDaemon) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let body = call(d, "GET", "/v1/approvals")?;
        let list: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if let Some(id) = list
            .as_array()
            .and_then(|l| l.first())
            .and_then(|r| r.get("id"))
            .and_then(Value::as_str)
        {
            return Ok(id.to_owned());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    anyhow::bail!("no pending request within 10 s:\n{}", d.log())
}

/// One HTTP/1.1 request over the API socket; returns the body.
fn call(d: &TestDaemon, method: &str, path: &str) -> anyhow::Result<String> {
    let mut s = UnixStream::connect(&d.socket)?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: pc\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default())
}
