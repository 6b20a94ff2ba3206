//! Approval endpoints: list, approve, deny, watch.

use super::{ApiError, Caller};
use crate::{daemon::Daemon, gate::DecideError, identity::Approver};
use axum::{
    Json,
    body::Body,
    extract::{ConnectInfo, Path, Query, State, rejection::JsonRejection},
    http::StatusCode,
    response::Response,
};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

type Answer = Result<Json<Value>, ApiError>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Decided ones too, not only pending.
    all: Option<bool>,
    limit: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DecideBody {
    reason: Option<String>,
}

/// Longest reason kept with a decision.
const MAX_REASON: usize = 2048;

pub async fn list(
    State(d): State<Arc<Daemon>>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Query(q): Query<ListQuery>,
) -> Answer {
    let who = caller.approver().await?;
    let admin = caller.is_admin(d.config.admin_group.as_deref());
    let requests = d
        .store
        .requests(
            !q.all.unwrap_or(false),
            q.limit.unwrap_or(100).clamp(1, 10_000),
        )
        .await
        .map_err(super::handlers::internal)?;
    let visible: Vec<_> = requests
        .into_iter()
        .filter(|r| d.gate.may_see(r, &who, admin))
        .collect();
    Ok(Json(json!(visible)))
}

/// `POST /v1/approvals/{id}/approve` and `…/deny`: the caller decides request `id`.
pub async fn decide(
    State(d): State<Arc<Daemon>>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Path((id, verb)): Path<(String, String)>,
    body: Result<Json<DecideBody>, JsonRejection>,
) -> Answer {
    let body = decide_body(body)?;
    let who = caller.approver().await?;
    let done = match verb.as_str() {
        "approve" => d.gate.approve(&id, &who, body.reason.as_deref()).await,
        "deny" => {
            d.gate
                .deny(&id, &who, body.reason.as_deref().unwrap_or_default())
                .await
        }
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no decision `{other}`; use approve or deny"),
            ));
        }
    };
    Ok(Json(json!(done.map_err(refused)?)))
}

/// New requests and decisions as JSON lines, as they happen, for as long as the
/// caller stays connected. Only events the caller may see are sent.
pub async fn watch(
    State(d): State<Arc<Daemon>>,
    ConnectInfo(caller): ConnectInfo<Caller>,
) -> Result<Response, ApiError> {
    let who = caller.approver().await?;
    let admin = caller.is_admin(d.config.admin_group.as_deref());
    let rx = d.gate.subscribe();
    let stream = futures_util::stream::unfold((rx, d, who), move |(mut rx, d, who)| async move {
        loop {
            match rx.recv().await {
                Ok(event) => {
                    let visible = match d.store.request(&event.request_id).await {
                        Ok(Some(r)) => d.gate.may_see(&r, &who, admin),
                        _ => false,
                    };
                    if visible {
                        let mut line = serde_json::to_vec(&event).unwrap_or_default();
                        line.push(b'\n');
                        return Some((Ok::<_, std::convert::Infallible>(line), (rx, d, who)));
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    let line = format!("{{\"kind\":\"lagged\",\"missed\":{n}}}\n").into_bytes();
                    return Some((Ok(line), (rx, d, who)));
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

fn decide_body(body: Result<Json<DecideBody>, JsonRejection>) -> Result<DecideBody, ApiError> {
    let body = match body {
        Ok(Json(b)) => b,
        // No body at all is fine: no reason given.
        Err(JsonRejection::MissingJsonContentType(_)) => DecideBody::default(),
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("{}; send {{\"reason\": \"…\"}}", e.body_text()),
            ));
        }
    };
    if body.reason.as_ref().is_some_and(|r| r.len() > MAX_REASON) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the reason is longer than {MAX_REASON} bytes; shorten it"),
        ));
    }
    Ok(body)
}

fn refused(e: DecideError) -> ApiError {
    let status = match &e {
        DecideError::NotFound(_) => StatusCode::NOT_FOUND,
        DecideError::AlreadyDecided { .. } | DecideError::AlreadyApproved(_) => {
            StatusCode::CONFLICT
        }
        DecideError::SelfApproval(_) | DecideError::NotApprover { .. } => StatusCode::FORBIDDEN,
        DecideError::ReasonRequired
        | DecideError::Store(
            crate::record::StoreError::InvalidId { .. }
            | crate::record::StoreError::Ambiguous { .. },
        ) => StatusCode::BAD_REQUEST,
        DecideError::Store(_) => return super::handlers::internal(e),
    };
    ApiError::new(status, e.to_string())
}

impl Caller {
    /// The socket's caller as a local approver (from its peer credentials).
    async fn approver(&self) -> Result<Approver, ApiError> {
        let principal = self.principal().await.ok_or_else(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "cannot tell who you are (no peer credentials)",
            )
        })?;
        Ok(Approver::from(&principal))
    }
}
