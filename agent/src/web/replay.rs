//! Terminal replay in the console: a session's page plays each recorded shell with
//! the vendored asciinema-player (`assets/asciinema-player/`, embedded in the
//! binary), and `GET /sessions/{id}/casts/{seq}` serves the shell's asciicast file
//! only once the session's hash chain verifies up to the shell's event and the
//! file's SHA-256 equals the digest that event holds. A recording that fails either
//! check is refused and the refusal is audited.

use super::{Web, pages::esc, records::visible_session, session::WebSession};
use crate::record::{EventRecord, GENESIS_HASH, SessionRecord, StoreError};
use axum::{
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use sha2::{Digest as _, Sha256};
use std::{fmt::Write as _, path::PathBuf, sync::Arc};
use tokio::{io::AsyncReadExt as _, sync::Semaphore};

/// The player's release bundle (see `assets/asciinema-player/README.md`).
pub const PLAYER_JS: &[u8] = include_bytes!("assets/asciinema-player/asciinema-player.min.js");
pub const PLAYER_CSS: &[u8] = include_bytes!("assets/asciinema-player/asciinema-player.css");
/// Where the console serves the player: versioned, so browsers may keep it.
pub const PLAYER_JS_PATH: &str = "/static/asciinema-player-3.18.0.min.js";
pub const PLAYER_CSS_PATH: &str = "/static/asciinema-player-3.18.0.css";
/// Starts a player on each `[data-cast]` element of the page.
pub const REPLAY_JS: &str = include_str!("assets/replay.js");

/// The Content-Security-Policy of a session's page: the console's own, plus
/// `'wasm-unsafe-eval'`, since the player's terminal emulator is WebAssembly.
pub const SESSION_CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
     style-src 'self'; img-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

/// Largest recording played in the page (it is read whole to check its digest
/// before a byte is sent); larger ones are for `portcullis sessions replay`.
const MAX_CAST: u64 = 32 * 1024 * 1024;
/// Recordings read at once, so memory stays under `2 × MAX_CAST`.
static READS: Semaphore = Semaphore::const_new(2);
/// Events read per store call while verifying the chain.
const CHAIN_PAGE: u32 = 1000;
/// Deepest shell event whose chain the console verifies; deeper ones are refused.
const MAX_CHAIN: i64 = 200_000;

/// Why a recording is not served.
#[derive(Debug, thiserror::Error)]
enum CastError {
    #[error("event {0} of this session has no shell recording")]
    NoRecording(i64),
    #[error("the session's hash chain does not verify at event {0}: its records were changed")]
    Chain(i64),
    #[error(
        "event {0} is too deep in its session to verify here; use `portcullis sessions replay`"
    )]
    TooDeep(i64),
    #[error("the recording's path is outside this gateway's recordings directory")]
    Outside,
    #[error(
        "the recording is not on this gateway (it was recorded on {0}, or removed); \
         open the console of that gateway"
    )]
    Missing(String),
    #[error(
        "the recording has {0} bytes, more than the page plays; use `portcullis sessions \
         replay ID --asciicast FILE`"
    )]
    TooLarge(u64),
    #[error(
        "the recording does not match the digest in the session's chain: it was changed \
         after it was recorded"
    )]
    Mismatch,
    #[error("the store failed; see the daemon's log")]
    Store(#[from] StoreError),
}

impl CastError {
    fn status(&self) -> StatusCode {
        match self {
            Self::NoRecording(_) | Self::Missing(_) => StatusCode::NOT_FOUND,
            Self::Chain(_) | Self::Outside | Self::Mismatch => StatusCode::CONFLICT,
            Self::TooDeep(_) | Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether the refusal says a record was tampered with (worth an audit record).
    fn is_tampering(&self) -> bool {
        matches!(self, Self::Chain(_) | Self::Outside | Self::Mismatch)
    }
}

/// The recording an event names: its file and the digest the chain holds.
fn recording(event: &EventRecord) -> Option<(&str, &str, u64)> {
    let rec = event.details.as_ref()?.get("recording")?;
    let path = rec.get("path")?.as_str()?;
    let bytes = rec.get("bytes").and_then(serde_json::Value::as_u64)?;
    Some((path, event.payload.as_deref()?, bytes))
}

/// The players for the shells among `events` of session `r`, with the scripts that
/// start them; empty when the session recorded no shell.
#[must_use]
pub fn players(r: &SessionRecord, events: &[EventRecord]) -> String {
    let mut out = String::new();
    for e in events {
        let Some((_, _, bytes)) = recording(e) else {
            continue;
        };
        let url = format!("/sessions/{}/casts/{}", r.id, e.seq);
        let _ = write!(
            out,
            "<section class=\"replay\"><h2>Terminal: {}</h2>",
            esc(&e.summary)
        );
        if bytes > MAX_CAST {
            let _ = write!(
                out,
                "<p class=\"muted\">This recording has {bytes} bytes, more than the page plays; \
                 use <code>portcullis sessions replay {} --asciicast FILE</code>.</p></section>",
                esc(&r.id.to_string())
            );
            continue;
        }
        let _ = write!(
            out,
            "<div class=\"cast\" data-cast=\"{url}\"></div>\
             <p class=\"muted\"><a href=\"{url}\" download=\"{}-{}.cast\">Download the recording</a> \
             (asciicast, {bytes} bytes; checked against the session's hash chain)</p></section>",
            esc(&r.id.to_string()),
            e.seq
        );
    }
    if !out.is_empty() {
        let _ = write!(
            out,
            "<link rel=\"stylesheet\" href=\"{PLAYER_CSS_PATH}\">\
             <script src=\"{PLAYER_JS_PATH}\" defer></script>\
             <script src=\"/static/replay.js\" defer></script>"
        );
    }
    out
}

/// `GET /sessions/{id}/casts/{seq}`: the shell recording of event `seq`, verified.
pub async fn cast(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path((id, seq)): Path<(String, i64)>,
) -> Response {
    let (s, session) = match visible_session(&web, &headers, &id).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    let _permit = READS.acquire().await;
    match verified(&web, &session, seq).await {
        Ok(bytes) => {
            let mut r = Response::new(axum::body::Body::from(bytes));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-asciicast"),
            );
            r
        }
        Err(e) => refused(&web, &s, &session, seq, &e).await,
    }
}

async fn refused(
    web: &Web,
    s: &WebSession,
    session: &SessionRecord,
    seq: i64,
    e: &CastError,
) -> Response {
    if let CastError::Store(error) = e {
        tracing::error!(%error, "Cannot read a session's recording");
    }
    if e.is_tampering() {
        tracing::warn!(session = %session.id, seq, error = %e, "Recording refused");
        let who = s.approver.label();
        web.daemon
            .gate
            .audit(
                "recording_refused",
                &session.id.to_string(),
                Some(&who),
                serde_json::json!({ "seq": seq, "reason": e.to_string(), "via": "web" }),
            )
            .await;
    }
    (e.status(), e.to_string()).into_response()
}

/// The recording of event `seq` of `session`, once the chain up to it verifies and
/// the file matches the digest the event holds.
async fn verified(web: &Web, session: &SessionRecord, seq: i64) -> Result<Vec<u8>, CastError> {
    let event = chain_to(web, session, seq).await?;
    let (path, digest, _) = recording(&event).ok_or(CastError::NoRecording(seq))?;
    let path = inside_recordings(web, path, &session.host).await?;
    let bytes = read_capped(&path, &session.host).await?;
    if hex(&Sha256::digest(&bytes)) != digest {
        return Err(CastError::Mismatch);
    }
    Ok(bytes)
}

/// Event `seq` of `session`, after checking every link of the chain up to it.
async fn chain_to(web: &Web, session: &SessionRecord, seq: i64) -> Result<EventRecord, CastError> {
    if !(1..=MAX_CHAIN).contains(&seq) {
        return Err(CastError::TooDeep(seq));
    }
    let mut prev = GENESIS_HASH.to_owned();
    let mut after = 0;
    loop {
        let page = web
            .daemon
            .store
            .events(&session.id, after, CHAIN_PAGE)
            .await?;
        for e in page.iter() {
            if e.seq != after + 1 || e.chain_hash(&prev) != e.hash {
                return Err(CastError::Chain(after + 1));
            }
            if e.seq == seq {
                return Ok(e.clone());
            }
            prev.clone_from(&e.hash);
            after = e.seq;
        }
        if page.len() < CHAIN_PAGE as usize {
            return Err(CastError::NoRecording(seq));
        }
    }
}

/// `path`, resolved, if it lies inside this gateway's recordings directory.
async fn inside_recordings(web: &Web, path: &str, host: &str) -> Result<PathBuf, CastError> {
    let dir = web.daemon.config.state_dir.join("recordings");
    let (Ok(dir), Ok(file)) = (
        tokio::fs::canonicalize(&dir).await,
        tokio::fs::canonicalize(path).await,
    ) else {
        return Err(CastError::Missing(host.to_owned()));
    };
    if file.starts_with(&dir) {
        Ok(file)
    } else {
        Err(CastError::Outside)
    }
}

/// The file's bytes, refused past [`MAX_CAST`].
async fn read_capped(path: &std::path::Path, host: &str) -> Result<Vec<u8>, CastError> {
    let missing = |_| CastError::Missing(host.to_owned());
    let file = tokio::fs::File::open(path).await.map_err(missing)?;
    let len = file.metadata().await.map_err(missing)?.len();
    if len > MAX_CAST {
        return Err(CastError::TooLarge(len));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(MAX_CAST + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(missing)?;
    if bytes.len() as u64 > MAX_CAST {
        return Err(CastError::TooLarge(bytes.len() as u64));
    }
    Ok(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn vendored_player_is_the_release_bundle() {
        assert_eq!(
            hex(&Sha256::digest(PLAYER_JS)),
            "752c9b528b664f5b16f27c68ba22fc7973d1d6063a1c3e4795a4c8015943acf6"
        );
        assert_eq!(
            hex(&Sha256::digest(PLAYER_CSS)),
            "981fe7bc6042048b2a373b6da297f747e324e90a8b6264e833e3a92cec22dfb9"
        );
    }

    #[test]
    fn only_shell_events_with_a_recording_get_a_player() {
        let mut shell = EventRecord {
            session_id: serde_json::from_value(serde_json::json!(
                "01a250c9-e100-7047-9a4c-3976124e585c"
            ))
            .unwrap(),
            seq: 3,
            at_ms: 0,
            kind: "shell".into(),
            summary: "shell <pty>".into(),
            details: Some(serde_json::json!({ "recording": { "path": "/x.cast", "bytes": 10 } })),
            verdict: "allow".into(),
            decided_by: None,
            request_id: None,
            reason: None,
            duration_us: None,
            error: None,
            payload: Some("ab".into()),
            hash: String::new(),
        };
        assert_eq!(recording(&shell), Some(("/x.cast", "ab", 10)));
        let mut exec = shell.clone();
        exec.details = Some(serde_json::json!({ "output_sample": "x" }));
        assert_eq!(recording(&exec), None);
        shell.payload = None;
        assert_eq!(
            recording(&shell),
            None,
            "no digest, nothing to check against"
        );
    }
}
