//! A local forward (`ssh -L`, `-W`, `ProxyJump` through the target): a `direct-tcpip`
//! channel is an action (`forward`, to `host:port`) decided before the channel is
//! confirmed; an allowed one is relayed to the same channel opened on the target,
//! and recorded with its destination and bytes each way.

use super::{recording, server::Conn};
use crate::{
    gate::{Gone, Waiting},
    policy::SshKind,
};
use russh::{Channel, ChannelMsg, server};
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
        drop(reply);
        recording::record(&conn.session, &outcome, finished).await;
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
            drop(reply);
            finished.error = Some(format!("the target could not open {subject}: {e}"));
            recording::record(&conn.session, &outcome, finished).await;
            return;
        }
    };
    reply.accept().await;
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
    let _ = client.close().await;
    if let Some(d) = finished.details.as_object_mut() {
        d.insert("bytes_in".into(), json!(sent));
        d.insert("bytes_out".into(), json!(received));
    }
    recording::record(&conn.session, &outcome, finished).await;
}
