//! One intercepted connection, from accept to its record: attribute it, identify
//! the principal, find the target, ask the gate (and wait if it holds the action),
//! then serve it with the target's protocol.

use super::{Daemon, canonical};
use crate::{
    gate::{Action, Ask, HoldOutcome, Ruling},
    identity::{self, Principal},
    intercept::{ClientAddr, OrigDstAddr, from_endpoint},
    policy::Protocol,
    proto::{self, Metered, Traffic},
    record::{NewSession, Outcome, SessionEnd},
};
use portcullis_common::Origin;
use std::{net::SocketAddr, sync::atomic::Ordering, time::Duration};
use tokio::net::TcpStream;
use tracing::Instrument as _;

/// What is known about a connection before it is served.
struct Conn {
    client: ClientAddr,
    orig_dst: Option<OrigDstAddr>,
    principal: Option<Principal>,
    target: Option<String>,
}

impl Conn {
    /// Records a connection that ends before it is served (denied, refused).
    async fn record_refused(
        self,
        daemon: &Daemon,
        outcome: Outcome,
        rule: Option<String>,
        reason: String,
    ) {
        let new = NewSession {
            protocol: "tcp".into(),
            target: self.target,
            client_addr: self.client.to_string(),
            orig_dst: self.orig_dst.map(|d| d.to_string()),
            principal: self.principal,
            outcome,
            rule,
            reason: Some(reason),
        };
        // A final outcome records the session as already ended.
        match daemon.store.open_session(&new).await {
            Ok(id) => {
                let data = serde_json::json!({
                    "outcome": outcome.as_str(), "reason": new.reason, "rule": new.rule, "target": new.target,
                    "client": new.client_addr, "orig_dst": new.orig_dst, "principal": new.principal,
                });
                let actor = new.principal.as_ref().map(Principal::label);
                daemon
                    .gate
                    .audit("session_refused", id.as_str(), actor.as_deref(), data)
                    .await;
            }
            Err(error) => tracing::error!(%error, "Cannot record a refused connection"),
        }
    }
}

pub(super) async fn handle(daemon: &Daemon, stream: TcpStream, peer: SocketAddr) {
    let client = ClientAddr(canonical(peer));
    let Some(origin) = daemon.interceptor.take_origin(client) else {
        tracing::warn!(client.addr = %client, "Unattributed connection refused");
        refuse(&stream);
        let reason = "connection has no eBPF record (it was not redirected by Portcullis); refused";
        let conn = Conn {
            client,
            orig_dst: None,
            principal: None,
            target: None,
        };
        conn.record_refused(daemon, Outcome::Refused, None, reason.into())
            .await;
        return;
    };
    let orig_dst = OrigDstAddr(from_endpoint(&origin.dst));
    let principal = principal_of(&origin).await;
    let span = tracing::info_span!(
        "conn",
        client.addr = %client,
        orig_dst = %orig_dst,
        pid = principal.pid,
        user = principal.user.as_deref().unwrap_or("?"),
        target = tracing::field::Empty,
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
        let conn = Conn {
            client,
            orig_dst: Some(orig_dst),
            principal: Some(principal),
            target: None,
        };
        conn.record_refused(daemon, Outcome::Denied, None, reason)
            .await;
        return;
    };
    tracing::Span::current().record("target", target.name.as_str());
    let ask = Ask {
        principal: principal.clone(),
        target: target.name.clone(),
        protocol: target.protocol.to_string(),
        action: Action::Connect,
    };
    let conn = Conn {
        client,
        orig_dst: Some(orig_dst),
        principal: Some(principal),
        target: Some(target.name.clone()),
    };
    let (rule, reason) = match daemon.gate.rule(&ask) {
        Ruling::Allow { rule, reason } => (rule, reason),
        Ruling::Deny { rule, reason } => {
            tracing::info!(rule = rule.as_deref().unwrap_or("-"), %reason, "Denied");
            refuse(&stream);
            conn.record_refused(daemon, Outcome::Denied, rule, reason)
                .await;
            return;
        }
        Ruling::Review { rule, review, .. } => {
            // The client stays connected while held; tcp has no way to tell it more.
            let hold = match daemon.gate.hold(&ask, rule.clone(), review, None).await {
                Ok(h) => h,
                Err(error) => {
                    tracing::error!(%error, "Cannot record the approval request; refusing");
                    refuse(&stream);
                    let reason = "the approval request could not be recorded; refused".to_owned();
                    conn.record_refused(daemon, Outcome::Error, rule, reason)
                        .await;
                    return;
                }
            };
            match hold.wait(client_gone(&stream)).await {
                HoldOutcome::Approved { request, by } => {
                    (rule, format!("request {request} approved by {by}"))
                }
                other => {
                    refuse(&stream);
                    let outcome = if matches!(other, HoldOutcome::Abandoned { .. }) {
                        Outcome::Closed
                    } else {
                        Outcome::Denied
                    };
                    conn.record_refused(daemon, outcome, rule, other.message())
                        .await;
                    return;
                }
            }
        }
    };
    let new = NewSession {
        protocol: target.protocol.to_string(),
        target: conn.target,
        client_addr: client.to_string(),
        orig_dst: Some(orig_dst.to_string()),
        principal: conn.principal,
        outcome: Outcome::Open,
        rule,
        reason: Some(reason),
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
    let (outcome, reason, traffic) = match target.protocol {
        Protocol::Tcp => relay_tcp(daemon, stream, orig_dst).await,
    };
    daemon.active_sessions.fetch_sub(1, Ordering::Relaxed);
    daemon.gate.metrics().session_closed();
    daemon
        .gate
        .metrics()
        .bytes(&target.name, traffic.up, traffic.down);
    let end = SessionEnd {
        outcome,
        reason,
        bytes_up: traffic.up,
        bytes_down: traffic.down,
    };
    let data = serde_json::json!({ "outcome": end.outcome.as_str(), "reason": end.reason, "bytes_up": end.bytes_up, "bytes_down": end.bytes_down });
    daemon
        .gate
        .audit("session_closed", id.as_str(), None, data)
        .await;
    if let Err(error) = daemon.store.close_session(&id, &end).await {
        tracing::error!(%error, session = %id, "Cannot record the end of the session");
    }
    tracing::info!(session = %id, up = traffic.up, down = traffic.down, "Connection closed");
}

/// Completes when the client closes its end while its connection is held. Bytes it
/// sends early stay queued for the target (peeked, never read); they also hide the
/// close from a peek, so then the kernel's TCP state tells.
async fn client_gone(stream: &TcpStream) {
    let mut probe = [0u8; 1];
    loop {
        match stream.peek(&mut probe).await {
            Ok(0) | Err(_) => return,
            Ok(_) if peer_closed(stream) => return,
            // Data waits in the socket: look again at a gentle pace.
            Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Whether the peer has closed (we got its FIN or a reset), from `TCP_INFO`.
fn peer_closed(stream: &TcpStream) -> bool {
    use std::os::fd::AsRawFd as _;
    const TCP_CLOSE: u8 = 7;
    const TCP_CLOSE_WAIT: u8 = 8;
    // SAFETY: tcp_info is plain integers; all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = libc::socklen_t::try_from(size_of::<libc::tcp_info>()).unwrap_or(0);
    // SAFETY: a valid socket fd, and an out buffer whose length we pass.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &raw mut len,
        )
    };
    rc != 0 || matches!(info.tcpi_state, TCP_CLOSE | TCP_CLOSE_WAIT)
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
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}
