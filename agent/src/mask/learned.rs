//! Learned columns: table columns where a recognizer found personal data, masked whole
//! from then on as a `mask_columns` entry would be (issue 22).
//!
//! A value recognizer sees `alice@example.com` but not `moc.elpmaxe@ecila`, its base64
//! or its letters spaced out. A protocol that knows which table column a result value
//! comes from (PostgreSQL's `RowDescription`) tells [`LearnedSet::learn`] when a
//! recognizer fires on one; from then on [`Masker::column_rule`](super::Masker) masks
//! that column whole and [`Masker::may_derive`](super::Masker) treats a statement
//! naming it like one naming a `mask_columns` column, so its transforms come back NULL.
//!
//! Reads are lock-free ([`arc_swap`]): a session checks a column against an immutable
//! map snapshot. Writes are rare (a column is learned once) and copy the map. What is
//! learned is handed to a [`Learning`] channel that a daemon task stores in the shared
//! store; the same task replaces the snapshot with what the store holds, so several
//! gateways apply what any of them learned. Names are compared ASCII-lowercased, as
//! column patterns are.

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};
use tokio::sync::mpsc;

/// Most columns learned for one target; more are not learned (and a warning says so).
pub const MAX_LEARNED: usize = 10_000;
/// Learned changes waiting to be stored; past this they are dropped with a warning
/// (the column stays masked in this gateway until it restarts).
pub const QUEUE: usize = 1_024;

/// `mask_learn` on a masking rule: whether and how its recognizers teach which
/// columns hold personal data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LearnMode {
    /// Nothing is learned; recognizers mask values only.
    Off,
    /// A column is learned when a recognizer fires on a value read from it.
    #[default]
    Results,
    /// As `results`, and the target's tables are sampled after start and reload.
    Discover,
}

/// Where a column lives, as a name that survives sessions and the catalog ids seen.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ColumnId {
    pub schema: String,
    pub table: String,
    pub column: String,
    /// The table's OID when learned (a dropped and re-created table has another).
    pub relid: i64,
    pub attnum: i64,
    /// The column's type OID as the server describes it (its base type for a domain).
    pub type_oid: i64,
}

impl ColumnId {
    /// `schema.table.column`, as the CLI names it.
    #[must_use]
    pub fn qualified(&self) -> String {
        format!("{}.{}.{}", self.schema, self.table, self.column)
    }
}

/// One learned column, as stored and listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnedColumn {
    pub target: String,
    #[serde(flatten)]
    pub id: ColumnId,
    /// The recognizer (or `regex:name`) that fired first.
    pub recognizer: String,
    /// `results` or `discover`.
    pub learned_by: String,
    /// The session whose result taught it (the discover session for `discover`).
    pub first_session: Option<String>,
    pub at_ms: i64,
    /// The gateway that learned it.
    pub host: String,
    /// Never forgotten, not even when the column is dropped or retyped.
    pub pinned: bool,
}

/// What the learning side asks the store task to do.
#[derive(Debug, Clone)]
pub enum Learning {
    Learned(LearnedColumn),
    /// The column was dropped or retyped since it was learned: forget it (unless the
    /// store has it pinned) so it is learned again if it still holds personal data.
    Stale {
        target: String,
        id: ColumnId,
    },
}

/// The learned columns of one target: a lock-free snapshot, and the queue to the store.
#[derive(Debug)]
pub struct LearnedSet {
    target: String,
    map: ArcSwap<Snapshot>,
    to_store: Option<mpsc::Sender<Learning>>,
}

/// `(table, column)`, ASCII-lowercased.
type Key = (String, String);

/// The learned columns at one moment, immutable: by name, and their names by table
/// (what a statement names is looked up by table, not by scanning every column).
#[derive(Debug, Default)]
struct Snapshot {
    columns: HashMap<Key, Entry>,
    tables: HashMap<String, Vec<String>>,
}

impl Snapshot {
    fn new(columns: HashMap<Key, Entry>) -> Self {
        let mut tables: HashMap<String, Vec<String>> = HashMap::new();
        for (table, column) in columns.keys() {
            tables
                .entry(table.clone())
                .or_default()
                .push(column.clone());
        }
        Self { columns, tables }
    }

    fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }
}

/// What the snapshot keeps of a learned column.
#[derive(Debug, Clone)]
struct Entry {
    id: ColumnId,
    pinned: bool,
    /// Learned here and not yet read back from the store: a reload keeps it.
    unsaved: bool,
}

fn key(table: &str, column: &str) -> Key {
    (table.to_ascii_lowercase(), column.to_ascii_lowercase())
}

impl LearnedSet {
    /// An empty set for `target` whose learning goes to `to_store` (none in tests).
    #[must_use]
    pub fn new(target: &str, to_store: Option<mpsc::Sender<Learning>>) -> Self {
        Self {
            target: target.to_owned(),
            map: ArcSwap::from_pointee(Snapshot::default()),
            to_store,
        }
    }

    /// The target these columns belong to.
    #[must_use]
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Whether nothing is learned.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.load().is_empty()
    }

    /// How many columns are learned.
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.load().columns.len()
    }

    /// Whether column `column` of a table named `table` (any schema) is learned.
    #[must_use]
    pub fn contains(&self, table: &str, column: &str) -> bool {
        let map = self.map.load();
        !map.is_empty() && map.columns.contains_key(&key(table, column))
    }

    /// Whether some learned column is of a table among `relations` and, unless
    /// `whole_rows`, named among `columns`.
    #[must_use]
    pub fn any_of(&self, relations: &[String], columns: &[String], whole_rows: bool) -> bool {
        let map = self.map.load();
        if map.is_empty() {
            return false;
        }
        relations.iter().any(|r| {
            map.tables.get(&unqualified(r)).is_some_and(|learned| {
                whole_rows
                    || learned
                        .iter()
                        .any(|l| columns.iter().any(|c| c.eq_ignore_ascii_case(l)))
            })
        })
    }

    /// Learns `id` (a recognizer named `recognizer` fired on a value of it), unless it
    /// is learned already: the set takes it at once, the store soon. Returns whether it
    /// was new.
    pub fn learn(&self, id: &ColumnId, recognizer: &str, how: Learned<'_>) -> bool {
        let k = key(&id.table, &id.column);
        if self.map.load().columns.contains_key(&k) {
            return false;
        }
        let mut added = false;
        self.map.rcu(|map| {
            let mut map = map.columns.clone();
            added = map.len() < MAX_LEARNED && !map.contains_key(&k);
            if added {
                map.insert(
                    k.clone(),
                    Entry {
                        id: id.clone(),
                        pinned: false,
                        unsaved: true,
                    },
                );
            }
            Snapshot::new(map)
        });
        if !added {
            return false;
        }
        tracing::info!(target = %self.target, column = %id.qualified(), recognizer, "Column learned as personal data");
        self.send(Learning::Learned(LearnedColumn {
            target: self.target.clone(),
            id: id.clone(),
            recognizer: recognizer.to_owned(),
            learned_by: how.by.to_owned(),
            first_session: how.session.map(str::to_owned),
            at_ms: now_ms(),
            host: String::new(),
            pinned: false,
        }));
        true
    }

    /// Checks a column a result shows (`id`, a table column) against what is learned
    /// under its name: the same schema with another table OID, attribute number or
    /// type means it was dropped or retyped, and an unpinned entry is forgotten so the
    /// column is learned again. Returns whether the name is (still) learned.
    pub fn check(&self, id: &ColumnId) -> bool {
        let map = self.map.load();
        let Some(entry) = map.columns.get(&key(&id.table, &id.column)) else {
            return false;
        };
        let seen = &entry.id;
        let stale = seen.schema == id.schema
            && (seen.relid != id.relid || seen.attnum != id.attnum || seen.type_oid != id.type_oid);
        if !stale || entry.pinned {
            return true;
        }
        self.forget(&id.table, &id.column);
        self.send(Learning::Stale {
            target: self.target.clone(),
            id: seen.clone(),
        });
        false
    }

    /// Removes `table.column` from this gateway's set (the store is told separately).
    pub fn forget(&self, table: &str, column: &str) {
        let k = key(table, column);
        self.map.rcu(|map| {
            let mut map = map.columns.clone();
            map.remove(&k);
            Snapshot::new(map)
        });
    }

    /// Replaces the set with what the store holds for this target, keeping what was
    /// learned here and not stored yet.
    pub fn replace(&self, stored: &[LearnedColumn]) {
        self.map.rcu(|old| {
            let mut map: HashMap<Key, Entry> = stored
                .iter()
                .take(MAX_LEARNED)
                .map(|c| {
                    let entry = Entry {
                        id: c.id.clone(),
                        pinned: c.pinned,
                        unsaved: false,
                    };
                    (key(&c.id.table, &c.id.column), entry)
                })
                .collect();
            for (k, e) in old.columns.iter().filter(|(_, e)| e.unsaved) {
                map.entry(k.clone()).or_insert_with(|| e.clone());
            }
            Snapshot::new(map)
        });
    }

    /// Marks `table.column` as stored (a reload may now drop it if the store has not).
    pub fn saved(&self, table: &str, column: &str) {
        let k = key(table, column);
        self.map.rcu(|map| {
            let mut map = map.columns.clone();
            if let Some(e) = map.get_mut(&k) {
                e.unsaved = false;
            }
            Snapshot::new(map)
        });
    }

    fn send(&self, learning: Learning) {
        if let Some(tx) = &self.to_store
            && tx.try_send(learning).is_err()
        {
            tracing::warn!(target = %self.target, "Learned-column queue full; this change is applied here but not stored");
        }
    }
}

/// How a column came to be learned, for the record.
#[derive(Debug, Clone, Copy)]
pub struct Learned<'a> {
    /// `results` or `discover`.
    pub by: &'static str,
    pub session: Option<&'a str>,
}

/// Unix milliseconds now.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A relation name as a statement wrote it, without its schema, lowercased.
fn unqualified(name: &str) -> String {
    name.rsplit('.').next().unwrap_or(name).to_ascii_lowercase()
}

/// The learned sets of every target, created on first use.
#[derive(Debug, Default)]
pub struct Registry {
    sets: RwLock<HashMap<String, Arc<LearnedSet>>>,
    to_store: Option<mpsc::Sender<Learning>>,
}

impl Registry {
    /// A registry whose sets send what they learn to `to_store`.
    #[must_use]
    pub fn new(to_store: Option<mpsc::Sender<Learning>>) -> Self {
        Self {
            sets: RwLock::default(),
            to_store,
        }
    }

    /// The set of `target`.
    #[must_use]
    pub fn target(&self, target: &str) -> Arc<LearnedSet> {
        if let Some(set) = self
            .sets
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(target)
        {
            return Arc::clone(set);
        }
        let mut sets = self
            .sets
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(
            sets.entry(target.to_owned())
                .or_insert_with(|| Arc::new(LearnedSet::new(target, self.to_store.clone()))),
        )
    }

    /// Replaces every target's set with what the store holds (targets with nothing
    /// stored are emptied, but keep what they learned and have not stored yet).
    pub fn replace_all(&self, stored: &[LearnedColumn]) {
        let mut by_target: HashMap<&str, Vec<LearnedColumn>> = HashMap::new();
        for c in stored {
            by_target.entry(&c.target).or_default().push(c.clone());
        }
        let known: Vec<String> = self
            .sets
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        for target in known {
            if !by_target.contains_key(target.as_str()) {
                self.target(&target).replace(&[]);
            }
        }
        for (target, columns) in by_target {
            self.target(target).replace(&columns);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(table: &str, column: &str, type_oid: i64) -> ColumnId {
        ColumnId {
            schema: "public".into(),
            table: table.into(),
            column: column.into(),
            relid: 16_384,
            attnum: 2,
            type_oid,
        }
    }

    const HOW: Learned<'static> = Learned {
        by: "results",
        session: None,
    };

    #[test]
    fn learns_once_and_matches_names() {
        let (tx, mut rx) = mpsc::channel(8);
        let set = LearnedSet::new("db", Some(tx));
        assert!(set.learn(&id("Customers", "email", 25), "email", HOW));
        assert!(!set.learn(&id("customers", "EMAIL", 25), "email", HOW));
        assert!(matches!(rx.try_recv(), Ok(Learning::Learned(_))));
        assert!(rx.try_recv().is_err(), "a second hit sends nothing");
        assert!(set.contains("customers", "email"));
        assert!(set.any_of(&["public.customers".into()], &["email".into()], false));
        assert!(set.any_of(&["customers".into()], &[], true));
        assert!(!set.any_of(&["orders".into()], &["email".into()], true));
    }

    #[test]
    fn retyped_columns_are_forgotten_unless_pinned() {
        let set = LearnedSet::new("db", None);
        set.learn(&id("t", "c", 25), "email", HOW);
        assert!(set.check(&id("t", "c", 25)));
        assert!(!set.check(&id("t", "c", 23)), "retyped");
        assert!(!set.contains("t", "c"));
        let mut pinned = LearnedColumn {
            target: "db".into(),
            id: id("t", "c", 25),
            recognizer: "email".into(),
            learned_by: "results".into(),
            first_session: None,
            at_ms: 0,
            host: "h".into(),
            pinned: true,
        };
        set.replace(std::slice::from_ref(&pinned));
        assert!(set.check(&id("t", "c", 23)), "pinned stays");
        pinned.pinned = false;
        set.replace(&[]);
        assert!(!set.contains("t", "c"));
    }

    #[test]
    fn a_masker_treats_learned_columns_as_column_rules() {
        use crate::mask::{MaskSpec, MaskStyle, Masker};
        let spec = |learn| MaskSpec {
            mask: vec!["email".into()],
            mask_style: MaskStyle::Last4,
            mask_learn: learn,
            ..MaskSpec::default()
        };
        let set = Arc::new(LearnedSet::new("db", None));
        let masker = Masker::compile(&[spec(LearnMode::Results)], None)
            .unwrap_or_default()
            .with_learned(Arc::clone(&set));
        assert!(masker.learning().is_some());
        assert!(!masker.has_column_rules(), "nothing learned yet");
        assert_eq!(
            masker.recognized(b"mail ada@example.com"),
            Some("email".into())
        );
        assert_eq!(masker.recognized(b"moc.elpmaxe@ada"), None);
        set.learn(&id("customers", "email", 25), "email", HOW);
        assert!(masker.has_column_rules());
        let rule = masker.column_rule("customers", "email");
        assert_eq!(
            rule.map(crate::mask::ColumnMask::style),
            Some(MaskStyle::Last4)
        );
        assert!(masker.column_rule("customers", "note").is_none());
        assert!(
            masker.column_rule("", "email").is_none(),
            "a computed column has no table"
        );
        let (relations, columns) = (vec!["customers".to_owned()], vec!["email".to_owned()]);
        assert!(masker.may_derive(&relations, &columns, false, false));
        assert!(
            masker.may_derive(&relations, &[], true, false),
            "whole rows"
        );
        assert!(!masker.may_derive(&relations, &["note".into()], false, false));
        assert!(masker.may_derive(&[], &[], false, true), "SQL not seen");
        // A rule with mask_learn = "off" never applies what others learned.
        let off = Masker::compile(&[spec(LearnMode::Off)], None)
            .unwrap_or_default()
            .with_learned(Arc::clone(&set));
        assert!(off.learning().is_none() && off.column_rule("customers", "email").is_none());
    }

    #[test]
    fn reload_keeps_unsaved() {
        let set = LearnedSet::new("db", None);
        set.learn(&id("t", "c", 25), "email", HOW);
        set.replace(&[]);
        assert!(set.contains("t", "c"), "not stored yet: kept");
        set.saved("t", "c");
        set.replace(&[]);
        assert!(!set.contains("t", "c"), "stored, then forgotten elsewhere");
    }
}
