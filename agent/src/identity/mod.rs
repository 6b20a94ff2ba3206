//! Who is behind a connection: the kernel's record (pid, uid, gid, comm) taken at
//! connect time, enriched from procfs and the user database while the process lives
//! ([`Principal`]); and who decides a held action ([`Approver`]: a local user or an
//! identity-provider subject).
//!
//! Layout: this file holds [`Principal`]; `procfs` builds it from the kernel's record;
//! `linked` holds the identity-provider identity `portcullis login` links a uid to;
//! `approver` holds [`Approver`].

mod approver;
mod linked;
mod procfs;

use serde::{Deserialize, Serialize};

pub use approver::{Approver, ApproverError, ApproverKind};
pub use linked::{LinkedIdentity, MAX_LINKED_GROUPS};
pub use procfs::principal_for;

/// The person and process behind one intercepted connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// Process id (thread-group id) of the connecting process.
    pub pid: u32,
    /// Parent process id, if the process was still alive when we looked.
    pub ppid: Option<u32>,
    /// Real uid at connect time (from the kernel).
    pub uid: u32,
    /// Real gid at connect time (from the kernel).
    pub gid: u32,
    /// User name for `uid`, when the user database knows it.
    pub user: Option<String>,
    /// Names of the primary and supplementary unix groups.
    pub unix_groups: Vec<String>,
    /// Resolved `/proc/PID/exe`.
    pub exe: Option<String>,
    /// Command line, arguments joined by spaces.
    pub cmdline: Option<String>,
    /// The kernel's short task name at connect time.
    pub comm: String,
    /// cgroup v2 path of the process.
    pub cgroup: Option<String>,
    /// The identity-provider identity the uid is linked to by `portcullis login`
    /// (the newest live link), looked up when the connection is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp: Option<LinkedIdentity>,
}

impl Principal {
    /// A short human label: `alice (uid 1000) pid 42 /usr/bin/psql`.
    #[must_use]
    pub fn label(&self) -> String {
        let user = self.user.as_deref().unwrap_or("?");
        let exe = self.exe.as_deref().unwrap_or(&self.comm);
        format!("{user} (uid {}) pid {} {exe}", self.uid, self.pid)
    }
}
