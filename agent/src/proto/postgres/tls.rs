//! TLS on both legs of a proxied PostgreSQL connection: what PostgreSQL adds to the
//! shared [`proto::tls`](crate::proto::tls).
//!
//! PostgreSQL negotiates TLS inside its own protocol: the client sends an 8-byte
//! `SSLRequest`, the server answers one byte (`S` = go ahead, `N` = no TLS), and the TLS
//! handshake starts right after that byte on the same TCP connection. Both legs offer
//! the ALPN name `postgresql` (PostgreSQL 17+; older servers and clients ignore it).
//!
//! - **Frontend** (psql → Portcullis): [`server_config`] is the proxy's certificate
//!   (given, or generated as `pg-proxy.crt` in the state directory); after the proxy
//!   answered `S` to a client's `SSLRequest` (in `startup`), [`accept_client`] runs the
//!   handshake.
//! - **Backend** (Portcullis → PostgreSQL): [`connect_backend`] speaks the `SSLRequest`
//!   exchange and the handshake per the target's [`TargetTls`] mode, which mirrors
//!   libpq's `sslmode`.

pub use crate::proto::tls::{BackendStream, ChannelBinding, ClientStream, MaybeTls};

use crate::{
    policy::{BackendTls, TargetTls},
    proto::tls::{self, Connector, Generated, ServerIdentity, TlsError},
};
use rustls::ServerConfig;
use std::{io, path::Path, sync::Arc};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// The ALPN protocol name PostgreSQL 17+ uses; older servers and clients ignore it.
const ALPN_POSTGRESQL: &[u8] = b"postgresql";
/// `SSLRequest`: length 8, then the magic code 80877103 (1234 << 16 | 5679).
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
/// The generated certificate's file names in the state directory, without extension.
const GENERATED_STEM: &str = "pg-proxy";

/// Why TLS to a PostgreSQL server could not be negotiated. Messages never carry secrets.
#[derive(Debug, thiserror::Error)]
pub enum NegotiationError {
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
    /// The settings, the connection or the handshake failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

// --- Frontend --------------------------------------------------------------------------

/// Where the proxy keeps the certificate it generates for PostgreSQL clients.
fn generated(state_dir: &Path) -> Generated<'_> {
    Generated {
        dir: state_dir,
        stem: GENERATED_STEM,
        clients: "PostgreSQL clients",
    }
}

/// The rustls config for the client leg. See [`server_identity`].
pub fn server_config(
    cert: Option<&Path>,
    key: Option<&Path>,
    state_dir: &Path,
) -> anyhow::Result<Arc<ServerConfig>> {
    server_identity(cert, key, state_dir).map(|identity| identity.config)
}

/// The proxy's certificate, key and channel binding for PostgreSQL clients.
///
/// With `cert` and `key`, loads those PEM files (the cert file may hold a chain, leaf
/// first). With neither, uses `state_dir/pg-proxy.crt` and `pg-proxy.key`, generating a
/// self-signed certificate the first time.
pub fn server_identity(
    cert: Option<&Path>,
    key: Option<&Path>,
    state_dir: &Path,
) -> anyhow::Result<ServerIdentity> {
    tls::server_identity(cert, key, &generated(state_dir), &[ALPN_POSTGRESQL])
}

/// Runs the TLS handshake on a client connection, after the proxy answered `S` to its
/// `SSLRequest`.
///
/// The caller must not have read past the 8-byte `SSLRequest`: bytes a client sends
/// before the handshake must be read by TLS, never taken as protocol (CVE-2021-23214).
pub async fn accept_client(
    stream: TcpStream,
    config: Arc<ServerConfig>,
) -> io::Result<ClientStream> {
    let tls = tls::accept(stream, config).await?;
    Ok(MaybeTls::Tls(Box::new(tls)))
}

// --- Backend ---------------------------------------------------------------------------

/// Negotiates TLS on a fresh connection to a PostgreSQL server, before any other byte.
///
/// Unless the mode is `disable`, sends an `SSLRequest` and reads exactly one byte of
/// answer, so that a server cannot slip plaintext in before the handshake
/// (CVE-2021-23222). `default_name` is the host or IP the proxy connected to; the
/// certificate is checked against it unless `cfg.server_name` is set.
///
/// Returns the stream and, for TLS, the server certificate's channel binding (`None` for
/// plaintext, or when the certificate's signature algorithm names no usable hash).
/// A failed handshake is an error here; with `prefer`, the login retries without TLS.
pub async fn connect_backend(
    mut stream: TcpStream,
    cfg: &TargetTls,
    default_name: &str,
) -> Result<(BackendStream, Option<ChannelBinding>), NegotiationError> {
    if cfg.mode == BackendTls::Disable {
        return Ok((MaybeTls::Plain(stream), None));
    }
    // Settings errors first: they say more than whatever the server would answer.
    let connector = Connector::new(cfg, default_name, &[ALPN_POSTGRESQL])?;

    stream
        .write_all(&SSL_REQUEST)
        .await
        .map_err(|error| TlsError::Io {
            op: "send SSLRequest to the server",
            error,
        })?;
    let mut answer = [0u8; 1];
    stream
        .read_exact(&mut answer)
        .await
        .map_err(|error| TlsError::Io {
            op: "read the server's answer to SSLRequest",
            error,
        })?;
    match answer {
        [b'S'] => {}
        [b'N'] if cfg.mode == BackendTls::Prefer => return Ok((MaybeTls::Plain(stream), None)),
        [b'N'] => return Err(NegotiationError::Refused),
        [other] => return Err(NegotiationError::UnexpectedAnswer(other)),
    }

    let (tls, binding) = connector.connect(stream).await?;
    Ok((MaybeTls::Tls(Box::new(tls)), binding))
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddr};
    use tokio::net::TcpListener;

    /// A fake server: checks it got an `SSLRequest`, then runs `then` on the socket.
    async fn fake_server<F, Fut>(then: F) -> (SocketAddr, tokio::task::JoinHandle<()>)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut request = [0; 8];
            tcp.read_exact(&mut request).await.unwrap();
            assert_eq!(request, SSL_REQUEST);
            then(tcp).await;
        });
        (addr, task)
    }

    /// A fake server that answers `answer` in one write, then sends nothing more.
    async fn answering(answer: &'static [u8]) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        fake_server(move |mut tcp| async move {
            tcp.write_all(answer).await.unwrap();
            tcp.shutdown().await.unwrap();
            let _ = tcp.read(&mut [0; 64]).await; // until the client is done
        })
        .await
    }

    fn mode(mode: BackendTls) -> TargetTls {
        TargetTls {
            mode,
            ..TargetTls::default()
        }
    }

    async fn connect(
        addr: SocketAddr,
        cfg: &TargetTls,
    ) -> Result<(BackendStream, Option<ChannelBinding>), NegotiationError> {
        let tcp = TcpStream::connect(addr).await.unwrap();
        connect_backend(tcp, cfg, "127.0.0.1").await
    }

    #[tokio::test]
    async fn disable_sends_nothing() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let (mut stream, binding) = connect_backend(tcp, &mode(BackendTls::Disable), "x")
            .await
            .unwrap();
        assert!(!stream.is_tls() && binding.is_none());
        stream.write_all(b"startup").await.unwrap();
        let mut got = [0; 7];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"startup");
    }

    /// Only the answer byte is consumed: what follows stays for the next reader.
    #[tokio::test]
    async fn prefer_falls_back_to_plaintext_on_n() {
        let (addr, server) = answering(b"Nrest").await;
        let (mut stream, binding) = connect(addr, &mode(BackendTls::Prefer)).await.unwrap();
        assert!(!stream.is_tls() && binding.is_none());
        let mut rest = [0; 4];
        stream.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"rest");
        drop(stream);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn require_and_verify_refuse_plaintext() {
        for tls in [
            BackendTls::Require,
            BackendTls::VerifyCa,
            BackendTls::VerifyFull,
        ] {
            let (addr, _server) = answering(b"N").await;
            let error = connect(addr, &mode(tls)).await.err().unwrap();
            assert!(
                matches!(error, NegotiationError::Refused),
                "{tls:?}: {error}"
            );
            assert!(error.to_string().contains("server does not support TLS"));
        }
    }

    #[tokio::test]
    async fn other_answers_are_errors() {
        let (addr, _server) = answering(b"E").await;
        let error = connect(addr, &mode(BackendTls::Prefer))
            .await
            .err()
            .unwrap();
        assert!(
            matches!(error, NegotiationError::UnexpectedAnswer(b'E')),
            "{error}"
        );

        let (addr, _server) = answering(b"").await; // closes without answering
        let error = connect(addr, &mode(BackendTls::Prefer))
            .await
            .err()
            .unwrap();
        assert!(
            matches!(error, NegotiationError::Tls(TlsError::Io { .. })),
            "{error}"
        );
    }

    /// CVE-2021-23222: plaintext sent right after `S` must not reach the caller; the
    /// handshake reads it as TLS and fails.
    #[tokio::test]
    async fn plaintext_injected_after_s_fails_the_handshake() {
        let (addr, _server) = answering(b"SR\0\0\0\x08\0\0\0\0Z\0\0\0\x05I").await;
        let error = connect(addr, &mode(BackendTls::Require))
            .await
            .err()
            .unwrap();
        assert!(
            matches!(error, NegotiationError::Tls(TlsError::Handshake { .. })),
            "{error}"
        );
    }

    /// After `S`, the handshake runs with the proxy's own kind of certificate, offering
    /// `postgresql` by ALPN, and the stream carries bytes both ways.
    #[tokio::test]
    async fn s_starts_the_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let identity = server_identity(None, None, dir.path()).unwrap();
        assert!(dir.path().join("pg-proxy.crt").exists());
        let expected = identity.channel_binding.clone();
        let (addr, _server) = fake_server(move |mut tcp| async move {
            tcp.write_all(b"S").await.unwrap();
            let mut stream = accept_client(tcp, identity.config).await.unwrap();
            let MaybeTls::Tls(tls) = &stream else {
                unreachable!("accept_client returns TLS")
            };
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(ALPN_POSTGRESQL));
            let mut byte = [0; 1];
            stream.read_exact(&mut byte).await.unwrap();
            stream.write_all(&byte).await.unwrap();
        })
        .await;
        let (mut stream, binding) = connect(addr, &mode(BackendTls::Require)).await.unwrap();
        assert!(stream.is_tls());
        assert!(binding.is_some());
        assert_eq!(binding, expected);
        stream.write_all(b"x").await.unwrap();
        let mut echo = [0; 1];
        stream.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"x");
    }

    #[tokio::test]
    async fn settings_errors_come_before_talking_to_the_server() {
        let missing = TargetTls {
            mode: BackendTls::VerifyFull,
            ca_file: Some("/nonexistent/ca.pem".into()),
            server_name: None,
        };
        // The listener never accepts: an SSLRequest would sit unread, not fail.
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let error = connect_backend(tcp, &missing, "db").await.err().unwrap();
        assert!(
            matches!(error, NegotiationError::Tls(TlsError::CaFile { .. })),
            "{error}"
        );
        assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");
    }
}
