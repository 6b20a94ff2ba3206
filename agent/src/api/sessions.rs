//! Ending a live session: `POST /v1/sessions/{id}/kill` (`{"reason": "…"}`), for
//! root and members of `admin_group`. Every protocol's session stops as at
//! shutdown; its end reason and the audit log say who killed it and why.

use super::{ApiError, Caller, handlers};
use crate::{daemon::Daemon, daemon::live::Killed, identity::Approver};
use axum::{
    Json,
    extract::{ConnectInfo, Path, State, rejection::JsonRejection},
    http::StatusCode,
};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

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
