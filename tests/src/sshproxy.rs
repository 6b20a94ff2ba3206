//! A protected SSH target for end-to-end tests: a real `sshd` on a loopback alias at
//! port 22, a daemon whose policy names it (its host key in a `known_hosts` file,
//! the proxy's login key in a file the client never sees), and OpenSSH clients run
//! as `nobody` through the redirect, with their configuration untouched: they trust
//! the proxy through the `@cert-authority` block the daemon writes.
#![expect(
    clippy::panic,
    clippy::indexing_slicing,
    clippy::missing_panics_doc,
    reason = "test support panics with a message"
)]

use crate::{
    cgroup::{TestCgroup, can_run_ebpf_tests},
    daemon::TestDaemon,
    sshd::Sshd,
};
use serde_json::Value;
use std::process::{Command, Output};

pub const NOBODY: (u32, u32) = (65534, 65534);

pub struct Setup {
    pub sshd: Sshd,
    pub cg: TestCgroup,
    pub d: TestDaemon,
}

/// How the target is described in the policy.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// `known_hosts` lists the server's real key.
    Right,
    /// `known_hosts` lists another key under the server's address.
    Changed,
}

/// Starts sshd on `ip`:22 and a daemon with `rules` about target `box`.
#[must_use]
pub fn setup(name: &str, ip: &str, rules: &str) -> Option<Setup> {
    setup_with(name, ip, rules, Trust::Right)
}

/// [`setup`] with `extra_config` appended to the daemon's config file (a `[web]`
/// table, say).
#[must_use]
pub fn setup_with_config(name: &str, ip: &str, rules: &str, extra_config: &str) -> Option<Setup> {
    setup_full(name, ip, rules, Trust::Right, extra_config)
}

/// [`setup`] with the target's `known_hosts` as `trust` says.
#[must_use]
pub fn setup_with(name: &str, ip: &str, rules: &str, trust: Trust) -> Option<Setup> {
    setup_full(name, ip, rules, trust, "")
}

/// Target `box` described as `trust` says, with `rules`, and `extra_config` appended
/// to the daemon's config file.
fn setup_full(
    name: &str,
    ip: &str,
    rules: &str,
    trust: Trust,
    extra_config: &str,
) -> Option<Setup> {
    setup_policy_config(name, ip, extra_config, |sshd| {
        let known_hosts = match trust {
            Trust::Right => sshd.known_hosts(),
            Trust::Changed => sshd.wrong_known_hosts(),
        };
        format!(
            "[[target]]\nname = \"box\"\nprotocol = \"ssh\"\naddress = \"{}\"\nknown_hosts = \"{}\"\n\
             credentials = {{ user = \"root\", key_file = \"{}\" }}\n{rules}",
            sshd.addr,
            known_hosts.display(),
            sshd.client_key().display()
        )
    })
}

/// Starts sshd on `ip`:22 and a daemon with the policy `policy` makes for it.
#[must_use]
pub fn setup_policy(name: &str, ip: &str, policy: impl FnOnce(&Sshd) -> String) -> Option<Setup> {
    setup_policy_config(name, ip, "", policy)
}

/// [`setup_policy`] with `extra_config` appended to the daemon's config file.
fn setup_policy_config(
    name: &str,
    ip: &str,
    extra_config: &str,
    policy: impl FnOnce(&Sshd) -> String,
) -> Option<Setup> {
    if !can_run_ebpf_tests(name) {
        return None;
    }
    let sshd = Sshd::start_or_skip(ip)?;
    let policy = policy(&sshd);
    let cg = TestCgroup::new(name).unwrap_or_else(|e| panic!("{e}"));
    let d = TestDaemon::start(name, &cg, &policy, extra_config).unwrap_or_else(|e| panic!("{e:#}"));
    Some(Setup { sshd, cg, d })
}

/// A directory `nobody` can write to (files to copy, a remote home), removed with the
/// test.
#[must_use]
pub fn scratch() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::Builder::new()
        .prefix("pc-ssh-files-")
        .tempdir()
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
        .unwrap_or_else(|e| panic!("{e}"));
    dir
}

impl Setup {
    /// `argv` as `nobody` inside the test cgroup, from `/tmp`.
    #[must_use]
    pub fn client(&self, argv: &[&str]) -> Command {
        let mut cmd = self.cg.command(Some(NOBODY), argv);
        cmd.current_dir("/tmp");
        cmd
    }

    /// Runs `ssh OPTIONS HOST COMMAND…` and returns what it printed and how it ended.
    /// `BatchMode` so nothing ever prompts (it also refuses unknown host keys
    /// outright: stricter, not looser).
    #[must_use]
    pub fn ssh(&self, options: &[&str], command: &[&str]) -> Output {
        let host = self.sshd.addr.ip().to_string();
        let mut argv = vec!["/usr/bin/ssh", "-o", "BatchMode=yes"];
        argv.extend_from_slice(options);
        argv.push(&host);
        argv.extend_from_slice(command);
        self.client(&argv)
            .output()
            .unwrap_or_else(|e| panic!("cannot run ssh: {e}"))
    }

    /// Waits for a pending request and returns it.
    #[must_use]
    pub fn wait_request(&self) -> Value {
        self.d.wait_request()
    }

    /// The events of the newest ended ssh session, each with its details merged in.
    #[must_use]
    pub fn events(&self) -> Vec<Value> {
        let session = self
            .d
            .wait_session(|s| s["protocol"] == "ssh" && s["outcome"] != "denied")
            .unwrap_or_else(|e| panic!("{e:#}"));
        self.events_of(session["id"].as_str().unwrap_or_default())
    }

    /// The events of session `id`, each with its details merged in.
    #[must_use]
    pub fn events_of(&self, id: &str) -> Vec<Value> {
        let out = self.d.cli(&["sessions", "replay", id, "--json"]);
        assert!(
            out.status.success(),
            "replay failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        v.get("events")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|mut event| {
                if let (Some(details), Some(fields)) = (
                    event.get("details").and_then(Value::as_object).cloned(),
                    event.as_object_mut(),
                ) {
                    fields.extend(details);
                }
                event
            })
            .collect()
    }
}

/// stdout and stderr as text.
#[must_use]
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
