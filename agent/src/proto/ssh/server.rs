//! The client's side of an SSH session: a `russh` server on the intercepted
//! connection, what its channels share (`Conn`), and how the session ends. The
//! handler's callbacks are in `handler`: authentication is the client's own and its
//! user name is the login the actions are decided for; once it is in, the proxy
//! logs in upstream. Each channel is served by a task of its own (`channel`,
//! `forward`): no handler callback ever waits for the gate, so one held channel
//! never stalls the others.

use super::{AUTH_TIMEOUT, Ssh, upstream};
use crate::{
    mask::{MaskKey, Masker},
    policy::Target,
    proto::{Metered, Session},
};
use russh::{
    MethodKind, MethodSet,
    server::{self, Auth},
};
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
    /// The agent and X11 forwarding the policy allowed, and their open channels.
    pub forwarding: super::agent::Allowed,
    /// Why the session failed, for its record.
    pub failure: Arc<Mutex<Option<String>>>,
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

    /// Ends the client's whole connection because an action's record could not be
    /// made durable (its result was not passed on): fail closed, with the reason.
    pub async fn not_recorded(&self) {
        tracing::error!("An SSH action's record could not be written; ending the session");
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(|| super::recording::NOT_RECORDED.to_owned());
        let _ = self
            .handle
            .disconnect(
                russh::Disconnect::ByApplication,
                super::recording::NOT_RECORDED.to_owned(),
                String::new(),
            )
            .await;
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

/// The `russh` handler of one client connection (its callbacks are in `handler`).
pub(super) struct Handler {
    pub(super) session: Arc<Session>,
    pub(super) masker: Option<Arc<Masker>>,
    pub(super) recordings: PathBuf,
    pub(super) feeds: Arc<super::watch::Feeds>,
    /// The user name the client authenticated with, once it has.
    pub(super) login: Option<String>,
    /// What the channels share, once the upstream login succeeded.
    pub(super) conn: Option<Arc<Conn>>,
    /// Why the session failed, for its record.
    pub(super) failure: Arc<Mutex<Option<String>>>,
    /// The channel tasks, so the session's record waits for theirs.
    pub(super) tasks: TaskTracker,
    pub(super) closed: CancellationToken,
    /// The key exchange with the target, under way since the client connected.
    pub(super) early: Option<upstream::Early>,
    /// Where the target's remote-forward channels go, once the session exists.
    pub(super) remote: upstream::RemoteSlot,
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
    let remote = upstream::RemoteSlot::default();
    let early = Some(upstream::start(&session, Arc::clone(&remote)));
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
        early,
        remote,
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
