//! Issue 21: `portcullis install` / `uninstall` into a staging root, the unit under
//! `systemd-analyze verify`, and the daemon run as the unit runs it — only the unit's
//! capabilities, no new privileges, `NOTIFY_SOCKET` and `WATCHDOG_USEC` set — telling
//! a socket this test reads: STATUS lines, READY=1, WATCHDOG=1, RELOADING=1,
//! STOPPING=1. (These machines do not run systemd as PID 1.)
#![expect(
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests panic with a message"
)]

use portcullis_tests::{
    cgroup::{TestCgroup, can_run_ebpf_tests},
    daemon::{TestDaemon, binary},
    net::{CLIENT_PY, EchoServer, run_client},
};
use std::{
    os::unix::net::UnixDatagram,
    path::Path,
    process::{Command, Output},
    time::{Duration, Instant},
};

fn portcullis(args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn ok(out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

#[test]
fn install_writes_the_files_once_and_uninstall_keeps_data_unless_purged() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = dir.path().to_str().unwrap_or_default();
    ok(&portcullis(&["install", "--root", root, "--no-enable"]));
    let at = |p: &str| dir.path().join(p);
    for file in [
        "usr/local/bin/portcullis",
        "etc/systemd/system/portcullis.service",
        "etc/portcullis/portcullis.toml",
        "etc/portcullis/policies/example.toml",
        "etc/portcullis/policies/tests/example.toml",
    ] {
        assert!(at(file).is_file(), "{file} missing");
    }
    assert!(at("var/lib/portcullis").is_dir());
    let unit = std::fs::read_to_string(at("etc/systemd/system/portcullis.service"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        unit.contains("ExecStart=/usr/local/bin/portcullis daemon"),
        "{unit}"
    );
    // The shipped config and examples load, with no active target.
    let config = std::fs::read_to_string(at("etc/portcullis/portcullis.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let local = config.replace(
        "/etc/portcullis/policies",
        &at("etc/portcullis/policies").display().to_string(),
    );
    std::fs::write(at("etc/portcullis/local.toml"), local).unwrap_or_else(|e| panic!("{e}"));
    let check = ok(&portcullis(&[
        "policy",
        "check",
        "--config",
        &at("etc/portcullis/local.toml").display().to_string(),
    ]));
    assert!(check.contains("OK, 0 targets"), "{check}");

    // A second install (an upgrade) keeps what the operator changed.
    std::fs::write(at("etc/portcullis/portcullis.toml"), "# mine\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let again = ok(&portcullis(&["install", "--root", root, "--no-enable"]));
    assert!(again.contains("kept"), "{again}");
    let kept = std::fs::read_to_string(at("etc/portcullis/portcullis.toml")).unwrap_or_default();
    assert_eq!(kept, "# mine\n");

    ok(&portcullis(&["uninstall", "--root", root]));
    assert!(!at("usr/local/bin/portcullis").exists());
    assert!(!at("etc/systemd/system/portcullis.service").exists());
    assert!(at("etc/portcullis/portcullis.toml").exists(), "config kept");
    assert!(at("var/lib/portcullis").exists(), "data kept");
    ok(&portcullis(&["uninstall", "--root", root, "--purge"]));
    assert!(!at("etc/portcullis").exists() && !at("var/lib/portcullis").exists());
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIP unit verify: no systemd-analyze (cargo xtask setup installs systemd)");
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = dir.path().to_str().unwrap_or_default();
    ok(&portcullis(&["install", "--root", root, "--no-enable"]));
    // As installed, but naming a binary that exists here (verify checks it).
    let unit = std::fs::read_to_string(dir.path().join("etc/systemd/system/portcullis.service"))
        .unwrap_or_else(|e| panic!("{e}"))
        .replace("/usr/local/bin/portcullis", &binary().display().to_string());
    let path = dir.path().join("portcullis.service");
    std::fs::write(&path, unit).unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // verify exits 0 on unknown keys and bad values, and only warns: none allowed.
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

/// Reads notifications until one holds `want` (up to 30 s); all read so far.
fn wait_for(sock: &UnixDatagram, seen: &mut Vec<String>, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 4096];
    while !seen.iter().any(|m| m.lines().any(|l| l == want)) {
        assert!(
            Instant::now() < deadline,
            "no {want} within 30 s; got {seen:#?}"
        );
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
}

#[test]
fn the_daemon_run_as_the_unit_runs_it_notifies_ready_status_and_watchdog() {
    if !can_run_ebpf_tests("notify") {
        return;
    }
    let echo = EchoServer::start("127.0.0.2").unwrap_or_else(|e| panic!("{e}"));
    let policy = format!(
        "[[target]]\nname = \"echo\"\nprotocol = \"tcp\"\naddress = \"{}\"\n\n\
         [[rule]]\nname = \"all\"\ntargets = [\"*\"]\naction = \"allow\"\n",
        echo.addr
    );
    let cg = TestCgroup::new("notify").unwrap_or_else(|e| panic!("{e}"));
    let mut d = TestDaemon::prepare_with_store("notify", &cg, &policy, "sqlite://state/p.db", "")
        .unwrap_or_else(|e| panic!("{e}"));
    let sock_path = d.dir().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap_or_else(|e| panic!("{e}"));
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap_or_else(|e| panic!("{e}"));
    let notify = format!("NOTIFY_SOCKET={}", sock_path.display());
    // The unit's CapabilityBoundingSet and NoNewPrivileges.
    let caps = unit_capabilities();
    // systemd sets WATCHDOG_PID to the service's pid: the shell's, which execs on.
    d.launch(&[
        "sh",
        "-c",
        "export WATCHDOG_PID=$$; exec \"$@\"",
        "sh",
        "env",
        &notify,
        "WATCHDOG_USEC=1000000",
        "setpriv",
        "--bounding-set",
        &caps,
        "--inh-caps=-all",
        "--no-new-privs",
        "--",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    let mut seen = Vec::new();
    wait_for(&sock, &mut seen, "READY=1");
    d.wait_ready().unwrap_or_else(|e| panic!("{e}"));
    let all = seen.join("\n");
    for status in [
        "STATUS=Loading the policy",
        "STATUS=Opening the store",
        "STATUS=Attaching interception",
    ] {
        assert!(all.contains(status), "{status} missing: {seen:#?}");
    }
    let ready = seen
        .iter()
        .find(|m| m.contains("READY=1"))
        .cloned()
        .unwrap_or_default();
    assert!(ready.contains("STATUS=Protecting 1 targets"), "{ready}");
    // Keep-alives at half of WATCHDOG_USEC.
    seen.clear();
    wait_for(&sock, &mut seen, "WATCHDOG=1");
    seen.clear();
    wait_for(&sock, &mut seen, "WATCHDOG=1");

    // With only the unit's capabilities it intercepts and sees who connects.
    let port = echo.addr.port().to_string();
    let out = run_client(cg.command(
        Some((65534, 65534)),
        &["/usr/bin/python3", "-c", CLIENT_PY, "127.0.0.2", &port],
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out["reply"], "hello portcullis\n", "{out}\n{}", d.log());
    let pid = out["pid"].as_u64().unwrap_or_default();
    let s = d
        .wait_session(|s| s["principal"]["pid"].as_u64() == Some(pid))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        s["principal"]["exe"], out["exe"],
        "CAP_SYS_PTRACE reads /proc/PID/exe: {s}"
    );

    seen.clear();
    ok(&d.cli(&["policy", "reload"]));
    wait_for(&sock, &mut seen, "RELOADING=1");
    wait_for(&sock, &mut seen, "READY=1");

    seen.clear();
    let status = d.stop().unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "{status}\n{}", d.log());
    wait_for(&sock, &mut seen, "STOPPING=1");
}

/// The `CapabilityBoundingSet=` of the shipped unit, in setpriv's syntax.
fn unit_capabilities() -> String {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/dist/portcullis.service");
    let text = std::fs::read_to_string(unit).unwrap_or_else(|e| panic!("{e}"));
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .unwrap_or_else(|| panic!("the unit has no CapabilityBoundingSet"));
    let caps: Vec<String> = line
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    format!("-all,{}", caps.join(","))
}

/// The Debian package (`cargo xtask test` builds one of its debug binary and names
/// it in `PORTCULLIS_DEB`; `cargo xtask deb` builds the release one): `dpkg -i` runs
/// the install steps, `dpkg -r` keeps configuration and data, `dpkg -P` removes
/// them. It installs into this host, so it leaves nothing behind: the groups it
/// created go too, and a panic midway still purges ([`Purge`]).
#[test]
fn the_debian_package_installs_and_removes_cleanly() {
    let Some(deb) = std::env::var_os("PORTCULLIS_DEB") else {
        eprintln!(
            "SKIP deb: PORTCULLIS_DEB names no package (`cargo xtask test` sets it; \
             or `cargo xtask deb`, then PORTCULLIS_DEB=target/debian/….deb)"
        );
        return;
    };
    if !portcullis_tests::cgroup::is_root() {
        eprintln!("SKIP deb: needs root (dpkg -i)");
        return;
    }
    for (path, why) in [
        ("/etc/portcullis", "its configuration would be purged"),
        (
            "/sys/fs/bpf/portcullis",
            "its daemon's pins would be removed by prerm",
        ),
        ("/usr/bin/portcullis", "it would be replaced"),
    ] {
        if Path::new(path).exists() {
            eprintln!("SKIP deb: this host has {path}; {why}");
            return;
        }
    }
    let had_groups: Vec<bool> = GROUPS.iter().map(|g| group_exists(g)).collect();
    let _purge = Purge(had_groups);
    dpkg(&["-i", &deb.to_string_lossy()]);
    for file in [
        "/usr/bin/portcullis",
        "/lib/systemd/system/portcullis.service",
        "/etc/portcullis/portcullis.toml",
        "/etc/portcullis/policies/example.toml",
    ] {
        assert!(Path::new(file).exists(), "{file} missing after dpkg -i");
    }
    let unit = std::fs::read_to_string("/lib/systemd/system/portcullis.service")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        unit.contains("ExecStart=/usr/bin/portcullis daemon"),
        "{unit}"
    );
    assert!(Path::new("/var/lib/portcullis").is_dir());
    for group in GROUPS {
        assert!(group_exists(group), "group {group} missing");
    }
    let version = ok(&Command::new("/usr/bin/portcullis")
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("{e}")));
    assert!(version.contains("portcullis"), "{version}");
    dpkg(&["-r", "portcullis"]);
    assert!(!Path::new("/usr/bin/portcullis").exists());
    assert!(!Path::new("/lib/systemd/system/portcullis.service").exists());
    assert!(
        Path::new("/etc/portcullis/portcullis.toml").exists(),
        "dpkg -r keeps the config"
    );
    dpkg(&["-P", "portcullis"]);
    assert!(!Path::new("/etc/portcullis").exists() && !Path::new("/var/lib/portcullis").exists());
    let status = Command::new("dpkg")
        .args(["-s", "portcullis"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!status.status.success(), "dpkg still knows the package");
}

/// The groups the package creates.
const GROUPS: [&str; 2] = ["portcullis-approvers", "portcullis-admins"];

fn dpkg(args: &[&str]) -> String {
    ok(&Command::new("dpkg")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{e}")))
}

fn group_exists(group: &str) -> bool {
    Command::new("getent")
        .args(["group", group])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Leaves the host as it was: purges the package (a no-op once the test did) and
/// deletes the groups that did not exist before (`had[i]` for `GROUPS[i]`).
struct Purge(Vec<bool>);

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["-P", "portcullis"]).output();
        for (group, had) in GROUPS.iter().zip(&self.0) {
            if !had {
                let _ = Command::new("groupdel").arg(group).output();
            }
        }
    }
}
