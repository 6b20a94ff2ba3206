//! The web console as a person uses it (issue 20): a real OpenID provider, headless
//! Chromium, a real PostgreSQL behind the redirect, `psql` waiting on a held
//! statement while an approver signs in and decides in the browser; Slack's signed
//! callbacks; one-time sign-in links. Identity links and key rotation are in
//! `web_identity.rs`.
#![expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

use portcullis_tests::{
    console::{OIDC_SECRET, SLACK_SECRET, SLACK_USER, docs, sign, start, urlencode},
    pgproxy::{text, wait_child},
    web::Browser,
};
use serde_json::Value;
use std::time::{Duration, Instant};

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
