//! Issue 4 (PostgreSQL): the wire-protocol proxy, end to end: a real PostgreSQL 15,
//! real eBPF redirection, real psql run as `nobody` with no password, and the real
//! CLI approving and denying held statements.
#![expect(
    clippy::panic,
    clippy::indexing_slicing,
    reason = "root tests panic with a message"
)]

use portcullis_tests::pgproxy::{
    APP_PASSWORD, APP_ROLE, CLIENT_TOKEN, NOBODY, RULES, Setup, setup, setup_with_client_auth,
    setup_with_md5, setup_with_rules, setup_with_tls_refused, text, wait_child,
};
use serde_json::Value;
use std::process::{Output, Stdio};

#[test]
fn psql_logs_in_with_injected_credentials_and_is_recorded() {
    let Some(s) = setup("pg-login") else { return };
    let out = s.psql(&["-c", "SELECT current_user, count(*) FROM accounts"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "psql failed: {stderr}\n{}", s.d.log());
    assert_eq!(stdout.trim(), format!("{APP_ROLE}|10"));

    let statements = s.statements();
    let select = statements
        .iter()
        .find(|st| {
            st["text"]
                .as_str()
                .is_some_and(|t| t.contains("current_user"))
        })
        .unwrap_or_else(|| panic!("statement not recorded: {statements:#?}"));
    assert_eq!(select["verdict"], "allowed");
    assert_eq!(select["classes"], serde_json::json!(["read"]));
    assert_eq!(select["command_tag"], "SELECT 1");
    assert_eq!(select["rows"]["rows"][0][0], APP_ROLE);
    // The password appears nowhere the daemon writes.
    let db = std::fs::read(s.d.dir().join("state/portcullis.db")).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&db).contains(APP_PASSWORD));
    assert!(!s.d.log().contains(APP_PASSWORD));
}

#[test]
fn a_target_that_asks_for_md5_gets_the_injected_password() {
    let Some(s) = setup_with_md5("pg-md5") else {
        return;
    };
    let stored =
        s.pg.psql(
            "postgres",
            &format!("SELECT left(rolpassword, 3) FROM pg_authid WHERE rolname = '{APP_ROLE}'"),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        stored.trim(),
        "md5",
        "the role's password is not stored as MD5"
    );
    let out = s.psql(&["-c", "SELECT current_user"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "psql failed: {stderr}\n{}", s.d.log());
    assert_eq!(stdout.trim(), APP_ROLE);
    assert!(!s.d.log().contains(APP_PASSWORD));
}

#[test]
fn client_auth_demands_the_password_before_the_connection_is_decided() {
    let Some(s) = setup_with_client_auth("pg-client-auth") else {
        return;
    };
    let psql = |password: Option<&str>| {
        let mut cmd = s.psql_command(&["-w", "-c", "SELECT current_user"]);
        if let Some(p) = password {
            cmd.env("PGPASSWORD", p);
        }
        cmd.output()
            .unwrap_or_else(|e| panic!("cannot run psql: {e}"))
    };
    // The right password (SCRAM: it never crosses the wire), then the proxy logs in
    // to the server with its own credentials.
    let out = psql(Some(CLIENT_TOKEN));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "psql failed: {stderr}\n{}", s.d.log());
    assert_eq!(stdout.trim(), APP_ROLE);

    // A wrong password gets PostgreSQL's own message; no password, libpq's.
    let out = psql(Some("gate-token-guess"));
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("password authentication failed for user \"whoever\""),
        "{stderr}"
    );
    let out = psql(None);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("no password supplied"), "{stderr}");

    // Refused before the gate decided: recorded as such, never as a session that ran.
    let refused =
        s.d.wait_session(|x| {
            x["reason"]
                .as_str()
                .is_some_and(|r| r.contains("password authentication failed"))
        })
        .unwrap_or_else(|e| panic!("{e:#}\n{}", s.d.log()));
    assert_eq!(refused["outcome"], "error");
    assert_eq!(refused["protocol"], "postgres");
    // Neither password shows anywhere the daemon writes.
    let db = std::fs::read(s.d.dir().join("state/portcullis.db")).unwrap_or_default();
    let db = String::from_utf8_lossy(&db);
    let log = s.d.log();
    for secret in [CLIENT_TOKEN, APP_PASSWORD, "gate-token-guess"] {
        assert!(
            !db.contains(secret) && !log.contains(secret),
            "{secret} leaked"
        );
    }
}

#[test]
fn denied_statement_gets_42501_and_aborts_the_transaction() {
    let Some(s) = setup("pg-deny") else { return };
    let out = s.psql(&["-c", "TRUNCATE accounts"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("Portcullis denied this statement")
            && stderr.contains("no-destruction")
            && stderr.contains("destructive statements are never run"),
        "unexpected error: {stderr}"
    );
    assert_eq!(s.direct("SELECT count(*) FROM accounts"), "10");

    // Inside a transaction: the insert before the denied statement must not commit.
    let script =
        "BEGIN;\nINSERT INTO accounts VALUES (11, 'eve', 1);\nTRUNCATE accounts;\nCOMMIT;\n";
    let out = s.psql_with_input(
        &s.conninfo("app", "disable"),
        &["-v", "ON_ERROR_STOP=0", "-f", "-"],
        script.as_bytes(),
    );
    let (stdout, stderr) = text(&out);
    assert!(
        stderr.contains("42501") || stderr.contains("Portcullis denied"),
        "{stderr}"
    );
    assert!(
        stdout.contains("ROLLBACK") || stderr.contains("ROLLBACK") || !stdout.contains("COMMIT"),
        "{stdout}"
    );
    assert_eq!(
        s.direct("SELECT count(*) FROM accounts"),
        "10",
        "a partial batch was committed"
    );
}

#[test]
fn held_ddl_runs_when_a_senior_approves() {
    let Some(s) = setup("pg-approve") else { return };
    let child = s
        .psql_command(&[
            "-c",
            "SET portcullis.reason = 'ticket OPS-7: the audit notes table'",
            "-c",
            "CREATE TABLE audit_notes (note text)",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let request = s.wait_request();
    assert!(
        request["action"]["text"]
            .as_str()
            .unwrap_or_default()
            .contains("CREATE TABLE audit_notes"),
        "{request}"
    );
    // The session's `SET portcullis.reason` is shown to the approvers.
    assert_eq!(
        request["justification"], "ticket OPS-7: the audit notes table",
        "{request}"
    );
    assert_eq!(
        s.direct("SELECT to_regclass('audit_notes') IS NULL"),
        "t",
        "ran before approval"
    );
    let id = request["id"].as_str().unwrap_or_default();
    let approve = s.d.cli(&["approve", id, "--reason", "planned change"]);
    assert!(
        approve.status.success(),
        "{}",
        String::from_utf8_lossy(&approve.stderr)
    );
    let out = wait_child(child);
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "psql failed after approval: {stderr}");
    assert!(stderr.contains("held for approval"), "no notice: {stderr}");
    assert_eq!(
        s.direct("SELECT to_regclass('audit_notes') IS NOT NULL"),
        "t"
    );
    let statements = s.statements();
    let create = statements
        .iter()
        .find(|st| {
            st["text"]
                .as_str()
                .is_some_and(|t| t.contains("audit_notes"))
        })
        .unwrap_or_else(|| panic!("{statements:#?}"));
    assert_eq!(create["verdict"], "approved");
    assert_eq!(create["request_id"], id);
}

#[test]
fn held_ddl_denied_by_a_senior_never_runs() {
    let Some(s) = setup("pg-reject") else { return };
    let child = s
        .psql_command(&[
            "-c",
            "/* reason: INC-9 hotfix */ ALTER TABLE accounts ADD COLUMN secret text",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let request = s.wait_request();
    // A leading `/* reason: … */` comment is that statement's justification.
    assert_eq!(request["justification"], "INC-9 hotfix", "{request}");
    let id = request["id"].as_str().unwrap_or_default();
    let deny = s.d.cli(&["deny", id, "--reason", "not during the freeze"]);
    assert!(
        deny.status.success(),
        "{}",
        String::from_utf8_lossy(&deny.stderr)
    );
    let out = wait_child(child);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("root") && stderr.contains("not during the freeze"),
        "the error must name the decider and the reason: {stderr}"
    );
    assert_eq!(
        s.direct("SELECT count(*) FROM information_schema.columns WHERE column_name = 'secret'"),
        "0"
    );
}

#[test]
fn cancel_withdraws_a_held_statement() {
    let Some(s) = setup("pg-cancel") else { return };
    let child = s
        .psql_command(&["-c", "CREATE INDEX ON accounts (owner)"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let request = s.wait_request();
    // psql answers SIGINT with a CancelRequest on a new connection (redirected too).
    let pid = i32::try_from(child.id()).unwrap_or_default();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let out = wait_child(child);
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("canceling statement due to user request"),
        "{stderr}\n{}",
        s.d.log()
    );
    let id = request["id"].as_str().unwrap_or_default();
    let shown = s.d.cli(&["approvals", "--all", "--json"]);
    let all: Value = serde_json::from_slice(&shown.stdout).unwrap_or(Value::Null);
    let ended = all
        .as_array()
        .and_then(|a| a.iter().find(|r| r["id"] == id))
        .unwrap_or_else(|| panic!("{all:#}"));
    assert_eq!(ended["status"], "abandoned");
    assert_eq!(ended["decided_by"], "client", "{ended:#}");
    assert!(
        ended["reason"]
            .as_str()
            .is_some_and(|r| r.contains("cancelled")),
        "{ended:#}"
    );
    assert_eq!(
        s.direct("SELECT count(*) FROM pg_indexes WHERE tablename = 'accounts'"),
        "1"
    );
}

/// The target ending the connection (here: its backend terminated) while a statement
/// is held ends the request as abandoned at once; it is not left pending.
#[test]
fn a_held_statement_is_abandoned_when_the_target_leaves() {
    let Some(s) = setup("pg-server-left") else {
        return;
    };
    let child = s
        .psql_command(&["-c", "CREATE INDEX ON accounts (balance)"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let request = s.wait_request();
    let id = request["id"].as_str().unwrap_or_default();
    assert_eq!(
        s.direct(&format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE usename = '{APP_ROLE}'"
        )),
        "1"
    );
    let out = wait_child(child);
    assert!(
        !out.status.success(),
        "psql cannot succeed without its server"
    );
    let shown = s.d.cli(&["approvals", "--all", "--json"]);
    let all: Value = serde_json::from_slice(&shown.stdout).unwrap_or(Value::Null);
    let ended = all
        .as_array()
        .and_then(|a| a.iter().find(|r| r["id"] == id))
        .unwrap_or_else(|| panic!("{all:#}\n{}", s.d.log()));
    assert_eq!(ended["status"], "abandoned", "{}", s.d.log());
    // The request says who ended it: the target, not the client.
    assert_eq!(ended["decided_by"], "target", "{ended:#}");
    assert!(
        ended["reason"]
            .as_str()
            .is_some_and(|r| r.contains("target closed")),
        "{ended:#}"
    );
    let statements = s.statements();
    let held = statements
        .iter()
        .find(|st| st["request_id"] == id)
        .unwrap_or_else(|| panic!("{statements:#?}"));
    assert_eq!(held["verdict"], "abandoned");
    assert!(
        held["reason"]
            .as_str()
            .is_some_and(|r| r.contains("target closed")),
        "{held}"
    );
    assert_eq!(
        s.direct("SELECT count(*) FROM pg_indexes WHERE tablename = 'accounts'"),
        "1"
    );
}

#[test]
fn backslash_trick_with_standard_conforming_strings_off_is_caught() {
    let Some(s) = setup("pg-scs") else { return };
    // With standard_conforming_strings off the server reads `'a\''` as one string and
    // runs the DROP; a parser assuming the default would see one harmless SELECT.
    let out = s.psql(&[
        "-c",
        "SET standard_conforming_strings = off",
        "-c",
        r"SELECT 'a\'' ; DROP TABLE accounts; --'",
    ]);
    assert!(!out.status.success());
    denied_and_accounts_kept(&s, &out);
}

/// `out` is the gate's denial, and the `accounts` table is still there.
fn denied_and_accounts_kept(s: &Setup, out: &Output) -> String {
    let (_, stderr) = text(out);
    assert!(stderr.contains("Portcullis denied"), "{stderr}");
    assert_eq!(s.direct("SELECT to_regclass('accounts') IS NOT NULL"), "t");
    stderr
}

#[test]
fn a_multibyte_client_encoding_cannot_hide_a_statement() {
    let Some(s) = setup("pg-sjis") else { return };
    // In SJIS the bytes 0x83 0x5C are one character (ソ) and 0xC3 is another (ﾃ);
    // read as UTF-8, 0xC3 0x83 is "Ã" and 0x5C a backslash. So the server reads
    // `E'ﾃソ'` and runs the DROP, where a UTF-8 reading sees one string literal.
    // The proxy reads SJIS as the server does: it sees the DROP.
    let conninfo = format!("{} client_encoding=SJIS", s.conninfo("app", "disable"));
    let out = s.psql_to(
        &conninfo,
        &["-c", r"SELECT E'Ã\' ; DROP TABLE accounts; --'"],
    );
    assert!(!out.status.success());
    denied_and_accounts_kept(&s, &out);
    let statements = s.statements();
    let drop = statements
        .iter()
        .find(|st| st["verdict"] == "denied")
        .unwrap_or_else(|| panic!("{statements:#?}"));
    assert_eq!(drop["text"], "SELECT E'ﾃソ' ; DROP TABLE accounts; --'");
    assert!(
        drop["classes"]
            .as_array()
            .is_some_and(|c| c.contains(&"drop".into())),
        "{drop:#}"
    );
    // The same, with the encoding changed in the session.
    let out = s.psql(&[
        "-c",
        "SET client_encoding TO 'SJIS'",
        "-c",
        r"SELECT E'Ã\' ; DROP TABLE accounts; --'",
    ]);
    denied_and_accounts_kept(&s, &out);
    // Bytes that are not SJIS (0x83 needs a second byte): unparsed, so refused.
    let out = s.psql_to(&conninfo, &["-c", "SELECT 'Ã'"]);
    let stderr = denied_and_accounts_kept(&s, &out);
    assert!(stderr.contains("not valid SJIS"), "{stderr}");
    // Under an encoding the proxy does not read (BIG5), only ASCII text runs.
    let big5 = format!("{} client_encoding=BIG5", s.conninfo("app", "disable"));
    let out = s.psql_to(&big5, &["-c", "SELECT 'é'"]);
    assert!(text(&out).1.contains("client_encoding"), "{}", text(&out).1);
    let ok = s.psql_to(&big5, &["-c", "SELECT count(*) FROM accounts"]);
    assert_eq!(text(&ok).0.trim(), "10", "{}", text(&ok).1);
}

#[test]
fn a_latin1_client_is_read_recorded_and_ruled_in_its_own_encoding() {
    let rules = format!(
        "{RULES}
[[rule]]
name = \"summer-prices-frozen\"
targets = [\"db\"]
sql = [\"write\"]
tables = [\"tarifs_été\"]
action = \"deny\"
description = \"les prix d'été sont gelés\"
"
    );
    let Some(s) = setup_with_rules("pg-latin1", &rules) else {
        return;
    };
    s.direct(&format!(
        "CREATE TABLE tarifs_été (id int); GRANT ALL ON tarifs_été TO {APP_ROLE}"
    ));
    // A LATIN1 script: é is the one byte 0xE9, ë is 0xEB.
    let script: &[u8] = b"INSERT INTO accounts VALUES (11, 'Zo\xeb', 5);\n\
        SELECT owner FROM accounts WHERE id = 11;\n\
        INSERT INTO tarifs_\xe9t\xe9 VALUES (1);\n";
    let latin1 = format!("{} client_encoding=LATIN1", s.conninfo("app", "disable"));
    let out = s.psql_with_input(&latin1, &["-v", "ON_ERROR_STOP=0", "-f", "-"], script);
    let (_, stderr) = text(&out);
    // The server converted the bytes the proxy forwarded unchanged; the client got
    // its row back in LATIN1.
    assert_eq!(s.direct("SELECT owner FROM accounts WHERE id = 11"), "Zoë");
    assert!(
        out.stdout.windows(4).any(|w| w == b"Zo\xeb\n"),
        "{:?}",
        out.stdout
    );
    // The rule on the table named in LATIN1 applied, and its description reached
    // the client in LATIN1.
    assert!(
        out.stderr
            .windows(25)
            .any(|w| w == b"les prix d'\xe9t\xe9 sont gel\xe9s"),
        "{stderr}\n{}",
        s.d.log()
    );
    assert_eq!(s.direct("SELECT count(*) FROM tarifs_été"), "0");
    // The record shows the text and the row as the client meant them.
    let statements = s.statements();
    let find = |start: &str| {
        statements
            .iter()
            .find(|st| st["text"].as_str().is_some_and(|t| t.starts_with(start)))
            .unwrap_or_else(|| panic!("{start}: {statements:#?}"))
    };
    assert_eq!(
        find("INSERT INTO accounts")["text"],
        "INSERT INTO accounts VALUES (11, 'Zoë', 5);"
    );
    assert_eq!(find("SELECT owner")["rows"]["rows"][0][0], "Zoë");
    let frozen = find("INSERT INTO tarifs");
    assert_eq!(frozen["verdict"], "denied", "{frozen:#}");
    assert_eq!(frozen["tables"][0], "tarifs_été", "{frozen:#}");
}

/// Every one- and two-byte sequence (and `EUC_JP`'s three-byte ones) that the
/// server accepts in an encoding the proxy reads: the proxy reads the same text, or
/// refuses to read it. Not one character may differ.
#[test]
fn every_readable_encoding_reads_as_postgresql_does() {
    use portcullis::proto::postgres::encoding::{ClientEncoding, READABLE};
    let Some(pg) =
        portcullis_tests::postgres::PgServer::start_or_skip().unwrap_or_else(|e| panic!("{e:#}"))
    else {
        return;
    };
    pg.psql(
        "postgres",
        "CREATE FUNCTION conv(b bytea, e text) RETURNS text LANGUAGE plpgsql AS \
         $$ BEGIN RETURN convert_from(b, e); EXCEPTION WHEN others THEN RETURN NULL; END $$",
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    for name in READABLE {
        let single = name.starts_with("LATIN")
            || name.starts_with("ISO_")
            || name.starts_with("WIN")
            || name.starts_with("KOI8");
        // Sequences as hex, made by the server: bytes 0x80-0xFF, then pairs led by
        // one (no NUL), then EUC_JP's 0x8F triples.
        let mut sequences =
            String::from("SELECT lpad(to_hex(i), 2, '0') FROM generate_series(128, 255) i");
        if !single {
            sequences.push_str(
                " UNION ALL SELECT lpad(to_hex(i), 4, '0') FROM generate_series(32768, 65535) i \
                 WHERE i % 256 <> 0",
            );
        }
        if *name == "EUC_JP" {
            sequences.push_str(
                " UNION ALL SELECT to_hex(i) FROM generate_series(9412865, 9436927) i \
                 WHERE i % 256 <> 0",
            );
        }
        let out = pg
            .psql(
                "postgres",
                &format!(
                    "SELECT h, coalesce(encode(convert_to(conv(decode(h, 'hex'), '{name}'), \
                     'UTF8'), 'hex'), '-') FROM ({sequences}) s(h)"
                ),
            )
            .unwrap_or_else(|e| panic!("{e:#}"));
        let encoding = ClientEncoding::named(name);
        let (mut same, mut refused, mut differ) = (0, 0, Vec::new());
        for line in out.lines() {
            let (seq, theirs) = line.split_once('|').unwrap_or_else(|| panic!("{line}"));
            if theirs == "-" {
                continue;
            }
            let bytes: Vec<u8> = (0..seq.len())
                .step_by(2)
                .map(|i| {
                    u8::from_str_radix(&seq[i..i + 2], 16).unwrap_or_else(|e| panic!("{seq}: {e}"))
                })
                .collect();
            match encoding.read(&bytes) {
                Ok(ours) if hex(ours.as_bytes()) == theirs => same += 1,
                Ok(ours) => differ.push(format!("{seq}: {ours:?}, server {theirs}")),
                Err(_) => refused += 1,
            }
        }
        assert!(differ.is_empty(), "{name}: {differ:#?}");
        // Not vacuous: the server read most sequences, and so did the proxy.
        let least = if single { 80 } else { 7000 };
        assert!(
            same >= least,
            "{name}: {same} read alike, {refused} refused"
        );
        assert!(
            refused < same / 10 + 30,
            "{name}: {refused} refused, {same} alike"
        );
    }
}

#[test]
fn prefer_logs_in_without_tls_when_the_server_refuses_it_over_tls() {
    let Some(s) = setup_with_tls_refused("pg-prefer") else {
        return;
    };
    // The server offers TLS, but its pg_hba.conf rejects the proxy's role over TLS:
    // as with libpq's sslmode=prefer, the proxy logs in again without TLS.
    let out = s.psql(&[
        "-c",
        "SELECT ssl, current_user FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}\n{}", s.d.log());
    assert_eq!(stdout.trim(), format!("f|{APP_ROLE}"));
    let log = s.d.log();
    assert!(
        log.contains("trying without TLS") && log.contains("pg_hba.conf rejects"),
        "{log}"
    );
    assert!(!log.contains(APP_PASSWORD), "{log}");
}

#[test]
fn garbage_gets_a_protocol_error_and_others_are_unaffected() {
    let Some(s) = setup("pg-garbage") else { return };
    // A startup packet announcing 1 GB, then a valid startup and a 2 GB message.
    let py = format!(
        r#"
import socket, struct, sys
def conn():
    return socket.create_connection(("{host}", {port}), timeout=10)
c = conn()
c.sendall(struct.pack("!II", 1 << 30, 196608))
print("huge-startup", c.recv(1000)[:1].decode(errors="replace"))
c = conn()
body = b"user\x00x\x00database\x00app\x00\x00"
c.sendall(struct.pack("!II", 8 + len(body), 196608) + body)
data = b""
while not data.endswith(b"Z\x00\x00\x00\x05I"):
    chunk = c.recv(65536)
    if not chunk: break
    data += chunk
c.sendall(b"Q" + struct.pack("!I", 0x7fffffff))
print("hello", data[-6:], "huge-message", c.recv(65536)[:1].decode(errors="replace"))
"#,
        host = s.pg.host(),
        port = s.pg.port()
    );
    let out =
        s.cg.command(Some(NOBODY), &["/usr/bin/python3", "-c", &py])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
    let (stdout, stderr) = text(&out);
    assert!(stdout.contains("huge-startup E"), "{stdout}{stderr}");
    assert!(
        stdout.contains("huge-message E"),
        "{stdout}{stderr}\n{}",
        s.d.log()
    );
    let ok = s.psql(&["-c", "SELECT 42"]);
    assert_eq!(text(&ok).0.trim(), "42", "{}", text(&ok).1);
}

/// A fake server that misbehaves during authentication, on 127.0.0.3.
const FAKE_SERVER_PY: &str = r#"
import socket, struct, sys
mode, port = sys.argv[1], int(sys.argv[2])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.3", port))
s.listen(5)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    n = struct.unpack("!I", c.recv(4))[0]
    c.recv(n - 4)
    if mode == "ok-before-scram":
        mech = b"SCRAM-SHA-256\x00\x00"
        c.sendall(b"R" + struct.pack("!II", 8 + len(mech), 10) + mech)
        c.recv(4096)
        c.sendall(b"R" + struct.pack("!II", 8, 0))
    else:
        c.sendall(b"R" + struct.pack("!II", 8, 3))
    c.recv(4096)
    c.close()
"#;

#[test]
fn a_server_misbehaving_during_login_is_refused() {
    use portcullis_tests::{
        cgroup::{TestCgroup, can_run_ebpf_tests},
        daemon::TestDaemon,
        net::free_port,
    };
    use std::io::BufRead as _;
    let name = "pg-bad-server";
    if !can_run_ebpf_tests(name) {
        return;
    }
    let secrets = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pw = secrets.path().join("pw");
    std::fs::write(&pw, APP_PASSWORD).unwrap_or_else(|e| panic!("{e}"));
    for (mode, expected) in [
        (
            "ok-before-scram",
            "accepted the login before SCRAM authentication finished",
        ),
        (
            "cleartext",
            "cleartext password over an unencrypted connection",
        ),
    ] {
        let port = free_port("127.0.0.3").unwrap_or_else(|e| panic!("{e}"));
        let mut server = std::process::Command::new("/usr/bin/python3")
            .args(["-c", FAKE_SERVER_PY, mode, &port.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        let mut ready = String::new();
        if let Some(out) = server.stdout.take() {
            let _ = std::io::BufReader::new(out).read_line(&mut ready);
        }
        let policy = format!(
            "[[target]]\nname = \"fake\"\nprotocol = \"postgres\"\naddress = \"127.0.0.3:{port}\"\n\
             tls = \"disable\"\ncredentials = {{ user = \"app\", password_file = \"{}\" }}\n\
             [[rule]]\nname = \"all\"\ntargets = [\"fake\"]\naction = \"allow\"\n",
            pw.display()
        );
        let cg = TestCgroup::new(&format!("{name}-{mode}")).unwrap_or_else(|e| panic!("{e}"));
        let d = TestDaemon::start(&format!("{name}-{mode}"), &cg, &policy, "")
            .unwrap_or_else(|e| panic!("{e:#}"));
        let conn = format!("host=127.0.0.3 port={port} dbname=app user=x sslmode=disable");
        let out = cg
            .command(
                Some(NOBODY),
                &["/usr/bin/psql", "-X", "-d", &conn, "-c", "SELECT 1"],
            )
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let _ = server.kill();
        let _ = server.wait();
        let (_, stderr) = text(&out);
        assert!(!out.status.success(), "{mode}: psql succeeded");
        assert!(stderr.contains(expected), "{mode}: {stderr}\n{}", d.log());
        assert!(!stderr.contains(APP_PASSWORD) && !d.log().contains(APP_PASSWORD));
        let session = d
            .wait_session(|s| s["target"] == "fake")
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(session["outcome"], "error", "{session}");
    }
}
