//! HTTP and HTTPS: every request is an action the gate decides.
//!
//! The client (curl, Python requests, Node's fetch, kubectl) believes it talks to the
//! server. For `https` targets the proxy terminates TLS (`server`): it reads the
//! `ClientHello`, mints a certificate for the name the client asked for from its CA
//! (`ca`: SNI, or the address dialled when there is none) and offers HTTP/2 and
//! HTTP/1.1 by ALPN. Then each request is checked and described (`request`: smuggling
//! refused, the path normalized once), decided by the gate (`exchange`): allowed
//! requests are forwarded with the target's credential header set (`upstream`),
//! denied and timed-out ones get `403` with a JSON body, held ones wait (`held`:
//! their body buffered up to a cap). Responses of text types are masked as they
//! stream (`masking`) and every request is recorded as one `http` event (`record`).
//!
//! On one HTTP/1.1 keep-alive connection requests are sequential: those behind a
//! held request wait for it (the protocol has no way to answer out of order). On
//! HTTP/2 each stream is its own action and is decided on its own.
//!
//! Request heads are read first by `framing` (HTTP/1): both `Content-Length` and
//! `Transfer-Encoding`, obs-fold, a bare CR, a malformed head get `400`, an oversized
//! one `431`, each with a record, the connection closed and nothing forwarded. Then
//! hyper frames the request, strictly; a head not sent within `header_timeout` is cut
//! off. The proxy re-frames every request it forwards, so no framing header passes
//! as it came.
//!
//! Layout: `config` (the `[http]` table), `ca`, `server` (TLS accept, the hyper
//! connection and its limits), `framing` (request heads read before hyper),
//! `request`, `exchange` (one request: decided), `held`, `forward` (an allowed
//! request: sent, its response streamed back, an upgrade relayed), `upstream`,
//! `masking`, `record`, `tap` (bodies counted, a response's end held until its
//! record is written), `whole` (a small response read whole, recorded, then sent
//! in one write), `reply` (the proxy's own answers).

mod ca;
pub mod config;
mod exchange;
mod forward;
mod framing;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzz;
mod held;
mod masking;
mod record;
mod reply;
mod request;
/// The path normalization requests are matched with (for `policy test`).
pub use request::normalize as normalize_path;
mod server;
mod tap;
pub mod trust;
mod upstream;
mod whole;

use crate::{
    policy::Target,
    proto::{Protocol, Served, Session},
};
use std::{path::PathBuf, sync::Arc};
use tokio::net::TcpStream;

pub use ca::uninstall;
pub use config::HttpConfig;

/// Why the HTTP proxy could not be set up or could not reach a target.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The CA for HTTPS clients could not be made, loaded or installed.
    #[error("HTTPS CA: {reason}")]
    Ca { reason: String },
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The HTTP protocol, with what its sessions share.
pub struct Http {
    config: HttpConfig,
    /// The CA `https` clients are served with; `None` when it could not be loaded or
    /// made (then `authority_error` says why).
    authority: Option<ca::Authority>,
    /// What `https` clients get when no authority could be set up.
    authority_error: Option<String>,
    /// Set once the CA is in the system trust store (the first time a policy has
    /// an `https` target), and held while the daemon runs: its CA there is not stale.
    trusted: std::sync::OnceLock<trust::OwnerLock>,
}

impl Http {
    /// Sets up the proxy: the CA is loaded (or generated). It goes into the system
    /// trust store only when a policy has an `https` target ([`Http::publish`]): a
    /// host that proxies only databases and SSH keeps its trust store untouched. A
    /// failure is logged and `https` targets refuse connections, while `http`
    /// targets keep working.
    #[must_use]
    pub fn new(config: &HttpConfig) -> Self {
        let loaded = ca::Authority::load_or_generate(
            config.ca_cert.as_deref(),
            config.ca_key.as_deref(),
            &config.state_dir,
        );
        let (authority, authority_error) = match loaded {
            Ok(authority) => (Some(authority), None),
            Err(error) => {
                tracing::error!(%error, "HTTPS clients cannot be served");
                (None, Some(error.to_string()))
            }
        };
        Self {
            config: config.clone(),
            authority,
            authority_error,
            trusted: std::sync::OnceLock::new(),
        }
    }

    /// Puts the CA into the system trust store (with `trust_store`) the first time
    /// `policy` has an `https` target; called on start and on every reload, and
    /// done when it returns, as before. The work (files, a lock, and
    /// `update-ca-certificates`, about 2 s) runs on a blocking thread, so the
    /// runtime keeps serving meanwhile. A failure is logged and tried again on the
    /// next reload: clients that trust the CA another way still work. Callers do not
    /// overlap (start, then reloads one at a time).
    pub async fn publish(&self, policy: &crate::policy::Policy) {
        let wanted = policy
            .targets()
            .iter()
            .any(|t| t.protocol == crate::policy::Protocol::Https);
        if !wanted || !self.config.trust_store || self.trusted.get().is_some() {
            return;
        }
        let Some(authority) = &self.authority else {
            return;
        };
        let (trust_dir, state_dir) = (self.config.trust_dir.clone(), self.config.state_dir.clone());
        let pem = authority.ca_pem.clone();
        let install = move || {
            let owner = trust::hold(&state_dir)?;
            let path = trust::install(&trust_dir, &state_dir, &pem)?;
            Ok::<_, HttpError>((owner, path))
        };
        let installed = match tokio::task::spawn_blocking(install).await {
            Ok(installed) => installed,
            Err(error) => Err(HttpError::Ca {
                reason: format!("the task installing it failed: {error}"),
            }),
        };
        match installed {
            Ok((owner, path)) => {
                let _ = self.trusted.set(owner);
                tracing::info!(path = %path.display(), "HTTPS CA is in the system trust store");
            }
            Err(error) => {
                tracing::error!(%error, "Cannot put the HTTPS CA into the system trust store; clients that do not trust it another way will refuse it");
            }
        }
    }
}

/// A client connection, before TLS: for `https` the handshake runs when the
/// connection is served (or refused), where the address the client dialled is known
/// for a `ClientHello` without SNI.
pub struct Opened {
    stream: TcpStream,
    /// Whether the client speaks TLS (an `https` target).
    tls: bool,
    /// The target's first address's host: a refused client's certificate names it
    /// when its `ClientHello` names nothing.
    fallback_name: String,
}

impl Protocol for Http {
    type Client = Opened;

    async fn open(&self, stream: TcpStream, target: &Target) -> Result<Option<Opened>, String> {
        let _ = stream.set_nodelay(true);
        let fallback_name = target
            .addresses
            .first()
            .map(|a| match a {
                crate::policy::TargetAddress::Socket(addr) => addr.ip().to_string(),
                crate::policy::TargetAddress::Host { host, .. } => host.clone(),
            })
            .unwrap_or_default();
        Ok(Some(Opened {
            stream,
            tls: target.protocol == crate::policy::Protocol::Https,
            fallback_name,
        }))
    }

    fn socket(client: &Opened) -> &TcpStream {
        &client.stream
    }

    async fn held(&self, _client: &mut Opened, request: &str, _hint: &str) {
        // HTTP has no way to say this before a request; the client simply waits.
        tracing::info!(request, "HTTP connection held for approval");
    }

    async fn refuse(&self, client: Opened, reason: &str) {
        server::refuse(self, client, reason).await;
    }

    async fn serve(&self, client: Opened, session: Arc<Session>) -> Served {
        server::serve(self, client, session).await
    }
}
