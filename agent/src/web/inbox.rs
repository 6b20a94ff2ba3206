//! The approvals inbox: the page, the list the script reloads, the server-sent
//! events that tell it when, and the approve/deny forms.
//!
//! A person sees the requests they may see under the CLI's rules (their own, the ones
//! they may decide, all of them for an admin is not a web notion: the console shows
//! approvers' work). Buttons appear only where they may decide: pending, in the
//! request's current approver groups, and not their own request. A decision form is
//! refused without the session's CSRF token; the gate then applies every other rule.

use super::{Web, pages, session};
use crate::{
    gate::DecideError,
    identity::Approver,
    record::{RequestRecord, now_ms},
    web::session::WebSession,
};
use axum::{
    Form,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{
        Html, IntoResponse, Redirect, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use std::{convert::Infallible, sync::Arc};

/// Most requests the inbox lists.
const MAX_LISTED: u32 = 200;

impl Web {
    /// The signed-in session of this request, if any.
    pub(super) fn session(&self, headers: &HeaderMap) -> Option<WebSession> {
        self.sessions()
            .get(session::cookie(headers, self.cookie_name())?)
    }

    /// Whether `who` may decide `r` now (the gate checks again when they do).
    async fn may_decide(&self, r: &RequestRecord, who: &Approver) -> bool {
        let policy = self.daemon.gate.policy();
        r.approvers.iter().any(|g| policy.is_member(g, who)) && !self.is_own(r, who).await
    }

    /// Whether `r` was asked for by `who` (by uid, or a linked identity).
    async fn is_own(&self, r: &RequestRecord, who: &Approver) -> bool {
        if who.uid() == Some(r.principal.uid) {
            return true;
        }
        let Approver::Idp {
            issuer, subject, ..
        } = who
        else {
            return false;
        };
        let links = self
            .daemon
            .store
            .linked_identities(r.principal.uid)
            .await
            .unwrap_or_default();
        links.iter().any(|l| l.is_idp(issuer, subject))
    }

    fn at_timeout(&self, r: &RequestRecord) -> String {
        let policy = self.daemon.gate.policy();
        let review = r.rule.as_deref().and_then(|rule| policy.review_of(rule));
        match review.and_then(|rv| rv.escalation.as_ref()) {
            Some(esc) if r.stage == "review" => {
                format!("escalated to {}", esc.approvers.join(", "))
            }
            _ => "denied".to_owned(),
        }
    }

    /// The inbox list for `who`.
    async fn inbox_html(&self, s: &WebSession) -> Result<String, String> {
        let requests = self
            .daemon
            .store
            .requests(true, MAX_LISTED)
            .await
            .map_err(|e| e.to_string())?;
        let mut shown = Vec::new();
        for r in requests
            .iter()
            .filter(|r| self.daemon.gate.may_see(r, &s.approver, false))
        {
            let links = self
                .daemon
                .store
                .linked_identities(r.principal.uid)
                .await
                .unwrap_or_default();
            shown.push((
                r,
                links,
                self.may_decide(r, &s.approver).await,
                self.at_timeout(r),
            ));
        }
        let now = now_ms();
        let cards: Vec<pages::Card<'_>> = shown
            .iter()
            .map(|(request, links, may_decide, at_timeout)| pages::Card {
                request,
                links,
                may_decide: *may_decide,
                at_timeout: at_timeout.clone(),
                now_ms: now,
            })
            .collect();
        Ok(pages::inbox(&cards, &s.csrf))
    }
}

fn sign_in_page(web: &Web) -> Response {
    Html(pages::sign_in(
        web.oidc.as_ref().map(super::oidc::Oidc::issuer),
        None,
    ))
    .into_response()
}

/// `GET /`: the inbox, or the sign-in page.
pub async fn page(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let Some(s) = web.session(&headers) else {
        return sign_in_page(&web);
    };
    match web.inbox_html(&s).await {
        Ok(list) => Html(pages::frame(
            "Approvals",
            Some((&s.approver, &s.csrf)),
            &format!(
                "<h1>Approvals</h1><p class=\"muted\" id=\"live\" data-live=\"off\">Live updates start when the page has loaded.</p>\
                 <section id=\"inbox\" aria-live=\"polite\" aria-label=\"Requests waiting\">{list}</section>"
            ),
        ))
        .into_response(),
        Err(e) => internal(&e),
    }
}

/// `GET /inbox`: the list alone, for the script to swap in.
pub async fn fragment(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let Some(s) = web.session(&headers) else {
        return (StatusCode::UNAUTHORIZED, "sign in again").into_response();
    };
    match web.inbox_html(&s).await {
        Ok(list) => Html(list).into_response(),
        Err(e) => internal(&e),
    }
}

fn internal(e: &str) -> Response {
    tracing::error!(error = %e, "Web console request failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Html(pages::message(
            "Error",
            "the store failed; see the daemon's log",
            None,
        )),
    )
        .into_response()
}

/// `GET /events`: a `request` event (data: the request id) whenever a request the
/// person may see is created, justified or decided, while their session lasts.
pub async fn events(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let Some(s) = web.session(&headers) else {
        return (StatusCode::UNAUTHORIZED, "sign in again").into_response();
    };
    let cookie = session::cookie(&headers, web.cookie_name())
        .unwrap_or_default()
        .to_owned();
    Sse::new(changes(web, s, cookie))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The events for session `s` (cookie `cookie`), until it ends or is signed out.
fn changes(
    web: Arc<Web>,
    s: WebSession,
    cookie: String,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let rx = web.daemon.gate.subscribe();
    stream::unfold(
        (rx, web, s, cookie),
        |(mut rx, web, s, cookie)| async move {
            loop {
                if web.sessions().get(&cookie).is_none() {
                    return None;
                }
                match rx.recv().await {
                    Ok(event) => {
                        let visible = match web.daemon.store.request(&event.request_id).await {
                            Ok(Some(r)) => web.daemon.gate.may_see(&r, &s.approver, false),
                            _ => false,
                        };
                        if visible {
                            let e = Event::default().event("request").data(event.request_id);
                            return Some((Ok(e), (rx, web, s, cookie)));
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let e = Event::default().event("request").data("");
                        return Some((Ok(e), (rx, web, s, cookie)));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    )
}

#[derive(Deserialize)]
pub struct DecideForm {
    csrf: Option<String>,
    reason: Option<String>,
}

/// Longest reason kept with a decision (as the API).
const MAX_REASON: usize = 2048;

/// `POST /requests/{id}/approve|deny`: the same gate call as `portcullis approve`.
pub async fn decide(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path((id, verb)): Path<(String, String)>,
    Form(form): Form<DecideForm>,
) -> Response {
    let Some(s) = web.session(&headers) else {
        tracing::warn!(request = %id, "Web decision refused: not signed in");
        return (
            StatusCode::UNAUTHORIZED,
            Html(pages::message("Not signed in", "sign in first", None)),
        )
            .into_response();
    };
    let who = Some((&s.approver, s.csrf.as_str()));
    if !form
        .csrf
        .as_deref()
        .is_some_and(|t| session::same_secret(t, &s.csrf))
    {
        tracing::warn!(request = %id, who = %s.approver.label(), "Web decision refused: missing or wrong CSRF token");
        web.daemon
            .gate
            .audit(
                "web_decision_refused",
                &id,
                Some(&s.approver.label()),
                serde_json::json!({ "why": "csrf" }),
            )
            .await;
        return (
            StatusCode::FORBIDDEN,
            Html(pages::message(
                "Refused",
                "the form's token does not match your session; reload the page and try again",
                who,
            )),
        )
            .into_response();
    }
    let reason = form
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty());
    if reason.is_some_and(|r| r.len() > MAX_REASON) {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            Html(pages::message("Refused", "the reason is too long", who)),
        )
            .into_response();
    }
    let gate = &web.daemon.gate;
    let done = match verb.as_str() {
        "approve" => gate.approve(&id, &s.approver, reason).await,
        "deny" => {
            gate.deny(&id, &s.approver, reason.unwrap_or_default())
                .await
        }
        _ => {
            return (
                StatusCode::NOT_FOUND,
                Html(pages::message(
                    "No such decision",
                    "use approve or deny",
                    who,
                )),
            )
                .into_response();
        }
    };
    match done {
        Ok(d) => {
            tracing::info!(request = %d.request, who = %s.approver.label(), verb, "Web decision");
            Redirect::to("/").into_response()
        }
        Err(e) => {
            web.daemon
                .gate
                .audit(
                    "web_decision_refused",
                    &id,
                    Some(&s.approver.label()),
                    serde_json::json!({ "verb": verb, "why": e.to_string() }),
                )
                .await;
            (
                status_of(&e),
                Html(pages::message("Refused", &e.to_string(), who)),
            )
                .into_response()
        }
    }
}

/// The HTTP status for a refused decision (as the API answers it).
pub(super) fn status_of(e: &DecideError) -> StatusCode {
    match e {
        DecideError::NotFound(_) => StatusCode::NOT_FOUND,
        DecideError::AlreadyDecided { .. } | DecideError::AlreadyApproved(_) => {
            StatusCode::CONFLICT
        }
        DecideError::SelfApproval(_) | DecideError::NotApprover { .. } => StatusCode::FORBIDDEN,
        DecideError::ReasonRequired => StatusCode::BAD_REQUEST,
        DecideError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
