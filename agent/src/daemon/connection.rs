//! One intercepted connection, from accept to its record: attribute it, identify
//! the principal, find the target, ask the gate, serve it with the target's protocol.

use super::{Daemon, canonical};
use crate::{
    gate::Action,
    identity::{self, Principal},
    intercept::{ClientAddr, OrigDstAddr, from_endpoint},
    policy::{Protocol, Verdict},
    proto::{self, Metered, Traffic},
    record::{NewSession, Outcome, SessionEnd},
};
use portcullis_common::Origin;
use std::{net::SocketAddr, sync::atomic::Ordering};
use tokio::net::TcpStream;
use tracing::Instrument as _;

pub(super) async fn handle(daemon: &Daemon, stream: TcpStream, peer: SocketAddr) {
    let client = ClientAddr(canonical(peer));
    let Some(origin) = daemon.interceptor.take_origin(client) else {
        let reason = "connection has no eBPF record (it was not redirected by Portcullis); refused"
            .to_owned();
        tracing::warn!(client.addr = %client, "Unattributed connection refused");
        refuse(&stream);
        record_ended(
            daemon,
            client,
            None,
            None,
            None,
            Outcome::Refused,
            None,
            reason,
        )
        .await;
        return;
    };
    let orig_dst = OrigDstAddr(from_endpoint(&origin.dst));
    let principal = principal_of(&origin).await;
    let span = tracing::info_span!(
        "conn", client.addr = %client, orig_dst = %orig_dst, pid = principal.pid, user = principal.user.as_deref().unwrap_or("?"), target = tracing::field::Empty,
    );
    serve(daemon, stream, client, orig_dst, principal)
        .instrument(span)
        .await;
}

async fn serve(
    daemon: &Daemon,
    stream: TcpStream,
    client: ClientAddr,
    orig_dst: OrigDstAddr,
    principal: Principal,
) {
    let Some(target) = daemon.targets.lookup(orig_dst.0) else {
        refuse(&stream);
        let reason = format!("{orig_dst} is no longer a protected target; refused");
        record_ended(
            daemon,
            client,
            Some(orig_dst),
            None,
            Some(principal),
            Outcome::Denied,
            None,
            reason,
        )
        .await;
        return;
    };
    tracing::Span::current().record("target", target.name.as_str());
    let decision = daemon
        .gate
        .decide(&principal, &target.name, &Action::Connect);
    if decision.verdict == Verdict::Deny {
        tracing::info!(rule = decision.rule.as_deref().unwrap_or("-"), reason = %decision.reason, "Denied");
        refuse(&stream);
        record_ended(
            daemon,
            client,
            Some(orig_dst),
            Some(target.name.clone()),
            Some(principal),
            Outcome::Denied,
            decision.rule,
            decision.reason,
        )
        .await;
        return;
    }
    let new = NewSession {
        protocol: target.protocol.to_string(),
        target: Some(target.name.clone()),
        client_addr: client.to_string(),
        orig_dst: Some(orig_dst.to_string()),
        principal: Some(principal),
        outcome: Outcome::Open,
        rule: decision.rule,
        reason: Some(decision.reason),
    };
    let id = match daemon.store.open_session(&new).await {
        Ok(id) => id,
        Err(error) => {
            // No record, no access: the audit trail is part of the deal.
            tracing::error!(%error, "Cannot record the session; refusing it");
            refuse(&stream);
            return;
        }
    };
    daemon.active_sessions.fetch_add(1, Ordering::Relaxed);
    daemon.sessions_total.fetch_add(1, Ordering::Relaxed);
    tracing::info!(session = %id, "Session opened");
    let (outcome, reason, traffic) = match target.protocol {
        Protocol::Tcp => relay_tcp(daemon, stream, orig_dst).await,
    };
    daemon.active_sessions.fetch_sub(1, Ordering::Relaxed);
    let end = SessionEnd {
        outcome,
        reason,
        bytes_up: traffic.up,
        bytes_down: traffic.down,
    };
    if let Err(error) = daemon.store.close_session(&id, &end).await {
        tracing::error!(%error, session = %id, "Cannot record the end of the session");
    }
    tracing::info!(session = %id, up = traffic.up, down = traffic.down, "Connection closed");
}

async fn relay_tcp(
    daemon: &Daemon,
    stream: TcpStream,
    orig_dst: OrigDstAddr,
) -> (Outcome, Option<String>, Traffic) {
    let mut upstream = match proto::tcp::connect_upstream(orig_dst.0, daemon.config.mark).await {
        Ok(u) => u,
        Err(error) => {
            refuse(&stream);
            let reason = format!("cannot connect to {orig_dst}: {error}");
            return (Outcome::Error, Some(reason), Traffic::default());
        }
    };
    let _ = stream.set_nodelay(true);
    let mut client = Metered::new(stream);
    let (outcome, reason) = tokio::select! {
        r = proto::tcp::relay(&mut client, &mut upstream) => match r {
            Ok(()) => (Outcome::Closed, None),
            Err(e) => (Outcome::Closed, Some(format!("connection ended: {e}"))),
        },
        () = daemon.hard_stop.cancelled() => (Outcome::Closed, Some("ended by daemon shutdown".into())),
    };
    (outcome, reason, client.traffic())
}

/// Builds the principal from the kernel's record, enriched from procfs.
async fn principal_of(origin: &Origin) -> Principal {
    let comm_len = origin
        .comm
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(origin.comm.len());
    let comm =
        String::from_utf8_lossy(origin.comm.get(..comm_len).unwrap_or_default()).into_owned();
    let (pid, uid, gid) = (origin.pid, origin.uid, origin.gid);
    let fallback = comm.clone();
    tokio::task::spawn_blocking(move || identity::principal_for(pid, uid, gid, &comm))
        .await
        .unwrap_or_else(|_| Principal {
            pid,
            ppid: None,
            uid,
            gid,
            user: None,
            unix_groups: Vec::new(),
            exe: None,
            cmdline: None,
            comm: fallback,
            cgroup: None,
        })
}

/// Ends the client's connection with a reset, so its next read or write fails at once.
fn refuse(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(std::time::Duration::ZERO));
}

#[expect(
    clippy::too_many_arguments,
    reason = "one flat record of a refused connection"
)]
async fn record_ended(
    daemon: &Daemon,
    client: ClientAddr,
    orig_dst: Option<OrigDstAddr>,
    target: Option<String>,
    principal: Option<Principal>,
    outcome: Outcome,
    rule: Option<String>,
    reason: String,
) {
    let new = NewSession {
        protocol: "tcp".into(),
        target,
        client_addr: client.to_string(),
        orig_dst: orig_dst.map(|d| d.to_string()),
        principal,
        outcome,
        rule,
        reason: Some(reason),
    };
    // A final outcome records the session as already ended.
    if let Err(error) = daemon.store.open_session(&new).await {
        tracing::error!(%error, "Cannot record a refused connection");
    }
}
