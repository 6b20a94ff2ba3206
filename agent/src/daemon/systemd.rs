//! Telling systemd how the daemon is doing (`Type=notify`): `STATUS=` lines while it
//! starts, `READY=1` once interception is attached and the store is open, `WATCHDOG=1`
//! keep-alives at half the unit's `WatchdogSec`, `RELOADING=1`/`READY=1` around a policy
//! reload, and `STOPPING=1` at shutdown.
//!
//! Each is one datagram to `$NOTIFY_SOCKET` (the `sd-notify` crate: the protocol in a
//! few dozen lines, no libsystemd). Without `$NOTIFY_SOCKET` (not started by systemd)
//! every call does nothing. A datagram that cannot be sent is logged at debug level
//! and otherwise ignored: systemd then restarts a daemon that never said READY, which
//! is the right outcome.

use sd_notify::NotifyState;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Sends `states`, if systemd listens.
fn send(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(false, states) {
        tracing::debug!(%error, "Cannot notify systemd");
    }
}

/// A `STATUS=` line (`systemctl status` shows it).
pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

/// `READY=1` with a status line: interception attached, store open, serving.
pub fn ready(text: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(text)]);
}

/// `RELOADING=1` before a policy reload.
pub fn reloading() {
    let mut states = vec![
        NotifyState::Reloading,
        NotifyState::Status("Reloading the policy"),
    ];
    // systemd ≥ 253 wants the monotonic time with RELOADING=1; older ones ignore it.
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send(&states);
}

/// `STOPPING=1`: held actions are being denied and sessions drained.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("Shutting down")]);
}

/// Sends `WATCHDOG=1` at half the interval systemd asked for (`WATCHDOG_USEC`), from
/// the daemon's main runtime, so a wedged runtime stops the keep-alives and systemd
/// restarts the daemon. Nothing when no watchdog is set.
pub fn spawn_watchdog(stop: CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return None;
    }
    let every = Duration::from_micros(usec / 2).max(Duration::from_millis(100));
    tracing::info!(every = ?every, "systemd watchdog keep-alives");
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => send(&[NotifyState::Watchdog]),
            }
        }
    }))
}
