//! The session store, end to end: one scenario against `SQLite` and against a real
//! `PostgreSQL` server (skipped, with the reason printed, where one cannot run).

use anyhow::{Context, ensure};
use portcullis::identity::{Approver, Principal};
use portcullis::record::{
    AuditEntry, AuditRecord, Backend, EventRecord, GENESIS_HASH, MIN_PREFIX, NewSession, Outcome,
    Recorder, SessionEnd, SessionFilter, SessionId, StatementRecord, Store, StoreError,
};
use portcullis_tests::postgres::PgServer;
use serde_json::json;

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
        idp: None,
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

/// Statement `i` of session `id`, as the proxy hands it to the recorder.
fn statement(id: &SessionId, i: i64) -> StatementRecord {
    StatementRecord {
        session_id: id.clone(),
        seq: 0,
        at_ms: 1_700_000_000_000 + i,
        text: format!("SELECT name FROM users WHERE id = $1 -- {i}"),
        params: Some(json!([i.to_string(), null])),
        classes: vec!["read".into()],
        tables: vec!["users".into()],
        verdict: "allowed".into(),
        decided_by: Some("allow-read".into()),
        request_id: None,
        reason: None,
        duration_us: Some(850),
        rows_affected: Some(1),
        command_tag: Some("SELECT 1".into()),
        error: None,
        rows: Some(json!({ "columns": ["name"], "rows": [["O'Brien ✓"]], "truncated": false })),
        hash: String::new(),
    }
}

/// Statements recorded through the recorder are stored as chained `sql` events in
/// `PostgreSQL` (the event log, issue 17); `audit verify` checks them against the
/// digest in the session's `session_closed` record and names an event edited by hand
/// in psql.
#[tokio::test]
async fn postgres_statements_are_chained_and_verified() -> anyhow::Result<()> {
    let Some(pg) = PgServer::start_or_skip()? else {
        return Ok(());
    };
    pg.create_database("statements")?;
    let store = Store::open(&pg.url("statements")).await?.with_host("gw-a");
    let id = store
        .open_session(&new_session(Some(1000), Outcome::Open))
        .await?;
    let recorder = Recorder::spawn(store.clone());
    for i in 1..=300 {
        recorder.record(statement(&id, i)).await?;
    }
    let digest = recorder.finish_session(&id).await;
    recorder.shutdown().await;
    assert_eq!(digest.count, 300);
    let closed = store
        .append_audit(&AuditEntry {
            kind: "session_closed".into(),
            subject: id.to_string(),
            actor: None,
            data: json!({ "outcome": "closed", "events": digest }),
        })
        .await?;
    let report = store.verify_audit().await?;
    ensure!(report.is_intact(), "{report}");

    let stored = store.events(&id, 0, 1000).await?;
    assert_eq!(stored.len(), 300);
    let seventh = stored.get(6).context("event 7")?;
    let mut want = EventRecord::from_statement(statement(&id, 7));
    want.seq = 7;
    want.hash.clone_from(&seventh.hash);
    assert_eq!(seventh, &want, "a statement reads back as recorded");
    assert_eq!(
        stored.last().map(|s| s.hash.as_str()),
        Some(digest.last_hash.as_str())
    );
    let page = store.events(&id, 298, 10).await?;
    let seqs: Vec<_> = page.iter().map(|s| s.seq).collect();
    assert_eq!(seqs, vec![299, 300]);

    for sql in [
        "UPDATE events SET summary = 'SELECT 0' WHERE seq = 7",
        "DELETE FROM events WHERE seq = 7",
        "TRUNCATE events",
    ] {
        let err = pg
            .psql("statements", sql)
            .err()
            .with_context(|| format!("{sql} must fail"))?;
        ensure!(format!("{err:#}").contains("append-only"), "{sql}: {err:#}");
    }

    pg.psql(
        "statements",
        "DROP TRIGGER events_no_change ON events; \
         UPDATE events SET verdict = 'denied' WHERE seq = 7",
    )?;
    let report = store.verify_audit().await?;
    let bad = report
        .first_bad
        .as_ref()
        .with_context(|| format!("tampering not caught: {report}"))?;
    assert_eq!(bad.seq, closed.seq);
    assert_eq!(
        bad.reason,
        format!(
            "events of session {id}: event 7 does not match its hash: edited, or the one \
             before it rewritten"
        )
    );
    store.close().await;
    Ok(())
}

/// Where the `PostgreSQL` migrations the daemon embeds are kept.
const PG_MIGRATIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../agent/migrations/postgres");

/// The request [`write_store_before_0005`] writes.
const OLD_REQUEST: &str = "0190a0b0-0000-7000-8000-000000000001";

/// Request [`OLD_REQUEST`] as a Portcullis from before migration 0005 (approvals keyed by
/// uid) left it at `url`: schema 0001–0004, two approvals (one by a user without a
/// name) and the audit record of the first, which is returned.
async fn write_store_before_0005(url: &str) -> anyhow::Result<AuditRecord> {
    use sqlx::migrate::Migrator;
    let id = OLD_REQUEST;
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await?;
    let all = Migrator::new(std::path::Path::new(PG_MIGRATIONS)).await?;
    ensure!(
        all.iter().any(|m| m.version == 5),
        "migration 0005 is there"
    );
    let old = Migrator {
        migrations: all.iter().filter(|m| m.version <= 4).cloned().collect(),
        ..Migrator::DEFAULT
    };
    old.run(&pool).await?;

    let principal = serde_json::to_string(&principal(2000))?;
    sqlx::query(
        "INSERT INTO requests (id, host, created_at, expires_at, target, protocol, action, \
         summary, principal, requester_uid, approvers, quorum, stage, status) \
         VALUES ($1, 'old-gw', 1, 4102444800000, 'db1', 'tcp', '{\"kind\":\"connect\"}', \
         'open a connection', $2, 2000, '[\"dba\"]', 3, 'review', 'pending')",
    )
    .bind(id)
    .bind(principal)
    .execute(&pool)
    .await?;
    for (uid, name, at) in [(1000_i64, "alice", 10_i64), (5, "uid 5", 20)] {
        sqlx::query(
            "INSERT INTO approvals (request_id, approver_uid, approver, at, reason) \
             VALUES ($1, $2, $3, $4, 'fine')",
        )
        .bind(id)
        .bind(uid)
        .bind(name)
        .bind(at)
        .execute(&pool)
        .await?;
    }
    let mut record = AuditRecord {
        seq: 1,
        at: 30,
        host: "old-gw".into(),
        kind: "request_approval".into(),
        subject: id.into(),
        actor: Some("alice (uid 1000) pid 7 /usr/bin/portcullis".into()),
        data: serde_json::value::RawValue::from_string(
            r#"{"approver_pid":7,"approver_uid":1000,"reason":"fine"}"#.into(),
        )?,
        prev_hash: GENESIS_HASH.into(),
        hash: String::new(),
    };
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
    .execute(&pool)
    .await?;
    pool.close().await;
    Ok(record)
}

/// A `PostgreSQL` store left by a Portcullis from before migration 0005 opens with this
/// version: its approvals read back under the key `uid:N` and still count for their
/// person, IdP approvals and identity links can be stored, and the audit chain
/// verifies unchanged.
#[tokio::test]
async fn postgres_store_from_before_approver_keys_opens() -> anyhow::Result<()> {
    let Some(pg) = PgServer::start_or_skip()? else {
        return Ok(());
    };
    pg.create_database("before_0005")?;
    let url = pg.url("before_0005");
    let record = write_store_before_0005(&url).await?;
    let id = OLD_REQUEST;
    let store = Store::open(&url)
        .await
        .context("open with migration 0005")?;
    let approvals = store.request(id).await?.context("the request")?.approvals;
    let got: Vec<_> = approvals
        .iter()
        .map(|a| {
            (
                a.approver_key.as_str(),
                a.approver_label.as_str(),
                a.approver.as_str(),
                a.approver_uid,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("uid:1000", "alice (uid 1000)", "alice", Some(1000)),
            ("uid:5", "uid 5", "uid 5", Some(5)),
        ]
    );
    let alice = Approver::Local {
        uid: 1000,
        user: Some("alice".into()),
        unix_groups: vec![],
        pid: 99,
    };
    ensure!(
        !store.add_approval(id, &alice, None).await?,
        "alice approved before the upgrade"
    );
    let bob = Approver::idp("https://id.example.com", "sub-bob", None, vec![])?;
    ensure!(store.add_approval(id, &bob, None).await?, "an IdP approval");
    ensure!(!store.add_approval(id, &bob, None).await?, "counted once");
    ensure!(
        store
            .link_identity(
                2000,
                Some("user2000"),
                "https://id.example.com",
                "sub-carol"
            )
            .await?
    );
    let links = store.linked_identities(2000).await?;
    ensure!(links.len() == 1, "{links:?}");

    let report = store.verify_audit().await?;
    ensure!(report.is_intact(), "{report}");
    assert_eq!(report.last_hash.as_deref(), Some(record.hash.as_str()));
    store
        .append_audit(&AuditEntry {
            kind: "request_approval".into(),
            subject: id.into(),
            actor: Some(bob.label()),
            data: json!({ "approver_key": bob.key() }),
        })
        .await?;
    let report = store.verify_audit().await?;
    ensure!(report.is_intact() && report.records == 2, "{report}");
    store.close().await;
    Ok(())
}
