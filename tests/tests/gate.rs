//! Issue 3 (Gate): review holds and the approval workflow, end to end, with real
//! eBPF interception, a real daemon, real clients and the real CLI as approvers.
#![expect(
    clippy::panic,
    clippy::indexing_slicing,
    reason = "root tests panic with a message"
)]

use portcullis_tests::{
    cgroup::{TestCgroup, can_run_ebpf_tests},
    daemon::TestDaemon,
    net::{CLIENT_PY, EchoServer, run_client},
};
use serde_json::Value;
use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpListener,
    process::{Child, Output, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// System accounts used as people: `daemon` and `bin` approve, `sys` is an
/// escalation approver, `nobody` is a plain user.
const DAEMON: (u32, u32) = (1, 1);
const BIN: (u32, u32) = (2, 2);
const SYS: (u32, u32) = (3, 3);
const NOBODY: (u32, u32) = (65534, 65534);

/// Target `echo` at `addr`; `rule` is the body of the review rule after its name.
fn policy(addr: &str, rule: &str, extra: &str) -> String {
    format!(
        "[[target]]\nname = \"echo\"\nprotocol = \"tcp\"\naddress = \"{addr}\"\n\n\
         [[group]]\nname = \"approvers\"\nusers = [\"daemon\", \"bin\", \"root\"]\n\n\
         [[group]]\nname = \"oncall\"\nusers = [\"sys\"]\n\n\
         [[rule]]\nname = \"needs-review\"\ntargets = [\"echo\"]\naction = \"review\"\napprovers = [\"approvers\"]\n{rule}\n{extra}"
    )
}

struct Setup {
    echo: EchoServer,
    cg: TestCgroup,
    d: TestDaemon,
}

fn setup(name: &str, rule: &str, extra_policy: &str, extra_config: &str) -> Option<Setup> {
    if !can_run_ebpf_tests(name) {
        return None;
    }
    let echo = EchoServer::start("127.0.0.2").unwrap_or_else(|e| panic!("{e}"));
    let cg = TestCgroup::new(name).unwrap_or_else(|e| panic!("{e}"));
    let d = TestDaemon::start(
        name,
        &cg,
        &policy(&echo.addr.to_string(), rule, extra_policy),
        extra_config,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    Some(Setup { echo, cg, d })
}

impl Setup {
    /// Starts the echo client in the background (it waits up to 10 s for its echo).
    fn client(&self, user: Option<(u32, u32)>) -> Child {
        let port = self.echo.addr.port().to_string();
        self.cg
            .command(
                user,
                &["/usr/bin/python3", "-c", CLIENT_PY, "127.0.0.2", &port],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Waits for a request matching `pred` in `approvals --all`.
    fn request(&self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self.d.cli(&["approvals", "--all", "--json"]);
            let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            if let Some(r) = list.as_array().and_then(|l| l.iter().find(|r| pred(r))) {
                return r.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no matching request; have {list:#}\n{}",
                self.d.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pending(&self) -> Value {
        self.request(|r| r["status"] == "pending")
    }

    fn decide(&self, who: (u32, u32), verb: &str, id: &str, reason: &str) -> Output {
        let mut args = vec![verb, id];
        if !reason.is_empty() {
            args.extend(["--reason", reason]);
        }
        self.d.cli_as(who.0, who.1, &args)
    }
}

fn finish(child: Child) -> Value {
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("client JSON: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn served(v: &Value) -> bool {
    v["reply"] == "hello portcullis\n"
}

#[test]
fn held_connection_proceeds_after_approval() {
    let Some(s) = setup("hold-approve", "", "", "") else {
        return;
    };
    let child = s.client(Some(NOBODY));
    let r = s.pending();
    assert_eq!(r["target"], "echo");
    assert_eq!(r["principal"]["user"], "nobody");
    assert_eq!(r["summary"], "open a connection");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        s.d.sessions()
            .unwrap_or_default()
            .iter()
            .all(|x| x["outcome"] != "open"),
        "nothing may reach the target while held"
    );

    let id = r["id"].as_str().unwrap_or_default();
    let ok = s.decide(DAEMON, "approve", &id[..12], "looks fine");
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(text(&ok).contains("approved"), "{}", text(&ok));
    let out = finish(child);
    assert!(served(&out), "{out}\n{}", s.d.log());
    let session =
        s.d.wait_session(|x| x["outcome"] == "closed")
            .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        session["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("approved by daemon"),
        "{session}"
    );
}

#[test]
fn denied_request_refuses_the_client_with_reason_and_decider() {
    let Some(s) = setup("hold-deny", "", "", "") else {
        return;
    };
    let child = s.client(Some(NOBODY));
    let id = s.pending()["id"].as_str().unwrap_or_default().to_owned();
    let no_reason = s.d.cli_as(BIN.0, BIN.1, &["deny", &id]);
    assert!(!no_reason.status.success(), "a deny needs a reason");
    let denied = s.decide(BIN, "deny", &id, "not during the freeze");
    assert!(denied.status.success(), "{}", text(&denied));
    let out = finish(child);
    assert!(!served(&out), "{out}");
    let session =
        s.d.wait_session(|x| x["outcome"] == "denied")
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        session["reason"],
        format!("request {id} denied by bin: not during the freeze")
    );
    let again = s.decide(DAEMON, "approve", &id, "");
    assert!(
        text(&again).contains("already denied"),
        "a deny is final: {}",
        text(&again)
    );
}

#[test]
fn timeout_denies() {
    let Some(s) = setup("hold-timeout", "timeout = \"1s\"\n", "", "") else {
        return;
    };
    let child = s.client(Some(NOBODY));
    let out = finish(child);
    assert!(!served(&out), "{out}");
    let r = s.request(|r| r["status"] == "timeout");
    assert_eq!(r["decided_by"], "timeout");
    let session =
        s.d.wait_session(|x| x["outcome"] == "denied")
            .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        session["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("denied by timeout"),
        "{session}"
    );
}

#[test]
fn timeout_escalates_then_escalation_approver_approves() {
    let rule = "timeout = \"1s\"\non_timeout = \"escalate\"\nescalate_to = [\"oncall\"]\nescalation_timeout = \"30s\"\n";
    let Some(s) = setup("hold-escalate", rule, "", "") else {
        return;
    };
    let child = s.client(Some(NOBODY));
    let r = s.request(|r| r["stage"] == "escalated" && r["status"] == "pending");
    let id = r["id"].as_str().unwrap_or_default();
    let first_stage = s.decide(DAEMON, "approve", id, "");
    assert!(
        text(&first_stage).contains("not in the approver groups"),
        "after escalation only oncall decides: {}",
        text(&first_stage)
    );
    let ok = s.decide(SYS, "approve", id, "");
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(served(&finish(child)));
    let metrics = text(&s.d.cli(&["metrics"]));
    assert!(
        metrics.contains("portcullis_escalations_total{target=\"echo\"} 1"),
        "{metrics}"
    );
}

#[test]
fn quorum_of_two_needs_two_distinct_approvers() {
    let Some(s) = setup("hold-quorum", "approvals = 2\n", "", "") else {
        return;
    };
    let child = s.client(Some(NOBODY));
    let id = s.pending()["id"].as_str().unwrap_or_default().to_owned();
    let one = s.decide(DAEMON, "approve", &id, "");
    assert!(text(&one).contains("approval 1 of 2"), "{}", text(&one));
    let twice = s.decide(DAEMON, "approve", &id, "");
    assert!(
        !twice.status.success() && text(&twice).contains("already approved"),
        "{}",
        text(&twice)
    );
    assert_eq!(s.request(|r| r["id"] == id.as_str())["status"], "pending");
    let two = s.decide(BIN, "approve", &id, "");
    assert!(two.status.success(), "{}", text(&two));
    assert!(served(&finish(child)));
    let r = s.request(|r| r["id"] == id.as_str());
    assert_eq!(r["status"], "approved");
    assert_eq!(r["approvals"].as_array().map(Vec::len), Some(2));
}

#[test]
fn requester_and_non_approvers_cannot_approve() {
    let Some(s) = setup("hold-self", "", "", "") else {
        return;
    };
    // `daemon` asks; `daemon` is an approver but may not approve its own request.
    let child = s.client(Some(DAEMON));
    let id = s.pending()["id"].as_str().unwrap_or_default().to_owned();
    let own = s.decide(DAEMON, "approve", &id, "");
    assert!(
        !own.status.success() && text(&own).contains("yourself"),
        "{}",
        text(&own)
    );
    let outsider = s.decide(SYS, "approve", &id, "");
    assert!(
        !outsider.status.success() && text(&outsider).contains("not in the approver groups"),
        "{}",
        text(&outsider)
    );
    let stranger = s.decide(NOBODY, "approve", &id, "");
    assert!(!stranger.status.success(), "{}", text(&stranger));
    let ok = s.decide(BIN, "approve", &id, "");
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(served(&finish(child)));
}

#[test]
fn admin_cannot_approve_own_request() {
    let Some(s) = setup("hold-admin-self", "", "", "") else {
        return;
    };
    let child = s.client(None);
    let id = s.pending()["id"].as_str().unwrap_or_default().to_owned();
    let own = s.d.cli(&["approve", &id]);
    assert!(
        !own.status.success() && text(&own).contains("yourself"),
        "root asked, root may not approve: {}",
        text(&own)
    );
    assert!(s.decide(BIN, "approve", &id, "").status.success());
    assert!(served(&finish(child)));
}

#[test]
fn trusted_principal_skips_review_and_is_recorded() {
    let bypass = "[[rule]]\nname = \"trusted-automation\"\ntargets = [\"echo\"]\nwho = { uids = [65534] }\naction = \"allow\"\nskip_review = true\n";
    let Some(s) = setup("hold-bypass", "", bypass, "") else {
        return;
    };
    let out = run_client(s.cg.command(
        Some(NOBODY),
        &[
            "/usr/bin/python3",
            "-c",
            CLIENT_PY,
            "127.0.0.2",
            &s.echo.addr.port().to_string(),
        ],
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(served(&out), "{out}");
    let session =
        s.d.wait_session(|x| x["outcome"] == "closed")
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(session["rule"], "trusted-automation");
    let list: Value = serde_json::from_slice(&s.d.cli(&["approvals", "--all", "--json"]).stdout)
        .unwrap_or(Value::Null);
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(0),
        "no review was asked: {list}"
    );
}

#[test]
fn client_that_leaves_while_held_abandons_the_request() {
    let Some(s) = setup("hold-abandon", "", "", "") else {
        return;
    };
    let mut child = s.client(Some(NOBODY));
    let id = s.pending()["id"].as_str().unwrap_or_default().to_owned();
    let _ = child.kill();
    let _ = child.wait();
    let r = s.request(|r| r["id"] == id.as_str() && r["status"] != "pending");
    assert_eq!(r["status"], "abandoned");
    let late = s.decide(BIN, "approve", &id, "");
    assert!(
        !late.status.success() && text(&late).contains("already abandoned"),
        "{}",
        text(&late)
    );
}

#[test]
fn restart_marks_pending_requests_abandoned() {
    let Some(mut s) = setup("hold-restart", "", "", "") else {
        return;
    };
    let mut child = s.client(Some(NOBODY));
    let id = s.pending()["id"].as_str().unwrap_or_default().to_owned();
    s.d.kill9();
    let _ = child.kill();
    let _ = child.wait();
    s.d.spawn().unwrap_or_else(|e| panic!("{e}"));
    let r = s.request(|r| r["id"] == id.as_str());
    assert_eq!(r["status"], "abandoned", "{r}");
    let late = s.decide(BIN, "approve", &id, "");
    assert!(
        !late.status.success(),
        "an abandoned request can never be approved into effect"
    );
}

#[test]
fn shutdown_denies_held_actions() {
    let Some(mut s) = setup("hold-shutdown", "", "", "") else {
        return;
    };
    let child = s.client(Some(NOBODY));
    let id = s.pending()["id"].as_str().unwrap_or_default().to_owned();
    let status = s.d.stop().unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success());
    assert!(
        !served(&finish(child)),
        "a shutdown never releases a held action"
    );
    s.d.spawn().unwrap_or_else(|e| panic!("{e}"));
    let r = s.request(|r| r["id"] == id.as_str());
    assert_eq!(r["status"], "denied");
    assert_eq!(r["decided_by"], "portcullis");
}

#[test]
fn webhook_receives_request_and_decision_as_json() {
    let receiver = Receiver::start();
    let config = format!(
        "[[webhook]]\nname = \"test\"\nurl = \"http://{}/hook\"\n",
        receiver.addr
    );
    let Some(s) = setup("hold-webhook", "", "", &config) else {
        return;
    };
    let child = s.client(Some(NOBODY));
    let id = s.pending()["id"].as_str().unwrap_or_default().to_owned();
    assert!(s.decide(BIN, "approve", &id, "").status.success());
    assert!(served(&finish(child)));
    let events = receiver.wait_for(2);
    assert_eq!(events[0]["kind"], "request_created");
    assert_eq!(events[0]["request_id"], id.as_str());
    assert_eq!(events[0]["target"], "echo");
    assert_eq!(
        events[0]["approve_hint"],
        format!("portcullis approve {id}")
    );
    assert_eq!(events[1]["kind"], "request_decided");
    assert_eq!(events[1]["status"], "approved");
    assert_eq!(events[1]["decided_by"], "bin");
    let metrics = text(&s.d.cli(&["metrics"]));
    assert!(
        metrics
            .contains("portcullis_approval_requests_total{target=\"echo\",outcome=\"approved\"} 1"),
        "{metrics}"
    );
}

/// A minimal HTTP receiver on loopback that keeps every JSON body sent to it.
struct Receiver {
    addr: std::net::SocketAddr,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&bodies);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0u8; len];
                let _ = reader.read_exact(&mut body);
                if let Ok(v) = serde_json::from_slice(&body) {
                    keep.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(v);
                }
                let _ = reader.get_mut().write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        Self { addr, bodies }
    }

    fn wait_for(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self
                .bodies
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            if got.len() >= n || Instant::now() > deadline {
                assert!(
                    got.len() >= n,
                    "webhook got {} of {n} events: {got:#?}",
                    got.len()
                );
                return got;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn two_gateways_sharing_postgres_decide_each_others_requests() {
    if !can_run_ebpf_tests("two-gateways") {
        return;
    }
    let Some(pg) =
        portcullis_tests::postgres::PgServer::start_or_skip().unwrap_or_else(|e| panic!("{e}"))
    else {
        return;
    };
    pg.create_database("shared")
        .unwrap_or_else(|e| panic!("{e}"));
    let url = pg.url("shared");
    let echo = EchoServer::start("127.0.0.2").unwrap_or_else(|e| panic!("{e}"));
    let rules = policy(&echo.addr.to_string(), "", "");
    let (cg_a, cg_b) = (
        TestCgroup::new("gw-a").unwrap_or_else(|e| panic!("{e}")),
        TestCgroup::new("gw-b").unwrap_or_else(|e| panic!("{e}")),
    );
    let a = TestDaemon::start_with_store("gw-a", &cg_a, &rules, &url, "gateway = \"gw-a\"\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let b = TestDaemon::start_with_store("gw-b", &cg_b, &rules, &url, "gateway = \"gw-b\"\n")
        .unwrap_or_else(|e| panic!("{e}"));

    // Held on gateway A…
    let port = echo.addr.port().to_string();
    let child = cg_a
        .command(
            Some(NOBODY),
            &["/usr/bin/python3", "-c", CLIENT_PY, "127.0.0.2", &port],
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let request = loop {
        let list: Value =
            serde_json::from_slice(&b.cli(&["approvals", "--json"]).stdout).unwrap_or(Value::Null);
        if let Some(r) = list.as_array().and_then(|l| l.first()).cloned() {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "gateway B never saw A's request\n{}",
            a.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(request["host"], "gw-a");
    // …approved through gateway B's CLI: A's held connection proceeds.
    let id = request["id"].as_str().unwrap_or_default();
    let ok = b.cli_as(DAEMON.0, DAEMON.1, &["approve", id]);
    assert!(ok.status.success(), "{}", text(&ok));
    let out = finish(child);
    assert!(served(&out), "{out}\nA:\n{}", a.log());
    let session = a
        .wait_session(|x| x["outcome"] == "closed")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(session["host"], "gw-a");
}

#[test]
fn audit_verify_detects_a_row_edited_in_the_database() {
    let Some(s) = setup("audit", "", "", "") else {
        return;
    };
    let child = s.client(Some(NOBODY));
    let id = s.pending()["id"].as_str().unwrap_or_default().to_owned();
    assert!(s.decide(BIN, "approve", &id, "ok").status.success());
    assert!(served(&finish(child)));
    s.d.wait_session(|x| x["outcome"] == "closed")
        .unwrap_or_else(|e| panic!("{e}"));

    let ok = s.d.cli(&["audit", "verify"]);
    assert!(ok.status.success(), "{}", text(&ok));
    // Every decision and session event is in the export, in chain order.
    let export = s.d.cli(&["sessions", "export", "--since", "1h"]);
    let kinds: Vec<String> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| v["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    for kind in [
        "request_created",
        "request_approval",
        "request_decided",
        "session_opened",
        "session_closed",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "{kind} missing from export: {kinds:?}"
        );
    }

    // Someone with the database file rewrites who approved.
    let db = s.d.dir().join("state/portcullis.db");
    let tamper = "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\n\
        for (name,) in c.execute(\"SELECT name FROM sqlite_master WHERE type='trigger'\").fetchall(): c.execute('DROP TRIGGER ' + name)\n\
        c.execute(\"UPDATE audit SET actor='mallory' WHERE kind='request_approval'\")\nc.commit()\n";
    let edit = std::process::Command::new("/usr/bin/python3")
        .args(["-c", tamper])
        .arg(&db)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(edit.status.success(), "{}", text(&edit));
    let bad = s.d.cli(&["audit", "verify", "--json"]);
    assert!(!bad.status.success(), "tampering must be detected");
    let report: Value = serde_json::from_slice(&bad.stdout).unwrap_or(Value::Null);
    let approval_seq = String::from_utf8_lossy(&export.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["kind"] == "request_approval")
        .map(|v| v["seq"].clone());
    assert_eq!(
        Some(report["report"]["first_bad"]["seq"].clone()),
        approval_seq,
        "{report:#}"
    );
    assert!(
        report["summary"]
            .as_str()
            .unwrap_or_default()
            .contains("hash does not match"),
        "{report:#}"
    );
}
