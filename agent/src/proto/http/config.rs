//! The `[http]` table of the daemon's config: the CA that signs the certificates the
//! proxy shows HTTPS clients, whether it goes into the system trust store, and the
//! caps on what one request may make the proxy hold.

use serde::Deserialize;
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

/// Smallest header buffer allowed (hyper's own minimum).
const MIN_HEADER_BYTES: usize = 8192;

/// The `[http]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFile {
    /// PEM CA certificate and key that sign per-host leaf certificates; default: a CA
    /// generated under `state_dir` (`http-ca.crt`, `http-ca.key`).
    ca_cert: Option<PathBuf>,
    ca_key: Option<PathBuf>,
    /// Install the CA into the system trust store at start (default true).
    trust_store: Option<bool>,
    /// Where the trust store takes extra CAs (default `/usr/local/share/ca-certificates`).
    trust_dir: Option<PathBuf>,
    /// Largest request body buffered while a request is held (default 8 MiB); a
    /// larger one is refused with 413.
    max_held_body: Option<usize>,
    /// Largest request head (request line and headers) in bytes (default 64 KiB).
    max_header_bytes: Option<usize>,
    /// Most headers in one request (default 100).
    max_headers: Option<usize>,
    /// Time a client gets to send a request's head ("10s"), against slowloris.
    header_timeout: Option<String>,
    /// Body bytes kept in a record, each way (default 4096; 0 keeps none).
    record_body: Option<usize>,
    /// Hold a response's end until its record is written (default true), so a crash
    /// never loses the record of a response a client received; `false` trades that
    /// for speed (the record is then queued, written within moments).
    wait_for_record: Option<bool>,
}

/// The validated `[http]` table.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub ca_cert: Option<PathBuf>,
    pub ca_key: Option<PathBuf>,
    pub trust_store: bool,
    pub trust_dir: PathBuf,
    pub state_dir: PathBuf,
    pub max_held_body: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub header_timeout: Duration,
    pub record_body: usize,
    pub wait_for_record: bool,
}

impl HttpFile {
    /// Checks the table; `rel` makes a path relative to the config file absolute.
    pub fn validate(
        self,
        state_dir: &Path,
        rel: &impl Fn(PathBuf) -> PathBuf,
    ) -> Result<HttpConfig, String> {
        if self.ca_cert.is_some() != self.ca_key.is_some() {
            return Err(
                "needs both `ca_cert` and `ca_key`, or neither (a CA is generated \
                        under state_dir then)"
                    .into(),
            );
        }
        let max_header_bytes = self.max_header_bytes.unwrap_or(64 * 1024);
        if max_header_bytes < MIN_HEADER_BYTES {
            return Err(format!(
                "`max_header_bytes` = {max_header_bytes} is below the minimum of \
                 {MIN_HEADER_BYTES}"
            ));
        }
        let header_timeout = match self.header_timeout {
            None => Duration::from_secs(10),
            Some(text) => humantime::parse_duration(&text)
                .map_err(|e| format!("`header_timeout` = \"{text}\": {e}; write e.g. \"10s\""))?,
        };
        Ok(HttpConfig {
            ca_cert: self.ca_cert.map(rel),
            ca_key: self.ca_key.map(rel),
            trust_store: self.trust_store.unwrap_or(true),
            trust_dir: self
                .trust_dir
                .map_or_else(|| "/usr/local/share/ca-certificates".into(), rel),
            state_dir: state_dir.to_owned(),
            max_held_body: self.max_held_body.unwrap_or(8 * 1024 * 1024),
            max_header_bytes,
            max_headers: self.max_headers.unwrap_or(100).clamp(16, 1000),
            header_timeout,
            record_body: self.record_body.unwrap_or(4096),
            wait_for_record: self.wait_for_record.unwrap_or(true),
        })
    }
}
