//! A real OpenSSH server (Debian's `sshd`) for one test: its own host key, config,
//! authorized key and pid file, listening on a loopback alias at port 22, and the
//! `known_hosts` line a Portcullis target needs to trust it.
#![expect(
    clippy::panic,
    clippy::missing_panics_doc,
    reason = "test support panics with a message"
)]

use std::{
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Where Debian installs the server.
pub const SSHD: &str = "/usr/sbin/sshd";

pub struct Sshd {
    dir: tempfile::TempDir,
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl Sshd {
    /// Starts `sshd -D` on `ip`:22 (a 127.0.0.x alias), or returns `None` after
    /// saying why when OpenSSH is not installed.
    #[must_use]
    pub fn start_or_skip(ip: &str) -> Option<Self> {
        if !Path::new(SSHD).exists() {
            eprintln!("SKIP: {SSHD} is missing; run `cargo xtask setup` (openssh-server)");
            return None;
        }
        Some(Self::start(ip).unwrap_or_else(|e| panic!("{e:#}")))
    }

    fn start(ip: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("pc-sshd-").tempdir()?;
        std::fs::create_dir_all("/run/sshd")?;
        keygen(&dir.path().join("host_key"))?;
        keygen(&dir.path().join("client_key"))?;
        keygen(&dir.path().join("user_ca"))?;
        std::fs::copy(
            dir.path().join("client_key.pub"),
            dir.path().join("authorized_keys"),
        )?;
        let addr: SocketAddr = format!("{ip}:22").parse()?;
        let d = dir.path().display();
        let config = format!(
            "ListenAddress {addr}\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n\
             AllowTcpForwarding yes\nMaxStartups 1000:30:1000\nMaxSessions 100\n\
             LogLevel VERBOSE\nPrintMotd no\nAcceptEnv LANG LC_*\n\
             TrustedUserCAKeys {d}/user_ca.pub\n\
             X11Forwarding yes\nSetEnv XAUTHORITY={d}/xauthority\n"
        );
        std::fs::write(dir.path().join("sshd_config"), config)?;
        let log = std::fs::File::create(dir.path().join("sshd.log"))?;
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(dir.path().join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let mut sshd = Self {
            dir,
            addr,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(Ok(Some(status))) = sshd.child.as_mut().map(Child::try_wait) {
                anyhow::bail!("sshd exited with {status}:\n{}", sshd.log());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "sshd did not listen on {addr}:\n{}",
                sshd.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(sshd)
    }

    /// A policy with this server as the SSH target `box` (its known host key, root's
    /// key as the credential), then `rules`.
    #[must_use]
    pub fn target_policy(&self, rules: &str) -> String {
        self.target_policy_as("root", rules)
    }

    /// [`target_policy`](Self::target_policy) logging in as `user` (any local user:
    /// the one authorized key works for all of them).
    #[must_use]
    pub fn target_policy_as(&self, user: &str, rules: &str) -> String {
        format!(
            "[[target]]\nname = \"box\"\nprotocol = \"ssh\"\naddress = \"{}\"\nknown_hosts = \"{}\"\n\
             credentials = {{ user = \"{user}\", key_file = \"{}\" }}\n{rules}",
            self.addr,
            self.known_hosts().display(),
            self.client_key().display()
        )
    }

    /// The private key the proxy logs in with (its public half is authorized).
    #[must_use]
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }

    /// The private key of the user CA this server trusts (`TrustedUserCAKeys`).
    #[must_use]
    pub fn user_ca_key(&self) -> PathBuf {
        self.dir.path().join("user_ca")
    }

    /// A `known_hosts` file that lists this server's host key under its address.
    #[must_use]
    pub fn known_hosts(&self) -> PathBuf {
        let path = self.dir.path().join("known_hosts");
        let key = std::fs::read_to_string(self.dir.path().join("host_key.pub"))
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&path, format!("{} {key}", self.addr.ip()))
            .unwrap_or_else(|e| panic!("{e}"));
        path
    }

    /// A `known_hosts` file naming this server with some other key (a changed key).
    #[must_use]
    pub fn wrong_known_hosts(&self) -> PathBuf {
        let other = self.dir.path().join("other_key");
        keygen(&other).unwrap_or_else(|e| panic!("{e:#}"));
        let key =
            std::fs::read_to_string(other.with_extension("pub")).unwrap_or_else(|e| panic!("{e}"));
        let path = self.dir.path().join("wrong_known_hosts");
        std::fs::write(&path, format!("{} {key}", self.addr.ip()))
            .unwrap_or_else(|e| panic!("{e}"));
        path
    }

    /// The server's log so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `ssh-keygen -t ed25519 -N '' -f path`.
fn keygen(path: &Path) -> anyhow::Result<()> {
    let out = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "portcullis-test",
            "-f",
        ])
        .arg(path)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "ssh-keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
