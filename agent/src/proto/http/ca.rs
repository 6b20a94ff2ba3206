//! The proxy's certificate authority for HTTPS clients: it signs a leaf certificate
//! for each host name a client asks for (SNI, or the address it dialled when it sends
//! none), minted on first use and cached. The CA is generated under `state_dir` the
//! first time (or loaded from `[http] ca_cert`/`ca_key`) and installed into Debian's
//! trust store (`update-ca-certificates`), so unconfigured clients trust it.

use super::HttpError;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::Digest as _;
use std::{
    fs,
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

/// Leaf certificates (as ready rustls configs) kept at once.
const LEAF_CACHE: usize = 4096;
/// What clients are offered over TLS, most preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The CA and the leaf configs it has signed.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    /// One key for every leaf: minting stays cheap; the CA's key never leaves here.
    leaf_key: KeyPair,
    /// The CA certificate, PEM: what the trust store gets.
    pub ca_pem: String,
    leaves: quick_cache::sync::Cache<String, Arc<ServerConfig>>,
}

impl Authority {
    /// The CA at `cert`/`key`, or the one generated under `state_dir` (made now if
    /// missing).
    pub fn load_or_generate(
        cert: Option<&Path>,
        key: Option<&Path>,
        state_dir: &Path,
    ) -> Result<Self, HttpError> {
        let (cert_pem, key_pem) = match (cert, key) {
            (Some(cert), Some(key)) => (read(cert)?, read(key)?),
            _ => generated(state_dir)?,
        };
        let ca_error = |reason: String| HttpError::Ca { reason };
        let ca_key = KeyPair::from_pem(&key_pem)
            .map_err(|e| ca_error(format!("the CA key is not a usable PEM private key: {e}")))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, ca_key)
            .map_err(|e| ca_error(format!("the CA certificate cannot be read: {e}")))?;
        let leaf_key =
            KeyPair::generate().map_err(|e| ca_error(format!("cannot make a leaf key: {e}")))?;
        Ok(Self {
            issuer,
            leaf_key,
            ca_pem: cert_pem,
            leaves: quick_cache::sync::Cache::new(LEAF_CACHE),
        })
    }

    /// The TLS config presenting a certificate for `name` (a DNS name or an IP
    /// address), minted now unless cached.
    pub fn config_for(&self, name: &str) -> Result<Arc<ServerConfig>, HttpError> {
        self.leaves
            .get_or_insert_with(name, || self.mint(name).map(Arc::new))
    }

    fn mint(&self, name: &str) -> Result<ServerConfig, HttpError> {
        let error = |reason: String| HttpError::Ca { reason };
        let mut params = CertificateParams::default();
        let san = if let Ok(ip) = name.parse() {
            SanType::IpAddress(ip)
        } else {
            let not_dns = || error(format!("{name:?} is not a DNS name"));
            rustls_pki_types::DnsName::try_from(name).map_err(|_| not_dns())?;
            SanType::DnsName(name.to_owned().try_into().map_err(|_| not_dns())?)
        };
        params.subject_alt_names = vec![san];
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let year = this_year();
        params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
        params.not_after = rcgen::date_time_ymd(year + 1, 1, 1);
        let leaf = params
            .signed_by(&self.leaf_key, &self.issuer)
            .map_err(|e| error(format!("cannot sign a certificate for {name}: {e}")))?;
        let key = PrivateKeyDer::try_from(self.leaf_key.serialize_der())
            .map_err(|e| error(format!("leaf key: {e}")))?;
        let mut config = ServerConfig::builder_with_provider(crate::proto::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| error(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(leaf.der().to_vec())], key)
            .map_err(|e| error(e.to_string()))?;
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

/// Removes this config's CA from the trust store (`daemon --release`): the CA at
/// `cert`, or the generated one under `state_dir`. Returns the file removed, if any.
pub fn uninstall(
    cert: Option<&Path>,
    state_dir: &Path,
    trust_dir: &Path,
) -> Result<Option<PathBuf>, HttpError> {
    let cert = cert.map_or_else(|| state_dir.join("http-ca.crt"), Path::to_owned);
    let Ok(pem) = fs::read_to_string(&cert) else {
        return Ok(None);
    };
    let removed = super::trust::remove(trust_dir, &pem)?;
    if removed.is_some() {
        super::trust::refresh_trust_store()?;
    }
    Ok(removed)
}

fn read(path: &Path) -> Result<String, HttpError> {
    fs::read_to_string(path).map_err(|source| HttpError::Io {
        op: "read",
        path: path.to_owned(),
        source,
    })
}

/// The generated CA's PEM certificate and key, made on first use.
fn generated(state_dir: &Path) -> Result<(String, String), HttpError> {
    let (cert, key) = (state_dir.join("http-ca.crt"), state_dir.join("http-ca.key"));
    if cert.exists() && key.exists() {
        return Ok((read(&cert)?, read(&key)?));
    }
    let error = |reason: String| HttpError::Ca { reason };
    let ca_key = KeyPair::generate().map_err(|e| error(format!("cannot make the CA key: {e}")))?;
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A name of its own per key: two CAs of one name in the trust store (a daemon
    // killed before `--release`, then a new one) make OpenSSL check a leaf against the
    // wrong key.
    let id: String = sha2::Sha256::digest(ca_key.public_key_raw())
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect();
    params.distinguished_name.push(
        DnType::CommonName,
        format!("Portcullis HTTPS CA ({host}, {id})"),
    );
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Portcullis");
    let year = this_year();
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
    let ca = params
        .self_signed(&ca_key)
        .map_err(|e| error(format!("cannot sign the CA: {e}")))?;
    let io = |op: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| HttpError::Io { op, path, source }
    };
    fs::create_dir_all(state_dir).map_err(io("create", state_dir))?;
    write_new(&key, ca_key.serialize_pem().as_bytes(), 0o600).map_err(io("write", &key))?;
    write_new(&cert, ca.pem().as_bytes(), 0o644).map_err(io("write", &cert))?;
    tracing::info!(path = %cert.display(), "Generated the HTTPS CA");
    Ok((ca.pem(), ca_key.serialize_pem()))
}

/// Writes `path` through a temp file and a rename, created with `mode`.
fn write_new(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(data)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

/// The current year (UTC), for certificate validity.
fn this_year() -> i32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Mean Gregorian year; off by a day at worst, which the ±1 year margins absorb.
    1970 + i32::try_from(secs / 31_556_952).unwrap_or(0)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn generates_once_and_mints_cached_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let first = Authority::load_or_generate(None, None, dir.path()).unwrap();
        let again = Authority::load_or_generate(None, None, dir.path()).unwrap();
        assert_eq!(first.ca_pem, again.ca_pem, "the CA is kept, not remade");
        let a = first.config_for("api.example.test").unwrap();
        let b = first.config_for("api.example.test").unwrap();
        assert!(Arc::ptr_eq(&a, &b), "cached per name");
        first.config_for("127.0.0.6").unwrap();
        assert!(first.config_for("not a name").is_err());
    }
}
