//! A session's records at the daemon's level: its row and `session_opened` audit
//! record before it is served, and how it ended (traffic, the digest of its events,
//! a kill's who and why) after.

use super::super::{Daemon, live::Killed};
use crate::{
    identity::Principal,
    policy::Target,
    proto,
    record::{NewSession, SessionEnd, SessionId},
};
use std::sync::atomic::Ordering;

/// Records the session's start (its row and the `session_opened` audit record);
/// `None` when the store cannot: no record, no access.
pub(super) async fn open_session<P: proto::Protocol>(
    daemon: &Daemon,
    proto: &P,
    opened: P::Client,
    new: &NewSession,
) -> Option<(P::Client, SessionId)> {
    let id = match daemon.store.open_session(new).await {
        Ok(id) => id,
        Err(error) => {
            tracing::error!(%error, "Cannot record the session; refusing it");
            proto
                .refuse(opened, "the session could not be recorded; refused")
                .await;
            return None;
        }
    };
    daemon.active_sessions.fetch_add(1, Ordering::Relaxed);
    daemon.sessions_total.fetch_add(1, Ordering::Relaxed);
    daemon.gate.metrics().session_opened();
    tracing::info!(session = %id, "Session opened");
    let data = serde_json::json!({
        "target": new.target, "protocol": new.protocol, "client": new.client_addr, "orig_dst": new.orig_dst,
        "principal": new.principal, "rule": new.rule, "reason": new.reason,
    });
    let actor = new.principal.as_ref().map(Principal::label);
    daemon
        .gate
        .audit("session_opened", id.as_str(), actor.as_deref(), data)
        .await;
    Some((opened, id))
}

/// Records how the session ended: its traffic, the `session_closed` audit record
/// (with the digest of its events) and its row's end.
pub(super) async fn close_session(
    daemon: &Daemon,
    id: &SessionId,
    target: &Target,
    served: proto::Served,
    killed: Option<Killed>,
) {
    daemon.active_sessions.fetch_sub(1, Ordering::Relaxed);
    daemon.gate.metrics().session_closed();
    let traffic = served.traffic;
    daemon
        .gate
        .metrics()
        .bytes(&target.name, traffic.up, traffic.down);
    let end = SessionEnd {
        outcome: served.outcome,
        // A kill's who and why, rather than the shutdown words the protocol used.
        reason: killed.map(|k| k.describe()).or(served.reason),
        bytes_up: traffic.up,
        bytes_down: traffic.down,
    };
    let data = serde_json::json!({
        "outcome": end.outcome.as_str(), "reason": end.reason, "bytes_up": end.bytes_up,
        "bytes_down": end.bytes_down, "events": served.events,
    });
    daemon
        .gate
        .audit("session_closed", id.as_str(), None, data)
        .await;
    if let Err(error) = daemon.store.close_session(id, &end).await {
        tracing::error!(%error, session = %id, "Cannot record the end of the session");
    }
    tracing::info!(session = %id, up = traffic.up, down = traffic.down, "Connection closed");
}
