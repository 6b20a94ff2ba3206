//! One web console under test (issue 20): a PostgreSQL target behind the redirect
//! whose writes are held for the `sre` group, a daemon with `[web]` (HTTPS, the test
//! OpenID provider, Slack signing), and what the tests ask of it.
#![expect(clippy::unwrap_used, reason = "test support panics with a message")]

use crate::{
    net::free_port,
    pgproxy::{Setup, setup_with_config},
    web::{OidcProvider, Receiver, missing_parts},
};
use hmac::{Hmac, Mac as _};
use serde_json::Value;
use sha2::Sha256;
use std::{
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

pub const OIDC_SECRET: &str = "oidc-client-secret-Qw8-never-shown";
pub const SLACK_SECRET: &str = "slack-signing-secret-Zt3-never-shown";
pub const SLACK_USER: &str = "U0SLACKAPP";

/// Writes held by `sre` (root, the identity provider's `sre` group and a Slack
/// user); everything else allowed.
pub fn rules() -> String {
    format!(
        r#"
[[group]]
name = "sre"
users = ["root"]
idp_groups = ["sre"]
slack_users = ["{SLACK_USER}"]

[[rule]]
name = "connect"
targets = ["db"]
action = "allow"

[[rule]]
name = "writes-need-sre"
targets = ["db"]
sql = ["write"]
action = "review"
approvers = ["sre"]
timeout = "120s"
"#
    )
}

pub struct Console {
    pub s: Setup,
    pub url: String,
    pub idp: OidcProvider,
    pub slack: Receiver,
}

/// Starts the console for test `name`, or says why it cannot run here.
#[must_use]
pub fn start(name: &str) -> Option<Console> {
    start_with(name, "")
}

/// [`start`] with `extra_rules` (`[[rule]]` tables about target `db`) after
/// [`rules`].
///
/// # Panics
/// When the host can run the test and a part still fails to start.
#[must_use]
pub fn start_with(name: &str, extra_rules: &str) -> Option<Console> {
    if let Some(why) = missing_parts() {
        println!("skipping {name}: {why}");
        return None;
    }
    let port = free_port("127.0.0.1").unwrap();
    let url = format!("https://127.0.0.1:{port}");
    let idp = OidcProvider::start(OIDC_SECRET, &format!("{url}/auth/callback")).unwrap();
    let slack = Receiver::start();
    set_secrets();
    let config = format!(
        "[web]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"{url}\"\n\
         [web.oidc]\nissuer = \"{}\"\nclient_id = \"{}\"\nclient_secret_env = \"PC_TEST_OIDC_SECRET\"\n\
         [web.slack]\nsigning_secret_env = \"PC_TEST_SLACK_SECRET\"\nresponse_origin = \"{}\"\n",
        idp.issuer,
        crate::web::OIDC_CLIENT_ID,
        slack.url
    );
    let s = setup_with_config(name, &format!("{}{extra_rules}", rules()), &config)?;
    Some(Console { s, url, idp, slack })
}

/// The daemon reads its secrets from its environment, which it inherits from us.
fn set_secrets() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: set once, before any daemon starts, with the same values every time.
        unsafe {
            std::env::set_var("PC_TEST_OIDC_SECRET", OIDC_SECRET);
            std::env::set_var("PC_TEST_SLACK_SECRET", SLACK_SECRET);
        }
    });
}

impl Console {
    /// `psql` running `sql` through the redirect, in the background.
    pub fn psql(&self, sql: &str) -> Child {
        self.s
            .psql_command(&["-c", sql])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// The pending request whose SQL contains `needle`.
    pub fn pending(&self, needle: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let out = self.s.d.cli(&["approvals", "--json"]);
            let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            if let Some(r) = list.as_array().and_then(|l| {
                l.iter()
                    .find(|r| r["summary"].as_str().is_some_and(|t| t.contains(needle)))
            }) {
                return r.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no request for {needle}; log:\n{}",
                self.s.d.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn request(&self, id: &str) -> Value {
        let out = self.s.d.cli(&["approvals", "--json", "--all"]);
        let list: Value = serde_json::from_slice(&out.stdout).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .cloned()
            .unwrap()
    }

    /// Runs `portcullis login` as `nobody` and confirms the device sign-in at the
    /// provider as `login` in a browser; what the command printed after the link.
    ///
    /// # Panics
    /// When the command or the browser fails.
    pub async fn login_as(&self, login: &str) -> String {
        let (linked, said) = self.try_login_as(login).await;
        assert!(linked, "`portcullis login` failed: {said}");
        said
    }

    /// [`Console::login_as`] that may fail: whether `portcullis login` succeeded, and
    /// what it printed after the link (stdout and stderr).
    ///
    /// # Panics
    /// When the command does not start or the browser fails.
    pub async fn try_login_as(&self, login: &str) -> (bool, String) {
        let mut cmd = std::process::Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(crate::daemon::binary())
            .arg("login")
            .env("PORTCULLIS_SOCKET", &self.s.d.socket)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
        let url = first
            .trim()
            .strip_prefix("Open ")
            .unwrap_or_else(|| unreachable!("`portcullis login` printed {first:?}"))
            .to_owned();
        let device = crate::web::Browser::start().await.unwrap();
        device.confirm_device(&url, login).await.unwrap();
        let mut said = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut said).unwrap();
        if let Some(mut stderr) = child.stderr.take() {
            std::io::Read::read_to_string(&mut stderr, &mut said).unwrap();
        }
        let status = child.wait().unwrap();
        device.close().await;
        (status.success(), said)
    }

    /// A browser signed in as root by a `portcullis web-login` link (a console admin).
    ///
    /// # Panics
    /// When the link or the browser fails.
    pub async fn root_browser(&self) -> crate::web::Browser {
        let out = self.s.d.cli(&["web-login"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let link = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let root = crate::web::Browser::start().await.unwrap();
        root.client.goto(&link).await.unwrap();
        root.wait_for("#inbox").await.unwrap();
        root
    }

    pub fn audit(&self) -> String {
        let out = self.s.d.cli(&["sessions", "export"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Where a screenshot goes: the repository's `docs/` when
/// `PORTCULLIS_SCREENSHOTS=docs` (to refresh the README's pictures), else a
/// directory under the system's temporary directory, so test runs leave the
/// working tree alone. The directory is created.
#[must_use]
pub fn docs(file: &str) -> std::path::PathBuf {
    let dir = if std::env::var_os("PORTCULLIS_SCREENSHOTS").is_some_and(|v| v == "docs") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs")
    } else {
        std::env::temp_dir().join("portcullis-screenshots")
    };
    let _ = std::fs::create_dir_all(&dir);
    dir.join(file)
}

/// Slack's signature of `body` at `ts` with `secret`.
#[must_use]
pub fn sign(secret: &str, ts: u64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("v0={hex}")
}

/// `text` percent-encoded for a form field.
#[must_use]
pub fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
