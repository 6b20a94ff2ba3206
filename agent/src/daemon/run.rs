//! The daemon's life: start (policy, store and journal, interception, protocols),
//! serve (the proxy listeners, the API, the web console and the background loops),
//! and stop in order when SIGTERM or SIGINT comes.

use super::{
    Daemon, TargetTable, accept_loop, follow_other_gateways, learning, limits, live, resolve_loop,
    systemd, workers::Workers,
};
use crate::{
    config::Config,
    gate::{Gate, notify::Notifier},
    intercept::{self, Interceptor, Settings},
    metrics::Metrics,
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
    task::JoinHandle,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// The columns PostgreSQL sessions learn, queued for [`learning::run`].
type Learnings = tokio::sync::mpsc::Receiver<crate::mask::learned::Learning>;

/// What runs once the daemon is up, for [`stop`] to wind down.
struct Running {
    stop: CancellationToken,
    tracker: TaskTracker,
    api: JoinHandle<()>,
    workers: Arc<Workers>,
    notifier_task: JoinHandle<()>,
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    systemd::status("Loading the policy");
    limits::raise_open_files();
    let policy = crate::policy_test::load_checked(&config.policies)
        .context("cannot load the policy (or its tests fail); fix it and start again")?;
    let (store, journal) = open_store(&config).await?;
    let metrics = Arc::new(Metrics::new());
    let (notifier, notifier_task) = Notifier::start(config.webhooks.clone(), Arc::clone(&metrics))
        .context("bad [[webhook]] configuration")?;
    // Listen before redirecting, so the first redirected connect finds us.
    let listener4 = bind(config.listen4).await?;
    let listener6 = match config.listen6 {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let interceptor = intercept(&config)?;
    let gate = Arc::new(Gate::new(policy, store.clone(), metrics, Some(notifier)));
    let (daemon, learnings) = assemble(config, gate, store, journal, interceptor)?;
    let daemon = Arc::new(daemon);
    protect(&daemon).await?;
    let listeners = std::iter::once(listener4).chain(listener6).collect();
    let running = serve(&daemon, listeners, notifier_task).await?;
    running.tracker.spawn(learning::run(
        Arc::clone(&daemon),
        learnings,
        running.stop.clone(),
    ));
    announce(&daemon, running.workers.len());
    let watchdog = systemd::spawn_watchdog(running.stop.clone());
    wait_for_signal().await?;
    drop(watchdog);
    stop(daemon, running).await;
    Ok(())
}

/// Opens the store and the journal, storing what the previous run journaled but had
/// not stored (it died first), and abandons the requests that run left held.
async fn open_store(config: &Config) -> anyhow::Result<(Store, Journal)> {
    systemd::status("Opening the store");
    let store = Store::open(&config.store)
        .await
        .context("cannot open the store")?;
    let store = match &config.gateway {
        Some(name) => store.with_host(name.clone()),
        None => store,
    };
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
    Ok((store, journal))
}

/// Attaches the eBPF programs (or adopts those a previous run pinned).
fn intercept(config: &Config) -> anyhow::Result<Interceptor> {
    systemd::status("Attaching interception");
    let interceptor = Interceptor::start(&Settings {
        cgroup: config.cgroup.clone(),
        pin_dir: config.bpf_pin_dir.clone(),
        proxy: proxy_config(config)?,
    })
    .context("cannot set up interception")?;
    if interceptor.adopted() > 0 {
        tracing::info!(programs = interceptor.adopted(), pins = %config.bpf_pin_dir.display(), "Adopted pinned programs");
    }
    Ok(interceptor)
}

/// The daemon's shared state, with each protocol set up, and the queue of columns
/// the PostgreSQL sessions learn (for [`learning::run`]).
fn assemble(
    config: Config,
    gate: Arc<Gate>,
    store: Store,
    journal: Journal,
    interceptor: Interceptor,
) -> anyhow::Result<(Daemon, Learnings)> {
    let mut postgres = crate::proto::postgres::Postgres::new(&config.postgres, config.mark)?;
    let (learned, learnings) = learning::registry();
    postgres.learned = learned;
    let ssh = crate::proto::ssh::Ssh::new(&config.ssh).context("cannot set up the SSH host CA")?;
    let daemon = Daemon {
        postgres,
        ssh,
        http: crate::proto::http::Http::new(&config.http),
        recorder: Recorder::spawn_journaled(store.clone(), journal),
        host: store.host().to_owned(),
        gate,
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
    };
    Ok((daemon, learnings))
}

/// Puts the policy's targets in the kernel's map, and tells SSH and HTTPS clients
/// to trust the daemon's CAs for them.
async fn protect(daemon: &Daemon) -> anyhow::Result<()> {
    let policy = daemon.gate.policy();
    daemon
        .targets
        .refresh(&policy, &daemon.interceptor)
        .await
        .context("cannot protect the targets")?;
    daemon.ssh.publish(&policy);
    daemon.http.publish(&policy).await;
    Ok(())
}

/// Starts everything that serves: the proxy listeners' accept loops, the API, the
/// web console, the loops that resolve targets and follow other gateways, and the
/// metrics listener.
async fn serve(
    daemon: &Arc<Daemon>,
    listeners: Vec<TcpListener>,
    notifier_task: JoinHandle<()>,
) -> anyhow::Result<Running> {
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(daemon.config.max_connections));
    let workers = Arc::new(
        Workers::start(daemon.config.session_workers)
            .context("cannot start the session workers")?,
    );
    for listener in listeners {
        tracker.spawn(accept_loop(
            Arc::clone(daemon),
            listener,
            stop.clone(),
            tracker.clone(),
            Arc::clone(&slots),
            Arc::clone(&workers),
        ));
    }
    let api = crate::api::serve(Arc::clone(daemon), stop.clone())?;
    if let Some(web) = crate::web::serve(Arc::clone(daemon), stop.clone()).await? {
        tracker.spawn(web);
    }
    tracker.spawn(resolve_loop(Arc::clone(daemon), stop.clone()));
    if let Some(changes) = daemon
        .store
        .request_changes()
        .await
        .context("cannot listen for decisions made by other gateways")?
    {
        tracker.spawn(follow_other_gateways(
            Arc::clone(daemon),
            changes,
            stop.clone(),
        ));
    }
    if let Some(addr) = daemon.config.metrics_listen {
        tracker.spawn(crate::api::serve_metrics(Arc::clone(daemon), addr, stop.clone()).await?);
    }
    Ok(Running {
        stop,
        tracker,
        api,
        workers,
        notifier_task,
    })
}

/// Logs what is protected and tells systemd the daemon is ready.
fn announce(daemon: &Daemon, session_workers: usize) {
    let policy = daemon.gate.policy();
    tracing::info!(
        api = %daemon.config.api_socket.display(),
        listen = %daemon.config.listen4,
        cgroup = %daemon.interceptor.cgroup().display(),
        targets = policy.targets().len(),
        addresses = daemon.targets.len(),
        store = %daemon.store.backend(),
        session_workers,
        "Portcullis is running"
    );
    for target in policy.targets() {
        let addrs: Vec<String> = target.addresses.iter().map(ToString::to_string).collect();
        tracing::info!(target = %target.name, protocol = %target.protocol, addresses = %addrs.join(", "), "Protecting");
    }
    systemd::ready(&format!(
        "Protecting {} targets ({} addresses); store {}",
        policy.targets().len(),
        daemon.targets.len(),
        daemon.store.backend()
    ));
}

/// Shuts down in order: held actions denied (a shutdown never releases one), no new
/// connections, open sessions given `shutdown_grace` and then ended, the recorder
/// and the store closed, the notifier drained.
async fn stop(daemon: Arc<Daemon>, running: Running) {
    tracing::info!(grace = ?daemon.config.shutdown_grace, "Shutting down");
    systemd::stopping();
    daemon.gate.shut_down();
    // A store that is down is not waited for: the journal keeps what it did not take.
    daemon.recorder.closing();
    running.stop.cancel();
    running.tracker.close();
    if tokio::time::timeout(daemon.config.shutdown_grace, running.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = daemon.active_sessions.load(Ordering::Relaxed),
            "Grace period over; ending open sessions"
        );
        daemon.hard_stop.cancel();
        running.tracker.wait().await;
    }
    let _ = running.api.await;
    if let Ok(workers) = Arc::try_unwrap(running.workers) {
        let _ = tokio::task::spawn_blocking(move || workers.join()).await;
    }
    daemon.recorder.shutdown().await;
    daemon.store.close().await;
    // The notifier (owned by the gate) drains its queue once the daemon is dropped.
    drop(daemon);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), running.notifier_task).await;
    tracing::info!("Stopped; protected targets stay closed until the daemon runs again");
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

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
