//! Cancel requests. PostgreSQL cancels a running query through a new connection that
//! presents the session's `BackendKeyData` (psql's Ctrl-C). The proxy gives each
//! client its own secret, so a client can only cancel its own session; a cancel ends a
//! held statement (abandoned) or is passed on with the server's key.

use super::wire::{self, CANCEL_REQUEST};
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
};
use tokio::{io::AsyncWriteExt as _, sync::Notify};

/// A client-facing key: (process id, secret).
pub type Key = (i32, i32);

/// What a session registers for its key.
#[derive(Debug)]
pub struct CancelEntry {
    /// The server's address and its own key for this session.
    upstream: SocketAddr,
    server_key: Key,
    /// Set while a statement is held; a cancel then ends the hold instead of going
    /// to the server.
    holding: AtomicBool,
    /// Set by a cancel for the held statement; `held` wakes whoever waits for it. The
    /// flag keeps a cancel that arrives before the wait begins from being lost.
    cancel_asked: AtomicBool,
    held: Notify,
}

impl CancelEntry {
    /// Marks whether a statement is held (so a cancel ends the hold).
    pub fn set_holding(&self, holding: bool) {
        // A cancel asked for an earlier hold must not end the next one.
        self.cancel_asked.store(false, Ordering::SeqCst);
        self.holding.store(holding, Ordering::SeqCst);
    }

    /// Whether a statement is held now.
    pub fn is_holding(&self) -> bool {
        self.holding.load(Ordering::SeqCst)
    }

    /// Completes when a cancel request arrives for the held statement.
    pub async fn cancelled(&self) {
        loop {
            // Registered before the flag is read, so a cancel in between still wakes us.
            let woken = self.held.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if self.cancel_asked.load(Ordering::SeqCst) {
                return;
            }
            woken.await;
        }
    }
}

/// Every live session's key.
#[derive(Debug, Default)]
pub struct Cancels {
    by_key: Mutex<HashMap<Key, Arc<CancelEntry>>>,
}

/// Removes the key when the session ends.
pub struct Registration<'a> {
    cancels: &'a Cancels,
    pub key: Key,
    pub entry: Arc<CancelEntry>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.cancels.lock().remove(&self.key);
    }
}

impl Cancels {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<CancelEntry>>> {
        self.by_key.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Gives a session a key of its own (the server's pid, a fresh random secret),
    /// mapped to the server's.
    pub fn register(&self, upstream: SocketAddr, server_key: Key) -> Registration<'_> {
        let entry = Arc::new(CancelEntry {
            upstream,
            server_key,
            holding: AtomicBool::new(false),
            cancel_asked: AtomicBool::new(false),
            held: Notify::new(),
        });
        let mut map = self.lock();
        // The client sees the server's real process id (drivers compare it with the
        // sender of a notification, and with pg_backend_pid()); only the secret is ours.
        let key = loop {
            let key = (server_key.0, random_secret());
            if !map.contains_key(&key) {
                break key;
            }
        };
        map.insert(key, Arc::clone(&entry));
        Registration {
            cancels: self,
            key,
            entry,
        }
    }

    /// Handles a cancel request's body (`pid`, `secret`). An unknown key is ignored,
    /// as PostgreSQL does, so keys cannot be probed.
    pub async fn cancel(&self, body: &[u8], mark: u32) {
        let (Some(pid), Some(secret)) = (wire::be_i32(body), body.get(4..).and_then(wire::be_i32))
        else {
            return;
        };
        let Some(entry) = self.lock().get(&(pid, secret)).cloned() else {
            tracing::debug!("Cancel request with an unknown key ignored");
            return;
        };
        if entry.holding.load(Ordering::SeqCst) {
            tracing::info!("Cancel request ends a held statement");
            entry.cancel_asked.store(true, Ordering::SeqCst);
            entry.held.notify_waiters();
            return;
        }
        let (pid, secret) = entry.server_key;
        let mut body = pid.to_be_bytes().to_vec();
        body.extend_from_slice(&secret.to_be_bytes());
        let packet = wire::startup_packet(CANCEL_REQUEST, &body);
        match crate::proto::tcp::connect_upstream(entry.upstream, mark).await {
            Ok(mut server) => {
                if let Err(error) = server.write_all(&packet).await {
                    tracing::warn!(%error, "Cannot pass a cancel request on");
                }
            }
            Err(error) => tracing::warn!(%error, "Cannot pass a cancel request on"),
        }
    }
}

/// A secret no client can guess: from the OS's random source.
fn random_secret() -> i32 {
    let mut bytes = [0u8; 4];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness: fall back to a per-process keyed hash of the time. Still
        // unpredictable to a client without the process's random hash keys.
        use std::hash::{BuildHasher as _, RandomState};
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let hash = RandomState::new().hash_one(nanos).to_be_bytes();
        bytes.copy_from_slice(hash.get(..4).unwrap_or(&[1, 2, 3, 4]));
    }
    i32::from_be_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn body(key: Key) -> Vec<u8> {
        let mut b = key.0.to_be_bytes().to_vec();
        b.extend_from_slice(&key.1.to_be_bytes());
        b
    }

    /// A cancel that arrives after the hold began but before anyone waits for it
    /// still ends the hold; and it does not end the next one.
    #[tokio::test]
    async fn an_early_cancel_is_not_lost_and_does_not_outlive_its_hold() {
        let cancels = Cancels::default();
        let upstream: SocketAddr = ([127, 0, 0, 1], 9).into();
        let registration = cancels.register(upstream, (42, 7));
        let entry = Arc::clone(&registration.entry);
        entry.set_holding(true);
        cancels.cancel(&body(registration.key), 0).await;
        let ended = tokio::time::timeout(Duration::from_secs(5), entry.cancelled()).await;
        assert!(ended.is_ok(), "the cancel sent before the wait was lost");

        entry.set_holding(false);
        entry.set_holding(true);
        let ended = tokio::time::timeout(Duration::from_millis(100), entry.cancelled()).await;
        assert!(ended.is_err(), "an old cancel ended a new hold");
    }
}
