//! The backend leg (Portcullis → PostgreSQL): `SSLRequest` and the TLS handshake, per
//! the target's mode.

use super::{ALPN_POSTGRESQL, BackendStream, ChannelBinding, MaybeTls, TlsError, provider};
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        verify_server_cert_signed_by_trust_anchor,
    },
    crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature},
    server::ParsedCertificate,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};
use std::{io, path::PathBuf, sync::Arc};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// `SSLRequest`: length 8, then the magic code 80877103 (1234 << 16 | 5679).
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// Whether and how to use TLS toward a target's server, like libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendTls {
    /// Plaintext; no `SSLRequest` is sent.
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

/// TLS settings for one target's server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendTlsConfig {
    pub mode: BackendTls,
    /// PEM file of the CAs to trust with `verify-ca` and `verify-full`; the webpki
    /// (Mozilla) roots if
    /// unset. Read on each connection, so a replaced file takes effect without restart.
    /// Other modes ignore it.
    pub ca_file: Option<PathBuf>,
    /// The name the certificate must hold (DNS name or IP address), when it is not the
    /// address the proxy connects to; also sent as SNI.
    pub server_name: Option<String>,
}

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
    cfg: &BackendTlsConfig,
    default_name: &str,
) -> Result<(BackendStream, Option<ChannelBinding>), TlsError> {
    if cfg.mode == BackendTls::Disable {
        return Ok((MaybeTls::Plain(stream), None));
    }
    // Settings errors first: they say more than whatever the server would answer.
    let config = client_config(cfg)?;
    let name_text = cfg.server_name.as_deref().unwrap_or(default_name);
    let name = ServerName::try_from(name_text.to_owned())
        .map_err(|_| TlsError::InvalidServerName(name_text.to_owned()))?;

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
        [b'N'] => return Err(TlsError::Refused),
        [other] => return Err(TlsError::UnexpectedAnswer(other)),
    }

    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(handshake_error)?;
    let binding = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(<[_]>::first)
        .and_then(|leaf| ChannelBinding::from_certificate(leaf));
    Ok((MaybeTls::Tls(Box::new(tls)), binding))
}

/// The rustls client config for `cfg`'s mode (not `disable`).
fn client_config(cfg: &BackendTlsConfig) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Handshake {
            reason: e.to_string(),
        })?;
    let mut config = if cfg.mode == BackendTls::VerifyFull {
        builder
            .with_root_certificates(roots(cfg.ca_file.as_ref())?)
            .with_no_client_auth()
    } else {
        let verifier = NameUnchecked {
            roots: match cfg.mode {
                BackendTls::VerifyCa => Some(roots(cfg.ca_file.as_ref())?),
                _ => None,
            },
            algorithms: provider.signature_verification_algorithms,
        };
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth()
    };
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(Arc::new(config))
}

/// The CAs in `ca_file`, or the webpki roots.
fn roots(ca_file: Option<&PathBuf>) -> Result<RootCertStore, TlsError> {
    let Some(path) = ca_file else {
        return Ok(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        });
    };
    let ca_error = |reason: String| TlsError::CaFile {
        path: path.clone(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| ca_error(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(ca_error("no usable CERTIFICATE block".into()));
    }
    Ok(roots)
}

/// Sorts a failed handshake into verification, protocol and I/O errors.
fn handshake_error(error: io::Error) -> TlsError {
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(reason)) => TlsError::Verification {
            reason: reason.to_string(),
        },
        Some(other) => TlsError::Handshake {
            reason: other.to_string(),
        },
        None => TlsError::Io {
            op: "complete the TLS handshake",
            error,
        },
    }
}

/// Never checks the name in the certificate: with `roots`, the chain must lead to one of
/// them (`verify-ca`); without, any certificate is accepted (`prefer`, `require`).
/// Either way the server must sign the handshake with the certificate's key, so the
/// channel binding describes the real peer.
#[derive(Debug)]
struct NameUnchecked {
    roots: Option<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NameUnchecked {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = ParsedCertificate::try_from(end_entity)?;
            verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::proto::postgres::tls::{CERT_FILE, accept_client, server_identity};
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

    fn mode(mode: BackendTls) -> BackendTlsConfig {
        BackendTlsConfig {
            mode,
            ..BackendTlsConfig::default()
        }
    }

    async fn connect(
        addr: SocketAddr,
        cfg: &BackendTlsConfig,
    ) -> Result<(BackendStream, Option<ChannelBinding>), TlsError> {
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
            assert!(matches!(error, TlsError::Refused), "{tls:?}: {error}");
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
        assert!(matches!(error, TlsError::UnexpectedAnswer(b'E')), "{error}");

        let (addr, _server) = answering(b"").await; // closes without answering
        let error = connect(addr, &mode(BackendTls::Prefer))
            .await
            .err()
            .unwrap();
        assert!(matches!(error, TlsError::Io { .. }), "{error}");
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
        assert!(matches!(error, TlsError::Handshake { .. }), "{error}");
    }

    /// A fake server that answers `S` and accepts TLS with a generated certificate.
    async fn tls_server() -> (SocketAddr, tempfile::TempDir, Option<ChannelBinding>) {
        let dir = tempfile::tempdir().unwrap();
        let identity = server_identity(None, None, dir.path()).unwrap();
        let (addr, _server) = fake_server(move |mut tcp| async move {
            tcp.write_all(b"S").await.unwrap();
            if let Ok(mut stream) = accept_client(tcp, identity.config).await {
                let mut byte = [0; 1];
                if stream.read_exact(&mut byte).await.is_ok() {
                    stream.write_all(&byte).await.unwrap();
                }
            }
        })
        .await;
        (addr, dir, identity.channel_binding)
    }

    #[tokio::test]
    async fn require_encrypts_without_verifying() {
        let (addr, _dir, expected) = tls_server().await;
        let (mut stream, binding) = connect(addr, &mode(BackendTls::Require)).await.unwrap();
        assert!(stream.is_tls());
        assert_eq!(binding, expected);
        assert!(binding.is_some());
        stream.write_all(b"x").await.unwrap();
        let mut echo = [0; 1];
        stream.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"x");
    }

    #[tokio::test]
    async fn verify_full_checks_the_ca_and_the_name() {
        let (addr, dir, _) = tls_server().await;
        let trusted = BackendTlsConfig {
            mode: BackendTls::VerifyFull,
            ca_file: Some(dir.path().join(CERT_FILE)),
            server_name: None,
        };
        let (stream, _) = connect(addr, &trusted).await.unwrap();
        assert!(stream.is_tls());

        let (addr, dir, _) = tls_server().await;
        let wrong_name = BackendTlsConfig {
            server_name: Some("db.example.com".into()),
            ca_file: Some(dir.path().join(CERT_FILE)),
            ..trusted.clone()
        };
        let error = connect(addr, &wrong_name).await.err().unwrap();
        assert!(matches!(error, TlsError::Verification { .. }), "{error}");

        refused_as_unverified(&trusted).await;
    }

    /// Another server's certificate is not `cfg`'s CA, nor are the webpki roots.
    async fn refused_as_unverified(cfg: &BackendTlsConfig) {
        let (addr, _other_dir, _) = tls_server().await;
        let error = connect(addr, cfg).await.err().unwrap();
        assert!(matches!(error, TlsError::Verification { .. }), "{error}");
        let (addr, _dir, _) = tls_server().await;
        let error = connect(addr, &mode(cfg.mode)).await.err().unwrap();
        assert!(matches!(error, TlsError::Verification { .. }), "{error}");
    }

    #[tokio::test]
    async fn verify_ca_checks_the_ca_but_not_the_name() {
        let (addr, dir, expected) = tls_server().await;
        let other_name = BackendTlsConfig {
            mode: BackendTls::VerifyCa,
            ca_file: Some(dir.path().join(CERT_FILE)),
            server_name: Some("db.example.com".into()),
        };
        let (stream, binding) = connect(addr, &other_name).await.unwrap();
        assert!(stream.is_tls());
        assert_eq!(binding, expected);
        refused_as_unverified(&other_name).await;
    }

    #[tokio::test]
    async fn settings_errors_come_before_talking_to_the_server() {
        let missing = BackendTlsConfig {
            mode: BackendTls::VerifyFull,
            ca_file: Some("/nonexistent/ca.pem".into()),
            server_name: None,
        };
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let error = connect_backend(tcp, &missing, "db").await.err().unwrap();
        assert!(matches!(error, TlsError::CaFile { .. }), "{error}");
        assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");

        let tcp = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let error = connect_backend(tcp, &mode(BackendTls::Require), "not a name!")
            .await
            .err()
            .unwrap();
        assert!(matches!(error, TlsError::InvalidServerName(_)), "{error}");
    }
}
