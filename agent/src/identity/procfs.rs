//! Enrichment of the kernel's record from `/proc/PID` and the user database.

use super::Principal;
use nix::unistd::{Gid, Group, Uid, User};
use std::{fs, path::Path};

/// Longest command line kept; longer ones are cut (and marked with `…`).
const MAX_CMDLINE: usize = 4096;

/// Builds the principal for a connect made by `pid` as `uid`/`gid` with task name
/// `comm`. Blocking (reads procfs and the user database): call it off the runtime.
///
/// A process that has already exited keeps the kernel's fields; the rest stay empty.
#[must_use]
pub fn principal_for(pid: u32, uid: u32, gid: u32, comm: &str) -> Principal {
    principal_from(Path::new("/proc"), pid, uid, gid, comm)
}

fn principal_from(proc_root: &Path, pid: u32, uid: u32, gid: u32, comm: &str) -> Principal {
    let proc_dir = proc_root.join(pid.to_string());
    let status = fs::read_to_string(proc_dir.join("status")).unwrap_or_default();
    let parent = status_field(&status, "PPid:").and_then(|v| v.parse().ok());
    let mut gids: Vec<u32> = vec![gid];
    if let Some(list) = status_field(&status, "Groups:") {
        gids.extend(
            list.split_whitespace()
                .filter_map(|g| g.parse::<u32>().ok()),
        );
    }
    gids.dedup();
    let mut unix_groups = Vec::with_capacity(gids.len());
    for g in gids {
        if let Ok(Some(group)) = Group::from_gid(Gid::from_raw(g))
            && !unix_groups.contains(&group.name)
        {
            unix_groups.push(group.name);
        }
    }
    Principal {
        pid,
        ppid: parent,
        uid,
        gid,
        user: User::from_uid(Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name),
        unix_groups,
        exe: fs::read_link(proc_dir.join("exe"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned()),
        cmdline: fs::read(proc_dir.join("cmdline"))
            .ok()
            .and_then(|raw| cmdline(&raw)),
        comm: comm.to_owned(),
        cgroup: fs::read_to_string(proc_dir.join("cgroup"))
            .ok()
            .and_then(|c| cgroup_v2(&c)),
        idp: None,
    }
}

fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
}

fn cmdline(raw: &[u8]) -> Option<String> {
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if args.is_empty() {
        return None;
    }
    let mut line = args.join(" ");
    if line.len() > MAX_CMDLINE {
        let mut cut = MAX_CMDLINE;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push('…');
    }
    Some(line)
}

/// The unified-hierarchy entry (`0::/path`) of `/proc/PID/cgroup`.
fn cgroup_v2(content: &str) -> Option<String> {
    content
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_fully_described() {
        let me = std::process::id();
        let p = principal_for(me, Uid::current().as_raw(), Gid::current().as_raw(), "test");
        assert_eq!(p.pid, me);
        assert!(p.ppid.is_some());
        assert!(p.exe.is_some_and(|e| e.contains("portcullis")));
        assert!(p.cmdline.is_some());
        assert!(!p.unix_groups.is_empty());
    }

    #[test]
    fn exited_process_keeps_kernel_fields() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
        let p = principal_from(dir.path(), 4_000_000, 0, 0, "gone");
        assert_eq!(
            (p.pid, p.uid, p.gid, p.comm.as_str()),
            (4_000_000, 0, 0, "gone")
        );
        assert_eq!(p.user.as_deref(), Some("root"));
        assert!(p.exe.is_none() && p.cmdline.is_none() && p.ppid.is_none());
    }

    #[test]
    fn cmdline_joins_and_caps() {
        assert_eq!(cmdline(b"psql\0-h\0db\0").as_deref(), Some("psql -h db"));
        assert_eq!(cmdline(b""), None);
        let long = vec![b'x'; MAX_CMDLINE * 2];
        assert!(cmdline(&long).is_some_and(|c| c.len() <= MAX_CMDLINE + '…'.len_utf8()));
    }

    #[test]
    fn cgroup_v2_line_is_found() {
        assert_eq!(
            cgroup_v2("1:cpu:/a\n0::/user.slice/x\n").as_deref(),
            Some("/user.slice/x")
        );
    }
}
