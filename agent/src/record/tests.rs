//! Store tests on `SQLite` files in a temp dir. The same scenario runs against a real
//! `PostgreSQL` in `tests/tests/store.rs`.

#![expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

use super::*;
use crate::identity::Principal;
use std::path::Path;

fn principal(uid: u32, pid: u32) -> Principal {
    Principal {
        pid,
        ppid: Some(1),
        uid,
        gid: uid,
        user: Some(format!("user{uid}")),
        unix_groups: vec![format!("user{uid}"), "dev".into()],
        exe: Some("/usr/bin/psql".into()),
        cmdline: Some("psql -h 10.0.0.5".into()),
        comm: "psql".into(),
        cgroup: Some("/user.slice".into()),
    }
}

fn new_session(uid: Option<u32>, outcome: Outcome) -> NewSession {
    NewSession {
        protocol: "tcp".into(),
        target: Some("db1".into()),
        client_addr: "127.0.0.1:40000".into(),
        orig_dst: Some("10.0.0.5:5432".into()),
        principal: uid.map(|uid| principal(uid, 4242)),
        outcome,
        rule: Some("allow-dev".into()),
        reason: None,
    }
}

async fn open_in(dir: &Path) -> Store {
    Store::open(&format!("sqlite://{}", dir.join("state/p.db").display()))
        .await
        .unwrap()
}

#[tokio::test]
async fn open_creates_the_file_and_its_directory_in_wal_mode_with_16k_pages() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;
    assert!(dir.path().join("state/p.db").is_file());
    assert_eq!(store.backend(), Backend::Sqlite);
    assert_eq!(store.backend().to_string(), "sqlite");
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(pragma(&store.pool, "page_size").await, 16384);
    store.close().await;
    // The file keeps its page size on every later open (it is in the header).
    let again = open_in(dir.path()).await;
    assert_eq!(pragma(&again.pool, "page_size").await, 16384);
    again.close().await;
}

/// The number SQLite's `PRAGMA name` reads on `conn`.
pub(super) async fn pragma<'c>(conn: impl sqlx::AnyExecutor<'c>, name: &str) -> i64 {
    sqlx::query_scalar(&format!("PRAGMA {name}"))
        .fetch_one(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn open_reports_a_directory_it_cannot_create() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file"), "").unwrap();
    let url = format!("sqlite://{}/file/sub/p.db", dir.path().display());
    let err = Store::open(&url).await.unwrap_err();
    assert!(matches!(err, StoreError::CreateDir { .. }), "{err}");
    assert!(
        err.to_string().contains("create it or fix its permissions"),
        "{err}"
    );
}

#[tokio::test]
async fn a_session_round_trips_with_its_principal() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await.with_host("gw1");
    let id = store
        .open_session(&new_session(Some(1000), Outcome::Open))
        .await
        .unwrap();

    let got = store.session(id.as_str()).await.unwrap().unwrap();
    assert_eq!(got.id, id);
    assert_eq!(got.host, "gw1");
    assert_eq!(got.principal, Some(principal(1000, 4242)));
    assert_eq!(got.outcome, Outcome::Open);
    assert_eq!(got.ended_at, None);
    assert_eq!(
        (got.protocol.as_str(), got.target.as_deref()),
        ("tcp", Some("db1"))
    );
    assert_eq!(got.client_addr, "127.0.0.1:40000");
    assert_eq!(got.orig_dst.as_deref(), Some("10.0.0.5:5432"));
    assert_eq!(
        (got.rule.as_deref(), got.reason.as_deref()),
        (Some("allow-dev"), None)
    );
    assert_eq!((got.bytes_up, got.bytes_down), (0, 0));

    // The JSON form is what the API serves.
    let json = serde_json::to_value(&got).unwrap();
    assert_eq!(json["id"], id.as_str());
    assert_eq!(json["outcome"], "open");
    let back: SessionRecord = serde_json::from_value(json).unwrap();
    assert_eq!(back, got);
}

#[tokio::test]
async fn close_records_outcome_bytes_and_end_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;
    let mut new = new_session(Some(1000), Outcome::Open);
    new.reason = Some("allowed by allow-dev".into());
    let id = store.open_session(&new).await.unwrap();
    let end = SessionEnd {
        outcome: Outcome::Closed,
        reason: None,
        bytes_up: 123,
        bytes_down: u64::MAX,
    };
    store.close_session(&id, &end).await.unwrap();

    let got = store.session(id.as_str()).await.unwrap().unwrap();
    assert_eq!(got.outcome, Outcome::Closed);
    assert_eq!(got.bytes_up, 123);
    assert_eq!(
        got.bytes_down,
        i64::MAX.unsigned_abs(),
        "saturates at the BIGINT maximum"
    );
    assert!(got.ended_at.unwrap() >= got.started_at);
    assert_eq!(
        got.reason.as_deref(),
        Some("allowed by allow-dev"),
        "None keeps the reason"
    );

    let end = SessionEnd {
        outcome: Outcome::Error,
        reason: Some("upstream reset".into()),
        bytes_up: 1,
        bytes_down: 2,
    };
    store.close_session(&id, &end).await.unwrap();
    let got = store.session(id.as_str()).await.unwrap().unwrap();
    assert_eq!(
        (got.outcome, got.reason.as_deref()),
        (Outcome::Error, Some("upstream reset"))
    );
}

#[tokio::test]
async fn closing_an_unknown_session_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;
    let id = SessionId::generate();
    let end = SessionEnd {
        outcome: Outcome::Closed,
        reason: None,
        bytes_up: 0,
        bytes_down: 0,
    };
    let err = store.close_session(&id, &end).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn a_denied_session_is_recorded_ended_in_one_call() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;
    let mut new = new_session(None, Outcome::Refused);
    new.reason = Some("no process owns this connection".into());
    let id = store.open_session(&new).await.unwrap();
    let got = store.session(id.as_str()).await.unwrap().unwrap();
    assert_eq!(got.outcome, Outcome::Refused);
    assert_eq!(got.ended_at, Some(got.started_at));
    assert_eq!(got.principal, None);
}

#[tokio::test]
async fn sessions_are_newest_first_limited_and_filtered_by_uid() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;
    let mut ids = Vec::new();
    for uid in [1000, 1001, 1000, 1000, 1001] {
        ids.push(
            store
                .open_session(&new_session(Some(uid), Outcome::Open))
                .await
                .unwrap(),
        );
    }
    let unattributed = store
        .open_session(&new_session(None, Outcome::Refused))
        .await
        .unwrap();

    let all = store.sessions(&SessionFilter::default()).await.unwrap();
    let got: Vec<_> = all.iter().map(|s| s.id.clone()).collect();
    let mut want = ids.clone();
    want.push(unattributed);
    want.reverse();
    assert_eq!(got, want, "newest first");
    assert!(all.windows(2).all(|w| w[0].started_at >= w[1].started_at));

    let two = store
        .sessions(&SessionFilter {
            uid: None,
            limit: 2,
        })
        .await
        .unwrap();
    assert_eq!(two.len(), 2);
    assert_eq!(two[0].id, want[0]);

    let mine = store
        .sessions(&SessionFilter {
            uid: Some(1000),
            limit: 100,
        })
        .await
        .unwrap();
    let got: Vec<_> = mine.iter().map(|s| s.id.clone()).collect();
    assert_eq!(got, vec![ids[3].clone(), ids[2].clone(), ids[0].clone()]);
    let mine = store
        .sessions(&SessionFilter {
            uid: Some(1000),
            limit: 1,
        })
        .await
        .unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].id, ids[3]);
    assert!(
        store
            .sessions(&SessionFilter {
                uid: Some(7),
                limit: 10
            })
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn session_lookup_by_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;
    let a = store
        .open_session(&new_session(Some(1000), Outcome::Open))
        .await
        .unwrap();
    let b = store
        .open_session(&new_session(Some(1000), Outcome::Open))
        .await
        .unwrap();
    // Ids made in the same run share a long time prefix; find where they part.
    let common = a
        .as_str()
        .chars()
        .zip(b.as_str().chars())
        .take_while(|(x, y)| x == y)
        .count();
    assert!(
        common >= MIN_PREFIX,
        "UUIDv7 ids of one run share their time prefix"
    );

    let shared = &a.as_str()[..common];
    let err = store.session(shared).await.unwrap_err();
    assert!(matches!(err, StoreError::Ambiguous { .. }), "{err}");
    assert!(err.to_string().contains("give more characters"), "{err}");

    let unique_a = &a.as_str()[..=common];
    assert_eq!(store.session(unique_a).await.unwrap().unwrap().id, a);
    let unique_b = b.as_str()[..=common].to_ascii_uppercase();
    assert_eq!(
        store.session(&unique_b).await.unwrap().unwrap().id,
        b,
        "case-insensitive"
    );
    assert_eq!(
        store.session(&format!(" {b} ")).await.unwrap().unwrap().id,
        b
    );

    assert!(store.session("ffff").await.unwrap().is_none());
    assert!(
        store
            .session("ffffffff-ffff-7fff-bfff-ffffffffffff")
            .await
            .unwrap()
            .is_none()
    );
    for bad in [
        "abc",
        "",
        "zzzz",
        "00%",
        "0000_",
        "0196'; DROP TABLE sessions; --",
    ] {
        let err = store.session(bad).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidId { .. }), "{bad}: {err}");
    }
}

#[tokio::test]
async fn reopening_applies_no_migration_twice() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;
    let id = store
        .open_session(&new_session(Some(1000), Outcome::Open))
        .await
        .unwrap();
    store.close().await;

    for _ in 0..2 {
        let store = open_in(dir.path()).await;
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
                .fetch_all(&store.pool)
                .await
                .unwrap();
        let embedded: Vec<i64> = SQLITE_MIGRATIONS.iter().map(|m| m.version).collect();
        assert_eq!(applied, embedded);
        assert!(
            store.session(id.as_str()).await.unwrap().is_some(),
            "data survives"
        );
        store.close().await;
    }
}

#[tokio::test]
async fn an_in_memory_store_works() {
    let store = Store::open("sqlite::memory:").await.unwrap();
    let id = store
        .open_session(&new_session(Some(1), Outcome::Denied))
        .await
        .unwrap();
    assert_eq!(
        store.sessions(&SessionFilter::default()).await.unwrap()[0].id,
        id
    );
}

#[test]
fn outcome_words() {
    for outcome in [
        Outcome::Open,
        Outcome::Closed,
        Outcome::Denied,
        Outcome::Refused,
        Outcome::Error,
    ] {
        assert_eq!(outcome.to_string().parse::<Outcome>().unwrap(), outcome);
        assert_eq!(serde_json::to_value(outcome).unwrap(), outcome.to_string());
    }
    assert!("Closed".parse::<Outcome>().is_err());
    assert_eq!(
        SessionFilter::default(),
        SessionFilter {
            uid: None,
            limit: 100
        }
    );
}
