//! The `ssh` / `commands` filter of a rule: which SSH actions it decides, by kind
//! (`exec`, `shell`, `sftp`, `scp`, `forward`, `agent`, `x11`), by the simple
//! commands of a command line (globs), and by the login the client asked for
//! (`who.logins`).
//!
//! Rules with `file_ops` and/or `files` decide each SFTP file operation instead
//! (`files`).
//!
//! Default: on a connection the policy allowed, an action no filter matches is
//! allowed, except an unparsed command line, agent forwarding and X11, which are
//! denied (see [`unmatched`]).

mod files;

pub use files::{FileOp, FileRequest, normalize as normalize_path};

use crate::policy::{
    Decision, PolicyError, Verdict, file::RuleFile, load::Source, matching::glob_match,
};
use files::FileFilter;
use serde::Serialize;
use std::fmt;

/// What kind of SSH action a client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SshKind {
    /// A command line (`ssh host CMD`, rsync, Ansible).
    Exec,
    /// An interactive shell.
    Shell,
    /// The `sftp` subsystem (also OpenSSH 9 `scp`).
    Sftp,
    /// Legacy `scp -t` / `scp -f`.
    Scp,
    /// A TCP forward (`-L`, `-R`).
    Forward,
    /// Agent forwarding (`-A`).
    Agent,
    /// X11 forwarding (`-X`).
    X11,
}

impl SshKind {
    pub const ALL: [SshKind; 7] = [
        Self::Exec,
        Self::Shell,
        Self::Sftp,
        Self::Scp,
        Self::Forward,
        Self::Agent,
        Self::X11,
    ];

    /// The name in a policy file and a record.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Shell => "shell",
            Self::Sftp => "sftp",
            Self::Scp => "scp",
            Self::Forward => "forward",
            Self::Agent => "agent",
            Self::X11 => "x11",
        }
    }

    /// What the action does, for a decision's reason ("to run a command").
    #[must_use]
    pub fn verb(self) -> &'static str {
        match self {
            Self::Exec => "to run a command",
            Self::Shell => "to open a shell",
            Self::Sftp => "to use sftp",
            Self::Scp => "to copy files with scp",
            Self::Forward => "to forward a connection",
            Self::Agent => "to forward the SSH agent",
            Self::X11 => "to forward X11",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for SshKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An SSH action as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct SshRequest<'a> {
    pub kind: SshKind,
    /// The user name the client asked to log in as.
    pub login: &'a str,
    /// The simple commands of an exec (or a typed shell line); `None`: unparsed.
    pub commands: Option<&'a [String]>,
    /// One file operation inside an `sftp` subsystem; `None` for the other actions.
    pub file: Option<FileRequest<'a>>,
}

impl SshRequest<'_> {
    /// Whether this is a command line typed in an interactive shell (a `shell`
    /// request with commands, or unparsed), not the shell's opening (no commands).
    #[must_use]
    pub fn is_typed_line(&self) -> bool {
        self.kind == SshKind::Shell && self.commands.is_none_or(|c| !c.is_empty())
    }
}

/// A rule's `ssh`, `commands` and `who.logins`: all must match (absent ones match
/// anything).
#[derive(Debug, Clone)]
pub(in crate::policy) struct SshFilter {
    /// Empty: every kind (or `exec` and `shell` when `commands` is given).
    pub kinds: Vec<SshKind>,
    /// Globs over a simple command (`*` any run): empty matches any.
    pub commands: Vec<String>,
    /// Globs over the login; empty matches any.
    pub logins: Vec<String>,
    /// `file_ops` / `files`: the rule decides SFTP file operations, not actions.
    pub files: Option<FileFilter>,
}

impl SshFilter {
    /// A rule's `ssh`, `commands` and `who.logins`: `None` when it has none of them.
    pub(in crate::policy) fn parse(
        src: &Source,
        rule: &str,
        file: &RuleFile,
    ) -> Result<Option<SshFilter>, PolicyError> {
        let logins = file
            .who
            .as_ref()
            .map(|w| w.get_ref().logins.clone())
            .unwrap_or_default();
        let files = FileFilter::parse(src, rule, file)?;
        if file.ssh.is_none() && file.commands.is_none() && logins.is_empty() && files.is_none() {
            return Ok(None);
        }
        for list in [&file.ssh, &file.commands].into_iter().flatten() {
            if list.get_ref().is_empty() {
                return Err(src.error(
                    list.span(),
                    format!("empty list in rule `{rule}`; remove the key or name what it covers"),
                ));
            }
        }
        let mut kinds = Vec::new();
        for kind in file.ssh.iter().flat_map(toml::Spanned::get_ref) {
            let Some(found) = SshKind::from_name(kind.get_ref()) else {
                let known: Vec<_> = SshKind::ALL.iter().map(|k| k.name()).collect();
                return Err(src.error(
                    kind.span(),
                    format!(
                        "unknown ssh action `{}` in rule `{rule}`; use one of {}",
                        kind.get_ref(),
                        known.join(", ")
                    ),
                ));
            };
            kinds.push(found);
        }
        let commands: Vec<String> = file
            .commands
            .iter()
            .flat_map(toml::Spanned::get_ref)
            .map(|c| c.get_ref().trim().to_owned())
            .collect();
        if !commands.is_empty() && kinds.is_empty() {
            kinds = vec![SshKind::Exec, SshKind::Shell];
        }
        if let Some(list) = &file.ssh
            && !commands.is_empty()
            && !kinds
                .iter()
                .any(|k| matches!(k, SshKind::Exec | SshKind::Shell))
        {
            return Err(src.error(
                list.span(),
                format!(
                    "rule `{rule}` has `commands`, which only exec and shell lines have; add \
                     \"exec\" to `ssh`"
                ),
            ));
        }
        if files.is_some() {
            check_file_rule(src, rule, file, &kinds, &commands)?;
            kinds = vec![SshKind::Sftp];
        }
        Ok(Some(SshFilter {
            kinds,
            commands,
            logins,
            files,
        }))
    }

    /// Whether the filter covers `request`; `verdict` is its rule's.
    ///
    /// A restricting rule covers a command line if any of its simple commands
    /// matches; an allow rule only if every one does. An unparsed line could be
    /// anything: every restricting exec rule covers it, and an allow rule only if it
    /// names no commands (all exec).
    pub(in crate::policy) fn covers(&self, request: &SshRequest<'_>, verdict: Verdict) -> bool {
        let kind = self.kinds.is_empty() || self.kinds.contains(&request.kind);
        let login =
            self.logins.is_empty() || self.logins.iter().any(|p| glob_match(p, request.login));
        if !kind || !login {
            return false;
        }
        let restricting = verdict > Verdict::Allow;
        match (&self.files, &request.file) {
            (Some(filter), Some(file)) => return filter.covers(file, restricting),
            (None, None) => {}
            // File rules decide file operations; the others, the actions.
            _ => return false,
        }
        if self.commands.is_empty() {
            // A typed line is decided by the rules that name commands; the others
            // decided the shell itself when it opened.
            return !request.is_typed_line();
        }
        match request.commands {
            None => restricting,
            Some([]) => !restricting,
            Some(commands) if restricting => commands.iter().any(|c| self.matches(c)),
            Some(commands) => commands.iter().all(|c| self.matches(c)),
        }
    }

    /// Whether one simple command matches a pattern, as written or with its program
    /// named without a directory (`/bin/rm -rf x` matches `rm *`).
    fn matches(&self, command: &str) -> bool {
        let short = short_form(command);
        self.commands
            .iter()
            .any(|p| glob_match(p, command) || short.as_deref().is_some_and(|s| glob_match(p, s)))
    }
}

/// A rule with `file_ops`/`files` decides sftp file operations: its `ssh`, if
/// given, must be `["sftp"]`, and it has no `commands`.
fn check_file_rule(
    src: &Source,
    rule: &str,
    file: &RuleFile,
    kinds: &[SshKind],
    commands: &[String],
) -> Result<(), PolicyError> {
    let span = file
        .file_ops
        .as_ref()
        .map(toml::Spanned::span)
        .or_else(|| file.files.as_ref().map(toml::Spanned::span))
        .unwrap_or_else(|| file.name.span());
    if !commands.is_empty() || kinds.iter().any(|k| *k != SshKind::Sftp) {
        return Err(src.error(
            span,
            format!(
                "rule `{rule}` has `file_ops`/`files`, which decide sftp file operations; \
                 use `ssh = [\"sftp\"]` (or no `ssh`) and no `commands` in it"
            ),
        ));
    }
    Ok(())
}

/// `command` with its first word's directory removed, if it has one.
fn short_form(command: &str) -> Option<String> {
    let (first, rest) = command.split_once(' ').unwrap_or((command, ""));
    let (_, base) = first.rsplit_once('/')?;
    Some(if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base} {rest}")
    })
}

/// The decision for an SSH action no `ssh`/`commands` rule matched, on target `target`.
pub(in crate::policy) fn unmatched(request: &SshRequest<'_>, target: &str) -> Decision {
    let refused = match request.kind {
        SshKind::Agent => Some("agent forwarding"),
        SshKind::X11 => Some("X11 forwarding"),
        SshKind::Exec if request.commands.is_none() => {
            Some("a command line that could not be parsed")
        }
        _ => None,
    };
    if let Some(what) = refused {
        return Decision::deny_unmatched(format!("no rule allows {what} on target {target}"));
    }
    Decision {
        verdict: Verdict::Allow,
        rule: None,
        reason: String::new(),
        review: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(kinds: &[SshKind], commands: &[&str]) -> SshFilter {
        SshFilter {
            kinds: kinds.to_vec(),
            commands: commands.iter().map(|c| (*c).to_owned()).collect(),
            logins: Vec::new(),
            files: None,
        }
    }

    fn exec(commands: Option<&[String]>) -> SshRequest<'_> {
        SshRequest {
            kind: SshKind::Exec,
            login: "deploy",
            commands,
            file: None,
        }
    }

    #[test]
    fn restricting_rules_match_any_command_allow_rules_all() {
        let rm = filter(&[SshKind::Exec], &["rm *"]);
        let line = ["ls".to_owned(), "/bin/rm -rf /x".to_owned()];
        assert!(rm.covers(&exec(Some(&line)), Verdict::Deny));
        assert!(!rm.covers(&exec(Some(&line)), Verdict::Allow));
        let ls = filter(&[SshKind::Exec], &["ls*", "rm *"]);
        assert!(ls.covers(&exec(Some(&line)), Verdict::Allow));
        assert!(
            rm.covers(&exec(None), Verdict::Review),
            "unparsed: restricting covers"
        );
        assert!(
            !rm.covers(&exec(None), Verdict::Allow),
            "unparsed: allow by command does not"
        );
        assert!(filter(&[SshKind::Exec], &[]).covers(&exec(None), Verdict::Allow));
        let shell = SshRequest {
            kind: SshKind::Shell,
            login: "deploy",
            commands: None,
            file: None,
        };
        assert!(!rm.covers(&shell, Verdict::Deny));
    }

    #[test]
    fn logins_filter_by_glob() {
        let mut f = filter(&[], &[]);
        f.logins = vec!["root".into(), "adm-*".into()];
        let mut r = exec(Some(&[]));
        assert!(!f.covers(&r, Verdict::Deny));
        r.login = "adm-ann";
        assert!(f.covers(&r, Verdict::Deny));
    }

    #[test]
    fn defaults_refuse_agent_x11_and_unparsed() {
        assert_eq!(unmatched(&exec(None), "t").verdict, Verdict::Deny);
        assert_eq!(unmatched(&exec(Some(&[])), "t").verdict, Verdict::Allow);
        let agent = SshRequest {
            kind: SshKind::Agent,
            login: "x",
            commands: None,
            file: None,
        };
        assert_eq!(unmatched(&agent, "t").verdict, Verdict::Deny);
    }
}
