//! API request handlers.

use super::{ApiError, Caller};
use crate::{
    daemon::Daemon,
    record::{SessionFilter, SessionRecord, StoreError},
};
use axum::{
    Json,
    extract::{ConnectInfo, Path, Query, State},
    http::{Method, StatusCode, Uri},
};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::{Arc, atomic::Ordering};

type Answer = Result<Json<Value>, ApiError>;

pub async fn status(State(d): State<Arc<Daemon>>) -> Answer {
    let policy = d.gate.policy();
    let loaded = *d
        .policy_loaded
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let loaded = loaded
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_secs());
    let listen: Vec<_> = [Some(d.config.listen4), d.config.listen6]
        .into_iter()
        .flatten()
        .collect();
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "host": d.host,
        "pid": std::process::id(),
        "uptime_seconds": d.started.elapsed().as_secs(),
        "store": d.store.backend().to_string(),
        "api_socket": d.config.api_socket,
        "listen": listen,
        "intercept": {
            "cgroup": d.interceptor.cgroup(),
            "pin_dir": d.config.bpf_pin_dir,
            "adopted_programs": d.interceptor.adopted(),
            "protected_addresses": d.targets.len(),
        },
        "policy": {
            "dir": d.config.policies,
            "loaded_at": loaded,
            "targets": policy.targets(),
            "rules": policy.rules_len(),
        },
        "sessions": {
            "active": d.active_sessions.load(Ordering::Relaxed),
            "total": d.sessions_total.load(Ordering::Relaxed),
        },
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<u32>,
}

pub async fn sessions(
    State(d): State<Arc<Daemon>>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Query(q): Query<ListQuery>,
) -> Answer {
    let filter = SessionFilter {
        uid: visible_uid(&d, &caller)?,
        limit: q.limit.unwrap_or(100).clamp(1, 10_000),
    };
    let list = d.store.sessions(&filter).await.map_err(internal)?;
    Ok(Json(json!(list)))
}

pub async fn session(
    State(d): State<Arc<Daemon>>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Path(id): Path<String>,
) -> Answer {
    let record = visible_session(&d, &caller, &id).await?;
    Ok(Json(json!(record)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only events with a greater `seq` (0, the default, for the first page).
    after: Option<i64>,
    limit: Option<u32>,
}

/// A session's recorded events in order, a page at a time, to whoever may see the
/// session.
pub async fn events(
    State(d): State<Arc<Daemon>>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
) -> Answer {
    let record = visible_session(&d, &caller, &id).await?;
    let list = d
        .store
        .events(
            &record.id,
            q.after.unwrap_or(0),
            q.limit.unwrap_or(1000).clamp(1, 10_000),
        )
        .await
        .map_err(internal)?;
    Ok(Json(json!(list)))
}

/// The session `id` (or unique prefix), if `caller` may see it: admins see every
/// session, others their own; a session they may not see is "not found" to them.
pub(super) async fn visible_session(
    d: &Daemon,
    caller: &Caller,
    id: &str,
) -> Result<SessionRecord, ApiError> {
    let only_uid = visible_uid(d, caller)?;
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no session {id}; list them with `portcullis sessions`"),
        )
    };
    let record = d
        .store
        .session(id)
        .await
        .map_err(|e| match e {
            StoreError::InvalidId { .. } | StoreError::Ambiguous { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, e.to_string())
            }
            other => internal(other),
        })?
        .ok_or_else(not_found)?;
    let owner = record.principal.as_ref().map(|p| p.uid);
    if only_uid.is_some() && owner != only_uid {
        return Err(not_found());
    }
    Ok(record)
}

pub async fn reload(
    State(d): State<Arc<Daemon>>,
    ConnectInfo(caller): ConnectInfo<Caller>,
) -> Answer {
    if !caller.is_admin(d.config.admin_group.as_deref()) {
        let group = d
            .config
            .admin_group
            .as_deref()
            .map_or(String::new(), |g| format!(" or a member of `{g}`"));
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "only root{group} may reload the policy (you are uid {}); ask an admin",
                caller.uid.map_or("?".into(), |u| u.to_string())
            ),
        ));
    }
    let actor = format!("uid {}", caller.uid.unwrap_or(u32::MAX));
    let dir = d.config.policies.display().to_string();
    match d.reload_policy().await {
        Ok(policy) => {
            let data = json!({ "targets": policy.targets().len(), "rules": policy.rules_len() });
            d.gate
                .audit("policy_reloaded", &dir, Some(&actor), data)
                .await;
            Ok(Json(
                json!({ "reloaded": true, "targets": policy.targets().len(), "rules": policy.rules_len() }),
            ))
        }
        Err(e) => {
            d.gate
                .audit(
                    "policy_refused",
                    &dir,
                    Some(&actor),
                    json!({ "error": e.to_string() }),
                )
                .await;
            Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("{e}; the policy in force is unchanged. Fix the file and reload again"),
            ))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    since_ms: Option<i64>,
    after_seq: Option<i64>,
    limit: Option<u32>,
}

/// Audit records in chain order, a page at a time (admins only): for export.
pub async fn audit(
    State(d): State<Arc<Daemon>>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Query(q): Query<AuditQuery>,
) -> Answer {
    require_admin(&d, &caller, "export the audit log")?;
    let records = d
        .store
        .audit_since(
            q.since_ms,
            q.after_seq.unwrap_or(0),
            q.limit.unwrap_or(1000).clamp(1, 10_000),
        )
        .await
        .map_err(internal)?;
    Ok(Json(json!(records)))
}

/// Walks the hash chain and names the first record that does not fit (admins only).
pub async fn audit_verify(
    State(d): State<Arc<Daemon>>,
    ConnectInfo(caller): ConnectInfo<Caller>,
) -> Answer {
    require_admin(&d, &caller, "verify the audit log")?;
    let report = d.store.verify_audit().await.map_err(internal)?;
    Ok(Json(
        json!({ "intact": report.is_intact(), "summary": report.to_string(), "report": report }),
    ))
}

fn require_admin(d: &Daemon, caller: &Caller, what: &str) -> Result<(), ApiError> {
    if caller.is_admin(d.config.admin_group.as_deref()) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        format!("only root or the admin group may {what}; ask an admin"),
    ))
}

pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route {method} {uri}; see `portcullis --help` for what the API offers"),
    )
}

/// `None` for admins (they see everything), else the caller's own uid.
fn visible_uid(d: &Daemon, caller: &Caller) -> Result<Option<u32>, ApiError> {
    if caller.is_admin(d.config.admin_group.as_deref()) {
        return Ok(None);
    }
    caller.uid.map(Some).ok_or_else(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "cannot tell who you are (no peer credentials)",
        )
    })
}

pub(super) fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "API request failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("{e}; see the daemon's log"),
    )
}

pub async fn metrics(
    State(d): State<Arc<Daemon>>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        d.gate.metrics().encode(),
    )
}
