//! The backend leg (Portcullis → target): the rustls client config for a target's TLS
//! settings, and the handshake.

use super::{ChannelBinding, TlsError, provider};
use crate::policy::{BackendTls, TargetTls};
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
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;

/// One TLS connection to a target, planned: the rustls config and the name the
/// certificate is checked against. Building it checks the settings, so a protocol that
/// negotiates TLS first (PostgreSQL's `SSLRequest`) can report a bad `tls_ca` or
/// `server_name` before it sends the server anything.
#[derive(Debug, Clone)]
pub struct Connector {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl Connector {
    /// Plans a connection per `settings`, offering `alpn` (most preferred first).
    ///
    /// `default_name` is the host or IP the proxy connects to: the certificate is
    /// checked against it (with `verify-full`) and it is sent as SNI, unless
    /// `settings.server_name` is set. The CA file is read here, on each call, so a
    /// replaced file takes effect without a restart.
    pub fn new(settings: &TargetTls, default_name: &str, alpn: &[&[u8]]) -> Result<Self, TlsError> {
        let config = client_config(settings, alpn)?;
        let name_text = settings.server_name.as_deref().unwrap_or(default_name);
        let name = ServerName::try_from(name_text.to_owned())
            .map_err(|_| TlsError::InvalidServerName(name_text.to_owned()))?;
        Ok(Self { config, name })
    }

    /// Runs the TLS handshake on `stream`, which must be at the point where the server
    /// expects it (no unread bytes of the server's may precede it).
    ///
    /// Returns the TLS stream and the server certificate's channel binding (`None` when
    /// the certificate's signature algorithm names no usable hash).
    pub async fn connect<S>(
        &self,
        stream: S,
    ) -> Result<(TlsStream<S>, Option<ChannelBinding>), TlsError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let tls = tokio_rustls::TlsConnector::from(Arc::clone(&self.config))
            .connect(self.name.clone(), stream)
            .await
            .map_err(handshake_error)?;
        let binding = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(<[_]>::first)
            .and_then(|leaf| ChannelBinding::from_certificate(leaf));
        Ok((tls, binding))
    }
}

/// Connects TLS over `stream` to a target per `settings`, offering `alpn`: a
/// [`Connector`] and its handshake in one call, for protocols where TLS starts on the
/// first byte (HTTPS). See [`Connector::new`] for `default_name`.
pub async fn connect<S>(
    stream: S,
    settings: &TargetTls,
    default_name: &str,
    alpn: &[&[u8]],
) -> Result<(TlsStream<S>, Option<ChannelBinding>), TlsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    Connector::new(settings, default_name, alpn)?
        .connect(stream)
        .await
}

/// The rustls client config for `settings`, offering `alpn` (most preferred first).
///
/// The mode decides verification only: `verify-full` checks the chain and the name,
/// `verify-ca` the chain, and the other modes (`require`, and `prefer` or `disable` if a
/// caller connects TLS anyway) check neither. Whether to use TLS at all is the caller's
/// decision. In every mode the server must sign the handshake with its certificate's key.
pub fn client_config(settings: &TargetTls, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Handshake {
            reason: e.to_string(),
        })?;
    let mut config = if settings.mode == BackendTls::VerifyFull {
        builder
            .with_root_certificates(roots(settings.ca_file.as_ref())?)
            .with_no_client_auth()
    } else {
        let verifier = NameUnchecked {
            roots: match settings.mode {
                BackendTls::VerifyCa => Some(roots(settings.ca_file.as_ref())?),
                _ => None,
            },
            algorithms: provider.signature_verification_algorithms,
        };
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth()
    };
    config.alpn_protocols = alpn.iter().map(|name| name.to_vec()).collect();
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
    use crate::proto::tls::{Generated, accept, server_identity};
    use std::net::{Ipv4Addr, SocketAddr};
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{TcpListener, TcpStream},
    };

    const ALPN: &[u8] = b"test/1";

    fn mode(mode: BackendTls) -> TargetTls {
        TargetTls {
            mode,
            ..TargetTls::default()
        }
    }

    fn generated(dir: &tempfile::TempDir) -> Generated<'_> {
        Generated {
            dir: dir.path(),
            stem: "proxy",
            clients: "tests",
        }
    }

    /// A TLS server with a generated certificate that echoes one byte; its directory
    /// (holding `proxy.crt`, the CA for verifying it) and its channel binding.
    async fn tls_server() -> (SocketAddr, tempfile::TempDir, Option<ChannelBinding>) {
        let dir = tempfile::tempdir().unwrap();
        let identity = server_identity(None, None, &generated(&dir), &[ALPN]).unwrap();
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = identity.config;
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            if let Ok(mut stream) = accept(tcp, config).await {
                let mut byte = [0; 1];
                if stream.read_exact(&mut byte).await.is_ok() {
                    stream.write_all(&byte).await.unwrap();
                }
            }
        });
        (addr, dir, identity.channel_binding)
    }

    /// The CA that verifies `dir`'s server: its self-signed certificate.
    fn ca(dir: &tempfile::TempDir) -> PathBuf {
        generated(dir).cert_path()
    }

    async fn connect_to(
        addr: SocketAddr,
        settings: &TargetTls,
    ) -> Result<(TlsStream<TcpStream>, Option<ChannelBinding>), TlsError> {
        let tcp = TcpStream::connect(addr).await.unwrap();
        connect(tcp, settings, "127.0.0.1", &[ALPN]).await
    }

    #[tokio::test]
    async fn require_encrypts_without_verifying() {
        let (addr, _dir, expected) = tls_server().await;
        let (mut stream, binding) = connect_to(addr, &mode(BackendTls::Require)).await.unwrap();
        assert_eq!(binding, expected);
        assert!(binding.is_some());
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(ALPN));
        stream.write_all(b"x").await.unwrap();
        let mut echo = [0; 1];
        stream.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"x");
    }

    #[tokio::test]
    async fn verify_full_checks_the_ca_and_the_name() {
        let (addr, dir, _) = tls_server().await;
        let trusted = TargetTls {
            mode: BackendTls::VerifyFull,
            ca_file: Some(ca(&dir)),
            server_name: None,
        };
        connect_to(addr, &trusted).await.unwrap();

        let (addr, dir, _) = tls_server().await;
        let wrong_name = TargetTls {
            server_name: Some("db.example.com".into()),
            ca_file: Some(ca(&dir)),
            ..trusted.clone()
        };
        let error = connect_to(addr, &wrong_name).await.err().unwrap();
        assert!(matches!(error, TlsError::Verification { .. }), "{error}");

        refused_as_unverified(&trusted).await;
    }

    /// Another server's certificate is not `settings`' CA, nor are the webpki roots.
    async fn refused_as_unverified(settings: &TargetTls) {
        let (addr, _other_dir, _) = tls_server().await;
        let error = connect_to(addr, settings).await.err().unwrap();
        assert!(matches!(error, TlsError::Verification { .. }), "{error}");
        let (addr, _dir, _) = tls_server().await;
        let error = connect_to(addr, &mode(settings.mode)).await.err().unwrap();
        assert!(matches!(error, TlsError::Verification { .. }), "{error}");
    }

    #[tokio::test]
    async fn verify_ca_checks_the_ca_but_not_the_name() {
        let (addr, dir, expected) = tls_server().await;
        let other_name = TargetTls {
            mode: BackendTls::VerifyCa,
            ca_file: Some(ca(&dir)),
            server_name: Some("db.example.com".into()),
        };
        let (_stream, binding) = connect_to(addr, &other_name).await.unwrap();
        assert_eq!(binding, expected);
        refused_as_unverified(&other_name).await;
    }

    #[test]
    fn settings_errors_come_from_the_connector() {
        let missing = TargetTls {
            mode: BackendTls::VerifyFull,
            ca_file: Some("/nonexistent/ca.pem".into()),
            server_name: None,
        };
        let error = Connector::new(&missing, "db", &[]).err().unwrap();
        assert!(matches!(error, TlsError::CaFile { .. }), "{error}");
        assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");

        let error = Connector::new(&mode(BackendTls::Require), "not a name!", &[])
            .err()
            .unwrap();
        assert!(matches!(error, TlsError::InvalidServerName(_)), "{error}");
    }

    #[test]
    fn client_config_offers_the_callers_alpn() {
        let config = client_config(&mode(BackendTls::Require), &[b"h2", b"http/1.1"]).unwrap();
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    /// A server that answers in plaintext fails the handshake, and one that hangs up
    /// is an I/O error.
    #[tokio::test]
    async fn non_tls_servers_fail_the_handshake() {
        for (answer, io) in [
            (&b"HTTP/1.1 400 Bad Request\r\n\r\n"[..], false),
            (b"", true),
        ] {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                let (mut tcp, _) = listener.accept().await.unwrap();
                tcp.write_all(answer).await.unwrap();
                tcp.shutdown().await.unwrap();
                let _ = tcp.read(&mut [0; 512]).await;
            });
            let error = connect_to(addr, &mode(BackendTls::Require))
                .await
                .err()
                .unwrap();
            if io {
                assert!(matches!(error, TlsError::Io { .. }), "{error}");
            } else {
                assert!(matches!(error, TlsError::Handshake { .. }), "{error}");
            }
        }
    }
}
