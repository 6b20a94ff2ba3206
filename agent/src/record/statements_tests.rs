//! Tests of the statements table sessions were recorded in before the event log, on
//! `SQLite` files in a temp dir: the chain's encoding, the store operations, and
//! `verify_audit` catching tampered statements. The recorder and the event log are
//! tested in `events_tests`; the `PostgreSQL` side runs in `tests/tests/store.rs`.

#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use super::{statements::Encoded, tests::pragma, *};
use serde_json::json;
use std::path::Path;

pub(super) async fn open_in(dir: &Path) -> Store {
    Store::open(&format!("sqlite://{}", dir.join("p.db").display()))
        .await
        .unwrap()
        .with_host("gw1")
}

fn session_id(id: &str) -> SessionId {
    serde_json::from_value(json!(id)).unwrap()
}

/// A read, as the proxy would hand it over: `seq` 0, no hash.
pub(super) fn statement(session: &SessionId, text: &str) -> StatementRecord {
    StatementRecord {
        session_id: session.clone(),
        seq: 0,
        at_ms: 1_700_000_000_123,
        text: text.into(),
        params: Some(json!(["42"])),
        classes: vec!["read".into()],
        tables: vec!["users".into()],
        verdict: "allowed".into(),
        decided_by: Some("allow-read".into()),
        request_id: None,
        reason: None,
        duration_us: Some(1234),
        rows_affected: Some(1),
        command_tag: Some("SELECT 1".into()),
        error: None,
        rows: Some(json!({ "columns": ["name"], "rows": [["alice"]], "truncated": false })),
        hash: String::new(),
    }
}

/// A denied drop: the optional fields empty.
pub(super) fn denied(session: &SessionId) -> StatementRecord {
    StatementRecord {
        at_ms: 1_700_000_001_000,
        text: "DROP TABLE users".into(),
        params: None,
        classes: vec!["ddl".into(), "drop".into()],
        verdict: "denied".into(),
        decided_by: Some("no-drop".into()),
        reason: Some("dropping tables needs a review".into()),
        duration_us: None,
        rows_affected: None,
        command_tag: None,
        error: Some("42501 Portcullis: denied".into()),
        rows: None,
        ..statement(session, "")
    }
}

/// Runs `sql` as someone with write access to the database file would: removing the
/// append-only triggers first.
async fn tamper(store: &Store, sql: &str) {
    for trigger in ["statements_no_update", "statements_no_delete"] {
        sqlx::query(&format!("DROP TRIGGER IF EXISTS {trigger}"))
            .execute(&store.pool)
            .await
            .unwrap();
    }
    sqlx::query(sql).execute(&store.pool).await.unwrap();
}

/// The encoding is a promise to everyone who keeps recordings: these hashes were
/// computed independently (Python's `json.dumps(sort_keys=True, separators=(",", ":"))`
/// and `hashlib.sha256`) from the encoding in the module docs.
#[test]
fn the_chain_hash_encoding_is_stable() {
    let session = session_id("0196f0c2-0000-7000-8000-000000000001");
    let mut chain = StatementsDigest::empty();
    let mut first = statement(&session, "SELECT name FROM users WHERE id = $1");
    chain.link(&mut first);
    assert_eq!(first.seq, 1);
    assert_eq!(
        first.hash,
        "268cd5dde8f88f930cb0879f5b0984fd7205094fc9907617f008615f28e35804"
    );
    let mut second = denied(&session);
    chain.link(&mut second);
    assert_eq!(second.seq, 2);
    assert_eq!(
        second.hash,
        "f64a794bacfcca29460cc3c878f2e753b2ee5ad66a05b757d92941c80896f399"
    );
    assert_eq!(
        chain,
        StatementsDigest {
            count: 2,
            last_hash: second.hash.clone()
        }
    );
    assert_eq!(second.chain_hash(&first.hash), second.hash);
    assert_ne!(second.chain_hash(GENESIS_HASH), second.hash);
}

/// A field added to `StatementRecord` but not to the hash would go unprotected.
#[test]
fn the_hash_covers_every_field_but_hash() {
    let record = statement(&session_id("0196f0c2-0000-7000-8000-000000000001"), "x");
    let mut serialized = serde_json::to_value(&record).unwrap();
    serialized.as_object_mut().unwrap().remove("hash").unwrap();
    assert_eq!(record.hashed_fields(), serialized);
    let empty = denied(&record.session_id);
    let mut serialized = serde_json::to_value(&empty).unwrap();
    serialized.as_object_mut().unwrap().remove("hash");
    assert_eq!(empty.hashed_fields(), serialized);
}

/// The hash is computed from the fields directly; it must hash the very bytes the
/// documented encoding (canonical JSON of `hashed_fields`) gives.
#[test]
fn the_direct_encoding_matches_canonical_json() {
    let id = session_id("0196f0c2-0000-7000-8000-000000000001");
    let mut odd = statement(&id, "SELECT '\"quoted\" \\ back\tslash\u{1}', 'é✓'");
    odd.params = Some(json!([null, "x\ny", {"b": 1, "a": [true, 2.5]}]));
    odd.rows = Some(json!({"rows": [["1", null]], "columns": ["z", "a"], "truncated": false}));
    odd.classes = vec![];
    odd.tables = vec!["public.\"T\"".into(), "u".into()];
    odd.error = Some("42501: nope".into());
    odd.duration_us = Some(-1);
    for record in [statement(&id, "x"), denied(&id), odd] {
        let mut direct = Vec::new();
        record.write_hashed_fields(&mut direct);
        let mut documented = String::new();
        canonical::write_canonical(&record.hashed_fields(), &mut documented);
        assert_eq!(String::from_utf8(direct).unwrap(), documented);
        // The stored JSON columns are cut from those bytes: each is its value's own
        // canonical JSON, and SQL NULL for an absent value or JSON null.
        let canonical = |value: &serde_json::Value| {
            let mut text = String::new();
            canonical::write_canonical(value, &mut text);
            text
        };
        let column = |value: &Option<serde_json::Value>| {
            value.as_ref().filter(|v| !v.is_null()).map(canonical)
        };
        let encoded = Encoded::of(record.clone());
        assert_eq!(encoded.params, column(&record.params));
        assert_eq!(encoded.rows, column(&record.rows));
        assert_eq!(encoded.classes, canonical(&json!(record.classes)));
        assert_eq!(encoded.tables, canonical(&json!(record.tables)));
    }
}

#[tokio::test]
async fn statements_round_trip_and_page_by_seq() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;
    let (a, b) = (SessionId::generate(), SessionId::generate());
    let mut chains = (StatementsDigest::empty(), StatementsDigest::empty());
    let mut batch = Vec::new();
    for i in 0..5 {
        let mut record = statement(&a, &format!("SELECT {i}"));
        chains.0.link(&mut record);
        batch.push(record);
    }
    let mut other = denied(&b);
    other.params = Some(serde_json::Value::Null);
    chains.1.link(&mut other);
    batch.push(other);
    store.insert_statements(&batch).await.unwrap();
    store.insert_statements(&[]).await.unwrap();

    let all = store.statements(&a, 0, 100).await.unwrap();
    assert_eq!(all, batch[..5]);
    let page = store.statements(&a, 2, 2).await.unwrap();
    let seqs: Vec<_> = page.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, vec![3, 4]);
    assert!(store.statements(&a, 5, 100).await.unwrap().is_empty());

    let theirs = store.statements(&b, 0, 100).await.unwrap();
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].params, None, "JSON null is stored as NULL");
    assert_eq!(theirs[0].chain_hash(GENESIS_HASH), theirs[0].hash);

    // Writing a batch again (a retry after a lost commit answer) keeps the first.
    let mut again = batch[0].clone();
    again.text = "SELECT 'other'".into();
    store.insert_statements(&[again]).await.unwrap();
    assert_eq!(store.statements(&a, 0, 1).await.unwrap(), batch[..1]);

    // A batch of which only some rows are stored writes the others, across the
    // several INSERTs a long batch takes.
    let mut longer = batch[..5].to_vec();
    for i in 5..150 {
        let mut record = statement(&a, &format!("SELECT {i}"));
        chains.0.link(&mut record);
        longer.push(record);
    }
    store.insert_statements(&longer).await.unwrap();
    assert_eq!(store.statements(&a, 0, 1000).await.unwrap(), longer);
}

#[tokio::test]
async fn the_table_refuses_updates_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;
    let id = SessionId::generate();
    let mut record = statement(&id, "SELECT 1");
    StatementsDigest::empty().link(&mut record);
    store.insert_statements(&[record]).await.unwrap();
    for sql in [
        "UPDATE statements SET text = 'SELECT 2'",
        "DELETE FROM statements",
    ] {
        let err = sqlx::query(sql).execute(&store.pool).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
}

// ---- verification ----

/// A store holding 3 statements of one session as recorded before events existed,
/// closed in the audit log (record 2, between two unrelated records), and that audit
/// record's `seq`.
async fn closed_session(dir: &Path) -> (Store, SessionId, i64) {
    let store = open_in(dir).await;
    let id = SessionId::generate();
    let mut digest = StatementsDigest::empty();
    for mut record in [
        statement(&id, "SELECT 1"),
        denied(&id),
        statement(&id, "SELECT 3"),
    ] {
        digest.link(&mut record);
        store.insert_statements(&[record]).await.unwrap();
    }
    let entry = |kind: &str, data| AuditEntry {
        kind: kind.into(),
        subject: id.to_string(),
        actor: None,
        data,
    };
    store
        .append_audit(&entry("session_opened", json!({})))
        .await
        .unwrap();
    let closed = store
        .append_audit(&entry(
            "session_closed",
            json!({ "outcome": "closed", "statements": digest }),
        ))
        .await
        .unwrap();
    store
        .append_audit(&entry("policy_reloaded", json!({})))
        .await
        .unwrap();
    let report = store.verify_audit().await.unwrap();
    assert!(report.is_intact(), "{report}");
    (store, id, closed.seq)
}

/// What `verify_audit` says about the session closed in audit record `seq`.
async fn verdict(store: &Store, id: &SessionId, seq: i64) -> String {
    let report = store.verify_audit().await.unwrap();
    let bad = report
        .first_bad
        .as_ref()
        .unwrap_or_else(|| panic!("tampering not caught: {report}"));
    assert_eq!(bad.seq, seq, "{report}");
    assert_eq!(report.records, 3, "the walk goes on to the end");
    let prefix = format!("statements of session {id}: ");
    assert!(bad.reason.starts_with(&prefix), "{}", bad.reason);
    assert!(
        report
            .to_string()
            .contains("TAMPERED: record 2: statements"),
        "{report}"
    );
    bad.reason[prefix.len()..].to_owned()
}

#[tokio::test]
async fn verify_names_an_edited_statement() {
    let dir = tempfile::tempdir().unwrap();
    let (store, id, seq) = closed_session(dir.path()).await;
    tamper(
        &store,
        "UPDATE statements SET verdict = 'allowed', decided_by = 'allow-all' WHERE seq = 2",
    )
    .await;
    assert_eq!(
        verdict(&store, &id, seq).await,
        "statement 2 does not match its hash: edited, or the one before it rewritten"
    );
}

#[tokio::test]
async fn verify_names_a_deleted_statement() {
    let dir = tempfile::tempdir().unwrap();
    let (store, id, seq) = closed_session(dir.path()).await;
    tamper(&store, "DELETE FROM statements WHERE seq = 2").await;
    assert_eq!(
        verdict(&store, &id, seq).await,
        "statement 2 is missing (the next stored is 3): deleted?"
    );

    let dir = tempfile::tempdir().unwrap();
    let (store, id, seq) = closed_session(dir.path()).await;
    tamper(&store, "DELETE FROM statements WHERE seq = 3").await;
    assert!(
        verdict(&store, &id, seq)
            .await
            .starts_with("3 statements were recorded but only 2 are stored"),
    );
}

#[tokio::test]
async fn verify_names_an_inserted_statement() {
    let dir = tempfile::tempdir().unwrap();
    let (store, id, seq) = closed_session(dir.path()).await;
    // A forged fourth statement, correctly chained to the third.
    let third = store.statements(&id, 2, 1).await.unwrap().remove(0);
    let mut forged = StatementRecord {
        text: "SELECT 'forged'".into(),
        ..third.clone()
    };
    StatementsDigest {
        count: 3,
        last_hash: third.hash,
    }
    .link(&mut forged);
    store.insert_statements(&[forged]).await.unwrap();
    assert_eq!(
        verdict(&store, &id, seq).await,
        "4 statements are stored but 3 were recorded: rows inserted after the session closed"
    );
}

#[tokio::test]
async fn verify_names_a_rewritten_chain_and_an_unreadable_row() {
    let dir = tempfile::tempdir().unwrap();
    let (store, id, seq) = closed_session(dir.path()).await;
    // Every hash recomputed after the edit: only the digest in the audit log tells.
    let mut chain = StatementsDigest::empty();
    tamper(&store, "DELETE FROM statements").await;
    for mut record in [statement(&id, "SELECT 1"), statement(&id, "SELECT 2")] {
        chain.link(&mut record);
        store.insert_statements(&[record]).await.unwrap();
    }
    let mut third = statement(&id, "SELECT 3");
    chain.link(&mut third);
    store.insert_statements(&[third]).await.unwrap();
    assert_eq!(
        verdict(&store, &id, seq).await,
        "the last statement's hash differs from the one recorded at close: the rows were \
         rewritten"
    );

    let dir = tempfile::tempdir().unwrap();
    let (store, id, seq) = closed_session(dir.path()).await;
    tamper(
        &store,
        "UPDATE statements SET classes = 'read' WHERE seq = 1",
    )
    .await;
    let why = verdict(&store, &id, seq).await;
    assert!(
        why.starts_with("a stored row is unreadable (statement 1: "),
        "{why}"
    );
}

#[tokio::test]
async fn verify_checks_digests_of_empty_sessions_and_names_unreadable_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;
    let recorder = Recorder::spawn(store.clone());
    let quiet = SessionId::generate();
    let digest = recorder.finish_session(&quiet).await;
    let close = |id: &SessionId, statements| AuditEntry {
        kind: "session_closed".into(),
        subject: id.to_string(),
        actor: None,
        data: json!({ "statements": statements }),
    };
    store
        .append_audit(&close(&quiet, json!(digest)))
        .await
        .unwrap();
    // A tcp session: no digest, nothing to check.
    store
        .append_audit(&AuditEntry {
            data: json!({ "outcome": "closed" }),
            ..close(&quiet, json!(null))
        })
        .await
        .unwrap();
    assert!(store.verify_audit().await.unwrap().is_intact());

    // Rows for a session closed with none.
    let mut late = statement(&quiet, "SELECT 1");
    StatementsDigest::empty().link(&mut late);
    store.insert_statements(&[late]).await.unwrap();
    let report = store.verify_audit().await.unwrap();
    assert_eq!(report.first_bad.unwrap().seq, 1);

    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;
    store
        .append_audit(&close(&quiet, json!({ "count": "three" })))
        .await
        .unwrap();
    let bad = store.verify_audit().await.unwrap().first_bad.unwrap();
    assert!(
        bad.reason
            .contains("the digest in this record is unreadable"),
        "{}",
        bad.reason
    );
    recorder.shutdown().await;
}

/// Every pooled SQLite connection keeps statement journals in memory: on disk, each
/// batch of statements cost a temporary-file write per page it changed. Only the
/// recorder's connection leaves syncing to the next audit commit.
#[tokio::test]
async fn sqlite_connections_keep_temporary_data_in_memory_and_sync_as_meant() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut conn = store.pool.acquire().await.unwrap();
        let mode = pragma(&mut *conn, "temp_store").await;
        assert_eq!(mode, 2, "temp_store is MEMORY on every connection");
        held.push(conn);
    }
    let mut writer = store.writer.acquire().await.unwrap();
    let mode = pragma(&mut *writer, "temp_store").await;
    assert_eq!(mode, 2, "temp_store is MEMORY on the recorder's connection");
    // Statements are synced by the next audit commit; everything else at its commit.
    let synchronous = pragma(&mut *writer, "synchronous").await;
    assert_eq!(synchronous, 1, "NORMAL on the recorder's connection");
    for conn in &mut held {
        let synchronous = pragma(&mut **conn, "synchronous").await;
        assert_eq!(synchronous, 2, "FULL on the shared connections");
    }
}

/// The recorder writes a SQLite file through one connection of its own, whose page
/// cache no other connection's commit invalidates; an in-memory store has only the
/// one connection, which must also be the recorder's (another would be another
/// database).
#[tokio::test]
async fn the_recorder_has_a_sqlite_connection_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let file = open_in(dir.path()).await;
    assert_eq!(file.writer.options().get_max_connections(), 1);
    let _recording = file.writer.acquire().await.unwrap();
    // The shared pool still answers while the recorder's connection is taken.
    let other = tokio::time::timeout(std::time::Duration::from_secs(5), file.pool.acquire());
    assert!(
        other.await.is_ok_and(|c| c.is_ok()),
        "the shared pool is not the recorder's"
    );

    let memory = Store::open("sqlite::memory:").await.unwrap();
    let mut record = statement(&session_id("s1"), "SELECT 1");
    StatementsDigest::empty().link(&mut record);
    memory.insert_statements(&[record]).await.unwrap();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM statements")
        .fetch_one(&memory.pool)
        .await
        .unwrap();
    assert_eq!(count, 1, "an in-memory store records into its own database");
}
