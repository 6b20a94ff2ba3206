//! Issue 18 (SSH): logging in to the target with a per-session user certificate,
//! and ending a live session from the CLI. A real Debian `sshd` on a loopback alias
//! at port 22 and real OpenSSH clients run as `nobody` through the eBPF redirect.
#![expect(
    clippy::panic,
    clippy::indexing_slicing,
    reason = "root tests panic with a message"
)]

use portcullis_tests::sshproxy::{setup_policy, text};

const CONNECT: &str = r#"
[[rule]]
name = "connect"
targets = ["box"]
action = "allow"
"#;

#[test]
fn the_proxy_logs_in_with_a_certificate_naming_the_session() {
    let Some(s) = setup_policy("ssh-user-ca", "127.0.0.76", |sshd| {
        // Only the CA can let the proxy in: no key is authorized.
        std::fs::write(sshd.dir().join("authorized_keys"), "").unwrap_or_else(|e| panic!("{e}"));
        format!(
            "[[target]]\nname = \"box\"\nprotocol = \"ssh\"\naddress = \"{}\"\n\
             known_hosts = \"{}\"\nuser_ca_key_file = \"{}\"\n\
             credentials = {{ user = \"root\" }}\n{CONNECT}",
            sshd.addr,
            sshd.known_hosts().display(),
            sshd.user_ca_key().display()
        )
    }) else {
        return;
    };
    let out = s.ssh(&[], &["id -un"]);
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "ssh: {stderr}\n{}\n{}",
        s.d.log(),
        s.sshd.log()
    );
    assert_eq!(stdout, "root\n");
    let session =
        s.d.wait_session(|x| x["protocol"] == "ssh")
            .unwrap_or_else(|e| panic!("{e:#}"));
    let id = session["id"].as_str().unwrap_or_default();
    let log = s.sshd.log();
    let accepted = log
        .lines()
        .find(|l| l.contains("Accepted publickey for root"))
        .unwrap_or_else(|| panic!("no login in the sshd log:\n{log}"));
    assert!(
        accepted.contains("CERT") && accepted.contains(&format!("ID {id} ")),
        "the login used a certificate whose key id is the session id {id}: {accepted}"
    );
}

#[test]
fn an_admin_kills_a_running_ssh_session_and_the_record_says_who_and_why() {
    use std::io::BufRead as _;
    let Some(s) = portcullis_tests::sshproxy::setup_with(
        "ssh-kill",
        "127.0.0.77",
        CONNECT,
        portcullis_tests::sshproxy::Trust::Right,
    ) else {
        return;
    };
    let host = s.sshd.addr.ip().to_string();
    let mut child = s
        .client(&[
            "/usr/bin/ssh",
            "-o",
            "BatchMode=yes",
            &host,
            "echo started; exec sleep 300",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut first = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = std::io::BufReader::new(out).read_line(&mut first);
    }
    assert_eq!(first, "started\n", "{}", s.d.log());
    let live =
        s.d.sessions()
            .unwrap_or_else(|e| panic!("{e:#}"))
            .into_iter()
            .find(|x| x["protocol"] == "ssh" && x["ended_at"].is_null())
            .unwrap_or_else(|| panic!("no live ssh session"));
    let id = live["id"].as_str().unwrap_or_default().to_owned();
    let out =
        s.d.cli(&["sessions", "kill", &id, "--reason", "runaway job"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "kill: {stdout}{stderr}");
    // The client's connection ends (well before its `sleep` would).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap_or_else(|e| panic!("{e}")) {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("ssh still runs after the kill:\n{}", s.d.log());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(!status.success(), "a killed session is no success");
    let ended =
        s.d.wait_session(|x| x["id"] == id.as_str())
            .unwrap_or_else(|e| panic!("{e:#}"));
    let reason = ended["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("killed by root") && reason.ends_with("runaway job"),
        "{ended:#}"
    );
    // Killing it again says it is not running.
    let again = s.d.cli(&["sessions", "kill", &id, "--reason", "twice"]);
    assert!(!again.status.success());
    assert!(text(&again).1.contains("not running"), "{}", text(&again).1);
}

#[test]
fn a_live_shell_is_watched_until_it_ends() {
    use std::{
        io::{Read as _, Write as _},
        process::Stdio,
        sync::mpsc,
    };
    let Some(s) = portcullis_tests::sshproxy::setup_with(
        "ssh-watch",
        "127.0.0.80",
        CONNECT,
        portcullis_tests::sshproxy::Trust::Right,
    ) else {
        return;
    };
    let host = s.sshd.addr.ip().to_string();
    let mut shell = s
        .client(&["/usr/bin/ssh", "-tt", "-o", "BatchMode=yes", &host])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut stdin = shell.stdin.take().unwrap_or_else(|| panic!("no stdin"));
    // The session is live once the daemon lists it without an end.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let id = loop {
        let live =
            s.d.sessions()
                .unwrap_or_default()
                .into_iter()
                .find(|x| x["protocol"] == "ssh" && x["ended_at"].is_null());
        if let Some(live) = live {
            break live["id"].as_str().unwrap_or_default().to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "no live session");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut watcher = std::process::Command::new(portcullis_tests::daemon::binary())
        .args(["sessions", "watch", &id])
        .env("PORTCULLIS_SOCKET", &s.d.socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let mut out = watcher.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut err = watcher.stderr.take().unwrap_or_else(|| panic!("no stderr"));
    let said = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text);
        text
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = out.read(&mut buf) {
            let _ = tx.send(buf[..n].to_vec());
        }
    });
    // Type until the watcher shows the shell's answer (it may subscribe late).
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("watched-42") {
        assert!(
            std::time::Instant::now() < deadline + std::time::Duration::from_secs(20),
            "the watcher never showed the shell: {}\n{}",
            String::from_utf8_lossy(&seen),
            s.d.log()
        );
        stdin
            .write_all(b"echo watched-$((6*7))\n")
            .unwrap_or_else(|e| panic!("{e}"));
        while let Ok(chunk) = rx.recv_timeout(std::time::Duration::from_millis(500)) {
            seen.extend(chunk);
        }
    }
    stdin.write_all(b"exit\n").unwrap_or_else(|e| panic!("{e}"));
    drop(stdin);
    let _ = shell.wait();
    // The watch ends by itself with the session, after its events.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = watcher.try_wait().unwrap_or_else(|e| panic!("{e}")) {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = watcher.kill();
            panic!("the watch did not end with the session:\n{}", s.d.log());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let stderr = said.join().unwrap_or_default();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("[portcullis] shell allowed") && stderr.contains("the session ended"),
        "{stderr}"
    );
}
