//! The HTTPS CA in the system trust store (`update-ca-certificates`), and the sweep
//! of stale ones.
//!
//! A daemon killed with `-9` never runs `daemon --release`, so its CA stays trusted
//! after it is gone (and its state directory, in tests, too). To tell a stale CA from
//! a running daemon's, each trust-store file `portcullis-http-ca-<fp>.crt` has a
//! sidecar `portcullis-http-ca-<fp>.owner` naming the owner's `state_dir` (the store
//! only reads `*.crt`), and a running daemon holds a shared `flock` on
//! `state_dir/http-ca.lock` for its lifetime ([`OwnerLock`]); the kernel drops it
//! when the process dies, however it dies. A CA is stale when its owner's lock is
//! free or gone (no daemon runs there), or when it is the caller's own state
//! directory's but not its current CA. Start, `install` and `uninstall` sweep.
//!
//! Files of older builds have no sidecar and their daemons no lock: they are swept
//! once they are older than [`LEGACY_AGE`], so that a daemon of an older build running
//! beside this one on a host keeps its CA for a while (and a test run keeps it).

use super::HttpError;
use sha2::Digest as _;
use std::{
    ffi::OsString,
    fmt::Write as _,
    fs::{self, File, TryLockError},
    os::unix::ffi::{OsStrExt as _, OsStringExt as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

/// How the trust-store files of Portcullis CAs start.
const PREFIX: &str = "portcullis-http-ca-";
/// The lock a running daemon holds in its state directory.
const LOCK: &str = "http-ca.lock";
/// Age after which a CA file without an owner (an older build's) is stale.
pub const LEGACY_AGE: Duration = Duration::from_hours(1);

/// A running daemon's claim on its CA: while this lives, no sweep removes the CAs of
/// its state directory.
#[derive(Debug)]
pub struct OwnerLock {
    _file: File,
}

/// Takes the shared lock on `state_dir/http-ca.lock` (waiting out a sweep that is
/// looking at it). Shared: a second daemon on the same directory is not this
/// module's business.
pub fn hold(state_dir: &Path) -> Result<OwnerLock, HttpError> {
    let path = state_dir.join(LOCK);
    let io = |op: &'static str| {
        let path = path.clone();
        move |source| HttpError::Io { op, path, source }
    };
    fs::create_dir_all(state_dir).map_err(io("create the directory of"))?;
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io("open"))?;
    file.lock_shared().map_err(io("lock"))?;
    Ok(OwnerLock { _file: file })
}

/// Puts `pem` into `trust_dir` as `state_dir`'s CA, removes stale ones, and
/// refreshes the bundle when anything changed. Call with [`OwnerLock`] held.
pub fn install(trust_dir: &Path, state_dir: &Path, pem: &str) -> Result<PathBuf, HttpError> {
    let path = trust_file(trust_dir, pem);
    let owner = owner_file(&path);
    let io = |op: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| HttpError::Io { op, path, source }
    };
    fs::create_dir_all(trust_dir).map_err(io("create the trust directory", trust_dir))?;
    let state = canonical(state_dir);
    // The owner first: a sweep that sees the certificate then sees whose it is.
    if fs::read(&owner).ok().as_deref() != Some(state.as_os_str().as_bytes()) {
        fs::write(&owner, state.as_os_str().as_bytes()).map_err(io("write", &owner))?;
    }
    let changed = fs::read_to_string(&path).ok().as_deref() != Some(pem);
    if changed {
        fs::write(&path, pem).map_err(io("write the CA into", &path))?;
    }
    let removed = sweep(trust_dir, Some((&state, &path)));
    if changed || !removed.is_empty() {
        refresh_trust_store()?;
    }
    Ok(path)
}

/// Removes the stale Portcullis CAs from `trust_dir` (see the module docs); `ours` is
/// the caller's state directory (canonical) and current CA file, when it has one.
/// Returns the certificates removed; the caller refreshes the bundle. A file that
/// cannot be judged or removed is logged and kept.
pub fn sweep(trust_dir: &Path, ours: Option<(&Path, &Path)>) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(trust_dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with(PREFIX) || !name.ends_with(".crt") {
            continue;
        }
        if ours.is_some_and(|(_, keep)| keep == path) || !is_stale(&path, ours) {
            continue;
        }
        match fs::remove_file(&path) {
            Ok(()) => {
                let _ = fs::remove_file(owner_file(&path));
                tracing::info!(path = %path.display(), "Removed a stale HTTPS CA from the trust store");
                removed.push(path);
            }
            Err(error) => {
                tracing::warn!(%error, path = %path.display(), "Cannot remove a stale HTTPS CA");
            }
        }
    }
    removed
}

/// Whether the CA at `crt` belongs to no running daemon (or is the caller's old one).
fn is_stale(crt: &Path, ours: Option<(&Path, &Path)>) -> bool {
    let Ok(owner) = fs::read(owner_file(crt)) else {
        let age = fs::metadata(crt)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok());
        return age.is_some_and(|age| age > LEGACY_AGE);
    };
    let state = PathBuf::from(OsString::from_vec(owner));
    if ours.is_some_and(|(our_state, _)| our_state == state) {
        return true;
    }
    !owner_running(&state)
}

/// Whether a daemon holds the lock of `state_dir`. Anything but a free or missing
/// lock counts as running: a CA is only removed when that is sure.
fn owner_running(state_dir: &Path) -> bool {
    let file = match File::open(state_dir.join(LOCK)) {
        Ok(file) => file,
        Err(e) => return e.kind() != std::io::ErrorKind::NotFound,
    };
    match file.try_lock() {
        Ok(()) => false,
        Err(TryLockError::WouldBlock) => true,
        Err(TryLockError::Error(error)) => {
            tracing::warn!(%error, dir = %state_dir.display(), "Cannot tell whether a daemon owns an HTTPS CA; keeping it");
            true
        }
    }
}

/// Removes the CA `pem` from `trust_dir` (`daemon --release`); returns the file
/// removed, if it was there. The caller refreshes the bundle.
pub fn remove(trust_dir: &Path, pem: &str) -> Result<Option<PathBuf>, HttpError> {
    let path = trust_file(trust_dir, pem);
    let _ = fs::remove_file(owner_file(&path));
    match fs::remove_file(&path) {
        Ok(()) => Ok(Some(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(HttpError::Io {
            op: "remove the CA from",
            path,
            source,
        }),
    }
}

/// The trust-store file of a CA: named for its fingerprint, so daemons with
/// different CAs on one host never overwrite each other's.
#[must_use]
pub fn trust_file(trust_dir: &Path, pem: &str) -> PathBuf {
    let digest = sha2::Sha256::digest(pem.as_bytes());
    let short = digest.iter().take(6).fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    });
    trust_dir.join(format!("{PREFIX}{short}.crt"))
}

/// The owner sidecar of a trust-store file.
fn owner_file(crt: &Path) -> PathBuf {
    crt.with_extension("owner")
}

fn canonical(dir: &Path) -> PathBuf {
    fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned())
}

/// Runs `update-ca-certificates`, one daemon at a time on this host (two runs at once
/// can each miss the other's file in the bundle they write).
pub fn refresh_trust_store() -> Result<(), HttpError> {
    let lock_path = Path::new("/run/lock/portcullis-trust-store.lock");
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path)
        .and_then(|file| file.lock().map(|()| file));
    if let Err(error) = &lock {
        tracing::warn!(%error, path = %lock_path.display(), "Cannot lock the trust store; updating it anyway");
    }
    let status = Command::new("update-ca-certificates")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| HttpError::Ca {
            reason: format!(
                "cannot run update-ca-certificates ({e}); install Debian's ca-certificates \
                 or set [http] trust_store = false"
            ),
        })?;
    drop(lock);
    if status.success() {
        Ok(())
    } else {
        Err(HttpError::Ca {
            reason: format!("update-ca-certificates failed ({status})"),
        })
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    const PEM_A: &str = "-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n";
    const PEM_B: &str = "-----BEGIN CERTIFICATE-----\nB\n-----END CERTIFICATE-----\n";

    /// A CA file as `install` leaves it, without refreshing the system bundle.
    fn put(trust: &Path, state: &Path, pem: &str) -> PathBuf {
        let path = trust_file(trust, pem);
        fs::create_dir_all(trust).unwrap();
        fs::write(owner_file(&path), canonical(state).as_os_str().as_bytes()).unwrap();
        fs::write(&path, pem).unwrap();
        path
    }

    #[test]
    fn a_dead_or_gone_owner_is_stale_a_running_one_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let trust = dir.path().join("trust");
        let (alive, dead, gone) = (
            dir.path().join("alive"),
            dir.path().join("dead"),
            dir.path().join("gone"),
        );
        let lock = hold(&alive).unwrap();
        drop(hold(&dead).unwrap()); // a daemon that ran and died: its lock is free
        let kept = put(&trust, &alive, PEM_A);
        let stale = put(&trust, &dead, PEM_B);
        let gone_ca = put(&trust, &gone, "C");
        fs::write(trust.join("someone-else.crt"), "D").unwrap();
        let mut removed = sweep(&trust, None);
        removed.sort();
        let mut expected = vec![stale.clone(), gone_ca];
        expected.sort();
        assert_eq!(removed, expected);
        assert!(kept.exists() && owner_file(&kept).exists());
        assert!(!owner_file(&stale).exists());
        assert!(trust.join("someone-else.crt").exists(), "not ours to judge");
        drop(lock);
        assert_eq!(sweep(&trust, None), vec![kept], "its daemon stopped");
    }

    #[test]
    fn our_own_old_ca_is_stale_and_the_current_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (trust, state) = (dir.path().join("trust"), dir.path().join("state"));
        let _lock = hold(&state).unwrap();
        let old = put(&trust, &state, PEM_A);
        let current = put(&trust, &state, PEM_B);
        let state = canonical(&state);
        assert_eq!(sweep(&trust, Some((&state, &current))), vec![old]);
        assert!(current.exists());
    }

    #[test]
    fn an_ownerless_ca_of_an_older_build_is_kept_until_it_is_old() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = trust_file(dir.path(), PEM_A);
        fs::write(&legacy, PEM_A).unwrap();
        assert!(sweep(dir.path(), None).is_empty());
        let old = std::time::SystemTime::now() - LEGACY_AGE - Duration::from_mins(1);
        File::options()
            .write(true)
            .open(&legacy)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(sweep(dir.path(), None), vec![legacy]);
    }
}
