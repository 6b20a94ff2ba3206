//! The web console and identities (issue 20): `portcullis login` links a requester
//! to their identity-provider identity (device grant, confirmed in Chromium at the
//! real provider) so they cannot approve their own requests; a provider that rotates
//! its signing key is followed; forged callbacks are refused.
#![expect(
    clippy::panic,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests"
)]

use portcullis_tests::{
    console::{OIDC_SECRET, start},
    pgproxy::{text, wait_child},
    web::Browser,
};
use std::process::Stdio;

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
