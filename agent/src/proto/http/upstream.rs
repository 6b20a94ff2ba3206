//! The upstream side: HTTP/1.1 connections to the address the client dialled
//! (never to where a `Host` header points), marked so the redirect lets them pass,
//! over TLS verified as the target's `tls` says (`verify-full` by default for
//! `https`, against the host name the client asked for). A client connection keeps
//! its upstream connections for reuse while it lives.

use super::reply::ProxyBody;
use crate::{
    policy::{BackendTls, TargetTls},
    proto::tls::{BackendStream, Connector, TlsError},
};
use hyper::{Request, Response, body::Incoming, client::conn::http1::SendRequest};
use hyper_util::rt::TokioIo;
use std::{
    net::SocketAddr,
    sync::{Mutex, PoisonError},
};

/// Idle upstream connections kept per client connection.
const MAX_IDLE: usize = 8;

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to the target at {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS to the target failed: {0}")]
    Tls(#[from] TlsError),
    #[error("the target's HTTP failed: {0}")]
    Http(#[from] hyper::Error),
}

/// One client connection's way to its target.
pub(super) struct Upstream {
    addr: SocketAddr,
    mark: u32,
    /// `None`: plain HTTP.
    tls: Option<TargetTls>,
    max_head: usize,
    /// Connections not in use, with the TLS name each was opened for.
    idle: Mutex<Vec<(String, SendRequest<ProxyBody>)>>,
}

impl Upstream {
    pub(super) fn new(addr: SocketAddr, mark: u32, tls: &TargetTls, max_head: usize) -> Self {
        Self {
            addr,
            mark,
            tls: (tls.mode != BackendTls::Disable).then(|| tls.clone()),
            max_head,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends `req` on an idle connection for `name` (the host the client asked for)
    /// or a new one, and returns the response head; the body streams after.
    pub(super) async fn send(
        &self,
        name: &str,
        req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut sender = match self.checkout(name) {
            Some(sender) => sender,
            None => self.dial(name).await?,
        };
        let response = sender.send_request(req).await;
        self.checkin(name, sender);
        Ok(response?)
    }

    /// An idle connection for `name` that can take a request now.
    fn checkout(&self, name: &str) -> Option<SendRequest<ProxyBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|(_, sender)| !sender.is_closed());
        let at = idle
            .iter()
            .position(|(n, sender)| n == name && sender.is_ready())?;
        Some(idle.swap_remove(at).1)
    }

    /// Keeps `sender` for later requests (it becomes ready once this response ends).
    fn checkin(&self, name: &str, sender: SendRequest<ProxyBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push((name.to_owned(), sender));
        }
    }

    async fn dial(&self, name: &str) -> Result<SendRequest<ProxyBody>, UpstreamError> {
        let tcp = crate::proto::tcp::connect_upstream(self.addr, self.mark)
            .await
            .map_err(|source| UpstreamError::Connect {
                addr: self.addr,
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let stream = match &self.tls {
            None => BackendStream::Plain(tcp),
            Some(tls) => {
                let connector = Connector::new(tls, name, &[b"http/1.1"])?;
                let (tls, _) = connector.connect(tcp).await?;
                BackendStream::Tls(Box::new(tls))
            }
        };
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            .max_buf_size(self.max_head.max(64 * 1024))
            .handshake(TokioIo::new(stream))
            .await?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "Upstream HTTP connection ended with an error");
            }
        });
        Ok(sender)
    }
}
