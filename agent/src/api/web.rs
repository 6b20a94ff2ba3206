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
use futures_util::StreamExt as _;
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

/// `GET /v1/login`: links the caller's uid to an identity-provider identity by the
/// device authorization grant (RFC 8628). Answers in JSON lines: first what to open
/// and the code to type, then (once the person signed in there) the linked identity
/// or why not. Leaving early ends the attempt.
pub async fn login(
    State(d): State<Arc<Daemon>>,
    ConnectInfo(caller): ConnectInfo<Caller>,
) -> Result<axum::response::Response, ApiError> {
    let Some((web, oidc)) = d
        .config
        .web
        .as_ref()
        .and_then(|w| Some((w, w.oidc.clone()?)))
    else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no identity provider is configured; set [web.oidc] in the daemon's config",
        ));
    };
    let principal = principal(&caller).await?;
    let ttl = oidc.link_ttl;
    let client = crate::web::Oidc::new(oidc, &web.public_url)
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()))?;
    let details = client
        .device_start()
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()))?;
    let first = json!({
        "verification_uri": details.verification_uri().as_str(),
        "verification_uri_complete": details.verification_uri_complete().map(|u| u.secret().clone()),
        "user_code": details.user_code().secret(),
        "expires_in_seconds": details.expires_in().as_secs(),
    });
    let second = async move {
        let done = match client.device_finish(&details).await {
            Ok(identity) => link_identity(&d, &principal, &identity, ttl).await,
            Err(e) => json!({ "linked": false, "error": e.to_string() }),
        };
        line(&done)
    };
    let lines = futures_util::stream::once(async move { line(&first) })
        .chain(futures_util::stream::once(second))
        .map(Ok::<_, std::convert::Infallible>);
    axum::response::Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(axum::body::Body::from_stream(lines))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

fn line(v: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec(v).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Records the link of `principal`'s uid to `identity` for `ttl`, in the store and
/// the audit chain.
async fn link_identity(
    d: &Daemon,
    principal: &crate::identity::Principal,
    identity: &Approver,
    ttl: std::time::Duration,
) -> Value {
    let Approver::Idp {
        issuer,
        subject,
        email,
        groups,
    } = identity
    else {
        return json!({ "linked": false, "error": "not an identity-provider identity" });
    };
    let until =
        crate::record::now_ms().saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
    let linked = crate::identity::LinkedIdentity {
        issuer: issuer.clone(),
        subject: subject.clone(),
        email: email.clone(),
        groups: groups.clone(),
        expires_at: Some(until),
    };
    let stored = d
        .store
        .link_identity_until(principal.uid, principal.user.as_deref(), &linked)
        .await;
    if let Err(e) = stored {
        tracing::error!(error = %e, "Cannot link an identity");
        return json!({ "linked": false, "error": "the store failed; see the daemon's log" });
    }
    d.gate
        .audit(
            "identity_linked",
            &principal.label(),
            Some(&identity.label()),
            json!({ "uid": principal.uid, "identity": identity, "until_ms": until }),
        )
        .await;
    json!({ "linked": true, "uid": principal.uid, "identity": identity.label(), "until_ms": until })
}

/// `POST /v1/logout`: ends the links of the caller's uid.
pub async fn logout(
    State(d): State<Arc<Daemon>>,
    ConnectInfo(caller): ConnectInfo<Caller>,
) -> Answer {
    let principal = principal(&caller).await?;
    let ended = d
        .store
        .unlink_identities(principal.uid)
        .await
        .map_err(super::handlers::internal)?;
    d.gate
        .audit(
            "identity_unlinked",
            &principal.label(),
            Some(&principal.label()),
            json!({ "uid": principal.uid, "links": ended }),
        )
        .await;
    Ok(Json(
        json!({ "unlinked": ended, "message": format!("{ended} identity link(s) of uid {} ended", principal.uid) }),
    ))
}
