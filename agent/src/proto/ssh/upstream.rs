//! The proxy's own SSH connection to the target: marked so the redirect lets it
//! pass, the server's host key checked against the target's `known_hosts` file (an
//! unknown or changed key ends the session: there is no trust on first use), then a
//! login with the target's credentials, which never reach the client.

use super::SshError;
use crate::{
    policy::{Target, TargetAddress},
    proto::Session,
};
use russh::{
    client::{self, AuthResult},
    keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate},
};
use std::{
    future::Future,
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};
use tokio_util::task::AbortOnDropHandle;

/// How long each step may take: connecting with the key exchange, then the login.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(20);

/// A logged-in connection to the target.
pub type Upstream = client::Handle<Verifier>;

/// Checks the target's host key against its `known_hosts` file.
pub struct Verifier {
    known_hosts: PathBuf,
    /// (host, port) names under which the key may be listed.
    names: Vec<(String, u16)>,
    /// Why the key was refused, for the error the client and the record get.
    refused: Arc<Mutex<Option<String>>>,
    /// The client's connection, once logged in: where remote forwards go.
    remote: RemoteSlot,
}

/// Where the target's `forwarded-tcpip` channels (`ssh -R`) are relayed to: the
/// client's connection, set once it exists (weak: the connection owns this side).
pub type RemoteSlot = Arc<std::sync::OnceLock<std::sync::Weak<super::server::Conn>>>;

impl client::Handler for Verifier {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            // A certificate's key must itself be listed: we keep no CA for targets.
            PublicKeyOrCertificate::Certificate(cert) => {
                PublicKey::new(cert.public_key().clone(), "")
            }
        };
        let verdict = self.check(&key);
        if let Err(why) = &verdict {
            *self.refused.lock().unwrap_or_else(PoisonError::into_inner) = Some(why.clone());
        }
        Ok(verdict.is_ok())
    }

    /// A connection to a port the client had the target listen on (`ssh -R`): relayed
    /// to the client only for a listen the policy allowed.
    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: russh::Channel<client::Msg>,
        connected_address: &str,
        connected_port: u32,
        originator_address: &str,
        originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let Some(conn) = self.remote.get().and_then(std::sync::Weak::upgrade) else {
            return Ok(());
        };
        if !conn.forwards_to(connected_address, connected_port) {
            tracing::warn!(%connected_address, connected_port, "Refused a forwarded connection no allowed -R asked for");
            return Ok(());
        }
        reply.accept().await;
        let to = super::forward::Destination {
            host: connected_address.to_owned(),
            port: connected_port,
            from_host: originator_address.to_owned(),
            from_port: originator_port,
        };
        let tasks = conn.tasks.clone();
        tasks.spawn(super::forward::remote(channel, conn, to));
        Ok(())
    }

    /// An agent connection (`ssh -A`): relayed only if the client was allowed it.
    async fn server_channel_open_agent_forward(
        &mut self,
        channel: russh::Channel<client::Msg>,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        self.open_back(channel, reply, super::agent::Back::Agent)
            .await;
        Ok(())
    }

    /// An X11 connection (`ssh -X`): relayed only if the client was allowed it.
    async fn server_channel_open_x11(
        &mut self,
        channel: russh::Channel<client::Msg>,
        originator_address: &str,
        originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let back = super::agent::Back::X11 {
            from_host: originator_address.to_owned(),
            from_port: originator_port,
        };
        self.open_back(channel, reply, back).await;
        Ok(())
    }
}

impl Verifier {
    /// Accepts and relays a forwarding channel the target opened back, or refuses it
    /// (`reply` dropped).
    async fn open_back(
        &self,
        channel: russh::Channel<client::Msg>,
        reply: client::ChannelOpenHandle,
        back: super::agent::Back,
    ) {
        let Some(conn) = self.remote.get().and_then(std::sync::Weak::upgrade) else {
            return;
        };
        if !super::agent::admit(&conn, &back) {
            return;
        }
        reply.accept().await;
        let tasks = conn.tasks.clone();
        tasks.spawn(super::agent::relay(channel, conn, back));
    }

    fn check(&self, key: &PublicKey) -> Result<(), String> {
        let fingerprint = key.fingerprint(HashAlg::Sha256);
        let mut listed_other = false;
        for (host, port) in &self.names {
            let found =
                russh::keys::known_hosts::known_host_keys_path(host, *port, &self.known_hosts)
                    .map_err(|e| {
                        format!(
                            "cannot read known_hosts {}: {e}",
                            self.known_hosts.display()
                        )
                    })?;
            for (_, recorded) in found {
                if recorded.key_data() == key.key_data() {
                    return Ok(());
                }
                listed_other |= recorded.algorithm() == key.algorithm();
            }
        }
        if listed_other {
            Err(format!(
                "the target's host key CHANGED: it presented {fingerprint}, which does not match \
                 {}; if the server was rebuilt, update that file",
                self.known_hosts.display()
            ))
        } else {
            Err(format!(
                "the target's host key {fingerprint} is not in {}; add it (e.g. with \
                 ssh-keyscan, after checking it) — keys are never trusted on first use",
                self.known_hosts.display()
            ))
        }
    }
}

/// Ciphers offered to targets, best first. On the upstream leg Portcullis is the
/// client, so its order decides: AES-GCM first, which AES-NI makes several times
/// cheaper than ChaCha20-Poly1305 (two thirds of the proxy's CPU in a bulk `scp`
/// went to ChaCha20-Poly1305, paid on both legs). The client's leg keeps the
/// client's own preference.
const UPSTREAM_CIPHERS: &[russh::cipher::Name] = &[
    russh::cipher::AES_256_GCM,
    russh::cipher::AES_128_GCM,
    russh::cipher::CHACHA20_POLY1305,
    russh::cipher::AES_256_CTR,
    russh::cipher::AES_128_CTR,
];

/// The client configuration every upstream connection uses.
fn config() -> Arc<client::Config> {
    Arc::new(client::Config {
        preferred: russh::Preferred {
            cipher: std::borrow::Cow::Borrowed(UPSTREAM_CIPHERS),
            ..russh::Preferred::default()
        },
        inactivity_timeout: None,
        nodelay: true,
        keepalive_interval: Some(Duration::from_mins(1)),
        ..client::Config::default()
    })
}

/// The key exchange with the target, started as the client's connection is
/// accepted so that it runs beside the client's own; only the login waits for the
/// user name the client asks for. Dropping it aborts it.
pub struct Early(AbortOnDropHandle<Result<client::Handle<Verifier>, SshError>>);

/// Starts connecting to the target of `session` in a task of its own.
pub fn start(session: &Arc<Session>, remote: RemoteSlot) -> Early {
    let session = Arc::clone(session);
    Early(AbortOnDropHandle::new(tokio::spawn(async move {
        within(&session, handshake(&session, remote)).await
    })))
}

/// Logs in as the target's credential user (else `login`, the user the client
/// asked for) on the connection `early` started, or on a new one when there is
/// none or the target has closed it meanwhile (a client slow to authenticate can
/// outlast the server's `LoginGraceTime`).
pub async fn connect(
    session: &Session,
    login: &str,
    remote: RemoteSlot,
    early: Option<Early>,
) -> Result<Upstream, SshError> {
    let started =
        match early {
            Some(Early(task)) => Some(task.await.map_err(|e| {
                SshError::Upstream(format!("connecting to the target failed: {e}"))
            })??),
            None => None,
        };
    let handle = match started {
        Some(handle) if !handle.is_closed() => handle,
        _ => within(session, handshake(session, remote)).await?,
    };
    within(session, log_in(handle, session, login)).await
}

/// `step`, or an error once [`LOGIN_TIMEOUT`] has passed.
async fn within<T>(
    session: &Session,
    step: impl Future<Output = Result<T, SshError>>,
) -> Result<T, SshError> {
    tokio::time::timeout(LOGIN_TIMEOUT, step)
        .await
        .unwrap_or_else(|_| {
            Err(SshError::Upstream(format!(
                "the target {} did not finish logging in within {}s",
                session.upstream,
                LOGIN_TIMEOUT.as_secs()
            )))
        })
}

/// Connects, exchanges keys and checks the target's host key.
async fn handshake(
    session: &Session,
    remote: RemoteSlot,
) -> Result<client::Handle<Verifier>, SshError> {
    let target = &session.target;
    let Some(ssh) = &target.ssh else {
        return Err(SshError::Upstream(format!(
            "target {} has no ssh settings",
            target.name
        )));
    };
    let stream = crate::proto::tcp::connect_upstream(session.upstream, session.mark)
        .await
        .map_err(|e| SshError::Upstream(format!("cannot connect to {}: {e}", session.upstream)))?;
    let refused = Arc::default();
    let verifier = Verifier {
        known_hosts: ssh.known_hosts.clone(),
        names: names(target, session.upstream),
        refused: Arc::clone(&refused),
        remote,
    };
    client::connect_stream(config(), stream, verifier)
        .await
        .map_err(|error| {
            let why = refused
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            SshError::Upstream(why.unwrap_or_else(|| {
                format!("SSH handshake with {} failed: {error}", session.upstream)
            }))
        })
}

/// Logs in on `handle` with the target's credentials.
async fn log_in(
    mut handle: client::Handle<Verifier>,
    session: &Session,
    login: &str,
) -> Result<Upstream, SshError> {
    let target = &session.target;
    let Some(ssh) = &target.ssh else {
        return Err(SshError::Upstream(format!(
            "target {} has no ssh settings",
            target.name
        )));
    };
    let creds = target.credentials.as_ref();
    let user = creds
        .and_then(|c| c.user.clone())
        .unwrap_or_else(|| login.to_owned());
    let result = if let Some(ca) = &ssh.user_ca_key_file {
        let (key, cert) = super::user_cert::issue(ca, &user, session.id.as_str())?;
        handle
            .authenticate_openssh_cert(&user, Arc::new(key), cert)
            .await
    } else if let Some(path) = creds.and_then(|c| c.key_file.as_ref()) {
        let key = russh::keys::load_secret_key(path, None).map_err(|e| {
            SshError::Upstream(format!(
                "cannot read the target's key_file {}: {e}",
                path.display()
            ))
        })?;
        let hash = handle
            .best_supported_rsa_hash()
            .await
            .ok()
            .flatten()
            .flatten();
        let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
        handle.authenticate_publickey(&user, key).await
    } else if let Some(secret) = creds.and_then(|c| c.password.as_ref()) {
        let password = secret.resolve().map_err(|why| {
            SshError::Upstream(format!("cannot read the target's password: {why}"))
        })?;
        handle.authenticate_password(&user, password.expose()).await
    } else {
        handle.authenticate_none(&user).await
    };
    match result {
        Ok(AuthResult::Success) => Ok(handle),
        Ok(AuthResult::Failure { .. }) => Err(SshError::Upstream(format!(
            "the target refused Portcullis's login as {user}; check the target's credentials"
        ))),
        Err(e) => Err(SshError::Upstream(format!(
            "login to the target failed: {e}"
        ))),
    }
}

/// Names the target's key may be listed under: the address connected to, and each
/// of the target's addresses as written.
fn names(target: &Target, upstream: std::net::SocketAddr) -> Vec<(String, u16)> {
    let mut out = vec![(upstream.ip().to_canonical().to_string(), upstream.port())];
    for a in &target.addresses {
        let name = match a {
            TargetAddress::Socket(s) => (s.ip().to_string(), s.port()),
            TargetAddress::Host { host, port } => (host.clone(), *port),
        };
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}
