//! Protected targets: what the proxy connects to, in which protocol, and how it logs in.

use super::TargetAddress;
use crate::secret::SecretRef;
use serde::Serialize;
use std::{fmt, path::PathBuf};

/// A protected system that connections are redirected away from and gated.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// Unique name, used by rules, logs and the CLI.
    pub name: String,
    /// The wire protocol the proxy speaks to it.
    pub protocol: Protocol,
    /// Where it listens; a connection to any of these is a connection to the target.
    pub addresses: Vec<TargetAddress>,
    /// Free text for people reading `status` or the audit log.
    pub description: Option<String>,
    /// How the proxy logs in (`postgres`); `None` passes the client's user through.
    pub credentials: Option<Credentials>,
    /// TLS from the proxy to the target (`postgres`).
    pub tls: TargetTls,
    /// The password a client must give the proxy (SCRAM-SHA-256) before its
    /// connection is decided (`postgres`); `None`: the local identity is enough.
    pub client_auth: Option<SecretRef>,
}

/// The wire protocols the proxy can speak to a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Opaque TCP: the only action is "connect".
    Tcp,
    /// PostgreSQL: connect, then every statement is an action.
    Postgres,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Postgres => "postgres",
        })
    }
}

/// Who the proxy logs in as. The password is a reference, resolved per session.
#[derive(Debug, Clone, Serialize)]
pub struct Credentials {
    /// Default: the user name the client asked for.
    pub user: Option<String>,
    pub password: Option<SecretRef>,
}

/// TLS to the target, like libpq's `sslmode`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TargetTls {
    pub mode: BackendTls,
    /// CA bundle for `verify-ca` and `verify-full`; `None` means the web PKI roots.
    pub ca_file: Option<PathBuf>,
    /// Name the certificate must carry; `None` means the address's host.
    pub server_name: Option<String>,
}

/// How the proxy secures its connection to a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendTls {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, unverified; plaintext otherwise.
    #[default]
    Prefer,
    /// TLS or no connection; the certificate is not verified.
    Require,
    /// TLS with the chain verified, not the host name.
    VerifyCa,
    /// TLS with the chain and the host name verified.
    VerifyFull,
}

impl BackendTls {
    /// The mode called `name` in a policy file.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "disable" => Some(Self::Disable),
            "prefer" => Some(Self::Prefer),
            "require" => Some(Self::Require),
            "verify-ca" => Some(Self::VerifyCa),
            "verify-full" => Some(Self::VerifyFull),
            _ => None,
        }
    }
}
