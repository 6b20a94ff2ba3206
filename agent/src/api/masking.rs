//! Learned columns over the API: list them (anyone: names only, never values),
//! forget or pin one, and run `discover` (root or the admin group).

use super::{ApiError, Caller};
use crate::{daemon::Daemon, daemon::learning, mask::learned::LearnedColumn};
use axum::{
    Json,
    extract::{ConnectInfo, Query, State},
    http::StatusCode,
};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

type Answer = Result<Json<Value>, ApiError>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnedQuery {
    target: Option<String>,
}

/// `GET /v1/masking/learned?target=`: the learned columns, by target and name.
pub async fn learned(State(d): State<Arc<Daemon>>, Query(q): Query<LearnedQuery>) -> Answer {
    let list = d
        .store
        .learned_columns(q.target.as_deref())
        .await
        .map_err(|e| internal(&e))?;
    Ok(Json(json!(list)))
}

/// What `forget` and `pin` name: a target and `[schema.]table.column`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnBody {
    target: String,
    column: String,
    /// For `pin`: `false` unpins.
    #[serde(default = "yes")]
    pinned: bool,
}

fn yes() -> bool {
    true
}

/// `POST /v1/masking/forget`: the column is no longer masked as learned (on every
/// gateway within seconds); it is learned again if a recognizer fires on it.
pub async fn forget(
    State(d): State<Arc<Daemon>>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Json(body): Json<ColumnBody>,
) -> Answer {
    admin(&d, &caller, "forget a learned column")?;
    let found = find(&d, &body).await?;
    let key = (
        found.id.schema.as_str(),
        found.id.table.as_str(),
        found.id.column.as_str(),
    );
    let stored = d
        .store
        .forget_column(&body.target, key)
        .await
        .map_err(|e| internal(&e))?
        .ok_or_else(|| not_found(&body))?;
    if stored.pinned {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "{} is pinned and is never forgotten; unpin it first with \
                 `portcullis masking unpin {} {}`",
                stored.id.qualified(),
                body.target,
                stored.id.qualified()
            ),
        ));
    }
    d.postgres
        .learned
        .target(&body.target)
        .forget(&stored.id.table, &stored.id.column);
    let actor = actor(&caller);
    d.gate
        .audit(
            "column_forgotten",
            &learning::subject(&body.target, &stored.id),
            Some(&actor),
            learning::audit_data(&stored, "forgotten by an admin"),
        )
        .await;
    Ok(Json(json!({
        "message": format!(
            "Forgot {} of {}: it is no longer masked as learned (other gateways within \
             seconds). A recognizer that fires on it again teaches it again; to stop that, \
             set mask_learn = \"off\" on the rule.",
            stored.id.qualified(), body.target
        ),
        "column": stored,
    })))
}

/// `POST /v1/masking/pin`: a pinned column is never forgotten (`pinned: false` unpins).
pub async fn pin(
    State(d): State<Arc<Daemon>>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Json(body): Json<ColumnBody>,
) -> Answer {
    admin(&d, &caller, "pin a learned column")?;
    let found = find(&d, &body).await?;
    let key = (
        found.id.schema.as_str(),
        found.id.table.as_str(),
        found.id.column.as_str(),
    );
    let stored = d
        .store
        .pin_column(&body.target, key, body.pinned)
        .await
        .map_err(|e| internal(&e))?
        .ok_or_else(|| not_found(&body))?;
    learning::reload(&d).await;
    let (kind, verb) = if body.pinned {
        ("column_pinned", "Pinned")
    } else {
        ("column_unpinned", "Unpinned")
    };
    let actor = actor(&caller);
    d.gate
        .audit(
            kind,
            &learning::subject(&body.target, &stored.id),
            Some(&actor),
            learning::audit_data(&stored, verb),
        )
        .await;
    Ok(Json(json!({
        "message": format!("{verb} {} of {}.", stored.id.qualified(), body.target),
        "column": stored,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoverBody {
    target: String,
}

/// `POST /v1/masking/discover`: samples the target's tables now and answers with
/// what was learned, what was skipped and how long it took.
pub async fn discover(
    State(d): State<Arc<Daemon>>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Json(body): Json<DiscoverBody>,
) -> Answer {
    admin(&d, &caller, "run discover")?;
    let report = crate::daemon::discovering::discover(&d, &body.target, &actor(&caller))
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    Ok(Json(json!(report)))
}

/// The stored column `body` names: `schema.table.column`, or `table.column` when
/// one schema has it.
async fn find(d: &Daemon, body: &ColumnBody) -> Result<LearnedColumn, ApiError> {
    let parts: Vec<&str> = body.column.split('.').collect();
    let (schema, table, column) = match parts.as_slice() {
        [s, t, c] => (Some(*s), *t, *c),
        [t, c] => (None, *t, *c),
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "name the column as schema.table.column or table.column, not {:?}",
                    body.column
                ),
            ));
        }
    };
    let all = d
        .store
        .learned_columns(Some(&body.target))
        .await
        .map_err(|e| internal(&e))?;
    let mut matching = all.into_iter().filter(|c| {
        c.id.table == table && c.id.column == column && schema.is_none_or(|s| c.id.schema == s)
    });
    let first = matching.next().ok_or_else(|| not_found(body))?;
    if matching.next().is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "more than one schema has a learned {table}.{column}; name it as schema.table.column"
            ),
        ));
    }
    Ok(first)
}

fn admin(d: &Daemon, caller: &Caller, what: &str) -> Result<(), ApiError> {
    if caller.is_admin(d.config.admin_group.as_deref()) {
        return Ok(());
    }
    let group = d
        .config
        .admin_group
        .as_deref()
        .map_or(String::new(), |g| format!(" or a member of `{g}`"));
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "only root{group} may {what} (you are uid {}); ask an admin",
            caller.uid.map_or("?".into(), |u| u.to_string())
        ),
    ))
}

fn actor(caller: &Caller) -> String {
    caller
        .uid
        .map_or_else(|| "unknown caller".into(), |u| format!("uid {u}"))
}

fn not_found(body: &ColumnBody) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "{} has no learned column {}; list them with `portcullis masking learned`",
            body.target, body.column
        ),
    )
}

fn internal(error: &crate::record::StoreError) -> ApiError {
    tracing::error!(%error, "API: store error");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the store could not answer; see the daemon's log",
    )
}
