//! The web console: approvers sign in (OpenID Connect, or a one-time link from
//! `portcullis web-login`) and decide held actions in a live inbox; Slack buttons
//! reach it at `POST /slack/actions`.
//!
//! Off unless `[web] listen` is set. HTTPS with the configured certificate or a
//! generated one (plain HTTP only on a loopback address). Every decision is the same
//! [`crate::gate::Gate::approve`]/[`deny`](crate::gate::Gate::deny) call the CLI's
//! API makes, so the rules (approver groups, quorum, no self-approval, escalation)
//! and the audit record are the same; only the approver's identity differs.
//!
//! Layout: `config` (the `[web]` table), `session` (cookies, CSRF, logins, links),
//! `oidc` (the sign-in flow), `auth` (its routes), `pages` (HTML), `inbox` (the
//! inbox, its live events and the decision forms), `records` (sessions, audit and
//! policy, read-only), `replay` (terminal recordings played in the page, checked
//! against the session's chain), `slack` (signed callbacks), `assets` (the
//! stylesheet, the scripts and the vendored asciinema-player).

mod auth;
mod config;
mod inbox;
mod oidc;
mod pages;
mod records;
mod replay;
mod session;
mod slack;

pub use auth::link_url;
pub use config::{OidcConfig, SlackConfig, WebConfig, WebFile};
pub use oidc::{Oidc, OidcError};
pub use session::Sessions;

use crate::daemon::Daemon;
use anyhow::Context as _;
use axum::{
    Router,
    extract::DefaultBodyLimit,
    http::{HeaderValue, header},
    response::Response,
    routing::{get, post},
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use std::{future::Future, sync::Arc, time::Duration};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::Semaphore,
};
use tokio_util::sync::CancellationToken;

/// Largest request body the console reads (decision forms, Slack callbacks).
const MAX_BODY: usize = 64 * 1024;
/// Browser connections served at once.
const MAX_CONNECTIONS: usize = 256;
/// How long a connection may take to finish its TLS handshake or its request head.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every console route shares.
pub struct Web {
    daemon: Arc<Daemon>,
    config: WebConfig,
    oidc: Option<oidc::Oidc>,
}

impl Web {
    fn sessions(&self) -> &Sessions {
        &self.daemon.web_sessions
    }

    /// Whether cookies get `Secure` (the console speaks HTTPS).
    fn secure(&self) -> bool {
        self.config.tls.is_some()
    }

    /// The session cookie's name: `__Host-` over HTTPS, so no other host or path
    /// can set it.
    fn cookie_name(&self) -> &'static str {
        if self.secure() {
            "__Host-portcullis"
        } else {
            "portcullis"
        }
    }
}

/// The sign-in table for the console (empty and unused when it is off).
#[must_use]
pub fn sessions_for(config: Option<&WebConfig>) -> Sessions {
    config.map_or_else(
        || Sessions::new(Duration::from_hours(1), 1),
        |c| Sessions::new(c.session_ttl, c.max_sessions),
    )
}

/// Binds the console's listener, if `[web] listen` is set; the future serves it until
/// `stop` is cancelled.
pub async fn serve(
    daemon: Arc<Daemon>,
    stop: CancellationToken,
) -> anyhow::Result<Option<impl Future<Output = ()> + Send + 'static>> {
    let Some(config) = daemon.config.web.clone() else {
        return Ok(None);
    };
    let tls = match &config.tls {
        None => None,
        Some(files) => Some(
            crate::proto::tls::server_config(
                files.cert.as_deref(),
                files.key.as_deref(),
                &crate::proto::tls::Generated {
                    dir: &config.state_dir,
                    stem: "web",
                    clients: "web console browsers",
                },
                &[b"http/1.1"],
            )
            .context("cannot set up TLS for the web console; check [web] tls_cert and tls_key")?,
        ),
    };
    let oidc = config
        .oidc
        .clone()
        .map(|o| oidc::Oidc::new(o, &config.public_url))
        .transpose()?;
    let listener = TcpListener::bind(config.listen).await.with_context(|| {
        format!(
            "cannot serve the web console on {}; change [web] listen",
            config.listen
        )
    })?;
    tracing::info!(listen = %config.listen, url = %config.public_url, tls = tls.is_some(), oidc = oidc.is_some(), "Web console listening");
    let web = Arc::new(Web {
        daemon,
        config,
        oidc,
    });
    Ok(Some(accept_loop(listener, router(web), tls, stop)))
}

fn router(web: Arc<Web>) -> Router {
    Router::new()
        .route("/", get(inbox::page))
        .route("/inbox", get(inbox::fragment))
        .route("/events", get(inbox::events))
        .route("/requests/{id}/{verb}", post(inbox::decide))
        .route("/sessions", get(records::list))
        .route("/sessions/{id}", get(records::detail))
        .route("/sessions/{id}/casts/{seq}", get(replay::cast))
        .route("/audit", get(records::audit))
        .route("/policy", get(records::policy))
        .route("/auth/login", get(auth::login))
        .route("/auth/callback", get(auth::callback))
        .route("/auth/link", get(auth::link))
        .route("/auth/logout", post(auth::logout))
        .route("/slack/actions", post(slack::actions))
        .route(
            "/static/style.css",
            get(|| async { asset("text/css", STYLE) }),
        )
        .route(
            "/static/inbox.js",
            get(|| async { asset("text/javascript", SCRIPT) }),
        )
        .route(
            "/static/replay.js",
            get(|| async { asset("text/javascript", replay::REPLAY_JS) }),
        )
        .route(
            replay::PLAYER_JS_PATH,
            get(|| async { immutable(asset("text/javascript", replay::PLAYER_JS)) }),
        )
        .route(
            replay::PLAYER_CSS_PATH,
            get(|| async { immutable(asset("text/css", replay::PLAYER_CSS)) }),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(guard_headers))
        .with_state(web)
}

const STYLE: &str = include_str!("assets/style.css");
const SCRIPT: &str = include_str!("assets/inbox.js");

fn asset(kind: &'static str, body: impl Into<axum::body::Body>) -> Response {
    let mut r = Response::new(body.into());
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    r
}

/// `r`, marked for browsers to keep: a vendored file under a versioned path.
fn immutable(mut r: Response) -> Response {
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    r
}

/// Headers every answer carries: no framing, no sniffing, no caching of pages with
/// tokens in them, scripts and styles only from the console itself.
async fn guard_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    // A page that needs more (the session page's WebAssembly player) sets its own.
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    r
}

/// Accepts browsers until `stop`: TLS (if configured), then HTTP/1.1 on each.
async fn accept_loop(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(error) => {
                tracing::warn!(%error, "Web console accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            // Full: drop the connection rather than queue it.
            continue;
        };
        let (app, acceptor, stop) = (app.clone(), acceptor.clone(), stop.clone());
        tokio::spawn(async move {
            let _slot = slot;
            match acceptor {
                None => serve_connection(tcp, app, stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => serve_connection(tls, app, stop).await,
                        Ok(Err(error)) => {
                            tracing::debug!(%error, %peer, "Web console TLS handshake failed");
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "Web console TLS handshake timed out");
                        }
                    }
                }
            }
        });
    }
}

async fn serve_connection<S>(io: S, app: Router, stop: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .max_buf_size(MAX_BODY);
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
        }
    }
}
