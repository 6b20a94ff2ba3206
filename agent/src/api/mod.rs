//! The local socket API: HTTP/1.1 + JSON over a Unix socket.
//!
//! Who may do what comes from the caller's peer credentials (`SO_PEERCRED`), never
//! from anything the caller says: root and members of `admin_group` manage policy and
//! see every session; anyone else sees their own sessions.
//!
//! Routes (all answers are JSON; errors are `{"error": "…"}` with a 4xx/5xx status):
//! - `GET  /v1/status`
//! - `GET  /v1/sessions?limit=N`, `GET /v1/sessions/{id}` (id or unique prefix),
//!   `GET /v1/sessions/{id}/events?after=SEQ&limit=N` (recorded events in order),
//!   `POST /v1/sessions/{id}/kill` (`{"reason": "…"}`, admins: ends a live session),
//!   `GET /v1/sessions/{id}/watch` (JSON lines: a live session's events and shell output)
//! - `POST /v1/policy/reload`
//! - `GET  /v1/approvals?all=true`, `POST /v1/approvals/{id}/approve|deny` (`{"reason": "…"}`),
//!   `GET /v1/approvals/watch` (JSON lines as requests and decisions happen),
//!   `POST /v1/approvals/{id}/justify` (`{"justification": "…"}`, the requester only)
//! - `POST /v1/web/link`: a one-time web console sign-in link for the caller
//! - `GET /v1/login` (JSON lines: the device code, then the linked identity),
//!   `POST /v1/logout`: link the caller's uid to an identity-provider identity, or end it
//! - `GET  /metrics` (Prometheus text; also on `metrics_listen` over TCP)
//! - `GET  /v1/audit?since_ms=&after_seq=&limit=`, `GET /v1/audit/verify` (admins)
//! - `GET  /v1/masking/learned?target=`; `POST /v1/masking/forget|pin`
//!   (`{"target", "column", "pinned"}`) and `POST /v1/masking/discover` (`{"target"}`),
//!   admins

mod approvals;
mod auth;
mod handlers;
mod masking;
mod sessions;
mod web;

pub use auth::Caller;

use crate::daemon::Daemon;
use anyhow::Context as _;
use axum::{
    Json, Router,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use std::{os::unix::fs::PermissionsExt as _, sync::Arc};
use tokio::{net::UnixListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// Binds the API socket and serves it until `stop` is cancelled.
pub fn serve(daemon: Arc<Daemon>, stop: CancellationToken) -> anyhow::Result<JoinHandle<()>> {
    let path = daemon.config.api_socket.clone();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot remove stale socket {}", path.display()));
        }
    }
    let listener = UnixListener::bind(&path)
        .with_context(|| format!("cannot listen on {}", path.display()))?;
    // Everyone may connect; what they may do is decided per request from SO_PEERCRED.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))
        .with_context(|| format!("cannot open up {}", path.display()))?;
    let app = router(daemon).into_make_service_with_connect_info::<Caller>();
    Ok(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
        {
            tracing::error!(%error, "API server failed");
        }
        let _ = std::fs::remove_file(&path);
    }))
}

fn router(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route("/v1/status", get(handlers::status))
        .route("/v1/sessions", get(handlers::sessions))
        .route("/v1/sessions/{id}", get(handlers::session))
        .route("/v1/sessions/{id}/events", get(handlers::events))
        .route("/v1/sessions/{id}/kill", post(sessions::kill))
        .route("/v1/sessions/{id}/watch", get(sessions::watch))
        .route("/v1/policy/reload", post(handlers::reload))
        .route("/v1/approvals", get(approvals::list))
        .route("/v1/approvals/watch", get(approvals::watch))
        .route("/v1/approvals/{id}/justify", post(web::justify))
        .route("/v1/approvals/{id}/{verb}", post(approvals::decide))
        .route("/v1/web/link", post(web::link))
        .route("/v1/login", get(web::login))
        .route("/v1/logout", post(web::logout))
        .route("/metrics", get(handlers::metrics))
        .route("/v1/audit", get(handlers::audit))
        .route("/v1/audit/verify", get(handlers::audit_verify))
        .route("/v1/masking/learned", get(masking::learned))
        .route("/v1/masking/forget", post(masking::forget))
        .route("/v1/masking/pin", post(masking::pin))
        .route("/v1/masking/discover", post(masking::discover))
        .fallback(handlers::not_found)
        .with_state(daemon)
}

/// An error answer: a status and a sentence that says what to do next.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

/// Serves `/metrics` alone on a TCP address, for a Prometheus scraper.
pub async fn serve_metrics(
    daemon: Arc<Daemon>,
    addr: std::net::SocketAddr,
    stop: CancellationToken,
) -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve metrics on {addr}; change `metrics_listen`"))?;
    let app = Router::new()
        .route("/metrics", get(handlers::metrics))
        .with_state(daemon);
    Ok(async move {
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
        {
            tracing::error!(%error, "Metrics server failed");
        }
    })
}
