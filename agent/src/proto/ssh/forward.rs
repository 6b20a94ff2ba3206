//! A local forward (`ssh -L`, `-W`, `ProxyJump` through the target): a `direct-tcpip`
//! channel is an action (`forward`, to `host:port`) decided before the channel is
//! confirmed; an allowed one is relayed to the same channel opened on the target,
//! and recorded with its destination and bytes each way. The client sees the
//! channel's close (or refusal) only once that record is durable.

use super::{
    recording::{self, Finished},
    server::Conn,
};
use crate::{
    gate::{ActionOutcome, Gone, Waiting},
    policy::SshKind,
};
use russh::{Channel, ChannelMsg, client, server};
use serde_json::json;
use std::sync::Arc;

/// Where the client asks to connect, and from where it says it comes.
pub struct Destination {
    pub host: String,
    pub port: u32,
    pub from_host: String,
    pub from_port: u32,
}

/// A forward has no way to tell its client it waits: it only waits.
struct Silent;

impl Waiting for Silent {
    async fn held(&mut self, _request: &str, _hint: &str) {}

    async fn gone(&mut self) -> Gone {
        std::future::pending().await
    }
}

/// Decides, opens and relays one forwarded connection.
pub async fn run(
    mut client: Channel<server::Msg>,
    reply: server::ChannelOpenHandle,
    conn: Arc<Conn>,
    to: Destination,
) {
    let subject = format!("{}:{}", to.host, to.port);
    let ask = super::actions::ask(
        &conn.session,
        SshKind::Forward,
        &conn.login,
        subject.clone(),
    );
    let outcome = conn
        .session
        .gate
        .decide(&ask, Some(&conn.session.id), &mut Silent)
        .await;
    let details = json!({ "login": conn.login, "host": to.host, "port": to.port });
    let mut finished = recording::starting("forward", format!("forward: {subject}"), details);
    if !outcome.allowed() {
        if !recording::record_synced(&conn.session, &outcome, finished).await {
            conn.not_recorded().await;
        }
        drop(reply);
        return;
    }
    let mut up = match conn
        .upstream
        .channel_open_direct_tcpip(
            to.host.as_str(),
            to.port,
            to.from_host.as_str(),
            to.from_port,
        )
        .await
    {
        Ok(up) => up,
        Err(e) => {
            finished.error = Some(format!("the target could not open {subject}: {e}"));
            if !recording::record_synced(&conn.session, &outcome, finished).await {
                conn.not_recorded().await;
            }
            drop(reply);
            return;
        }
    };
    reply.accept().await;
    let (sent, received) = pipe(&mut client, &mut up, &conn).await;
    if let Some(d) = finished.details.as_object_mut() {
        d.insert("bytes_in".into(), json!(sent));
        d.insert("bytes_out".into(), json!(received));
    }
    close_recorded(&client, &conn, &outcome, finished).await;
}

/// Records a relayed channel and closes the client's side once the record is
/// durable (else ends the session: the close is its result).
pub(super) async fn close_recorded(
    client: &Channel<server::Msg>,
    conn: &Conn,
    outcome: &ActionOutcome,
    finished: Finished,
) {
    if recording::record_synced(&conn.session, outcome, finished).await {
        let _ = client.close().await;
    } else {
        conn.not_recorded().await;
    }
}

/// Relays one connection the target accepted on a port the client had it listen on
/// (`ssh -R`) to the client, recorded with where it came from and bytes each way.
pub async fn remote(mut up: Channel<client::Msg>, conn: Arc<Conn>, to: Destination) {
    let subject = format!(
        "remote {}:{} from {}:{}",
        to.host, to.port, to.from_host, to.from_port
    );
    let details = json!({
        "login": conn.login, "remote": true, "host": to.host, "port": to.port,
        "from_host": to.from_host, "from_port": to.from_port,
    });
    let mut finished = recording::starting("forward", format!("forward: {subject}"), details);
    // The listen was decided when the client asked for it.
    let outcome = ActionOutcome::Allowed {
        rule: None,
        reason: "a connection to an allowed remote forward".into(),
        approval: None,
    };
    let opened = conn
        .handle
        .channel_open_forwarded_tcpip(
            to.host.as_str(),
            to.port,
            to.from_host.as_str(),
            to.from_port,
        )
        .await;
    let mut client = match opened {
        Ok(c) => c,
        Err(e) => {
            let _ = up.close().await;
            finished.error = Some(format!("the client refused the forwarded connection: {e}"));
            recording::record(&conn.session, &outcome, finished).await;
            return;
        }
    };
    let (sent, received) = pipe(&mut client, &mut up, &conn).await;
    // As for -L: `bytes_in` is what the client's side sent.
    if let Some(d) = finished.details.as_object_mut() {
        d.insert("bytes_in".into(), json!(sent));
        d.insert("bytes_out".into(), json!(received));
    }
    close_recorded(&client, &conn, &outcome, finished).await;
}

/// Relays a client channel and a target channel until either closes (the client's
/// side is left open, for [`close_recorded`]): bytes the client sent, and bytes the
/// target sent.
pub(super) async fn pipe(
    client: &mut Channel<server::Msg>,
    up: &mut Channel<client::Msg>,
    conn: &Conn,
) -> (u64, u64) {
    let (mut sent, mut received) = (0u64, 0u64);
    loop {
        tokio::select! {
            msg = up.wait() => match msg {
                Some(ChannelMsg::Data { data }) => {
                    received += data.len() as u64;
                    if client.data_bytes(data).await.is_err() {
                        break;
                    }
                }
                Some(ChannelMsg::Eof) => {
                    let _ = client.eof().await;
                }
                Some(ChannelMsg::Close) | None => break,
                Some(_) => {}
            },
            msg = client.wait() => match msg {
                Some(ChannelMsg::Data { data }) => {
                    sent += data.len() as u64;
                    if up.data_bytes(data).await.is_err() {
                        break;
                    }
                }
                Some(ChannelMsg::Eof) => {
                    let _ = up.eof().await;
                }
                // A client that closed takes no more data: done.
                Some(ChannelMsg::Close) | None => {
                    let _ = up.close().await;
                    break;
                }
                Some(_) => {}
            },
            () = conn.closed.cancelled() => {
                let _ = up.close().await;
                break;
            }
        }
    }
    (sent, received)
}
