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
    let Some(s) = setup("http-basic", RULES, "") else { return };
    // GET, with the client's own Authorization dropped for the target's.
    let out = s.curl(&["-H", "Authorization: Bearer client-guess", &s.api_url("/v1/users/7?verbose=yes")]);
    let got = json(&out);
    assert_eq!(got["method"], "GET", "{got}");
    assert_eq!(got["auth_ok"], true, "the target's token replaces the client's: {got}");
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
        assert!(refusal["reason"].as_str().unwrap_or_default().contains("HR system"), "{refusal}");
        assert!(refusal["error"].is_string() && refusal.get("request").is_some(), "{refusal}");
    }

    // POST with a body, and a chunked upload.
    let out = s.curl(&["-X", "POST", "--data-binary", "hello=world", &s.api_url("/v1/things")]);
    let got = json(&out);
    assert_eq!((got["method"].as_str(), got["body_len"].as_u64()), (Some("POST"), Some(11)), "{got}");
    let out = s.curl(&[
        "-X", "PUT", "-H", "Transfer-Encoding: chunked", "--data-binary", "@/etc/os-release",
        &s.api_url("/v1/upload"),
    ]);
    let got = json(&out);
    let size = std::fs::metadata("/etc/os-release").map(|m| m.len()).unwrap_or(0);
    assert_eq!(got["body_len"].as_u64(), Some(size), "{got}");
    assert_eq!(got["auth_ok"], true);

    // Keep-alive: two requests on one connection are one session with two events.
    let out = s.curl(&["-v", &s.api_url("/v1/a"), &s.api_url("/v1/b")]);
    let (_, stderr) = text(&out);
    assert!(stderr.contains("Re-using existing connection"), "{stderr}");

    let events = s.events("api");
    let paths: Vec<&str> = events.iter().filter_map(|e| e["path"].as_str()).collect();
    assert!(paths.contains(&"/v1/a") && paths.contains(&"/v1/b"), "{paths:?}");
    let get = events.iter().find(|e| e["path"] == "/v1/users/7").unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!(get["kind"], "http");
    assert_eq!(get["verdict"], "allowed");
    assert_eq!(get["status"], 200);
    assert_eq!(get["url"], "/v1/users/7?verbose=…", "query values are masked");
    assert_eq!(get["request_headers"]["authorization"], "[redacted]");
    let denied: Vec<&Value> = events.iter().filter(|e| e["verdict"] == "denied").collect();
    assert_eq!(denied.len(), 3, "{events:#?}");
    assert!(denied.iter().all(|e| e["path"] == "/v1/users/42" && e["status"] == 403));
    // The token appears nowhere the daemon writes.
    let db = std::fs::read(s.d.dir().join("state/portcullis.db")).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&db).contains(TOKEN));
    assert!(!s.d.log().contains(TOKEN));
    let _ = IP;
}
