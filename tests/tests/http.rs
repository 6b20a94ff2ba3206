//! Issue 19 (HTTP and HTTPS): every request an action, end to end: real nginx and a
//! Python API on 127.0.0.6, real eBPF redirection, real curl / Python requests /
//! Node fetch run as `nobody`, unconfigured apart from trusting the system CA bundle,
//! and the real CLI approving and denying held requests.
#![expect(
    clippy::panic,
    clippy::indexing_slicing,
    reason = "root tests panic with a message"
)]

use portcullis_tests::http::{IP, TOKEN, json, setup, text};
use serde_json::Value;
use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    process::Stdio,
};

/// Rules every test here can use: connections allowed; DELETE of a user denied;
/// anything under /admin held for `seniors`.
const RULES: &str = r#"
[[group]]
name = "seniors"
users = ["root"]

[[rule]]
name = "connect"
targets = ["*"]
action = "allow"

[[rule]]
name = "no-user-deletion"
targets = ["api", "tls"]
methods = ["DELETE"]
paths = ["/v1/users/*", "/api/v1/users/*"]
action = "deny"
description = "users are deleted by the HR system only"

[[rule]]
name = "admin-needs-a-senior"
targets = ["api", "tls"]
paths = ["/admin/**", "/api/admin/**"]
action = "review"
approvers = ["seniors"]
timeout = "60s"
"#;

#[test]
fn requests_are_decided_forwarded_with_the_token_and_recorded() {
    let Some(s) = setup("http-basic", RULES, "") else {
        return;
    };
    // GET, with the client's own Authorization dropped for the target's.
    let out = s.curl(&[
        "-H",
        "Authorization: Bearer client-guess",
        &s.api_url("/v1/users/7?verbose=yes"),
    ]);
    let got = json(&out);
    assert_eq!(got["method"], "GET", "{got}");
    assert_eq!(
        got["auth_ok"], true,
        "the target's token replaces the client's: {got}"
    );
    assert_eq!(got["auth_headers"], 1);
    assert!(!text(&out).0.contains(TOKEN));

    // DELETE denied by the rule, also when the path hides behind encoding and dots.
    for path in ["/v1/users/42", "/v1/%75sers/../users/42", "/v1//users/./42"] {
        let out = s.curl(&["-X", "DELETE", "-w", "\n%{http_code}", &s.api_url(path)]);
        let (stdout, _) = text(&out);
        let (body, code) = stdout.rsplit_once('\n').unwrap_or_default();
        assert_eq!(code, "403", "{path}: {stdout}\n{}", s.d.log());
        let refusal: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        assert_eq!(refusal["decided_by"], "no-user-deletion", "{refusal}");
        assert!(
            refusal["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("HR system"),
            "{refusal}"
        );
        assert!(
            refusal["error"].is_string() && refusal.get("request").is_some(),
            "{refusal}"
        );
    }

    // POST with a body, and a chunked upload.
    let out = s.curl(&[
        "-X",
        "POST",
        "--data-binary",
        "hello=world",
        &s.api_url("/v1/things"),
    ]);
    let got = json(&out);
    assert_eq!(
        (got["method"].as_str(), got["body_len"].as_u64()),
        (Some("POST"), Some(11)),
        "{got}"
    );
    let out = s.curl(&[
        "-X",
        "PUT",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        "@/etc/os-release",
        &s.api_url("/v1/upload"),
    ]);
    let got = json(&out);
    let size = std::fs::metadata("/etc/os-release").map_or(0, |m| m.len());
    assert_eq!(got["body_len"].as_u64(), Some(size), "{got}");
    assert_eq!(got["auth_ok"], true);

    // A large body: curl asks `Expect: 100-continue`, the proxy answers it.
    let big = "b".repeat(100_000);
    let out = s.curl(&[
        "-v",
        "-H",
        "Expect: 100-continue",
        "-X",
        "POST",
        "--data-binary",
        &big,
        &s.api_url("/v1/big"),
    ]);
    let (stdout, stderr) = text(&out);
    assert!(
        stderr.contains("Expect: 100-continue") && stderr.contains("HTTP/1.1 100"),
        "{stderr}"
    );
    let got: Value = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    assert_eq!(got["body_len"], 100_000, "{stdout}");

    // Keep-alive: two requests on one connection are one session with two events.
    let out = s.curl(&["-v", &s.api_url("/v1/a"), &s.api_url("/v1/b")]);
    let (_, stderr) = text(&out);
    assert!(stderr.contains("Re-using existing connection"), "{stderr}");

    let events = s.events("api");
    let keep_alive =
        s.d.sessions()
            .unwrap_or_default()
            .into_iter()
            .find(|x| x["target"] == "api" && !x["ended_at"].is_null())
            .unwrap_or_else(|| panic!("no api session"));
    let replay = s.d.cli(&[
        "sessions",
        "replay",
        keep_alive["id"].as_str().unwrap_or_default(),
    ]);
    let (transcript, _) = text(&replay);
    assert!(
        transcript.contains("[GET 200]") && transcript.contains("/v1/b HTTP/1.1"),
        "{transcript}"
    );
    assert!(
        transcript.contains("> authorization: [redacted]") || transcript.contains("> host:"),
        "{transcript}"
    );
    let paths: Vec<&str> = events.iter().filter_map(|e| e["path"].as_str()).collect();
    assert!(
        paths.contains(&"/v1/a") && paths.contains(&"/v1/b"),
        "{paths:?}"
    );
    let get = events
        .iter()
        .find(|e| e["path"] == "/v1/users/7")
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!(get["kind"], "http");
    assert_eq!(get["verdict"], "allowed");
    assert_eq!(get["status"], 200);
    assert_eq!(
        get["url"], "/v1/users/7?verbose=…",
        "query values are masked"
    );
    assert_eq!(get["request_headers"]["authorization"], "[redacted]");
    let denied: Vec<&Value> = events.iter().filter(|e| e["verdict"] == "denied").collect();
    assert_eq!(denied.len(), 3, "{events:#?}");
    assert!(
        denied
            .iter()
            .all(|e| e["path"] == "/v1/users/42" && e["status"] == 403)
    );
    // The token appears nowhere the daemon writes.
    let db = std::fs::read(s.d.dir().join("state/portcullis.db")).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&db).contains(TOKEN));
    assert!(!s.d.log().contains(TOKEN));
    let _ = IP;
}

/// Runs `curl ARGS -w '\n%{http_code}'` in the background; `finish` returns the body
/// and status.
fn spawn_curl(s: &portcullis_tests::http::Setup, args: &[&str]) -> std::process::Child {
    let mut command = vec!["curl", "-sS", "--max-time", "60", "-w", "\n%{http_code}"];
    command.extend_from_slice(args);
    s.client(&command)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run curl: {e}"))
}

fn finish(child: std::process::Child) -> (Value, String) {
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let (stdout, stderr) = text(&out);
    let (body, code) = stdout.rsplit_once('\n').unwrap_or_default();
    let body =
        serde_json::from_str(body).unwrap_or_else(|_| Value::String(format!("{body} / {stderr}")));
    (body, code.to_owned())
}

#[test]
fn held_requests_wait_for_approval_and_keep_their_body() {
    let Some(s) = setup("http-hold", RULES, "[http]\nmax_held_body = 4096\n") else {
        return;
    };
    // Approved: the request (and its buffered body) goes through once approved.
    // The requester says why in a `Portcullis-Reason` header: the approvers see it, the
    // API does not.
    let child = spawn_curl(
        &s,
        &[
            "-X",
            "POST",
            "--data-binary",
            "rotate=all",
            "-H",
            "Portcullis-Reason: key leaked in\tINC-42",
            &s.api_url("/admin/keys"),
        ],
    );
    let request = s.wait_request();
    let id = request["id"].as_str().unwrap_or_default().to_owned();
    assert!(
        request["summary"]
            .as_str()
            .unwrap_or_default()
            .contains("POST"),
        "{request}"
    );
    assert_eq!(
        request["justification"], "key leaked in INC-42",
        "{request}"
    );
    let approve = s.d.cli(&["approve", &id, "--reason", "planned rotation"]);
    assert!(approve.status.success(), "{}", text(&approve).1);
    let (body, code) = finish(child);
    assert_eq!(code, "200", "{body}\n{}", s.d.log());
    assert_eq!(
        (body["path"].as_str(), body["body_len"].as_u64()),
        (Some("/admin/keys"), Some(10)),
        "{body}"
    );
    assert_eq!(body["auth_ok"], true);
    assert_eq!(
        body["reason_header"],
        Value::Null,
        "the reason header reached the API: {body}"
    );

    // Denied: 403 with the request, the approver and the reason.
    let child = spawn_curl(&s, &["-X", "DELETE", &s.api_url("/admin/cache")]);
    let id = s.wait_request()["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let deny = s.d.cli(&["deny", &id, "--reason", "not during the freeze"]);
    assert!(deny.status.success(), "{}", text(&deny).1);
    let (body, code) = finish(child);
    assert_eq!(code, "403", "{body}");
    assert_eq!(body["request"], id.as_str());
    assert_eq!(body["decided_by"], "root");
    assert!(
        body["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("not during the freeze"),
        "{body}"
    );

    // A body over the cap cannot be held: 413, and nothing reaches the API.
    let big = "x".repeat(10_000);
    let (body, code) = finish(spawn_curl(
        &s,
        &[
            "-X",
            "POST",
            "--data-binary",
            &big,
            &s.api_url("/admin/import"),
        ],
    ));
    assert_eq!(code, "413", "{body}");

    let events = s.events("api");
    let verdicts: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap_or("?"),
                e["verdict"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert!(
        verdicts.contains(&("/admin/keys", "approved")),
        "{verdicts:?}"
    );
    assert!(
        verdicts.contains(&("/admin/cache", "denied")),
        "{verdicts:?}"
    );
    assert!(
        verdicts.contains(&("/admin/import", "abandoned")),
        "{verdicts:?}"
    );
    let approved = events
        .iter()
        .find(|e| e["path"] == "/admin/keys")
        .unwrap_or_else(|| panic!());
    assert_eq!(approved["request_id"], request["id"]);
    assert_eq!(approved["request_body"], "rotate=all");
}

#[test]
fn https_clients_trust_the_minted_certificate_and_speak_h2() {
    let Some(s) = setup("http-tls", RULES, "") else {
        return;
    };
    let port = s.servers.tls_port;
    let resolve = format!("{}:{port}:{IP}", portcullis_tests::http::TLS_NAME);
    let url = |path: &str| format!("https://{}:{port}{path}", portcullis_tests::http::TLS_NAME);
    // curl with the system bundle only, HTTP/1.1 and HTTP/2 (ALPN).
    let out = s.curl(&["--resolve", &resolve, &url("/api/v1/x")]);
    let got = json(&out);
    assert_eq!(
        (got["path"].as_str(), got["auth_ok"].as_bool()),
        (Some("/v1/x"), Some(true)),
        "{got}"
    );
    let out = s.curl(&[
        "--http2",
        "-w",
        "\n%{http_version}",
        "--resolve",
        &resolve,
        &url("/small.json"),
    ]);
    let (stdout, stderr) = text(&out);
    assert!(stdout.ends_with("\n2"), "{stdout} {stderr}\n{}", s.d.log());
    // DELETE denied over HTTP/2 as well.
    let out = s.curl(&[
        "--http2",
        "-X",
        "DELETE",
        "-w",
        "\n%{http_code}",
        "--resolve",
        &resolve,
        &url("/api/v1/users/9"),
    ]);
    assert!(text(&out).0.ends_with("\n403"), "{:?}", text(&out));

    // Python requests (pointed at the system bundle) and Node's fetch (given it as
    // extra CAs), by IP: no SNI, so the certificate names the address.
    let by_ip = format!("https://{IP}:{port}/api/v1/py");
    let py = s
        .client(&[
            "/usr/bin/python3",
            "-c",
            "import requests,sys; r = requests.get(sys.argv[1]); print(r.text)",
            &by_ip,
        ])
        .env("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let got = json(&py);
    assert_eq!(got["path"], "/v1/py", "{got}");
    let node = s
        .client(&["node", "-e", "fetch(process.argv[1]).then(r => r.text()).then(t => console.log(t), e => { console.error(e); process.exit(1) })", &by_ip.replace("/py", "/node")])
        .env("NODE_EXTRA_CA_CERTS", "/etc/ssl/certs/ca-certificates.crt")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let got = json(&node);
    assert_eq!(
        (got["path"].as_str(), got["auth_ok"].as_bool()),
        (Some("/v1/node"), Some(true)),
        "{got}"
    );

    let events = s.events("tls");
    assert!(
        events
            .iter()
            .any(|e| e["version"] == "HTTP/2.0" && e["path"] == "/small.json"),
        "{events:#?}"
    );
    // Released: the CA leaves the trust store.
    let ca = std::fs::read_dir("/usr/local/share/ca-certificates").map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("portcullis-http-ca-")
            })
            .count()
    });
    assert!(ca >= 1, "the daemon installed its CA");
}

#[test]
fn responses_are_masked_as_they_stream_even_compressed() {
    let rules = format!(
        "{RULES}\n[[rule]]\nname = \"mask-pii\"\ntargets = [\"web\", \"api\"]\naction = \"allow\"\nmask = [\"email\"]\n"
    );
    let Some(s) = setup("http-mask", &rules, "") else {
        return;
    };
    // A large JSON array, as a static file (streamed, never buffered whole).
    let mut big = String::from("[");
    for i in 0..200_000 {
        if i > 0 {
            big.push(',');
        }
        let _ = write!(
            big,
            r#"{{"id":{i},"email":"user{i}@example.com","note":"plain text"}}"#
        );
    }
    big.push(']');
    s.servers
        .add_file("big.json", big.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    let web = |path: &str| format!("http://{IP}:{}{path}", s.servers.web_port);
    for compressed in [false, true] {
        let mut args = ["-D", "-", &*web("/v1/users")]
            .iter()
            .map(|a| (*a).to_owned())
            .collect::<Vec<_>>();
        if compressed {
            args.insert(0, "--compressed".into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = s.curl(&args);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stderr}");
        assert!(
            !stdout.contains("ann@example.com") && !stdout.contains("bob@example.org"),
            "{stdout}"
        );
        assert!(
            stdout.contains(r#""id":2"#),
            "the rest is untouched: {stdout}"
        );
        let head = stdout.to_ascii_lowercase();
        assert!(
            !head.contains("content-encoding"),
            "decoded to mask it: {stdout}"
        );
    }
    let out = s.curl(&[&web("/files/big.json")]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let parsed: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("masked JSON is still JSON: {e}"));
    let items = parsed.as_array().map_or(0, Vec::len);
    assert_eq!(items, 200_000);
    assert!(!stdout.contains("@example.com"), "every email masked");
    assert_eq!(parsed[7]["note"], "plain text");
    // Other types pass byte for byte.
    s.servers
        .add_file("raw.bin", b"ann@example.com\x00\x01")
        .unwrap_or_else(|e| panic!("{e}"));
    let out = s.curl(&[&web("/files/raw.bin")]);
    assert_eq!(out.stdout, b"ann@example.com\x00\x01");
    // The API's JSON (and its record) are masked too.
    let got = json(&s.curl(&[&s.api_url("/v1/me")]));
    assert_ne!(got["owner"], "carol@example.net", "{got}");
    let events = s.events("api");
    let me = events
        .iter()
        .find(|e| e["path"] == "/v1/me")
        .unwrap_or_else(|| panic!("{events:#?}"));
    let sample = me["response_body"].as_str().unwrap_or_default();
    assert!(
        sample.contains("owner") && !sample.contains("carol@example.net"),
        "{sample}"
    );
}

/// `mask_json` paths mask the values they select in the Python API's chunked JSON,
/// streamed a person at a time, and nothing else; the record holds the masked form.
#[test]
fn json_paths_mask_selected_values_of_a_streamed_document() {
    let rules = format!(
        "{RULES}\n[[rule]]\nname = \"mask-people\"\ntargets = [\"api\"]\naction = \"allow\"\n\
         mask_json = [\"$.users[*].email\", \"$..ssn\"]\n"
    );
    let Some(s) = setup("http-mask-json", &rules, "") else {
        return;
    };
    let people = 20_000;
    let out = s.curl(&[&s.api_url(&format!("/v1/people?n={people}"))]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}\n{}", s.d.log());
    let doc: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("masked JSON is still JSON: {e}: {stderr}"));
    let users = doc["users"].as_array().map_or(&[][..], Vec::as_slice);
    assert_eq!(users.len(), people, "{stderr}");
    for (i, user) in users.iter().enumerate() {
        assert_eq!(user["email"], "****", "{user}");
        assert_eq!(user["profile"]["ssn"], "****", "{user}");
        assert_eq!(
            user["name"],
            format!("User {i}"),
            "only selected values change"
        );
        assert_eq!(user["profile"]["city"], "Oslo");
    }
    assert_eq!(doc["audit"]["ssn"], "****", "a number is selected too");
    assert_eq!(doc["audit"]["by"], "ops");
    assert!(!stdout.contains("@example.com") && !stdout.contains("078-05-"));
    // The echo's `owner` is selected by no path: it passes (no `mask` here).
    let got = json(&s.curl(&[&s.api_url("/v1/me")]));
    assert_eq!(got["owner"], "carol@example.net", "{got}");
    let events = s.events("api");
    let sample = events
        .iter()
        .find(|e| e["path"] == "/v1/people")
        .and_then(|e| e["response_body"].as_str())
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert!(
        sample.contains(r#""email": "****""#) && !sample.contains("@example.com"),
        "{sample}"
    );
}

/// Issue 19: the upgrade is one action; its event is written before the `101`
/// reaches the client (checked while the client holds the `101` and waits), and a
/// second event counts what the relay moved once it ends.
#[test]
fn websocket_upgrade_is_one_action_then_relayed_and_counted() {
    let Some(s) = setup("http-ws", RULES, "") else {
        return;
    };
    let script = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
s.sendall(b"GET /chat HTTP/1.1\r\nHost: api\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(1)
print(head.split(b"\r\n")[0].decode(), flush=True)
sys.stdin.readline()
s.sendall(b"ping-through-the-gate")
got = b""
while len(got) < 21:
    got += s.recv(64)
print(got.decode())
s.close()
"#;
    let port = s.servers.api_port.to_string();
    let mut client = s
        .client(&["/usr/bin/python3", "-c", script, IP, &port])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut stdout = BufReader::new(client.stdout.take().unwrap_or_else(|| panic!("no stdout")));
    let mut status = String::new();
    let _ = stdout.read_line(&mut status);
    assert!(
        status.starts_with("HTTP/1.1 101"),
        "{status:?}\n{}",
        s.d.log()
    );
    // The client has its 101 and waits: the upgrade's record was journaled before
    // the 101 left (what a crash keeps: `http_crash`), and reaches the store while
    // the relay is still open.
    let opened =
        s.d.sessions()
            .unwrap_or_else(|e| panic!("{e:#}"))
            .into_iter()
            .find(|x| x["target"] == "api" && x["ended_at"].is_null())
            .and_then(|x| x["id"].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("no open session for the WebSocket"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let first = loop {
        let replay = json(&s.d.cli(&["sessions", "replay", &opened, "--json"]));
        let found = replay["events"]
            .as_array()
            .and_then(|events| events.iter().find(|e| e["details"]["path"] == "/chat"))
            .cloned();
        if let Some(first) = found {
            break first;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the upgrade was not recorded while the relay was open: {replay:#}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(
        (
            first["details"]["status"].as_u64(),
            first["details"]["relay"].as_str()
        ),
        (Some(101), Some("started")),
        "{first}"
    );
    let mut stdin = client.stdin.take().unwrap_or_else(|| panic!("no stdin"));
    writeln!(stdin).unwrap_or_else(|e| panic!("{e}"));
    drop(stdin);
    let mut rest = String::new();
    let _ = stdout.read_to_string(&mut rest);
    let _ = client.wait();
    assert!(rest.contains("ping-through-the-gate"), "{rest}");
    let events = s.events("api");
    let chat: Vec<&Value> = events.iter().filter(|e| e["path"] == "/chat").collect();
    assert_eq!(chat.len(), 2, "{chat:#?}");
    for e in &chat {
        assert_eq!(
            (e["status"].as_u64(), e["upgrade"].as_bool()),
            (Some(101), Some(true)),
            "{e}"
        );
    }
    assert_eq!(chat[1]["relay"], "ended", "{chat:#?}");
    assert_eq!(chat[1]["request_bytes"], 21);
    assert_eq!(chat[1]["response_bytes"], 21);
}

#[test]
fn smuggling_malformed_and_slow_requests_are_refused() {
    let Some(s) = setup(
        "http-bad",
        RULES,
        "[http]\nheader_timeout = \"2s\"\nmax_header_bytes = 16384\n",
    ) else {
        return;
    };
    let port = s.servers.api_port.to_string();
    let raw = |payload: &str, wait: &str| {
        let out = s
            .client(&[
                "/usr/bin/python3",
                "-c",
                portcullis_tests::http::RAW_PY,
                IP,
                &port,
                payload,
                wait,
            ])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        text(&out).0.trim().to_owned()
    };
    // Content-Length and Transfer-Encoding together: refused with 400 before hyper
    // reads the head, the connection closed, so a request smuggled behind the body
    // is never read. On a keep-alive connection the requests before it are served.
    let smuggle = r"b'POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /v1/smuggled HTTP/1.1\r\nHost: a\r\n\r\n'";
    let got = raw(smuggle, "10");
    assert!(got.starts_with("HTTP/1.1 400"), "CL+TE: {got}");
    let keep_alive = r"b'GET /v1/first HTTP/1.1\r\nHost: a\r\n\r\nPOST /v1/ka HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcPOST /v1/y HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\nGET /v1/smuggled HTTP/1.1\r\nHost: a\r\n\r\n'";
    let out = s
        .client(&["/usr/bin/python3", "-c", RAW_ALL_PY, IP, &port, keep_alive])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let statuses = text(&out).0;
    assert_eq!(
        statuses.lines().collect::<Vec<_>>(),
        [
            "HTTP/1.1 200 OK",
            "HTTP/1.1 200 OK",
            "HTTP/1.1 400 Bad Request",
            "CLOSED"
        ],
        "keep-alive, then CL+TE\n{}",
        s.d.log()
    );
    let cases = [
        (
            "obs-fold",
            r"b'GET /v1/x HTTP/1.1\r\nHost: a\r\nX-A: b\r\n  folded\r\n\r\n'",
        ),
        (
            "bare CR",
            r"b'GET /v1/x HTTP/1.1\r\nHost: a\rX-B: c\r\n\r\n'",
        ),
        ("bad path", r"b'GET /v1/%00 HTTP/1.1\r\nHost: a\r\n\r\n'"),
        ("no host", r"b'GET /v1/x HTTP/1.1\r\n\r\n'"),
    ];
    for (what, payload) in cases {
        let got = raw(payload, "10");
        assert!(
            got.starts_with("HTTP/1.1 400"),
            "{what}: {got}\n{}",
            s.d.log()
        );
    }
    let big = format!(
        "b'GET /v1/x HTTP/1.1\\r\\nHost: a\\r\\nX-Big: {}\\r\\n\\r\\n'",
        "y".repeat(40_000)
    );
    let got = raw(&big, "10");
    assert!(got.starts_with("HTTP/1.1 431"), "oversized head: {got}");
    // Slowloris: a head never finished is cut off (no timing asserted, only the end).
    let got = raw(r"b'GET /v1/x HTTP/1.1\r\nHost: a\r\n'", "30");
    assert!(
        got == "CLOSED" || got.starts_with("HTTP/1.1 408"),
        "slow head: {got}"
    );
    // Nothing ambiguous reached the API, and the refusals are recorded.
    let events = s.events("api");
    assert!(
        !events.iter().any(|e| e["path"] == "/v1/smuggled"),
        "{events:#?}"
    );
    let refused: Vec<&Value> = events.iter().filter(|e| e["status"] == 400).collect();
    assert!(refused.len() >= 2, "{events:#?}");
    // Each framing refusal is recorded, denied by Portcullis, with its reason.
    for (url, why) in [
        ("/v1/x", "both Content-Length and Transfer-Encoding"),
        ("/v1/y", "both Content-Length and Transfer-Encoding"),
        ("/v1/x", "obs-folded"),
        ("/v1/x", "bare CR"),
    ] {
        assert!(
            refused.iter().any(|e| e["url"] == url
                && e["verdict"] == "denied"
                && e["decided_by"] == "portcullis"
                && e["reason"].as_str().unwrap_or_default().contains(why)),
            "{url} {why}: {refused:#?}"
        );
    }
    assert!(
        events
            .iter()
            .any(|e| e["status"] == 431 && e["verdict"] == "denied"),
        "{events:#?}"
    );
    let sessions = s.d.sessions().unwrap_or_default();
    let cut: Vec<&Value> = sessions
        .iter()
        .filter(|x| {
            x["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("connection ended")
        })
        .collect();
    assert!(
        !cut.is_empty(),
        "malformed heads end their session with a reason: {sessions:#?}"
    );
    // Other clients are unaffected.
    let got = json(&s.curl(&[&s.api_url("/v1/fine")]));
    assert_eq!(got["path"], "/v1/fine");
}

/// A raw client that sends its payload and prints the status line of every answer
/// until the proxy closes (`CLOSED`) or goes quiet (`TIMEOUT`):
/// `python3 -c RAW_ALL_PY HOST PORT PAYLOAD`.
const RAW_ALL_PY: &str = r#"
import ast, re, socket, sys
host, port, payload = sys.argv[1], int(sys.argv[2]), ast.literal_eval(sys.argv[3])
s = socket.create_connection((host, port), timeout=10)
s.sendall(payload)
got, end = b"", "CLOSED"
try:
    while True:
        chunk = s.recv(65536)
        if not chunk: break
        got += chunk
except socket.timeout:
    end = "TIMEOUT"
except ConnectionResetError:
    end = "RESET"
for line in re.findall(rb"HTTP/1\.[01] [0-9]{3}[^\r\n]*", got): print(line.decode())
print(end)
"#;

/// HTTP/2 floods: a connection that opens and at once cancels many streams (rapid
/// reset) is sent away with `GOAWAY`; one that opens more streams than allowed has
/// the extra ones refused. The daemon stays up and other clients are served meanwhile.
#[test]
fn http2_stream_floods_are_cut_off_and_others_unaffected() {
    let Some(s) = setup("http-h2-flood", RULES, "") else {
        return;
    };
    let port = s.servers.api_port.to_string();
    let flood = |mode: &str, n: &str| {
        let out = s
            .client(&[
                "/usr/bin/python3",
                "-c",
                portcullis_tests::http::H2_PY,
                IP,
                &port,
                mode,
                n,
            ])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let (stdout, stderr) = text(&out);
        serde_json::from_str::<Value>(stdout.trim())
            .unwrap_or_else(|e| panic!("{mode}: {e}: {stdout} {stderr}"))
    };
    // While floods run, a well-behaved client is served.
    let bystander = spawn_curl(&s, &[&s.api_url("/v1/bystander")]);
    let reset = flood("reset", "2000");
    assert_eq!(
        reset["goaway"],
        11,
        "ENHANCE_YOUR_CALM for a reset flood: {reset}\n{}",
        s.d.log()
    );
    assert!(
        reset["headers"].as_u64().unwrap_or(u64::MAX) < 2000,
        "{reset}"
    );
    let open = flood("open", "300");
    assert!(
        open["refused"].as_u64().unwrap_or(0) >= 200,
        "streams past the limit of 100 are refused: {open}"
    );
    let (body, code) = finish(bystander);
    assert_eq!(
        (code.as_str(), &body["path"]),
        ("200", &Value::from("/v1/bystander"))
    );
    // The daemon is still up and serves new connections, over HTTP/2 too.
    let got = json(&s.curl(&["--http2-prior-knowledge", &s.api_url("/v1/after")]));
    assert_eq!(got["path"], "/v1/after", "{}", s.d.log());
    assert!(
        s.d.cli(&["status"]).status.success(),
        "the daemon answers its API"
    );
}

#[test]
fn a_refused_connection_is_answered_403_saying_why() {
    let rules = "[[rule]]\nname = \"api-only\"\ntargets = [\"api\"]\naction = \"allow\"\n";
    let Some(s) = setup("http-refused", rules, "") else {
        return;
    };
    let web = format!("http://{IP}:{}/small.json", s.servers.web_port);
    let out = s.curl(&["-w", "\n%{http_code}", &web]);
    let (stdout, stderr) = text(&out);
    let (body, code) = stdout.rsplit_once('\n').unwrap_or_default();
    assert_eq!(code, "403", "{stdout} {stderr}\n{}", s.d.log());
    let refusal: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    assert!(
        refusal["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("no rule allows"),
        "{refusal}"
    );
    // The allowed target still works.
    assert_eq!(json(&s.curl(&[&s.api_url("/v1/ok")]))["auth_ok"], true);
}

#[test]
fn a_client_leaving_while_held_abandons_its_request() {
    let Some(s) = setup("http-leave", RULES, "") else {
        return;
    };
    let mut child = spawn_curl(
        &s,
        &[
            "-X",
            "POST",
            "--data-binary",
            "x=1",
            &s.api_url("/admin/leave"),
        ],
    );
    let id = s.wait_request()["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let _ = child.kill();
    let _ = child.wait();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let out = s.d.cli(&["approvals", "--json"]);
        let pending: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if !pending
            .as_array()
            .is_some_and(|a| a.iter().any(|r| r["id"] == id.as_str()))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "request {id} still pending\n{}",
            s.d.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let events = s.events("api");
    let left = events
        .iter()
        .find(|e| e["path"] == "/admin/leave")
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!(left["verdict"], "abandoned", "{left}");
    // Approving it now changes nothing: it can no longer run.
    let late = s.d.cli(&["approve", &id]);
    assert!(!late.status.success(), "{}", text(&late).0);
}
