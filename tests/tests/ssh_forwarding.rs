//! Issue 18 (SSH): agent forwarding relayed when a rule allows it, refused (and
//! recorded) when none does. Real OpenSSH end to end: `ssh -A` as `nobody` with its
//! own `ssh-agent` holding a fresh key, through the proxy to a real `sshd`, where
//! `ssh-add -l` must list that key only when the policy allows `ssh = ["agent"]`.
#![expect(
    clippy::panic,
    clippy::indexing_slicing,
    reason = "root tests panic with a message"
)]

use portcullis_tests::sshproxy::{Setup, scratch, setup, text};
use serde_json::Value;
use std::process::Command;

/// The connection and every command allowed; `extra` adds the rules under test.
fn rules(extra: &str) -> String {
    format!(
        r#"
[[rule]]
name = "connect"
targets = ["box"]
action = "allow"
{extra}"#
    )
}

const AGENT_ALLOWED: &str = r#"
[[rule]]
name = "agent-ok"
targets = ["box"]
ssh = ["agent"]
action = "allow"
"#;

/// Runs, as `nobody`, an `ssh-agent` holding a key made for the test, then
/// `ssh -A HOST 'ssh-add -l; echo sock=$SSH_AUTH_SOCK'` with that agent. Returns
/// the key's fingerprint and what ssh printed (stdout, stderr).
fn ssh_with_agent(s: &Setup) -> (String, String, String) {
    let dir = scratch();
    let d = dir.path().display();
    let host = s.sshd.addr.ip().to_string();
    let script = format!(
        "cd {d} && ssh-keygen -q -t ed25519 -N '' -C pc-agent-test -f key && \
         eval \"$(ssh-agent -s -a {d}/agent.sock)\" >/dev/null && ssh-add -q key && \
         ssh -A -o BatchMode=yes {host} 'ssh-add -l; echo sock=$SSH_AUTH_SOCK'; \
         rc=$?; kill \"$SSH_AGENT_PID\"; exit $rc"
    );
    let out = s
        .client(&["/bin/sh", "-c", &script])
        .output()
        .unwrap_or_else(|e| panic!("cannot run ssh: {e}"));
    let (stdout, stderr) = text(&out);
    let fingerprint = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(dir.path().join("key.pub"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let fingerprint = text(&fingerprint).0;
    let fingerprint = fingerprint
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no fingerprint: {stderr}"))
        .to_owned();
    (fingerprint, stdout, stderr)
}

fn events_of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["kind"] == kind).collect()
}

#[test]
fn agent_forwarding_is_relayed_when_a_rule_allows_it() {
    let Some(s) = setup("ssh-agent-ok", "127.0.0.111", &rules(AGENT_ALLOWED)) else {
        return;
    };
    let (fingerprint, stdout, stderr) = ssh_with_agent(&s);
    assert!(
        stdout.contains(&fingerprint) && stdout.contains("pc-agent-test"),
        "the target lists the client's key {fingerprint}: {stdout}\n{stderr}\n{}\n{}",
        s.d.log(),
        s.sshd.log()
    );
    assert!(!stdout.contains("sock=\n"), "{stdout}");
    let events = s.events();
    let agent = events_of_kind(&events, "agent");
    assert!(
        agent.iter().any(|e| e["verdict"] == "allowed" && e["decided_by"] == "agent-ok"),
        "the request was decided by the rule: {events:#?}"
    );
    assert!(
        agent
            .iter()
            .any(|e| e["bytes_in"].as_u64().unwrap_or(0) > 0
                && e["bytes_out"].as_u64().unwrap_or(0) > 0),
        "the agent connection was recorded with its bytes: {events:#?}"
    );
}

#[test]
fn agent_forwarding_is_refused_and_recorded_without_a_rule() {
    let Some(s) = setup("ssh-agent-no", "127.0.0.112", &rules("")) else {
        return;
    };
    let (fingerprint, stdout, stderr) = ssh_with_agent(&s);
    assert!(
        stdout.contains("sock=\n") && !stdout.contains(&fingerprint),
        "no agent on the target: {stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("Could not open a connection to your authentication agent")
            || stdout.contains("Could not open a connection to your authentication agent"),
        "ssh-add -l fails on the target: {stdout}\n{stderr}"
    );
    let events = s.events();
    let agent = events_of_kind(&events, "agent");
    assert!(
        agent.len() == 1 && agent[0]["verdict"] == "denied",
        "one refused agent request, no agent channel: {events:#?}"
    );
}
