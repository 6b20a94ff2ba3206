//! `tcp` targets: the action is the connection itself; once allowed, bytes are relayed
//! as they are, through fixed-size buffers, in both directions.

use super::{Metered, Protocol, Served, Session, Traffic};
use crate::{policy::Target, record::Outcome};
use std::{io, net::SocketAddr, time::Duration};
use tokio::{
    io::{AsyncRead, AsyncWrite, copy_bidirectional_with_sizes},
    net::{TcpSocket, TcpStream},
};

/// Relay buffer per direction: memory per connection is bounded by twice this.
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
                return Served {
                    outcome: Outcome::Error,
                    reason: Some(format!("cannot connect to {}: {error}", session.upstream)),
                    traffic: Traffic::default(),
                    events: None,
                };
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

/// Relays bytes between `client` and `upstream` until both sides are done, through
/// two fixed buffers. Traffic is counted by the caller's [`Metered`](super::Metered)
/// client stream, so it is known even if this future is dropped midway.
pub async fn relay<C, U>(client: &mut C, upstream: &mut U) -> io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    U: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    copy_bidirectional_with_sizes(client, upstream, RELAY_BUFFER, RELAY_BUFFER)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    #[tokio::test]
    async fn relays_both_ways_and_counts() {
        let (mut client, proxy_client) = duplex(1024);
        let (mut proxy_up, mut server) = duplex(1024);
        let relay = tokio::spawn(async move {
            let mut metered = crate::proto::Metered::new(proxy_client);
            relay(&mut metered, &mut proxy_up)
                .await
                .map(|()| metered.traffic())
        });
        client
            .write_all(b"hello")
            .await
            .unwrap_or_else(|e| unreachable!("{e}"));
        let mut buf = [0u8; 5];
        server
            .read_exact(&mut buf)
            .await
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(&buf, b"hello");
        server
            .write_all(b"world!")
            .await
            .unwrap_or_else(|e| unreachable!("{e}"));
        drop(server);
        let mut back = Vec::new();
        client
            .read_to_end(&mut back)
            .await
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(back, b"world!");
        drop(client);
        let traffic = relay
            .await
            .unwrap_or_else(|e| unreachable!("{e}"))
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(traffic, crate::proto::Traffic { up: 5, down: 6 });
    }
}
