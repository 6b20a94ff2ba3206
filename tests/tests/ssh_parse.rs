//! Issue 18 (SSH): a command line that blows up the shell parser (brush-parser)
//! cannot take the daemon down. The line below passes every cheap guard in
//! `proto/ssh/command/guards.rs` and still makes the raw parser run away (found by
//! the `ssh_command` fuzz target in its in-process mode); the daemon parses it in a
//! bounded worker process, which is killed, and the exec is refused as unparsed
//! while other sessions go on being served.
#![expect(clippy::panic, reason = "root tests panic with a message")]

use portcullis_tests::sshproxy::{setup, text};
use serde_json::Value;
use std::process::Stdio;

/// Every exec that parses is allowed; no rule allows unparsed lines. (A command
/// rule such as `rm *` would also refuse an unparsed line, naming itself.)
const RULES: &str = r#"
[[rule]]
name = "connect"
targets = ["box"]
action = "allow"
"#;

/// Passes the guards (its `<<` are here-strings and comments); the raw parser's
/// memory grows past the worker's limit on it within seconds (found by the
/// `ssh_command` fuzz target in its in-process mode; kept as the seed
/// `tests/fuzz/seeds/ssh_command/herestring-oom-passes-guards`).
const BLOWUP: &str = "ls;rm#\u{10}\u{10}\u{1c}<<<<<\u{c}\u{c}\u{c}\u{c}\u{c}\u{c}\u{c}\u{c}\u{c}\
    <<<<4\u{c}\u{c}\u{c}\u{c}<<<<<\u{c}?sm;#r\u{10}\u{10}\u{1c}<<<<<\u{c}A=(x\u{c}\u{c})";

fn blowup() -> String {
    BLOWUP.to_owned()
}

#[test]
fn a_line_that_blows_up_the_parser_is_refused_and_the_daemon_stays_up() {
    let Some(s) = setup("ssh-parse", "127.0.0.114", RULES) else {
        return;
    };
    let host = s.sshd.addr.ip().to_string();
    // Several at once, to use up the worker pool, while another session works.
    let line = blowup();
    let hostile: Vec<_> = (0..3)
        .map(|_| {
            s.client(&["/usr/bin/ssh", "-o", "BatchMode=yes", &host, &line])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run ssh: {e}"))
        })
        .collect();
    let out = s.ssh(&[], &["echo served"]);
    assert_eq!(text(&out).0, "served\n", "{}\n{}", text(&out).1, s.d.log());
    for child in hostile {
        let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
        let (stdout, stderr) = text(&out);
        assert_eq!(
            out.status.code(),
            Some(126),
            "{stdout}\n{stderr}\n{}",
            s.d.log()
        );
        assert!(
            stderr.contains("could not be parsed"),
            "refused as unparsed: {stderr}"
        );
    }
    // The daemon is the same process, still serving, and parsing again.
    assert!(
        s.d.pid()
            .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
    );
    let out = s.ssh(&[], &["ls / >/dev/null; echo parsed"]);
    assert_eq!(text(&out).0, "parsed\n", "{}", text(&out).1);
    let out = s.ssh(&[], &["echo 'unterminated"]);
    let stderr = text(&out).1;
    assert!(
        out.status.code() == Some(126) && stderr.contains("could not be parsed"),
        "{stderr}"
    );
    let log = s.d.log();
    assert!(
        log.contains("The command-line parser took too long")
            || log.contains("The command-line parser's worker ended"),
        "the worker was stopped, not the daemon: {log}"
    );
    let sessions = s.d.sessions().unwrap_or_else(|e| panic!("{e:#}"));
    let refused = sessions
        .iter()
        .filter(|x: &&Value| x["protocol"] == "ssh")
        .count();
    assert!(refused >= 6, "every session was recorded: {sessions:#?}");
}
