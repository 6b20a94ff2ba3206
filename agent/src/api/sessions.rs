//! Live sessions: `POST /v1/sessions/{id}/kill` (`{"reason": "…"}`, root and
//! members of `admin_group`) ends one: every protocol's session stops as at
//! shutdown; its end reason and the audit log say who killed it and why.
//! `GET /v1/sessions/{id}/watch` (whoever may see the session) follows one as JSON
//! lines until it ends: its events as they are recorded and an SSH shell's (masked)
//! terminal output as it happens.

use super::{ApiError, Caller, handlers};
use crate::record::SessionId;
use crate::{daemon::Daemon, daemon::live::Killed, identity::Approver};
use axum::{
    Json,
    body::Body,
    extract::{ConnectInfo, Path, State, rejection::JsonRejection},
    http::StatusCode,
    response::Response,
};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use std::{collections::VecDeque, sync::Arc, time::Duration};
use tokio::sync::broadcast::{self, error::RecvError};

/// How often a watch looks for newly recorded events.
const WATCH_POLL: Duration = Duration::from_millis(300);
/// Events read per look.
const WATCH_PAGE: u32 = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KillBody {
    reason: String,
}

/// Ends the live session `id` (or unique prefix) with the caller's reason.
pub async fn kill(
    State(d): State<Arc<Daemon>>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Path(id): Path<String>,
    body: Result<Json<KillBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    if !caller.is_admin(d.config.admin_group.as_deref()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "only root and members of admin_group may kill sessions",
        ));
    }
    let Json(body) = body.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("expected {{\"reason\": \"…\"}}: {e}"),
        )
    })?;
    let reason = crate::gate::bounded_justification(&body.reason);
    if reason.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "say why the session is killed (--reason)",
        ));
    }
    let record = handlers::visible_session(&d, &caller, &id).await?;
    let principal = caller.principal().await.ok_or_else(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "cannot tell who you are (no peer credentials)",
        )
    })?;
    let by = Approver::from(&principal).label();
    let killed = Killed {
        by: by.clone(),
        reason: reason.clone(),
    };
    d.live
        .kill(record.id.as_str(), killed)
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, e.to_string()))?;
    tracing::warn!(session = %record.id, %by, %reason, "Session killed");
    let data = json!({ "reason": reason, "protocol": record.protocol, "target": record.target });
    d.gate
        .audit("session_killed", record.id.as_str(), Some(&by), data)
        .await;
    Ok(Json(json!({
        "id": record.id,
        "killed_by": by,
        "reason": reason,
        "message": format!("session {} killed", record.id),
    })))
}

/// Follows the live session `id` (or unique prefix): JSON lines `{"type":"event",
/// "event":{…}}`, `{"type":"output","data":"…"}` (an SSH shell's masked output),
/// `{"type":"skipped","chunks":N}` (output a slow watcher missed) and, last,
/// `{"type":"ended"}`.
pub async fn watch(
    State(d): State<Arc<Daemon>>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let record = handlers::visible_session(&d, &caller, &id).await?;
    if !d.live.contains(record.id.as_str()) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "session {} is not running on this gateway; see it with `portcullis sessions \
                 replay {}`",
                record.id, record.id
            ),
        ));
    }
    let output = (record.protocol == "ssh").then(|| {
        let rx = d.ssh.feeds.subscribe(record.id.as_str());
        // It ended meanwhile: drop the feed the subscription made.
        if !d.live.contains(record.id.as_str()) {
            d.ssh.feeds.remove(record.id.as_str());
        }
        rx
    });
    let watch = Watch {
        d,
        id: record.id,
        output,
        after: 0,
        queue: VecDeque::new(),
        done: false,
    };
    let stream = futures_util::stream::unfold(watch, |mut w| async move {
        let line = w.next_line().await?;
        Some((Ok::<_, std::convert::Infallible>(line), w))
    });
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// One watcher's place in a live session.
struct Watch {
    d: Arc<Daemon>,
    id: SessionId,
    output: Option<broadcast::Receiver<Bytes>>,
    /// The last event sent.
    after: i64,
    queue: VecDeque<Vec<u8>>,
    done: bool,
}

impl Watch {
    async fn next_line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(line) = self.queue.pop_front() {
                return Some(line);
            }
            if self.done {
                return None;
            }
            tokio::select! {
                chunk = next_output(&mut self.output) => match chunk {
                    Ok(data) => {
                        let text = String::from_utf8_lossy(&data);
                        return Some(line(&json!({"type": "output", "data": text})));
                    }
                    Err(RecvError::Lagged(n)) => {
                        return Some(line(&json!({"type": "skipped", "chunks": n})));
                    }
                    Err(RecvError::Closed) => self.output = None,
                },
                () = tokio::time::sleep(WATCH_POLL) => self.poll().await,
            }
        }
    }

    /// Queues the events recorded since the last look; once the session has ended
    /// (all its events are recorded by then), the end.
    async fn poll(&mut self) {
        let ended = !self.d.live.contains(self.id.as_str());
        loop {
            let events = match self.d.store.events(&self.id, self.after, WATCH_PAGE).await {
                Ok(events) => events,
                Err(error) => {
                    tracing::warn!(%error, "A session watch cannot read events");
                    break;
                }
            };
            let full = events.len() == WATCH_PAGE as usize;
            for event in events {
                self.after = self.after.max(event.seq);
                self.queue
                    .push_back(line(&json!({"type": "event", "event": event})));
            }
            if !full || !ended {
                break;
            }
        }
        if ended {
            self.queue.push_back(line(&json!({"type": "ended"})));
            self.done = true;
        }
    }
}

/// The next chunk of live output, or never when there is none to follow.
async fn next_output(rx: &mut Option<broadcast::Receiver<Bytes>>) -> Result<Bytes, RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn line(value: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec(value).unwrap_or_default();
    out.push(b'\n');
    out
}
