//! Audit log tests on `SQLite` files in a temp dir. The same tampering scenarios run
//! against a real `PostgreSQL` in `tests/tests/audit.rs`.

#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use super::*;
use serde_json::{json, value::RawValue};
use std::path::Path;

fn entry(kind: &str, subject: &str, actor: Option<&str>, data: serde_json::Value) -> AuditEntry {
    AuditEntry {
        kind: kind.into(),
        subject: subject.into(),
        actor: actor.map(Into::into),
        data,
    }
}

async fn open_in(dir: &Path) -> Store {
    Store::open(&format!("sqlite://{}", dir.join("audit.db").display()))
        .await
        .unwrap()
        .with_host("gw1")
}

/// Appends `n` `request_decided` records, every other one with an actor.
async fn append_n(store: &Store, n: usize) -> Vec<AuditRecord> {
    let mut out = Vec::new();
    for i in 0..n {
        let record = store
            .append_audit(&entry(
                "request_decided",
                &format!("req-{i}"),
                (i.is_multiple_of(2)).then_some("alice (uid 1000)"),
                json!({ "i": i, "decision": "approve" }),
            ))
            .await
            .unwrap();
        out.push(record);
    }
    out
}

/// Runs `sql` as someone with write access to the database file would: removing the
/// append-only triggers first.
async fn tamper(store: &Store, sql: &str) {
    for trigger in ["audit_no_update", "audit_no_delete"] {
        sqlx::query(&format!("DROP TRIGGER IF EXISTS {trigger}"))
            .execute(&store.pool)
            .await
            .unwrap();
    }
    sqlx::query(sql).execute(&store.pool).await.unwrap();
}

fn bad(report: &AuditReport) -> (i64, &str) {
    let bad = report
        .first_bad
        .as_ref()
        .unwrap_or_else(|| panic!("expected a bad record: {report}"));
    (bad.seq, bad.reason.as_str())
}

#[tokio::test]
async fn appended_records_chain_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;

    let empty = store.verify_audit().await.unwrap();
    assert_eq!(empty, AuditReport::default());
    assert!(empty.is_intact());
    assert_eq!(empty.to_string(), "audit log intact: no records yet");

    let first = store
        .append_audit(&entry(
            "session_opened",
            "0196-abcd",
            None,
            json!({ "z": 1, "a": { "y": [3, { "d": null, "c": "é\"" }], "b": true } }),
        ))
        .await
        .unwrap();
    assert_eq!(first.seq, 1);
    assert_eq!(first.prev_hash, GENESIS_HASH);
    assert_eq!(first.host, "gw1");
    assert_eq!(first.actor, None);
    assert_eq!(
        first.data.get(),
        r#"{"a":{"b":true,"y":[3,{"c":"é\"","d":null}]},"z":1}"#,
        "keys sorted at every level, no spaces"
    );
    assert_eq!(first.hash.len(), 64);
    assert_eq!(first.hash, first.computed_hash());

    let rest = append_n(&store, 4).await;
    let mut all = vec![first];
    all.extend(rest);
    for (i, pair) in all.windows(2).enumerate() {
        assert_eq!(pair[1].seq, i64::try_from(i).unwrap() + 2);
        assert_eq!(pair[1].prev_hash, pair[0].hash);
        assert!(pair[1].at >= pair[0].at);
    }

    let report = store.verify_audit().await.unwrap();
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.records, 5);
    assert_eq!(report.last_seq, Some(5));
    assert_eq!(report.last_hash.as_deref(), Some(all[4].hash.as_str()));
    assert!(
        report
            .to_string()
            .starts_with("audit log intact: 5 records")
    );

    // What was returned is what was stored.
    let read = store.audit_since(None, 0, 100).await.unwrap();
    assert_eq!(read.len(), 5);
    for (got, want) in read.iter().zip(&all) {
        assert_eq!(
            serde_json::to_string(got).unwrap(),
            serde_json::to_string(want).unwrap()
        );
    }
}

#[tokio::test]
async fn exported_records_can_be_checked_offline() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;
    append_n(&store, 3).await;
    let jsonl: String = store
        .audit_since(None, 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect();
    let mut prev = GENESIS_HASH.to_owned();
    for line in jsonl.lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(value["data"].is_object(), "data exported as JSON: {line}");
        let record: AuditRecord = serde_json::from_str(line).unwrap();
        assert_eq!(record.computed_hash(), record.hash);
        assert_eq!(record.prev_hash, prev);
        prev = record.hash;
    }
}

#[tokio::test]
async fn audit_since_pages_by_seq_and_filters_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;
    let all = append_n(&store, 7).await;

    let mut seqs = Vec::new();
    let mut after = 0;
    loop {
        let page = store.audit_since(None, after, 3).await.unwrap();
        let Some(last) = page.last() else { break };
        assert!(page.len() <= 3);
        after = last.seq;
        seqs.extend(page.iter().map(|r| r.seq));
    }
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>());
    assert!(store.audit_since(None, 0, 0).await.unwrap().is_empty());

    // Move record 1..=3 into the past, as if written long ago.
    tamper(&store, "UPDATE audit SET at = 1000 WHERE seq <= 3").await;
    let recent = store.audit_since(Some(all[3].at), 0, 100).await.unwrap();
    let seqs: Vec<_> = recent.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, vec![4, 5, 6, 7]);
    let recent = store.audit_since(Some(all[3].at), 5, 100).await.unwrap();
    assert_eq!(recent.len(), 2);
}

#[tokio::test]
async fn data_that_is_not_an_object_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;
    for (data, found) in [
        (json!(null), "null"),
        (json!([1]), "an array"),
        (json!("x"), "a string"),
    ] {
        let err = store
            .append_audit(&entry("policy_reloaded", "/etc/p", None, data))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::AuditData { .. }), "{err}");
        assert!(err.to_string().contains(found), "{err}");
    }
    assert_eq!(store.verify_audit().await.unwrap().records, 0);
}

#[tokio::test]
async fn the_table_refuses_updates_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;
    append_n(&store, 2).await;
    for sql in [
        "UPDATE audit SET data = '{}' WHERE seq = 1",
        "DELETE FROM audit WHERE seq = 2",
    ] {
        let err = sqlx::query(sql).execute(&store.pool).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    assert!(store.verify_audit().await.unwrap().is_intact());
}

#[tokio::test]
async fn an_edited_record_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;
    append_n(&store, 5).await;
    tamper(
        &store,
        r#"UPDATE audit SET data = '{"decision":"deny","i":2}' WHERE seq = 3"#,
    )
    .await;
    let report = store.verify_audit().await.unwrap();
    assert_eq!(bad(&report), (3, "hash does not match its contents"));
    assert_eq!(report.records, 5, "the walk goes on to the end");
    assert_eq!(report.last_seq, Some(5));
    assert!(
        report.to_string().contains("TAMPERED: record 3"),
        "{report}"
    );

    // Any column counts, NULL and empty actor included.
    for (sql, seq) in [
        ("UPDATE audit SET actor = '' WHERE seq = 2", 2),
        ("UPDATE audit SET actor = NULL WHERE seq = 1", 1),
        ("UPDATE audit SET at = at + 1 WHERE seq = 2", 2),
        ("UPDATE audit SET host = 'gw2' WHERE seq = 1", 1),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = open_in(dir.path()).await;
        append_n(&store, 3).await;
        tamper(&store, sql).await;
        let report = store.verify_audit().await.unwrap();
        assert_eq!(
            bad(&report),
            (seq, "hash does not match its contents"),
            "{sql}"
        );
    }
}

#[tokio::test]
async fn a_deleted_record_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;
    append_n(&store, 5).await;
    tamper(&store, "DELETE FROM audit WHERE seq = 3").await;
    let report = store.verify_audit().await.unwrap();
    assert_eq!(bad(&report), (4, "seq gap after 2"));
    assert_eq!(report.records, 4);

    // Renumbering to hide the gap breaks the link instead.
    tamper(&store, "UPDATE audit SET seq = seq - 1 WHERE seq > 3").await;
    let report = store.verify_audit().await.unwrap();
    assert_eq!(bad(&report), (3, "hash does not match its contents"));

    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;
    append_n(&store, 3).await;
    tamper(&store, "DELETE FROM audit WHERE seq = 1").await;
    let report = store.verify_audit().await.unwrap();
    assert_eq!(
        bad(&report),
        (2, "seq gap after 0: the log starts at 2, not 1")
    );
}

#[tokio::test]
async fn a_rehashed_record_is_caught_by_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;
    append_n(&store, 5).await;
    let mut forged = store.audit_since(None, 2, 1).await.unwrap().remove(0);
    assert_eq!(forged.seq, 3);
    forged.data = RawValue::from_string(r#"{"decision":"deny","i":2}"#.into()).unwrap();
    forged.hash = forged.computed_hash();
    tamper(
        &store,
        &format!(
            "UPDATE audit SET data = '{}', hash = '{}' WHERE seq = 3",
            forged.data.get(),
            forged.hash
        ),
    )
    .await;
    let report = store.verify_audit().await.unwrap();
    assert_eq!(bad(&report), (4, "prev_hash does not match record 3"));

    // Forging the first record's link is named too.
    tamper(
        &store,
        &format!(
            "UPDATE audit SET prev_hash = '{}' WHERE seq = 1",
            "1".repeat(64)
        ),
    )
    .await;
    let report = store.verify_audit().await.unwrap();
    assert_eq!(bad(&report), (1, "hash does not match its contents"));
}

#[tokio::test]
async fn verify_walks_more_than_one_page() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;
    append_n(&store, 3).await;
    // Grow the log fast: 2,500 records chained here and inserted in one transaction.
    let last = store.audit_since(None, 2, 1).await.unwrap().remove(0);
    let mut prev = last;
    let mut tx = store.pool.begin().await.unwrap();
    for seq in 4..=2500 {
        let mut record = prev.clone();
        record.seq = seq;
        record.prev_hash = prev.hash.clone();
        record.hash = record.computed_hash();
        sqlx::query(
            "INSERT INTO audit (seq, at, host, kind, subject, actor, data, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(record.seq)
        .bind(record.at)
        .bind(&record.host)
        .bind(&record.kind)
        .bind(&record.subject)
        .bind(record.actor.as_deref())
        .bind(record.data.get())
        .bind(&record.prev_hash)
        .bind(&record.hash)
        .execute(&mut *tx)
        .await
        .unwrap();
        prev = record;
    }
    tx.commit().await.unwrap();
    let report = store.verify_audit().await.unwrap();
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.records, 2500);
    assert_eq!(report.last_hash.as_deref(), Some(prev.hash.as_str()));

    tamper(&store, "DELETE FROM audit WHERE seq = 2001").await;
    let report = store.verify_audit().await.unwrap();
    assert_eq!(bad(&report), (2002, "seq gap after 2000"));
    assert_eq!(report.records, 2499);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_never_fork_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    // Two stores on one file, as two processes would have.
    let a = open_in(dir.path()).await;
    let b = open_in(dir.path()).await.with_host("gw2");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50_usize {
        let store = if i.is_multiple_of(2) {
            a.clone()
        } else {
            b.clone()
        };
        tasks.spawn(async move {
            store
                .append_audit(&entry("session_opened", &format!("s{i}"), None, json!({})))
                .await
        });
    }
    let mut seqs: Vec<i64> = tasks
        .join_all()
        .await
        .into_iter()
        .map(|r| r.unwrap().seq)
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
    let report = a.verify_audit().await.unwrap();
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.records, 50);
}

#[tokio::test]
async fn an_in_memory_store_keeps_an_audit_log() {
    let store = Store::open("sqlite::memory:").await.unwrap();
    append_n(&store, 3).await;
    assert_eq!(store.verify_audit().await.unwrap().records, 3);
}

/// The encoding is a promise to everyone who kept an export: this hash was computed
/// independently (Python's hashlib) from the encoding in the module docs.
#[test]
fn the_hash_encoding_is_stable() {
    let record: AuditRecord = serde_json::from_str(
        r#"{"seq":7,"at":1700000000123,"host":"gw1","kind":"request_decided",
            "subject":"req-1","actor":"alice (uid 1000)","data":{"a":1},
            "prev_hash":"0000000000000000000000000000000000000000000000000000000000000000",
            "hash":""}"#,
    )
    .unwrap();
    assert_eq!(
        record.computed_hash(),
        "d523f177a13eddee088e28e1db5bb13864060411dac9df557c0f96c21aeec814"
    );
    let no_actor = AuditRecord {
        actor: None,
        ..record.clone()
    };
    assert_eq!(
        no_actor.computed_hash(),
        "4cfe55b364f795cac1feb331ff66f8e48c4277cd6a862022b5a6d69f134d39c6"
    );
    let empty_actor = AuditRecord {
        actor: Some(String::new()),
        ..record.clone()
    };
    assert_ne!(empty_actor.computed_hash(), no_actor.computed_hash());
    // Moving bytes from one field to the next changes the hash.
    let shifted = AuditRecord {
        kind: "request_decidedreq".into(),
        subject: "-1".into(),
        ..record.clone()
    };
    assert_ne!(shifted.computed_hash(), record.computed_hash());
    assert_eq!(GENESIS_HASH.len(), 64);
}
