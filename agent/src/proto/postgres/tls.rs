//! TLS on both legs of a proxied PostgreSQL connection.
//!
//! PostgreSQL negotiates TLS inside its own protocol: the client sends an 8-byte
//! `SSLRequest`, the server answers one byte (`S` = go ahead, `N` = no TLS), and the TLS
//! handshake starts right after that byte on the same TCP connection.
//!
//! - **Frontend** (psql → Portcullis, [`frontend`]): [`server_config`] loads the proxy's
//!   certificate or generates and persists a self-signed one; after the proxy answered
//!   `S` to a client's `SSLRequest`, [`accept_client`] runs the handshake.
//! - **Backend** (Portcullis → PostgreSQL, [`backend`]): [`connect_backend`] speaks the
//!   `SSLRequest` exchange and the handshake per the target's [`BackendTls`] mode, which
//!   mirrors libpq's `sslmode`.
//! - **Channel binding** ([`channel_binding`]): the RFC 5929 `tls-server-end-point` data
//!   that SCRAM-SHA-256-PLUS binds to, for either leg.
//!
//! Every rustls config here is built with an explicit aws-lc-rs provider: another
//! dependency links ring, so the process-default provider is ambiguous.

mod backend;
mod channel_binding;
mod frontend;

pub use backend::{BackendTls, BackendTlsConfig, connect_backend};
pub use channel_binding::ChannelBinding;
pub use frontend::{
    CERT_FILE, KEY_FILE, ServerIdentity, accept_client, server_config, server_identity,
};

use std::{
    io,
    path::PathBuf,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

/// The ALPN protocol name PostgreSQL 17+ uses; older servers and clients ignore it.
const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// The crypto provider for every config in this module (see the module docs).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Why TLS to a backend server could not be set up. Messages never carry secrets.
///
/// Underlying errors are part of the message (so the hint can come last), not a `source`.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The server answered `N` to the `SSLRequest` and the mode requires TLS.
    #[error(
        "server does not support TLS (it answered N to SSLRequest); enable ssl on the server \
         or set the target's tls mode to prefer or disable"
    )]
    Refused,
    /// The server answered something other than `S` or `N`: not PostgreSQL, or a server
    /// trying to inject plaintext before the handshake (CVE-2021-23222).
    #[error(
        "server answered SSLRequest with byte {0:#04x}, not S or N; check that the target is a \
         PostgreSQL server"
    )]
    UnexpectedAnswer(u8),
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

// --- Streams ---------------------------------------------------------------------------

/// A TCP connection that is either plaintext or TLS; see [`ClientStream`] and
/// [`BackendStream`].
#[derive(Debug)]
pub enum MaybeTls<T> {
    Plain(TcpStream),
    /// Boxed: a TLS stream is a few hundred bytes, a plain one a pointer.
    Tls(Box<T>),
}

/// The client leg (psql → Portcullis), after the proxy answered the `SSLRequest`.
pub type ClientStream = MaybeTls<tokio_rustls::server::TlsStream<TcpStream>>;
/// The backend leg (Portcullis → PostgreSQL), as [`connect_backend`] set it up.
pub type BackendStream = MaybeTls<tokio_rustls::client::TlsStream<TcpStream>>;

impl<T> MaybeTls<T> {
    /// Whether the bytes on the wire are encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Tls(_))
    }
}

impl ClientStream {
    /// The TCP socket underneath (peer address, socket options).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(tcp) => tcp,
            Self::Tls(tls) => tls.get_ref().0,
        }
    }
}

impl BackendStream {
    /// The TCP socket underneath (peer address, socket options).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(tcp) => tcp,
            Self::Tls(tls) => tls.get_ref().0,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for MaybeTls<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for MaybeTls<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, data),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
