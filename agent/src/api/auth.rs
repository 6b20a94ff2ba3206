//! The caller of an API request, from the socket's peer credentials.

use axum::serve::IncomingStream;
use nix::unistd::{Gid, Group};
use tokio::net::UnixListener;

/// Who is on the other end of the API socket, as the kernel says.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// `None` if the kernel could not tell (then the caller is treated as nobody).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub pid: Option<i32>,
}

impl axum::extract::connect_info::Connected<IncomingStream<'_, UnixListener>> for Caller {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        let cred = stream.io().peer_cred().ok();
        Self {
            uid: cred.map(|c| c.uid()),
            gid: cred.map(|c| c.gid()),
            pid: cred.and_then(|c| c.pid()),
        }
    }
}

impl Caller {
    /// Root, or a member of `admin_group` (primary or supplementary).
    #[must_use]
    pub fn is_admin(&self, admin_group: Option<&str>) -> bool {
        match self.uid {
            Some(0) => true,
            Some(_) => admin_group.is_some_and(|g| self.in_group(g)),
            None => false,
        }
    }

    fn in_group(&self, name: &str) -> bool {
        let Ok(Some(group)) = Group::from_name(name) else {
            return false;
        };
        if self.gid == Some(group.gid.as_raw()) {
            return true;
        }
        // Supplementary groups of the calling process, as the kernel has them.
        let Some(pid) = self.pid else {
            return false;
        };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Groups:"))
            .is_some_and(|list| {
                list.split_whitespace()
                    .any(|g| g.parse::<u32>().ok().map(Gid::from_raw) == Some(group.gid))
            })
    }
}

impl Caller {
    /// The caller as a principal (user, groups, process), for deciding requests.
    /// `None` if the kernel gave no credentials.
    pub async fn principal(&self) -> Option<crate::identity::Principal> {
        let (uid, gid) = (self.uid?, self.gid?);
        let pid = self.pid.and_then(|p| u32::try_from(p).ok()).unwrap_or(0);
        tokio::task::spawn_blocking(move || {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            crate::identity::principal_for(pid, uid, gid, comm.trim())
        })
        .await
        .ok()
    }
}
