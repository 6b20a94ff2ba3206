//! A typed shell line as the gate sees it (`typed_line` decides when): its
//! simple commands, read past a prompt printed after typing began; the gate's
//! question (a `shell` action with those commands); the client waiting while it
//! is held; and its event.

use super::{
    command::{self, Split},
    recording,
    server::Conn,
    typed_line::KIND,
};
use crate::{
    gate::{Action, ActionOutcome, Ask, Gone, Waiting},
    policy::SshKind,
};
use serde_json::json;
use std::sync::{Mutex, PoisonError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Records a decided typed line (masked) and waits until the record is durable:
/// the line's Enter (or refusal) leaves after it. `false` when it cannot be made
/// durable (the session is ended).
pub(super) async fn record(conn: &Conn, line: &str, outcome: &ActionOutcome) -> bool {
    let line = conn.mask(line);
    let summary = format!("shell line: {line}");
    let details = json!({ "login": conn.login, "line": line });
    let finished = recording::starting(KIND, summary, details);
    let durable = recording::record_synced(&conn.session, outcome, finished).await;
    if !durable {
        conn.not_recorded().await;
    }
    durable
}

/// What shell prompts end with, to find one printed after typing began.
const PROMPT_ENDS: [&str; 4] = ["$ ", "# ", "% ", "> "];
/// How far into a line such a prompt is looked for.
const PROMPT_REACH: usize = 256;

/// The simple commands of `line` (`None`: unparsed). When its prompt was not on the
/// screen as typing began (`blank`), the line may start with one: the commands
/// after the first prompt ending are added, so a restricting rule sees them.
/// Split in the bounded parse workers, as exec lines are.
pub(super) async fn commands_of(line: &str, blank: bool) -> Option<Vec<String>> {
    let Split::Commands(mut commands) = command::pool::split_async(line.to_owned()).await else {
        return None;
    };
    let after = PROMPT_ENDS
        .iter()
        .filter_map(|end| line.find(end).map(|at| at + end.len()))
        .filter(|at| *at <= PROMPT_REACH)
        .min();
    if let Some(rest) = after.filter(|_| blank).and_then(|at| line.get(at..)) {
        match command::pool::split_async(rest.to_owned()).await {
            Split::Commands(more) => commands.extend(more),
            Split::Unparsed => return None,
        }
    }
    Some(commands)
}

/// The simple commands of every line of a pasted multi-line block (`None`: one of
/// them is unparsed).
pub(super) async fn commands_of_lines(lines: &[String]) -> Option<Vec<String>> {
    let mut commands = Vec::new();
    for line in lines {
        commands.extend(commands_of(line, false).await?);
    }
    Some(commands)
}

/// The gate's question for a typed line: a `shell` action with its commands
/// (`None`: unparsed).
pub(super) fn typed_ask(conn: &Conn, line: String, commands: Option<Vec<String>>) -> Ask {
    Ask {
        principal: conn.session.principal.clone(),
        target: conn.session.target.name.clone(),
        protocol: "ssh".to_owned(),
        action: Action::Ssh {
            ssh: SshKind::Shell,
            login: conn.login.clone(),
            subject: line,
            commands,
            file: None,
        },
        justification: None,
    }
}

/// What Portcullis itself tells the terminal about a typed line (held, refused).
/// The relay sends it as it sends the target's output, so the session's recording
/// shows it where the user saw it. One message per decided line: small and bounded.
#[derive(Default)]
pub(super) struct Notes {
    text: Mutex<Vec<u8>>,
    ready: Notify,
}

impl Notes {
    /// Queues `message` for the terminal and wakes the relay.
    pub(super) fn push(&self, message: &str) {
        self.lock().extend_from_slice(message.as_bytes());
        self.ready.notify_one();
    }

    /// What is queued, emptied.
    pub(super) fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.lock())
    }

    /// Completes when a message was queued since the last wait.
    pub(super) async fn ready(&self) {
        self.ready.notified().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.text.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The client of a held line, as the gate waits with it.
pub(super) struct LineWait {
    pub(super) notes: std::sync::Arc<Notes>,
    /// Cancelled by the client's Ctrl-C.
    pub(super) withdraw: CancellationToken,
    /// Cancelled when the shell or the connection ends.
    pub(super) left: CancellationToken,
}

impl Waiting for LineWait {
    async fn held(&mut self, request: &str, hint: &str) {
        self.notes.push(&format!(
            "\r\nportcullis: this command line is held for approval (request {request}); it \
             runs when approved. Approvers run: {hint}. Ctrl-C withdraws it.\r\n"
        ));
    }

    async fn gone(&mut self) -> Gone {
        tokio::select! {
            () = self.withdraw.cancelled() => Gone::Cancelled,
            () = self.left.cancelled() => Gone::ClientLeft,
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::policy::{Policy, SshRequest, Verdict};

    fn principal() -> crate::identity::Principal {
        crate::identity::Principal {
            pid: 4242,
            ppid: Some(1),
            uid: 1000,
            gid: 1000,
            user: Some("ann".to_owned()),
            unix_groups: Vec::new(),
            exe: Some("/usr/bin/ssh".to_owned()),
            cmdline: None,
            comm: "ssh".to_owned(),
            cgroup: None,
            idp: None,
        }
    }

    fn policy(rules: &str) -> Policy {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[[target]]\nname = \"box\"\nprotocol = \"ssh\"\naddress = \"127.0.0.9:22\"\n\
             known_hosts = \"/etc/ssh/ssh_known_hosts\"\n\
             [[group]]\nname = \"ops\"\nusers = [\"root\"]\n\
             [[rule]]\nname = \"connect\"\ntargets = [\"box\"]\naction = \"allow\"\n{rules}"
        );
        std::fs::write(dir.path().join("p.toml"), text).unwrap();
        Policy::load_dir(dir.path()).unwrap()
    }

    fn decide(policy: &Policy, commands: Option<&[String]>) -> (Verdict, Option<String>) {
        let who = principal();
        let request = SshRequest {
            kind: SshKind::Shell,
            login: "root",
            commands,
            file: None,
        };
        let d = policy.decide_ssh(&who, "box", &request);
        (d.verdict, d.rule)
    }

    #[test]
    fn typed_lines_are_decided_by_command_rules_not_by_the_shells_own() {
        let p = policy(
            "[[rule]]\nname = \"review-shells\"\ntargets = [\"box\"]\nssh = [\"shell\"]\n\
             action = \"review\"\napprovers = [\"ops\"]\n\
             [[rule]]\nname = \"no-rm\"\ntargets = [\"box\"]\ncommands = [\"rm *\"]\naction = \"deny\"\n\
             [[rule]]\nname = \"halt\"\ntargets = [\"box\"]\nssh = [\"shell\"]\n\
             commands = [\"shutdown *\"]\naction = \"review\"\napprovers = [\"ops\"]\n",
        );
        // The shell itself (no commands): its own rule.
        assert_eq!(decide(&p, Some(&[])).1.as_deref(), Some("review-shells"));
        let ls = ["ls -l".to_owned()];
        assert_eq!(decide(&p, Some(&ls)), (Verdict::Allow, None));
        let rm = ["cd /x".to_owned(), "rm -rf y".to_owned()];
        assert_eq!(decide(&p, Some(&rm)), (Verdict::Deny, Some("no-rm".into())));
        let halt = ["shutdown -h now".to_owned()];
        assert_eq!(
            decide(&p, Some(&halt)),
            (Verdict::Review, Some("halt".into()))
        );
        // Unparsed: the most restrictive command rule.
        assert_eq!(decide(&p, None), (Verdict::Deny, Some("no-rm".into())));
        let reason = p
            .decide_ssh(
                &principal(),
                "box",
                &SshRequest {
                    kind: SshKind::Shell,
                    login: "root",
                    commands: Some(&rm),
                    file: None,
                },
            )
            .reason;
        assert!(reason.contains("typed command line"), "{reason}");
    }

    #[tokio::test]
    async fn a_prompt_printed_after_typing_began_does_not_hide_the_command() {
        assert_eq!(
            commands_of("rm -rf /x", false).await.unwrap(),
            ["rm -rf /x"]
        );
        let both = commands_of("root@box:~# rm -rf /x", true).await.unwrap();
        assert!(both.contains(&"rm -rf /x".to_owned()), "{both:?}");
        assert_eq!(commands_of("echo a > b", false).await.unwrap(), ["echo a"]);
        assert_eq!(commands_of("$ echo '", true).await, None);
    }
}
