//! Read-only pages: recorded sessions (list and transcript, with the terminal
//! players of `replay`), the audit chain's status, and the policy in force.
//!
//! Admins (root, `admin_group`, members of `[web] admin_groups`) see everything; a
//! local approver sees their own sessions; others are told what they lack.

use super::{
    Web,
    pages::{self, esc},
    session::WebSession,
};
use crate::{
    identity::Approver,
    record::{EventRecord, SessionFilter, SessionRecord},
};
use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{Html, IntoResponse, Response},
};
use std::{fmt::Write as _, sync::Arc};

/// Sessions listed on one page.
const SESSIONS_SHOWN: u32 = 100;
/// Events shown of one session.
const EVENTS_SHOWN: u32 = 1000;

impl Web {
    /// Whether `who` sees every session, the audit status and the policy.
    fn is_admin(&self, who: &Approver) -> bool {
        if let Approver::Local {
            uid, unix_groups, ..
        } = who
            && (*uid == 0
                || self
                    .daemon
                    .config
                    .admin_group
                    .as_ref()
                    .is_some_and(|g| unix_groups.contains(g)))
        {
            return true;
        }
        let policy = self.daemon.gate.policy();
        self.config
            .admin_groups
            .iter()
            .any(|g| policy.is_member(g, who))
    }
}

fn page(s: &WebSession, title: &str, body: &str) -> Response {
    Html(pages::frame(title, Some((&s.approver, &s.csrf)), body)).into_response()
}

pub(super) fn refusal(s: &WebSession, status: StatusCode, text: &str) -> Response {
    (
        status,
        Html(pages::message(
            "Not shown",
            text,
            Some((&s.approver, &s.csrf)),
        )),
    )
        .into_response()
}

/// The signed-in session, or the sign-in page.
pub(super) fn signed_in(web: &Web, headers: &HeaderMap) -> Result<WebSession, Response> {
    web.session(headers).ok_or_else(|| {
        (
            StatusCode::UNAUTHORIZED,
            Html(pages::message("Not signed in", "sign in first", None)),
        )
            .into_response()
    })
}

/// Whose sessions `s` may see: `Ok(None)` for all, `Ok(Some(uid))` for their own.
pub(super) fn scope(web: &Web, s: &WebSession) -> Result<Option<u32>, Response> {
    if web.is_admin(&s.approver) {
        return Ok(None);
    }
    s.approver.uid().map(Some).ok_or_else(|| {
        refusal(
            s,
            StatusCode::FORBIDDEN,
            "recorded sessions are shown to console admins (`[web] admin_groups`) and to local users for their own",
        )
    })
}

/// Recorded session `id`, if the signed-in caller may see it; otherwise the page
/// that says why (not signed in, not allowed, not theirs).
pub(super) async fn visible_session(
    web: &Web,
    headers: &HeaderMap,
    id: &str,
) -> Result<(WebSession, SessionRecord), Response> {
    let s = signed_in(web, headers)?;
    let uid = scope(web, &s)?;
    match web.daemon.store.session(id).await {
        Ok(Some(r)) if uid.is_none() || r.principal.as_ref().map(|p| p.uid) == uid => Ok((s, r)),
        _ => Err(refusal(
            &s,
            StatusCode::NOT_FOUND,
            "no such session of yours",
        )),
    }
}

fn when(ms: i64) -> String {
    let secs = u64::try_from(ms / 1000).unwrap_or(0);
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .to_string()
}

fn outcome(r: &SessionRecord) -> String {
    serde_json::to_value(r.outcome)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The sessions page's filter.
#[derive(serde::Deserialize)]
pub struct Filter {
    /// Shown when who, target, protocol or outcome contain it (any case).
    q: Option<String>,
}

/// `GET /sessions?q=…`.
pub async fn list(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    axum::extract::Query(filter): axum::extract::Query<Filter>,
) -> Response {
    let needle = filter
        .q
        .as_deref()
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .map(|q| q.chars().take(200).collect::<String>().to_lowercase());
    let s = match signed_in(&web, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let uid = match scope(&web, &s) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let scope = SessionFilter {
        uid,
        limit: SESSIONS_SHOWN,
    };
    let Ok(sessions) = web.daemon.store.sessions(&scope).await else {
        return refusal(
            &s,
            StatusCode::INTERNAL_SERVER_ERROR,
            "the store failed; see the daemon's log",
        );
    };
    let mut body = format!(
        "<h1>Sessions</h1><form method=\"get\" action=\"/sessions\" role=\"search\">\
         <label for=\"q\">Filter</label> <input id=\"q\" name=\"q\" value=\"{}\" placeholder=\"user, target, protocol, outcome\"> \
         <button type=\"submit\">Show</button></form><table><thead><tr><th scope=\"col\">Started</th><th scope=\"col\">Who</th>\
         <th scope=\"col\">Target</th><th scope=\"col\">Protocol</th><th scope=\"col\">Outcome</th></tr></thead><tbody>",
        esc(needle.as_deref().unwrap_or_default())
    );
    for r in &sessions {
        let who = r
            .principal
            .as_ref()
            .map_or_else(|| "unknown".to_owned(), crate::identity::Principal::label);
        let row = format!(
            "{who} {} {} {}",
            r.target.as_deref().unwrap_or_default(),
            r.protocol,
            outcome(r)
        );
        if needle
            .as_ref()
            .is_some_and(|n| !row.to_lowercase().contains(n.as_str()))
        {
            continue;
        }
        let _ = write!(
            body,
            "<tr><td><a href=\"/sessions/{id}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&when(r.started_at)),
            esc(&who),
            esc(r.target.as_deref().unwrap_or("-")),
            esc(&r.protocol),
            esc(&outcome(r)),
            id = esc(&r.id.to_string()),
        );
    }
    body.push_str("</tbody></table>");
    page(&s, "Sessions", &body)
}

/// `GET /sessions/{id}`: the session and its transcript (statements and their
/// verdicts, as recorded, masked).
pub async fn detail(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (s, record) = match visible_session(&web, &headers, &id).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    let events = web
        .daemon
        .store
        .events(&record.id, 0, EVENTS_SHOWN)
        .await
        .unwrap_or_default();
    let mut body = transcript(&record, &events);
    body.push_str(&super::replay::players(&record, &events));
    let mut answer = page(&s, "Session", &body);
    answer.headers_mut().insert(
        axum::http::header::CONTENT_SECURITY_POLICY,
        axum::http::HeaderValue::from_static(super::replay::SESSION_CSP),
    );
    answer
}

fn transcript(r: &SessionRecord, events: &[EventRecord]) -> String {
    let who = r
        .principal
        .as_ref()
        .map_or_else(|| "unknown".to_owned(), crate::identity::Principal::label);
    let identity = r
        .principal
        .as_ref()
        .and_then(|p| p.idp.as_ref())
        .map_or_else(String::new, |idp| {
            format!(
                "<dt>Identity</dt><dd id=\"identity\">{} · groups {}</dd>",
                esc(&idp.label()),
                esc(&idp.groups.join(", "))
            )
        });
    let mut body = format!(
        "<h1>Session {}</h1><dl><dt>Who</dt><dd>{}</dd>{identity}<dt>Target</dt><dd>{} ({})</dd>\
         <dt>Started</dt><dd>{}</dd><dt>Outcome</dt><dd>{}</dd><dt>Gateway</dt><dd>{}</dd></dl>\
         <h2>Transcript</h2><table><thead><tr><th scope=\"col\">#</th><th scope=\"col\">What</th>\
         <th scope=\"col\">Verdict</th><th scope=\"col\">Decided by</th><th scope=\"col\">Reason</th></tr></thead><tbody>",
        esc(&r.id.to_string()),
        esc(&who),
        esc(r.target.as_deref().unwrap_or("-")),
        esc(&r.protocol),
        esc(&when(r.started_at)),
        esc(&outcome(r)),
        esc(&r.host),
    );
    for e in events {
        let _ = write!(
            body,
            "<tr><td>{}</td><td class=\"sql\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            e.seq,
            esc(&e.summary),
            esc(&e.verdict),
            esc(e.decided_by.as_deref().unwrap_or("")),
            esc(e.reason.as_deref().or(e.error.as_deref()).unwrap_or("")),
        );
    }
    body.push_str("</tbody></table>");
    body
}

/// `GET /audit`: whether the hash chain is intact (admins).
pub async fn audit(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let s = match signed_in(&web, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !web.is_admin(&s.approver) {
        return refusal(
            &s,
            StatusCode::FORBIDDEN,
            "the audit status is shown to console admins",
        );
    }
    match web.daemon.store.verify_audit().await {
        Ok(report) => {
            let state = if report.is_intact() {
                "intact"
            } else {
                "BROKEN"
            };
            page(
                &s,
                "Audit",
                &format!(
                    "<h1>Audit log: {state}</h1><p id=\"audit-status\">{}</p>",
                    esc(&report.to_string())
                ),
            )
        }
        Err(_) => refusal(
            &s,
            StatusCode::INTERNAL_SERVER_ERROR,
            "the store failed; see the daemon's log",
        ),
    }
}

/// `GET /policy`: the targets and rules in force, read-only (admins).
pub async fn policy(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let s = match signed_in(&web, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !web.is_admin(&s.approver) {
        return refusal(
            &s,
            StatusCode::FORBIDDEN,
            "the policy is shown to console admins",
        );
    }
    let policy = web.daemon.gate.policy();
    let mut body = format!(
        "<h1>Policy in force</h1><p>{} targets, {} rules, from <code>{}</code>; change it there and run \
         <code>portcullis policy reload</code>.</p><table><thead><tr><th scope=\"col\">Target</th>\
         <th scope=\"col\">Protocol</th></tr></thead><tbody>",
        policy.targets().len(),
        policy.rules_len(),
        esc(&web.daemon.config.policies.display().to_string()),
    );
    for t in policy.targets() {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td></tr>",
            esc(&t.name),
            esc(&t.protocol.to_string())
        );
    }
    body.push_str("</tbody></table>");
    page(&s, "Policy", &body)
}
