//! Issue 18 (SSH), item 3: each SFTP file operation is an action of its own. A real
//! Debian `sshd` on a loopback alias at port 22, the real OpenSSH `sftp` client run
//! as `nobody` through the eBPF redirect; a rule denies `remove` under one directory
//! while downloads from it work, and every operation is recorded with its path.
#![expect(
    clippy::panic,
    clippy::indexing_slicing,
    reason = "root tests panic with a message"
)]

use portcullis_tests::sshproxy::{scratch, setup, text};
use serde_json::Value;

/// The connection allowed; removing anything under `kept` denied.
fn rules(kept: &str) -> String {
    format!(
        r#"
[[rule]]
name = "connect"
targets = ["box"]
action = "allow"

[[rule]]
name = "keep-archives"
targets = ["box"]
ssh = ["sftp"]
file_ops = ["remove", "rmdir", "rename"]
files = ["{kept}/*"]
action = "deny"
description = "archives are never removed through the gateway"
"#
    )
}

/// The `sftp_file` events of the ended SSH sessions, waiting for them to be recorded.
fn file_events(s: &portcullis_tests::sshproxy::Setup, want: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let events: Vec<Value> =
            s.d.sessions()
                .unwrap_or_default()
                .iter()
                .filter(|x| x["protocol"] == "ssh" && !x["ended_at"].is_null())
                .filter_map(|x| x["id"].as_str().map(str::to_owned))
                .flat_map(|id| s.events_of(&id))
                .filter(|e| e["kind"] == "sftp_file")
                .collect();
        if events.len() >= want || std::time::Instant::now() > deadline {
            return events;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn a_rule_denies_one_sftp_operation_under_a_path_and_each_is_recorded() {
    let remote = scratch();
    let kept = remote.path().join("kept");
    std::fs::create_dir(&kept).unwrap_or_else(|e| panic!("{e}"));
    let Some(s) = setup(
        "ssh-sftp-ops",
        "127.0.0.75",
        &rules(&kept.display().to_string()),
    ) else {
        return;
    };
    let archive = kept.join("a.txt");
    std::fs::write(&archive, "archive body\n").unwrap_or_else(|e| panic!("{e}"));
    let local = scratch();
    let got = local.path().join("got.txt");
    let scratch_file = remote.path().join("scratch.txt");
    std::fs::write(&scratch_file, "scratch\n").unwrap_or_else(|e| panic!("{e}"));
    let batch = local.path().join("batch");
    // Outside the kept directory a remove is allowed; inside it the batch stops.
    std::fs::write(
        &batch,
        format!(
            "get {} {}\nrm {}\nrm {}\n",
            archive.display(),
            got.display(),
            scratch_file.display(),
            archive.display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let host = s.sshd.addr.ip().to_string();
    let out = s
        .client(&[
            "/usr/bin/sftp",
            "-o",
            "BatchMode=yes",
            "-b",
            &batch.display().to_string(),
            &host,
        ])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let (stdout, stderr) = text(&out);
    assert!(
        !out.status.success(),
        "the rm must fail: {stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("keep-archives") && stderr.contains("never removed"),
        "the client is told who refused and why: {stdout}\n{stderr}\n{}",
        s.d.log()
    );
    assert_eq!(
        std::fs::read_to_string(&got).unwrap_or_default(),
        "archive body\n",
        "the download worked: {stderr}"
    );
    assert!(archive.exists(), "the archive was removed");
    assert!(!scratch_file.exists(), "the allowed remove did not happen");

    let events = file_events(&s, 3);
    let find = |op: &str, verdict: &str| {
        events
            .iter()
            .find(|e| e["op"] == op && e["verdict"] == verdict)
            .unwrap_or_else(|| panic!("no {op} {verdict} in {events:#?}"))
    };
    let open = find("open", "allowed");
    assert_eq!(open["paths"][0], archive.display().to_string());
    assert_eq!(open["ops"][0], "read");
    assert_eq!(open["bytes_read"], 13, "{open:#}");
    let removed = find("remove", "allowed");
    assert_eq!(removed["paths"][0], scratch_file.display().to_string());
    assert!(removed["error"].is_null(), "{removed:#}");
    let refused = find("remove", "denied");
    assert_eq!(refused["paths"][0], archive.display().to_string());
    assert_eq!(refused["decided_by"], "keep-archives", "{refused:#}");
}

#[test]
fn a_held_sftp_operation_waits_for_approval_then_happens() {
    let remote = scratch();
    let rules = format!(
        "[[group]]\nname = \"seniors\"\nusers = [\"root\"]\n\n\
         [[rule]]\nname = \"connect\"\ntargets = [\"box\"]\naction = \"allow\"\n\n\
         [[rule]]\nname = \"mkdir-needs-a-senior\"\ntargets = [\"box\"]\n\
         file_ops = [\"mkdir\"]\nfiles = [\"{}/*\"]\naction = \"review\"\n\
         approvers = [\"seniors\"]\ntimeout = \"60s\"\n",
        remote.path().display()
    );
    let Some(s) = setup("ssh-sftp-hold", "127.0.0.81", &rules) else {
        return;
    };
    let made = remote.path().join("made");
    let local = scratch();
    let batch = local.path().join("batch");
    std::fs::write(&batch, format!("mkdir {}\n", made.display())).unwrap_or_else(|e| panic!("{e}"));
    let host = s.sshd.addr.ip().to_string();
    let child = s
        .client(&[
            "/usr/bin/sftp",
            "-o",
            "BatchMode=yes",
            "-b",
            &batch.display().to_string(),
            &host,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let request = s.wait_request();
    let id = request["id"].as_str().unwrap_or_default().to_owned();
    assert!(!made.exists(), "a held mkdir must not happen");
    let out = s.d.cli(&["approve", &id, "--reason", "ok"]);
    assert!(out.status.success(), "{}", text(&out).1);
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}\n{}", s.d.log());
    assert!(
        stderr.contains(&format!("portcullis approve {id}")),
        "the client is told how to approve: {stderr}"
    );
    assert!(made.is_dir());
    let events = file_events(&s, 1);
    let mkdir = events
        .iter()
        .find(|e| e["op"] == "mkdir")
        .unwrap_or_else(|| panic!("no mkdir in {events:#?}"));
    assert_eq!(mkdir["verdict"], "approved");
    assert_eq!(mkdir["request_id"], id.as_str());
}
