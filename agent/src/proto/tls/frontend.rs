//! The client leg (client → Portcullis): the proxy's certificate and the TLS accept.

use super::{ChannelBinding, provider};
use anyhow::{Context, bail};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use std::{
    fs,
    io::{self, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
};
use tokio::io::{AsyncRead, AsyncWrite};

/// The names the generated certificate is valid for.
const GENERATED_NAMES: [&str; 4] = ["portcullis", "localhost", "127.0.0.1", "::1"];

/// The proxy's TLS identity toward clients.
#[derive(Debug, Clone)]
pub struct ServerIdentity {
    pub config: Arc<ServerConfig>,
    /// What SCRAM-SHA-256-PLUS on the client leg binds to; `None` when the certificate's
    /// signature algorithm has no usable hash (then offer only SCRAM-SHA-256).
    pub channel_binding: Option<ChannelBinding>,
}

/// Where the self-signed certificate is kept when the config names none: one per
/// protocol, so each keeps its own files.
#[derive(Debug, Clone, Copy)]
pub struct Generated<'a> {
    /// The directory holding it (the daemon's state directory), created on demand.
    pub dir: &'a Path,
    /// The file names without extension: `{stem}.crt`, and `{stem}.key` (mode 0600).
    pub stem: &'a str,
    /// Whom it serves, for the log line when it is made ("PostgreSQL clients").
    pub clients: &'a str,
}

impl Generated<'_> {
    /// The certificate file (PEM), which is also the CA a client can trust.
    #[must_use]
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(format!("{}.crt", self.stem))
    }

    /// The private key file (PEM).
    #[must_use]
    pub fn key_path(&self) -> PathBuf {
        self.dir.join(format!("{}.key", self.stem))
    }
}

/// The rustls config for the client leg. See [`server_identity`].
pub fn server_config(
    cert: Option<&Path>,
    key: Option<&Path>,
    generated: &Generated<'_>,
    alpn: &[&[u8]],
) -> anyhow::Result<Arc<ServerConfig>> {
    server_identity(cert, key, generated, alpn).map(|identity| identity.config)
}

/// The proxy's certificate, key and channel binding for the client leg, with a rustls
/// config that offers `alpn` (most preferred first; a client offering none of them is
/// refused, one offering no ALPN at all is accepted).
///
/// With `cert` and `key`, loads those PEM files (the cert file may hold a chain, leaf
/// first). With neither, uses the `generated` certificate, making a self-signed one for
/// `portcullis`, `localhost`, `127.0.0.1` and `::1` the first time.
pub fn server_identity(
    cert: Option<&Path>,
    key: Option<&Path>,
    generated: &Generated<'_>,
    alpn: &[&[u8]],
) -> anyhow::Result<ServerIdentity> {
    let (chain, key) = match (cert, key) {
        (Some(cert), Some(key)) => (load_chain(cert)?, load_key(key)?),
        (None, None) => load_or_generate(generated)?,
        (Some(cert), None) => bail!(
            "TLS certificate {} is set but its key is not; set both, or neither to use a \
             generated certificate",
            cert.display()
        ),
        (None, Some(key)) => bail!(
            "TLS key {} is set but its certificate is not; set both, or neither to use a \
             generated certificate",
            key.display()
        ),
    };
    let channel_binding = chain
        .first()
        .and_then(|leaf| ChannelBinding::from_certificate(leaf));
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("the TLS provider supports no safe protocol version")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the TLS certificate and key do not form a usable pair; check that the key belongs to the certificate")?;
    config.alpn_protocols = alpn.iter().map(|name| name.to_vec()).collect();
    Ok(ServerIdentity {
        config: Arc::new(config),
        channel_binding,
    })
}

/// Runs the TLS handshake on a client's connection, as a server with `config`.
///
/// The caller must not have read past whatever preceded the handshake in its protocol
/// (for PostgreSQL, the 8-byte `SSLRequest`): bytes a client sends before the handshake
/// must be read by TLS, never taken as protocol (CVE-2021-23214).
pub async fn accept<S>(
    stream: S,
    config: Arc<ServerConfig>,
) -> io::Result<tokio_rustls::server::TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio_rustls::TlsAcceptor::from(config).accept(stream).await
}

/// The certificate chain in the PEM file `path`.
fn load_chain(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .with_context(|| format!("cannot read TLS certificate {}", path.display()))?;
    if chain.is_empty() {
        bail!(
            "TLS certificate {} holds no CERTIFICATE block; give a PEM certificate file",
            path.display()
        );
    }
    Ok(chain)
}

/// The private key in the PEM file `path`. Errors name the file but never quote it.
fn load_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|error| {
        let reason = match error {
            rustls_pki_types::pem::Error::Io(error) => error.to_string(),
            rustls_pki_types::pem::Error::NoItemsFound => "no private key in it".into(),
            // Other variants can quote the file's lines: say only what went wrong.
            _ => "not a PEM private key (PKCS#8, PKCS#1 or SEC1)".into(),
        };
        anyhow::anyhow!("cannot read TLS key {}: {reason}", path.display())
    })
}

/// The generated certificate, made and saved on first use.
fn load_or_generate(
    place: &Generated<'_>,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let (cert_path, key_path) = (place.cert_path(), place.key_path());
    let state_dir = place.dir;
    // The certificate is written last, so its presence means both files are complete.
    if cert_path.exists() && key_path.exists() {
        if let Ok(meta) = fs::metadata(&key_path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(path = %key_path.display(), "TLS key is readable by others; chmod 600 it");
        }
        let hint = || {
            format!(
                "the generated TLS certificate in {dir} is unusable; remove {stem}.crt and \
                 {stem}.key there to generate a new one",
                dir = state_dir.display(),
                stem = place.stem,
            )
        };
        let chain = load_chain(&cert_path).with_context(hint)?;
        let key = load_key(&key_path).with_context(hint)?;
        return Ok((chain, key));
    }

    let key = rcgen::KeyPair::generate().context("cannot generate a TLS key")?;
    let mut params = rcgen::CertificateParams::new(GENERATED_NAMES.map(String::from).to_vec())
        .context("invalid names for the generated certificate")?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "portcullis");
    let cert = params
        .self_signed(&key)
        .context("cannot sign the generated TLS certificate")?;

    fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
    write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&cert_path, cert.pem().as_bytes(), 0o644)?;
    tracing::info!(
        path = %cert_path.display(),
        "Generated a self-signed TLS certificate for {}",
        place.clients
    );
    let key = PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|reason| anyhow::anyhow!("generated TLS key: {reason}"))?;
    Ok((vec![cert.der().clone()], key))
}

/// Writes `path` through a temp file and a rename, so it is never seen half-written and
/// is created with `mode` (not the umask's default) before any byte lands in it.
fn write_new(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = Path::new(&tmp);
    let context = || format!("cannot write {}", path.display());
    match fs::remove_file(tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e).with_context(context),
        _ => {}
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)
        .with_context(context)?;
    file.write_all(data)
        .and_then(|()| file.sync_all())
        .with_context(context)?;
    fs::rename(tmp, path).with_context(context)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpStream,
    };

    const ALPN: &[u8] = b"test/1";

    fn place(dir: &Path) -> Generated<'_> {
        Generated {
            dir,
            stem: "proxy",
            clients: "tests",
        }
    }

    fn config(
        cert: Option<&Path>,
        key: Option<&Path>,
        dir: &Path,
    ) -> anyhow::Result<Arc<ServerConfig>> {
        server_config(cert, key, &place(dir), &[ALPN])
    }

    #[test]
    fn generates_persists_and_reuses_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state"); // created on demand
        let first = server_identity(None, None, &place(&state), &[]).unwrap();
        let key_mode = fs::metadata(state.join("proxy.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o600);
        let cert_pem = fs::read(state.join("proxy.crt")).unwrap();

        let second = server_identity(None, None, &place(&state), &[]).unwrap();
        assert_eq!(
            fs::read(state.join("proxy.crt")).unwrap(),
            cert_pem,
            "rewritten"
        );
        // Same certificate, so same binding (ECDSA P-256 with SHA-256: 32 bytes).
        let binding = first.channel_binding.unwrap();
        assert_eq!(binding.as_bytes().len(), 32);
        assert_eq!(second.channel_binding, Some(binding));
        let names: Vec<_> = fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}"); // no temp files left
    }

    #[test]
    fn loads_given_pem_files() {
        let dir = tempfile::tempdir().unwrap();
        config(None, None, dir.path()).unwrap();
        let generated = place(dir.path());
        let (cert, key) = (generated.cert_path(), generated.key_path());
        config(Some(&cert), Some(&key), Path::new("/nonexistent")).unwrap();
    }

    #[test]
    fn cert_and_key_must_be_given_together_and_match() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        config(None, None, a.path()).unwrap();
        config(None, None, b.path()).unwrap();
        let cert = place(a.path()).cert_path();
        let key = place(a.path()).key_path();
        let other_key = place(b.path()).key_path();

        let only_cert = config(Some(&cert), None, a.path()).unwrap_err();
        assert!(
            format!("{only_cert:#}").contains("its key is not"),
            "{only_cert:#}"
        );
        let only_key = config(None, Some(&key), a.path()).unwrap_err();
        assert!(
            format!("{only_key:#}").contains("its certificate is not"),
            "{only_key:#}"
        );

        let mismatch = config(Some(&cert), Some(&other_key), a.path()).unwrap_err();
        assert!(
            format!("{mismatch:#}").contains("do not form a usable pair"),
            "{mismatch:#}"
        );
    }

    #[test]
    fn key_errors_name_the_file_but_not_its_contents() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("bad.key");
        fs::write(&key, "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n").unwrap(); // no END line
        let error = format!("{:#}", load_key(&key).unwrap_err());
        assert!(error.contains("bad.key"), "{error}");
        assert!(
            !error.contains("c2VjcmV0") && !error.contains("BEGIN"),
            "{error}"
        );

        let missing = format!("{:#}", load_key(&dir.path().join("none.key")).unwrap_err());
        assert!(missing.contains("none.key"), "{missing}");
        let cert = format!("{:#}", load_chain(&key).unwrap_err());
        assert!(cert.contains("bad.key"), "{cert}");
    }

    /// A rustls client trusting the generated certificate completes a handshake with
    /// `accept` and exchanges bytes both ways, agreeing on the server's ALPN.
    #[tokio::test]
    async fn accepts_a_tls_client() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(None, None, dir.path()).unwrap();
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut stream = accept(tcp, config).await.unwrap();
            assert_eq!(stream.get_ref().0.local_addr().unwrap(), addr);
            let mut ping = [0; 4];
            stream.read_exact(&mut ping).await.unwrap();
            assert_eq!(&ping, b"ping");
            stream.write_all(b"pong").await.unwrap();
            stream.shutdown().await.unwrap();
        });

        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(load_chain(&place(dir.path()).cert_path()).unwrap());
        let mut client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"other".to_vec(), ALPN.to_vec()];
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(name, tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(ALPN));
        tls.write_all(b"ping").await.unwrap();
        let mut pong = Vec::new();
        tls.read_to_end(&mut pong).await.unwrap();
        assert_eq!(pong, b"pong");
        server.await.unwrap();
    }
}
