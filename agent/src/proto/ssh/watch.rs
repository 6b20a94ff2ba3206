//! Live terminal output of SSH shells, for `portcullis sessions watch ID`: each
//! session with a recorded shell has a broadcast feed of the same (masked) output
//! its asciicast file gets. Watchers that fall behind skip output (they are told how
//! much); a shell never waits for a watcher.

use bytes::Bytes;
use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};
use tokio::sync::broadcast;

/// Output chunks a watcher may fall behind by before it skips some.
pub const BACKLOG: usize = 1024;

/// The live output feeds, by session id.
#[derive(Default)]
pub struct Feeds {
    map: Mutex<HashMap<String, broadcast::Sender<Bytes>>>,
}

impl Feeds {
    /// The feed of session `id`, made on first use.
    pub fn sender(&self, id: &str) -> broadcast::Sender<Bytes> {
        self.lock()
            .entry(id.to_owned())
            .or_insert_with(|| broadcast::channel(BACKLOG).0)
            .clone()
    }

    /// Follows session `id`'s output from now on (made on first use, so a watcher
    /// that comes before the shell sees it).
    pub fn subscribe(&self, id: &str) -> broadcast::Receiver<Bytes> {
        self.sender(id).subscribe()
    }

    /// Drops session `id`'s feed (it ended): its watchers see the end.
    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, broadcast::Sender<Bytes>>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
