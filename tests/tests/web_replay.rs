//! Terminal replay in the web console (issue 20): a shell recorded through the SSH
//! proxy plays in the session's page with the embedded asciinema-player, served only
//! after the session's chain and the recording's digest check out; a recording
//! changed afterwards is refused, and the refusal is audited.
#![expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

use portcullis_tests::{
    console::docs,
    net::free_port,
    sshproxy::{Setup, setup_with_config, text},
    web::{Browser, missing_parts},
};
use std::{
    io::Write as _,
    process::Stdio,
    time::{Duration, Instant},
};

const RULES: &str = r#"
[[rule]]
name = "connect"
targets = ["box"]
action = "allow"
"#;

/// An interactive shell through the proxy (`ssh -tt`) typing `input`.
fn shell(s: &Setup, input: &[u8]) -> String {
    let host = s.sshd.addr.ip().to_string();
    let mut child = s
        .client(&["/usr/bin/ssh", "-tt", "-o", "BatchMode=yes", &host])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    text(&out).0
}

/// Clicks the page's player and waits until its terminal shows `expected`.
async fn play_until(root: &Browser, expected: &str) {
    root.click("section.replay .ap-player").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let shown = root
            .client
            .execute(
                "const t = document.querySelector('.ap-term'); return t ? t.innerText : ''",
                vec![],
            )
            .await
            .unwrap();
        if shown.as_str().is_some_and(|t| t.contains(expected)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the player never showed the recorded output: {shown}\n{}",
            root.client.source().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recorded_shell_plays_in_the_session_page_once_its_digest_checks_out() {
    if let Some(why) = missing_parts() {
        println!("skipping web-replay: {why}");
        return;
    }
    let port = free_port("127.0.0.1").unwrap();
    let url = format!("https://127.0.0.1:{port}");
    let config = format!("[web]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"{url}\"\n");
    let Some(s) = setup_with_config("web-replay", "127.0.0.91", RULES, &config) else {
        return;
    };
    let typed = shell(
        &s,
        b"printf 'replayed-%s\\n' $((6*7)); ls -d /etc/ssh; uname -s\nexit\n",
    );
    assert!(typed.contains("replayed-42"), "{typed}\n{}", s.d.log());
    let session =
        s.d.wait_session(|x| x["protocol"] == "ssh" && x["outcome"] == "closed")
            .unwrap();
    let id = session["id"].as_str().unwrap().to_owned();

    // root signs in with a one-time link and opens the session.
    let out = s.d.cli(&["web-login"]);
    assert!(out.status.success(), "{}", text(&out).1);
    let root = Browser::start().await.unwrap();
    root.client
        .goto(String::from_utf8_lossy(&out.stdout).trim())
        .await
        .unwrap();
    root.wait_for("#inbox").await.unwrap();
    root.client
        .goto(&format!("{url}/sessions/{id}"))
        .await
        .unwrap();
    root.wait_for("section.replay .ap-player").await.unwrap();
    // Play it as a person would, and wait for the recorded output on the terminal.
    play_until(&root, "replayed-42").await;
    // Let it reach the end, so the picture shows the whole shell.
    tokio::time::sleep(Duration::from_secs(3)).await;
    root.screenshot(&docs("web-replay.png")).await.unwrap();

    // The page fetched the recording as the chain recorded it.
    let fetch = r"
        const [url] = arguments;
        const r = await fetch(url, {credentials: 'same-origin'});
        return [r.status, await r.text()];";
    let cast_url = root
        .client
        .execute(
            "return document.querySelector('[data-cast]').dataset.cast",
            vec![],
        )
        .await
        .unwrap();
    let answer = root
        .client
        .execute(fetch, vec![cast_url.clone()])
        .await
        .unwrap();
    assert_eq!(answer[0], 200, "{answer}");
    let events = s.events_of(&id);
    let shell_event = events.iter().find(|e| e["kind"] == "shell").unwrap();
    let path = shell_event["recording"]["path"].as_str().unwrap();
    let cast = std::fs::read_to_string(path).unwrap();
    assert_eq!(answer[1].as_str().unwrap(), cast);

    // Without a console session: nothing.
    let anonymous = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let r = anonymous
        .get(format!("{url}{}", cast_url.as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // A recording changed after the fact is refused, and the refusal is audited.
    std::fs::write(path, cast.replace("replayed-42", "replayed-43")).unwrap();
    let answer = root.client.execute(fetch, vec![cast_url]).await.unwrap();
    assert_eq!(answer[0], 409, "{answer}");
    assert!(
        answer[1]
            .as_str()
            .unwrap()
            .contains("does not match the digest"),
        "{answer}"
    );
    let audit = text(&s.d.cli(&["sessions", "export"])).0;
    assert!(
        audit.lines().any(|l| l.contains("recording_refused")
            && l.contains(&id)
            && l.contains("root (uid 0)")),
        "{audit}"
    );
    root.close().await;
}
