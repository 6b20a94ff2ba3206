//! The `russh` handler of one client connection: the client's own authentication
//! (`none` or any public key is accepted: who it is comes from the kernel), the
//! upstream login once it is in, and each channel or global request. Channels are
//! handed to tasks of their own (`channel`, `forward`); requests answered inside a
//! callback (agent, X11, `-R` listens) are decided without a hold.

use super::{
    channel, forward, recording,
    server::{Conn, Handler},
    upstream,
};
use crate::{gate::ActionOutcome, policy::SshKind};
use russh::{
    Channel, ChannelId,
    server::{self, Auth, ChannelOpenHandle, Msg},
};
use serde_json::json;
use std::sync::{Arc, Mutex, PoisonError};

impl Handler {
    fn accept(&mut self, user: &str) -> Auth {
        self.login = Some(user.to_owned());
        Auth::Accept
    }

    /// Decides agent or X11 forwarding (`kind`) now and records it; an allowed one
    /// is noted on the connection, where the channels relay it from.
    async fn allow_forwarding(&self, kind: SshKind, subject: &str) -> bool {
        let outcome = self.decide_now(kind, subject);
        self.record_now(kind, subject, &outcome).await;
        let Some(conn) = self.conn.as_ref().filter(|_| outcome.allowed()) else {
            return false;
        };
        match kind {
            SshKind::Agent => conn.forwarding.allow_agent(),
            _ => conn.forwarding.allow_x11(),
        }
        true
    }

    /// Records an action decided at once (no task): agent, X11, remote forward
    /// listens (allowed ones too). The answer to the client waits until the record
    /// is durable; when it cannot be, the session ends.
    async fn record_now(&self, kind: SshKind, subject: &str, outcome: &ActionOutcome) {
        let login = self.login.as_deref().unwrap_or_default();
        let summary = format!("{kind}: {subject}");
        let details = json!({ "login": login, "subject": subject });
        let finished = recording::starting(kind.name(), summary, details);
        if !recording::record_synced(&self.session, outcome, finished).await
            && let Some(conn) = &self.conn
        {
            conn.not_recorded().await;
        }
    }

    /// Decides `kind` now, without a hold (a review is refused: these requests have
    /// no way to wait), for requests answered inside a callback.
    fn decide_now(&self, kind: SshKind, subject: &str) -> ActionOutcome {
        let login = self.login.as_deref().unwrap_or_default();
        let ask = super::actions::ask(&self.session, kind, login, subject.to_owned());
        match self.session.gate.rule(&ask) {
            crate::gate::Ruling::Allow { rule, reason } => ActionOutcome::Allowed {
                rule,
                reason,
                approval: None,
            },
            crate::gate::Ruling::Deny { rule, reason }
            | crate::gate::Ruling::Review { rule, reason, .. } => ActionOutcome::Denied {
                rule,
                request: None,
                by: None,
                reason,
            },
        }
    }
}

impl server::Handler for Handler {
    type Error = russh::Error;

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        Ok(self.accept(user))
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        _key: server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.accept(user))
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        _key: server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.accept(user))
    }

    /// Logs in upstream; a failure ends the session with the reason (and a record).
    async fn auth_succeeded(&mut self, session: &mut server::Session) -> Result<(), Self::Error> {
        let login = self.login.clone().unwrap_or_default();
        let remote = Arc::clone(&self.remote);
        let early = self.early.take();
        match upstream::connect(&self.session, &login, Arc::clone(&remote), early).await {
            Ok(up) => {
                let conn = Arc::new(Conn {
                    session: Arc::clone(&self.session),
                    upstream: up,
                    login,
                    masker: self.masker.clone(),
                    handle: session.handle(),
                    recordings: self.recordings.clone(),
                    closed: self.closed.clone(),
                    feeds: Arc::clone(&self.feeds),
                    remote_forwards: Mutex::default(),
                    tasks: self.tasks.clone(),
                    forwarding: super::agent::Allowed::default(),
                    failure: Arc::clone(&self.failure),
                });
                let _ = remote.set(Arc::downgrade(&conn));
                self.conn = Some(conn);
                Ok(())
            }
            Err(error) => {
                let why = error.to_string();
                tracing::warn!(error = %why, "Cannot log in to the SSH target");
                let outcome = ActionOutcome::Failed {
                    rule: None,
                    reason: why.clone(),
                };
                let mut finished = recording::starting(
                    "connect",
                    format!("log in to the target as {login}"),
                    json!({ "login": login }),
                );
                finished.error = Some(why.clone());
                // The disconnect below is this action's result: it waits for the record.
                let _ = recording::record_synced(&self.session, &outcome, finished).await;
                *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(why.clone());
                session.disconnect(
                    russh::Disconnect::ByApplication,
                    &format!("portcullis: cannot open the session on the target: {why}"),
                    "",
                )?;
                Ok(())
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut server::Session,
    ) -> Result<(), Self::Error> {
        let Some(conn) = &self.conn else {
            return Ok(());
        };
        reply.accept().await;
        self.tasks.spawn(channel::run(channel, Arc::clone(conn)));
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut server::Session,
    ) -> Result<(), Self::Error> {
        let Some(conn) = &self.conn else {
            return Ok(());
        };
        let to = forward::Destination {
            host: host.to_owned(),
            port,
            from_host: originator_address.to_owned(),
            from_port: originator_port,
        };
        self.tasks
            .spawn(forward::run(channel, reply, Arc::clone(conn), to));
        Ok(())
    }

    async fn channel_open_x11(
        &mut self,
        _channel: Channel<Msg>,
        _address: &str,
        _port: u32,
        _reply: ChannelOpenHandle,
        _session: &mut server::Session,
    ) -> Result<(), Self::Error> {
        // The target opens X11 channels, never the client: refused (reply dropped).
        Ok(())
    }

    /// Terminal settings need no decision: answered at once, in order, so the reply
    /// to the exec or shell that follows (sent later by the channel's task) is not
    /// taken for this one's.
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _cols: u32,
        _rows: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut server::Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        _value: &str,
        session: &mut server::Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    /// X11 forwarding: decided and recorded now; an allowed one is asked of the
    /// target when the channel starts (`agent`). The cookie is never recorded.
    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single: bool,
        _protocol: &str,
        _cookie: &str,
        _screen: u32,
        session: &mut server::Session,
    ) -> Result<(), Self::Error> {
        if self.allow_forwarding(SshKind::X11, "x11").await {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    /// Agent forwarding, as X11 above.
    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        _session: &mut server::Session,
    ) -> Result<bool, Self::Error> {
        Ok(self
            .allow_forwarding(SshKind::Agent, "agent forwarding")
            .await)
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut server::Session,
    ) -> Result<bool, Self::Error> {
        let subject = format!("remote {address}:{port}");
        let outcome = self.decide_now(SshKind::Forward, &subject);
        let Some(conn) = self.conn.clone().filter(|_| outcome.allowed()) else {
            self.record_now(SshKind::Forward, &subject, &outcome).await;
            return Ok(false);
        };
        // Listed before asking: the target may accept a connection before it answers.
        let listen = |port| (address.to_owned(), port);
        let forwards = || {
            conn.remote_forwards
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        };
        forwards().push(listen(*port));
        match conn.upstream.tcpip_forward(address, *port).await {
            Ok(bound) => {
                if *port == 0 {
                    *port = bound;
                    forwards().push(listen(bound));
                }
                self.record_now(SshKind::Forward, &subject, &outcome).await;
                Ok(true)
            }
            Err(e) => {
                forwards().retain(|l| *l != listen(*port));
                let failed = ActionOutcome::Failed {
                    rule: outcome.rule().map(str::to_owned),
                    reason: format!("the target refused to listen on {address}:{port}: {e}"),
                };
                self.record_now(SshKind::Forward, &subject, &failed).await;
                Ok(false)
            }
        }
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut server::Session,
    ) -> Result<bool, Self::Error> {
        let Some(conn) = self.conn.clone() else {
            return Ok(false);
        };
        conn.remote_forwards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(a, p)| !(a == address && *p == port));
        Ok(conn
            .upstream
            .cancel_tcpip_forward(address, port)
            .await
            .is_ok())
    }
}
