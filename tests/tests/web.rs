//! The web console as a person uses it (issue 20): a real OpenID provider, headless
//! Chromium, a real PostgreSQL behind the redirect, `psql` waiting on a held
//! statement while an approver signs in and decides in the browser; Slack's signed
//! callbacks; one-time sign-in links.
#![expect(
    clippy::panic,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests"
)]

use hmac::{Hmac, Mac as _};
use portcullis_tests::{
    net::free_port,
    pgproxy::{Setup, setup_with_config, text, wait_child},
    web::{Browser, OidcProvider, Receiver, missing_parts},
};
use serde_json::Value;
use sha2::Sha256;
use std::{
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

const OIDC_SECRET: &str = "oidc-client-secret-Qw8-never-shown";
const SLACK_SECRET: &str = "slack-signing-secret-Zt3-never-shown";
const SLACK_USER: &str = "U0SLACKAPP";

/// Writes held by `sre` (root, the identity provider's `sre` group and a Slack
/// user); everything else allowed.
fn rules() -> String {
    format!(
        r#"
[[group]]
name = "sre"
users = ["root"]
idp_groups = ["sre"]
slack_users = ["{SLACK_USER}"]

[[rule]]
name = "connect"
targets = ["db"]
action = "allow"

[[rule]]
name = "writes-need-sre"
targets = ["db"]
sql = ["write"]
action = "review"
approvers = ["sre"]
timeout = "120s"
"#
    )
}

struct Console {
    s: Setup,
    url: String,
    idp: OidcProvider,
    slack: Receiver,
}

fn start(name: &str) -> Option<Console> {
    if let Some(why) = missing_parts() {
        println!("skipping {name}: {why}");
        return None;
    }
    let port = free_port("127.0.0.1").unwrap();
    let url = format!("https://127.0.0.1:{port}");
    let idp = OidcProvider::start(OIDC_SECRET, &format!("{url}/auth/callback")).unwrap();
    let slack = Receiver::start();
    set_secrets();
    let config = format!(
        "[web]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"{url}\"\n\
         [web.oidc]\nissuer = \"{}\"\nclient_id = \"{}\"\nclient_secret_env = \"PC_TEST_OIDC_SECRET\"\n\
         [web.slack]\nsigning_secret_env = \"PC_TEST_SLACK_SECRET\"\nresponse_origin = \"{}\"\n",
        idp.issuer,
        portcullis_tests::web::OIDC_CLIENT_ID,
        slack.url
    );
    let s = setup_with_config(name, &rules(), &config)?;
    Some(Console { s, url, idp, slack })
}

/// The daemon reads its secrets from its environment, which it inherits from us.
fn set_secrets() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: set once, before any daemon starts, with the same values every time.
        unsafe {
            std::env::set_var("PC_TEST_OIDC_SECRET", OIDC_SECRET);
            std::env::set_var("PC_TEST_SLACK_SECRET", SLACK_SECRET);
        }
    });
}

impl Console {
    /// `psql` running `sql` through the redirect, in the background.
    fn psql(&self, sql: &str) -> Child {
        self.s
            .psql_command(&["-c", sql])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// The pending request whose SQL contains `needle`.
    fn pending(&self, needle: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let out = self.s.d.cli(&["approvals", "--json"]);
            let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            if let Some(r) = list.as_array().and_then(|l| {
                l.iter()
                    .find(|r| r["summary"].as_str().is_some_and(|t| t.contains(needle)))
            }) {
                return r.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no request for {needle}; log:\n{}",
                self.s.d.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn request(&self, id: &str) -> Value {
        let out = self.s.d.cli(&["approvals", "--json", "--all"]);
        let list: Value = serde_json::from_slice(&out.stdout).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .cloned()
            .unwrap()
    }

    fn audit(&self) -> String {
        let out = self.s.d.cli(&["sessions", "export"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn docs(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs")
        .join(file)
}

#[tokio::test(flavor = "multi_thread")]
async fn approver_signs_in_sees_a_held_statement_live_and_decides() {
    let Some(c) = start("web-approve") else {
        return;
    };
    let alice = Browser::start().await.unwrap();
    alice.sign_in(&c.url, "alice").await.unwrap();
    alice.wait_for("#empty").await.unwrap();
    let page = alice.client.source().await.unwrap();
    assert!(page.contains("alice@example.com (idp)"), "{page}");
    // The first page with its stylesheet and script stays small (issue: ≤ 100 KB).
    let sizes = alice
        .client
        .execute(
            "const n = async (u) => (await (await fetch(u)).text()).length; \
             return [document.documentElement.outerHTML.length, await n('/static/style.css'), await n('/static/inbox.js')];",
            vec![],
        )
        .await
        .unwrap();
    let total: u64 = sizes
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .sum();
    println!("first page: {sizes} bytes (html, css, js), {total} in all");
    assert!(total < 100 * 1024, "{sizes}");

    // A write is held; it appears in the open page without a reload.
    let psql = c.psql("/* reason: OPS-42 fix a balance */ UPDATE accounts SET balance = balance + 1 WHERE id = 1 RETURNING id, balance");
    let held = c.pending("UPDATE accounts SET balance = balance + 1");
    let id = held["id"].as_str().unwrap().to_owned();
    let card = alice
        .wait_for(&format!("li[data-request='{id}']"))
        .await
        .unwrap();
    let shown = card.text().await.unwrap();
    for expected in [
        "UPDATE accounts",
        "writes-need-sre",
        "nobody",
        "psql",
        "Time left",
        "denied",
        "0 of 1",
    ] {
        assert!(
            shown.contains(expected),
            "{expected:?} not in the card:\n{shown}"
        );
    }
    std::fs::create_dir_all(docs("")).unwrap();
    alice.screenshot(&docs("web-inbox.png")).await.unwrap();

    // Approve with a reason: the waiting psql gets its row.
    let _ = card;
    alice.live().await.unwrap();
    let at = format!("li[data-request='{id}']");
    alice
        .type_into(
            &format!("{at} form[action$='/approve'] input[name=reason]"),
            "checked with the team",
        )
        .await
        .unwrap();
    alice.click(&format!("{at} button.approve")).await.unwrap();
    let out = wait_child(psql);
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "psql failed: {stderr}\n{}",
        c.s.d.log()
    );
    assert_eq!(stdout.lines().next(), Some("1|101"), "{stdout}{stderr}");
    assert_eq!(c.request(&id)["status"], "approved");
    let audit = c.audit();
    assert!(
        audit.lines().any(|l| l.contains("request_approval")
            && l.contains("alice@example.com")
            && l.contains("\"kind\":\"idp\"")),
        "no audit record of alice's approval:\n{audit}"
    );

    // Deny with a reason: psql is told who and why.
    let psql = c.psql("UPDATE accounts SET balance = 0 WHERE id = 2");
    let id = c.pending("SET balance = 0")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let at = format!("li[data-request='{id}']");
    alice.wait_for(&at).await.unwrap();
    alice
        .type_into(
            &format!("{at} form[action$='/deny'] input[name=reason]"),
            "not during the freeze",
        )
        .await
        .unwrap();
    alice.click(&format!("{at} button.deny")).await.unwrap();
    let out = wait_child(psql);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("denied by alice@example.com: not during the freeze"),
        "{stderr}"
    );
    assert_eq!(
        c.s.direct("SELECT balance FROM accounts WHERE id = 2"),
        "100"
    );
    alice.wait_for("#empty").await.unwrap();

    // No secret in the pages, the log or the records.
    let page = alice.client.source().await.unwrap();
    for text in [page.as_str(), &c.s.d.log(), &c.audit()] {
        assert!(!text.contains(OIDC_SECRET) && !text.contains(SLACK_SECRET));
    }
    alice.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn non_approvers_see_no_buttons_and_forged_posts_are_refused() {
    let Some(c) = start("web-forged") else { return };
    let alice = Browser::start().await.unwrap();
    alice.sign_in(&c.url, "alice").await.unwrap();
    let mallory = Browser::start().await.unwrap();
    mallory.sign_in(&c.url, "mallory").await.unwrap();

    let psql = c.psql("UPDATE accounts SET balance = 7 WHERE id = 3");
    let id = c.pending("SET balance = 7")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    alice
        .wait_for(&format!("li[data-request='{id}']"))
        .await
        .unwrap();
    // Mallory is in no approver group: nothing to see, no buttons.
    mallory.client.refresh().await.unwrap();
    mallory.wait_for("#empty").await.unwrap();
    assert!(
        mallory
            .client
            .find_all(fantoccini::Locator::Css("button.approve"))
            .await
            .unwrap()
            .is_empty()
    );

    // Forged posts from the approver's own browser: no token, another session's token.
    let mallory_csrf: String = mallory
        .client
        .execute(
            "return document.querySelector('input[name=csrf]').value",
            vec![],
        )
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    let post = r"
        const [url, body] = arguments;
        const r = await fetch(url, {method: 'POST', body: new URLSearchParams(body), credentials: 'same-origin'});
        return r.status;";
    for body in [
        serde_json::json!({}),
        serde_json::json!({"csrf": mallory_csrf}),
    ] {
        let status = alice
            .client
            .execute(
                post,
                vec![format!("/requests/{id}/approve").into(), body.clone()],
            )
            .await
            .unwrap();
        assert_eq!(status, 403, "forged POST {body} was not refused");
    }
    // Mallory's own, well-formed POST: she is no approver.
    let status = mallory
        .client
        .execute(
            post,
            vec![
                format!("/requests/{id}/approve").into(),
                serde_json::json!({"csrf": mallory_csrf}),
            ],
        )
        .await
        .unwrap();
    assert_eq!(status, 403);
    // Without any session.
    let anonymous = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let r = anonymous
        .post(format!("{}/requests/{id}/approve", c.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("csrf=x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // An oversized form is refused before anything reads it.
    let huge = format!("csrf={mallory_csrf}&reason={}", "x".repeat(200_000));
    let r = anonymous
        .post(format!("{}/requests/{id}/approve", c.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // An identity-provider user who is no console admin sees no recorded sessions.
    mallory
        .client
        .goto(&format!("{}/sessions", c.url))
        .await
        .unwrap();
    assert!(
        mallory
            .client
            .source()
            .await
            .unwrap()
            .contains("console admins")
    );
    assert_eq!(
        c.request(&id)["status"],
        "pending",
        "a refused POST decided something"
    );
    let audit = c.audit();
    assert!(audit.contains("web_decision_refused"), "{audit}");

    // Slack: a forged signature decides nothing; a signed click by the mapped user approves.
    let slack_body = |action: &str| {
        let payload = serde_json::json!({
            "type": "block_actions",
            "user": {"id": SLACK_USER, "team_id": "T0TEST"},
            "actions": [{"action_id": action, "value": id}],
            "response_url": format!("{}/actions/T0TEST/1/x", c.slack.url),
        });
        format!("payload={}", urlencode(&payload.to_string()))
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let body = slack_body("portcullis_approve");
    let bad = anonymous
        .post(format!("{}/slack/actions", c.url))
        .header("x-slack-request-timestamp", now.to_string())
        .header("x-slack-signature", sign("wrong secret", now, &body))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let old = now - 600;
    let stale = anonymous
        .post(format!("{}/slack/actions", c.url))
        .header("x-slack-request-timestamp", old.to_string())
        .header("x-slack-signature", sign(SLACK_SECRET, old, &body))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 401);
    assert_eq!(c.request(&id)["status"], "pending");
    let ok = anonymous
        .post(format!("{}/slack/actions", c.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", now.to_string())
        .header("x-slack-signature", sign(SLACK_SECRET, now, &body))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let out = wait_child(psql);
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(c.request(&id)["status"], "approved");
    let replay = anonymous
        .post(format!("{}/slack/actions", c.url))
        .header("x-slack-request-timestamp", now.to_string())
        .header("x-slack-signature", sign(SLACK_SECRET, now, &body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 401, "a replayed callback was taken");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = c.slack.bodies.lock().unwrap().clone();
        if got
            .iter()
            .any(|b| b.contains("approved") && b.contains("replace_original"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no outcome posted to response_url: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        c.audit()
            .contains(&format!("https://slack.com#T0TEST/{SLACK_USER}"))
    );
    alice.close().await;
    mallory.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn web_login_links_work_once_and_justify_reaches_the_inbox() {
    let Some(c) = start("web-link") else { return };
    let out = c.s.d.cli(&["web-login"]);
    assert!(out.status.success(), "{}", text(&out).1);
    let link = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        link.starts_with(&format!("{}/auth/link?token=", c.url)),
        "{link}"
    );
    let root = Browser::start().await.unwrap();
    root.client.goto(&link).await.unwrap();
    root.wait_for("#inbox").await.unwrap();
    root.live().await.unwrap();
    assert!(root.client.source().await.unwrap().contains("root (uid 0)"));
    // Used up.
    let again = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    assert_eq!(again.get(&link).send().await.unwrap().status(), 403);

    // The requester (nobody) says why; root sees it in the inbox, live.
    let psql = c.psql("UPDATE accounts SET balance = 5 WHERE id = 4");
    let id = c.pending("SET balance = 5")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    root.wait_for(&format!("li[data-request='{id}']"))
        .await
        .unwrap();
    let other = c.s.d.cli(&["justify", &id, "not mine"]);
    assert!(!other.status.success(), "root is not the requester");
    let out =
        c.s.d
            .cli_as(65534, 65534, &["justify", &id, "INC-7: refund a customer"]);
    assert!(out.status.success(), "{}", text(&out).1);
    let card = root
        .wait_for(&format!("li[data-request='{id}'] dd"))
        .await
        .unwrap();
    let _ = card;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !root
        .client
        .source()
        .await
        .unwrap()
        .contains("INC-7: refund a customer")
    {
        assert!(
            Instant::now() < deadline,
            "the justification did not appear live"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    root.screenshot(&docs("web-inbox-justified.png"))
        .await
        .unwrap();
    let listed = c.s.d.cli(&["approvals"]);
    assert!(
        text(&listed).0.contains("why: INC-7: refund a customer"),
        "{}",
        text(&listed).0
    );
    assert!(c.audit().contains("request_justified"));
    // root, signed in by the link, is a local approver in `sre`: it approves here.
    root.click(&format!("li[data-request='{id}'] button.approve"))
        .await
        .unwrap();
    let out = wait_child(psql);
    assert!(out.status.success(), "{}", text(&out).1);
    let audit = c.audit();
    assert!(
        audit.lines().any(|l| l.contains("request_approval")
            && l.contains("root (uid 0)")
            && l.contains("\"kind\":\"local\"")),
        "{audit}"
    );

    // root is an admin: the session's transcript, the audit status and the policy.
    root.client
        .goto(&format!("{}/sessions?q=no-such-target", c.url))
        .await
        .unwrap();
    root.wait_for("table").await.unwrap();
    assert!(
        root.client
            .find_all(fantoccini::Locator::Css("table a"))
            .await
            .unwrap()
            .is_empty()
    );
    root.client
        .goto(&format!("{}/sessions?q=postgres", c.url))
        .await
        .unwrap();
    root.wait_for("table a")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    root.wait_for("td.sql").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = root.client.source().await.unwrap();
        if page.contains("UPDATE accounts SET balance = 5 WHERE id = 4")
            && page.contains("approved")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the transcript lacks the approved statement:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        root.client.refresh().await.unwrap();
    }
    root.screenshot(&docs("web-session.png")).await.unwrap();
    root.client.goto(&format!("{}/audit", c.url)).await.unwrap();
    let status = root
        .wait_for("#audit-status")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        root.client.source().await.unwrap().contains("intact"),
        "{status}"
    );
    root.client
        .goto(&format!("{}/policy", c.url))
        .await
        .unwrap();
    assert!(
        root.wait_for("table")
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .contains("db")
    );
    root.close().await;
}

fn sign(secret: &str, ts: u64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("v0={hex}")
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn login_links_a_requester_who_then_cannot_approve_their_own_request() {
    let Some(c) = start("web-device") else { return };
    // `nobody` links its account to alice's identity with the device grant.
    let mut login = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(portcullis_tests::daemon::binary())
        .arg("login")
        .env("PORTCULLIS_SOCKET", &c.s.d.socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(login.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    let url = first
        .trim()
        .strip_prefix("Open ")
        .unwrap_or_else(|| panic!("{first:?}"))
        .to_owned();
    let device = Browser::start().await.unwrap();
    device.confirm_device(&url, "alice").await.unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(login.wait().unwrap().success(), "{rest}");
    assert!(rest.contains("Linked to alice@example.com (idp)"), "{rest}");
    device.close().await;

    // Alice, an approver, sees nobody's request with the linked identity and no buttons.
    let psql = c.psql("UPDATE accounts SET balance = 9 WHERE id = 5");
    let id = c.pending("SET balance = 9")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let alice = Browser::start().await.unwrap();
    alice.sign_in(&c.url, "alice").await.unwrap();
    let card = alice
        .wait_for(&format!("li[data-request='{id}']"))
        .await
        .unwrap();
    let shown = card.text().await.unwrap();
    assert!(shown.contains("alice at http://127.0.0.1"), "{shown}");
    assert!(
        alice
            .client
            .find_all(fantoccini::Locator::Css("button.approve"))
            .await
            .unwrap()
            .is_empty()
    );
    // Forcing it with her own, valid token: the gate refuses self-approval.
    let csrf = alice
        .client
        .execute(
            "return document.querySelector('input[name=csrf]').value",
            vec![],
        )
        .await
        .unwrap();
    let post = r"
        const [url, csrf] = arguments;
        const r = await fetch(url, {method: 'POST', body: new URLSearchParams({csrf}), credentials: 'same-origin'});
        return [r.status, await r.text()];";
    let answer = alice
        .client
        .execute(post, vec![format!("/requests/{id}/approve").into(), csrf])
        .await
        .unwrap();
    assert_eq!(answer[0], 403, "{answer}");
    assert!(answer[1].as_str().unwrap().contains("yourself"), "{answer}");

    // After `portcullis logout` she may approve it.
    let out = c.s.d.cli_as(65534, 65534, &["logout"]);
    assert!(
        text(&out).0.contains("1 identity link(s)"),
        "{:?}",
        text(&out)
    );
    alice.client.refresh().await.unwrap();
    alice.live().await.unwrap();
    alice
        .click(&format!("li[data-request='{id}'] button.approve"))
        .await
        .unwrap();
    let out = wait_child(psql);
    assert!(out.status.success(), "{}", text(&out).1);
    let audit = c.audit();
    assert!(
        audit.lines().any(|l| l.contains("request_created")
            && l.contains("requester_identities")
            && l.contains("#alice")),
        "the request's record lacks the requester's identity:\n{audit}"
    );
    assert!(
        audit.contains("identity_linked") && audit.contains("identity_unlinked"),
        "{audit}"
    );
    alice.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_with_new_signing_keys_is_followed_and_bad_callbacks_are_refused() {
    let Some(mut c) = start("web-keys") else {
        return;
    };
    let first = Browser::start().await.unwrap();
    first.sign_in(&c.url, "alice").await.unwrap();
    first.close().await;
    // The provider restarts with new signing keys: the console's cached keys no
    // longer verify its tokens, so it fetches them again once.
    c.idp
        .restart(OIDC_SECRET, &format!("{}/auth/callback", c.url))
        .unwrap();
    let second = Browser::start().await.unwrap();
    second.sign_in(&c.url, "bob").await.unwrap();
    assert!(
        second
            .client
            .source()
            .await
            .unwrap()
            .contains("bob@example.com (idp)")
    );
    // A callback this browser did not start, and an error from the provider: refused.
    second
        .client
        .goto(&format!("{}/auth/callback?code=forged&state=forged", c.url))
        .await
        .unwrap();
    assert!(
        second
            .client
            .source()
            .await
            .unwrap()
            .contains("not started in this browser")
    );
    second
        .client
        .goto(&format!(
            "{}/auth/callback?error=access_denied&state=x",
            c.url
        ))
        .await
        .unwrap();
    assert!(
        second
            .client
            .source()
            .await
            .unwrap()
            .contains("access_denied")
    );
    second.close().await;
    assert!(!c.s.d.log().contains(OIDC_SECRET));
}
