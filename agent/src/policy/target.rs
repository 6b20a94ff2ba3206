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
    /// What only `ssh` targets have: how the proxy trusts the target and presents
    /// itself to clients.
    pub ssh: Option<SshTarget>,
    /// A header the proxy sets on every upstream request (`http`, `https`).
    pub http_credentials: Option<HttpCredentials>,
}

/// An `ssh` target's host identities.
#[derive(Debug, Clone, Serialize)]
pub struct SshTarget {
    /// OpenSSH `known_hosts` file the target's host key must be in (no trust on first
    /// use); read on each connection.
    pub known_hosts: PathBuf,
    /// The target's own host private key, presented instead of a certificate.
    pub host_key_file: Option<PathBuf>,
    /// A user CA private key: each session logs in with a fresh key and a
    /// certificate signed by it (principal: the login; key id: the session id).
    pub user_ca_key_file: Option<PathBuf>,
}

/// A header set on every request to an HTTP target (an API token), replacing any
/// header of that name the client sent. The value is a reference, read per request.
#[derive(Debug, Clone, Serialize)]
pub struct HttpCredentials {
    /// The header's name, lowercase (`authorization`).
    pub header: String,
    pub value: SecretRef,
    /// Written before the value (`"Bearer "`).
    pub prefix: String,
}

/// The wire protocols the proxy can speak to a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Opaque TCP: the only action is "connect".
    Tcp,
    /// PostgreSQL: connect, then every statement is an action.
    Postgres,
    /// SSH: connect, then every exec, shell, file transfer and forward is an action.
    Ssh,
    /// Plain HTTP/1.1: connect, then every request is an action.
    Http,
    /// HTTP over TLS the proxy terminates (with a leaf certificate from its CA):
    /// HTTP/1.1 or HTTP/2, every request an action.
    Https,
}

impl Protocol {
    /// Whether the target speaks HTTP (plain or over TLS): its rules may filter
    /// requests with `methods` and `paths`.
    #[must_use]
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Https)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Postgres => "postgres",
            Protocol::Ssh => "ssh",
            Protocol::Http => "http",
            Protocol::Https => "https",
        })
    }
}

/// Who the proxy logs in as. The password is a reference, resolved per session.
#[derive(Debug, Clone, Serialize)]
pub struct Credentials {
    /// Default: the user name the client asked for.
    pub user: Option<String>,
    pub password: Option<SecretRef>,
    /// A private key to log in with (`ssh`), read per session.
    pub key_file: Option<PathBuf>,
}

/// TLS from the proxy to a target, like libpq's `sslmode`, `sslrootcert` and the
/// host name it checks. Every protocol's backend TLS ([`crate::proto::tls`]) reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TargetTls {
    pub mode: BackendTls,
    /// PEM file of the CAs to trust with `verify-ca` and `verify-full`; the webpki
    /// (Mozilla) roots if unset. Read on each connection, so a replaced file takes
    /// effect without restart. Other modes ignore it.
    pub ca_file: Option<PathBuf>,
    /// The name the certificate must hold (DNS name or IP address), when it is not the
    /// address the proxy connects to; also sent as SNI.
    pub server_name: Option<String>,
}

/// Whether and how the proxy secures its connection to a target, like libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendTls {
    /// Plaintext (for PostgreSQL, no `SSLRequest` is sent).
    Disable,
    /// TLS if the server supports it, else plaintext; the certificate is not verified.
    #[default]
    Prefer,
    /// TLS or fail; the certificate is not verified (libpq's `require` without a root
    /// certificate): protects against eavesdropping, not against an active attacker.
    Require,
    /// TLS or fail; the chain must verify against the CA, whatever name the certificate
    /// holds (libpq's `verify-ca`: for servers reached by an address their certificate
    /// does not name).
    VerifyCa,
    /// TLS or fail; the chain must verify against the CA and the certificate must name
    /// the server.
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
