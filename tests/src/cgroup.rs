//! Per-test cgroups and root checks: each test attaches its programs to a cgroup of
//! its own and moves only its client processes there.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

/// Whether the process runs as root; tests that need it print why they skip.
#[must_use]
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Returns `false` (after saying why) if a root/eBPF test cannot run here.
#[must_use]
pub fn can_run_ebpf_tests(test: &str) -> bool {
    if !is_root() {
        eprintln!("SKIP {test}: needs root for eBPF and cgroups (run `cargo xtask test` as root)");
        return false;
    }
    if cgroup2_root().is_none() {
        eprintln!("SKIP {test}: no cgroup2 filesystem in /proc/mounts");
        return false;
    }
    true
}

/// The cgroup2 mount point, from /proc/mounts.
#[must_use]
pub fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f.get(1).copied().unwrap_or_default()))
    })
}

/// A child cgroup that is removed (after its processes are killed) on drop.
pub struct TestCgroup {
    path: PathBuf,
}

impl TestCgroup {
    /// Creates `<cgroup2 root>/portcullis-test-<name>-<pid>`.
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let root = cgroup2_root().ok_or_else(|| anyhow::anyhow!("no cgroup2 mount"))?;
        let path = root.join(format!("portcullis-test-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(Self { path })
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A command that joins this cgroup, then runs `argv` (as `uid`/`gid` if given),
    /// keeping its pid (the shell execs).
    #[must_use]
    pub fn command(&self, uid_gid: Option<(u32, u32)>, argv: &[&str]) -> Command {
        let mut script = format!("echo $$ > '{}/cgroup.procs' && exec", self.path.display());
        if let Some((uid, gid)) = uid_gid {
            let _ = write!(
                script,
                " setpriv --reuid={uid} --regid={gid} --clear-groups"
            );
        }
        for a in argv {
            script.push_str(" '");
            script.push_str(&a.replace('\'', r"'\''"));
            script.push('\'');
        }
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script);
        cmd
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path.join("cgroup.kill"), "1");
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
