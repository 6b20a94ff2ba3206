//! Slack's interactive callbacks: a click on Approve or Deny in a request's Slack
//! message arrives as `POST /slack/actions`.
//!
//! The request is verified before anything is read from it: Slack signs
//! `v0:{timestamp}:{raw body}` with the app's signing secret (HMAC-SHA256, hex, in
//! `X-Slack-Signature`); a timestamp more than five minutes off is refused (replays),
//! the comparison is constant-time (`hmac`'s `verify_slice`), and a signature seen
//! before is refused too. The Slack user becomes an approver (`Approver::slack`)
//! whom policy groups admit by `slack_users`; the decision is the gate's own call.
//! The outcome replaces the message through Slack's `response_url`, which must
//! point at the configured origin.

use super::{Web, inbox::status_of};
use crate::identity::Approver;
use axum::{
    body::Bytes,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use hmac::{Hmac, Mac as _};
use serde::Deserialize;
use sha2::Sha256;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock, PoisonError},
    time::Duration,
};

/// How far a callback's timestamp may be from now, in seconds.
const WINDOW_SECONDS: i64 = 300;
/// Signatures remembered against replays (within the window).
const MAX_SEEN: usize = 10_000;
/// The reason recorded with a deny from Slack (its buttons carry none).
const SLACK_DENY_REASON: &str = "denied from Slack";

/// Why a callback was refused; never says anything about the secret.
#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    #[error("missing or malformed Slack signature headers")]
    Headers,
    #[error("the timestamp is outside the five-minute window")]
    Stale,
    #[error("the signature does not match")]
    Signature,
    #[error("this callback was already received")]
    Replayed,
    #[error("the payload is not a Slack block action: {0}")]
    Payload(String),
}

#[derive(Deserialize)]
struct Payload {
    user: User,
    #[serde(default)]
    team: Option<Team>,
    #[serde(default)]
    actions: Vec<ActionClick>,
    response_url: Option<String>,
}

#[derive(Deserialize)]
struct User {
    id: String,
    #[serde(default)]
    team_id: Option<String>,
}

#[derive(Deserialize)]
struct Team {
    id: String,
}

#[derive(Deserialize)]
struct ActionClick {
    action_id: String,
    value: Option<String>,
}

/// Checks Slack's signature over `body` with `secret` at time `now` (Unix seconds).
pub fn verify(secret: &str, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), SlackError> {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let ts = header("x-slack-request-timestamp").ok_or(SlackError::Headers)?;
    let sig = header("x-slack-signature")
        .and_then(|s| s.strip_prefix("v0="))
        .ok_or(SlackError::Headers)?;
    let at: i64 = ts.parse().map_err(|_| SlackError::Headers)?;
    if (now - at).abs() > WINDOW_SECONDS {
        return Err(SlackError::Stale);
    }
    let expected = hex_decode(sig).ok_or(SlackError::Signature)?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| SlackError::Signature)?;
    mac.update(b"v0:");
    mac.update(ts.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| SlackError::Signature)?;
    if !first_sighting(sig, at, now) {
        return Err(SlackError::Replayed);
    }
    Ok(())
}

/// Remembers signature `sig` (of a callback stamped `at`, checked at `now`); false
/// if it was seen.
fn first_sighting(sig: &str, at: i64, now: i64) -> bool {
    static SEEN: OnceLock<Mutex<HashMap<String, i64>>> = OnceLock::new();
    let mut seen = SEEN
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    seen.retain(|_, t| (now - *t).abs() <= WINDOW_SECONDS);
    if seen.len() >= MAX_SEEN {
        return false;
    }
    seen.insert(sig.to_owned(), at).is_none()
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 128 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `POST /slack/actions`.
pub async fn actions(
    axum::extract::State(web): axum::extract::State<Arc<Web>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(slack) = &web.config.slack else {
        return (StatusCode::NOT_FOUND, "Slack is not configured").into_response();
    };
    if let Err(e) = verify(slack.signing_secret.expose(), &headers, &body, unix_now()) {
        tracing::warn!(error = %e, "Slack callback refused");
        web.daemon
            .gate
            .audit(
                "slack_callback_refused",
                "slack",
                None,
                serde_json::json!({ "why": e.to_string() }),
            )
            .await;
        return (StatusCode::UNAUTHORIZED, e.to_string()).into_response();
    }
    let payload = match parse(&body) {
        Ok(p) => p,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let team = payload
        .team
        .as_ref()
        .map(|t| t.id.clone())
        .or_else(|| payload.user.team_id.clone())
        .unwrap_or_default();
    let approver = match Approver::slack(&team, &payload.user.id) {
        Ok(a) => a,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let Some(click) = payload.actions.first() else {
        return (StatusCode::BAD_REQUEST, "no action in the payload").into_response();
    };
    let id = click.value.clone().unwrap_or_default();
    let gate = &web.daemon.gate;
    let done = match click.action_id.as_str() {
        "portcullis_approve" => {
            gate.approve(&id, &approver, Some("approved from Slack"))
                .await
        }
        "portcullis_deny" => gate.deny(&id, &approver, SLACK_DENY_REASON).await,
        other => {
            let shown: String = other
                .chars()
                .filter(char::is_ascii_graphic)
                .take(64)
                .collect();
            return (StatusCode::BAD_REQUEST, format!("unknown action {shown}")).into_response();
        }
    };
    let (status, text) = match &done {
        Ok(d) => (
            StatusCode::OK,
            format!("{} ({})", d.message, approver.label()),
        ),
        Err(e) => (status_of(e), format!("Not decided: {e}")),
    };
    tracing::info!(request = %id, who = %approver.label(), outcome = %text, "Slack decision");
    if let Some(url) = payload
        .response_url
        .filter(|u| allowed_response_url(u, &slack.response_origin))
    {
        tokio::spawn(respond(url, text.clone(), done.is_ok()));
    }
    // Slack shows a non-200 answer as an error to the clicker; the outcome message
    // goes through `response_url`.
    let _ = status;
    (StatusCode::OK, "").into_response()
}

fn parse(body: &[u8]) -> Result<Payload, SlackError> {
    let json = form_urlencoded::parse(body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| SlackError::Payload("no `payload` field".into()))?;
    serde_json::from_str(&json).map_err(|e| SlackError::Payload(e.to_string()))
}

/// Whether `url` is on `origin` (scheme, host and port), so a callback cannot send
/// the console to post elsewhere.
fn allowed_response_url(url: &str, origin: &str) -> bool {
    url.strip_prefix(origin)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// Replaces the Slack message with the outcome.
async fn respond(url: String, text: String, decided: bool) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build();
    let body = serde_json::json!({
        "replace_original": decided,
        "response_type": "in_channel",
        "text": text,
    });
    let sent = match client {
        Ok(c) => c
            .post(&url)
            .json(&body)
            .send()
            .await
            .map(|r| r.status().is_success()),
        Err(e) => Err(e),
    };
    match sent {
        Ok(true) => {}
        Ok(false) => tracing::warn!("Slack refused the outcome message"),
        Err(error) => {
            tracing::warn!(error = %error.without_url(), "Cannot send the outcome to Slack");
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    fn signed(secret: &str, ts: i64, body: &[u8]) -> HeaderMap {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("v0:{ts}:").as_bytes());
        mac.update(body);
        let hex = mac
            .finalize()
            .into_bytes()
            .iter()
            .fold(String::new(), |mut hex, b| {
                let _ = std::fmt::Write::write_fmt(&mut hex, format_args!("{b:02x}"));
                hex
            });
        let mut h = HeaderMap::new();
        h.insert("x-slack-request-timestamp", ts.to_string().parse().unwrap());
        h.insert("x-slack-signature", format!("v0={hex}").parse().unwrap());
        h
    }

    #[test]
    fn signatures_are_checked_in_their_window_once() {
        let now = 1_700_000_000;
        let h = signed("s3cret", now, b"payload=x");
        assert!(verify("s3cret", &h, b"payload=x", now + 10).is_ok());
        assert!(matches!(
            verify("s3cret", &h, b"payload=x", now + 10),
            Err(SlackError::Replayed)
        ));
        let h = signed("s3cret", now, b"payload=y");
        assert!(matches!(
            verify("other", &h, b"payload=y", now),
            Err(SlackError::Signature)
        ));
        assert!(matches!(
            verify("s3cret", &h, b"payload=z", now),
            Err(SlackError::Signature)
        ));
        assert!(matches!(
            verify("s3cret", &h, b"payload=y", now + 301),
            Err(SlackError::Stale)
        ));
        assert!(matches!(
            verify("s3cret", &HeaderMap::new(), b"", now),
            Err(SlackError::Headers)
        ));
    }

    #[test]
    fn slack_users_are_approvers_by_member_id() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("g.toml"),
            "[[group]]\nname = \"sre\"\nslack_users = [\"U0OK\"]\n",
        )
        .unwrap();
        let policy = crate::policy::Policy::load_dir(dir.path()).unwrap();
        let ok = Approver::slack("T1", "U0OK").unwrap();
        assert_eq!(ok.slack_user(), Some("U0OK"));
        assert!(policy.is_member("sre", &ok));
        assert!(!policy.is_member("sre", &Approver::slack("T1", "U0NO").unwrap()));
        // An identity-provider person with the same subject is no Slack user.
        let idp = Approver::idp("https://id.example.com", "T1/U0OK", None, vec![]).unwrap();
        assert!(!policy.is_member("sre", &idp));
        assert!(Approver::slack("T1", "U0/../x").is_err());
    }

    #[test]
    fn response_urls_stay_on_the_origin() {
        let o = "https://hooks.slack.com";
        assert!(allowed_response_url(
            "https://hooks.slack.com/actions/T/1/x",
            o
        ));
        assert!(!allowed_response_url(
            "https://hooks.slack.com.evil.com/x",
            o
        ));
        assert!(!allowed_response_url("http://127.0.0.1/x", o));
    }

    #[test]
    fn payloads_parse() {
        let json = r#"{"type":"block_actions","user":{"id":"U1","team_id":"T1"},"actions":[{"action_id":"portcullis_approve","value":"abc"}],"response_url":"https://hooks.slack.com/a"}"#;
        let body: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", json)
            .finish();
        let p = parse(body.as_bytes()).unwrap();
        assert_eq!(p.user.id, "U1");
        assert_eq!(p.actions[0].value.as_deref(), Some("abc"));
        assert!(parse(b"x=1").is_err());
    }
}
