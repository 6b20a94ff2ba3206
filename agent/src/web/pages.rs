//! The console's HTML, rendered on the server: the page frame, the sign-in page, and
//! the inbox of held requests with their decision forms.
//!
//! Everything a requester or the store supplies is escaped. Pages link one small
//! stylesheet and one small script (server-sent events and countdowns); they work
//! without the script, just without live updates.

use crate::{
    identity::Approver,
    record::{IdentityLink, RequestRecord},
};
use std::fmt::Write as _;

/// Text made safe for HTML element content and quoted attribute values.
#[must_use]
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page: `title`, the signed-in person (if any, with a sign-out form) and
/// `body`.
#[must_use]
pub fn frame(title: &str, who: Option<(&Approver, &str)>, body: &str) -> String {
    let header = match who {
        Some((approver, csrf)) => format!(
            "<nav aria-label=\"Console\"><a href=\"/\">Approvals</a> <a href=\"/sessions\">Sessions</a> \
             <a href=\"/audit\">Audit</a> <a href=\"/policy\">Policy</a></nav>\
             <form method=\"post\" action=\"/auth/logout\" class=\"who\">Signed in as <strong>{}</strong> \
             <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Sign out</button></form>",
            esc(&approver.label()),
            esc(csrf)
        ),
        None => String::new(),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Portcullis</title><link rel=\"stylesheet\" href=\"/static/style.css\">\
         <script src=\"/static/inbox.js\" defer></script></head>\
         <body><header><a href=\"/\" class=\"brand\">Portcullis</a>{header}</header>\
         <main>{body}</main></body></html>\n",
        esc(title)
    )
}

/// The page for a browser that is not signed in.
#[must_use]
pub fn sign_in(oidc_issuer: Option<&str>, notice: Option<&str>) -> String {
    let mut body = String::from("<h1>Sign in</h1>");
    if let Some(n) = notice {
        let _ = write!(body, "<p role=\"alert\" class=\"notice\">{}</p>", esc(n));
    }
    match oidc_issuer {
        Some(issuer) => {
            let _ = write!(
                body,
                "<p><a class=\"button\" id=\"sign-in\" href=\"/auth/login\">Sign in with your identity provider</a></p>\
                 <p class=\"muted\">{}</p>",
                esc(issuer)
            );
        }
        None => body.push_str("<p>No identity provider is configured.</p>"),
    }
    body.push_str(
        "<p>On the gateway host, <code>portcullis web-login</code> prints a one-time sign-in link \
         for a local approver.</p>",
    );
    frame("Sign in", None, &body)
}

/// A page that says one thing (an error, a refusal), with a way back.
#[must_use]
pub fn message(title: &str, text: &str, who: Option<(&Approver, &str)>) -> String {
    frame(
        title,
        who,
        &format!(
            "<h1>{}</h1><p role=\"alert\" class=\"notice\">{}</p><p><a href=\"/\">Back to the inbox</a></p>",
            esc(title),
            esc(text)
        ),
    )
}

/// A page that moves on to `to` at once: after sign-in, so the session cookie
/// (`SameSite=Strict`) is sent by a navigation that starts on this site.
#[must_use]
pub fn moving_on(to: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"0;url={0}\"><title>Signed in · Portcullis</title></head>\
         <body><p>Signed in. <a href=\"{0}\">Continue</a>.</p></body></html>\n",
        esc(to)
    )
}

/// One request as the inbox shows it, with what the viewer may do about it.
pub struct Card<'a> {
    pub request: &'a RequestRecord,
    pub links: &'a [IdentityLink],
    /// Whether the viewer may approve or deny it (an approver, not its requester).
    pub may_decide: bool,
    /// What happens when its time runs out.
    pub at_timeout: String,
    pub now_ms: i64,
}

/// The inbox list: the part of the page the script replaces on every change.
#[must_use]
pub fn inbox(cards: &[Card<'_>], csrf: &str) -> String {
    if cards.is_empty() {
        return "<p id=\"empty\">Nothing waits for you.</p>".into();
    }
    let mut out = format!(
        "<p class=\"muted\">{} waiting.</p><ol class=\"requests\">",
        cards.len()
    );
    for card in cards {
        card_html(&mut out, card, csrf);
    }
    out.push_str("</ol>");
    out
}

fn card_html(out: &mut String, card: &Card<'_>, csrf: &str) {
    let r = card.request;
    let p = &r.principal;
    let id = esc(&r.id);
    let left_s = (r.expires_at.saturating_sub(card.now_ms) / 1000).max(0);
    let _ = write!(
        out,
        "<li class=\"request\" data-request=\"{id}\"><article aria-labelledby=\"h-{id}\">\
         <h2 id=\"h-{id}\">{} on <code>{}</code></h2>\
         <pre class=\"what\">{}</pre><dl>",
        esc(p.user.as_deref().unwrap_or("?")),
        esc(&r.target),
        esc(&action_text(r)),
    );
    let mut row = |k: &str, v: &str| {
        let _ = write!(out, "<dt>{k}</dt><dd>{}</dd>", esc(v));
    };
    row(
        "Justification",
        r.justification.as_deref().unwrap_or("(none given)"),
    );
    if let Some(classes) = r
        .action
        .get("classes")
        .and_then(serde_json::Value::as_array)
    {
        let names: Vec<&str> = classes
            .iter()
            .filter_map(serde_json::Value::as_str)
            .collect();
        row("Classes", &names.join(", "));
    }
    row("Rule", r.rule.as_deref().unwrap_or("-"));
    row(
        "Requester",
        &format!(
            "{} (uid {}), groups {}",
            p.user.as_deref().unwrap_or("?"),
            p.uid,
            p.unix_groups.join(", ")
        ),
    );
    let idp: Vec<String> = card
        .links
        .iter()
        .map(|l| {
            let email = l
                .email
                .as_deref()
                .map_or(String::new(), |e| format!(" ({e})"));
            let groups = if l.groups.is_empty() {
                String::new()
            } else {
                format!(", groups {}", l.groups.join(", "))
            };
            format!("{} at {}{email}{groups}", l.subject, l.issuer)
        })
        .collect();
    row(
        "Identity",
        &if idp.is_empty() {
            "not linked".to_owned()
        } else {
            idp.join("; ")
        },
    );
    row(
        "Process",
        &format!("pid {} {}", p.pid, p.exe.as_deref().unwrap_or(&p.comm)),
    );
    row("Command line", p.cmdline.as_deref().unwrap_or("-"));
    row("cgroup", p.cgroup.as_deref().unwrap_or("-"));
    row("Gateway", &r.host);
    row("Request", &r.id);
    let votes: Vec<String> = r
        .approvals
        .iter()
        .map(|a| a.approver_label.clone())
        .collect();
    row(
        "Votes",
        &format!(
            "{} of {} ({})",
            r.approvals.len(),
            r.quorum,
            if votes.is_empty() {
                "none yet".into()
            } else {
                votes.join(", ")
            }
        ),
    );
    row(
        "Approvers",
        &format!("{} (stage {})", r.approvers.join(", "), r.stage),
    );
    let _ = write!(
        out,
        "<dt>Time left</dt><dd><span data-expires=\"{}\">{left_s} s</span>; then {}</dd></dl>",
        r.expires_at,
        esc(&card.at_timeout)
    );
    decide_forms(out, card.may_decide, &id, csrf);
    out.push_str("</article></li>");
}

/// The approve and deny forms (deny needs a reason), or a note that the viewer may
/// only look.
fn decide_forms(out: &mut String, may_decide: bool, id: &str, csrf: &str) {
    if may_decide {
        let csrf = esc(csrf);
        let _ = write!(
            out,
            "<div class=\"decide\">\
             <form method=\"post\" action=\"/requests/{id}/approve\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <label for=\"ar-{id}\">Note (optional)</label><input id=\"ar-{id}\" name=\"reason\" maxlength=\"2048\">\
             <button type=\"submit\" class=\"approve\">Approve</button></form>\
             <form method=\"post\" action=\"/requests/{id}/deny\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <label for=\"dr-{id}\">Reason to deny (required)</label><input id=\"dr-{id}\" name=\"reason\" required maxlength=\"2048\">\
             <button type=\"submit\" class=\"deny\">Deny</button></form></div>"
        );
    } else {
        out.push_str("<p class=\"muted\">You may see this request but not decide it.</p>");
    }
}

/// The SQL, command or request a person decides on; the summary otherwise.
fn action_text(r: &RequestRecord) -> String {
    ["text", "command", "request"]
        .iter()
        .find_map(|k| r.action.get(*k).and_then(serde_json::Value::as_str))
        .map_or_else(|| r.summary.clone(), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_a_requester_controls() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        let page = message("t", "<script>", None);
        assert!(!page.contains("<script>alert") && page.contains("&lt;script&gt;"));
        assert!(inbox(&[], "c").contains("Nothing waits"));
    }
}
