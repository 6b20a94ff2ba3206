//! One `http` event per request: method, URL (query values masked), status, how
//! long deciding and answering took, sizes both ways, chosen headers (credentials
//! and cookies redacted), and masked samples of text bodies up to a cap.
//!
//! Bodies are counted and sampled by a [`Tap`](super::tap::Tap) around them as they
//! stream; the event is recorded when the response body ends (or is dropped: the
//! client left).

use crate::{
    gate::masked_query,
    mask::Masker,
    proto::Session,
    record::{EventRecord, now_ms},
};
use hyper::HeaderMap;
use serde_json::{Map, Value, json};
use std::time::Instant;

/// Request headers a record keeps.
const REQUEST_HEADERS: [&str; 8] = [
    "host",
    "user-agent",
    "content-type",
    "content-length",
    "accept",
    "authorization",
    "cookie",
    "upgrade",
];
/// Response headers a record keeps.
const RESPONSE_HEADERS: [&str; 5] = [
    "content-type",
    "content-length",
    "content-encoding",
    "location",
    "set-cookie",
];
/// Headers whose values are never kept, whatever their name says.
const SECRET_HEADERS: [&str; 5] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
];

/// What a request's record gathers before its response ends.
#[derive(Debug, Default, Clone)]
pub(super) struct Facts {
    pub at_ms: i64,
    pub method: String,
    /// The raw path and the query with its values masked.
    pub url: String,
    pub host: String,
    /// As the rules saw it.
    pub path: String,
    pub version: String,
    pub request_headers: Map<String, Value>,
    pub verdict: String,
    pub decided_by: Option<String>,
    pub request_id: Option<String>,
    pub reason: Option<String>,
    pub decide_us: i64,
    pub status: Option<u16>,
    pub response_headers: Map<String, Value>,
    /// Time from forwarding to the response head.
    pub upstream_us: Option<i64>,
    pub error: Option<String>,
    pub upgrade: bool,
    /// An upgrade's second event: its relay has ended (the first, at the `101`,
    /// has this `false`).
    pub relay_ended: bool,
}

impl Facts {
    /// The URL as recorded: path as sent, query values masked.
    pub(super) fn url(path: &str, query: Option<&str>) -> String {
        match query {
            Some(q) => format!("{path}?{}", masked_query(q)),
            None => path.to_owned(),
        }
    }
}

/// The chosen headers of a request (`response` false) or response, with secret
/// values (and the target's credential header, `credential`) redacted.
pub(super) fn chosen(
    headers: &HeaderMap,
    response: bool,
    credential: Option<&str>,
) -> Map<String, Value> {
    let names: &[&str] = if response {
        &RESPONSE_HEADERS
    } else {
        &REQUEST_HEADERS
    };
    let mut out = Map::new();
    for name in names.iter().copied().chain(credential) {
        let Some(value) = headers.get(name) else {
            continue;
        };
        let secret = SECRET_HEADERS.contains(&name) || Some(name) == credential;
        let shown = if secret {
            "[redacted]".to_owned()
        } else {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        };
        out.insert(name.to_owned(), Value::String(shown));
    }
    out
}

/// A body's size and the start of it, when it is text.
#[derive(Debug, Default, Clone)]
pub(super) struct Sample {
    pub bytes: u64,
    pub kept: Vec<u8>,
    cap: usize,
    text: bool,
}

impl Sample {
    /// Counts a body, keeping its first `cap` bytes if `text`.
    pub(super) fn new(cap: usize, text: bool) -> Self {
        Self {
            cap: if text { cap } else { 0 },
            text,
            ..Self::default()
        }
    }

    pub(super) fn add(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        let room = self.cap.saturating_sub(self.kept.len());
        self.kept
            .extend_from_slice(data.get(..room.min(data.len())).unwrap_or_default());
    }

    /// The kept text, masked; `None` for a binary or empty body.
    fn shown(&self, masker: Option<&Masker>) -> Option<String> {
        if !self.text || self.kept.is_empty() {
            return None;
        }
        let kept = String::from_utf8_lossy(&self.kept);
        let shown = masker.map_or_else(|| kept.to_string(), |m| m.mask_str(&kept).into_owned());
        let more = if self.bytes > self.kept.len() as u64 {
            "…"
        } else {
            ""
        };
        Some(format!("{shown}{more}"))
    }
}

/// Whether a body of this content type is sampled (and masked): text and JSON.
pub(super) fn is_text(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return false };
    let ct = ct
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    ct.starts_with("text/")
        || ct == "application/json"
        || ct == "application/x-ndjson"
        || ct == "application/x-www-form-urlencoded"
        || ct.ends_with("+json")
        || ct.ends_with("/xml")
}

/// The event of one finished request.
pub(super) fn event(
    session: &Session,
    masker: Option<&Masker>,
    facts: Facts,
    request: &Sample,
    response: &Sample,
    started: Instant,
) -> EventRecord {
    let mask = |s: &str| masker.map_or_else(|| s.to_owned(), |m| m.mask_str(s).into_owned());
    let url = mask(&facts.url);
    let status = facts
        .status
        .map_or_else(|| "-".to_owned(), |s| s.to_string());
    let ended = if facts.upgrade && facts.relay_ended {
        " (relay ended)"
    } else {
        ""
    };
    let summary = format!("{} {}{url} → {status}{ended}", facts.method, facts.host);
    let mut details = json!({
        "method": facts.method,
        "url": url,
        "host": facts.host,
        "path": mask(&facts.path),
        "version": facts.version,
        "status": facts.status,
        "request_headers": facts.request_headers,
        "response_headers": facts.response_headers,
        "request_bytes": request.bytes,
        "response_bytes": response.bytes,
        "decide_us": facts.decide_us,
        "upstream_us": facts.upstream_us,
    });
    if let Some(obj) = details.as_object_mut() {
        if let Some(body) = request.shown(masker) {
            obj.insert("request_body".into(), Value::String(body));
        }
        if let Some(body) = response.shown(masker) {
            obj.insert("response_body".into(), Value::String(body));
        }
        if facts.upgrade {
            obj.insert("upgrade".into(), Value::Bool(true));
            let relay = if facts.relay_ended {
                "ended"
            } else {
                "started"
            };
            obj.insert("relay".into(), Value::String(relay.into()));
        }
        obj.retain(|_, v| !v.is_null());
    }
    EventRecord {
        session_id: session.id.clone(),
        seq: 0,
        at_ms: if facts.at_ms == 0 {
            now_ms()
        } else {
            facts.at_ms
        },
        kind: "http".into(),
        summary,
        details: Some(details),
        verdict: facts.verdict,
        decided_by: facts.decided_by,
        request_id: facts.request_id,
        reason: facts.reason.map(|r| mask(&r)),
        duration_us: Some(i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX)),
        error: facts.error,
        payload: None,
        hash: String::new(),
    }
}
