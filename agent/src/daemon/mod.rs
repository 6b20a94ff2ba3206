//! The daemon: loads the policy and store, sets up interception, serves the proxy
//! listeners and the local API, and shuts down in order.
//!
//! Connections are accepted and served on the main runtime, or on `workers`
//! (single-threaded runtimes) when `session_workers` asks. Shutdown: stop accepting; give open sessions `shutdown_grace` to finish; then end
//! the rest (each records how it ended); close the store. The eBPF pins stay, so
//! protected targets stay closed until a daemon runs again.

mod connection;
pub mod discovering;
pub mod learning;
mod limits;
pub mod live;
mod run;
pub mod systemd;
mod targets;
mod workers;

pub use run::run;
pub use targets::{TargetTable, canonical};

use crate::{
    config::Config,
    gate::Gate,
    intercept::Interceptor,
    policy::{Policy, PolicyError},
    record::{Recorder, Store},
};
use std::{
    sync::{Arc, atomic::AtomicU64},
    time::{Instant, SystemTime},
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// Everything a connection or an API call needs, shared.
pub struct Daemon {
    pub config: Config,
    pub gate: Arc<Gate>,
    pub store: Store,
    pub interceptor: Interceptor,
    pub targets: TargetTable,
    /// The PostgreSQL protocol (classifier cache, cancel keys, TLS for clients).
    pub postgres: crate::proto::postgres::Postgres,
    /// The SSH protocol (host CA and host key).
    pub ssh: crate::proto::ssh::Ssh,
    /// The HTTP(S) protocol (the CA for HTTPS clients, request limits).
    pub http: crate::proto::http::Http,
    /// Writes statement records in batches.
    pub recorder: Recorder,
    /// This gateway host's name, recorded with every session.
    pub host: String,
    pub started: Instant,
    /// When the policy in force was loaded.
    pub policy_loaded: std::sync::Mutex<SystemTime>,
    pub active_sessions: AtomicU64,
    pub sessions_total: AtomicU64,
    /// Serialises policy reloads.
    reload: tokio::sync::Mutex<()>,
    /// Cancelled when in-flight sessions must end (after the grace period).
    pub hard_stop: CancellationToken,
    /// The sessions being served, so one can be killed.
    pub live: live::LiveSessions,
    /// Who is signed in to the web console (and its one-time sign-in links).
    pub web_sessions: Arc<crate::web::Sessions>,
}

impl Daemon {
    /// Loads the policy directory again and puts it in force. A broken policy is
    /// refused whole and the running one stays.
    pub async fn reload_policy(&self) -> Result<Arc<Policy>, PolicyError> {
        let _guard = self.reload.lock().await;
        systemd::reloading();
        let dir = self.config.policies.clone();
        // Loading reads files: off the runtime. If that task dies, load here instead.
        // The policy's tests (if any) must pass too.
        let load = crate::policy_test::load_checked;
        let loaded = match tokio::task::spawn_blocking(move || load(&dir)).await {
            Ok(result) => result,
            Err(_) => load(&self.config.policies),
        };
        let policy = match loaded {
            Ok(policy) => policy,
            Err(error) => {
                systemd::ready("Policy reload refused; the policy in force is unchanged");
                return Err(error);
            }
        };
        self.gate.replace_policy(policy);
        let policy = self.gate.policy();
        if let Err(error) = self.targets.refresh(&policy, &self.interceptor).await {
            tracing::error!(%error, "Cannot update the kernel's target map");
        }
        self.ssh.publish(&policy);
        self.http.publish(&policy).await;
        *self
            .policy_loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = SystemTime::now();
        tracing::info!(
            targets = policy.targets().len(),
            rules = policy.rules_len(),
            "Policy reloaded"
        );
        systemd::ready(&format!(
            "Protecting {} targets; policy reloaded",
            policy.targets().len()
        ));
        Ok(policy)
    }
}

async fn accept_loop(
    daemon: Arc<Daemon>,
    listener: TcpListener,
    stop: CancellationToken,
    tracker: TaskTracker,
    slots: Arc<Semaphore>,
    workers: Arc<workers::Workers>,
) {
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => return,
            p = Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) if workers.len() == 0 => {
                let daemon = Arc::clone(&daemon);
                tracker.spawn(async move {
                    connection::handle(&daemon, stream, peer).await;
                    drop(permit);
                });
            }
            Ok((stream, peer)) => {
                // Moved to a session worker's reactor: deregistered here first.
                let stream = match stream.into_std() {
                    Ok(s) => s,
                    Err(error) => {
                        tracing::warn!(%error, "Cannot hand an accepted connection over");
                        continue;
                    }
                };
                let daemon = Arc::clone(&daemon);
                let job = tracker.track_future(async move {
                    match tokio::net::TcpStream::from_std(stream) {
                        Ok(stream) => connection::handle(&daemon, stream, peer).await,
                        Err(error) => tracing::warn!(%error, "Cannot serve an accepted connection"),
                    }
                    drop(permit);
                });
                workers.run(Box::pin(job)).await;
            }
            Err(error) => {
                tracing::warn!(%error, "Accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn resolve_loop(daemon: Arc<Daemon>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(daemon.config.resolve_interval);
    tick.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let policy = daemon.gate.policy();
        if let Err(error) = daemon.targets.refresh(&policy, &daemon.interceptor).await {
            tracing::error!(%error, "Cannot update the kernel's target map");
        }
    }
}

/// Wakes local holds when another gateway sharing the store decides them.
async fn follow_other_gateways(
    daemon: Arc<Daemon>,
    mut changes: crate::record::RequestChanges,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            id = changes.next() => match id {
                Some(id) => daemon.gate.wake(&id),
                None => return,
            },
        }
    }
}
