//! One intercepted connection, from accept to its record: attribute it, identify
//! the principal, find the target, ask the gate (and wait if it holds the action),
//! then serve it with the target's protocol.

use super::{Daemon, canonical};
use crate::{
    gate::{Action, ActionOutcome, Ask, Gone, Waiting},
    identity::{self, Principal},
    intercept::{ClientAddr, OrigDstAddr, from_endpoint},
    policy::{Protocol, Target},
    proto,
    record::{NewSession, Outcome},
};
use portcullis_common::Origin;
use records::{close_session, open_session};
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio::net::TcpStream;
use tracing::Instrument as _;

mod records;

/// What is known about a connection before it is served.
struct Conn {
    client: ClientAddr,
    orig_dst: Option<OrigDstAddr>,
    principal: Option<Principal>,
    target: Option<String>,
    /// The target's protocol; connections refused before a target is known are
    /// recorded as `tcp`.
    protocol: Protocol,
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
            protocol: self.protocol.to_string(),
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
        proto::tcp::reset(&stream);
        let reason = "connection has no eBPF record (it was not redirected by Portcullis); refused";
        let conn = Conn {
            client,
            orig_dst: None,
            principal: None,
            target: None,
            protocol: Protocol::Tcp,
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
        proto::tcp::reset(&stream);
        let reason = format!("{orig_dst} is no longer a protected target; refused");
        let conn = Conn {
            client,
            orig_dst: Some(orig_dst),
            principal: Some(principal),
            target: None,
            protocol: Protocol::Tcp,
        };
        conn.record_refused(daemon, Outcome::Denied, None, reason)
            .await;
        return;
    };
    tracing::Span::current().record("target", target.name.as_str());
    match target.protocol {
        Protocol::Tcp => {
            serve_with(
                daemon,
                &proto::tcp::Tcp,
                stream,
                client,
                orig_dst,
                principal,
                &target,
            )
            .await;
        }
        Protocol::Ssh => {
            serve_with(
                daemon,
                &daemon.ssh,
                stream,
                client,
                orig_dst,
                principal,
                &target,
            )
            .await;
        }
        Protocol::Http | Protocol::Https => {
            serve_with(
                daemon,
                &daemon.http,
                stream,
                client,
                orig_dst,
                principal,
                &target,
            )
            .await;
        }
        Protocol::Postgres => {
            serve_with(
                daemon,
                &daemon.postgres,
                stream,
                client,
                orig_dst,
                principal,
                &target,
            )
            .await;
        }
    }
}

/// Opens, decides and serves one connection with protocol `proto`.
async fn serve_with<P: proto::Protocol>(
    daemon: &Daemon,
    proto: &P,
    stream: TcpStream,
    client: ClientAddr,
    orig_dst: OrigDstAddr,
    principal: Principal,
    target: &Arc<Target>,
) {
    let conn = Conn {
        client,
        orig_dst: Some(orig_dst),
        principal: Some(principal.clone()),
        target: Some(target.name.clone()),
        protocol: target.protocol,
    };
    let Some((opened, conn, principal)) =
        open(daemon, proto, stream, target, conn, principal).await
    else {
        return;
    };
    let ask = Ask {
        principal,
        target: target.name.clone(),
        protocol: target.protocol.to_string(),
        action: Action::Connect,
        justification: None,
    };
    let Some((opened, rule, reason)) = admit(daemon, proto, opened, conn, &ask).await else {
        return;
    };
    let new = NewSession {
        protocol: target.protocol.to_string(),
        target: Some(target.name.clone()),
        client_addr: client.to_string(),
        orig_dst: Some(orig_dst.to_string()),
        principal: Some(ask.principal),
        outcome: Outcome::Open,
        rule,
        reason: Some(reason),
    };
    let Some((opened, id)) = open_session(daemon, proto, opened, &new).await else {
        return;
    };
    let Some(principal) = new.principal else {
        return;
    };
    let stop = daemon.hard_stop.child_token();
    let registered = daemon.live.register(&id, stop.clone());
    let session = Arc::new(proto::Session {
        id: id.clone(),
        gate: Arc::clone(&daemon.gate),
        recorder: daemon.recorder.clone(),
        principal,
        target: Arc::clone(target),
        upstream: orig_dst.0,
        mark: daemon.config.mark,
        stop,
    });
    let served = proto.serve(opened, session).await;
    let killed = registered.finish();
    close_session(daemon, &id, target, served, killed).await;
}

/// The protocol's opening exchange, and the caller's linked identity; `None` when
/// the connection ended there (recorded when it was refused).
async fn open<P: proto::Protocol>(
    daemon: &Daemon,
    proto: &P,
    stream: TcpStream,
    target: &Target,
    mut conn: Conn,
    mut principal: Principal,
) -> Option<(P::Client, Conn, Principal)> {
    let opened = match proto.open(stream, target).await {
        Ok(Some(opened)) => opened,
        Ok(None) => return None,
        Err(reason) => {
            tracing::info!(%reason, "Connection failed before it could be decided");
            conn.record_refused(daemon, Outcome::Error, None, reason)
                .await;
            return None;
        }
    };
    match daemon.store.linked_identity(principal.uid).await {
        Ok(idp) => principal.idp = idp,
        Err(error) => {
            // Rules may refuse by the linked identity's groups: without it, fail closed,
            // in the protocol's own words.
            tracing::error!(%error, "Cannot read the caller's identity link; connection refused");
            let told = "the store did not answer (the caller's identity link), so the \
                        session could not be recorded; refused";
            proto.refuse(opened, told).await;
            conn.record_refused(daemon, Outcome::Refused, None, told.into())
                .await;
            return None;
        }
    }
    conn.principal = Some(principal.clone());
    Some((opened, conn, principal))
}

/// The gate's decision on the connection (a hold waits, watching the client): the
/// client with the deciding rule and the reason, or `None` when it was refused
/// (told in the protocol's words, and recorded).
async fn admit<P: proto::Protocol>(
    daemon: &Daemon,
    proto: &P,
    mut opened: P::Client,
    conn: Conn,
    ask: &Ask,
) -> Option<(P::Client, Option<String>, String)> {
    let mut waiting = Opening {
        proto,
        client: &mut opened,
    };
    let outcome = daemon.gate.decide(ask, None, &mut waiting).await;
    let rule = outcome.rule().map(str::to_owned);
    let (recorded, told) = match &outcome {
        ActionOutcome::Allowed {
            approval: None,
            reason,
            ..
        } => return Some((opened, rule, reason.clone())),
        ActionOutcome::Allowed { .. } => return Some((opened, rule, outcome.message())),
        ActionOutcome::Abandoned { .. } => (Outcome::Closed, outcome.message()),
        ActionOutcome::Failed { .. } => (
            Outcome::Error,
            "the approval request could not be recorded; refused".to_owned(),
        ),
        _ => (Outcome::Denied, outcome.message()),
    };
    tracing::info!(rule = rule.as_deref().unwrap_or("-"), reason = %told, "Denied");
    proto.refuse(opened, &told).await;
    conn.record_refused(daemon, recorded, rule, told).await;
    None
}

/// A connection's client while the connection itself is held.
struct Opening<'a, P: proto::Protocol> {
    proto: &'a P,
    client: &'a mut P::Client,
}

impl<P: proto::Protocol> Waiting for Opening<'_, P> {
    async fn held(&mut self, request: &str, hint: &str) {
        self.proto.held(self.client, request, hint).await;
    }

    async fn gone(&mut self) -> Gone {
        client_gone(P::socket(self.client)).await
    }
}

/// Completes when the client closes its end while its connection is held. Bytes it
/// sends early stay queued for the target (peeked, never read); they also hide the
/// close from a peek, so then the kernel's TCP state tells.
async fn client_gone(stream: &TcpStream) -> Gone {
    let mut probe = [0u8; 1];
    loop {
        match stream.peek(&mut probe).await {
            Ok(0) | Err(_) => return Gone::ClientLeft,
            Ok(_) if peer_closed(stream) => return Gone::ClientLeft,
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
            idp: None,
        })
}
