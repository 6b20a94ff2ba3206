//! Issue 18 (SSH): agent forwarding relayed when a rule allows it, refused (and
//! recorded) when none does. Real OpenSSH end to end: `ssh -A` as `nobody` with its
//! own `ssh-agent` holding a fresh key, through the proxy to a real `sshd`, where
//! `ssh-add -l` must list that key only when the policy allows `ssh = ["agent"]`;
//! and X11 (`ssh -Y`) likewise with `ssh = ["x11"]`: an X client on the target
//! reaches a stand-in X server on the client's display through the proxy.
#![expect(
    clippy::panic,
    clippy::indexing_slicing,
    reason = "root tests panic with a message"
)]

use portcullis_tests::sshproxy::{Setup, scratch, setup, text};
use serde_json::Value;
use std::process::Command;

/// The connection and every command allowed; `extra` adds the rules under test.
fn rules(extra: &str) -> String {
    format!(
        r#"
[[rule]]
name = "connect"
targets = ["box"]
action = "allow"
{extra}"#
    )
}

const AGENT_ALLOWED: &str = r#"
[[rule]]
name = "agent-ok"
targets = ["box"]
ssh = ["agent"]
action = "allow"
"#;

/// Runs, as `nobody`, an `ssh-agent` holding a key made for the test, then
/// `ssh -A HOST 'ssh-add -l; echo sock=$SSH_AUTH_SOCK'` with that agent. Returns
/// the key's fingerprint and what ssh printed (stdout, stderr).
fn ssh_with_agent(s: &Setup) -> (String, String, String) {
    let dir = scratch();
    let d = dir.path().display();
    let host = s.sshd.addr.ip().to_string();
    let script = format!(
        "cd {d} && ssh-keygen -q -t ed25519 -N '' -C pc-agent-test -f key && \
         eval \"$(ssh-agent -s -a {d}/agent.sock)\" >/dev/null && ssh-add -q key && \
         ssh -A -o BatchMode=yes {host} 'ssh-add -l; echo sock=$SSH_AUTH_SOCK'; \
         rc=$?; kill \"$SSH_AGENT_PID\"; exit $rc"
    );
    let out = s
        .client(&["/bin/sh", "-c", &script])
        .output()
        .unwrap_or_else(|e| panic!("cannot run ssh: {e}"));
    let (stdout, stderr) = text(&out);
    let fingerprint = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(dir.path().join("key.pub"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let fingerprint = text(&fingerprint).0;
    let fingerprint = fingerprint
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no fingerprint: {stderr}"))
        .to_owned();
    (fingerprint, stdout, stderr)
}

fn events_of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["kind"] == kind).collect()
}

#[test]
fn agent_forwarding_is_relayed_when_a_rule_allows_it() {
    let Some(s) = setup("ssh-agent-ok", "127.0.0.111", &rules(AGENT_ALLOWED)) else {
        return;
    };
    let (fingerprint, stdout, stderr) = ssh_with_agent(&s);
    assert!(
        stdout.contains(&fingerprint) && stdout.contains("pc-agent-test"),
        "the target lists the client's key {fingerprint}: {stdout}\n{stderr}\n{}\n{}",
        s.d.log(),
        s.sshd.log()
    );
    assert!(!stdout.contains("sock=\n"), "{stdout}");
    let events = s.events();
    let agent = events_of_kind(&events, "agent");
    assert!(
        agent
            .iter()
            .any(|e| e["verdict"] == "allowed" && e["decided_by"] == "agent-ok"),
        "the request was decided by the rule: {events:#?}"
    );
    assert!(
        agent
            .iter()
            .any(|e| e["bytes_in"].as_u64().unwrap_or(0) > 0
                && e["bytes_out"].as_u64().unwrap_or(0) > 0),
        "the agent connection was recorded with its bytes: {events:#?}"
    );
}

#[test]
fn agent_forwarding_is_refused_and_recorded_without_a_rule() {
    let Some(s) = setup("ssh-agent-no", "127.0.0.112", &rules("")) else {
        return;
    };
    let (fingerprint, stdout, stderr) = ssh_with_agent(&s);
    assert!(
        stdout.contains("sock=\n") && !stdout.contains(&fingerprint),
        "no agent on the target: {stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("Could not open a connection to your authentication agent")
            || stdout.contains("Could not open a connection to your authentication agent"),
        "ssh-add -l fails on the target: {stdout}\n{stderr}"
    );
    let events = s.events();
    let agent = events_of_kind(&events, "agent");
    assert!(
        agent.len() == 1 && agent[0]["verdict"] == "denied",
        "one refused agent request, no agent channel: {events:#?}"
    );
}

const X11_ALLOWED: &str = r#"
[[rule]]
name = "x11-ok"
targets = ["box"]
ssh = ["x11"]
action = "allow"
"#;

/// On the target: connect to the forwarded display with the cookie sshd stored
/// for it (an X11 connection setup, as an X client sends it) and print the answer.
const X_CLIENT: &str = r#"
import os, socket, struct, subprocess
display = os.environ.get("DISPLAY", "")
print("display=" + display, flush=True)
if display:
    number = int(display.split(":")[1].split(".")[0])
    entry = subprocess.run(["xauth", "list", display], capture_output=True, text=True).stdout.split()
    name, data = b"MIT-MAGIC-COOKIE-1", bytes.fromhex(entry[2])
    pad = lambda b: b + b"\0" * ((4 - len(b) % 4) % 4)
    setup = struct.pack("<cxHHHHxx", b"l", 11, 0, len(name), len(data)) + pad(name) + pad(data)
    s = socket.create_connection(("127.0.0.1", 6000 + number))
    s.sendall(setup)
    print("reply=" + s.recv(100).decode(errors="replace"), flush=True)
"#;

/// A stand-in X server on the client's side: display `:N` (its socket in
/// `/tmp/.X11-unix`), answering one connection; what it read comes back on the
/// returned channel.
fn fake_x_server(n: u32) -> std::sync::mpsc::Receiver<Vec<u8>> {
    use std::{io::Read as _, io::Write as _, os::unix::fs::PermissionsExt as _};
    let dir = std::path::Path::new("/tmp/.X11-unix");
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
    let path = dir.join(format!("X{n}"));
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))
        .unwrap_or_else(|e| panic!("{e}"));
    let (send, read) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let mut setup = vec![0; 48];
            let n = stream.read(&mut setup).unwrap_or(0);
            setup.truncate(n);
            let _ = stream.write_all(b"FAKE-X-SERVER");
            let _ = send.send(setup);
        }
        let _ = std::fs::remove_file(&path);
    });
    read
}

/// `ssh -Y` as `nobody` with `DISPLAY=:N`, running [`X_CLIENT`] on the target.
fn ssh_with_x11(s: &Setup, n: u32) -> (String, String) {
    let host = s.sshd.addr.ip().to_string();
    let display = format!("DISPLAY=:{n}");
    let remote = format!("python3 -c '{X_CLIENT}'");
    let out = s
        .client(&[
            "/usr/bin/env",
            &display,
            "/usr/bin/ssh",
            "-Y",
            "-o",
            "BatchMode=yes",
            &host,
            &remote,
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run ssh: {e}"));
    text(&out)
}

#[test]
fn x11_forwarding_is_relayed_when_a_rule_allows_it() {
    let Some(s) = setup("ssh-x11-ok", "127.0.0.113", &rules(X11_ALLOWED)) else {
        return;
    };
    let server = fake_x_server(113);
    let (stdout, stderr) = ssh_with_x11(&s, 113);
    assert!(
        stdout.contains("display=localhost:") && stdout.contains("reply=FAKE-X-SERVER"),
        "the target's X client reached the client's display: {stdout}\n{stderr}\n{}\n{}",
        s.d.log(),
        s.sshd.log()
    );
    let setup = server
        .recv_timeout(std::time::Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("the fake X server saw nothing: {e}"));
    assert_eq!(
        setup.first(),
        Some(&b'l'),
        "an X11 connection setup: {setup:?}"
    );
    assert!(
        setup.windows(18).any(|w| w == b"MIT-MAGIC-COOKIE-1"),
        "{setup:?}"
    );
    let events = s.events();
    let x11 = events_of_kind(&events, "x11");
    assert!(
        x11.iter()
            .any(|e| e["verdict"] == "allowed" && e["decided_by"] == "x11-ok"),
        "the request was decided by the rule: {events:#?}"
    );
    assert!(
        x11.iter()
            .any(|e| e["bytes_in"].as_u64().unwrap_or(0) > 0
                && e["bytes_out"].as_u64().unwrap_or(0) > 0),
        "the X11 connection was recorded with its bytes: {events:#?}"
    );
    // The x11-req's authentication (protocol and cookie) is never recorded.
    for e in &x11 {
        assert!(!e.to_string().contains("MIT-MAGIC"), "{e}");
    }
}

#[test]
fn x11_forwarding_is_refused_and_recorded_without_a_rule() {
    let Some(s) = setup("ssh-x11-no", "127.0.0.115", &rules("")) else {
        return;
    };
    let (stdout, stderr) = ssh_with_x11(&s, 115);
    assert!(
        stdout.contains("display=\n") && !stdout.contains("reply="),
        "no display on the target: {stdout}\n{stderr}"
    );
    let events = s.events();
    let x11 = events_of_kind(&events, "x11");
    assert!(
        x11.len() == 1 && x11[0]["verdict"] == "denied",
        "one refused X11 request: {events:#?}"
    );
}
