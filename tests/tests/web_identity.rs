//! The web console and identities (issue 20): `portcullis login` links a requester
//! to their identity-provider identity (device grant, confirmed in Chromium at the
//! real provider) so they cannot approve their own requests, rules for their
//! provider's groups apply to them, and their sessions' records say who they are; a
//! provider that rotates its signing key is followed; forged callbacks are refused.
#![expect(
    clippy::panic,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests"
)]

use portcullis_tests::{
    console::{OIDC_SECRET, start, start_with},
    pgproxy::{text, wait_child},
    web::Browser,
};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn login_links_a_requester_who_then_cannot_approve_their_own_request() {
    let Some(c) = start("web-device") else { return };
    // `nobody` links its account to alice's identity with the device grant.
    let rest = c.login_as("alice").await;
    assert!(rest.contains("Linked to alice@example.com (idp)"), "{rest}");

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

/// Analysts (a group at the identity provider) may not touch `accounts`.
const ANALYSTS_RULE: &str = r#"
[[rule]]
name = "analysts-keep-off-accounts"
targets = ["db"]
who = { idp_groups = ["analysts"] }
tables = ["accounts"]
action = "deny"
description = "analysts work on reports"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_requester_linked_into_an_idp_group_meets_its_rules_and_records_say_who() {
    let Some(c) = start_with("web-idp-groups", ANALYSTS_RULE) else {
        return;
    };
    // Not linked: `nobody` is no analyst, the rule does not apply.
    let out = wait_child(c.psql("SELECT count(*) FROM accounts"));
    assert_eq!(text(&out).0.trim(), "10", "{}", text(&out).1);

    // Linked to carol, whom the provider puts in `analysts`: the rule applies.
    let rest = c.login_as("carol").await;
    assert!(rest.contains("Linked to carol@example.com (idp)"), "{rest}");
    let out = wait_child(c.psql("SELECT count(*) FROM accounts"));
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "the analysts' rule did not apply");
    assert!(
        stderr.contains("analysts-keep-off-accounts")
            && stderr.contains("analysts work on reports"),
        "{stderr}"
    );
    // Other tables are not the rule's business.
    let out = wait_child(c.psql("SELECT 1"));
    assert!(out.status.success(), "{}", text(&out).1);

    // The session record carries the identity: `sessions show`, replay, export.
    let sessions = c.s.d.sessions().unwrap();
    let denied = sessions
        .iter()
        .find(|s| {
            s["principal"]["idp"]["email"] == "carol@example.com" && s["principal"]["uid"] == 65534
        })
        .unwrap_or_else(|| panic!("no session carries carol's identity: {sessions:#?}"));
    assert_eq!(
        denied["principal"]["idp"]["groups"],
        serde_json::json!(["analysts"])
    );
    assert!(
        denied["principal"]["idp"]["issuer"]
            .as_str()
            .is_some_and(|i| i == c.idp.issuer)
    );
    let id = denied["id"].as_str().unwrap().to_owned();
    let shown = text(&c.s.d.cli(&["sessions", "show", &id])).0;
    assert!(
        shown.contains("identity   carol@example.com (idp http://127.0.0.1:")
            && shown.contains("groups [analysts]"),
        "{shown}"
    );
    let replay = text(&c.s.d.cli(&["sessions", "replay", &id])).0;
    assert!(replay.contains("carol@example.com (idp"), "{replay}");
    let opened: Vec<Value> = c
        .audit()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["kind"] == "session_opened")
        .collect();
    assert!(
        opened
            .iter()
            .any(|r| r.to_string().contains("carol@example.com")
                && r.to_string().contains("analysts")),
        "no exported session_opened record names carol: {opened:#?}"
    );
    assert!(
        opened
            .iter()
            .any(|r| !r.to_string().contains("carol@example.com")),
        "the session before the login must not name her"
    );
    // The console's session page shows her too (root is a console admin).
    let root = c.root_browser().await;
    root.client
        .goto(&format!("{}/sessions/{id}", c.url))
        .await
        .unwrap();
    let identity = root
        .wait_for("#identity")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        identity.contains("carol@example.com (idp)") && identity.contains("analysts"),
        "{identity}"
    );
    root.close().await;

    // After `portcullis logout` the rule no longer applies.
    let out = c.s.d.cli_as(65534, 65534, &["logout"]);
    assert!(out.status.success(), "{}", text(&out).1);
    let out = wait_child(c.psql("SELECT count(*) FROM accounts"));
    assert_eq!(text(&out).0.trim(), "10", "{}", text(&out).1);
}

#[tokio::test(flavor = "multi_thread")]
async fn id_tokens_for_another_audience_or_expired_are_refused_and_audited() {
    let Some(c) = start("web-tokens") else {
        return;
    };
    for (mode, says) in [
        ("aud", "(found audiences: `another-application`)"),
        ("exp", "Expired: ID token expired"),
    ] {
        c.idp.tamper(mode).await.unwrap();
        let b = Browser::start().await.unwrap();
        b.sign_in_at_provider(&c.url, "alice").await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let page = loop {
            let page = b.client.source().await.unwrap();
            if page.contains("Sign-in refused") {
                break page;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{mode}: no refusal page:\n{page}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        };
        assert!(
            page.contains("the ID token was refused") && page.contains(says),
            "{mode}: {page}"
        );
        // Not signed in: the console still asks for a sign-in.
        b.client.goto(&format!("{}/", c.url)).await.unwrap();
        b.wait_for("#sign-in").await.unwrap();
        assert!(
            b.client
                .find_all(fantoccini::Locator::Css("#inbox"))
                .await
                .unwrap()
                .is_empty()
        );
        b.close().await;
    }
    let refusals: Vec<String> = c
        .audit()
        .lines()
        .filter(|l| l.contains("web_sign_in_refused"))
        .map(str::to_owned)
        .collect();
    assert!(
        refusals.iter().any(|l| l.contains("Invalid audiences"))
            && refusals.iter().any(|l| l.contains("Expired")),
        "{refusals:#?}"
    );
    // `portcullis login` (the device grant) checks its ID token the same way.
    c.idp.tamper("aud").await.unwrap();
    let (linked, said) = c.try_login_as("carol").await;
    assert!(!linked && said.contains("Invalid audiences"), "{said}");
    let out = c.s.d.cli_as(65534, 65534, &["logout"]);
    assert!(
        text(&out).0.contains("0 identity link(s)"),
        "{}",
        text(&out).0
    );
    // The same provider, its tokens as they should be: alice signs in.
    c.idp.tamper("off").await.unwrap();
    let b = Browser::start().await.unwrap();
    b.sign_in(&c.url, "alice").await.unwrap();
    b.close().await;
    assert!(!c.s.d.log().contains(OIDC_SECRET));
}
