//! API routes for the web console and the requester's justification: a one-time
//! sign-in link for a local approver (`portcullis web-login`), and `portcullis
//! justify`. Both act for the socket's caller, known by its peer credentials.

use super::{ApiError, Caller};
use crate::{daemon::Daemon, gate::JustifyError, identity::Approver};
use axum::{
    Json,
    extract::{ConnectInfo, Path, State, rejection::JsonRejection},
    http::StatusCode,
};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

type Answer = Result<Json<Value>, ApiError>;

async fn principal(caller: &Caller) -> Result<crate::identity::Principal, ApiError> {
    caller.principal().await.ok_or_else(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "cannot tell who you are (no peer credentials)",
        )
    })
}

/// `POST /v1/web/link`: a sign-in URL that works once, for the caller.
pub async fn link(
    State(d): State<Arc<Daemon>>,
    ConnectInfo(caller): ConnectInfo<Caller>,
) -> Answer {
    let Some(web) = &d.config.web else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "the web console is off; set [web] listen in the daemon's config",
        ));
    };
    let approver = Approver::from(&principal(&caller).await?);
    let label = approver.label();
    let token = d.web_sessions.issue_link(approver).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many unused sign-in links; try again in two minutes",
        )
    })?;
    d.gate
        .audit("web_link_issued", &label, Some(&label), json!({}))
        .await;
    Ok(Json(
        json!({ "url": crate::web::link_url(&web.public_url, &token), "expires_in_seconds": 120 }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JustifyBody {
    justification: String,
}

/// `POST /v1/approvals/{id}/justify`: the requester says why.
pub async fn justify(
    State(d): State<Arc<Daemon>>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Path(id): Path<String>,
    body: Result<Json<JustifyBody>, JsonRejection>,
) -> Answer {
    let Json(body) = body.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{}; send {{\"justification\": \"…\"}}", e.body_text()),
        )
    })?;
    let uid = principal(&caller).await?.uid;
    match d.gate.justify(&id, uid, &body.justification).await {
        Ok(id) => Ok(Json(
            json!({ "request": id, "message": format!("justification recorded for request {id}") }),
        )),
        Err(e @ JustifyError::NotFound(_)) => {
            Err(ApiError::new(StatusCode::NOT_FOUND, e.to_string()))
        }
        Err(e @ JustifyError::NotPending(_)) => {
            Err(ApiError::new(StatusCode::CONFLICT, e.to_string()))
        }
        Err(e @ JustifyError::Empty) => Err(ApiError::new(StatusCode::BAD_REQUEST, e.to_string())),
        Err(e @ JustifyError::Store(_)) => Err(super::handlers::internal(e)),
    }
}
