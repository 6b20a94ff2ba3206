//! Issue 21 (fresh-machine robustness): on a machine where nothing is mounted on
//! `/sys/fs/bpf`, two daemons starting at the same moment mount bpffs once between
//! them, and each one's pins stay visible (a second mount would hide the first one's:
//! `BPF_OBJ_PIN failed: No such file or directory`).
//!
//! The fresh machine is a private mount namespace the test makes with `unshare`, whose
//! `/sys/fs/bpf` is covered by an empty tmpfs; the daemons run inside it (`nsenter`),
//! so nothing leaks to the host and the namespace's bpffs (with its pins) goes away
//! with the namespace.
#![expect(
    clippy::panic,
    clippy::indexing_slicing,
    reason = "root tests panic with a message"
)]

use portcullis_tests::{
    cgroup::{TestCgroup, can_run_ebpf_tests},
    daemon::TestDaemon,
    net::{CLIENT_PY, EchoServer, run_client},
};
use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
};

/// A mount namespace whose `/sys/fs/bpf` is an empty tmpfs, kept alive by a `sleep`.
struct FreshNamespace {
    holder: Child,
}

impl FreshNamespace {
    fn new() -> Self {
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg("mount -t tmpfs fresh /sys/fs/bpf && echo ready && exec sleep 600")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run unshare (util-linux): {e}"));
        let mut line = String::new();
        let stdout = holder.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(line.trim(), "ready", "the namespace was not set up");
        Self { holder }
    }

    fn pid(&self) -> String {
        self.holder.id().to_string()
    }

    /// Runs `argv` inside the namespace; its stdout.
    fn run(&self, argv: &[&str]) -> String {
        let out = Command::new("nsenter")
            .args(["-t", &self.pid(), "-m", "--"])
            .args(argv)
            .output()
            .unwrap_or_else(|e| panic!("nsenter: {e}"));
        assert!(
            out.status.success(),
            "{argv:?} in the namespace: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The filesystem types mounted on `/sys/fs/bpf`, bottom to top.
    fn mounts_on_bpf_root(&self) -> Vec<String> {
        self.run(&["cat", "/proc/self/mountinfo"])
            .lines()
            .filter_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                let point = left.split_whitespace().nth(4)?;
                let kind = right.split_whitespace().next()?;
                (point == "/sys/fs/bpf").then(|| kind.to_owned())
            })
            .collect()
    }
}

impl Drop for FreshNamespace {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

fn policy(addr: &str) -> String {
    format!(
        "[[target]]\nname = \"echo\"\nprotocol = \"tcp\"\naddresses = [\"{addr}\"]\n\n\
         [[rule]]\nname = \"everyone\"\ntargets = [\"*\"]\naction = \"allow\"\n"
    )
}

/// Rounds, and daemons started at once in each.
const ROUNDS: usize = 3;
const DAEMONS: usize = 3;

#[test]
fn daemons_starting_together_mount_bpffs_once_and_keep_their_pins() {
    if !can_run_ebpf_tests("fresh-bpffs") {
        return;
    }
    let echo = EchoServer::start("127.0.0.2").unwrap_or_else(|e| panic!("{e}"));
    let target = echo.addr.to_string();
    // A few rounds: the race the lock closes is a window of microseconds.
    for round in 0..ROUNDS {
        let ns = FreshNamespace::new();
        let mut stack = ns.mounts_on_bpf_root();
        assert_eq!(
            stack.last().map(String::as_str),
            Some("tmpfs"),
            "no bpffs on top"
        );
        let names: Vec<String> = (0..DAEMONS).map(|i| format!("fresh-{round}-{i}")).collect();
        let cgroups: Vec<TestCgroup> = names
            .iter()
            .map(|n| TestCgroup::new(n).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        let mut daemons: Vec<TestDaemon> = names
            .iter()
            .zip(&cgroups)
            .map(|(n, cg)| {
                TestDaemon::prepare_with_store(n, cg, &policy(&target), "sqlite://state/p.db", "")
                    .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect();
        let pid = ns.pid();
        let launcher = ["nsenter", "-t", pid.as_str(), "-m", "--"];
        for d in &mut daemons {
            d.launch(&launcher).unwrap_or_else(|e| panic!("{e}"));
        }
        for d in &mut daemons {
            d.wait_ready()
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
        }

        stack.push("bpf".into());
        assert_eq!(
            ns.mounts_on_bpf_root(),
            stack,
            "round {round}: bpffs must be mounted exactly once"
        );
        let mounted = daemons
            .iter()
            .filter(|d| d.log().contains("Mounted bpffs"))
            .count();
        assert_eq!(mounted, 1, "round {round}: one daemon mounts bpffs");
        for (d, cg) in daemons.iter().zip(&cgroups) {
            let pins = ns.run(&["ls", &d.pin_dir.display().to_string()]);
            assert!(
                pins.lines().any(|p| p.starts_with("link_")),
                "round {round}: the pins of {} are hidden: {pins:?}\n{}",
                d.pin_dir.display(),
                d.log()
            );
            let port = echo.addr.port().to_string();
            let out = run_client(cg.command(
                Some((65534, 65534)),
                &["/usr/bin/python3", "-c", CLIENT_PY, "127.0.0.2", &port],
            ))
            .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(out["reply"], "hello portcullis\n", "{out}\n{}", d.log());
            let pid = out["pid"].as_u64().unwrap_or_default();
            d.wait_session(|s| s["principal"]["pid"].as_u64() == Some(pid))
                .unwrap_or_else(|e| panic!("round {round}: not intercepted: {e}"));
        }
        drop(daemons);
    }
}
