//! Logging in to a target with a user certificate (`user_ca_key_file` on the
//! target): per session a fresh Ed25519 key and a certificate for it signed by the
//! target's user CA, valid for [`LIFETIME`], whose principal is the login and whose
//! key id is the session id, so the server's log names the Portcullis session.
//! Neither the CA nor the key leaves the proxy.

use super::SshError;
use russh::keys::{
    Certificate, PrivateKey,
    ssh_key::{certificate, private::Ed25519Keypair},
};
use std::{
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// How long a session's certificate is valid: only logging in uses it.
pub const LIFETIME: Duration = Duration::from_mins(5);
/// Clock skew tolerated on the server's side.
const BACKDATE: Duration = Duration::from_mins(1);
/// What the certificate permits, as `ssh-keygen` grants by default; the proxy
/// still decides each action itself.
const EXTENSIONS: [&str; 5] = [
    "permit-X11-forwarding",
    "permit-agent-forwarding",
    "permit-port-forwarding",
    "permit-pty",
    "permit-user-rc",
];

/// A fresh key and its certificate for `login`, signed by the CA at `ca_path`.
pub fn issue(
    ca_path: &Path,
    login: &str,
    session: &str,
) -> Result<(PrivateKey, Certificate), SshError> {
    let ca = russh::keys::load_secret_key(ca_path, None).map_err(|e| {
        SshError::Key(format!(
            "cannot read the target's user_ca_key_file {}: {e}",
            ca_path.display()
        ))
    })?;
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&random()?));
    let now = SystemTime::now();
    let after = now.checked_sub(BACKDATE).unwrap_or(UNIX_EPOCH);
    let mut builder = certificate::Builder::new_with_validity_times(
        random()?.to_vec(),
        key.public_key().key_data().clone(),
        after,
        now + LIFETIME,
    )
    .map_err(SshError::key)?;
    builder
        .cert_type(certificate::CertType::User)
        .and_then(|b| b.key_id(session))
        .and_then(|b| b.valid_principal(login))
        .map_err(SshError::key)?;
    for name in EXTENSIONS {
        builder.extension(name, "").map_err(SshError::key)?;
    }
    let cert = builder.sign(&ca).map_err(SshError::key)?;
    Ok((key, cert))
}

fn random() -> Result<[u8; 32], SshError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| SshError::Key(format!("no randomness: {e}")))?;
    Ok(bytes)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use russh::keys::ssh_key::LineEnding;

    #[test]
    fn the_certificate_names_the_login_and_the_session_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let ca = PrivateKey::from(Ed25519Keypair::from_seed(&[7; 32]));
        let path = dir.path().join("ca");
        std::fs::write(&path, ca.to_openssh(LineEnding::LF).unwrap().as_bytes()).unwrap();
        let (key, cert) = issue(&path, "deploy", "s-42").unwrap();
        assert_eq!(cert.valid_principals(), ["deploy"]);
        assert_eq!(cert.key_id(), "s-42");
        assert_eq!(cert.cert_type(), certificate::CertType::User);
        assert_eq!(cert.public_key(), key.public_key().key_data());
        let fp = ca.public_key().fingerprint(russh::keys::HashAlg::default());
        cert.validate(&[fp]).unwrap();
    }
}
