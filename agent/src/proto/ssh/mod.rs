//! SSH: transparent interception with per-action decisions, credential injection
//! and masked recordings, on `russh` (server and client in one maintained crate).
//!
//! The client (`ssh`, `scp`, `rsync`, Ansible) believes it talks to the target. The
//! proxy answers as the target with a host certificate from Portcullis's host CA
//! (`identity`; OpenSSH on this host trusts it through a marked `@cert-authority`
//! block in `/etc/ssh/ssh_known_hosts`), accepts the client's own authentication
//! (`none` or any public key: who it is comes from the kernel), logs in to the real
//! server with the target's credentials after checking its host key against the
//! target's `known_hosts` (`upstream`), and serves each channel in a task of its own
//! (`server` → `channel`): an exec, a shell, a subsystem or a forward is an action
//! the gate decides (`actions`), relayed with output masking (`masking`) and
//! recorded as events, shells also as asciicast files (`recording`). Command lines
//! are split on a shell parser (`command`).

pub mod actions;
mod agent;
mod channel;
pub mod command;
mod escape_mask;
mod forward;
mod handler;
pub mod identity;
mod masking;
mod paste;
mod recording;
mod relay;
mod relayed;
mod screen;
mod server;
pub mod sftp;
mod sftp_relay;
mod typed_ask;
mod typed_line;
mod upstream;
mod user_cert;
pub mod watch;

use crate::{
    config::SshConfig,
    policy::{Policy, Target},
    proto::{Metered, Protocol, Served, Session},
    record::Outcome,
};
use std::{path::PathBuf, sync::Arc, time::Duration};
use tokio::net::TcpStream;

/// Why an SSH session (or the SSH setup) failed.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A key or certificate could not be read, made or used.
    #[error("SSH key error: {0}")]
    Key(String),
    /// The target could not be reached or logged in to.
    #[error("{0}")]
    Upstream(String),
}

impl SshError {
    fn key(e: impl std::fmt::Display) -> Self {
        Self::Key(e.to_string())
    }
}

/// How long a client may take from connecting to finishing authentication.
const AUTH_TIMEOUT: Duration = Duration::from_mins(1);

/// The SSH protocol, with what its sessions share.
pub struct Ssh {
    identity: identity::HostIdentity,
    state_dir: PathBuf,
    /// Live shell output, for `sessions watch`.
    pub feeds: Arc<watch::Feeds>,
}

/// A client connection before its SSH handshake, and the target it asked for.
pub struct Opened {
    stream: TcpStream,
    target: Arc<Target>,
}

impl Ssh {
    /// Loads (or makes) the host CA and host key, and starts a command-line parse
    /// worker.
    pub fn new(config: &SshConfig) -> Result<Self, SshError> {
        if let Err(error) = command::pool::warm_up() {
            tracing::error!(%error, "The SSH command-line parser cannot run");
        }
        Ok(Self {
            identity: identity::HostIdentity::load(config)?,
            state_dir: config.state_dir.clone(),
            feeds: Arc::default(),
        })
    }

    /// Writes the `@cert-authority` block for the SSH targets of `policy`; called on
    /// start and on every reload. A failure is logged: sessions still work for
    /// clients that trust the CA another way.
    pub fn publish(&self, policy: &Policy) {
        if let Err(error) = self.identity.publish(policy) {
            tracing::error!(%error, "Cannot update the SSH known-hosts block; clients will see an unknown host key");
        }
    }

    /// The CA's public key line, for `status` and people who configure clients by hand.
    #[must_use]
    pub fn ca_public(&self) -> Option<String> {
        self.identity.ca_public().ok()
    }
}

/// Removes the known-hosts block (`daemon --release`).
pub fn release(config: &SshConfig) -> Result<(), SshError> {
    identity::release(config)
}

impl Protocol for Ssh {
    type Client = Opened;

    async fn open(&self, stream: TcpStream, target: &Target) -> Result<Option<Opened>, String> {
        let _ = stream.set_nodelay(true);
        Ok(Some(Opened {
            stream,
            target: Arc::new(target.clone()),
        }))
    }

    fn socket(client: &Opened) -> &TcpStream {
        &client.stream
    }

    /// SSH cannot speak before its handshake: the client waits.
    async fn held(&self, _client: &mut Opened, _request: &str, _hint: &str) {}

    async fn refuse(&self, client: Opened, reason: &str) {
        server::refuse(self, client.stream, &client.target, reason).await;
    }

    async fn serve(&self, client: Opened, session: Arc<Session>) -> Served {
        let stream = Metered::new(client.stream);
        let meter = stream.meter();
        let (outcome, reason) = match server::run(self, stream, Arc::clone(&session)).await {
            Ok(()) => (Outcome::Closed, None),
            Err(reason) => (Outcome::Error, Some(reason)),
        };
        self.feeds.remove(session.id.as_str());
        let digest = session.recorder.finish_session(&session.id).await;
        Served {
            outcome,
            reason,
            traffic: meter.traffic(),
            events: Some(digest),
        }
    }
}
