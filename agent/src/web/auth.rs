//! Sign-in routes: the OpenID Connect redirect and callback, one-time links from
//! `portcullis web-login`, and sign-out.
//!
//! The login in progress is bound to the browser by a short-lived `SameSite=Lax`
//! cookie (the callback arrives from the identity provider, another site); the
//! session cookie itself is `HttpOnly`, `SameSite=Strict`, `Secure` over HTTPS, and
//! expires with the session.

use super::{Web, pages, session};
use crate::identity::Approver;
use axum::{
    Form,
    extract::{Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
};
use serde::Deserialize;
use std::sync::Arc;

/// How long the login cookie lives (the login must finish in that time).
const LOGIN_COOKIE_SECONDS: u64 = 600;

impl Web {
    fn login_cookie_name(&self) -> &'static str {
        if self.secure() {
            "__Host-portcullis-login"
        } else {
            "portcullis-login"
        }
    }

    fn cookie(
        &self,
        name: &str,
        value: &str,
        max_age: u64,
        same_site: &str,
    ) -> Option<HeaderValue> {
        let secure = if self.secure() { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{name}={value}; Path=/; HttpOnly; SameSite={same_site}; Max-Age={max_age}{secure}"
        ))
        .ok()
    }

    /// Signs `approver` in and answers with the session cookie and a page that moves
    /// on to the inbox.
    fn signed_in(&self, approver: Approver, how: &str) -> Response {
        let label = approver.label();
        let Some(cookie) = self.sessions().sign_in(approver) else {
            return refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot start a session (no randomness)",
            );
        };
        tracing::info!(who = %label, how, "Web console sign-in");
        let mut r = Html(pages::moving_on("/")).into_response();
        let ttl = self.sessions().ttl().as_secs();
        if let Some(v) = self.cookie(self.cookie_name(), &cookie, ttl, "Strict") {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
        if let Some(v) = self.cookie(self.login_cookie_name(), "", 0, "Lax") {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
        r
    }
}

fn refused(status: StatusCode, text: &str) -> Response {
    (status, Html(pages::message("Sign-in refused", text, None))).into_response()
}

/// `GET /auth/login`: off to the identity provider.
pub async fn login(State(web): State<Arc<Web>>) -> Response {
    let Some(oidc) = &web.oidc else {
        return refused(
            StatusCode::NOT_FOUND,
            "no identity provider is configured; use `portcullis web-login`",
        );
    };
    let start = match oidc.start().await {
        Ok(s) => s,
        Err(error) => {
            tracing::warn!(%error, "Cannot start an OpenID Connect sign-in");
            return refused(StatusCode::BAD_GATEWAY, &error.to_string());
        }
    };
    let Some(binding) = web
        .sessions()
        .start_login(start.state, start.pkce_verifier, start.nonce)
    else {
        return refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many sign-ins in progress; try again in a few minutes",
        );
    };
    let mut r = Redirect::to(&start.url).into_response();
    if let Some(v) = web.cookie(
        web.login_cookie_name(),
        &binding,
        LOGIN_COOKIE_SECONDS,
        "Lax",
    ) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

#[derive(Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// `GET /auth/callback`: the provider sends the browser back with a code.
pub async fn callback(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Query(q): Query<Callback>,
) -> Response {
    let Some(oidc) = &web.oidc else {
        return refused(StatusCode::NOT_FOUND, "no identity provider is configured");
    };
    if let Some(error) = q.error {
        let shown: String = error
            .chars()
            .filter(char::is_ascii_graphic)
            .take(64)
            .collect();
        return refused(
            StatusCode::FORBIDDEN,
            &format!("the identity provider said: {shown}"),
        );
    }
    let (Some(code), Some(state)) = (q.code, q.state) else {
        return refused(
            StatusCode::BAD_REQUEST,
            "the callback lacks a code or state; sign in again",
        );
    };
    let binding = session::cookie(&headers, web.login_cookie_name());
    let Some(login) = web.sessions().finish_login(&state, binding) else {
        tracing::warn!("Web console sign-in refused: unknown, expired or foreign login state");
        return refused(
            StatusCode::FORBIDDEN,
            "this sign-in was not started in this browser or has expired; sign in again",
        );
    };
    match oidc.finish(&code, &login.pkce_verifier, &login.nonce).await {
        Ok(approver) => web.signed_in(approver, "oidc"),
        Err(error) => {
            tracing::warn!(%error, "Web console sign-in refused");
            web.daemon
                .gate
                .audit(
                    "web_sign_in_refused",
                    oidc.issuer(),
                    None,
                    serde_json::json!({ "error": error.to_string() }),
                )
                .await;
            refused(StatusCode::FORBIDDEN, &error.to_string())
        }
    }
}

#[derive(Deserialize)]
pub struct Link {
    token: String,
}

/// `GET /auth/link?token=…`: a one-time link from `portcullis web-login`.
pub async fn link(State(web): State<Arc<Web>>, Query(q): Query<Link>) -> Response {
    match web.sessions().redeem_link(&q.token) {
        Some(approver) => web.signed_in(approver, "link"),
        None => refused(
            StatusCode::FORBIDDEN,
            "this sign-in link is used up or expired; run `portcullis web-login` again",
        ),
    }
}

#[derive(Deserialize)]
pub struct Logout {
    csrf: String,
}

/// `POST /auth/logout`: ends the session (with its CSRF token, so no other site can
/// sign a person out).
pub async fn logout(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Form(f): Form<Logout>,
) -> Response {
    if let Some(cookie) = session::cookie(&headers, web.cookie_name())
        && let Some(s) = web.sessions().get(cookie)
        && session::same_secret(&s.csrf, &f.csrf)
    {
        web.sessions().sign_out(cookie);
    }
    let mut r = Redirect::to("/").into_response();
    if let Some(v) = web.cookie(web.cookie_name(), "", 0, "Strict") {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// A one-time sign-in URL for `approver` (the API's `portcullis web-login`).
#[must_use]
pub fn link_url(public_url: &str, token: &str) -> String {
    format!("{public_url}/auth/link?token={token}")
}
