//! Journal tests on `SQLite` files in a temp dir: records journaled but never stored
//! (a crash) are stored at the next open, exactly once and chained after what the
//! store had; a torn tail is skipped; stored segments are deleted. The daemon-level
//! `kill -9` test is `tests/tests/crash.rs`.

#![expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

use super::{
    statements_tests::{open_in, statement},
    *,
};
use std::{
    io::Write as _,
    path::{Path, PathBuf},
    sync::Arc,
};

/// Appends `texts` as statements of `session` straight into the journal, as a
/// recorder does before it queues them: what a crash leaves unstored.
fn journal_only(journal: &Journal, session: &SessionId, texts: &[&str]) {
    for text in texts {
        let record = Recordable::from(statement(session, text));
        let frame = Journal::frame(&record).unwrap();
        journal.append(&frame, |_| ()).unwrap();
    }
}

/// The segment files in `dir`, sorted.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

async fn summaries(store: &Store, session: &SessionId) -> Vec<String> {
    let events = store.events(session, 0, 1000).await.unwrap();
    let mut chain = ChainDigest::empty();
    for e in &events {
        assert_eq!(e.seq, chain.count + 1, "numbered without gaps");
        assert_eq!(e.chain_hash(&chain.last_hash), e.hash, "chained");
        chain.count = e.seq;
        chain.last_hash.clone_from(&e.hash);
    }
    events.into_iter().map(|e| e.summary).collect()
}

#[tokio::test]
async fn what_a_crash_left_in_the_journal_is_stored_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;
    let journal_dir = dir.path().join("journal");
    let session = SessionId::generate();

    // A run that stores two records, then journals two more and dies.
    let journal = Journal::open(&journal_dir, &store).await.unwrap();
    let recorder = Recorder::spawn_with(
        store.clone(),
        Some(Arc::new(journal)),
        16,
        std::time::Duration::from_secs(5),
    );
    recorder
        .record(statement(&session, "SELECT 1"))
        .await
        .unwrap();
    recorder
        .record(statement(&session, "SELECT 2"))
        .await
        .unwrap();
    assert!(recorder.sync(&session).await);
    recorder.shutdown().await;
    drop(recorder);
    let journal = Journal::open(&journal_dir, &store).await.unwrap();
    assert_eq!(summaries(&store, &session).await, ["SELECT 1", "SELECT 2"]);
    journal_only(&journal, &session, &["SELECT 3", "SELECT 4"]);
    drop(journal);

    // The next run stores them after what the store has, once.
    let journal = Journal::open(&journal_dir, &store).await.unwrap();
    let want = ["SELECT 1", "SELECT 2", "SELECT 3", "SELECT 4"];
    assert_eq!(summaries(&store, &session).await, want);
    assert_eq!(segment_files(&journal_dir).len(), 1, "one fresh segment");
    drop(journal);
    let _journal = Journal::open(&journal_dir, &store).await.unwrap();
    assert_eq!(summaries(&store, &session).await, want, "not stored twice");
}

#[tokio::test]
async fn records_stored_before_the_crash_are_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;
    let journal_dir = dir.path().join("journal");
    let session = SessionId::generate();
    let journal = Arc::new(Journal::open(&journal_dir, &store).await.unwrap());
    let recorder = Recorder::spawn_with(
        store.clone(),
        Some(Arc::clone(&journal)),
        16,
        std::time::Duration::from_secs(5),
    );
    for i in 0..40 {
        recorder
            .record(statement(&session, &format!("SELECT {i}")))
            .await
            .unwrap();
    }
    // Written, with the journal's position, before the "crash": the segments stay.
    let digest = recorder.finish_session(&session).await;
    assert_eq!(digest.count, 40);
    journal_only(&journal, &session, &["SELECT 40"]);
    recorder.shutdown().await;
    drop(recorder);
    drop(journal);

    let _journal = Journal::open(&journal_dir, &store).await.unwrap();
    let stored = summaries(&store, &session).await;
    assert_eq!(stored.len(), 41, "{stored:?}");
    assert_eq!(stored[40], "SELECT 40");
}

#[tokio::test]
async fn a_torn_tail_is_skipped_and_the_rest_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;
    let journal_dir = dir.path().join("journal");
    let session = SessionId::generate();
    let journal = Journal::open(&journal_dir, &store).await.unwrap();
    journal_only(&journal, &session, &["SELECT 1", "SELECT 2"]);
    drop(journal);
    // Half an entry: a length and CRC that promise more than follows.
    let segment = segment_files(&journal_dir).pop().unwrap();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap();
    file.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, b'x']).unwrap();
    drop(file);

    let _journal = Journal::open(&journal_dir, &store).await.unwrap();
    assert_eq!(summaries(&store, &session).await, ["SELECT 1", "SELECT 2"]);
}

#[tokio::test]
async fn stored_segments_are_deleted_as_the_writer_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;
    let journal_dir = dir.path().join("journal");
    let session = SessionId::generate();
    let journal = Journal::open(&journal_dir, &store).await.unwrap();
    let recorder = Recorder::spawn_journaled(store.clone(), journal);
    // Test segments close past 4 KiB: this spans many.
    let padding = "x".repeat(300);
    for i in 0..100 {
        recorder
            .record(statement(&session, &format!("SELECT {i} -- {padding}")))
            .await
            .unwrap();
    }
    recorder.finish_session(&session).await;
    let left = segment_files(&journal_dir);
    assert!(
        left.len() <= 2,
        "stored segments are deleted, the open one stays: {left:?}"
    );
    recorder.shutdown().await;
    drop(recorder);
    let _journal = Journal::open(&journal_dir, &store).await.unwrap();
    assert_eq!(summaries(&store, &session).await.len(), 100, "none twice");
}

#[tokio::test]
async fn the_journal_keeps_its_id_and_refuses_a_bad_one_or_a_second_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;
    let journal_dir = dir.path().join("journal");
    let first = Journal::open(&journal_dir, &store)
        .await
        .unwrap()
        .id()
        .to_owned();
    let again = Journal::open(&journal_dir, &store)
        .await
        .unwrap()
        .id()
        .to_owned();
    assert_eq!(first, again);
    let held = Journal::open(&journal_dir, &store).await.unwrap();
    let err = Journal::open(&journal_dir, &store).await.err().unwrap();
    assert!(err.to_string().contains("in use by another"), "{err}");
    drop(held);
    std::fs::write(journal_dir.join("id"), "not an id\n").unwrap();
    let err = Journal::open(&journal_dir, &store).await.err().unwrap();
    assert!(err.to_string().contains("not a UUID"), "{err}");
}

#[tokio::test]
async fn a_store_down_at_shutdown_leaves_its_events_to_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;
    let journal_dir = dir.path().join("journal");
    let journal = Journal::open(&journal_dir, &store).await.unwrap();
    let recorder = Recorder::spawn_journaled(store.clone(), journal);
    store.close().await;
    let session = SessionId::generate();
    recorder
        .record(statement(&session, "SELECT 1"))
        .await
        .unwrap();
    assert!(
        recorder.sync(&session).await,
        "journaled: the result may leave"
    );
    // The writer retries until the daemon stops; then the event stays journaled.
    recorder.shutdown().await;
    drop(recorder);

    let store = open_in(dir.path()).await;
    let _journal = Journal::open(&journal_dir, &store).await.unwrap();
    assert_eq!(summaries(&store, &session).await, ["SELECT 1"]);
}

#[tokio::test]
async fn a_record_waiting_for_room_holds_its_sessions_sync() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;
    let journal = Journal::open(&dir.path().join("journal"), &store)
        .await
        .unwrap();
    let recorder = Recorder::spawn_with(
        store.clone(),
        Some(Arc::new(journal)),
        2,
        std::time::Duration::from_secs(30),
    );
    // A store that takes nothing: the writer holds its batch and the queue fills.
    store.close().await;
    let session = SessionId::generate();
    let mut waiting = None;
    for i in 0..100 {
        if let Err(w) = recorder.try_record(statement(&session, &format!("SELECT {i}"))) {
            waiting = Some(w);
            break;
        }
    }
    let waiting = waiting.unwrap();
    let sync = {
        let recorder = recorder.clone();
        let session = session.clone();
        tokio::spawn(async move { recorder.sync(&session).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !sync.is_finished(),
        "sync must wait for the record still outside the journal"
    );
    drop(waiting);
    let synced = tokio::time::timeout(std::time::Duration::from_secs(10), sync).await;
    assert!(
        synced.unwrap().unwrap(),
        "journaled once the waiting record is gone"
    );
    recorder.shutdown().await;
}
