//! How Portcullis presents itself to SSH clients in a target's place: a host CA kept
//! under `state_dir` (or given as `[ssh] host_ca_key`), a host key of its own, a host
//! certificate per target whose principals are the target's names and addresses, and
//! the marked block of `@cert-authority` lines in the system-wide known-hosts file
//! that makes OpenSSH on this host trust those certificates.
//!
//! OpenSSH checks a host certificate only against `@cert-authority` lines, so a user's
//! own `known_hosts` entry for the real server does not make the certificate fail.

use super::SshError;
use crate::{
    config::SshConfig,
    policy::{Policy, Protocol, Target, TargetAddress},
};
use russh::keys::{
    Certificate, PrivateKey,
    ssh_key::{LineEnding, certificate, private::Ed25519Keypair},
};
use std::{
    fmt::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// The first and last lines of the block a daemon owns in the known-hosts file,
/// named by its state directory, so daemons with separate state (tests, several
/// instances) each keep their own block.
fn markers(state_dir: &Path) -> (String, String) {
    let tag = state_dir.display();
    (
        format!("# BEGIN portcullis ssh host CA {tag} (managed by portcullis; do not edit)"),
        format!("# END portcullis ssh host CA {tag}"),
    )
}
/// How long a host certificate is valid; a new one is signed for every session.
const CERT_LIFETIME: Duration = Duration::from_hours(24);
/// Clock skew tolerated on the client's side.
const CERT_BACKDATE: Duration = Duration::from_mins(5);

/// The host CA and host key, loaded (or generated) once at start.
pub struct HostIdentity {
    ca: PrivateKey,
    key: PrivateKey,
    known_hosts_file: PathBuf,
    state_dir: PathBuf,
}

impl HostIdentity {
    /// Reads the CA and host key, generating (and saving, mode 0600) what is missing.
    pub fn load(config: &SshConfig) -> Result<Self, SshError> {
        let dir = config.state_dir.join("ssh");
        std::fs::create_dir_all(&dir).map_err(|source| SshError::Io {
            op: "create the SSH state directory",
            path: dir.clone(),
            source,
        })?;
        let ca = match &config.host_ca_key {
            Some(path) => read_key(path)?,
            None => load_or_generate(&dir.join("host_ca"))?,
        };
        let key = load_or_generate(&dir.join("host_key"))?;
        Ok(Self {
            ca,
            key,
            known_hosts_file: config.known_hosts_file.clone(),
            state_dir: config.state_dir.clone(),
        })
    }

    /// The CA's public key line (`ssh-ed25519 AAAA…`).
    pub fn ca_public(&self) -> Result<String, SshError> {
        self.ca.public_key().to_openssh().map_err(SshError::key)
    }

    /// The keys and certificates to present to a client of `target`: the target's own
    /// host key if it has one, else our host key with a fresh certificate naming it.
    pub fn host_keys(
        &self,
        target: &Target,
    ) -> Result<(Vec<PrivateKey>, Vec<Certificate>), SshError> {
        if let Some(path) = target.ssh.as_ref().and_then(|s| s.host_key_file.as_deref()) {
            return Ok((vec![read_key(path)?], Vec::new()));
        }
        let cert = self.certificate(target)?;
        Ok((vec![self.key.clone()], vec![cert]))
    }

    /// A host certificate for `target`: principals are its name and address hosts.
    fn certificate(&self, target: &Target) -> Result<Certificate, SshError> {
        let now = SystemTime::now();
        let after = now.checked_sub(CERT_BACKDATE).unwrap_or(UNIX_EPOCH);
        let before = now + CERT_LIFETIME;
        let mut nonce = [0u8; 32];
        getrandom::fill(&mut nonce).map_err(|e| SshError::Key(format!("no randomness: {e}")))?;
        let mut builder = certificate::Builder::new_with_validity_times(
            nonce.to_vec(),
            self.key.public_key().key_data().clone(),
            after,
            before,
        )
        .map_err(SshError::key)?;
        builder
            .cert_type(certificate::CertType::Host)
            .and_then(|b| b.key_id(format!("portcullis:{}", target.name)))
            .map_err(SshError::key)?;
        for principal in principals(target) {
            builder.valid_principal(principal).map_err(SshError::key)?;
        }
        builder.sign(&self.ca).map_err(SshError::key)
    }

    /// Writes the marked `@cert-authority` block for the SSH targets of `policy`
    /// (or removes it when there are none), leaving every other line as it was.
    pub fn publish(&self, policy: &Policy) -> Result<(), SshError> {
        let ca = self.ca_public()?;
        let mut block = String::new();
        for target in policy
            .targets()
            .iter()
            .filter(|t| t.protocol == Protocol::Ssh)
        {
            if target
                .ssh
                .as_ref()
                .is_some_and(|s| s.host_key_file.is_some())
            {
                continue;
            }
            let _ = writeln!(
                block,
                "@cert-authority {} {ca} portcullis:{}",
                patterns(target),
                target.name
            );
        }
        rewrite_block(&self.known_hosts_file, &markers(&self.state_dir), &block)
    }
}

/// Removes the marked block from `config`'s known-hosts file (`daemon --release`).
pub fn release(config: &SshConfig) -> Result<(), SshError> {
    rewrite_block(&config.known_hosts_file, &markers(&config.state_dir), "")
}

/// The names a client may use for `target`: its name and each address's host.
fn principals(target: &Target) -> Vec<String> {
    let mut out = vec![target.name.clone()];
    for a in &target.addresses {
        let host = match a {
            TargetAddress::Socket(s) => s.ip().to_string(),
            TargetAddress::Host { host, .. } => host.clone(),
        };
        if !out.contains(&host) {
            out.push(host);
        }
    }
    out
}

/// Known-hosts host patterns for `target` (`[host]:port` off port 22).
fn patterns(target: &Target) -> String {
    let mut out: Vec<String> = Vec::new();
    for a in &target.addresses {
        let port = a.port();
        for host in principals(target) {
            let pattern = if port == 22 {
                host
            } else {
                format!("[{host}]:{port}")
            };
            if !out.contains(&pattern) {
                out.push(pattern);
            }
        }
    }
    out.join(",")
}

/// Replaces the marked block of `path` with `block` (nothing when empty), atomically,
/// under an exclusive lock on `PATH.portcullis-lock`, so daemons that share the file
/// never write over each other's blocks.
fn rewrite_block(
    path: &Path,
    (begin, end): &(String, String),
    block: &str,
) -> Result<(), SshError> {
    let io = |op: &'static str| {
        let path = path.to_owned();
        move |source| SshError::Io { op, path, source }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("create the known-hosts directory"))?;
    }
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path.with_extension("portcullis-lock"))
        .map_err(io("open the lock of"))?;
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, errno)| io("lock")(std::io::Error::from(errno)))?;
    let old = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io("read the known-hosts file")(e)),
    };
    let mut kept = String::with_capacity(old.len());
    let mut inside = false;
    for line in old.lines() {
        if line == begin {
            inside = true;
        } else if line == end {
            inside = false;
        } else if !inside {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    if !block.is_empty() {
        let _ = write!(kept, "{begin}\n{block}{end}\n");
    }
    if kept == old {
        return Ok(());
    }
    let tmp = path.with_extension(format!("portcullis-tmp-{}", std::process::id()));
    std::fs::write(&tmp, &kept).map_err(io("write the known-hosts file"))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))
        .map_err(io("set the known-hosts file's mode"))?;
    std::fs::rename(&tmp, path).map_err(io("replace the known-hosts file"))
}

fn read_key(path: &Path) -> Result<PrivateKey, SshError> {
    russh::keys::load_secret_key(path, None)
        .map_err(|e| SshError::Key(format!("cannot read the key {}: {e}", path.display())))
}

/// The Ed25519 key at `path`, generated and saved (0600) when the file is missing.
fn load_or_generate(path: &Path) -> Result<PrivateKey, SshError> {
    if path.exists() {
        return read_key(path);
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| SshError::Key(format!("no randomness: {e}")))?;
    let mut key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    key.set_comment(format!("portcullis {}", path.display()));
    let pem = key.to_openssh(LineEnding::LF).map_err(SshError::key)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| SshError::Io {
            op: "create a key file",
            path: path.to_owned(),
            source,
        })?;
    std::io::Write::write_all(&mut file, pem.as_bytes()).map_err(|source| SshError::Io {
        op: "write a key file",
        path: path.to_owned(),
        source,
    })?;
    Ok(key)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn block_is_added_replaced_and_removed_leaving_other_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh_known_hosts");
        std::fs::write(&path, "host1 ssh-ed25519 AAAA\n").unwrap();
        let ours = markers(Path::new("/var/lib/a"));
        let theirs = markers(Path::new("/var/lib/b"));
        rewrite_block(&path, &ours, "@cert-authority a k\n").unwrap();
        rewrite_block(&path, &theirs, "@cert-authority c k\n").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let (begin, end) = &ours;
        assert!(
            text.starts_with(&format!(
                "host1 ssh-ed25519 AAAA\n{begin}\n@cert-authority a k\n{end}\n"
            )),
            "{text}"
        );
        rewrite_block(&path, &ours, "@cert-authority b k\n").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("@cert-authority b k") && !text.contains("a k"),
            "{text}"
        );
        assert!(
            text.contains("@cert-authority c k"),
            "another daemon's block stays"
        );
        rewrite_block(&path, &ours, "").unwrap();
        rewrite_block(&path, &theirs, "").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "host1 ssh-ed25519 AAAA\n"
        );
    }

    #[test]
    fn keys_are_generated_once_and_certificates_name_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let config = SshConfig {
            host_ca_key: None,
            known_hosts_file: dir.path().join("kh"),
            state_dir: dir.path().to_owned(),
        };
        let first = HostIdentity::load(&config).unwrap();
        let again = HostIdentity::load(&config).unwrap();
        assert_eq!(first.ca_public().unwrap(), again.ca_public().unwrap());
        let mode = std::fs::metadata(dir.path().join("ssh/host_ca"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let target = Target {
            name: "db1".into(),
            protocol: Protocol::Ssh,
            addresses: vec![TargetAddress::Socket("127.0.0.5:22".parse().unwrap())],
            description: None,
            credentials: None,
            tls: crate::policy::TargetTls::default(),
            client_auth: None,
            http_credentials: None,
            ssh: None,
        };
        let cert = first.certificate(&target).unwrap();
        assert_eq!(cert.valid_principals(), ["db1", "127.0.0.5"]);
        assert_eq!(cert.cert_type(), certificate::CertType::Host);
        assert_eq!(patterns(&target), "db1,127.0.0.5");
    }
}
