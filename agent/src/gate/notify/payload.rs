//! Renders an [`Event`] as the body a webhook expects.
//!
//! `json` is the event itself. `slack` is an incoming-webhook message: `text` is the
//! one-line summary Slack shows in notifications (and the whole message for clients
//! without blocks), `blocks` the readable message: what is asked, by whom, on which
//! target, and how to approve it.

use super::{Event, EventKind, WebhookFormat};
use serde_json::json;

/// Longest action text shown in a Slack message (a section holds 3000 characters).
const SLACK_ACTION_CHARS: usize = 1500;
/// Longest reason shown in a Slack message.
const SLACK_REASON_CHARS: usize = 500;
/// Longest action text in the one-line summary.
const SUMMARY_ACTION_CHARS: usize = 120;

/// The JSON body for `event` in `format`.
pub(super) fn render(format: WebhookFormat, event: &Event) -> Result<Vec<u8>, serde_json::Error> {
    match format {
        WebhookFormat::Json => serde_json::to_vec(event),
        WebhookFormat::Slack => serde_json::to_vec(&slack(event)),
    }
}

/// A Slack incoming-webhook message for `event`.
fn slack(event: &Event) -> serde_json::Value {
    let target = escape(&event.target);
    let requester = escape(&event.requester);
    let mut lines = Vec::new();
    match event.kind {
        EventKind::RequestCreated | EventKind::RequestJustified => {
            lines.push(format!("*Approval needed* on *{target}*"));
            lines.push(format!("*Requested by:* {requester}"));
        }
        EventKind::RequestDecided => {
            lines.push(format!("*Request {}* on *{target}*", escape(&event.status)));
            lines.push(format!("*Requested by:* {requester}"));
            if let Some(by) = &event.decided_by {
                lines.push(format!("*Decided by:* {}", escape(by)));
            }
            if let Some(reason) = &event.reason {
                lines.push(format!(
                    "*Reason:* {}",
                    escape(&one_line(reason, SLACK_REASON_CHARS))
                ));
            }
        }
    }
    if let Some(why) = &event.justification {
        lines.push(format!(
            "*Justification:* {}",
            escape(&one_line(why, SLACK_REASON_CHARS))
        ));
    }
    lines.push(format!(
        "*Action:*\n```{}```",
        code_block(&truncate(&event.action, SLACK_ACTION_CHARS))
    ));

    let hint = if event.kind == EventKind::RequestCreated && !event.approve_hint.is_empty() {
        format!(" · `{}`", escape(&event.approve_hint))
    } else {
        String::new()
    };
    let context = format!(
        "Request `{}` on host `{}`{hint}",
        escape(&event.request_id),
        escape(&event.host)
    );

    let mut blocks = vec![
        json!({
            "type": "section",
            "text": { "type": "mrkdwn", "text": lines.join("\n") },
        }),
        json!({
            "type": "context",
            "elements": [ { "type": "mrkdwn", "text": context } ],
        }),
    ];
    if event.status == "pending" {
        blocks.push(buttons(&event.request_id));
    }
    json!({ "text": escape(&summary(event)), "blocks": blocks })
}

/// Approve and Deny buttons for a pending request. A click reaches the console's
/// `POST /slack/actions` (the Slack app's interactivity URL), signed by Slack; the
/// button's `value` is the request id.
fn buttons(request_id: &str) -> serde_json::Value {
    let button = |label: &str, action: &str, style: &str| {
        json!({
            "type": "button",
            "text": { "type": "plain_text", "text": label },
            "action_id": action,
            "style": style,
            "value": request_id,
        })
    };
    json!({
        "type": "actions",
        "block_id": "portcullis_decision",
        "elements": [
            button("Approve", "portcullis_approve", "primary"),
            button("Deny", "portcullis_deny", "danger"),
        ],
    })
}

/// One line saying what happened, for notifications and logs.
pub(super) fn summary(event: &Event) -> String {
    let action = one_line(&event.action, SUMMARY_ACTION_CHARS);
    match event.kind {
        EventKind::RequestCreated | EventKind::RequestJustified => format!(
            "Portcullis: approval needed for {} on {}: {} (request {})",
            event.requester, event.target, action, event.request_id
        ),
        EventKind::RequestDecided => {
            let by = event
                .decided_by
                .as_ref()
                .map(|by| format!(" by {by}"))
                .unwrap_or_default();
            let reason = event
                .reason
                .as_ref()
                .map(|reason| format!(": {}", one_line(reason, SUMMARY_ACTION_CHARS)))
                .unwrap_or_default();
            format!(
                "Portcullis: request {} on {} {}{by}{reason}",
                event.request_id, event.target, event.status
            )
        }
    }
}

/// Slack's three control characters, escaped as its docs ask.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `text` made safe inside a ``` block: escaped, and with no ``` of its own (a
/// zero-width space breaks them up, so the text still reads the same).
fn code_block(text: &str) -> String {
    escape(text).replace("```", "`\u{200b}``")
}

/// `text` on one line (whitespace runs collapsed), at most `max` characters.
fn one_line(text: &str, max: usize) -> String {
    truncate(&text.split_whitespace().collect::<Vec<_>>().join(" "), max)
}

/// `text` cut to at most `max` characters, with an ellipsis when cut.
fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((end, _)) => {
            let kept = text.get(..end).unwrap_or(text);
            format!("{kept}…")
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    fn created() -> Event {
        Event {
            kind: EventKind::RequestCreated,
            request_id: "0190-abc".into(),
            target: "prod-db".into(),
            action: "DELETE FROM users WHERE id < 10 AND note <> '```'".into(),
            requester: "alice (uid 1000, psql)".into(),
            status: "pending".into(),
            decided_by: None,
            reason: None,
            host: "gw1".into(),
            at_ms: 1_700_000_000_000,
            approve_hint: "portcullis approve 0190-abc".into(),
            justification: Some("ticket OPS-1".into()),
        }
    }

    #[test]
    fn json_is_the_event() {
        let body = render(WebhookFormat::Json, &created()).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["kind"], "request_created");
        assert_eq!(value["request_id"], "0190-abc");
        assert_eq!(value["decided_by"], serde_json::Value::Null);
        assert_eq!(value["at_ms"], 1_700_000_000_000_i64);
    }

    #[test]
    fn slack_escapes_and_keeps_code_blocks_closed() {
        let body = render(WebhookFormat::Slack, &created()).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let section = value["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(section.contains("&lt;&gt;"), "{section}");
        assert_eq!(section.matches("```").count(), 2, "{section}");
        let context = value["blocks"][1]["elements"][0]["text"].as_str().unwrap();
        assert!(context.contains("portcullis approve 0190-abc"), "{context}");
        assert!(!value["text"].as_str().unwrap().contains('\n'));
        assert!(
            section.contains("*Justification:* ticket OPS-1"),
            "{section}"
        );
        let buttons = &value["blocks"][2]["elements"];
        assert_eq!(buttons[0]["action_id"], "portcullis_approve");
        assert_eq!(buttons[1]["action_id"], "portcullis_deny");
        assert_eq!(buttons[1]["value"], "0190-abc");
    }

    #[test]
    fn decided_names_who_and_why() {
        let mut event = created();
        event.kind = EventKind::RequestDecided;
        event.status = "denied".into();
        event.decided_by = Some("bob".into());
        event.reason = Some("not during\nthe freeze".into());
        let text = summary(&event);
        assert_eq!(
            text,
            "Portcullis: request 0190-abc on prod-db denied by bob: not during the freeze"
        );
    }

    #[test]
    fn truncate_counts_characters() {
        assert_eq!(truncate("héllo", 10), "héllo");
        assert_eq!(truncate("héllo", 2), "hé…");
        assert_eq!(one_line("a\n  b\tc", 10), "a b c");
    }
}
