//! Agent forwarding (`ssh -A`) and X11 forwarding (`ssh -X`), relayed when a rule
//! allows them (`ssh = ["agent"]`, `ssh = ["x11"]`; no rule: refused).
//!
//! The client's request on a session channel (`auth-agent-req@openssh.com`,
//! `x11-req`) is the action: decided through the gate when it arrives (without a
//! hold: the request has no way to wait) and recorded, allowed or not. An allowed
//! request is made again on the target's channel when that channel starts, and the
//! channels the target then opens back (`auth-agent@openssh.com`, `x11`) are relayed
//! to the client, each recorded with its bytes; the target's channels of a kind the
//! client was not allowed are refused. X11's cookie is the client's (OpenSSH sends a
//! fake one and swaps in the real one itself): passed on, never recorded.

use super::{forward, recording, server::Conn};
use crate::gate::ActionOutcome;
use russh::{Channel, ChannelMsg, client};
use serde_json::json;
use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

/// Agent and X11 channels relayed at once per connection; the target's further
/// opens are refused until one closes.
const MAX_CHANNELS: usize = 16;

/// What the policy allowed this connection, and the channels relayed now.
#[derive(Default)]
pub struct Allowed {
    agent: AtomicBool,
    x11: AtomicBool,
    open: AtomicUsize,
}

impl Allowed {
    pub fn allow_agent(&self) {
        self.agent.store(true, Ordering::Relaxed);
    }

    pub fn allow_x11(&self) {
        self.x11.store(true, Ordering::Relaxed);
    }

    #[must_use]
    pub fn agent(&self) -> bool {
        self.agent.load(Ordering::Relaxed)
    }

    #[must_use]
    pub fn x11(&self) -> bool {
        self.x11.load(Ordering::Relaxed)
    }

    /// Counts a channel in, unless [`MAX_CHANNELS`] are open.
    fn enter(&self) -> bool {
        self.open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < MAX_CHANNELS).then_some(n + 1)
            })
            .is_ok()
    }

    fn leave(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An `x11-req` as the client sent it.
#[derive(Debug, Clone)]
struct X11Request {
    single: bool,
    protocol: String,
    cookie: String,
    screen: u32,
}

/// The forwarding requests a session channel received before it started.
#[derive(Debug, Default)]
pub struct Requested {
    agent: bool,
    x11: Option<X11Request>,
}

impl Requested {
    /// Notes `msg` if it is a forwarding request (others are ignored).
    pub fn note(&mut self, msg: &ChannelMsg) {
        match msg {
            ChannelMsg::AgentForward { .. } => self.agent = true,
            ChannelMsg::RequestX11 {
                single_connection,
                x11_authentication_protocol,
                x11_authentication_cookie,
                x11_screen_number,
                ..
            } => {
                self.x11 = Some(X11Request {
                    single: *single_connection,
                    protocol: x11_authentication_protocol.clone(),
                    cookie: x11_authentication_cookie.clone(),
                    screen: *x11_screen_number,
                });
            }
            _ => {}
        }
    }
}

/// Asks the target's channel `up`, before it starts, for the forwarding the client
/// asked for on its channel and the policy allowed.
pub async fn request_upstream(
    up: &Channel<client::Msg>,
    conn: &Conn,
    requested: &Requested,
) -> Result<(), String> {
    if requested.agent && conn.forwarding.agent() {
        up.agent_forward(false)
            .await
            .map_err(|e| format!("cannot ask the target for agent forwarding: {e}"))?;
    }
    if let Some(x) = requested.x11.as_ref().filter(|_| conn.forwarding.x11()) {
        up.request_x11(
            false,
            x.single,
            x.protocol.as_str(),
            x.cookie.as_str(),
            x.screen,
        )
        .await
        .map_err(|e| format!("cannot ask the target for X11 forwarding: {e}"))?;
    }
    Ok(())
}

/// Which back channel the target opened.
pub enum Back {
    Agent,
    X11 { from_host: String, from_port: u32 },
}

impl Back {
    fn kind(&self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::X11 { .. } => "x11",
        }
    }

    /// Whether the client was allowed this kind of forwarding.
    #[must_use]
    pub fn allowed(&self, conn: &Conn) -> bool {
        match self {
            Self::Agent => conn.forwarding.agent(),
            Self::X11 { .. } => conn.forwarding.x11(),
        }
    }
}

/// Whether a back channel of this kind may be accepted now (allowed, and fewer
/// than [`MAX_CHANNELS`] open); if so it is counted until [`relay`] ends.
#[must_use]
pub fn admit(conn: &Conn, back: &Back) -> bool {
    if !back.allowed(conn) {
        tracing::warn!(
            kind = back.kind(),
            "Refused a channel the target opened for forwarding the client was not allowed"
        );
        return false;
    }
    if !conn.forwarding.enter() {
        tracing::warn!(
            kind = back.kind(),
            "Refused a forwarding channel: too many open"
        );
        return false;
    }
    true
}

/// Relays one channel the target opened (admitted by [`admit`]) to the same kind of
/// channel opened on the client, and records it with its bytes each way.
pub async fn relay(mut up: Channel<client::Msg>, conn: Arc<Conn>, back: Back) {
    let kind = back.kind();
    let (summary, details) = match &back {
        Back::Agent => (
            "agent: a forwarded agent connection".to_owned(),
            json!({ "login": conn.login }),
        ),
        Back::X11 {
            from_host,
            from_port,
        } => (
            format!("x11: a forwarded X11 connection from {from_host}:{from_port}"),
            json!({ "login": conn.login, "from_host": from_host, "from_port": from_port }),
        ),
    };
    let mut finished = recording::starting(kind, summary, details);
    // The forwarding was decided (and recorded) when the client asked for it.
    let outcome = ActionOutcome::Allowed {
        rule: None,
        reason: format!("a channel of allowed {kind} forwarding"),
        approval: None,
    };
    let opened = match &back {
        Back::Agent => conn.handle.channel_open_agent().await,
        Back::X11 {
            from_host,
            from_port,
        } => {
            conn.handle
                .channel_open_x11(from_host.as_str(), *from_port)
                .await
        }
    };
    match opened {
        Ok(mut client) => {
            let (sent, received) = forward::pipe(&mut client, &mut up, &conn).await;
            if let Some(d) = finished.details.as_object_mut() {
                d.insert("bytes_in".into(), json!(sent));
                d.insert("bytes_out".into(), json!(received));
            }
            conn.forwarding.leave();
            forward::close_recorded(&client, &conn, &outcome, finished).await;
        }
        Err(e) => {
            let _ = up.close().await;
            finished.error = Some(format!("the client refused the {kind} channel: {e}"));
            conn.forwarding.leave();
            recording::record(&conn.session, &outcome, finished).await;
        }
    }
}
