//! The HTTPS CA side of `install` and `uninstall`: stale Portcullis CAs (of daemons
//! killed before `daemon --release`, see `proto::http::trust`) leave the system trust
//! store, and `uninstall` also takes out the service's own CA.

use super::Options;
use crate::proto::http::{self, trust};
use std::path::{Path, PathBuf};

/// The trust directory when the config cannot be read.
const DEFAULT_TRUST_DIR: &str = "/usr/local/share/ca-certificates";

/// Sweeps the trust directory under `opts.root` (the config's `[http] trust_dir`);
/// with `own`, also removes the configured daemon's CA (the service is stopped
/// then). Refreshes the bundle on a real root when anything went. Problems are
/// printed as notes: the CA is not worth failing an install for.
pub fn sweep(opts: &Options, own: bool) {
    let config = crate::config::Config::load(Path::new(crate::config::DEFAULT_CONFIG_PATH)).ok();
    let managed = config.as_ref().is_none_or(|c| c.http.trust_store);
    if !managed {
        return;
    }
    let trust_dir = config.as_ref().map_or_else(
        || PathBuf::from(DEFAULT_TRUST_DIR),
        |c| c.http.trust_dir.clone(),
    );
    let dir = opts.at(&trust_dir.to_string_lossy());
    let mut removed = trust::sweep(&dir, None);
    if own
        && opts.real_root()
        && let Some(c) = &config
    {
        match trust_own(c, &dir) {
            Ok(Some(path)) => removed.push(path),
            Ok(None) => {}
            Err(error) => println!("note      {error}"),
        }
    }
    for path in &removed {
        println!("removed   {} (HTTPS CA)", path.display());
    }
    if !removed.is_empty()
        && opts.real_root()
        && let Err(error) = trust::refresh_trust_store()
    {
        println!("note      {error}");
    }
}

/// Removes the CA of the installed config from `dir`, without refreshing.
fn trust_own(
    config: &crate::config::Config,
    dir: &Path,
) -> Result<Option<PathBuf>, http::HttpError> {
    let cert = config
        .http
        .ca_cert
        .clone()
        .unwrap_or_else(|| config.http.state_dir.join("http-ca.crt"));
    match std::fs::read_to_string(&cert) {
        Ok(pem) => trust::remove(dir, &pem),
        Err(_) => Ok(None),
    }
}
