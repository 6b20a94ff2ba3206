//! SSH requests as the gate's actions, and the gate's answers in SSH's words: a
//! line on the channel's stderr (the terminal, under a pty) and an exit status.

use super::command::{self, Split};
use crate::{
    gate::{Action, ActionOutcome, Ask},
    policy::{FileOp, SshKind},
    proto::Session,
};

/// Exit status of an exec or shell the gate refused (as a shell says "cannot
/// execute").
pub const REFUSED_STATUS: u32 = 126;

/// What a session channel asks to start.
#[derive(Debug, Clone)]
pub enum Start {
    Exec(String),
    Shell,
    Subsystem(String),
}

impl Start {
    /// The kind of action this is, with what it is about.
    #[must_use]
    pub fn kind(&self) -> SshKind {
        match self {
            Self::Exec(line) if is_scp(line) => SshKind::Scp,
            Self::Exec(_) => SshKind::Exec,
            Self::Shell => SshKind::Shell,
            Self::Subsystem(_) => SshKind::Sftp,
        }
    }

    /// The command line, `shell`, or `subsystem NAME`.
    #[must_use]
    pub fn subject(&self) -> String {
        match self {
            Self::Exec(line) => line.clone(),
            Self::Shell => "shell".to_owned(),
            Self::Subsystem(name) => format!("subsystem {name}"),
        }
    }
}

/// Whether `line` is the server side of legacy scp (`scp -t …` / `scp -f …`).
fn is_scp(line: &str) -> bool {
    let mut words = line.split_whitespace();
    words
        .next()
        .is_some_and(|w| w == "scp" || w.ends_with("/scp"))
        && words.any(|w| {
            w.starts_with('-') && !w.starts_with("--") && (w.contains('t') || w.contains('f'))
        })
}

/// The gate's question for `kind` on `subject` by the client logged in as `login`.
/// scp and the others are matched by kind (their line is kept as the subject). An
/// exec needs its line split ([`start_ask`]): asked here, it is unparsed, the most
/// restrictive.
#[must_use]
pub fn ask(session: &Session, kind: SshKind, login: &str, subject: String) -> Ask {
    let commands = (kind != SshKind::Exec).then(Vec::new);
    Ask {
        principal: session.principal.clone(),
        target: session.target.name.clone(),
        protocol: "ssh".to_owned(),
        action: Action::Ssh {
            ssh: kind,
            login: login.to_owned(),
            subject,
            commands,
            file: None,
        },
        justification: None,
    }
}

/// The gate's question for what a session channel asks to start: an exec's line is
/// split into its simple commands first, in the bounded parse workers.
pub async fn start_ask(session: &Session, start: &Start, login: &str) -> Ask {
    let kind = start.kind();
    let mut ask = ask(session, kind, login, start.subject());
    if let (Start::Exec(line), SshKind::Exec) = (start, kind)
        && let Action::Ssh { commands, .. } = &mut ask.action
    {
        *commands = match command::pool::split_async(line.clone()).await {
            Split::Commands(c) => Some(c),
            Split::Unparsed => None,
        };
    }
    ask
}

/// The gate's question for one SFTP file operation (`name`, e.g. `remove`) doing
/// `ops` on `paths`; the subject is `NAME PATH…`.
#[must_use]
pub fn file_ask(
    session: &Session,
    login: &str,
    name: &str,
    ops: Vec<FileOp>,
    paths: Vec<String>,
) -> Ask {
    let subject = format!("{name} {}", paths.join(" "));
    let mut ask = ask(session, SshKind::Sftp, login, subject);
    if let Action::Ssh { file, .. } = &mut ask.action {
        *file = Some((ops, paths));
    }
    ask
}

/// The line a client sees while its action is held.
#[must_use]
pub fn held_line(kind: SshKind, request: &str, hint: &str) -> String {
    format!(
        "portcullis: this {kind} is held for approval (request {request}); it runs when \
         approved. Approvers run: {hint}. Ctrl-C withdraws it.\r\n"
    )
}

/// The line a client sees when its action is refused: what happened and who decided.
#[must_use]
pub fn refused_line(kind: SshKind, outcome: &ActionOutcome) -> String {
    format!("portcullis: {kind} refused: {}\r\n", outcome.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_scp_is_its_own_kind() {
        assert_eq!(Start::Exec("scp -t /tmp/x".into()).kind(), SshKind::Scp);
        assert_eq!(Start::Exec("scp -r -f dir".into()).kind(), SshKind::Scp);
        assert_eq!(Start::Exec("scpx -t".into()).kind(), SshKind::Exec);
        assert_eq!(Start::Exec("ls -t".into()).kind(), SshKind::Exec);
        assert_eq!(Start::Subsystem("sftp".into()).kind(), SshKind::Sftp);
    }
}
