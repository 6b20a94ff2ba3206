//! Process limits the daemon raises for itself at start.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Raises the soft limit on open files to the hard limit: each proxied session holds
/// two sockets, and a shell's default soft limit (often 1024) would refuse the
/// 512th concurrent session. Under systemd the unit's `LimitNOFILE` sets both.
pub fn raise_open_files() {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "Raised the open files limit"),
            Err(error) => tracing::warn!(%error, soft, "Cannot raise the open files limit"),
        },
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "Cannot read the open files limit"),
    }
}
