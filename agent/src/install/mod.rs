//! `portcullis install` / `uninstall`: put the daemon on a host as a systemd service.
//!
//! `install` (each step skipped when already done, so it also upgrades in place):
//! the binary (copied to a temporary name and renamed, so a running daemon keeps its
//! file), `/etc/portcullis/portcullis.toml` and `/etc/portcullis/policies/` with
//! commented examples (never overwritten), `/var/lib/portcullis` (0700), the unix
//! groups `portcullis-approvers` and `portcullis-admins`, the systemd unit, and —
//! where systemd runs — `systemctl enable` and a (re)start. `uninstall` stops and
//! disables the service, removes the pins (protected targets open up), the unit and
//! the binary, and keeps configuration and data unless `--purge`.
//!
//! `--root DIR` writes every file under DIR instead of `/` (for packaging and
//! tests); groups, pins and systemd are then left alone. `--packaged` is for the
//! Debian package's maintainer scripts: dpkg owns the binary and the unit.
//!
//! # The unit's sandbox (`agent/dist/portcullis.service`)
//!
//! - `CapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_NET_ADMIN CAP_SYS_PTRACE`:
//!   `CAP_BPF` loads programs and maps; `CAP_PERFMON` lets the verifier accept the
//!   programs' pointer arithmetic; `CAP_NET_ADMIN` attaches cgroup socket programs and
//!   sets `SO_MARK` on the proxy's own upstream sockets (how the programs let them
//!   pass); `CAP_SYS_PTRACE` reads `/proc/PID/exe` and `cmdline` of other users'
//!   processes (who connects). No `CAP_SYS_ADMIN`: systemd mounts bpffs at boot, so
//!   the daemon's own mount (for hosts without systemd) is not needed; no
//!   `CAP_DAC_OVERRIDE`: the files it reads and writes are root's.
//! - `NoNewPrivileges`, `RestrictSUIDSGID`, `LockPersonality`, `RestrictRealtime`,
//!   `MemoryDenyWriteExecute` (no JIT anywhere), `RestrictNamespaces`, `RemoveIPC`,
//!   `KeyringMode=private`, `SystemCallArchitectures=native`: nothing needs them.
//! - `SystemCallFilter=@system-service bpf`: the service set plus `bpf(2)`; no
//!   `mount(2)` (see above).
//! - `ProtectSystem=strict` with `ReadWritePaths=/sys/fs/bpf` (pins), and the
//!   `StateDirectory` (`/var/lib/portcullis`: SQLite store, certificate) and
//!   `RuntimeDirectory` (`/run/portcullis`: API socket) systemd makes writable;
//!   `ConfigurationDirectory` is read. `ProtectHome`, `PrivateTmp`, `PrivateDevices`,
//!   `ProtectKernelTunables/Modules/Logs`, `ProtectControlGroups` (the cgroup is only
//!   opened to attach), `ProtectClock`, `ProtectHostname`: nothing there is used.
//! - `RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6`: API socket, proxy, store.
//! - Not used, on purpose: `PrivateNetwork` (the proxy must be in the host's network
//!   namespace: the programs compare it), `PrivateUsers` (capabilities), `ProtectProc`
//!   (it reads other processes), `IPAddressDeny` (targets are anywhere).
//! - `Type=notify` with `WatchdogSec=30s` (see `daemon::systemd`), `Restart=always`;
//!   while it restarts, the pinned programs keep redirecting to the proxy's port,
//!   where connects are refused: protected targets fail closed, never open.
//!
//! Upgrades: the new daemon adopts the pins of the running build, so no connect goes
//! direct during the restart; it keeps the *old* eBPF programs until the pins are
//! removed (`portcullis daemon --release` with the service stopped, then start). A
//! program change thus needs that short window of refused connects; nothing opens.

mod steps;
mod trust;

use std::path::PathBuf;

/// Files the package and `install` write.
pub const UNIT: &str = include_str!("../../dist/portcullis.service");
pub const CONFIG: &str = include_str!("../../dist/portcullis.toml");
pub const EXAMPLE_POLICY: &str = include_str!("../../dist/policies/example.toml");
pub const EXAMPLE_TESTS: &str = include_str!("../../dist/policies/tests/example.toml");

/// Unix groups the default config and the examples use.
pub const GROUPS: [&str; 2] = ["portcullis-approvers", "portcullis-admins"];

/// What went wrong, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("cannot {op} {path}: {source}; are you root?")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error(
        "`portcullis install` needs root (it writes /etc, /usr/local/bin and systemd units); run it with sudo"
    )]
    NotRoot,
}

/// Options shared by install and uninstall.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where `/` is: the real one, or a staging directory.
    pub root: PathBuf,
    /// Where the binary goes (under `root`).
    pub bin: PathBuf,
    /// dpkg owns the binary and the unit.
    pub packaged: bool,
    /// Enable and (re)start the service where systemd runs.
    pub enable: bool,
}

impl Options {
    /// The path `p` (absolute) under `root`.
    #[must_use]
    pub fn at(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    fn real_root(&self) -> bool {
        self.root == std::path::Path::new("/")
    }
}

/// The unit with the binary's path filled in.
#[must_use]
pub fn unit_for(bin: &std::path::Path) -> String {
    UNIT.replace("@BIN@", &bin.display().to_string())
}

pub use steps::{install, uninstall};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_names_the_binary_everywhere_it_runs_it() {
        let unit = unit_for(std::path::Path::new("/opt/pc/portcullis"));
        assert!(!unit.contains("@BIN@"), "{unit}");
        assert!(unit.contains(
            "ExecStart=/opt/pc/portcullis daemon --config /etc/portcullis/portcullis.toml"
        ));
        assert!(unit.contains("ExecReload=/opt/pc/portcullis policy reload"));
        for directive in [
            "Type=notify",
            "Restart=always",
            "WatchdogSec=",
            "NoNewPrivileges=yes",
        ] {
            assert!(unit.contains(directive), "{directive}");
        }
    }

    #[test]
    fn the_shipped_config_and_examples_are_valid() {
        let config = crate::config::Config::parse(
            std::path::Path::new("/etc/portcullis/portcullis.toml"),
            CONFIG,
        );
        let config = config.unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(config.admin_group.as_deref(), Some(GROUPS[1]));
        let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
        std::fs::write(dir.path().join("example.toml"), EXAMPLE_POLICY)
            .unwrap_or_else(|e| unreachable!("{e}"));
        std::fs::create_dir(dir.path().join("tests")).unwrap_or_else(|e| unreachable!("{e}"));
        std::fs::write(dir.path().join("tests/example.toml"), EXAMPLE_TESTS)
            .unwrap_or_else(|e| unreachable!("{e}"));
        let policy =
            crate::policy_test::load_checked(dir.path()).unwrap_or_else(|e| unreachable!("{e}"));
        assert!(policy.targets().is_empty(), "no active demo target");
    }
}
