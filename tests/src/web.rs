//! The web console's test parts: a real OpenID provider (the `oidc-provider` npm
//! package in `tests/oidc`, installed by `cargo xtask setup`), a headless Chromium
//! driven over `WebDriver` (`chromedriver`, with the `fantoccini` client), and a small
//! HTTP receiver standing in for Slack's `response_url`.
#![expect(clippy::panic, reason = "test support panics with a message")]

use crate::net::free_port;
use anyhow::{Context as _, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const OIDC_CLIENT_ID: &str = "portcullis-console";

/// The directory of the test OpenID provider's script and `node_modules`.
#[must_use]
pub fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc")
}

/// Why the web tests cannot run here, if they cannot (printed as the skip reason).
#[must_use]
pub fn missing_parts() -> Option<String> {
    for (path, what) in [
        (PathBuf::from(CHROMIUM), "Debian's chromium"),
        (PathBuf::from(CHROMEDRIVER), "Debian's chromium-driver"),
        (PathBuf::from("/usr/bin/node"), "nodejs"),
        (
            oidc_dir().join("node_modules/oidc-provider/package.json"),
            "the test OpenID provider",
        ),
    ] {
        if !path.exists() {
            return Some(format!(
                "{} is missing ({what}); run `cargo xtask setup`",
                path.display()
            ));
        }
    }
    None
}

/// A running `oidc-provider` on 127.0.0.1 with one static client.
pub struct OidcProvider {
    pub issuer: String,
    pub port: u16,
    child: Child,
}

impl OidcProvider {
    /// Starts it for the client `OIDC_CLIENT_ID` with `secret`, redirecting to
    /// `redirect_uri`; waits until it listens.
    pub fn start(secret: &str, redirect_uri: &str) -> anyhow::Result<Self> {
        Self::start_on(free_port("127.0.0.1")?, secret, redirect_uri)
    }

    /// [`OidcProvider::start`] on `port`: a restarted provider has new signing keys.
    pub fn start_on(port: u16, secret: &str, redirect_uri: &str) -> anyhow::Result<Self> {
        let mut child = Command::new("node")
            .arg(oidc_dir().join("provider.mjs"))
            .args([&port.to_string(), OIDC_CLIENT_ID, secret, redirect_uri])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start node")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        let mut reader = BufReader::new(stdout);
        reader.read_line(&mut line)?;
        // Keep draining its output, so the provider never writes into a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let Some(issuer) = line.trim().strip_prefix("ready ") else {
            let _ = child.kill();
            bail!("the OpenID provider did not start: {line:?}");
        };
        Ok(Self {
            issuer: issuer.to_owned(),
            port,
            child,
        })
    }
}

impl OidcProvider {
    /// From now on its token endpoint hands out ID tokens, validly signed, made for
    /// another audience (`"aud"`), already expired (`"exp"`), or as they should be
    /// (`"off"`).
    pub async fn tamper(&self, mode: &str) -> anyhow::Result<()> {
        let said = reqwest::get(format!(
            "{}/portcullis-test/tamper?mode={mode}",
            self.issuer
        ))
        .await?
        .text()
        .await?;
        if said.trim() != format!("tamper {mode}") {
            bail!("the provider did not switch to {mode}: {said}");
        }
        Ok(())
    }

    /// Stops it and starts it again on the same port: with new signing keys.
    pub fn restart(&mut self, secret: &str, redirect_uri: &str) -> anyhow::Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        *self = Self::start_on(self.port, secret, redirect_uri)?;
        Ok(())
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A chromedriver and one headless Chromium session.
pub struct Browser {
    pub client: Client,
    driver: Child,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless Chromium that accepts
    /// the console's generated (self-signed) certificate.
    pub async fn start() -> anyhow::Result<Self> {
        let port = free_port("127.0.0.1")?;
        let mut driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start chromedriver")?;
        let url = format!("http://127.0.0.1:{port}");
        let mut caps = serde_json::Map::new();
        caps.insert("acceptInsecureCerts".into(), true.into());
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1200,1000", "--no-first-run", "--disable-extensions"],
            }),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    let _ = driver.kill();
                    bail!("cannot open a Chromium session: {e}");
                }
            }
        };
        Ok(Self { client, driver })
    }

    /// Signs in through the console's OpenID Connect button as `login`.
    pub async fn sign_in(&self, console: &str, login: &str) -> anyhow::Result<()> {
        self.sign_in_at_provider(console, login).await?;
        let c = &self.client;
        let wait = || c.wait().at_most(Duration::from_secs(20));
        if wait().for_element(Locator::Css("#inbox")).await.is_err() {
            let at = c
                .current_url()
                .await
                .map(|u| u.to_string())
                .unwrap_or_default();
            let page = c.source().await.unwrap_or_default();
            bail!("the inbox did not open after sign-in as {login}; at {at}:\n{page}");
        }
        self.live().await
    }

    /// Goes through the provider's sign-in (and consent) as `login` from the
    /// console's button, up to the console's answer, whatever it is.
    pub async fn sign_in_at_provider(&self, console: &str, login: &str) -> anyhow::Result<()> {
        let c = &self.client;
        c.goto(&format!("{console}/")).await?;
        c.find(Locator::Css("#sign-in")).await?.click().await?;
        // Fill in whatever form the provider shows (sign-in, then consent once per
        // client) until the browser is back at the console. A form submitted while
        // its page was still settling is submitted again after a while.
        let deadline = Instant::now() + Duration::from_secs(40);
        let mut submitted: Option<Instant> = None;
        loop {
            let at = c.current_url().await?;
            if at.as_str().starts_with(console) && !at.path().starts_with("/auth/login") {
                return Ok(());
            }
            let settled = submitted.is_none_or(|t| t.elapsed() > Duration::from_secs(5));
            if settled && self.fill_provider_form(login).await? {
                submitted = Some(Instant::now());
            }
            if Instant::now() > deadline {
                let page = c.source().await.unwrap_or_default();
                bail!(
                    "the provider's sign-in as {login} did not return to the console; at {at}:\n{page}"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Submits the provider's sign-in form as `login` or its consent form, if one
    /// is on the page; whether one was.
    async fn fill_provider_form(&self, login: &str) -> anyhow::Result<bool> {
        let c = &self.client;
        if let Ok(field) = c.find(Locator::Css("input[name=login]")).await {
            field.clear().await?;
            field.send_keys(login).await?;
            let password = c.find(Locator::Css("input[name=password]")).await?;
            password.clear().await?;
            password.send_keys("any password").await?;
        } else if c
            .find(Locator::Css("input[name=prompt][value=consent]"))
            .await
            .is_err()
        {
            return Ok(false);
        }
        c.find(Locator::Css("button[type=submit]"))
            .await?
            .click()
            .await?;
        Ok(true)
    }

    /// Confirms a device sign-in (`portcullis login`) at `url` as `login`.
    pub async fn confirm_device(&self, url: &str, login: &str) -> anyhow::Result<()> {
        let c = &self.client;
        c.goto(url).await?;
        self.wait_for("button[autofocus]").await?.click().await?;
        self.wait_for("input[name=login]")
            .await?
            .send_keys(login)
            .await?;
        c.find(Locator::Css("input[name=password]"))
            .await?
            .send_keys("any password")
            .await?;
        c.find(Locator::Css("button[type=submit]"))
            .await?
            .click()
            .await?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let page = c.source().await?;
            if page.contains("Sign-in Success") {
                return Ok(());
            }
            if page.contains("value=\"consent\"") {
                c.find(Locator::Css("button[type=submit]"))
                    .await?
                    .click()
                    .await?;
            }
            if Instant::now() > deadline {
                bail!("the device sign-in did not succeed:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the element `css` is on the page, without reloading it.
    pub async fn wait_for(&self, css: &str) -> anyhow::Result<fantoccini::elements::Element> {
        Ok(self
            .client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await?)
    }

    /// Waits until the inbox is live: its event stream open and the list loaded
    /// after that, so no catch-up reload replaces what a test is about to use.
    pub async fn live(&self) -> anyhow::Result<()> {
        self.wait_for("#live[data-live='on']").await?;
        self.wait_for("#inbox[data-fresh]").await?;
        Ok(())
    }

    /// Clicks the element `css`, finding it again if the live inbox replaced it
    /// meanwhile (a stale element).
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        self.retry(css, |e| async move { e.click().await }).await
    }

    /// Types `text` into the element `css` (found again if replaced meanwhile).
    pub async fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
        self.retry(css, |e| async move { e.send_keys(text).await })
            .await
    }

    async fn retry<F, Fut>(&self, css: &str, act: F) -> anyhow::Result<()>
    where
        F: Fn(fantoccini::elements::Element) -> Fut,
        Fut: std::future::Future<Output = Result<(), fantoccini::error::CmdError>>,
    {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let done = match self.wait_for(css).await {
                Ok(e) => act(e).await.map_err(anyhow::Error::from),
                Err(e) => Err(e),
            };
            match done {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e.context(format!("on {css}"))),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Saves a PNG screenshot of the page at `path`.
    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let png = self.client.screenshot().await?;
        std::fs::write(path, png)?;
        Ok(())
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}

/// A loopback HTTP server that keeps the bodies POSTed to it (Slack's
/// `response_url` in tests).
pub struct Receiver {
    pub url: String,
    pub bodies: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    #[must_use]
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let port = listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("{e}"));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&bodies);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut length = 0usize;
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    line.clear();
                }
                let mut body = vec![0; length.min(1 << 20)];
                let _ = reader.read_exact(&mut body);
                if let Ok(mut b) = kept.lock() {
                    b.push(String::from_utf8_lossy(&body).into_owned());
                }
                let _ = reader.get_mut().write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        Self {
            url: format!("http://127.0.0.1:{port}"),
            bodies,
        }
    }
}
