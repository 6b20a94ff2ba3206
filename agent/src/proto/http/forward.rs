//! An allowed request on its way: rewritten for the upstream hop (origin form,
//! HTTP/1.1, `Host` kept, hop-by-hop headers dropped, the target's credential
//! header set in place of the client's), sent, and its response streamed back
//! (masked where the session masks) through a [`Tap`] that records it when it ends.
//! An upgrade (WebSocket) approved as one action is relayed both ways and counted.

use super::{
    exchange::{Conn, micros},
    masking,
    record::{self, Facts, Sample},
    reply::{self, BoxError, ProxyBody},
    request::{Parsed, connection_has},
    tap::{OnEnd, Tap, Written},
    whole::{self, Whole},
};
use http_body_util::BodyExt as _;
use hyper::{
    HeaderMap, Response, StatusCode, Uri, Version, body::Incoming, header, http::request::Parts,
    upgrade::OnUpgrade,
};
use hyper_util::rt::TokioIo;
use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};

/// Headers that belong to one hop, never forwarded either way.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// An allowed request and what its record knows so far.
pub(super) struct Exchange {
    pub conn: Arc<Conn>,
    pub parsed: Parsed,
    pub facts: Facts,
    pub started: Instant,
    /// The client's side of an upgrade it asked for.
    pub client_upgrade: Option<OnUpgrade>,
}

impl Exchange {
    /// Sends the request upstream and returns the response for the client.
    pub(super) async fn forward(mut self, parts: Parts, body: ProxyBody) -> Response<ProxyBody> {
        let credential = match self.conn.credential.clone() {
            Ok(c) => c,
            Err(why) => {
                return self.fail(&format!("the target's credential cannot be read: {why}"));
            }
        };
        if let Err(why) = &self.conn.masker {
            let why = why.clone();
            return self.fail(&why);
        }
        let (body, request_sample) = self.tapped(&parts.headers, body);
        let request = upstream_request(parts, body, &self.parsed, credential);
        let name = tls_name(&self.conn, &self.parsed.host);
        let forwarded = Instant::now();
        let response = match self.conn.upstream.send(&name, request).await {
            Ok(response) => response,
            Err(error) => return self.fail(&error.to_string()),
        };
        self.facts.upstream_us = Some(micros(forwarded.elapsed()));
        self.facts.status = Some(response.status().as_u16());
        self.facts.response_headers = record::chosen(response.headers(), true, None);
        if response.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client) = self.client_upgrade.take()
        {
            return self.switch(response, client).await;
        }
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers, false);
        let body = match self.masked(&mut parts.headers, body) {
            Ok(body) => body,
            Err(why) => return self.fail(&why),
        };
        let text = record::is_text(header_str(&parts.headers, header::CONTENT_TYPE));
        if whole::fits(&body) {
            let whole = Whole {
                conn: &self.conn,
                facts: self.facts,
                request: &request_sample,
                started: self.started,
                text,
            };
            return whole.respond(parts, body).await;
        }
        self.stream(parts, body, text, request_sample)
    }

    /// The request body on its way upstream, counted and sampled for the record.
    fn tapped(&self, headers: &HeaderMap, body: ProxyBody) -> (ProxyBody, Arc<Mutex<Sample>>) {
        let request_sample = Arc::new(Mutex::new(Sample::new(0, false)));
        let text = record::is_text(header_str(headers, header::CONTENT_TYPE));
        let sink = Arc::clone(&request_sample);
        let on_end: OnEnd = Box::new(move |sample, _, _| {
            *sink.lock().unwrap_or_else(PoisonError::into_inner) = sample;
            None
        });
        let cap = self.conn.record_body;
        let body = Tap::new(body, Sample::new(cap, text), on_end, false).boxed_unsync();
        (body, request_sample)
    }

    /// A `101 Switching Protocols` to an upgrade the client asked for: recorded, then
    /// both upgraded connections relayed.
    async fn switch(
        self,
        mut response: Response<Incoming>,
        client: OnUpgrade,
    ) -> Response<ProxyBody> {
        let server = hyper::upgrade::on(&mut response);
        let (mut parts, _) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers, true);
        if !self.upgraded().await {
            // The upstream's upgraded connection closes as `server` drops.
            return reply::not_recorded();
        }
        self.relay(client, server);
        Response::from_parts(parts, reply::full(bytes::Bytes::new()))
    }

    /// A response streamed to the client through a [`Tap`] that records the request
    /// when the body ends (its end waits for the record, with `wait_for_record`).
    fn stream(
        self,
        parts: hyper::http::response::Parts,
        body: ProxyBody,
        text: bool,
        request_sample: Arc<Mutex<Sample>>,
    ) -> Response<ProxyBody> {
        let sample = Sample::new(self.conn.record_body, text);
        let Exchange {
            conn,
            mut facts,
            started,
            ..
        } = self;
        let on_end: OnEnd = Box::new(move |response, error, wait| {
            if facts.error.is_none() {
                facts.error = error;
            }
            let request = request_sample
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let event = record::event(
                &conn.session,
                conn.masker(),
                facts,
                &request,
                &response,
                started,
            );
            if !wait || !conn.wait_for_record {
                conn.record(event);
                return None;
            }
            let recorder = conn.session.recorder.clone();
            let session = conn.session.id.clone();
            let written: Written = Box::pin(async move {
                recorder.record(event).await.is_ok() && recorder.sync(&session).await
            });
            Some(written)
        });
        Response::from_parts(parts, Tap::new(body, sample, on_end, true).boxed_unsync())
    }

    /// The response body as the client gets it: masked (its headers adjusted)
    /// where the session masks and the type is one masking reads.
    fn masked(&self, headers: &mut HeaderMap, body: Incoming) -> Result<ProxyBody, String> {
        let body = body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync();
        let Ok(Some(masker)) = &self.conn.masker else {
            return Ok(body);
        };
        Ok(match masking::plan(headers)? {
            None => body,
            Some((kind, encoding)) => {
                masking::masked_headers(headers);
                masking::mask_body(body, kind, encoding, Arc::clone(masker))
            }
        })
    }

    /// Answers `502` for a request that could not be forwarded, and records it.
    fn fail(self, why: &str) -> Response<ProxyBody> {
        tracing::info!(reason = %why, "HTTP request failed upstream");
        let mut facts = self.facts;
        facts.error = Some(why.to_owned());
        facts.status = Some(StatusCode::BAD_GATEWAY.as_u16());
        self.conn.record_now(facts, self.started);
        reply::bad_gateway(why)
    }

    /// Records the upgrade (the request and its `101`) before the `101` leaves, as
    /// a response's end waits for its record: a crash after the client has its
    /// `101` cannot lose the decision. `false` when the record cannot be written
    /// (the client then gets `503`, and nothing is relayed).
    async fn upgraded(&self) -> bool {
        let empty = Sample::new(0, false);
        let event = record::event(
            &self.conn.session,
            self.conn.masker(),
            self.facts.clone(),
            &empty,
            &empty,
            self.started,
        );
        if !self.conn.wait_for_record {
            self.conn.record(event);
            return true;
        }
        let recorder = &self.conn.session.recorder;
        recorder.record(event).await.is_ok() && recorder.sync(&self.conn.session.id).await
    }

    /// Relays an upgraded connection both ways until either side closes (or the
    /// daemon stops), then records the relay's end: the bytes moved each way.
    fn relay(self, client: OnUpgrade, server: OnUpgrade) {
        let Exchange {
            conn,
            mut facts,
            started,
            ..
        } = self;
        let tasks = conn.tasks().clone();
        tasks.spawn(async move {
            let (mut up, mut down) = (Sample::new(0, false), Sample::new(0, false));
            match tokio::try_join!(client, server) {
                Ok((client, server)) => {
                    let (mut client, mut server) = (TokioIo::new(client), TokioIo::new(server));
                    tokio::select! {
                        moved = tokio::io::copy_bidirectional(&mut client, &mut server) => {
                            match moved {
                                Ok((to_server, to_client)) => {
                                    up.bytes = to_server;
                                    down.bytes = to_client;
                                }
                                Err(error) => facts.error = Some(format!("relay: {error}")),
                            }
                        }
                        () = conn.session.stop.cancelled() => {
                            facts.error = Some("ended by daemon shutdown".into());
                        }
                    }
                }
                Err(error) => facts.error = Some(format!("upgrade failed: {error}")),
            }
            facts.relay_ended = true;
            let event = record::event(&conn.session, conn.masker(), facts, &up, &down, started);
            let _ = conn.session.recorder.record(event).await;
        });
    }
}

/// The request as it goes upstream.
fn upstream_request(
    parts: Parts,
    body: ProxyBody,
    parsed: &Parsed,
    credential: Option<(header::HeaderName, header::HeaderValue)>,
) -> hyper::Request<ProxyBody> {
    let mut parts = parts;
    if parts.version == Version::HTTP_2 {
        join_cookies(&mut parts.headers);
    }
    let origin = parts
        .uri
        .path_and_query()
        .map_or("/", hyper::http::uri::PathAndQuery::as_str);
    parts.uri = origin
        .parse::<Uri>()
        .unwrap_or_else(|_| Uri::from_static("/"));
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers, parsed.upgrade);
    // The client's `Expect` was answered by this proxy; the body follows at once.
    parts.headers.remove(header::EXPECT);
    // The reason was for the approvers, not the target.
    parts.headers.remove(super::request::REASON_HEADER);
    if !parts.headers.contains_key(header::HOST)
        && let Ok(host) = header::HeaderValue::from_str(&parsed.host)
    {
        parts.headers.insert(header::HOST, host);
    }
    if let Some((name, value)) = credential {
        parts.headers.remove(&name);
        parts.headers.insert(name, value);
    }
    hyper::Request::from_parts(parts, body)
}

/// HTTP/2 may split `Cookie` into several fields; HTTP/1.1 wants one (RFC 9113
/// §8.2.3).
fn join_cookies(headers: &mut HeaderMap) {
    let cookies: Vec<&[u8]> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(header::HeaderValue::as_bytes)
        .collect();
    if cookies.len() < 2 {
        return;
    }
    let joined = cookies.join(&b"; "[..]);
    if let Ok(value) = header::HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value);
    }
}

/// Drops hop-by-hop headers and those `Connection` names; an upgrade keeps its
/// `Connection: upgrade` and `Upgrade`.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let upgrading = upgrade && connection_has(headers, "upgrade");
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    let upgrade_value = headers.get(header::UPGRADE).cloned();
    for name in HOP_BY_HOP
        .iter()
        .copied()
        .chain(named.iter().map(String::as_str))
    {
        headers.remove(name);
    }
    if upgrading && let Some(value) = upgrade_value {
        headers.insert(
            header::CONNECTION,
            header::HeaderValue::from_static("upgrade"),
        );
        headers.insert(header::UPGRADE, value);
    }
}

/// The name the upstream certificate is checked against: the target's
/// `tls_server_name` (or the client's SNI), else the host the request names.
fn tls_name(conn: &Conn, host: &str) -> String {
    if let Some(name) = &conn.session.target.tls.server_name {
        return name.clone();
    }
    let host = host.strip_prefix('[').map_or_else(
        || host.rsplit_once(':').map_or(host, |(h, _)| h),
        |v6| v6.split(']').next().unwrap_or(v6),
    );
    host.to_owned()
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
