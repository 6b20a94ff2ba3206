//! The sessions being served right now, each with its own stop token (a child of
//! the daemon's hard stop), so an administrator can end one: `portcullis sessions
//! kill ID` (every protocol). The kill's who and why become the session's end
//! reason; the API records the kill in the audit log.

use crate::record::SessionId;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};
use tokio_util::sync::CancellationToken;

/// Who ended a session, and why.
#[derive(Debug, Clone)]
pub struct Killed {
    pub by: String,
    pub reason: String,
}

impl Killed {
    /// The session's end reason.
    #[must_use]
    pub fn describe(&self) -> String {
        format!("killed by {}: {}", self.by, self.reason)
    }
}

struct Live {
    stop: CancellationToken,
    killed: Option<Killed>,
}

/// The live sessions by id.
#[derive(Default, Clone)]
pub struct LiveSessions {
    map: Arc<Mutex<HashMap<String, Live>>>,
}

/// A served session's place in [`LiveSessions`], removed by [`Registered::finish`]
/// (or when dropped).
pub struct Registered {
    sessions: LiveSessions,
    id: String,
}

/// Why a kill failed.
#[derive(Debug, thiserror::Error)]
pub enum KillError {
    #[error("session {0} is not running on this gateway")]
    NotRunning(String),
}

impl LiveSessions {
    /// Adds session `id`, stopped by `stop`.
    #[must_use]
    pub fn register(&self, id: &SessionId, stop: CancellationToken) -> Registered {
        let live = Live { stop, killed: None };
        self.lock().insert(id.as_str().to_owned(), live);
        Registered {
            sessions: self.clone(),
            id: id.as_str().to_owned(),
        }
    }

    /// Ends the live session `id`; the first kill's who and why are kept.
    pub fn kill(&self, id: &str, killed: Killed) -> Result<(), KillError> {
        let mut map = self.lock();
        let live = map
            .get_mut(id)
            .ok_or_else(|| KillError::NotRunning(id.to_owned()))?;
        live.killed.get_or_insert(killed);
        live.stop.cancel();
        Ok(())
    }

    /// Whether session `id` is being served.
    #[must_use]
    pub fn contains(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Registered {
    /// Removes the session: who killed it, if someone did.
    #[must_use]
    pub fn finish(self) -> Option<Killed> {
        self.sessions
            .lock()
            .remove(&self.id)
            .and_then(|live| live.killed)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.sessions.lock().remove(&self.id);
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn a_kill_stops_the_session_and_is_remembered_until_it_ends() {
        let live = LiveSessions::default();
        let id: SessionId = serde_json::from_value(serde_json::json!("s-1")).unwrap();
        let stop = CancellationToken::new();
        let reg = live.register(&id, stop.clone());
        assert!(live.contains("s-1"));
        let killed = Killed {
            by: "root".into(),
            reason: "runaway".into(),
        };
        live.kill("s-1", killed).unwrap();
        assert!(stop.is_cancelled());
        assert_eq!(reg.finish().unwrap().describe(), "killed by root: runaway");
        assert!(!live.contains("s-1"));
        let again = Killed {
            by: String::new(),
            reason: String::new(),
        };
        assert!(live.kill("s-1", again).is_err());
    }
}
