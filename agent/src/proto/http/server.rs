//! The client side of a connection: the TLS handshake with a minted certificate
//! (`https`), then one hyper connection (HTTP/1.1, or HTTP/2 when ALPN or the
//! preface says so) with its limits: head size and header count, the time to send a
//! head (slowloris), concurrent HTTP/2 streams and reset floods.

use super::{
    Http, Opened,
    ca::Authority,
    exchange,
    framing::{Framing, Scanned},
    reply,
};
use crate::{
    policy::Protocol as TargetProtocol,
    proto::{Metered, Served, Session, tls::ClientStream},
    record::Outcome,
};
use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use std::{net::IpAddr, sync::Arc, time::Duration};
use tokio::net::TcpStream;
use tokio_rustls::{LazyConfigAcceptor, server::TlsStream};

/// Concurrent streams one HTTP/2 connection may open.
const MAX_STREAMS: u32 = 100;
/// Longest a refused client is answered for before its connection is closed.
const REFUSE_FOR: Duration = Duration::from_secs(5);

/// Runs the TLS handshake as the server, with a certificate for the name the
/// `ClientHello` asks for (SNI), or for `fallback` (the address dialled) without one.
pub(super) async fn accept_tls(
    stream: TcpStream,
    authority: &Authority,
    fallback: &str,
    timeout: Duration,
) -> Result<(TlsStream<TcpStream>, Option<String>), String> {
    let handshake = async {
        let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
        let start = acceptor
            .await
            .map_err(|e| format!("no valid ClientHello: {e}"))?;
        let sni = start
            .client_hello()
            .server_name()
            .map(str::to_ascii_lowercase);
        let name = sni.as_deref().unwrap_or(fallback);
        let config = authority.config_for(name).map_err(|e| e.to_string())?;
        let tls = start
            .into_stream(config)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        Ok((tls, sni))
    };
    tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| format!("no TLS handshake within {}s", timeout.as_secs()))?
}

/// The client's stream after the opening: TLS for `https`.
async fn client_stream(
    http: &Http,
    opened: Opened,
    fallback: &str,
) -> Result<(ClientStream, Option<String>), String> {
    if !opened.tls {
        return Ok((ClientStream::Plain(opened.stream), None));
    }
    let Some(authority) = &http.authority else {
        let why = http.authority_error.as_deref().unwrap_or("no CA");
        return Err(format!("HTTPS clients cannot be served: {why}"));
    };
    let (tls, sni) = accept_tls(
        opened.stream,
        authority,
        fallback,
        http.config.header_timeout,
    )
    .await?;
    Ok((ClientStream::Tls(Box::new(tls)), sni))
}

/// A hyper connection builder with the proxy's limits.
fn builder(http: &Http) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(http.config.header_timeout)
        .max_buf_size(http.config.max_header_bytes)
        .max_headers(http.config.max_headers)
        .half_close(false);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(u32::try_from(http.config.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(Some(20))
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

/// Serves an allowed connection until the client closes it (or the daemon stops).
pub(super) async fn serve(http: &Http, opened: Opened, session: Arc<Session>) -> Served {
    let fallback = ip_name(session.upstream.ip());
    let (stream, sni) = match client_stream(http, opened, &fallback).await {
        Ok(s) => s,
        Err(reason) => {
            tracing::info!(%reason, "HTTPS client failed its handshake");
            let events = Some(session.recorder.finish_session(&session.id).await);
            return Served {
                outcome: Outcome::Error,
                reason: Some(reason),
                traffic: crate::proto::Traffic::default(),
                events,
            };
        }
    };
    let h2 =
        matches!(&stream, ClientStream::Tls(tls) if tls.get_ref().1.alpn_protocol() == Some(b"h2"));
    let client = Metered::new(stream);
    let meter = client.meter();
    let framing = Framing::new();
    let client = Scanned::new(
        client,
        Arc::clone(&framing),
        !h2,
        http.config.max_header_bytes,
        http.config.max_headers,
        http.config.header_timeout,
    );
    let conn = Arc::new(exchange::Conn::new(
        http,
        Arc::clone(&session),
        sni,
        fallback,
        framing,
    ));
    let service = {
        let conn = Arc::clone(&conn);
        service_fn(move |req| exchange::handle(Arc::clone(&conn), req))
    };
    let builder = builder(http);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(client), service);
    let (outcome, reason) = tokio::select! {
        ended = connection => match ended {
            Ok(()) => (Outcome::Closed, None),
            Err(error) => {
                tracing::debug!(%error, "HTTP connection ended with an error");
                (Outcome::Closed, Some(format!("the connection ended: {error}")))
            }
        },
        () = session.stop.cancelled() => (Outcome::Closed, Some("ended by daemon shutdown".into())),
    };
    // Every request's record is queued before the chain is closed.
    conn.finish().await;
    let events = Some(session.recorder.finish_session(&session.id).await);
    Served {
        outcome,
        reason,
        traffic: meter.traffic(),
        events,
    }
}

/// Answers a refused connection's requests with `403` (for a short while), so the
/// client learns why rather than seeing a reset.
pub(super) async fn refuse(http: &Http, opened: Opened, reason: &str) {
    let fallback = opened.fallback_name.clone();
    let target_protocol = if opened.tls {
        TargetProtocol::Https
    } else {
        TargetProtocol::Http
    };
    let refusal = async {
        let Ok((stream, _)) = client_stream(http, opened, &fallback).await else {
            return;
        };
        let reason = reason.to_owned();
        let service = service_fn(move |_req| {
            let reply = reply::refused_connection(&reason, target_protocol);
            async move { Ok::<_, std::convert::Infallible>(reply) }
        });
        let mut builder = builder(http);
        builder.http1().keep_alive(false);
        let _ = builder
            .serve_connection(TokioIo::new(stream), service)
            .await;
    };
    let _ = tokio::time::timeout(REFUSE_FOR, refusal).await;
}

/// An address as a certificate names it.
fn ip_name(ip: IpAddr) -> String {
    ip.to_canonical().to_string()
}
