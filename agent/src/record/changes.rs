//! Cross-gateway wake-ups: with a PostgreSQL store, a decision written by one
//! gateway is announced with NOTIFY, and the gateway holding the request (it LISTENs)
//! re-reads it at once. `SQLite` has a single gateway: nothing to announce.

use super::{Backend, Store, StoreError};
use sqlx::postgres::PgListener;

/// The channel request ids are announced on.
const CHANNEL: &str = "portcullis_requests";

/// Ids of requests changed by any gateway sharing the store.
pub struct RequestChanges {
    listener: PgListener,
}

impl RequestChanges {
    /// The next changed request id. The listener reconnects by itself after a lost
    /// connection (changes made meanwhile are caught by the holds' own clocks and
    /// the next wake-up); `None` only if it cannot.
    pub async fn next(&mut self) -> Option<String> {
        loop {
            match self.listener.recv().await {
                Ok(n) => return Some(n.payload().to_owned()),
                Err(error) => {
                    tracing::warn!(%error, "Lost the store's change notifications; reconnecting");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }
}

impl Store {
    /// Tells every gateway sharing the store that request `id` changed.
    pub async fn announce_request(&self, id: &str) -> Result<(), StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(|source| self.query_error("announce a request change", source))?;
        Ok(())
    }

    /// Subscribes to request changes made by any gateway; `None` for `SQLite`.
    pub async fn request_changes(&self) -> Result<Option<RequestChanges>, StoreError> {
        let Some(url) = &self.listen_url else {
            return Ok(None);
        };
        let mut listener = PgListener::connect(url)
            .await
            .map_err(|source| self.query_error("listen for request changes", source))?;
        listener
            .listen(CHANNEL)
            .await
            .map_err(|source| self.query_error("listen for request changes", source))?;
        Ok(Some(RequestChanges { listener }))
    }
}
