//! TLS for any protocol the proxy speaks: its certificate toward clients, its
//! connections to targets, and channel binding. No protocol owns this module; each one
//! decides *when* TLS starts (PostgreSQL after its `SSLRequest` exchange, HTTPS on the
//! first byte) and which ALPN names it offers.
//!
//! - **Frontend** (client → Portcullis, `frontend`): [`server_identity`] loads the
//!   proxy's certificate or generates and persists a self-signed one under the state
//!   directory, and builds a rustls `ServerConfig` with the caller's ALPN list;
//!   [`accept`] runs the handshake on a client's connection.
//! - **Backend** (Portcullis → target, `backend`): [`client_config`] turns a target's
//!   [`TargetTls`](crate::policy::TargetTls) settings (verification like libpq's
//!   `sslmode`, `tls_ca`, `server_name`) into a rustls `ClientConfig`; a [`Connector`]
//!   checks the settings before any byte goes to the server, then runs the handshake;
//!   [`connect`] does both.
//! - **Channel binding** (`channel_binding`): the RFC 5929 `tls-server-end-point` data
//!   that SCRAM-SHA-256-PLUS binds to, for either leg.
//! - **Streams** (`stream`): [`MaybeTls`], a TCP connection that may or may not be TLS.
//!
//! Every rustls config here is built with an explicit aws-lc-rs provider ([`provider`]):
//! another dependency links ring, so the process-default provider is ambiguous.

mod backend;
mod channel_binding;
mod frontend;
mod stream;

pub use backend::{Connector, client_config, connect};
pub use channel_binding::ChannelBinding;
pub use frontend::{Generated, ServerIdentity, accept, server_config, server_identity};
pub use stream::{BackendStream, ClientStream, MaybeTls};

use std::{io, path::PathBuf, sync::Arc};

/// The crypto provider for every rustls config the proxy builds (see the module docs).
#[must_use]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Why TLS to a target's server could not be set up. Messages never carry secrets.
///
/// Underlying errors are part of the message (so the hint can come last), not a `source`.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The name to verify the certificate against is not a DNS name or IP address.
    #[error("{0:?} is not a valid TLS server name; set the target's tls server_name")]
    InvalidServerName(String),
    /// The CA file for `verify-ca` or `verify-full` could not be read or holds no usable certificate.
    #[error("cannot load CA certificates from {path}: {reason}; check the target's tls ca_file")]
    CaFile { path: PathBuf, reason: String },
    /// The server's certificate chain or name did not verify.
    #[error(
        "certificate verification failed: {reason}; check the target's tls ca_file and \
         server_name"
    )]
    Verification { reason: String },
    /// The TLS handshake failed for another reason (protocol versions, ciphers, alerts).
    #[error("TLS handshake failed: {reason}")]
    Handshake { reason: String },
    /// Reading or writing the TCP connection failed.
    #[error("cannot {op}: {error}")]
    Io { op: &'static str, error: io::Error },
}
