//! The client's side of an SSH session: a `russh` server on the intercepted
//! connection. Authentication is the client's own (`none` or any public key is
//! accepted: who it is comes from the kernel) and its user name is the login the
//! actions are decided for; once it is in, the proxy logs in upstream. Each channel
//! is served by a task of its own (`channel`, `forward`): no handler callback ever
//! waits for the gate, so one held channel never stalls the others.

use super::{AUTH_TIMEOUT, Ssh, channel, forward, recording, upstream};
use crate::{
    gate::ActionOutcome,
    mask::{MaskKey, Masker},
    policy::{SshKind, Target},
    proto::{Metered, Session},
};
use russh::{
    Channel, ChannelId, MethodKind, MethodSet,
    server::{self, Auth, ChannelOpenHandle, Msg},
};
use serde_json::json;
use std::{
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};
use tokio::net::TcpStream;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// What every channel of one SSH connection shares.
pub struct Conn {
    pub session: Arc<Session>,
    pub upstream: upstream::Upstream,
    /// The user name the client logged in as.
    pub login: String,
    pub masker: Option<Arc<Masker>>,
    pub handle: server::Handle,
    /// Where shell recordings go.
    pub recordings: PathBuf,
    /// Cancelled when the client's connection has ended: channel tasks stop waiting.
    pub closed: CancellationToken,
    /// Live shell output, for `sessions watch`.
    pub feeds: Arc<super::watch::Feeds>,
    /// The `-R` listens the policy allowed (address, port on the target).
    pub remote_forwards: Mutex<Vec<(String, u32)>>,
    /// The session's channel tasks, so its record waits for theirs.
    pub tasks: TaskTracker,
}

impl Conn {
    /// Whether the client asked for (and was allowed) a `-R` listen on this address.
    #[must_use]
    pub fn forwards_to(&self, address: &str, port: u32) -> bool {
        self.remote_forwards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|(a, p)| a == address && *p == port)
    }

    /// `text` with the session's masking applied, for a record or a client message.
    #[must_use]
    pub fn mask(&self, text: &str) -> String {
        match &self.masker {
            Some(m) => m.mask_str(text).into_owned(),
            None => text.to_owned(),
        }
    }
}

/// The `russh` handler of one client connection.
struct Handler {
    session: Arc<Session>,
    masker: Option<Arc<Masker>>,
    recordings: PathBuf,
    feeds: Arc<super::watch::Feeds>,
    login: Option<String>,
    conn: Option<Arc<Conn>>,
    /// Why the session failed, for its record.
    failure: Arc<Mutex<Option<String>>>,
    /// The channel tasks, so the session's record waits for theirs.
    tasks: TaskTracker,
    closed: CancellationToken,
}

/// How long channel tasks get to record their events once the client has gone.
const CHANNELS_GRACE: Duration = Duration::from_secs(5);

/// The server configuration for a client of `target`.
fn config(ssh: &Ssh, target: &Target) -> Result<Arc<server::Config>, String> {
    let (keys, certificates) = ssh.identity.host_keys(target).map_err(|e| e.to_string())?;
    let methods = [MethodKind::None, MethodKind::PublicKey];
    Ok(Arc::new(server::Config {
        methods: MethodSet::from(&methods[..]),
        auth_rejection_time: Duration::ZERO,
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys,
        certificates,
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_mins(1)),
        nodelay: true,
        server_id: russh::SshId::Standard("SSH-2.0-Portcullis".into()),
        ..server::Config::default()
    }))
}

/// Serves one allowed SSH session until the client or the target ends it.
pub async fn run(
    ssh: &Ssh,
    stream: Metered<TcpStream>,
    session: Arc<Session>,
) -> Result<(), String> {
    let config = config(ssh, &session.target)?;
    let masker = session_masker(&session)?;
    let failure = Arc::default();
    let tasks = TaskTracker::new();
    let closed = CancellationToken::new();
    let handler = Handler {
        tasks: tasks.clone(),
        closed: closed.clone(),
        session: Arc::clone(&session),
        masker,
        recordings: ssh.state_dir.join("recordings"),
        feeds: Arc::clone(&ssh.feeds),
        login: None,
        conn: None,
        failure: Arc::clone(&failure),
    };
    let running =
        match tokio::time::timeout(AUTH_TIMEOUT, server::run_stream(config, stream, handler)).await
        {
            Ok(Ok(running)) => running,
            Ok(Err(e)) => return Err(format!("SSH handshake with the client failed: {e}")),
            Err(_) => return Err("the client did not start SSH in time".into()),
        };
    let handle = running.handle();
    let result = tokio::select! {
        r = running => ended(r),
        () = session.stop.cancelled() => {
            let _ = handle
                .disconnect(russh::Disconnect::ByApplication, "portcullis ended the session (shutdown or an administrator)".into(), String::new())
                .await;
            Ok(())
        }
    };
    closed.cancel();
    tasks.close();
    if tokio::time::timeout(CHANNELS_GRACE, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "SSH channels still open after the session ended; their events may be missing"
        );
    }
    let failed = failure
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    match (failed, result) {
        (Some(why), _) => Err(why),
        (None, result) => result,
    }
}

/// How the client's session ended: a disconnect or a closed socket is a normal end.
fn ended(result: Result<(), russh::Error>) -> Result<(), String> {
    match result {
        Ok(()) | Err(russh::Error::Disconnect | russh::Error::HUP) => Ok(()),
        Err(russh::Error::IO(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(format!("the SSH session failed: {e}")),
    }
}

/// Tells a refused client why, in the authentication banner, and ends it.
pub async fn refuse(ssh: &Ssh, stream: TcpStream, target: &Target, reason: &str) {
    let Ok(config) = config(ssh, target) else {
        return;
    };
    let handler = Refusing {
        banner: format!("Portcullis denied the connection: {reason}\r\n"),
    };
    let serve = async {
        if let Ok(running) = server::run_stream(config, stream, handler).await {
            let _ = running.await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), serve).await;
}

/// Rejects every authentication after showing why in the banner.
struct Refusing {
    banner: String,
}

impl server::Handler for Refusing {
    type Error = russh::Error;

    async fn authentication_banner(&mut self) -> Result<Option<String>, Self::Error> {
        Ok(Some(self.banner.clone()))
    }

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(Auth::reject())
    }

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        _key: server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(Auth::reject())
    }
}

/// The masking of this session: the specs of the rules that match it. A rule naming
/// a key that cannot be read fails the session (closed, not unmasked).
fn session_masker(session: &Session) -> Result<Option<Arc<Masker>>, String> {
    let specs = session
        .gate
        .policy()
        .masks_for(&session.principal, &session.target.name);
    if specs.is_empty() {
        return Ok(None);
    }
    let key = MaskKey::for_specs(&specs).map_err(|e| format!("masking cannot be set up: {e}"))?;
    let masker = Masker::compile(&specs, key.as_ref())
        .map_err(|e| format!("masking cannot be set up: {e}"))?;
    Ok((!masker.is_noop()).then(|| Arc::new(masker)))
}

impl Handler {
    fn accept(&mut self, user: &str) -> Auth {
        self.login = Some(user.to_owned());
        Auth::Accept
    }

    /// Records an action decided at once (no task): agent, X11, remote forward
    /// listens (allowed ones too).
    async fn refuse_now(&self, kind: SshKind, subject: &str, outcome: &ActionOutcome) {
        let login = self.login.as_deref().unwrap_or_default();
        let summary = format!("{kind}: {subject}");
        let details = json!({ "login": login, "subject": subject });
        recording::record(
            &self.session,
            outcome,
            recording::starting(kind.name(), summary, details),
        )
        .await;
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
        let remote = upstream::RemoteSlot::default();
        match upstream::connect(&self.session, &login, Arc::clone(&remote)).await {
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
                recording::record(&self.session, &outcome, finished).await;
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

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single: bool,
        _protocol: &str,
        _cookie: &str,
        _screen: u32,
        session: &mut server::Session,
    ) -> Result<(), Self::Error> {
        let outcome = self.decide_now(SshKind::X11, "x11");
        let outcome = not_supported(outcome, "X11 forwarding");
        self.refuse_now(SshKind::X11, "x11", &outcome).await;
        session.channel_failure(channel)
    }

    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        _session: &mut server::Session,
    ) -> Result<bool, Self::Error> {
        let outcome = self.decide_now(SshKind::Agent, "agent forwarding");
        let outcome = not_supported(outcome, "agent forwarding");
        self.refuse_now(SshKind::Agent, "agent forwarding", &outcome)
            .await;
        Ok(false)
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
            self.refuse_now(SshKind::Forward, &subject, &outcome).await;
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
                self.refuse_now(SshKind::Forward, &subject, &outcome).await;
                Ok(true)
            }
            Err(e) => {
                forwards().retain(|l| *l != listen(*port));
                let failed = ActionOutcome::Failed {
                    rule: outcome.rule().map(str::to_owned),
                    reason: format!("the target refused to listen on {address}:{port}: {e}"),
                };
                self.refuse_now(SshKind::Forward, &subject, &failed).await;
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

/// An allowed request this proxy cannot relay yet is refused, saying so.
fn not_supported(outcome: ActionOutcome, what: &str) -> ActionOutcome {
    if outcome.allowed() {
        ActionOutcome::Failed {
            rule: outcome.rule().map(str::to_owned),
            reason: format!("{what} is allowed by the policy but not supported by this proxy"),
        }
    } else {
        outcome
    }
}
