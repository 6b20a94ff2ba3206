//! A protected PostgreSQL target for end-to-end tests: a real server with an
//! `app` database, a proxy role that logs in with SCRAM (its password only in a
//! secret file the policy points at), a daemon whose policy reviews DDL and denies
//! destruction, and `psql` run as `nobody` through the redirect.
#![expect(clippy::panic, reason = "test support panics with a message")]

use crate::{
    cgroup::{TestCgroup, can_run_ebpf_tests},
    daemon::TestDaemon,
    postgres::PgServer,
};
use serde_json::Value;
use std::{
    os::unix::fs::PermissionsExt as _,
    process::{Child, Command, Output, Stdio},
};

pub const NOBODY: (u32, u32) = (65534, 65534);
/// The role the proxy logs in as; clients never know its password.
pub const APP_ROLE: &str = "app_owner";
pub const APP_PASSWORD: &str = "Xq7-not-in-any-log";
/// The password clients must give the proxy when the target has `client_auth`.
pub const CLIENT_TOKEN: &str = "gate-token-Zr9-never-logged";

pub struct Setup {
    pub pg: PgServer,
    pub cg: TestCgroup,
    pub d: TestDaemon,
    _secrets: tempfile::TempDir,
}

/// Rules every test gets: connect allowed; DDL reviewed by `seniors`; TRUNCATE and
/// DROP denied.
pub const RULES: &str = r#"
[[group]]
name = "seniors"
users = ["root", "daemon"]

[[rule]]
name = "connect"
targets = ["db"]
action = "allow"

[[rule]]
name = "ddl-needs-a-senior"
targets = ["db"]
sql = ["ddl"]
action = "review"
approvers = ["seniors"]
timeout = "60s"

[[rule]]
name = "no-destruction"
targets = ["db"]
sql = ["drop", "truncate"]
action = "deny"
description = "destructive statements are never run through the gateway"
"#;

/// Rules that allow the connection and every statement: for tools that create,
/// truncate and drop their own tables (`pgbench -i`, `pg_restore`).
pub const ALLOW_ALL_RULES: &str = r#"
[[rule]]
name = "connect"
targets = ["db"]
action = "allow"
"#;

#[must_use]
pub fn setup(name: &str) -> Option<Setup> {
    setup_with_rules(name, RULES)
}

/// [`setup`] with `rules` (`[[group]]` and `[[rule]]` tables about target `db`) in
/// place of [`RULES`].
///
/// # Panics
/// When the host can run the test and the server or the daemon still fails to start.
#[must_use]
pub fn setup_with_rules(name: &str, rules: &str) -> Option<Setup> {
    setup_target(name, rules, Variant::Plain)
}

/// [`setup`] with a target that demands [`CLIENT_TOKEN`] from clients (`client_auth`,
/// kept in a file).
#[must_use]
pub fn setup_with_client_auth(name: &str) -> Option<Setup> {
    setup_target(name, RULES, Variant::ClientAuth)
}

/// [`setup`] with a target of `tls = "prefer"` on a server that offers TLS, whose
/// `pg_hba.conf` refuses the proxy's role over TLS and takes it in plaintext.
#[must_use]
pub fn setup_with_tls_refused(name: &str) -> Option<Setup> {
    setup_target(name, RULES, Variant::TlsRefused)
}

/// [`setup`] with the proxy's role stored and checked as MD5 (`password_encryption
/// = 'md5'`, an `md5` line in `pg_hba.conf`): the server asks the proxy for an MD5
/// answer rather than SCRAM.
#[must_use]
pub fn setup_with_md5(name: &str) -> Option<Setup> {
    setup_target(name, RULES, Variant::Md5)
}

/// [`setup`] with a daemon that serves sessions on `workers` single-threaded
/// runtimes (`session_workers`).
#[must_use]
pub fn setup_with_workers(name: &str, workers: usize) -> Option<Setup> {
    setup_target(name, RULES, Variant::Workers(workers))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Plain,
    ClientAuth,
    TlsRefused,
    Md5,
    Workers(usize),
}

/// [`setup_with_rules`] with `extra_config` appended to the daemon's config file
/// (a `[web]` table, say).
#[must_use]
pub fn setup_with_config(name: &str, rules: &str, extra_config: &str) -> Option<Setup> {
    setup_target_with(name, rules, Variant::Plain, extra_config)
}

fn setup_target(name: &str, rules: &str, variant: Variant) -> Option<Setup> {
    setup_target_with(name, rules, variant, "")
}

fn setup_target_with(
    name: &str,
    rules: &str,
    variant: Variant,
    extra_config: &str,
) -> Option<Setup> {
    if !can_run_ebpf_tests(name) {
        return None;
    }
    let pg = if variant == Variant::TlsRefused {
        PgServer::start_tls_or_skip()
    } else {
        PgServer::start_or_skip()
    }
    .unwrap_or_else(|e| panic!("{e:#}"))?;
    pg.create_database("app")
        .unwrap_or_else(|e| panic!("{e:#}"));
    // How the role's password is stored, and so checked (`pg_hba.conf` method).
    let method = if variant == Variant::Md5 {
        "md5"
    } else {
        "scram-sha-256"
    };
    pg.psql(
        "app",
        &format!(
            // Flushed at commit: tests that crash the server keep the setup.
            "SET synchronous_commit = on;
             SET password_encryption = '{method}';
             CREATE ROLE {APP_ROLE} LOGIN PASSWORD '{APP_PASSWORD}';
             GRANT ALL ON SCHEMA public TO {APP_ROLE};
             ALTER DATABASE app OWNER TO {APP_ROLE};
             SET ROLE {APP_ROLE};
             CREATE TABLE accounts (id int PRIMARY KEY, owner text, balance int);
             INSERT INTO accounts SELECT i, 'user' || i, 100 FROM generate_series(1, 10) i;"
        ),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    // The proxy's role must prove its password (SCRAM, or MD5); everyone else stays on
    // trust.
    let hba = pg.data_dir().join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap_or_default();
    let refuse_tls = if variant == Variant::TlsRefused {
        format!("hostssl all {APP_ROLE} 127.0.0.1/32 reject\n")
    } else {
        String::new()
    };
    std::fs::write(
        &hba,
        format!("{refuse_tls}host all {APP_ROLE} 127.0.0.1/32 {method}\n{old}"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    pg.psql("postgres", "SELECT pg_reload_conf()")
        .unwrap_or_else(|e| panic!("{e:#}"));

    let secrets = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pw = secrets.path().join("app.pw");
    std::fs::write(&pw, format!("{APP_PASSWORD}\n")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("{e}"));
    let client_auth = if variant == Variant::ClientAuth {
        let token = secrets.path().join("client.token");
        std::fs::write(&token, format!("{CLIENT_TOKEN}\n")).unwrap_or_else(|e| panic!("{e}"));
        format!(
            "client_auth = {{ password_file = \"{}\" }}\n",
            token.display()
        )
    } else {
        String::new()
    };
    let tls = if variant == Variant::TlsRefused {
        "prefer"
    } else {
        "disable"
    };
    let policy = format!(
        "[[target]]\nname = \"db\"\nprotocol = \"postgres\"\naddress = \"{}:{}\"\ntls = \"{tls}\"\n\
         credentials = {{ user = \"{APP_ROLE}\", password_file = \"{}\" }}\n{client_auth}{rules}",
        pg.host(),
        pg.port(),
        pw.display()
    );
    let cg = TestCgroup::new(name).unwrap_or_else(|e| panic!("{e}"));
    let mut extra = match variant {
        Variant::Workers(n) => format!("session_workers = {n}\n"),
        Variant::Plain | Variant::ClientAuth | Variant::TlsRefused | Variant::Md5 => String::new(),
    };
    extra.push_str(extra_config);
    let d = TestDaemon::start(name, &cg, &policy, &extra).unwrap_or_else(|e| panic!("{e:#}"));
    Some(Setup {
        pg,
        cg,
        d,
        _secrets: secrets,
    })
}

impl Setup {
    /// `psql` as `nobody` inside the test cgroup, connecting straight to the target's
    /// address with a user name and no password.
    #[must_use]
    pub fn psql_command(&self, args: &[&str]) -> Command {
        self.psql_command_to(&self.conninfo("app", "disable"), args)
    }

    /// [`Setup::psql_command`] with the libpq connection string `conninfo`.
    #[must_use]
    pub fn psql_command_to(&self, conninfo: &str, args: &[&str]) -> Command {
        let psql = self.client_bin("psql");
        let mut command_line = vec![
            psql.as_str(),
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-d",
            conninfo,
        ];
        command_line.extend_from_slice(args);
        self.client_command(&command_line)
    }

    /// The connection string of a client that knows only the target's address and a
    /// made-up user name: `dbname`, `sslmode` as given, no password.
    #[must_use]
    pub fn conninfo(&self, dbname: &str, sslmode: &str) -> String {
        format!(
            "host={} port={} dbname={dbname} user=whoever sslmode={sslmode} connect_timeout=10",
            self.pg.host(),
            self.pg.port()
        )
    }

    /// The absolute path of the PostgreSQL client program `name` (`psql`, `pgbench`,
    /// `pg_dump`…): `nobody` cannot search root's `PATH`.
    #[must_use]
    pub fn client_bin(&self, name: &str) -> String {
        self.pg.bindir().join(name).display().to_string()
    }

    /// `argv` (its program an absolute path) as `nobody` inside the test cgroup, from
    /// `/tmp`, so its connects to the target are redirected.
    #[must_use]
    pub fn client_command(&self, argv: &[&str]) -> Command {
        let mut cmd = self.cg.command(Some(NOBODY), argv);
        cmd.env("PGCONNECT_TIMEOUT", "10").current_dir("/tmp");
        cmd
    }

    /// Runs the Python `script` as `nobody` through the redirect, with `args` and then
    /// the target's host and port in `sys.argv`.
    #[must_use]
    pub fn python(&self, script: &str, args: &[&str]) -> Output {
        let (host, port) = (self.pg.host().to_string(), self.pg.port().to_string());
        let mut argv = vec!["/usr/bin/python3", "-c", script];
        argv.extend(args);
        argv.extend([host.as_str(), port.as_str()]);
        self.client_command(&argv)
            .output()
            .unwrap_or_else(|e| panic!("cannot run python3: {e}"))
    }

    #[must_use]
    pub fn psql(&self, args: &[&str]) -> Output {
        self.psql_to(&self.conninfo("app", "disable"), args)
    }

    /// [`Setup::psql`] with the libpq connection string `conninfo`.
    #[must_use]
    pub fn psql_to(&self, conninfo: &str, args: &[&str]) -> Output {
        self.psql_command_to(conninfo, args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run psql: {e}"))
    }

    /// [`Setup::psql_to`] with `input` (any bytes: a `-f -` script in the session's
    /// encoding, `COPY FROM STDIN` rows) on its standard input.
    #[must_use]
    pub fn psql_with_input(&self, conninfo: &str, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write as _;
        let mut child = self
            .psql_command_to(conninfo, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run psql: {e}"));
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input)
                .unwrap_or_else(|e| panic!("cannot write to psql: {e}"));
        }
        wait_child(child)
    }

    /// The value of `sql` read directly from the server (not through the proxy).
    #[must_use]
    pub fn direct(&self, sql: &str) -> String {
        self.pg
            .psql("app", sql)
            .unwrap_or_else(|e| panic!("{e:#}"))
            .trim()
            .to_owned()
    }

    /// Waits for a pending request and returns it.
    #[must_use]
    pub fn wait_request(&self) -> Value {
        self.d.wait_request()
    }

    /// The statements recorded for the newest session: its `sql` events, each with
    /// its details (text, classes, rows…) beside the verdict, as one object.
    pub fn statements(&self) -> Vec<Value> {
        let session = self
            .d
            .wait_session(|s| s["protocol"] == "postgres")
            .unwrap_or_else(|e| panic!("{e:#}"));
        let id = session
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let out = self.d.cli(&["sessions", "replay", &id, "--json"]);
        assert!(
            out.status.success(),
            "replay failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let events = v.get("events").and_then(Value::as_array).cloned();
        events
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["kind"] == "sql")
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

#[must_use]
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[must_use]
pub fn wait_child(child: Child) -> Output {
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("psql did not finish: {e}"))
}

/// The start of a raw-protocol client in Python (for [`Setup::python`]): connects to
/// the target (the last two arguments), logs in to `app` as `whoever`, and defines
/// `cstr`, `msg` and `read_msg` for the script that follows it.
pub const RAW_CLIENT: &str = r#"
import socket, struct, sys
host, port = sys.argv[-2], int(sys.argv[-1])
s = socket.create_connection((host, port), timeout=10)
def cstr(x): return x.encode() + b"\0"
def msg(t, body): return t + struct.pack("!I", len(body) + 4) + body
body = struct.pack("!I", 196608) + cstr("user") + cstr("whoever") + cstr("database") + cstr("app") + b"\0"
s.sendall(struct.pack("!I", len(body) + 4) + body)
buf = b""
def read_msg():
    global buf
    while True:
        if len(buf) >= 5:
            n = struct.unpack("!I", buf[1:5])[0]
            if len(buf) >= 1 + n:
                t, m, buf = buf[0:1], buf[5:1 + n], buf[1 + n:]
                return t, m
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit("connection closed; had " + repr(buf))
        buf += chunk
"#;
