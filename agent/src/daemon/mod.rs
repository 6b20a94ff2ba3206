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
pub mod systemd;
mod targets;
mod workers;

pub use targets::{TargetTable, canonical};

use crate::{
    config::Config,
    gate::{Gate, notify::Notifier},
    intercept::{self, Interceptor, Settings},
    metrics::Metrics,
    policy::{Policy, PolicyError},
    record::{Journal, Recorder, Store},
};
use anyhow::Context as _;
use portcullis_common::ProxyConfig;
use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Instant, SystemTime},
};
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
    sync::Semaphore,
};
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

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    systemd::status("Loading the policy");
    limits::raise_open_files();
    let policy = crate::policy_test::load_checked(&config.policies)
        .context("cannot load the policy (or its tests fail); fix it and start again")?;
    systemd::status("Opening the store");
    let store = Store::open(&config.store)
        .await
        .context("cannot open the store")?;
    let store = match &config.gateway {
        Some(name) => store.with_host(name.clone()),
        None => store,
    };
    // What the previous run journaled but did not store (it died first) goes in now.
    systemd::status("Replaying the journal");
    let journal = Journal::open(&config.state_dir.join("journal"), &store)
        .await
        .context("cannot open the record journal")?;
    // Requests held by a previous run of this gateway lost their connections with it:
    // they must never be approved into effect.
    let abandoned = store
        .abandon_pending_of_this_host("the daemon restarted while the request was held")
        .await?;
    if abandoned > 0 {
        tracing::warn!(
            abandoned,
            "Marked requests left pending by the previous run as abandoned"
        );
    }
    let metrics = Arc::new(Metrics::new());
    let (notifier, notifier_task) = Notifier::start(config.webhooks.clone(), Arc::clone(&metrics))
        .context("bad [[webhook]] configuration")?;

    // Listen before redirecting, so the first redirected connect finds us.
    let listener4 = bind(config.listen4).await?;
    let listener6 = match config.listen6 {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let proxy = proxy_config(&config)?;
    systemd::status("Attaching interception");
    let interceptor = Interceptor::start(&Settings {
        cgroup: config.cgroup.clone(),
        pin_dir: config.bpf_pin_dir.clone(),
        proxy,
    })
    .context("cannot set up interception")?;
    if interceptor.adopted() > 0 {
        tracing::info!(programs = interceptor.adopted(), pins = %config.bpf_pin_dir.display(), "Adopted pinned programs");
    }

    let mut postgres = crate::proto::postgres::Postgres::new(&config.postgres, config.mark)?;
    let (learned, learnings) = learning::registry();
    postgres.learned = learned;
    let ssh = crate::proto::ssh::Ssh::new(&config.ssh).context("cannot set up the SSH host CA")?;
    let recorder = Recorder::spawn_journaled(store.clone(), journal);
    let http = crate::proto::http::Http::new(&config.http);
    let daemon = Arc::new(Daemon {
        postgres,
        ssh,
        http,
        recorder,
        host: store.host().to_owned(),
        gate: Arc::new(Gate::new(policy, store.clone(), metrics, Some(notifier))),
        store,
        interceptor,
        targets: TargetTable::default(),
        started: Instant::now(),
        policy_loaded: std::sync::Mutex::new(SystemTime::now()),
        active_sessions: AtomicU64::new(0),
        sessions_total: AtomicU64::new(0),
        reload: tokio::sync::Mutex::new(()),
        hard_stop: CancellationToken::new(),
        live: live::LiveSessions::default(),
        web_sessions: Arc::new(crate::web::sessions_for(config.web.as_ref())),
        config,
    });
    daemon
        .targets
        .refresh(&daemon.gate.policy(), &daemon.interceptor)
        .await
        .context("cannot protect the targets")?;
    daemon.ssh.publish(&daemon.gate.policy());
    daemon.http.publish(&daemon.gate.policy()).await;

    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(daemon.config.max_connections));
    let workers = Arc::new(
        workers::Workers::start(daemon.config.session_workers)
            .context("cannot start the session workers")?,
    );
    for listener in std::iter::once(listener4).chain(listener6) {
        tracker.spawn(accept_loop(
            Arc::clone(&daemon),
            listener,
            stop.clone(),
            tracker.clone(),
            Arc::clone(&slots),
            Arc::clone(&workers),
        ));
    }
    let api = crate::api::serve(Arc::clone(&daemon), stop.clone())?;
    if let Some(web) = crate::web::serve(Arc::clone(&daemon), stop.clone()).await? {
        tracker.spawn(web);
    }
    tracker.spawn(resolve_loop(Arc::clone(&daemon), stop.clone()));
    tracker.spawn(learning::run(Arc::clone(&daemon), learnings, stop.clone()));
    if let Some(changes) = daemon
        .store
        .request_changes()
        .await
        .context("cannot listen for decisions made by other gateways")?
    {
        tracker.spawn(follow_other_gateways(
            Arc::clone(&daemon),
            changes,
            stop.clone(),
        ));
    }

    let policy = daemon.gate.policy();
    tracing::info!(
        api = %daemon.config.api_socket.display(),
        listen = %daemon.config.listen4,
        cgroup = %daemon.interceptor.cgroup().display(),
        targets = policy.targets().len(),
        addresses = daemon.targets.len(),
        store = %daemon.store.backend(),
        session_workers = workers.len(),
        "Portcullis is running"
    );
    for target in policy.targets() {
        let addrs: Vec<String> = target.addresses.iter().map(ToString::to_string).collect();
        tracing::info!(target = %target.name, protocol = %target.protocol, addresses = %addrs.join(", "), "Protecting");
    }

    if let Some(addr) = daemon.config.metrics_listen {
        tracker.spawn(crate::api::serve_metrics(Arc::clone(&daemon), addr, stop.clone()).await?);
    }
    systemd::ready(&format!(
        "Protecting {} targets ({} addresses); store {}",
        policy.targets().len(),
        daemon.targets.len(),
        daemon.store.backend()
    ));
    let watchdog = systemd::spawn_watchdog(stop.clone());

    wait_for_signal().await?;
    tracing::info!(grace = ?daemon.config.shutdown_grace, "Shutting down");
    systemd::stopping();
    drop(watchdog);
    // Held actions are denied first: a shutdown never releases one.
    daemon.gate.shut_down();
    // A store that is down is not waited for: the journal keeps what it did not take.
    daemon.recorder.closing();
    stop.cancel();
    tracker.close();
    if tokio::time::timeout(daemon.config.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = daemon.active_sessions.load(Ordering::Relaxed),
            "Grace period over; ending open sessions"
        );
        daemon.hard_stop.cancel();
        tracker.wait().await;
    }
    let _ = api.await;
    if let Ok(workers) = Arc::try_unwrap(workers) {
        let _ = tokio::task::spawn_blocking(move || workers.join()).await;
    }
    daemon.recorder.shutdown().await;
    daemon.store.close().await;
    // The notifier (owned by the gate) drains its queue once the daemon is dropped.
    drop(daemon);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), notifier_task).await;
    tracing::info!("Stopped; protected targets stay closed until the daemon runs again");
    Ok(())
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr}; is another daemon using it? change `listen`")
    })
}

fn proxy_config(config: &Config) -> anyhow::Result<ProxyConfig> {
    let IpAddr::V4(v4) = config.listen4.ip() else {
        anyhow::bail!("listen4 must be IPv4");
    };
    let (listen6, port6) = match config.listen6.map(|a| (a.ip(), a.port())) {
        Some((IpAddr::V6(ip), port)) => (
            intercept::to_endpoint(SocketAddr::new(IpAddr::V6(ip), port)).addr,
            port,
        ),
        _ => ([0; 4], 0),
    };
    Ok(ProxyConfig {
        netns_cookie: intercept::netns_cookie()?,
        listen4: u32::from_ne_bytes(v4.octets()),
        listen6,
        port4: config.listen4.port(),
        port6,
        mark: config.mark,
        pad: 0,
    })
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

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
