//! PostgreSQL: the wire-protocol proxy.
//!
//! The client (psql, pgbench, a driver) believes it talks to the server. The proxy
//! answers its startup itself (`startup`: TLS with our certificate, GSS refused,
//! cancel requests), lets the gate decide the connection, logs in to the real
//! server with the target's stored credentials (`backend`: TLS per target, SCRAM
//! with channel binding, md5), then runs the session (`session`): every statement is
//! classified on the real PostgreSQL parser (`classify`) and decided by the gate.
//!
//! Layout: `wire` (framing with length caps, the messages the proxy writes),
//! `startup`, `backend`, `session`, `cancel` (our `BackendKeyData` and cancel
//! requests), `classify`, `encoding` (reading client text as the server does), `tls`.

mod backend;
mod cancel;
pub mod classify;
mod client_auth;
pub mod discover;
pub mod encoding;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
mod masking;
mod session;
mod startup;
pub mod tls;
pub mod wire;

use crate::{
    config::PostgresConfig,
    policy::Target,
    proto::{Protocol, Served, Session},
};
use anyhow::Context as _;
use std::sync::Arc;
use tokio::net::TcpStream;

/// The PostgreSQL protocol, with what its sessions share.
pub struct Postgres {
    classifier: classify::Classifier,
    /// `None`: clients asking for TLS are told `N`.
    tls_server: Option<Arc<rustls::ServerConfig>>,
    cancels: cancel::Cancels,
    /// SCRAM verifiers of the targets with `client_auth`.
    verifiers: client_auth::Verifiers,
    mark: u32,
    max_message: usize,
    record_rows: usize,
    /// The columns masking learned, per target; shared by every session.
    pub learned: Arc<crate::mask::learned::Registry>,
}

impl Postgres {
    pub fn new(config: &PostgresConfig, mark: u32) -> anyhow::Result<Self> {
        let tls_server = if config.client_tls {
            Some(
                tls::server_config(
                    config.tls_cert.as_deref(),
                    config.tls_key.as_deref(),
                    &config.state_dir,
                )
                .context("cannot set up TLS for PostgreSQL clients")?,
            )
        } else {
            None
        };
        Ok(Self {
            classifier: classify::Classifier::new(config.classify_cache),
            tls_server,
            cancels: cancel::Cancels::default(),
            verifiers: client_auth::Verifiers::default(),
            mark,
            max_message: config.max_message,
            record_rows: config.record_rows,
            learned: Arc::default(),
        })
    }
}

impl Protocol for Postgres {
    type Client = startup::Opened;

    async fn open(
        &self,
        stream: TcpStream,
        target: &Target,
    ) -> Result<Option<startup::Opened>, String> {
        let _ = stream.set_nodelay(true);
        let Some(mut opened) = startup::open(self, stream).await? else {
            return Ok(None);
        };
        if let Some(secret) = &target.client_auth {
            let password = match secret.resolve() {
                Ok(p) => p,
                Err(why) => {
                    // Fail closed: without the password no client can be checked.
                    let message = format!(
                        "target {} requires a password, which cannot be read: {why}",
                        target.name
                    );
                    startup::fatal(
                        &mut opened.stream,
                        "28000",
                        &format!("Portcullis: {message}"),
                    )
                    .await;
                    return Err(message);
                }
            };
            let verifier = self.verifiers.get(&target.name, password);
            let user = opened.param("user").unwrap_or_default().to_owned();
            client_auth::authenticate(&mut opened.stream, &user, &verifier).await?;
        }
        Ok(Some(opened))
    }

    fn socket(client: &startup::Opened) -> &TcpStream {
        client.stream.tcp()
    }

    async fn held(&self, client: &mut startup::Opened, request: &str, hint: &str) {
        let notice = wire::error_response(
            encoding::ClientEncoding::Utf8,
            wire::Severity::NOTICE,
            "01000",
            &format!("Portcullis: this connection is held for approval (request {request})"),
            Some(&format!(
                "It proceeds when approved; approvers can run: {hint}"
            )),
            None,
        );
        client.send(&notice).await;
    }

    async fn refuse(&self, mut client: startup::Opened, reason: &str) {
        let message = format!("Portcullis denied the connection: {reason}");
        startup::fatal(&mut client.stream, "28000", &message).await;
    }

    async fn serve(&self, client: startup::Opened, session: std::sync::Arc<Session>) -> Served {
        session::run(self, client, session).await
    }
}
