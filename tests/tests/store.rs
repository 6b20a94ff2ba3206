//! The session store, end to end: one scenario against `SQLite` and against a real
//! `PostgreSQL` server (skipped, with the reason printed, where one cannot run).

use anyhow::{Context, ensure};
use portcullis::identity::Principal;
use portcullis::record::{
    Backend, MIN_PREFIX, NewSession, Outcome, SessionEnd, SessionFilter, SessionId, Store,
    StoreError,
};
use portcullis_tests::postgres::PgServer;

fn principal(uid: u32) -> Principal {
    Principal {
        pid: 4242,
        ppid: Some(1),
        uid,
        gid: uid,
        user: Some(format!("user{uid}")),
        unix_groups: vec!["dev".into()],
        exe: Some("/usr/bin/psql".into()),
        cmdline: Some("psql -h 10.0.0.5 -c 'select 1'".into()),
        comm: "psql".into(),
        cgroup: None,
    }
}

fn new_session(uid: Option<u32>, outcome: Outcome) -> NewSession {
    NewSession {
        protocol: "postgres".into(),
        target: Some("db1".into()),
        client_addr: "127.0.0.1:40000".into(),
        orig_dst: Some("10.0.0.5:5432".into()),
        principal: uid.map(principal),
        outcome,
        rule: None,
        reason: (outcome == Outcome::Refused).then(|| "no process owns this connection".into()),
    }
}

/// Open, record, close, list, look up, reopen: what the daemon and the CLI do.
async fn scenario(url: &str, backend: Backend) -> anyhow::Result<()> {
    let store = Store::open(url)
        .await
        .context("first open")?
        .with_host("gw-a");
    ensure!(
        store.backend() == backend,
        "backend {} for {url}",
        store.backend()
    );

    let alice = store
        .open_session(&new_session(Some(1000), Outcome::Open))
        .await?;
    let bob = store
        .open_session(&new_session(Some(1001), Outcome::Open))
        .await?;
    let refused = store
        .open_session(&new_session(None, Outcome::Refused))
        .await?;
    let end = SessionEnd {
        outcome: Outcome::Closed,
        reason: None,
        bytes_up: 10,
        bytes_down: 5_000_000_000,
    };
    store.close_session(&alice, &end).await?;

    let all = store.sessions(&SessionFilter::default()).await?;
    let ids: Vec<_> = all.iter().map(|s| s.id.clone()).collect();
    assert_eq!(
        ids,
        vec![refused.clone(), bob.clone(), alice.clone()],
        "newest first"
    );
    let limited = store
        .sessions(&SessionFilter {
            uid: None,
            limit: 2,
        })
        .await?;
    assert_eq!(limited.len(), 2);
    let mine = store
        .sessions(&SessionFilter {
            uid: Some(1000),
            limit: 10,
        })
        .await?;
    assert_eq!(mine.len(), 1);

    let got = mine.first().context("alice's session")?;
    assert_eq!(got.id, alice);
    assert_eq!(got.host, "gw-a");
    assert_eq!(got.outcome, Outcome::Closed);
    assert_eq!((got.bytes_up, got.bytes_down), (10, 5_000_000_000));
    assert!(got.ended_at.is_some_and(|end| end >= got.started_at));
    assert_eq!(got.principal, Some(principal(1000)));

    let refused_rec = store
        .session(refused.as_str())
        .await?
        .context("refused session by id")?;
    assert_eq!(refused_rec.outcome, Outcome::Refused);
    assert_eq!(refused_rec.ended_at, Some(refused_rec.started_at));
    assert_eq!(refused_rec.principal, None);
    assert_eq!(
        refused_rec.reason.as_deref(),
        Some("no process owns this connection")
    );

    // Prefixes: the time prefix alice and bob share is ambiguous; bob's shortest prefix
    // that no other id shares finds bob.
    let common = |a: &SessionId, b: &SessionId| {
        a.as_str()
            .chars()
            .zip(b.as_str().chars())
            .take_while(|(x, y)| x == y)
            .count()
    };
    let shared: String = alice.as_str().chars().take(common(&alice, &bob)).collect();
    if shared.len() >= MIN_PREFIX {
        let err = store
            .session(&shared)
            .await
            .err()
            .context("shared prefix must be ambiguous")?;
        assert!(matches!(err, StoreError::Ambiguous { .. }), "{err}");
    }
    let unique_len = common(&bob, &alice).max(common(&bob, &refused)) + 1;
    let unique: String = bob
        .as_str()
        .chars()
        .take(unique_len.max(MIN_PREFIX))
        .collect();
    let found = store
        .session(&unique.to_uppercase())
        .await?
        .context("bob by prefix")?;
    assert_eq!(found.id, bob);
    assert!(store.session("ffffffff").await?.is_none());
    store.close().await;

    // Reopen: migrations already applied are skipped, the data is still there.
    let again = Store::open(url).await.context("second open")?;
    let all_again = store_ids(&again).await?;
    assert_eq!(all_again, ids);
    again.close().await;
    Ok(())
}

async fn store_ids(store: &Store) -> anyhow::Result<Vec<SessionId>> {
    Ok(store
        .sessions(&SessionFilter::default())
        .await?
        .into_iter()
        .map(|s| s.id)
        .collect())
}

#[tokio::test]
async fn sqlite_store() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let url = format!(
        "sqlite://{}",
        dir.path().join("new/dir/portcullis.db").display()
    );
    scenario(&url, Backend::Sqlite).await
}

#[tokio::test]
async fn postgres_store() -> anyhow::Result<()> {
    let Some(pg) = PgServer::start_or_skip()? else {
        return Ok(());
    };
    pg.create_database("store")?;
    scenario(&pg.url("store"), Backend::Postgres).await?;

    let applied = pg.psql(
        "store",
        "SELECT count(*), count(DISTINCT version) FROM _sqlx_migrations",
    )?;
    let (total, distinct) = applied.trim().split_once('|').context("psql output")?;
    ensure!(
        total == distinct && total != "0",
        "migrations applied: {applied}"
    );
    Ok(())
}

/// Several gateway hosts start at once against one fresh database: the migration lock
/// lets one create the schema; all of them record.
#[tokio::test]
async fn postgres_shared_by_several_gateways() -> anyhow::Result<()> {
    let Some(pg) = PgServer::start_or_skip()? else {
        return Ok(());
    };
    pg.create_database("shared")?;
    let url = pg.url("shared");
    let (a, b, c) = tokio::try_join!(Store::open(&url), Store::open(&url), Store::open(&url))?;
    let (a, b) = (a.with_host("gw-a"), b.with_host("gw-b"));
    let from_a = a
        .open_session(&new_session(Some(1000), Outcome::Open))
        .await?;
    let from_b = b
        .open_session(&new_session(Some(1000), Outcome::Denied))
        .await?;
    let seen = c
        .sessions(&SessionFilter {
            uid: Some(1000),
            limit: 10,
        })
        .await?;
    let hosts: Vec<_> = seen
        .iter()
        .map(|s| (s.id.clone(), s.host.as_str()))
        .collect();
    assert_eq!(hosts, vec![(from_b, "gw-b"), (from_a, "gw-a")]);
    Ok(())
}

/// A failed connect names the server, never the password in the URL.
#[tokio::test]
async fn postgres_errors_do_not_leak_the_password() -> anyhow::Result<()> {
    let Some(pg) = PgServer::start_or_skip()? else {
        return Ok(());
    };
    let url = format!(
        "postgres://postgres:hunter2@{}:{}/no_such_db?password=hunter3",
        pg.host(),
        pg.port()
    );
    let err = Store::open(&url)
        .await
        .err()
        .context("a missing database must fail")?;
    let msg = format!("{err} / {err:?}");
    assert!(matches!(err, StoreError::Connect { .. }), "{msg}");
    assert!(
        !msg.contains("hunter2") && !msg.contains("hunter3"),
        "{msg}"
    );
    assert!(msg.contains(&format!("127.0.0.1:{}", pg.port())), "{msg}");
    Ok(())
}
