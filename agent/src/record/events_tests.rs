//! Event log tests on `SQLite` files in a temp dir: the recorder task, events of any
//! kind, a store opened at the schema from before the event log, and `verify_audit`
//! catching tampered events. The statements table's own tests are in
//! `statements_tests`; the `PostgreSQL` side runs in `tests/tests/store.rs`.

#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use super::{
    statements_tests::{denied, open_in, statement},
    *,
};
use serde_json::json;
use std::path::Path;

/// Checks that `stored` is a whole chain ending at `digest`.
fn assert_chained(stored: &[EventRecord], digest: &ChainDigest) {
    let mut chain = ChainDigest::empty();
    for record in stored {
        assert_eq!(record.seq, chain.count + 1);
        assert_eq!(record.chain_hash(&chain.last_hash), record.hash);
        chain.count = record.seq;
        chain.last_hash.clone_from(&record.hash);
    }
    assert_eq!(&chain, digest);
}

#[tokio::test]
async fn the_recorder_numbers_chains_and_writes_each_session() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;
    let recorder = Recorder::spawn(store.clone());
    let (a, b) = (SessionId::generate(), SessionId::generate());
    // More than one batch, two sessions interleaved.
    for i in 0..600 {
        let session = if i % 3 == 0 { &b } else { &a };
        let mut record = statement(session, &format!("SELECT {i}"));
        record.seq = 99;
        record.hash = "made up by the caller".into();
        recorder.record(record).await.unwrap();
    }
    let digest_a = recorder.finish_session(&a).await;
    let digest_b = recorder.finish_session(&b).await;
    assert_eq!((digest_a.count, digest_b.count), (400, 200));
    for (session, digest) in [(&a, &digest_a), (&b, &digest_b)] {
        assert_chained(&store.events(session, 0, 1000).await.unwrap(), digest);
    }
    let first = store.events(&b, 0, 3).await.unwrap();
    let texts: Vec<_> = first.iter().map(|r| r.summary.as_str()).collect();
    assert_eq!(
        texts,
        ["SELECT 0", "SELECT 3", "SELECT 6"],
        "in the order sent"
    );
    assert_eq!(first[0].kind, "sql");
    assert_eq!(
        first[0].details,
        Some(json!({
            "text": "SELECT 0", "params": ["42"], "classes": ["read"], "tables": ["users"],
            "rows_affected": 1, "command_tag": "SELECT 1",
            "rows": { "columns": ["name"], "rows": [["alice"]], "truncated": false },
        }))
    );

    // Finished sessions are forgotten: nothing recorded since means an empty chain.
    assert_eq!(recorder.finish_session(&a).await, ChainDigest::empty());
    recorder.shutdown().await;
}

#[tokio::test]
async fn events_of_any_kind_share_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;
    let recorder = Recorder::spawn(store.clone());
    let id = SessionId::generate();
    recorder.record(statement(&id, "SELECT 1")).await.unwrap();
    let exec = EventRecord {
        session_id: id.clone(),
        seq: 0,
        at_ms: 1_700_000_002_000,
        kind: "exec".into(),
        summary: "systemctl restart app".into(),
        details: Some(json!({ "command": "systemctl restart app", "exit_status": 0 })),
        verdict: "approved".into(),
        decided_by: Some("bob".into()),
        request_id: Some("r1".into()),
        reason: None,
        duration_us: Some(5),
        error: None,
        payload: Some("ab".repeat(32)),
        hash: String::new(),
    };
    recorder.record(exec.clone()).await.unwrap();
    let digest = recorder.finish_session(&id).await;
    recorder.shutdown().await;
    let stored = store.events(&id, 0, 10).await.unwrap();
    assert_chained(&stored, &digest);
    assert_eq!(stored[1].kind, "exec");
    assert_eq!(
        EventRecord {
            seq: 2,
            hash: stored[1].hash.clone(),
            ..exec
        },
        stored[1]
    );
}

#[tokio::test]
async fn shutdown_writes_everything_sent_and_later_records_are_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;
    let recorder = Recorder::spawn(store.clone());
    let id = SessionId::generate();
    for i in 0..10 {
        recorder
            .record(statement(&id, &format!("SELECT {i}")))
            .await
            .unwrap();
    }
    let clone = recorder.clone();
    tokio::join!(recorder.shutdown(), clone.shutdown());
    assert_eq!(store.events(&id, 0, 100).await.unwrap().len(), 10);

    recorder
        .record(statement(&id, "SELECT 'late'"))
        .await
        .unwrap();
    let digest = recorder.finish_session(&id).await;
    assert_eq!(digest.count, 10, "the digest covers what was written");
    assert_eq!(store.events(&id, 0, 100).await.unwrap().len(), 10);
}

#[tokio::test]
async fn a_store_that_fails_loses_the_batch_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;
    let recorder = Recorder::spawn(store.clone());
    store.close().await;
    let id = SessionId::generate();
    recorder.record(statement(&id, "SELECT 1")).await.unwrap();
    // Chained (so `audit verify` will name the session), then lost after a retry.
    assert_eq!(recorder.finish_session(&id).await.count, 1);
    recorder.shutdown().await;
}

/// Records a session of 3 events and closes it in the audit log as the daemon does;
/// returns that audit record's `seq`.
async fn close_recorded(store: &Store, id: &SessionId) -> i64 {
    let recorder = Recorder::spawn(store.clone());
    recorder.record(statement(id, "SELECT 1")).await.unwrap();
    recorder.record(denied(id)).await.unwrap();
    recorder.record(statement(id, "SELECT 3")).await.unwrap();
    let digest = recorder.finish_session(id).await;
    recorder.shutdown().await;
    let closed = store
        .append_audit(&AuditEntry {
            kind: "session_closed".into(),
            subject: id.to_string(),
            actor: None,
            data: json!({ "outcome": "closed", "events": digest }),
        })
        .await
        .unwrap();
    closed.seq
}

#[tokio::test]
async fn verify_names_an_edited_or_deleted_event() {
    for (sql, want) in [
        (
            "UPDATE events SET verdict = 'allowed' WHERE seq = 2",
            "event 2 does not match its hash: edited, or the one before it rewritten",
        ),
        (
            "DELETE FROM events WHERE seq = 2",
            "event 2 is missing (the next stored is 3): deleted?",
        ),
        (
            "DELETE FROM events WHERE seq = 3",
            "3 events were recorded but only 2 are stored",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = open_in(dir.path()).await;
        let id = SessionId::generate();
        let seq = close_recorded(&store, &id).await;
        assert!(store.verify_audit().await.unwrap().is_intact());
        for trigger in ["events_no_update", "events_no_delete"] {
            sqlx::query(&format!("DROP TRIGGER {trigger}"))
                .execute(&store.pool)
                .await
                .unwrap();
        }
        sqlx::query(sql).execute(&store.pool).await.unwrap();
        let report = store.verify_audit().await.unwrap();
        let bad = report.first_bad.unwrap();
        assert_eq!(bad.seq, seq);
        let prefix = format!("events of session {id}: {want}");
        assert!(bad.reason.starts_with(&prefix), "{}", bad.reason);
    }
}

/// A database written before the event log existed (migrations 0001–0004, its
/// sessions' statements in `statements`) opens with today's schema, still verifies,
/// reads its statements as `sql` events, and records new sessions as events.
#[tokio::test]
async fn a_database_from_before_events_is_migrated_and_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old-migrations");
    std::fs::create_dir(&old).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    for name in [
        "0001_sessions.sql",
        "0002_requests.sql",
        "0003_audit.sql",
        "0004_statements.sql",
    ] {
        std::fs::copy(shipped.join(name), old.join(name)).unwrap();
    }
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("p.db").display());
    {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::migrate::Migrator::new(old.as_path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    // The old session, written as the old recorder did (same chain, same digest key).
    let store = open_in(dir.path()).await;
    let legacy = SessionId::generate();
    let mut digest = ChainDigest::empty();
    for mut record in [statement(&legacy, "SELECT 'old'"), denied(&legacy)] {
        digest.link(&mut record);
        store.insert_statements(&[record]).await.unwrap();
    }
    store
        .append_audit(&AuditEntry {
            kind: "session_closed".into(),
            subject: legacy.to_string(),
            actor: None,
            data: json!({ "outcome": "closed", "statements": digest }),
        })
        .await
        .unwrap();
    let fresh = SessionId::generate();
    close_recorded(&store, &fresh).await;
    let report = store.verify_audit().await.unwrap();
    assert!(report.is_intact(), "{report}");
    let old_events = store.events(&legacy, 0, 10).await.unwrap();
    assert_eq!(old_events.len(), 2);
    assert_eq!(old_events[0].kind, "sql");
    assert_eq!(old_events[0].summary, "SELECT 'old'");
    assert_eq!(old_events[1].verdict, "denied");
    assert_eq!(store.events(&fresh, 0, 10).await.unwrap().len(), 3);
}

/// While the store takes nothing (its one writer connection is held elsewhere), a full
/// queue makes `record` wait; once the store moves, every waiting event is written.
#[tokio::test]
async fn a_full_queue_makes_the_session_wait_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;
    let recorder = Recorder::spawn_with(store.clone(), None, 4, std::time::Duration::from_secs(30));
    let id = SessionId::generate();
    let held = store.writer.acquire().await.unwrap();
    let sender = {
        let recorder = recorder.clone();
        let id = id.clone();
        tokio::spawn(async move {
            for i in 0..40 {
                recorder
                    .record(statement(&id, &format!("SELECT {i}")))
                    .await
                    .unwrap();
            }
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!sender.is_finished(), "40 events cannot fit a queue of 4");
    drop(held);
    sender.await.unwrap();
    assert_eq!(recorder.finish_session(&id).await.count, 40);
    recorder.shutdown().await;
    assert_eq!(store.events(&id, 0, 100).await.unwrap().len(), 40);
}

/// Past the stall limit, `record` gives up with `Stalled` instead of waiting forever,
/// and what was queued before is still written once the store moves.
#[tokio::test]
async fn a_stalled_store_ends_the_wait_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;
    let stall = std::time::Duration::from_millis(200);
    let recorder = Recorder::spawn_with(store.clone(), None, 2, stall);
    let id = SessionId::generate();
    let held = store.writer.acquire().await.unwrap();
    let mut stalled = None;
    let mut queued = 0;
    for i in 0..20 {
        match recorder
            .record(statement(&id, &format!("SELECT {i}")))
            .await
        {
            Ok(()) => queued += 1,
            Err(e) => {
                stalled = Some(e);
                break;
            }
        }
    }
    let stalled = stalled.unwrap_or_else(|| panic!("20 events fit a queue of 2"));
    assert_eq!(stalled, Stalled(stall));
    assert!(
        stalled.to_string().contains("recording stalled"),
        "{stalled}"
    );
    drop(held);
    recorder.shutdown().await;
    assert_eq!(store.events(&id, 0, 100).await.unwrap().len(), queued);
}

/// A statement's event is written straight from its fields on the recorder's path;
/// the chain and the stored details must be exactly those of the event built as a
/// JSON value (which is how verification and readers see it).
#[test]
fn a_statement_links_as_its_event_would() {
    let id = SessionId::generate();
    let mut odd = statement(&id, "SELECT 'ü\\n\"x\"', $1\n\tFROM t -- ☃");
    odd.params = Some(json!(["a\u{1}b", null, {"z": 1, "a": [2.5, "é"]}]));
    odd.rows =
        Some(json!({ "columns": ["b", "a"], "rows": [[null, "\u{7f}"]], "truncated": true }));
    odd.command_tag = None;
    let mut null_params = denied(&id);
    null_params.params = Some(serde_json::Value::Null);
    for st in [statement(&id, "SELECT 1"), denied(&id), odd, null_params] {
        let (mut direct, mut built) = (ChainDigest::empty(), ChainDigest::empty());
        for _ in 0..2 {
            let fast = direct.link_statement(st.clone());
            let slow = built.link_event(EventRecord::from_statement(st.clone()));
            assert_eq!(fast.record.hash, slow.record.hash, "{st:?}");
            assert_eq!(fast.details, slow.details, "{st:?}");
            assert_eq!(fast.record.summary, slow.record.summary);
        }
    }
}

#[test]
fn one_line_flattens_white_space_and_cuts() {
    let slow = |text: &str, max: usize| {
        let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let cut: String = flat.chars().take(max).collect();
        if cut.chars().count() < flat.chars().count() {
            cut + "…"
        } else {
            cut
        }
    };
    for text in [
        "SELECT 1",
        " SELECT 1",
        "SELECT 1 ",
        "SELECT  1",
        "SELECT\t1",
        "SELECT\u{b}1",
        "SELECT\n  1\r\n",
        "SELECT 'é'  FROM t",
        "",
        "   ",
        "abcdefghij",
        "abcdefghijk",
    ] {
        assert_eq!(one_line(text, 10), slow(text, 10), "{text:?}");
    }
}
