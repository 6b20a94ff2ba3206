//! The upstream side: HTTP/1.1 connections to the address the client dialled
//! (never to where a `Host` header points), marked so the redirect lets them pass,
//! over TLS verified as the target's `tls` says (`verify-full` by default for
//! `https`, against the host name the client asked for). A client connection keeps
//! its upstream connections for reuse while it lives.
//!
//! Those connections are driven in the client connection's own task ([`drive`]), not
//! in tasks of their own: a request, its upstream exchange and its response body then
//! pass between futures of one task, with no cross-thread wake-up per step (hyper
//! otherwise runs each connection as a separate task). An upgrade's connection is the
//! exception: it is spawned, since it must outlive the client connection's task to
//! hand its stream to the relay.

use super::reply::ProxyBody;
use crate::{
    policy::{BackendTls, TargetTls},
    proto::tls::{BackendStream, Connector, TlsError},
};
use futures_util::{StreamExt as _, stream::FuturesUnordered};
use hyper::{Request, Response, body::Incoming, client::conn::http1::SendRequest};
use hyper_util::rt::TokioIo;
use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Mutex, PoisonError},
};
use tokio::sync::mpsc;

/// An upstream connection's future, for the client connection's task to drive.
pub(super) type Driven = Pin<Box<dyn Future<Output = ()> + Send>>;
/// Where new upstream connections go to be driven. Unbounded, but each entry is a
/// connection a request dialled: at most one per request in flight.
pub(super) type Drivers = mpsc::UnboundedSender<Driven>;

/// Polls the upstream connections sent on `new` until they end; never ends itself
/// (the client connection's task drops it when the client connection ends).
pub(super) async fn drive(mut new: mpsc::UnboundedReceiver<Driven>) {
    let mut running = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            Some(conn) = new.recv() => running.push(conn),
            Some(()) = running.next(), if !running.is_empty() => {}
            else => std::future::pending::<()>().await,
        }
    }
}

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
    drivers: Drivers,
}

impl Upstream {
    pub(super) fn new(
        addr: SocketAddr,
        mark: u32,
        tls: &TargetTls,
        max_head: usize,
        drivers: Drivers,
    ) -> Self {
        Self {
            addr,
            mark,
            tls: (tls.mode != BackendTls::Disable).then(|| tls.clone()),
            max_head,
            idle: Mutex::new(Vec::new()),
            drivers,
        }
    }

    /// Sends `req` on an idle connection for `name` (the host the client asked for)
    /// or a new one, and returns the response head; the body streams after.
    /// An `upgrade` goes on a connection of its own, never reused.
    pub(super) async fn send(
        &self,
        name: &str,
        req: Request<ProxyBody>,
        upgrade: bool,
    ) -> Result<Response<Incoming>, UpstreamError> {
        if upgrade {
            let mut sender = self.dial(name, true).await?;
            return Ok(sender.send_request(req).await?);
        }
        let mut sender = match self.checkout(name) {
            Some(sender) => sender,
            None => self.dial(name, false).await?,
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

    /// A new connection, driven by the client connection's task, or by a task of
    /// its own when `spawn`.
    async fn dial(&self, name: &str, spawn: bool) -> Result<SendRequest<ProxyBody>, UpstreamError> {
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
        let driven = async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "Upstream HTTP connection ended with an error");
            }
        };
        if spawn {
            tokio::spawn(driven);
        } else if let Err(mpsc::error::SendError(driven)) = self.drivers.send(Box::pin(driven)) {
            // The client connection's task is gone (it cannot be, while a request
            // of it runs); the connection still gets a driver.
            tokio::spawn(driven);
        }
        Ok(sender)
    }
}
