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

/// Makes sure `pin_dir` exists on a bpffs, mounting bpffs on its first ancestor under
/// `/sys/fs/bpf` if nothing is mounted there yet.
pub fn ensure_bpffs(pin_dir: &Path) -> Result<(), InterceptError> {
    let bpf_root = Path::new("/sys/fs/bpf");
    if pin_dir.starts_with(bpf_root) && !is_bpffs(bpf_root) {
        nix::mount::mount(
            Some("bpf"),
            bpf_root,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| InterceptError::Io {
            op: "mount bpffs on",
            path: bpf_root.into(),
            source: e.into(),
        })?;
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
