//! The relay over real loopback sockets: client ↔ relay ↔ server, through the splice
//! relay and through the buffer fallback alike.

use super::{RELAY_BUFFER, relay, relay_with, splice::Splice};
use crate::proto::{Meter, Metered, Traffic};
use sha2::{Digest, Sha256};
use std::{io, sync::Arc};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// Which relay a test drives.
#[derive(Clone, Copy)]
enum Via {
    /// [`relay`], as `Tcp::serve` calls it.
    Relay,
    /// The splice relay, set up directly, so a setup failure fails the test.
    Splice,
    /// [`relay_with`] pipes too large to set up: the buffer fallback.
    Fallback,
}

/// An application's connection relayed to a server: `client` and `server` are the
/// two outer ends, `meter` the session's counters.
struct Rig {
    client: TcpStream,
    server: TcpStream,
    meter: Arc<Meter>,
    relay: JoinHandle<io::Result<()>>,
}

impl Rig {
    async fn new(via: Via) -> Self {
        let (client, proxy_client) = connected().await;
        let (mut upstream, server) = connected().await;
        let mut proxy_client = Metered::new(proxy_client);
        let meter = proxy_client.meter();
        let relay = tokio::spawn(async move {
            match via {
                Via::Relay => relay(&mut proxy_client, &mut upstream).await,
                Via::Fallback => relay_with(&mut proxy_client, &mut upstream, usize::MAX).await,
                Via::Splice => {
                    let splice = Splice::new(proxy_client.get_ref(), &upstream, RELAY_BUFFER)
                        .unwrap_or_else(|e| unreachable!("splice setup failed: {e}"));
                    let meter = proxy_client.meter();
                    splice.run(proxy_client.get_ref(), &upstream, &meter).await
                }
            }
        });
        Self {
            client,
            server,
            meter,
            relay,
        }
    }

    /// Waits for the relay to end by itself; the traffic it counted.
    async fn finish(self) -> Traffic {
        self.relay
            .await
            .unwrap_or_else(|e| unreachable!("relay task: {e}"))
            .unwrap_or_else(|e| unreachable!("relay failed: {e}"));
        self.meter.traffic()
    }
}

/// Two ends of one loopback connection.
async fn connected() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| unreachable!("{e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| unreachable!("{e}"));
    let (connect, accept) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let connect = connect.unwrap_or_else(|e| unreachable!("{e}"));
    (connect, accept.unwrap_or_else(|e| unreachable!("{e}")).0)
}

async fn send(stream: &mut (impl AsyncWrite + Unpin), data: &[u8]) {
    stream
        .write_all(data)
        .await
        .unwrap_or_else(|e| unreachable!("{e}"));
}

async fn receive(stream: &mut (impl AsyncRead + Unpin), len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    stream
        .read_exact(&mut buf)
        .await
        .unwrap_or_else(|e| unreachable!("{e}"));
    buf
}

/// Everything up to EOF: it returns only if the relay passed the EOF on.
async fn receive_all(stream: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    let mut buf = Vec::new();
    stream
        .read_to_end(&mut buf)
        .await
        .unwrap_or_else(|e| unreachable!("{e}"));
    buf
}

async fn close(stream: &mut (impl AsyncWrite + Unpin)) {
    stream
        .shutdown()
        .await
        .unwrap_or_else(|e| unreachable!("{e}"));
}

async fn relays_both_ways_and_counts(via: Via) {
    let mut rig = Rig::new(via).await;
    send(&mut rig.client, b"hello").await;
    assert_eq!(receive(&mut rig.server, 5).await, b"hello");
    send(&mut rig.server, b"world!").await;
    assert_eq!(receive(&mut rig.client, 6).await, b"world!");
    assert_eq!(rig.meter.traffic(), Traffic { up: 5, down: 6 });
    close(&mut rig.server).await;
    assert_eq!(receive_all(&mut rig.client).await, b"");
    close(&mut rig.client).await;
    assert_eq!(receive_all(&mut rig.server).await, b"");
    assert_eq!(rig.finish().await, Traffic { up: 5, down: 6 });
}

/// The client half-closes first; the server still answers after seeing the EOF.
async fn half_close_from_client(via: Via) {
    let mut rig = Rig::new(via).await;
    send(&mut rig.client, b"ping").await;
    close(&mut rig.client).await;
    assert_eq!(receive_all(&mut rig.server).await, b"ping");
    send(&mut rig.server, b"pong!").await;
    close(&mut rig.server).await;
    assert_eq!(receive_all(&mut rig.client).await, b"pong!");
    assert_eq!(rig.finish().await, Traffic { up: 4, down: 5 });
}

/// The server half-closes first; the client still sends after seeing the EOF.
async fn half_close_from_server(via: Via) {
    let mut rig = Rig::new(via).await;
    send(&mut rig.server, b"banner").await;
    close(&mut rig.server).await;
    assert_eq!(receive_all(&mut rig.client).await, b"banner");
    send(&mut rig.client, b"bye").await;
    close(&mut rig.client).await;
    assert_eq!(receive_all(&mut rig.server).await, b"bye");
    assert_eq!(rig.finish().await, Traffic { up: 3, down: 6 });
}

/// A reset from the server ends the relay with the error.
async fn reset_ends_with_error(via: Via) {
    let mut rig = Rig::new(via).await;
    send(&mut rig.client, b"hi").await;
    assert_eq!(receive(&mut rig.server, 2).await, b"hi");
    super::reset(&rig.server);
    drop(rig.server);
    let ended = rig
        .relay
        .await
        .unwrap_or_else(|e| unreachable!("relay task: {e}"));
    assert!(ended.is_err(), "a reset should end the relay with an error");
}

#[tokio::test]
async fn splice_relays_both_ways_and_counts() {
    relays_both_ways_and_counts(Via::Splice).await;
}

#[tokio::test]
async fn splice_passes_half_close_both_ways() {
    half_close_from_client(Via::Splice).await;
    half_close_from_server(Via::Splice).await;
}

#[tokio::test]
async fn splice_ends_with_error_on_reset() {
    reset_ends_with_error(Via::Splice).await;
}

#[tokio::test]
async fn relay_relays_both_ways_and_counts() {
    relays_both_ways_and_counts(Via::Relay).await;
}

#[tokio::test]
async fn fallback_relays_both_ways_counts_and_half_closes() {
    relays_both_ways_and_counts(Via::Fallback).await;
    half_close_from_client(Via::Fallback).await;
    half_close_from_server(Via::Fallback).await;
    reset_ends_with_error(Via::Fallback).await;
}

/// Counts are in the meter as bytes move: dropping the relay (daemon shutdown) loses
/// none of them.
#[tokio::test]
async fn splice_counts_survive_dropping_the_relay() {
    let mut rig = Rig::new(Via::Splice).await;
    send(&mut rig.client, b"abc").await;
    assert_eq!(receive(&mut rig.server, 3).await, b"abc");
    send(&mut rig.server, b"de").await;
    assert_eq!(receive(&mut rig.client, 2).await, b"de");
    rig.relay.abort();
    assert!(rig.relay.await.is_err_and(|e| e.is_cancelled()));
    assert_eq!(rig.meter.traffic(), Traffic { up: 3, down: 2 });
}

/// Tens of MiB each way at once arrive intact, and are counted exactly. The runtime
/// is single-threaded: the relay must yield for the two ends to make progress.
#[tokio::test]
async fn splice_moves_a_large_transfer_intact() {
    const LEN: usize = 24 << 20;
    let Rig {
        mut client,
        mut server,
        meter,
        relay,
    } = Rig::new(Via::Splice).await;
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let (sent_up, got_up, sent_down, got_down) = tokio::join!(
        send_random(&mut client_write, 1, LEN),
        hash_all(&mut server_read),
        send_random(&mut server_write, 2, LEN),
        hash_all(&mut client_read),
    );
    assert_eq!(got_up, (LEN, sent_up), "client → server");
    assert_eq!(got_down, (LEN, sent_down), "server → client");
    relay
        .await
        .unwrap_or_else(|e| unreachable!("relay task: {e}"))
        .unwrap_or_else(|e| unreachable!("relay failed: {e}"));
    let len = LEN as u64;
    assert_eq!(meter.traffic(), Traffic { up: len, down: len });
}

/// Writes `len` pseudo-random bytes (xorshift from `seed`), then EOF; their SHA-256.
async fn send_random(stream: &mut (impl AsyncWrite + Unpin), seed: u64, len: usize) -> [u8; 32] {
    let mut state = seed;
    let mut hash = Sha256::new();
    let mut chunk = vec![0u8; 256 * 1024];
    let mut left = len;
    while left > 0 {
        chunk.truncate(left);
        for word in chunk.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.iter_mut()
                .zip(state.to_le_bytes())
                .for_each(|(b, s)| *b = s);
        }
        hash.update(&chunk);
        send(stream, &chunk).await;
        left -= chunk.len();
    }
    close(stream).await;
    hash.finalize().into()
}

/// Reads to EOF: how many bytes, and their SHA-256.
async fn hash_all(stream: &mut (impl AsyncRead + Unpin)) -> (usize, [u8; 32]) {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0;
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .unwrap_or_else(|e| unreachable!("{e}"));
        let Some(read) = buf.get(..n) else {
            unreachable!("read more than the buffer")
        };
        if read.is_empty() {
            return (total, hash.finalize().into());
        }
        hash.update(read);
        total += n;
    }
}
