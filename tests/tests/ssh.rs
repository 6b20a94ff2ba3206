//! Issue 18 (SSH): transparent interception end to end: a real Debian `sshd` on a
//! loopback alias at port 22, real eBPF redirection, real OpenSSH clients run as
//! `nobody` with their configuration untouched (they trust the proxy's host
//! certificate through the daemon's `@cert-authority` block in
//! `/etc/ssh/ssh_known_hosts`), the proxy logging in with a key the client never sees,
//! and the real CLI approving held commands.
#![expect(
    clippy::panic,
    clippy::indexing_slicing,
    reason = "root tests panic with a message"
)]

use portcullis_tests::sshproxy::{Trust, scratch, setup, setup_with, text};
use serde_json::Value;
use std::{
    io::Write as _,
    process::{Child, Stdio},
};

/// Every test: the connection allowed, `rm` denied, `touch` reviewed by `seniors`.
const RULES: &str = r#"
[[group]]
name = "seniors"
users = ["root"]

[[rule]]
name = "connect"
targets = ["box"]
action = "allow"

[[rule]]
name = "no-rm"
targets = ["box"]
commands = ["rm *"]
action = "deny"
description = "files are never removed through the gateway"

[[rule]]
name = "touch-needs-a-senior"
targets = ["box"]
commands = ["touch *"]
action = "review"
approvers = ["seniors"]
timeout = "60s"

[[rule]]
name = "forwards"
targets = ["box"]
ssh = ["forward"]
action = "allow"
"#;

/// [`RULES`] with card numbers masked in everything the sessions show and record.
fn masked_rules() -> String {
    RULES.replace(
        "name = \"connect\"\ntargets = [\"box\"]\naction = \"allow\"\n",
        "name = \"connect\"\ntargets = [\"box\"]\naction = \"allow\"\nmask = [\"credit_card\"]\n",
    )
}

fn event<'a>(events: &'a [Value], kind: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} event in {events:#?}"))
}

#[test]
fn exec_runs_with_injected_credentials_and_is_recorded() {
    let Some(s) = setup("ssh-exec", "127.0.0.61", RULES) else {
        return;
    };
    let out = s.ssh(&[], &["echo hello; id -un; exit 3"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(3),
        "ssh: {stderr}\n{}\n{}",
        s.d.log(),
        s.sshd.log()
    );
    assert_eq!(stdout, "hello\nroot\n", "{stderr}");
    assert!(!stderr.contains("WARNING"), "no host-key warning: {stderr}");

    let events = s.events();
    let exec = event(&events, "exec");
    assert_eq!(exec["verdict"], "allowed");
    assert_eq!(exec["command"], "echo hello; id -un; exit 3");
    assert_eq!(exec["login"], "nobody");
    assert_eq!(exec["exit_status"], 3);
    assert_eq!(exec["output_sample"], "hello\nroot\n");
    assert_eq!(exec["bytes_out"], 11);
    let session =
        s.d.wait_session(|x| x["protocol"] == "ssh")
            .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(session["outcome"], "closed", "{session:#}");
    let out = s.d.cli(&[
        "sessions",
        "replay",
        session["id"].as_str().unwrap_or_default(),
    ]);
    let (transcript, _) = text(&out);
    assert!(
        transcript.contains("$ echo hello; id -un; exit 3")
            && transcript.contains("exit 3, ")
            && transcript.contains("login    nobody"),
        "{transcript}"
    );
    // The proxy's key appears nowhere the daemon writes.
    let key = std::fs::read_to_string(s.sshd.client_key()).unwrap_or_default();
    let secret = key.lines().nth(1).unwrap_or_default();
    let db = std::fs::read(s.d.dir().join("state/portcullis.db")).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&db).contains(secret) && !s.d.log().contains(secret));
}

#[test]
fn a_denied_command_never_runs_and_says_who_and_why() {
    let Some(s) = setup("ssh-deny", "127.0.0.62", RULES) else {
        return;
    };
    let victim = s.sshd.dir().join("victim");
    std::fs::write(&victim, "x").unwrap_or_else(|e| panic!("{e}"));
    for line in [
        format!("ls /; rm -f {}", victim.display()),
        format!("echo $(rm -f {})", victim.display()),
        format!("sh -c 'true && rm -f {}'", victim.display()),
    ] {
        let out = s.ssh(&[], &[&line]);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(126), "{line}: {stdout} {stderr}");
        assert!(
            stderr.contains("no-rm") && stderr.contains("never removed"),
            "{line}: {stderr}"
        );
        assert!(stdout.is_empty(), "nothing ran: {stdout}");
        assert!(victim.exists(), "{line} removed the file");
    }
    // What cannot be parsed is refused too (no rule allows unparsed lines).
    let out = s.ssh(&[], &["echo 'unterminated"]);
    assert_eq!(out.status.code(), Some(126), "{}", text(&out).1);
    let events = s.events();
    let exec = event(&events, "exec");
    assert_eq!(exec["verdict"], "denied");
}

#[test]
fn a_held_command_runs_after_approval() {
    let Some(s) = setup("ssh-review", "127.0.0.63", RULES) else {
        return;
    };
    let made = s.sshd.dir().join("made");
    let line = format!("touch {} && echo made", made.display());
    let host = s.sshd.addr.ip().to_string();
    let child: Child = s
        .client(&[
            "/usr/bin/ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            "SetEnv=PORTCULLIS_REASON=CHG-17",
            &host,
            &line,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let request = s.wait_request();
    let id = request["id"].as_str().unwrap_or_default().to_owned();
    assert!(!made.exists(), "a held command must not run");
    // The client's `SetEnv PORTCULLIS_REASON` is its justification.
    assert_eq!(request["justification"], "CHG-17", "{request}");
    let out = s.d.cli(&["approve", &id, "--reason", "ok"]);
    assert!(out.status.success(), "{}", text(&out).1);
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, "made\n");
    assert!(
        stderr.contains(&id) && stderr.contains(&format!("portcullis approve {id}")),
        "{stderr}"
    );
    assert!(made.exists());
    let events = s.events();
    let exec = event(&events, "exec");
    assert_eq!(exec["verdict"], "approved");
    assert_eq!(exec["request_id"], id.as_str());
}

#[test]
fn a_denied_hold_exits_non_zero_with_the_approvers_reason() {
    let Some(s) = setup("ssh-review-deny", "127.0.0.64", RULES) else {
        return;
    };
    let made = s.sshd.dir().join("made");
    let line = format!("touch {}", made.display());
    let host = s.sshd.addr.ip().to_string();
    let child = s
        .client(&["/usr/bin/ssh", "-o", "BatchMode=yes", &host, &line])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let id = s.wait_request()["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let out = s.d.cli(&["deny", &id, "--reason", "not during the freeze"]);
    assert!(out.status.success(), "{}", text(&out).1);
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(126));
    assert!(
        stderr.contains("not during the freeze") && stderr.contains("root"),
        "{stderr}"
    );
    assert!(!made.exists());
}

#[test]
fn a_changed_target_key_refuses_the_session() {
    let Some(s) = setup_with("ssh-key-changed", "127.0.0.65", RULES, Trust::Changed) else {
        return;
    };
    let out = s.ssh(&[], &["echo never"]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stdout.is_empty());
    assert!(stderr.contains("CHANGED"), "{stderr}");
    let session =
        s.d.wait_session(|x| x["protocol"] == "ssh")
            .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(session["outcome"], "error", "{session:#}");
    assert!(
        session["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("CHANGED")
    );
}

#[test]
fn a_tty_shell_is_relayed_and_recorded_as_asciicast() {
    let Some(s) = setup("ssh-shell", "127.0.0.66", RULES) else {
        return;
    };
    let host = s.sshd.addr.ip().to_string();
    let mut child = s
        .client(&["/usr/bin/ssh", "-tt", "-o", "BatchMode=yes", &host])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(b"echo shell-$((6*7))\nexit\n")
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let (stdout, stderr) = text(&out);
    assert!(
        stdout.contains("shell-42"),
        "{stdout}\n{stderr}\n{}",
        s.d.log()
    );
    let events = s.events();
    let shell = event(&events, "shell");
    assert_eq!(shell["verdict"], "allowed");
    let path = shell["recording"]["path"].as_str().unwrap_or_default();
    let cast = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let header: Value = serde_json::from_str(cast.lines().next().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(header["version"], 2);
    assert!(cast.contains("shell-42"));
    let digest = sha256_hex(cast.as_bytes());
    assert_eq!(shell["payload"], digest.as_str());

    // The CLI exports it, checked against the chain, for asciinema.
    let session =
        s.d.wait_session(|x| x["protocol"] == "ssh")
            .unwrap_or_else(|e| panic!("{e:#}"));
    let id = session["id"].as_str().unwrap_or_default();
    let file = s.d.dir().join("exported.cast");
    let out = s.d.cli(&[
        "sessions",
        "replay",
        id,
        "--asciicast",
        &file.display().to_string(),
    ]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(std::fs::read_to_string(&file).unwrap_or_default(), cast);
    if std::path::Path::new("/usr/bin/asciinema").exists() {
        // asciinema reads /dev/tty: give it a terminal with script(1).
        let out = std::process::Command::new("script")
            .args([
                "-qec",
                &format!("asciinema cat {}", file.display()),
                "/dev/null",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success() && text(&out).0.contains("shell-42"),
            "{}",
            text(&out).1
        );
    } else {
        eprintln!("SKIP asciinema part: /usr/bin/asciinema is missing; run `cargo xtask setup`");
    }
    // A recording changed after the fact no longer matches its chain.
    std::fs::write(path, cast.replace("shell-42", "shell-43")).unwrap_or_else(|e| panic!("{e}"));
    let out = s.d.cli(&[
        "sessions",
        "replay",
        id,
        "--asciicast",
        &file.display().to_string(),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("does not match the digest"),
        "{}",
        text(&out).1
    );
}

#[test]
fn local_forward_is_decided_relayed_and_recorded() {
    let Some(s) = setup("ssh-forward", "127.0.0.67", RULES) else {
        return;
    };
    let echo =
        portcullis_tests::net::EchoServer::start("127.0.0.1").unwrap_or_else(|e| panic!("{e}"));
    let local = portcullis_tests::net::free_port("127.0.0.1").unwrap_or_else(|e| panic!("{e}"));
    let spec = format!("127.0.0.1:{local}:127.0.0.1:{}", echo.addr.port());
    let host = s.sshd.addr.ip().to_string();
    let mut ssh = s
        .client(&[
            "/usr/bin/ssh",
            "-N",
            "-o",
            "BatchMode=yes",
            "-o",
            "ExitOnForwardFailure=yes",
            "-L",
            &spec,
            &host,
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let reply = loop {
        match exchange(local) {
            Ok(reply) => break reply,
            Err(e) if std::time::Instant::now() > deadline => {
                panic!("forward never worked: {e}\n{}", s.d.log())
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    };
    assert_eq!(reply, "through the tunnel\n");
    let _ = ssh.kill();
    let _ = ssh.wait();
    let events = s.events();
    assert!(
        events.iter().any(|e| e["kind"] == "forward"),
        "{events:#?}\n{}",
        s.d.log()
    );
    let forward = event(&events, "forward");
    assert_eq!(forward["verdict"], "allowed");
    assert_eq!(forward["port"], echo.addr.port());
    assert_eq!(forward["bytes_in"], 19);
}

fn exchange(port: u16) -> std::io::Result<String> {
    use std::io::{BufRead as _, BufReader};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    stream.write_all(b"through the tunnel\n")?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    if line.is_empty() {
        return Err(std::io::Error::other("closed"));
    }
    Ok(line)
}

fn sha256_hex(data: &[u8]) -> String {
    let out = std::process::Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            if let Some(mut i) = c.stdin.take() {
                i.write_all(data)?;
            }
            c.wait_with_output()
        })
        .unwrap_or_else(|e| panic!("{e}"));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn scp_sftp_and_rsync_move_files_and_are_recorded() {
    let Some(s) = setup("ssh-files", "127.0.0.68", RULES) else {
        return;
    };
    let host = s.sshd.addr.ip().to_string();
    let local = scratch();
    let remote = scratch();
    let body = (0..20_000).fold(String::new(), |mut s, i| {
        use std::fmt::Write as _;
        let _ = writeln!(s, "line {i}");
        s
    });
    let source = local.path().join("source.txt");
    std::fs::write(&source, &body).unwrap_or_else(|e| panic!("{e}"));
    let run = |argv: &[&str]| {
        let out = s.client(argv).output().unwrap_or_else(|e| panic!("{e}"));
        let (stdout, stderr) = text(&out);
        assert!(
            out.status.success(),
            "{argv:?}: {stdout}\n{stderr}\n{}",
            s.d.log()
        );
    };
    let at = |name: &str| format!("{host}:{}", remote.path().join(name).display());
    let src = source.display().to_string();
    // OpenSSH 9 scp speaks SFTP; -O is the legacy protocol (`scp -t` on the server).
    run(&[
        "/usr/bin/scp",
        "-o",
        "BatchMode=yes",
        &src,
        &at("sftp-up.txt"),
    ]);
    run(&[
        "/usr/bin/scp",
        "-O",
        "-o",
        "BatchMode=yes",
        &src,
        &at("scp-up.txt"),
    ]);
    let down = local.path().join("down.txt").display().to_string();
    run(&[
        "/usr/bin/scp",
        "-O",
        "-o",
        "BatchMode=yes",
        &at("scp-up.txt"),
        &down,
    ]);
    let batch = local.path().join("batch");
    let got = local.path().join("got.txt").display().to_string();
    std::fs::write(
        &batch,
        format!(
            "get {} {got}\n",
            remote.path().join("sftp-up.txt").display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    run(&[
        "/usr/bin/sftp",
        "-o",
        "BatchMode=yes",
        "-b",
        &batch.display().to_string(),
        &host,
    ]);
    for name in ["sftp-up.txt", "scp-up.txt"] {
        let copied = std::fs::read_to_string(remote.path().join(name)).unwrap_or_default();
        assert!(copied == body, "{name} differs");
    }
    for path in [&down, &got] {
        assert!(
            std::fs::read_to_string(path).unwrap_or_default() == body,
            "{path} differs"
        );
    }
    if std::path::Path::new("/usr/bin/rsync").exists() {
        let dst = format!("{}/", at("rsynced"));
        run(&[
            "/usr/bin/rsync",
            "-a",
            "-e",
            "/usr/bin/ssh -o BatchMode=yes",
            &src,
            &dst,
        ]);
        let synced =
            std::fs::read_to_string(remote.path().join("rsynced/source.txt")).unwrap_or_default();
        assert!(synced == body, "rsync copy differs");
    } else {
        eprintln!("SKIP rsync part: /usr/bin/rsync is missing; run `cargo xtask setup`");
    }
    // Each client's session records its events when it ends.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let kinds: Vec<String> =
            s.d.sessions()
                .unwrap_or_default()
                .iter()
                .filter(|x| x["protocol"] == "ssh" && !x["ended_at"].is_null())
                .filter_map(|x| x["id"].as_str().map(str::to_owned))
                .flat_map(|id| s.events_of(&id))
                .map(|e| {
                    format!(
                        "{}:{}",
                        e["kind"].as_str().unwrap_or_default(),
                        e["verdict"].as_str().unwrap_or_default()
                    )
                })
                .collect();
        let missing: Vec<_> = ["sftp:allowed", "scp:allowed"]
            .into_iter()
            .filter(|want| !kinds.iter().any(|k| k == want))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{missing:?} missing from {kinds:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn exec_output_is_masked_even_when_a_card_arrives_in_two_reads() {
    let rules = masked_rules();
    assert!(rules.contains("credit_card"));
    let Some(s) = setup("ssh-mask", "127.0.0.69", &rules) else {
        return;
    };
    let line =
        "echo card 4111 1111 1111 1111; printf '5500 0000 '; sleep 0.1; printf '0000 0004\\n'";
    let out = s.ssh(&[], &[line]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.starts_with("card "), "{stdout}");
    for card in [
        "4111 1111 1111 1111",
        "5500 0000 0000 0004",
        "1111 1111",
        "0000 0004",
    ] {
        assert!(!stdout.contains(card), "{card} leaked: {stdout}");
    }
    let events = s.events();
    let exec = event(&events, "exec");
    let sample = exec["output_sample"].as_str().unwrap_or_default();
    assert!(
        !sample.contains("4111 1111 1111 1111") && !sample.contains("0000 0004"),
        "{sample}"
    );
}

#[test]
fn the_known_hosts_block_lives_while_the_daemon_runs_and_release_removes_it() {
    let Some(mut s) = setup("ssh-known-hosts", "127.0.0.70", RULES) else {
        return;
    };
    let ours = |text: &str| {
        text.lines()
            .any(|l| l.starts_with("@cert-authority ") && l.contains("box,127.0.0.70 "))
    };
    let before = std::fs::read_to_string("/etc/ssh/ssh_known_hosts").unwrap_or_default();
    assert!(ours(&before), "{before}");
    let _ = s.d.stop();
    let out = std::process::Command::new(portcullis_tests::daemon::binary())
        .args(["daemon", "--release", "--config"])
        .arg(&s.d.config)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{}", text(&out).1);
    let after = std::fs::read_to_string("/etc/ssh/ssh_known_hosts").unwrap_or_default();
    assert!(!ours(&after), "{after}");
}

#[test]
fn ansible_ping_runs_through_the_proxy() {
    if !std::path::Path::new("/usr/bin/ansible").exists() {
        eprintln!(
            "SKIP ansible_ping_runs_through_the_proxy: ansible is missing; run `cargo xtask setup`"
        );
        return;
    }
    // Ansible removes its temporary files with `rm`: no rm rule here.
    let rules = "[[rule]]\nname = \"connect\"\ntargets = [\"box\"]\naction = \"allow\"\n";
    let Some(s) = setup("ssh-ansible", "127.0.0.73", rules) else {
        return;
    };
    let home = scratch();
    let inventory = format!("{},", s.sshd.addr.ip());
    let out = s
        .client(&[
            "/usr/bin/ansible",
            "all",
            "-i",
            &inventory,
            "-m",
            "ping",
            "-u",
            "deploy",
        ])
        .env("HOME", home.path())
        .env("ANSIBLE_LOCAL_TEMP", home.path().join("tmp"))
        // No persistent master connection, so the session ends (and is recorded)
        // when the run does; host-key checking stays as configured.
        .env("ANSIBLE_SSH_ARGS", "-o ControlMaster=no")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}\n{}", s.d.log());
    assert!(stdout.contains("\"ping\": \"pong\""), "{stdout}");
    let events = s.events();
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "exec" && e["verdict"] == "allowed"),
        "{events:#?}"
    );
}

#[test]
fn a_refused_connection_is_told_why_in_the_banner() {
    // Only root may connect; the client runs as nobody.
    let rules = "[[rule]]\nname = \"root-only\"\ntargets = [\"box\"]\nwho = { users = [\"root\"] }\naction = \"allow\"\n";
    let Some(s) = setup("ssh-refused", "127.0.0.74", rules) else {
        return;
    };
    let out = s.ssh(&[], &["echo never"]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success() && stdout.is_empty());
    assert!(
        stderr.contains("Portcullis denied the connection") && stderr.contains("no rule allows"),
        "{stderr}"
    );
    let session =
        s.d.wait_session(|x| x["protocol"] == "ssh")
            .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(session["outcome"], "denied");
}
