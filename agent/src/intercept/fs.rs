//! Where the kernel's filesystems are: the cgroup2 mount, and bpffs for pins.

use super::InterceptError;
use std::path::{Path, PathBuf};

const BPF_FS_MAGIC: u32 = 0xcafe_4a11;

/// The first cgroup2 mount point listed in `/proc/mounts`.
pub fn cgroup2_root() -> Result<PathBuf, InterceptError> {
    let mounts = std::fs::read_to_string("/proc/mounts").map_err(|source| InterceptError::Io {
        op: "read",
        path: "/proc/mounts".into(),
        source,
    })?;
    cgroup2_in(&mounts).ok_or(InterceptError::NoCgroup2)
}

fn cgroup2_in(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut f = line.split_whitespace();
        let (_dev, dir, kind) = (f.next()?, f.next()?, f.next()?);
        (kind == "cgroup2").then(|| PathBuf::from(unescape(dir)))
    })
}

/// `/proc/mounts` escapes spaces and friends as octal (`\040`).
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(rest.get(..i).unwrap_or_default());
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        if let Some(c) = code {
            out.push(char::from(c));
            rest = rest.get(i + 4..).unwrap_or_default();
        } else {
            out.push('\\');
            rest = rest.get(i + 1..).unwrap_or_default();
        }
    }
    out.push_str(rest);
    out
}

/// Makes sure `pin_dir` exists on a bpffs, mounting bpffs on `/sys/fs/bpf` if nothing
/// is mounted there yet.
///
/// Two daemons starting together on a fresh machine must not both mount: the second
/// mount would hide the first one's pins (issue 21, `BPF_OBJ_PIN failed`). The check and
/// the mount happen under an exclusive `flock` on the `/sys/fs/bpf` directory, and the
/// check is repeated by path once the lock is held: a daemon that waited for the lock
/// sees the bpffs the first one mounted, and one that opens the directory after the
/// mount locks the bpffs root itself and finds it mounted.
pub fn ensure_bpffs(pin_dir: &Path) -> Result<(), InterceptError> {
    let bpf_root = Path::new(BPF_ROOT);
    if pin_dir.starts_with(bpf_root) && !is_bpffs(bpf_root) {
        mount_bpffs_once(bpf_root)?;
    }
    std::fs::create_dir_all(pin_dir).map_err(|source| InterceptError::Io {
        op: "create",
        path: pin_dir.into(),
        source,
    })?;
    if !is_bpffs(pin_dir) {
        return Err(InterceptError::NotBpffs(pin_dir.into()));
    }
    Ok(())
}

/// Where bpffs lives by convention.
const BPF_ROOT: &str = "/sys/fs/bpf";

/// Mounts bpffs on `root` unless it is (by now) one, holding a lock on `root` meanwhile.
fn mount_bpffs_once(root: &Path) -> Result<(), InterceptError> {
    let io = |op: &'static str| {
        move |source: std::io::Error| InterceptError::Io {
            op,
            path: root.into(),
            source,
        }
    };
    let dir = std::fs::File::open(root).map_err(io("open"))?;
    let _lock = nix::fcntl::Flock::lock(dir, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| io("lock")(e.into()))?;
    if is_bpffs(root) {
        tracing::debug!(path = %root.display(), "bpffs was mounted meanwhile");
        return Ok(());
    }
    nix::mount::mount(
        Some("bpf"),
        root,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| io("mount bpffs on")(e.into()))?;
    tracing::info!(path = %root.display(), "Mounted bpffs");
    Ok(())
}

fn is_bpffs(path: &Path) -> bool {
    // The magic is a 32-bit constant; the kernel reports it in a wider signed field.
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type().0 & 0xffff_ffff == i64::from(BPF_FS_MAGIC))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_among_v1_mounts() {
        let mounts = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(
            cgroup2_in(mounts),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(cgroup2_in("proc /proc proc rw 0 0\n"), None);
        assert_eq!(unescape(r"/a\040b"), "/a b");
    }
}
