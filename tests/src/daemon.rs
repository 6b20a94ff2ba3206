//! A real `portcullis daemon` for one test: its own config, policy directory, `SQLite`
//! store, API socket, proxy ports, bpffs pin directory and cgroup.

use crate::{cgroup::TestCgroup, net::free_port};
use anyhow::{Context as _, bail};
use serde_json::Value;
use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

/// The `portcullis` binary under test: `PORTCULLIS_BIN` (set by `cargo xtask test`),
/// else the workspace's debug build.
#[must_use]
pub fn binary() -> PathBuf {
    std::env::var_os("PORTCULLIS_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/portcullis"),
        PathBuf::from,
    )
}

pub struct TestDaemon {
    dir: tempfile::TempDir,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub policies: PathBuf,
    pub pin_dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl TestDaemon {
    /// Writes `policy` (TOML) as `policies/main.toml` and starts a daemon attached to
    /// `cgroup`, with a `SQLite` store of its own. `extra_config` is appended to the
    /// config file.
    pub fn start(
        name: &str,
        cgroup: &TestCgroup,
        policy: &str,
        extra_config: &str,
    ) -> anyhow::Result<Self> {
        Self::start_with_store(
            name,
            cgroup,
            policy,
            "sqlite://state/portcullis.db",
            extra_config,
        )
    }

    /// [`TestDaemon::start`] with the store at `store` (e.g. a shared PostgreSQL).
    pub fn start_with_store(
        name: &str,
        cgroup: &TestCgroup,
        policy: &str,
        store: &str,
        extra_config: &str,
    ) -> anyhow::Result<Self> {
        let mut daemon = Self::prepare_with_store(name, cgroup, policy, store, extra_config)?;
        daemon.spawn()?;
        Ok(daemon)
    }

    /// Writes the config and policy of [`TestDaemon::start_with_store`] without starting
    /// the daemon: start it with [`TestDaemon::spawn`] or [`TestDaemon::launch`].
    pub fn prepare_with_store(
        name: &str,
        cgroup: &TestCgroup,
        policy: &str,
        store: &str,
        extra_config: &str,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("pc-{name}-"))
            .tempdir()?;
        // Unprivileged test clients must reach the API socket inside.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let policies = dir.path().join("policies");
        std::fs::create_dir_all(&policies)?;
        std::fs::write(policies.join("main.toml"), policy)?;
        let port = free_port("127.0.0.1")?;
        let pin_dir = PathBuf::from(format!(
            "/sys/fs/bpf/portcullis-test-{name}-{}",
            std::process::id()
        ));
        let config = dir.path().join("portcullis.toml");
        std::fs::write(
            &config,
            format!(
                "policies = \"policies\"\nstore = \"{store}\"\napi_socket = \"api.sock\"\n\
                 listen = [\"127.0.0.1:{port}\", \"[::1]:{port}\"]\ncgroup = \"{}\"\nbpf_pin_dir = \"{}\"\n\
                 shutdown_grace = \"2s\"\nstate_dir = \"state\"\n{extra_config}\n",
                cgroup.path().display(),
                pin_dir.display()
            ),
        )?;
        Ok(Self {
            socket: dir.path().join("api.sock"),
            dir,
            config,
            policies,
            pin_dir,
            port,
            child: None,
        })
    }

    /// Starts the daemon process and waits until its API answers.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        self.launch(&[])?;
        self.wait_ready()
    }

    /// Starts the daemon process through `launcher` (e.g. `nsenter -t PID -m`, which
    /// execs it), without waiting for it to answer.
    pub fn launch(&mut self, launcher: &[&str]) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.path().join("daemon.log"))?;
        let mut cmd = match launcher.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(binary());
                c
            }
            None => Command::new(binary()),
        };
        let child = cmd
            .args(["daemon", "--config"])
            .arg(&self.config)
            .env("PORTCULLIS_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context(
                "cannot start the portcullis binary; build it with `cargo build -p portcullis`",
            )?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits (up to 30 s) until the launched daemon's API answers.
    pub fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                bail!("daemon exited with {status} during start:\n{}", self.log());
            }
            if self.cli(&["status", "--json"]).status.success() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "daemon did not answer on {} within 30 s:\n{}",
            self.socket.display(),
            self.log()
        )
    }

    /// The daemon's process id, while it runs.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no cleanup at all, as in a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut c = self.child.take().context("daemon not running")?;
        let pid = i32::try_from(c.id())?;
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        Ok(c.wait()?)
    }

    /// Waits for a pending approval request and returns the first one listed.
    ///
    /// # Panics
    /// When none appears within 15 s.
    #[must_use]
    pub fn wait_request(&self) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let out = self.cli(&["approvals", "--json"]);
            let list: serde_json::Value =
                serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
            if let Some(first) = list.as_array().and_then(|a| a.first()) {
                return first.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no request appeared; daemon log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs the CLI against this daemon's socket.
    #[must_use]
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_command(args)
            .output()
            .unwrap_or_else(|e| unreachable_output(&e))
    }

    /// Runs the CLI as another user.
    #[must_use]
    pub fn cli_as(&self, uid: u32, gid: u32, args: &[&str]) -> Output {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            format!("--reuid={uid}"),
            format!("--regid={gid}"),
            "--clear-groups".into(),
        ])
        .arg(binary())
        .args(args);
        cmd.env("PORTCULLIS_SOCKET", &self.socket);
        cmd.output().unwrap_or_else(|e| unreachable_output(&e))
    }

    fn cli_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(binary());
        cmd.args(args).env("PORTCULLIS_SOCKET", &self.socket);
        cmd
    }

    /// All recorded sessions, newest first (as root: everyone's).
    pub fn sessions(&self) -> anyhow::Result<Vec<Value>> {
        let out = self.cli(&["sessions", "--json", "--limit", "1000"]);
        if !out.status.success() {
            bail!("sessions failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let v: Value = serde_json::from_slice(&out.stdout)?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// Waits (up to 10 s) until a session matching `pred` is recorded with its end.
    pub fn wait_session(&self, pred: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let sessions = self.sessions()?;
            if let Some(s) = sessions
                .into_iter()
                .find(|s| !s["ended_at"].is_null() && pred(s))
            {
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!(
                    "no matching session recorded; have: {:#?}\nlog:\n{}",
                    self.sessions()?,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's log so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.kill9();
        let _ = Command::new(binary())
            .args(["daemon", "--release", "--config"])
            .arg(&self.config)
            .output();
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

fn unreachable_output(e: &std::io::Error) -> Output {
    unreachable!("cannot run the portcullis CLI: {e}")
}
