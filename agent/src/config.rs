//! The daemon's configuration file (`/etc/portcullis/portcullis.toml` by default).
//!
//! Two stages: [`ConfigFile`] mirrors the TOML (unknown keys are errors), [`Config`] is
//! the validated form the daemon uses. Relative paths are taken from the directory of
//! the config file, so a repo-local state dir works without absolute paths.

use crate::gate::notify::WebhookConfig;
use serde::Deserialize;
use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/portcullis/portcullis.toml";
pub const DEFAULT_SOCKET: &str = "/run/portcullis/api.sock";
/// The `SO_MARK` of the proxy's upstream sockets (spells "pc" + 0x1d in hex).
pub const DEFAULT_MARK: u32 = 0x7063_001d;

/// What is wrong with a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}; pass --config FILE or create it")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The config file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    /// Directory of policy files.
    policies: Option<PathBuf>,
    /// Store URL: `sqlite://PATH` (default) or `postgres://…`.
    store: Option<String>,
    /// Path of the local API socket.
    api_socket: Option<PathBuf>,
    /// Unix group whose members (besides root) may manage policy.
    admin_group: Option<String>,
    /// Proxy listeners: one IPv4 and optionally one IPv6 address.
    listen: Option<Vec<SocketAddr>>,
    /// cgroup v2 directory the programs attach to (default: the cgroup2 mount root).
    cgroup: Option<PathBuf>,
    /// bpffs directory where programs' links and maps are pinned.
    bpf_pin_dir: Option<PathBuf>,
    /// `SO_MARK` set on upstream sockets so the eBPF programs let them pass.
    mark: Option<u32>,
    /// Most connections served at once; more wait for a slot.
    max_connections: Option<usize>,
    /// Single-threaded runtimes serving sessions (default 0: sessions run on the
    /// daemon's main, work-stealing runtime).
    session_workers: Option<usize>,
    /// How long in-flight sessions get to finish at shutdown ("10s").
    shutdown_grace: Option<String>,
    /// How often target host names are re-resolved ("30s").
    resolve_interval: Option<String>,
    /// Also serve `/metrics` on this TCP address (e.g. "127.0.0.1:9750").
    metrics_listen: Option<SocketAddr>,
    /// This gateway's name in a shared store (default: the host name). Each daemon
    /// sharing one store needs its own.
    gateway: Option<String>,
    /// Where new approval requests and decisions are sent (HTTP POST).
    #[serde(default, rename = "webhook")]
    webhooks: Vec<WebhookConfig>,
    /// Where the daemon keeps files it makes (the generated TLS certificate).
    state_dir: Option<PathBuf>,
    /// The PostgreSQL proxy.
    #[serde(default)]
    postgres: PostgresFile,
    /// The web console (off unless `[web] listen` is set).
    web: Option<crate::web::WebFile>,
    /// The SSH proxy.
    #[serde(default)]
    ssh: SshFile,
    /// The HTTP(S) proxy.
    #[serde(default)]
    http: crate::proto::http::config::HttpFile,
}

/// The `[ssh]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SshFile {
    /// The host CA's private key (OpenSSH format); default: one generated under
    /// `state_dir` on first start.
    host_ca_key: Option<PathBuf>,
    /// The system-wide known-hosts file that gets the marked `@cert-authority`
    /// block (default `/etc/ssh/ssh_known_hosts`).
    known_hosts_file: Option<PathBuf>,
}

/// The validated `[ssh]` table.
#[derive(Debug, Clone)]
pub struct SshConfig {
    pub host_ca_key: Option<PathBuf>,
    pub known_hosts_file: PathBuf,
    pub state_dir: PathBuf,
}

impl SshConfig {
    /// `[ssh]` with relative paths taken from the config's directory (`rel`).
    fn new(file: SshFile, rel: impl Fn(PathBuf) -> PathBuf, state_dir: &Path) -> Self {
        Self {
            host_ca_key: file.host_ca_key.map(&rel),
            known_hosts_file: rel(file
                .known_hosts_file
                .unwrap_or_else(|| "/etc/ssh/ssh_known_hosts".into())),
            state_dir: state_dir.to_owned(),
        }
    }
}

/// The `[postgres]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PostgresFile {
    /// Accept TLS from clients (default true); false answers `N` to `SSLRequest`.
    client_tls: Option<bool>,
    /// PEM certificate chain and key for clients; default: a generated self-signed one.
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    /// Largest message accepted from either side, in bytes (default 64 MiB).
    max_message: Option<usize>,
    /// Result rows kept per recorded statement (default 20; 0 keeps none).
    record_rows: Option<usize>,
    /// Statement classifications cached (default 10000).
    classify_cache: Option<usize>,
}

/// The validated `[postgres]` table.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    pub client_tls: bool,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub max_message: usize,
    pub record_rows: usize,
    pub classify_cache: usize,
}

/// Smallest `max_message` allowed: below this, ordinary statements would fail.
const MIN_MESSAGE: usize = 64 * 1024;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub policies: PathBuf,
    pub store: String,
    pub api_socket: PathBuf,
    pub admin_group: Option<String>,
    pub listen4: SocketAddr,
    pub listen6: Option<SocketAddr>,
    pub cgroup: Option<PathBuf>,
    pub bpf_pin_dir: PathBuf,
    pub mark: u32,
    pub max_connections: usize,
    /// Session worker runtimes; 0 serves sessions on the main runtime.
    pub session_workers: usize,
    pub shutdown_grace: Duration,
    pub resolve_interval: Duration,
    pub metrics_listen: Option<SocketAddr>,
    pub gateway: Option<String>,
    pub webhooks: Vec<WebhookConfig>,
    pub state_dir: PathBuf,
    pub postgres: PostgresConfig,
    /// The web console, when `[web] listen` is set.
    pub web: Option<crate::web::WebConfig>,
    pub ssh: SshConfig,
    pub http: crate::proto::http::config::HttpConfig,
}

impl Config {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Validates config `text` as if read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            line: e.span().map_or(1, |s| line_of(text, s.start)),
            message: e.message().to_owned(),
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let rel = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let (listen4, listen6) = listen_addresses(file.listen).map_err(invalid)?;
        let duration = |key: &str, value: Option<String>, default: Duration| {
            duration(key, value, default).map_err(invalid)
        };
        let store = store_url(file.store, base);
        let state_dir = rel(file
            .state_dir
            .unwrap_or_else(|| "/var/lib/portcullis".into()));
        let postgres = postgres_config(file.postgres, &rel, &state_dir).map_err(invalid)?;
        let web = match file.web {
            None => None,
            Some(web) => web
                .validate(base, &state_dir, &|var| std::env::var(var).ok())
                .map_err(invalid)?,
        };
        let ssh = SshConfig::new(file.ssh, &rel, &state_dir);
        Ok(Self {
            web,
            path: path.to_owned(),
            policies: rel(file
                .policies
                .unwrap_or_else(|| "/etc/portcullis/policies".into())),
            store,
            api_socket: rel(file.api_socket.unwrap_or_else(|| DEFAULT_SOCKET.into())),
            admin_group: file.admin_group,
            listen4,
            listen6,
            cgroup: file.cgroup.map(rel),
            bpf_pin_dir: rel(file
                .bpf_pin_dir
                .unwrap_or_else(|| "/sys/fs/bpf/portcullis".into())),
            mark: file.mark.unwrap_or(DEFAULT_MARK),
            max_connections: file.max_connections.unwrap_or(4096).max(1),
            session_workers: file.session_workers.unwrap_or(0),
            shutdown_grace: duration(
                "shutdown_grace",
                file.shutdown_grace,
                Duration::from_secs(10),
            )?,
            resolve_interval: duration(
                "resolve_interval",
                file.resolve_interval,
                Duration::from_secs(30),
            )?,
            metrics_listen: file.metrics_listen,
            gateway: file.gateway,
            webhooks: file.webhooks,
            http: file
                .http
                .validate(&state_dir, &rel)
                .map_err(|m| invalid(format!("[http] {m}")))?,
            state_dir,
            postgres,
            ssh,
        })
    }
}

/// The `listen` addresses: exactly one IPv4 and at most one IPv6, with fixed ports
/// (default: loopback, port 7450).
fn listen_addresses(
    listen: Option<Vec<SocketAddr>>,
) -> Result<(SocketAddr, Option<SocketAddr>), String> {
    let listen = listen.unwrap_or_else(|| {
        vec![
            (Ipv4Addr::LOCALHOST, 7450).into(),
            (Ipv6Addr::LOCALHOST, 7450).into(),
        ]
    });
    let mut v4 = listen.iter().filter(|a| a.is_ipv4());
    let mut v6 = listen.iter().filter(|a| a.is_ipv6());
    let (Some(&listen4), None) = (v4.next(), v4.next()) else {
        return Err("`listen` needs exactly one IPv4 address, e.g. \"127.0.0.1:7450\"".into());
    };
    let listen6 = v6.next().copied();
    if v6.next().is_some() {
        return Err("`listen` takes at most one IPv6 address".into());
    }
    if listen4.port() == 0 || listen6.is_some_and(|a| a.port() == 0) {
        return Err("`listen` addresses need a fixed port (not 0)".into());
    }
    Ok((listen4, listen6))
}

/// A duration setting (`"10s"`, `"5m"`), or `default`.
fn duration(key: &str, value: Option<String>, default: Duration) -> Result<Duration, String> {
    match value {
        None => Ok(default),
        Some(v) => humantime::parse_duration(&v)
            .map_err(|e| format!("`{key}` = \"{v}\": {e}; write e.g. \"10s\" or \"5m\"")),
    }
}

/// The store's URL; `sqlite://relative/path` is taken from the config's directory
/// `base`, like other paths.
fn store_url(store: Option<String>, base: &Path) -> String {
    let store = store.unwrap_or_else(|| "sqlite:///var/lib/portcullis/portcullis.db".into());
    match store.strip_prefix("sqlite://") {
        Some(p) if !p.starts_with('/') && !p.starts_with(':') => {
            format!("sqlite://{}", base.join(p).display())
        }
        _ => store,
    }
}

/// The `[postgres]` table, validated, its paths resolved with `rel`.
fn postgres_config(
    pg: PostgresFile,
    rel: &dyn Fn(PathBuf) -> PathBuf,
    state_dir: &Path,
) -> Result<PostgresConfig, String> {
    if pg.tls_cert.is_some() != pg.tls_key.is_some() {
        return Err(
            "[postgres] needs both `tls_cert` and `tls_key`, or neither (a generated \
                    certificate is used then)"
                .into(),
        );
    }
    let max_message = pg.max_message.unwrap_or(64 * 1024 * 1024);
    if max_message < MIN_MESSAGE {
        return Err(format!(
            "[postgres] `max_message` = {max_message} is below the minimum of {MIN_MESSAGE} bytes"
        ));
    }
    Ok(PostgresConfig {
        client_tls: pg.client_tls.unwrap_or(true),
        tls_cert: pg.tls_cert.map(rel),
        tls_key: pg.tls_key.map(rel),
        state_dir: state_dir.to_owned(),
        max_message,
        record_rows: pg.record_rows.unwrap_or(20),
        classify_cache: pg.classify_cache.unwrap_or(10_000).max(16),
    })
}

/// 1-based line number of byte offset `at` in `text`.
#[must_use]
pub fn line_of(text: &str, at: usize) -> usize {
    text.get(..at).map_or(1, |t| t.matches('\n').count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/pc/portcullis.toml"), text)
    }

    #[test]
    fn defaults_and_relative_paths() {
        let c = parse("policies = \"pol\"\nstore = \"sqlite://state/p.db\"\n")
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(c.policies, Path::new("/etc/pc/pol"));
        assert_eq!(c.store, "sqlite:///etc/pc/state/p.db");
        assert_eq!(c.listen4, SocketAddr::from(([127, 0, 0, 1], 7450)));
        assert!(c.listen6.is_some_and(|a| a.is_ipv6()));
        assert_eq!(c.api_socket, Path::new(DEFAULT_SOCKET));
        assert_eq!(c.shutdown_grace, Duration::from_secs(10));
    }

    #[test]
    fn errors_name_the_line_and_the_fix() {
        let e = parse("policies = \"p\"\nbogus = 1\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.starts_with("/etc/pc/portcullis.toml:2:"), "{e}");
        let e = parse("listen = [\"[::1]:1\"]")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("exactly one IPv4"), "{e}");
        let e = parse("shutdown_grace = \"soon\"")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("e.g. \"10s\""), "{e}");
    }
}
