//! `tcp` targets: the action is the connection itself; once allowed, bytes are relayed
//! as they are, in both directions: with `splice(2)` through a pipe per direction
//! ([`splice`]), so they never enter user space, or through two fixed buffers where
//! the sockets do not allow that.

mod splice;
#[cfg(test)]
mod tests;

use super::{Metered, Protocol, Served, Session};
use crate::{policy::Target, record::Outcome};
use std::{
    io,
    net::SocketAddr,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};
use tokio::{
    io::copy_bidirectional_with_sizes,
    net::{TcpSocket, TcpStream},
};

/// Relay buffer (or pipe) per direction: memory per connection is bounded by twice this.
pub const RELAY_BUFFER: usize = 64 * 1024;
/// How long an upstream connect may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a connection to `addr` marked with `mark`, so the eBPF programs let it pass.
pub async fn connect_upstream(addr: SocketAddr, mark: u32) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket2::SockRef::from(&socket).set_mark(mark)?;
    socket.set_nodelay(true)?;
    match tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(addr)).await {
        Ok(stream) => stream,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connect to {addr} timed out"),
        )),
    }
}

/// The `tcp` protocol: nothing to say to the client, bytes relayed as they are.
pub struct Tcp;

impl Protocol for Tcp {
    type Client = TcpStream;

    async fn open(&self, stream: TcpStream, _target: &Target) -> Result<Option<TcpStream>, String> {
        Ok(Some(stream))
    }

    fn socket(client: &TcpStream) -> &TcpStream {
        client
    }

    /// TCP has no way to tell the client more; it stays connected while held.
    async fn held(&self, _client: &mut TcpStream, _request: &str, _hint: &str) {}

    async fn refuse(&self, client: TcpStream, _reason: &str) {
        reset(&client);
    }

    async fn serve(&self, client: TcpStream, session: std::sync::Arc<Session>) -> Served {
        let mut upstream = match connect_upstream(session.upstream, session.mark).await {
            Ok(u) => u,
            Err(error) => {
                reset(&client);
                let why = format!("cannot connect to {}: {error}", session.upstream);
                return Served::failed(why);
            }
        };
        let _ = client.set_nodelay(true);
        let mut client = Metered::new(client);
        let reason = tokio::select! {
            r = relay(&mut client, &mut upstream) => r.err().map(|e| format!("connection ended: {e}")),
            () = session.stop.cancelled() => Some("ended by daemon shutdown".into()),
        };
        Served {
            outcome: Outcome::Closed,
            reason,
            traffic: client.traffic(),
            events: None,
        }
    }
}

/// Ends a connection with a reset, so the peer's next read or write fails at once.
pub fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// Relays bytes between `client` and `upstream` until both sides are done (EOF from
/// one is passed on as a half-close to the other) or one fails. Traffic is counted in
/// `client`'s [`Meter`](super::Meter) as bytes move, so it is known even if this
/// future is dropped midway.
pub async fn relay(client: &mut Metered<TcpStream>, upstream: &mut TcpStream) -> io::Result<()> {
    relay_with(client, upstream, RELAY_BUFFER).await
}

/// Whether the fallback to buffers was logged: once per process is enough to say why.
static FALLBACK_LOGGED: AtomicBool = AtomicBool::new(false);

/// [`relay`] with pipes of `pipe_size` bytes; buffers if the pipes cannot be set up.
async fn relay_with(
    client: &mut Metered<TcpStream>,
    upstream: &mut TcpStream,
    pipe_size: usize,
) -> io::Result<()> {
    match splice::Splice::new(client.get_ref(), upstream, pipe_size) {
        Ok(splice) => {
            let meter = client.meter();
            splice.run(client.get_ref(), upstream, &meter).await
        }
        Err(error) => {
            if !FALLBACK_LOGGED.swap(true, Ordering::Relaxed) {
                tracing::debug!(%error, "Relaying tcp through buffers: splice unavailable");
            }
            copy_bidirectional_with_sizes(client, upstream, RELAY_BUFFER, RELAY_BUFFER)
                .await
                .map(|_| ())
        }
    }
}
