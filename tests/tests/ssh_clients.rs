//! Issue 18 (SSH), item 7: more real clients through the proxy, unchanged: Python
//! paramiko (which does not check host certificates, so the target presents the
//! server's own key with `host_key_file`) running a command and moving files over
//! SFTP, and git cloning and pushing over SSH. A real Debian `sshd` on a loopback
//! alias at port 22; clients run as `nobody` through the eBPF redirect.
#![expect(
    clippy::panic,
    clippy::indexing_slicing,
    reason = "root tests panic with a message"
)]

use portcullis_tests::sshproxy::{Setup, scratch, setup, setup_policy, text};
use serde_json::Value;
use std::process::Command;

/// The events of every ended SSH session, once `want` of kind `kind` are recorded.
fn events(s: &Setup, kind: &str, want: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let all: Vec<Value> =
            s.d.sessions()
                .unwrap_or_default()
                .iter()
                .filter(|x| x["protocol"] == "ssh" && !x["ended_at"].is_null())
                .filter_map(|x| x["id"].as_str().map(str::to_owned))
                .flat_map(|id| s.events_of(&id))
                .collect();
        let found = all.iter().filter(|e| e["kind"] == kind).count();
        if found >= want || std::time::Instant::now() > deadline {
            return all;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

const PARAMIKO: &str = r#"
import sys, paramiko
host, known, local, remote = sys.argv[1:5]
c = paramiko.SSHClient()
c.load_host_keys(known)
c.set_missing_host_key_policy(paramiko.RejectPolicy())
c.connect(host, username="nobody", pkey=paramiko.RSAKey.generate(2048),
          look_for_keys=False, allow_agent=False, timeout=30)
_, out, _ = c.exec_command("echo hello from paramiko; id -un")
print(out.read().decode(), end="")
print("exit", out.channel.recv_exit_status())
sftp = c.open_sftp()
sftp.put(local + "/up.bin", remote + "/up.bin")
sftp.get(remote + "/up.bin", local + "/down.bin")
try:
    sftp.remove(remote + "/kept/a.txt")
    print("removed")
except OSError as e:
    print("refused:", e)
c.close()
"#;

#[test]
fn paramiko_runs_a_command_and_moves_files_with_the_servers_own_host_key() {
    let remote = scratch();
    let kept = remote.path().join("kept");
    std::fs::create_dir(&kept).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(kept.join("a.txt"), "keep me\n").unwrap_or_else(|e| panic!("{e}"));
    let rules = format!(
        "[[rule]]\nname = \"connect\"\ntargets = [\"box\"]\naction = \"allow\"\n\n\
         [[rule]]\nname = \"keep\"\ntargets = [\"box\"]\nfile_ops = [\"remove\"]\n\
         files = [\"{}/*\"]\naction = \"deny\"\n",
        kept.display()
    );
    let Some(s) = setup_policy("ssh-paramiko", "127.0.0.78", |sshd| {
        format!(
            "[[target]]\nname = \"box\"\nprotocol = \"ssh\"\naddress = \"{}\"\n\
             known_hosts = \"{}\"\nhost_key_file = \"{}\"\n\
             credentials = {{ user = \"root\", key_file = \"{}\" }}\n{rules}",
            sshd.addr,
            sshd.known_hosts().display(),
            sshd.dir().join("host_key").display(),
            sshd.client_key().display()
        )
    }) else {
        return;
    };
    let local = scratch();
    // paramiko checks the key the proxy presents against the server's real key.
    let known = local.path().join("known_hosts");
    std::fs::copy(s.sshd.known_hosts(), &known).unwrap_or_else(|e| panic!("{e}"));
    let body: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(local.path().join("up.bin"), &body).unwrap_or_else(|e| panic!("{e}"));
    let host = s.sshd.addr.ip().to_string();
    let (l, r) = (
        local.path().display().to_string(),
        remote.path().display().to_string(),
    );
    let argv = [
        "/usr/bin/python3",
        "-c",
        PARAMIKO,
        &host,
        &known.display().to_string(),
        &l,
        &r,
    ];
    let out = s.client(&argv).output().unwrap_or_else(|e| panic!("{e}"));
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "paramiko: {stdout}\n{stderr}\n{}",
        s.d.log()
    );
    assert!(
        stdout.starts_with("hello from paramiko\nroot\nexit 0\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("refused:") && kept.join("a.txt").exists(),
        "the rule refuses the remove: {stdout}"
    );
    let up = std::fs::read(remote.path().join("up.bin")).unwrap_or_default();
    let down = std::fs::read(local.path().join("down.bin")).unwrap_or_default();
    assert!(up == body && down == body, "the files differ");
    let all = events(&s, "sftp_file", 3);
    let exec = all
        .iter()
        .find(|e| e["kind"] == "exec")
        .unwrap_or_else(|| panic!("no exec in {all:#?}"));
    assert_eq!(exec["exit_status"], 0);
    let written = all
        .iter()
        .find(|e| e["kind"] == "sftp_file" && e["ops"][0] == "write")
        .unwrap_or_else(|| panic!("no upload in {all:#?}"));
    assert_eq!(written["bytes_written"], 1_000_000, "{written:#}");
}

/// `git ARGS` as `nobody` in `dir`, through the proxy.
fn git(s: &Setup, dir: &std::path::Path, args: &[&str]) -> String {
    let mut command = vec!["/usr/bin/git", "-C"];
    let d = dir.display().to_string();
    command.push(&d);
    command.extend_from_slice(args);
    let out = s
        .client(&command)
        .env("HOME", dir)
        .env("GIT_SSH_COMMAND", "/usr/bin/ssh -o BatchMode=yes")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "git {args:?}: {stdout}\n{stderr}\n{}",
        s.d.log()
    );
    stdout
}

#[test]
fn git_clones_and_pushes_over_ssh() {
    if !std::path::Path::new("/usr/bin/git").exists() {
        eprintln!("SKIP: /usr/bin/git is missing; run `cargo xtask setup`");
        return;
    }
    let rules = "[[rule]]\nname = \"connect\"\ntargets = [\"box\"]\naction = \"allow\"\n";
    let Some(s) = setup("ssh-git", "127.0.0.79", rules) else {
        return;
    };
    let remote = scratch();
    let repo = remote.path().join("repo.git");
    let init = Command::new("/usr/bin/git")
        .args(["init", "-q", "--bare", "-b", "main"])
        .arg(&repo)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(init.status.success(), "{}", text(&init).1);
    let local = scratch();
    let url = format!("ssh://{}{}", s.sshd.addr.ip(), repo.display());
    git(&s, local.path(), &["clone", "-q", &url, "work"]);
    let work = local.path().join("work");
    std::fs::write(work.join("README"), "through the gateway\n").unwrap_or_else(|e| panic!("{e}"));
    git(&s, &work, &["add", "README"]);
    git(&s, &work, &["commit", "-q", "-m", "first"]);
    git(&s, &work, &["push", "-q", "origin", "HEAD:main"]);
    git(
        &s,
        local.path(),
        &["clone", "-q", "-b", "main", &url, "copy"],
    );
    let copied = std::fs::read_to_string(local.path().join("copy/README")).unwrap_or_default();
    assert_eq!(copied, "through the gateway\n");
    let all = events(&s, "exec", 3);
    for program in ["git-upload-pack", "git-receive-pack"] {
        assert!(
            all.iter().any(|e| e["kind"] == "exec"
                && e["verdict"] == "allowed"
                && e["command"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with(program)),
            "no {program} exec in {all:#?}"
        );
    }
}

#[test]
fn a_remote_forward_allowed_by_a_rule_is_relayed_and_recorded() {
    use std::io::{Read as _, Write as _};
    let rules = "[[rule]]\nname = \"connect\"\ntargets = [\"box\"]\naction = \"allow\"\n\n\
                 [[rule]]\nname = \"forwards\"\ntargets = [\"box\"]\nssh = [\"forward\"]\n\
                 action = \"allow\"\n";
    let Some(s) = setup("ssh-remote-forward", "127.0.0.82", rules) else {
        return;
    };
    // A service on the client's side that answers one line.
    let service = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let service_port = service
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .port();
    std::thread::spawn(move || {
        if let Ok((mut c, _)) = service.accept() {
            let mut line = [0u8; 5];
            let _ = c.read_exact(&mut line);
            let _ = c.write_all(b"pong from the client side\n");
        }
    });
    // A free port on the server's side (sshd listens there for the forward).
    let remote_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("{e}"))
        .port();
    let host = s.sshd.addr.ip().to_string();
    let spec = format!("127.0.0.1:{remote_port}:127.0.0.1:{service_port}");
    let mut child = s
        .client(&[
            "/usr/bin/ssh",
            "-N",
            "-o",
            "BatchMode=yes",
            "-o",
            "ExitOnForwardFailure=yes",
            "-R",
            &spec,
            &host,
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    // sshd listens once the forward is set up: connect until it does.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut conn = loop {
        if let Ok(c) = std::net::TcpStream::connect(("127.0.0.1", remote_port)) {
            break c;
        }
        if let Some(status) = child.try_wait().unwrap_or_else(|e| panic!("{e}")) {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("ssh -R exited with {status}: {err}\n{}", s.d.log());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the forward never listened"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    conn.write_all(b"ping\n").unwrap_or_else(|e| panic!("{e}"));
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    drop(conn);
    let _ = child.kill();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let _ = child.wait();
    assert_eq!(
        answer,
        "pong from the client side\n",
        "ssh: {err}\n{}\n{}",
        s.d.log(),
        s.sshd.log()
    );
    let all = events(&s, "forward", 2);
    let listen = all
        .iter()
        .find(|e| {
            e["kind"] == "forward" && e["subject"] == format!("remote 127.0.0.1:{remote_port}")
        })
        .unwrap_or_else(|| panic!("no -R listen in {all:#?}"));
    assert_eq!(listen["verdict"], "allowed");
    let relayed = all
        .iter()
        .find(|e| e["kind"] == "forward" && e["remote"] == true)
        .unwrap_or_else(|| panic!("no forwarded connection in {all:#?}"));
    assert_eq!(relayed["bytes_in"], 26, "{relayed:#}");
    assert_eq!(relayed["bytes_out"], 5, "{relayed:#}");
}
