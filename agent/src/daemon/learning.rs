//! The learned-columns task: stores what sessions learn ([`crate::mask::learned`]),
//! audits it, and keeps every target's set in step with the shared store, so columns
//! another gateway learned (or an admin forgot) apply here within [`RELOAD_EVERY`].

use super::Daemon;
use crate::mask::learned::{ColumnId, LearnedColumn, Learning, Registry};
use std::{sync::Arc, time::Duration};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often the store is read again for other gateways' changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(3);

/// A registry whose sets send what they learn to the returned receiver, which
/// [`run`] drains.
#[must_use]
pub fn registry() -> (Arc<Registry>, mpsc::Receiver<Learning>) {
    let (tx, rx) = mpsc::channel(crate::mask::learned::QUEUE);
    (Arc::new(Registry::new(Some(tx))), rx)
}

/// Loads what the store holds, then stores and audits what is learned, and reloads
/// every [`RELOAD_EVERY`], until `stop` (then what is queued is still stored). After
/// the start and after each policy reload, runs discover for the targets that ask
/// for it, one run at a time.
pub async fn run(daemon: Arc<Daemon>, mut rx: mpsc::Receiver<Learning>, stop: CancellationToken) {
    reload(&daemon).await;
    let mut tick = tokio::time::interval(RELOAD_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut discovered_for = None;
    let mut discovering: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            learning = rx.recv() => match learning {
                Some(l) => apply(&daemon, l).await,
                None => return,
            },
            _ = tick.tick() => {
                reload(&daemon).await;
                let loaded = *daemon
                    .policy_loaded
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let idle = discovering.as_ref().is_none_or(tokio::task::JoinHandle::is_finished);
                if idle && discovered_for != Some(loaded) {
                    discovered_for = Some(loaded);
                    let d = Arc::clone(&daemon);
                    discovering = Some(tokio::spawn(super::discovering::discover_configured(d)));
                }
            }
        }
    }
    if let Some(task) = discovering {
        task.abort();
    }
    while let Ok(l) = rx.try_recv() {
        apply(&daemon, l).await;
    }
}

/// Replaces every target's set with the store's rows; a failed read keeps the sets.
pub async fn reload(daemon: &Daemon) {
    match daemon.store.learned_columns(None).await {
        Ok(rows) => daemon.postgres.learned.replace_all(&rows),
        Err(error) => {
            tracing::warn!(%error, "Cannot read the learned columns; keeping those known")
        }
    }
}

/// The audit subject of a learned column: `target:schema.table.column`.
#[must_use]
pub fn subject(target: &str, id: &ColumnId) -> String {
    format!("{target}:{}", id.qualified())
}

/// The audit data of a learned column.
#[must_use]
pub fn audit_data(c: &LearnedColumn, why: &str) -> serde_json::Value {
    serde_json::json!({
        "target": c.target, "schema": c.id.schema, "table": c.id.table, "column": c.id.column,
        "relid": c.id.relid, "attnum": c.id.attnum, "type_oid": c.id.type_oid,
        "recognizer": c.recognizer, "learned_by": c.learned_by, "first_session": c.first_session,
        "pinned": c.pinned, "why": why,
    })
}

async fn apply(daemon: &Daemon, learning: Learning) {
    match learning {
        Learning::Learned(c) => match daemon.store.learn_column(&c).await {
            Ok(new) => {
                daemon
                    .postgres
                    .learned
                    .target(&c.target)
                    .saved(&c.id.table, &c.id.column);
                if new {
                    let why = format!("the {} recognizer matched a value", c.recognizer);
                    daemon
                        .gate
                        .audit(
                            "column_learned",
                            &subject(&c.target, &c.id),
                            c.first_session.as_deref(),
                            audit_data(&c, &why),
                        )
                        .await;
                }
            }
            Err(error) => {
                tracing::error!(%error, column = %c.id.qualified(), "Cannot store a learned column; it stays masked on this gateway");
            }
        },
        Learning::Stale { target, id } => {
            let key = (id.schema.as_str(), id.table.as_str(), id.column.as_str());
            match daemon.store.forget_column(&target, key).await {
                Ok(Some(c)) if !c.pinned => {
                    let why = "the column was dropped or retyped; it is learned again if it \
                               still holds personal data";
                    daemon
                        .gate
                        .audit(
                            "column_forgotten",
                            &subject(&target, &id),
                            Some("portcullis"),
                            audit_data(&c, why),
                        )
                        .await;
                }
                // Pinned: the next reload brings it back.
                Ok(_) => {}
                Err(error) => tracing::error!(%error, "Cannot forget a stale learned column"),
            }
        }
    }
}
