//! One request, end to end: check and describe it, let the gate decide (a hold waits
//! here, in a task of its own so that a client leaving ends the hold as abandoned),
//! then either answer for the proxy (`403`, `413`, `400`, `502`) or forward it with
//! the target's credential header and stream the response back, masked, into one
//! `http` event.

use super::{
    Http, forward,
    framing::{Framing, Refusal},
    held::HeldRequest,
    record::{self, Facts, Sample},
    reply::{self, BoxError, ProxyBody},
    request::{self, Parsed},
    upstream::Upstream,
};
use crate::{
    gate::{Action, ActionOutcome, Ask, Ruling},
    mask::{MaskKey, Masker},
    proto::Session,
    record::{EventRecord, now_ms},
};
use http_body_util::BodyExt as _;
use hyper::{
    Request, Response, StatusCode,
    body::Incoming,
    header::{HeaderName, HeaderValue},
};
use std::{
    convert::Infallible,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// What the requests of one client connection share.
pub(super) struct Conn {
    pub(super) session: Arc<Session>,
    pub(super) upstream: Upstream,
    /// The target's credential header, read once per connection; `Err` refuses
    /// every request (fail closed).
    pub(super) credential: Result<Option<(HeaderName, HeaderValue)>, String>,
    pub(super) masker: Result<Option<Arc<Masker>>, String>,
    /// The address dialled, for HTTP/1.0 requests without a `Host`.
    fallback_host: String,
    max_held_body: usize,
    body_time: Duration,
    pub(super) record_body: usize,
    /// Whether answers wait for their record (`wait_for_record`).
    pub(super) wait_for_record: bool,
    /// Record writes and upgraded relays still running: waited for before the
    /// session's chain is closed.
    tasks: TaskTracker,
    /// Request heads the connection's scanner refused.
    framing: Arc<Framing>,
    /// An [`Ask`] kept between requests: its principal, target and protocol are
    /// the connection's, so each request sets only its action instead of cloning
    /// the principal again. Empty while a request uses it (an HTTP/2 stream beside
    /// it builds its own).
    spare_ask: Mutex<Option<Ask>>,
}

impl Conn {
    pub(super) fn new(
        http: &Http,
        session: Arc<Session>,
        sni: Option<String>,
        fallback_host: String,
        framing: Arc<Framing>,
    ) -> Self {
        let target = &session.target;
        let credential = match &target.http_credentials {
            None => Ok(None),
            Some(c) => c.value.resolve().and_then(|secret| {
                let name = HeaderName::from_bytes(c.header.as_bytes())
                    .map_err(|_| format!("`{}` is not a header name", c.header))?;
                let mut value = HeaderValue::from_str(&format!("{}{}", c.prefix, secret.expose()))
                    .map_err(|_| "the credential is not a valid header value".to_owned())?;
                value.set_sensitive(true);
                Ok(Some((name, value)))
            }),
        };
        let mut tls = target.tls.clone();
        if tls.server_name.is_none() {
            tls.server_name = sni;
        }
        Self {
            upstream: Upstream::new(
                session.upstream,
                session.mark,
                &tls,
                http.config.max_header_bytes,
            ),
            credential,
            masker: session_masker(&session),
            fallback_host,
            max_held_body: http.config.max_held_body,
            body_time: http.config.header_timeout.max(Duration::from_secs(30)),
            record_body: http.config.record_body,
            wait_for_record: http.config.wait_for_record,
            tasks: TaskTracker::new(),
            framing,
            spare_ask: Mutex::new(None),
            session,
        }
    }

    /// An ask for this connection's principal and target, for `action`.
    fn ask(&self, action: Action, justification: Option<String>) -> Ask {
        let spare = self
            .spare_ask
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let mut ask = spare.unwrap_or_else(|| Ask {
            principal: self.session.principal.clone(),
            target: self.session.target.name.clone(),
            protocol: self.session.target.protocol.to_string(),
            action: Action::Connect,
            justification: None,
        });
        ask.action = action;
        ask.justification = justification;
        ask
    }

    /// Keeps `ask` for the next request.
    fn keep_ask(&self, ask: Ask) {
        *self
            .spare_ask
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(ask);
    }

    /// Waits for the connection's record writes and relays.
    pub(super) async fn finish(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Queues `event` (from a body's drop too): at once when the recorder's queue has
    /// room, else in a task that waits for room.
    pub(super) fn record(&self, event: EventRecord) {
        let Err(waiting) = self.session.recorder.try_record(event) else {
            return;
        };
        let recorder = self.session.recorder.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let write = async move {
                let _ = recorder.record_waiting(waiting).await;
            };
            self.tasks.spawn_on(write, &handle);
        } else {
            tracing::error!(session = %self.session.id, "HTTP event lost: no runtime");
        }
    }

    pub(super) fn masker(&self) -> Option<&Masker> {
        self.masker.as_ref().ok().and_then(|m| m.as_deref())
    }

    pub(super) fn credential_name(&self) -> Option<&str> {
        self.session
            .target
            .http_credentials
            .as_ref()
            .map(|c| c.header.as_str())
    }

    /// Records a request that ends here, before any response body.
    pub(super) fn record_now(&self, facts: Facts, started: Instant) {
        let empty = Sample::new(0, false);
        self.record(record::event(
            &self.session,
            self.masker(),
            facts,
            &empty,
            &empty,
            started,
        ));
    }

    pub(super) fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }
}

/// The masking of this session: the specs of the rules that match it, with their key.
fn session_masker(session: &Session) -> Result<Option<Arc<Masker>>, String> {
    let specs = (session.gate.policy()).masks_for(&session.principal, &session.target.name);
    if specs.is_empty() {
        return Ok(None);
    }
    let key = MaskKey::for_specs(&specs).map_err(|e| format!("masking cannot be set up: {e}"))?;
    let masker = Masker::compile(&specs, key.as_ref())
        .map_err(|e| format!("masking cannot be set up: {e}"))?;
    Ok((!masker.is_noop()).then(|| Arc::new(masker)))
}

/// Serves one request of `conn`'s client. The proxy's own answers (refusals,
/// `502`) leave once their record is written, as a forwarded response's end does
/// (`tap`); when it cannot be, the client gets `503` instead.
pub(super) async fn handle(
    conn: Arc<Conn>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let session = Arc::clone(&conn.session);
    let wait = conn.wait_for_record;
    let response = serve(conn, req).await;
    if wait
        && response.headers().contains_key(reply::OWN)
        && !session.recorder.sync(&session.id).await
    {
        return Ok(reply::not_recorded());
    }
    Ok(response)
}

/// One request, answered.
async fn serve(conn: Arc<Conn>, mut req: Request<Incoming>) -> Response<ProxyBody> {
    let started = Instant::now();
    if let Some(refusal) = conn.framing.refused(&req) {
        return refuse_head(&conn, refusal, started);
    }
    let (path, query) = req
        .uri()
        .path_and_query()
        .map_or(("/", None), |pq| (pq.path(), pq.query()));
    let mut facts = Facts {
        at_ms: now_ms(),
        method: req.method().as_str().to_owned(),
        url: Facts::url(path, query),
        version: format!("{:?}", req.version()),
        request_headers: record::chosen(req.headers(), false, conn.credential_name()),
        ..Facts::default()
    };
    let parsed = match request::parse(&req, &conn.fallback_host) {
        Ok(parsed) => parsed,
        Err(bad) => {
            let reason = bad.to_string();
            tracing::info!(%reason, "HTTP request refused");
            facts.verdict = "denied".into();
            facts.decided_by = Some("portcullis".into());
            facts.reason = Some(reason.clone());
            facts.status = Some(StatusCode::BAD_REQUEST.as_u16());
            conn.record_now(facts, started);
            return reply::bad_request(&reason);
        }
    };
    facts.host.clone_from(&parsed.host);
    facts.path.clone_from(&parsed.path);
    facts.upgrade = parsed.upgrade;
    let client_upgrade = parsed.upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let Some((outcome, held, facts)) = decide(&conn, &parsed, body, facts, started).await else {
        return reply::bad_gateway("the request could not be decided");
    };
    if !outcome.allowed() {
        return reply::refused(&outcome);
    }
    let body = match (held.buffered, held.body) {
        (Some(bytes), _) => reply::full(bytes),
        (None, Some(body)) => body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync(),
        (None, None) => reply::full(bytes::Bytes::new()),
    };
    let exchange = forward::Exchange {
        conn,
        parsed,
        facts,
        started,
        client_upgrade,
    };
    exchange.forward(parts, body).await
}

/// Answers a request head the scanner refused (its framing, or the reserved marker
/// header), and records it: nothing of it was forwarded.
fn refuse_head(conn: &Conn, refusal: Refusal, started: Instant) -> Response<ProxyBody> {
    tracing::info!(reason = %refusal.reason, "HTTP request head refused");
    let (path, query) = refusal
        .target
        .split_once('?')
        .map_or((refusal.target.as_str(), None), |(p, q)| (p, Some(q)));
    let facts = Facts {
        at_ms: now_ms(),
        method: refusal.method.clone(),
        url: Facts::url(path, query),
        version: "HTTP/1.1".into(),
        verdict: "denied".into(),
        decided_by: Some("portcullis".into()),
        reason: Some(refusal.reason.clone()),
        status: Some(refusal.status.as_u16()),
        ..Facts::default()
    };
    conn.record_now(facts, started);
    reply::bad_head(refusal.status, &refusal.reason)
}

/// Lets the gate decide `parsed`. A request a rule decides at once (most of them)
/// is settled here, with no task and no wait. One that is held waits in a task of
/// its own: if this request's future is dropped (the client left, or reset its
/// HTTP/2 stream), the hold sees the client gone and ends as abandoned rather than
/// being cut off unrecorded. A request not allowed is recorded where it is settled,
/// so its record survives the client leaving.
async fn decide(
    conn: &Arc<Conn>,
    parsed: &Parsed,
    body: Incoming,
    mut facts: Facts,
    started: Instant,
) -> Option<(ActionOutcome, HeldRequest, Facts)> {
    let ask = conn.ask(parsed.action(), parsed.justification.clone());
    let left = CancellationToken::new();
    let _leaving = left.clone().drop_guard();
    let mut held = HeldRequest::new(body, conn.max_held_body, conn.body_time, left);
    let gate = &conn.session.gate;
    let ruling = gate.rule(&ask);
    if !matches!(ruling, Ruling::Review { .. }) {
        let outcome = gate.decide_ruled(&ask, ruling, None, &mut held).await;
        conn.keep_ask(ask);
        settle(conn, &outcome, &mut facts, started);
        return Some((outcome, held, facts));
    }
    let gate = Arc::clone(&conn.session.gate);
    let session = conn.session.id.clone();
    let recorder = Arc::clone(conn);
    let decided = conn.tasks.spawn(async move {
        let outcome = gate
            .decide_ruled(&ask, ruling, Some(&session), &mut held)
            .await;
        settle(&recorder, &outcome, &mut facts, started);
        (outcome, held, facts)
    });
    decided.await.ok()
}

/// Puts the decision into `facts`, and records a request that is not allowed.
fn settle(conn: &Conn, outcome: &ActionOutcome, facts: &mut Facts, started: Instant) {
    facts.decide_us = micros(started.elapsed());
    facts.verdict = outcome.verdict().into();
    facts.decided_by = outcome.decided_by();
    facts.request_id = outcome.request().map(str::to_owned);
    if !outcome.allowed() || outcome.request().is_some() {
        facts.reason = Some(outcome.message());
    }
    if !outcome.allowed() {
        facts.status = Some(reply::refused(outcome).status().as_u16());
        conn.record_now(std::mem::take(facts), started);
    }
}

/// A duration in whole microseconds, for a record.
pub(super) fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}
