//! Wire protocols. Each module translates between its protocol's bytes and the
//! [`gate::Action`](crate::gate::Action)s the gate decides; the daemon attributes the
//! connection and picks the module by the target's protocol.

pub mod http;
pub mod postgres;
pub mod ssh;
pub mod tcp;
pub mod tls;

use crate::{
    gate::Gate,
    identity::Principal,
    policy::Target,
    record::{ChainDigest, Outcome, Recorder, SessionId},
};
use std::net::SocketAddr;
use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_util::sync::CancellationToken;

/// What a protocol module is given to serve one allowed session. It owns what it
/// holds (behind an `Arc`, see [`Protocol::serve`]), so a protocol can move it into
/// tasks of its own (an SSH channel's handler, an HTTP request).
pub struct Session {
    pub id: SessionId,
    pub gate: Arc<Gate>,
    pub recorder: Recorder,
    pub principal: Principal,
    pub target: Arc<Target>,
    /// The address the client asked for (the target's real address).
    pub upstream: SocketAddr,
    /// `SO_MARK` for upstream sockets, so the redirect lets them pass.
    pub mark: u32,
    /// Cancelled when the daemon ends the remaining sessions at shutdown.
    pub stop: CancellationToken,
}

/// How a served session ended.
pub struct Served {
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub traffic: Traffic,
    /// Count and chain head of the events recorded, for the audit log.
    pub events: Option<ChainDigest>,
}

impl Served {
    /// A session that failed before it moved a byte or recorded an event.
    #[must_use]
    pub fn failed(reason: String) -> Self {
        Self {
            outcome: Outcome::Error,
            reason: Some(reason),
            traffic: Traffic::default(),
            events: None,
        }
    }
}

/// One wire protocol, as the daemon drives it: the daemon attributes the
/// connection and asks the gate whether it may open; the protocol speaks to the
/// client in its own words and serves the session.
pub trait Protocol: Sync {
    /// The client's connection after the protocol's opening exchange.
    type Client: Send;

    /// The opening exchange with a client of `target`, before the gate decides the
    /// connection (PostgreSQL reads the startup packet here, and checks the password
    /// of a target with `client_auth`). `Ok(None)`: the connection was fully handled
    /// (e.g. a cancel request) and is not a session.
    fn open(
        &self,
        stream: TcpStream,
        target: &Target,
    ) -> impl Future<Output = Result<Option<Self::Client>, String>> + Send;

    /// The client's socket, to notice it leaving while its connection is held.
    fn socket(client: &Self::Client) -> &TcpStream;

    /// Tells the client its connection waits for approval, if the protocol can.
    fn held(
        &self,
        client: &mut Self::Client,
        request: &str,
        hint: &str,
    ) -> impl Future<Output = ()> + Send;

    /// Ends a connection the gate refused, saying why if the protocol can.
    fn refuse(&self, client: Self::Client, reason: &str) -> impl Future<Output = ()> + Send;

    /// Serves an allowed session until it ends.
    fn serve(
        &self,
        client: Self::Client,
        session: Arc<Session>,
    ) -> impl Future<Output = Served> + Send;
}

/// Bytes moved by a session, as the client sees them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Client → target.
    pub up: u64,
    /// Target → client.
    pub down: u64,
}

/// Traffic counters shared between a [`Metered`] stream and whoever reports on it.
#[derive(Debug, Default)]
pub struct Meter {
    up: AtomicU64,
    down: AtomicU64,
}

impl Meter {
    /// Read from the client so far (`up`) and written to it (`down`).
    #[must_use]
    pub fn traffic(&self) -> Traffic {
        Traffic {
            up: self.up.load(Ordering::Relaxed),
            down: self.down.load(Ordering::Relaxed),
        }
    }

    /// Counts `bytes` read from the client, for a relay that moves them itself.
    pub fn add_up(&self, bytes: u64) {
        self.up.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts `bytes` written to the client, for a relay that moves them itself.
    pub fn add_down(&self, bytes: u64) {
        self.down.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// A client stream that counts what passes, so a session's traffic is known however
/// it ends (closed, failed, or cut off by shutdown) and wherever its halves went.
pub struct Metered<S> {
    inner: S,
    meter: Arc<Meter>,
}

impl<S> Metered<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            meter: Arc::default(),
        }
    }

    /// Read from the client so far (`up`) and written to it (`down`).
    pub fn traffic(&self) -> Traffic {
        self.meter.traffic()
    }

    /// A handle on the counters that outlives moving the stream away.
    pub fn meter(&self) -> Arc<Meter> {
        Arc::clone(&self.meter)
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.meter.add_up((buf.filled().len() - before) as u64);
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = poll {
            self.meter.add_down(n as u64);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
