//! A real, throwaway `PostgreSQL` server for tests.
//!
//! [`PgServer::start`] runs `initdb` and `pg_ctl start` as the unprivileged `postgres`
//! OS user (the server refuses to run as root) in a fresh temp dir, with trust
//! authentication, listening on 127.0.0.1 at a free port and on a Unix socket inside
//! the temp dir. Every server has its own dir and port, so tests can run in parallel.
//! Dropping it stops the server (`pg_ctl -m immediate stop`) and removes the dir.
//!
//! Tests call [`PgServer::start_or_skip`]: it says why and returns `None` when the host
//! cannot run one (not root, no `PostgreSQL` binaries, no `postgres` user).
//!
//! [`PgServer::start_tls_or_skip`] starts one with `ssl = on` instead: a test CA
//! ([`PgServer::ca_file`]) signs its certificate for `localhost` and 127.0.0.1, and role
//! [`PgServer::TLS_USER`] may log in over TCP only with TLS and SCRAM-SHA-256.

use anyhow::{Context, bail, ensure};
use std::{
    fmt::Write as _,
    fs,
    io::Write as _,
    net::{Ipv4Addr, TcpListener},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// The OS user the server runs as; also its superuser role.
const OS_USER: &str = "postgres";
/// How many fresh ports to try when another process takes ours first.
const START_ATTEMPTS: usize = 5;

/// A running `PostgreSQL` server in its own temp dir; stopped and removed on drop.
#[derive(Debug)]
pub struct PgServer {
    /// Holds `data/`, `sock/` and `postgres.log`; removed on drop.
    dir: tempfile::TempDir,
    bindir: PathBuf,
    port: u16,
    /// Whether `pg_ctl start` succeeded, so drop has a server to stop.
    running: bool,
    /// Whether the server was started with `ssl = on`.
    tls: bool,
}

impl PgServer {
    /// The superuser role: `postgres`, no password needed (trust).
    pub const USER: &'static str = OS_USER;
    /// The address the server listens on.
    pub const HOST: Ipv4Addr = Ipv4Addr::LOCALHOST;
    /// With TLS: a role that may log in over TCP only with TLS (`hostssl`) and
    /// SCRAM-SHA-256, using [`PgServer::TLS_PASSWORD`].
    pub const TLS_USER: &'static str = "tls_scram";
    /// The password of [`PgServer::TLS_USER`].
    pub const TLS_PASSWORD: &'static str = "tls-scram-password";

    /// Why this host cannot run a test server, or `None` if it can.
    #[must_use]
    pub fn unavailable() -> Option<String> {
        match effective_uid() {
            Some(0) => {}
            Some(uid) => {
                return Some(format!(
                    "not root (euid {uid}): root is needed to run initdb as the `postgres` user"
                ));
            }
            None => return Some("cannot read the effective uid from /proc/self/status".into()),
        }
        if let Err(e) = find_bindir() {
            return Some(format!("{e:#}"));
        }
        if let Err(e) = os_user_ids() {
            return Some(format!("{e:#}"));
        }
        None
    }

    /// Starts a server, or prints why it cannot and returns `None`. Fails only when the
    /// host has what it takes and the server still does not start.
    pub fn start_or_skip() -> anyhow::Result<Option<PgServer>> {
        if let Some(why) = Self::unavailable() {
            eprintln!("skipping the PostgreSQL part of this test: {why}");
            return Ok(None);
        }
        Self::start().map(Some)
    }

    /// Like [`PgServer::start_or_skip`], with TLS (see [`PgServer::start_tls`]).
    pub fn start_tls_or_skip() -> anyhow::Result<Option<PgServer>> {
        if let Some(why) = Self::unavailable() {
            eprintln!("skipping the PostgreSQL part of this test: {why}");
            return Ok(None);
        }
        Self::start_tls().map(Some)
    }

    /// Initializes and starts a fresh server.
    pub fn start() -> anyhow::Result<PgServer> {
        Self::start_with(false)
    }

    /// Initializes and starts a fresh server with `ssl = on`, a certificate signed by a
    /// fresh test CA ([`PgServer::ca_file`]), and role [`PgServer::TLS_USER`].
    pub fn start_tls() -> anyhow::Result<PgServer> {
        let server = Self::start_with(true)?;
        server.psql(
            "postgres",
            &format!(
                "CREATE ROLE {} LOGIN PASSWORD '{}'",
                Self::TLS_USER,
                Self::TLS_PASSWORD
            ),
        )?;
        Ok(server)
    }

    fn start_with(tls: bool) -> anyhow::Result<PgServer> {
        let bindir = find_bindir()?;
        let (uid, gid) = os_user_ids()?;
        // Under /tmp, not $TMPDIR: the `postgres` user must reach it, and the socket path
        // must stay under the kernel's ~107-byte limit.
        let dir = tempfile::Builder::new()
            .prefix("portcullis-pg-")
            .tempdir_in("/tmp")
            .context("cannot create a temp dir under /tmp")?;
        let sock = dir.path().join("sock");
        fs::create_dir(&sock).with_context(|| format!("cannot create {}", sock.display()))?;
        for path in [dir.path(), sock.as_path()] {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .with_context(|| format!("cannot chown {} to {OS_USER}", path.display()))?;
        }
        let mut server = PgServer {
            dir,
            bindir,
            port: 0,
            running: false,
            tls,
        };
        server.initdb()?;
        server.configure()?;
        if tls {
            server.configure_tls(uid, gid)?;
        }
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            server.port = free_port()?;
            match server.pg_ctl_start() {
                Ok(()) => {
                    server.running = true;
                    return Ok(server);
                }
                // Most likely the port was taken between our probe and the server's bind.
                Err(e) => last_error = Some(e),
            }
        }
        // A server that came up too late for `pg_ctl -w` would outlive its dir.
        let _ = server.pg_ctl_stop("immediate");
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no start attempted")))
            .with_context(|| format!("PostgreSQL did not start; its log:\n{}", server.log()))
    }

    /// `postgres://postgres@127.0.0.1:PORT/DB` (trust auth: no password).
    #[must_use]
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://{}@{}:{}/{db}",
            Self::USER,
            Self::HOST,
            self.port
        )
    }

    /// Creates database `name` (letters, digits and `_` only), owned by the superuser.
    pub fn create_database(&self, name: &str) -> anyhow::Result<()> {
        ensure!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "database name {name:?}: use letters, digits and _"
        );
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""))?;
        Ok(())
    }

    /// Runs `sql` with psql over the Unix socket as the superuser; returns the rows, one
    /// a line, columns separated by `|`.
    pub fn psql(&self, db: &str, sql: &str) -> anyhow::Result<String> {
        let out = Command::new(self.bindir.join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                Self::USER,
                "-h",
            ])
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string(), "-d", db, "-c", sql])
            .output()
            .context("cannot run psql")?;
        let out = check(out, "psql")?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The TCP port on [`PgServer::HOST`].
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host to connect to over TCP.
    #[must_use]
    pub fn host(&self) -> Ipv4Addr {
        Self::HOST
    }

    /// The directory of the Unix socket (`.s.PGSQL.PORT`): psql's `-h`.
    #[must_use]
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// The data directory (`postgresql.conf`, `pg_hba.conf`), owned by `postgres`.
    #[must_use]
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Where the `PostgreSQL` binaries (`psql`, `pg_ctl`, `pgbench`…) are.
    #[must_use]
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// With TLS: the PEM file of the test CA that signed the server's certificate.
    #[must_use]
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.then(|| self.dir.path().join("ca.crt"))
    }

    /// The server log so far (for failure messages).
    #[must_use]
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_file()).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    fn initdb(&self) -> anyhow::Result<()> {
        let mut cmd = self.as_os_user("initdb");
        cmd.arg("-D").arg(self.data_dir()).args([
            "-U",
            Self::USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        ]);
        let out = cmd.output().context("cannot run initdb")?;
        check(out, "initdb").map(drop)
    }

    /// Listen on loopback and a private socket dir; trade durability for speed.
    fn configure(&self) -> anyhow::Result<()> {
        let conf = self.data_dir().join("postgresql.conf");
        let mut text =
            fs::read_to_string(&conf).with_context(|| format!("cannot read {}", conf.display()))?;
        let _ = write!(
            text,
            "\n# portcullis test server\nlisten_addresses = '{}'\nunix_socket_directories = '{}'\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 50\n",
            Self::HOST,
            self.socket_dir().display()
        );
        fs::write(&conf, text).with_context(|| format!("cannot write {}", conf.display()))
    }

    /// `ssl = on` with a CA-signed certificate; [`PgServer::TLS_USER`] only via
    /// `hostssl` and SCRAM. The key is the `postgres` user's with mode 0600, or the
    /// server refuses it.
    fn configure_tls(&self, uid: u32, gid: u32) -> anyhow::Result<()> {
        let (ca, cert, key) = test_certificates().context("cannot make test certificates")?;
        let data = self.data_dir();
        let ca_file = self.dir.path().join("ca.crt");
        fs::write(&ca_file, ca).with_context(|| format!("cannot write {}", ca_file.display()))?;
        for (name, text, mode) in [("server.crt", cert, 0o644), ("server.key", key, 0o600)] {
            let path = data.join(name);
            fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .with_context(|| format!("cannot chmod {}", path.display()))?;
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                .with_context(|| format!("cannot chown {} to {OS_USER}", path.display()))?;
        }
        append(
            &data.join("postgresql.conf"),
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
        )?;
        // The first matching line wins, so these go before initdb's trust lines.
        let hba = data.join("pg_hba.conf");
        let rest =
            fs::read_to_string(&hba).with_context(|| format!("cannot read {}", hba.display()))?;
        let user = Self::TLS_USER;
        let host = Self::HOST;
        let text = format!(
            "hostssl all {user} {host}/32 scram-sha-256\nhost all {user} {host}/32 reject\n{rest}"
        );
        fs::write(&hba, text).with_context(|| format!("cannot write {}", hba.display()))
    }

    /// Appends `settings` (`postgresql.conf` lines) and restarts the server on the
    /// same port: for settings that need a restart (`max_connections`).
    pub fn restart_with(&self, settings: &str) -> anyhow::Result<()> {
        let conf = self.data_dir().join("postgresql.conf");
        let mut text =
            fs::read_to_string(&conf).with_context(|| format!("cannot read {}", conf.display()))?;
        text.push('\n');
        text.push_str(settings);
        text.push('\n');
        fs::write(&conf, text).with_context(|| format!("cannot write {}", conf.display()))?;
        // A clean stop: with `synchronous_commit = off` an immediate one can lose the
        // setup's last commits (the proxy's role) in the crash recovery.
        self.pg_ctl_stop("fast")?;
        self.pg_ctl_start()
    }

    /// Stops the server at once (`-m immediate`), as a crash or a lost host looks to
    /// its clients.
    pub fn stop(&self) -> anyhow::Result<()> {
        self.pg_ctl_stop("immediate")
    }

    /// Starts a server [`PgServer::stop`]ped before, on the same port.
    pub fn start_again(&self) -> anyhow::Result<()> {
        self.pg_ctl_start()
    }

    fn pg_ctl_start(&self) -> anyhow::Result<()> {
        let mut cmd = self.as_os_user("pg_ctl");
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .args([
                "-w",
                "-t",
                "60",
                "-o",
                &format!("-p {}", self.port),
                "start",
            ]);
        let out = cmd.output().context("cannot run pg_ctl")?;
        check(out, "pg_ctl start").map(drop)
    }

    fn pg_ctl_stop(&self, mode: &str) -> anyhow::Result<()> {
        let mut cmd = self.as_os_user("pg_ctl");
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-m", mode, "-w", "stop"]);
        let out = cmd.output().context("cannot run pg_ctl")?;
        check(out, "pg_ctl stop").map(drop)
    }

    /// `bindir/program` run as the `postgres` user, from the temp dir (it cannot enter
    /// root's working directory).
    fn as_os_user(&self, program: &str) -> Command {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", OS_USER, "--"])
            .arg(self.bindir.join(program))
            .current_dir(self.dir.path());
        cmd
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.running
            && let Err(e) = self.pg_ctl_stop("immediate")
        {
            eprintln!(
                "cannot stop the test PostgreSQL in {}: {e:#}",
                self.dir.path().display()
            );
        }
        // The temp dir removes itself.
    }
}

/// `$PG_BINDIR`, else `pg_config --bindir`, else the newest `/usr/lib/postgresql/*/bin`;
/// the first that holds `initdb`.
fn find_bindir() -> anyhow::Result<PathBuf> {
    let has_initdb = |dir: &Path| dir.join("initdb").is_file();
    if let Some(dir) = std::env::var_os("PG_BINDIR").map(PathBuf::from) {
        ensure!(
            has_initdb(&dir),
            "PG_BINDIR={} holds no initdb",
            dir.display()
        );
        return Ok(dir);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_initdb(&dir) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| has_initdb(bin))
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, dir)) => Ok(dir),
        None => {
            bail!("no PostgreSQL server binaries (initdb): install postgresql or set PG_BINDIR")
        }
    }
}

/// PEM (CA certificate, server certificate, server key): a fresh CA, and a server
/// certificate it signed for `localhost` and 127.0.0.1.
fn test_certificates() -> anyhow::Result<(String, String, String)> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::new())?;
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Portcullis test CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)?;

    let key = rcgen::KeyPair::generate()?;
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), PgServer::HOST.to_string()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &ca)?;
    Ok((ca.pem(), cert.pem(), key.serialize_pem()))
}

/// Appends `text` to the file at `path`.
fn append(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// uid and gid of the `postgres` OS user.
fn os_user_ids() -> anyhow::Result<(u32, u32)> {
    let id = |flag: &str| -> anyhow::Result<u32> {
        let out = Command::new("id")
            .args([flag, OS_USER])
            .output()
            .context("cannot run id")?;
        ensure!(
            out.status.success(),
            "no `{OS_USER}` OS user: install postgresql, which creates it"
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .context("cannot parse the output of id")
    };
    Ok((id("-u")?, id("-g")?))
}

/// The effective uid, from `/proc/self/status` (no `unsafe` libc call needed).
fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    uids.split_whitespace().nth(1)?.parse().ok()
}

/// A port nobody listens on right now (the kernel picks it for a port-0 bind).
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((PgServer::HOST, 0)).context("cannot bind a probe socket")?;
    Ok(listener.local_addr()?.port())
}

/// `out` if the command succeeded, else an error with its stderr.
fn check(out: Output, what: &str) -> anyhow::Result<Output> {
    if out.status.success() {
        return Ok(out);
    }
    bail!(
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim(),
        String::from_utf8_lossy(&out.stdout).trim()
    )
}
