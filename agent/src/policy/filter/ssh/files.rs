//! The file part of an SSH rule: `file_ops` (`read`, `write`, `remove`, `rename`,
//! `mkdir`, `rmdir`, `setstat`) and `files` (globs over the path, `*` any run, `/`
//! included) decide each SFTP file operation on its own.
//!
//! Paths are matched as the client sent them after removing `.` and `..` segments
//! (`/srv/a/../b` is `/srv/b`); a symbolic link on the server can still lead
//! elsewhere, so a path rule is a guard for honest clients and mistakes, not a
//! sandbox.

use crate::policy::{PolicyError, file::RuleFile, load::Source, matching::glob_match};
use serde::Serialize;
use std::fmt;

/// What an SFTP request does to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileOp {
    /// Open for reading (a download).
    Read,
    /// Open for writing, creating or truncating (an upload), or make a link.
    Write,
    Remove,
    Rename,
    Mkdir,
    Rmdir,
    /// Change attributes: mode, owner, times, size.
    Setstat,
}

impl FileOp {
    pub const ALL: [FileOp; 7] = [
        Self::Read,
        Self::Write,
        Self::Remove,
        Self::Rename,
        Self::Mkdir,
        Self::Rmdir,
        Self::Setstat,
    ];

    /// The name in a policy file and a record.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Remove => "remove",
            Self::Rename => "rename",
            Self::Mkdir => "mkdir",
            Self::Rmdir => "rmdir",
            Self::Setstat => "setstat",
        }
    }

    /// The operation a policy file names.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for FileOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One SFTP file operation as the policy sees it: what it does (an open for reading
/// and writing does both) and the paths it touches (a rename: both).
#[derive(Debug, Clone, Copy)]
pub struct FileRequest<'a> {
    pub ops: &'a [FileOp],
    pub paths: &'a [String],
}

/// A rule's `file_ops` and `files`; empty lists match anything.
#[derive(Debug, Clone, Default)]
pub(in crate::policy) struct FileFilter {
    ops: Vec<FileOp>,
    paths: Vec<String>,
}

impl FileFilter {
    /// A rule's `file_ops` and `files`: `None` when it has neither.
    pub(in crate::policy) fn parse(
        src: &Source,
        rule: &str,
        file: &RuleFile,
    ) -> Result<Option<FileFilter>, PolicyError> {
        if file.file_ops.is_none() && file.files.is_none() {
            return Ok(None);
        }
        for list in [&file.file_ops, &file.files].into_iter().flatten() {
            if list.get_ref().is_empty() {
                return Err(src.error(
                    list.span(),
                    format!("empty list in rule `{rule}`; remove the key or name what it covers"),
                ));
            }
        }
        let mut ops = Vec::new();
        for op in file.file_ops.iter().flat_map(toml::Spanned::get_ref) {
            let Some(found) = FileOp::from_name(op.get_ref()) else {
                let known: Vec<_> = FileOp::ALL.iter().map(|k| k.name()).collect();
                return Err(src.error(
                    op.span(),
                    format!(
                        "unknown file operation `{}` in rule `{rule}`; use one of {}",
                        op.get_ref(),
                        known.join(", ")
                    ),
                ));
            };
            ops.push(found);
        }
        let paths = file
            .files
            .iter()
            .flat_map(toml::Spanned::get_ref)
            .map(|p| p.get_ref().trim().to_owned())
            .collect();
        Ok(Some(FileFilter { ops, paths }))
    }

    /// Whether the filter covers `request`. A restricting rule covers it if any of
    /// its operations and any of its paths match; an allow rule only if all do.
    pub(in crate::policy) fn covers(&self, request: &FileRequest<'_>, restricting: bool) -> bool {
        let op = |o: &FileOp| self.ops.is_empty() || self.ops.contains(o);
        let path = |p: &String| {
            let p = normalize(p);
            self.paths.is_empty() || self.paths.iter().any(|g| glob_match(g, &p))
        };
        if restricting {
            request.ops.iter().any(op) && request.paths.iter().any(path)
        } else {
            request.ops.iter().all(op) && request.paths.iter().all(path)
        }
    }
}

/// `path` without `.` and `..` segments and repeated slashes; `..` above the root
/// stays at the root, as a server resolves it.
#[must_use]
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let joined = parts.join("/");
    if path.starts_with('/') {
        format!("/{joined}")
    } else {
        joined
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn filter(ops: &[FileOp], paths: &[&str]) -> FileFilter {
        FileFilter {
            ops: ops.to_vec(),
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    #[test]
    fn operations_and_paths_must_both_match() {
        let f = filter(&[FileOp::Remove], &["/srv/data/*"]);
        let path = ["/srv/data/a.txt".to_owned()];
        let remove = FileRequest {
            ops: &[FileOp::Remove],
            paths: &path,
        };
        assert!(f.covers(&remove, true));
        let read = FileRequest {
            ops: &[FileOp::Read],
            paths: &path,
        };
        assert!(!f.covers(&read, true));
        let elsewhere = ["/srv/other/a.txt".to_owned()];
        let remove_elsewhere = FileRequest {
            ops: &[FileOp::Remove],
            paths: &elsewhere,
        };
        assert!(!f.covers(&remove_elsewhere, true));
    }

    #[test]
    fn dot_dot_cannot_step_out_of_a_denied_tree() {
        let f = filter(&[], &["/etc/*"]);
        let sneaky = ["/srv/data/../../etc/shadow".to_owned()];
        let read = FileRequest {
            ops: &[FileOp::Read],
            paths: &sneaky,
        };
        assert!(f.covers(&read, true));
        assert_eq!(normalize("/../a//b/./c/.."), "/a/b");
        assert_eq!(normalize("a/../../b"), "b");
    }

    const TARGET: &str = "[[target]]\nname = \"box\"\nprotocol = \"ssh\"\n\
        address = \"127.0.0.9:22\"\nknown_hosts = \"/etc/ssh/ssh_known_hosts\"\n\
        [[rule]]\nname = \"connect\"\ntargets = [\"box\"]\naction = \"allow\"\n";

    fn load(rules: &str) -> Result<crate::policy::Policy, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        std::fs::write(dir.path().join("p.toml"), format!("{TARGET}{rules}"))
            .map_err(|e| e.to_string())?;
        crate::policy::Policy::load_dir(dir.path()).map_err(|e| e.to_string())
    }

    #[test]
    fn a_policy_decides_file_operations_apart_from_the_subsystem() {
        use crate::policy::{SshKind, SshRequest, Verdict, matching::tests::principal};
        let policy = load(
            "[[rule]]\nname = \"keep\"\ntargets = [\"box\"]\nssh = [\"sftp\"]\n\
             file_ops = [\"remove\"]\nfiles = [\"/srv/*\"]\naction = \"deny\"\n",
        )
        .unwrap();
        let who = principal("ann", 1000, &[], "/usr/bin/sftp");
        let paths = ["/srv/a".to_owned()];
        let ask = |file| SshRequest {
            kind: SshKind::Sftp,
            login: "ann",
            commands: Some(&[]),
            file,
        };
        let subsystem = policy.decide_ssh(&who, "box", &ask(None));
        assert_eq!(subsystem.verdict, Verdict::Allow);
        let remove = FileRequest {
            ops: &[FileOp::Remove],
            paths: &paths,
        };
        let refused = policy.decide_ssh(&who, "box", &ask(Some(remove)));
        assert_eq!(refused.verdict, Verdict::Deny);
        assert_eq!(refused.rule.as_deref(), Some("keep"));
        let read = FileRequest {
            ops: &[FileOp::Read],
            paths: &paths,
        };
        assert_eq!(
            policy.decide_ssh(&who, "box", &ask(Some(read))).verdict,
            Verdict::Allow
        );
    }

    #[test]
    fn bad_file_rules_are_refused_with_what_to_do() {
        let unknown = load(
            "[[rule]]\nname = \"r\"\ntargets = [\"box\"]\nfile_ops = [\"delete\"]\naction = \"deny\"\n",
        )
        .unwrap_err();
        assert!(
            unknown.contains("unknown file operation `delete`"),
            "{unknown}"
        );
        let mixed = load(
            "[[rule]]\nname = \"r\"\ntargets = [\"box\"]\nssh = [\"exec\"]\n\
             files = [\"/x\"]\naction = \"deny\"\n",
        )
        .unwrap_err();
        assert!(mixed.contains("decide sftp file operations"), "{mixed}");
    }

    #[test]
    fn restricting_rules_match_any_part_allow_rules_every_part() {
        let f = filter(&[FileOp::Read], &["/pub/*"]);
        let paths = ["/pub/a".to_owned(), "/secret/b".to_owned()];
        let both = FileRequest {
            ops: &[FileOp::Read, FileOp::Write],
            paths: &paths,
        };
        assert!(f.covers(&both, true));
        assert!(!f.covers(&both, false));
    }
}
