//! The audit log against a real `PostgreSQL` server (skipped, with the reason printed,
//! where one cannot run): tampering by hand in psql is caught and named, and two
//! gateways appending at once to one database never fork the chain. The `SQLite` side
//! is covered by the unit tests in `agent/src/record/audit_tests.rs`.

use anyhow::{Context, ensure};
use portcullis::record::{AuditEntry, AuditRecord, AuditReport, GENESIS_HASH, Store};
use portcullis_tests::postgres::PgServer;
use serde_json::json;

fn entry(i: usize) -> AuditEntry {
    AuditEntry {
        kind: "request_decided".into(),
        subject: format!("req-{i}"),
        actor: (i.is_multiple_of(2)).then(|| "alice (uid 1000)".into()),
        data: json!({ "i": i, "decision": "approve", "reason": "ticket O'Brien-42" }),
    }
}

/// A fresh database `name` on `pg` with `n` audit records appended.
async fn store_with(pg: &PgServer, name: &str, n: usize) -> anyhow::Result<Store> {
    pg.create_database(name)?;
    let store = Store::open(&pg.url(name)).await?.with_host("gw-a");
    for i in 0..n {
        store.append_audit(&entry(i)).await?;
    }
    Ok(store)
}

/// Runs `sql` in psql as someone who owns the database would: removing the append-only
/// trigger first.
fn tamper(pg: &PgServer, db: &str, sql: &str) -> anyhow::Result<()> {
    pg.psql(
        db,
        &format!("DROP TRIGGER IF EXISTS audit_no_change ON audit; {sql}"),
    )
    .map(drop)
}

fn first_bad(report: &AuditReport) -> anyhow::Result<(i64, &str)> {
    let bad = report
        .first_bad
        .as_ref()
        .with_context(|| format!("tampering not caught: {report}"))?;
    Ok((bad.seq, bad.reason.as_str()))
}

#[tokio::test]
async fn postgres_audit_log_catches_tampering() -> anyhow::Result<()> {
    let Some(pg) = PgServer::start_or_skip()? else {
        return Ok(());
    };

    // Intact: chained from the genesis hash, verified, exported in order.
    let store = store_with(&pg, "intact", 5).await?;
    let report = store.verify_audit().await?;
    ensure!(report.is_intact(), "{report}");
    assert_eq!(report.records, 5);
    assert_eq!(report.last_seq, Some(5));
    let records = store.audit_since(None, 0, 100).await?;
    let seqs: Vec<_> = records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    let first = records.first().context("record 1")?;
    assert_eq!(first.prev_hash, GENESIS_HASH);
    assert_eq!(
        first.data.get(),
        r#"{"decision":"approve","i":0,"reason":"ticket O'Brien-42"}"#
    );
    assert_eq!(
        report.last_hash.as_deref(),
        records.last().map(|r| r.hash.as_str())
    );
    for record in &records {
        let line = serde_json::to_string(record)?;
        let back: AuditRecord = serde_json::from_str(&line)?;
        assert_eq!(back.computed_hash(), record.hash, "{line}");
    }

    // The table itself refuses changes.
    for sql in [
        "UPDATE audit SET data = '{}' WHERE seq = 1",
        "DELETE FROM audit WHERE seq = 1",
        "TRUNCATE audit",
    ] {
        let err = pg
            .psql("intact", sql)
            .err()
            .with_context(|| format!("{sql} must fail"))?;
        ensure!(format!("{err:#}").contains("append-only"), "{sql}: {err:#}");
    }
    ensure!(store.verify_audit().await?.is_intact());
    store.close().await;

    // An edited record.
    let store = store_with(&pg, "edited", 5).await?;
    tamper(
        &pg,
        "edited",
        r#"UPDATE audit SET data = '{"decision":"deny","i":2}' WHERE seq = 3"#,
    )?;
    let report = store.verify_audit().await?;
    assert_eq!(first_bad(&report)?, (3, "hash does not match its contents"));
    assert_eq!(report.records, 5);
    store.close().await;

    // A deleted record.
    let store = store_with(&pg, "deleted", 5).await?;
    tamper(&pg, "deleted", "DELETE FROM audit WHERE seq = 3")?;
    let report = store.verify_audit().await?;
    assert_eq!(first_bad(&report)?, (4, "seq gap after 2"));
    store.close().await;

    // An edited record with its hash recomputed: the next record's link gives it away.
    let store = store_with(&pg, "rehashed", 5).await?;
    let mut forged = store
        .audit_since(None, 2, 1)
        .await?
        .into_iter()
        .next()
        .context("record 3")?;
    forged.actor = Some("mallory (uid 666)".into());
    forged.hash = forged.computed_hash();
    tamper(
        &pg,
        "rehashed",
        &format!(
            "UPDATE audit SET actor = 'mallory (uid 666)', hash = '{}' WHERE seq = 3",
            forged.hash
        ),
    )?;
    let report = store.verify_audit().await?;
    assert_eq!(
        first_bad(&report)?,
        (4, "prev_hash does not match record 3")
    );

    // Appending goes on after tampering; the report still names the first bad record.
    let next = store.append_audit(&entry(5)).await?;
    assert_eq!(next.seq, 6);
    let report = store.verify_audit().await?;
    assert_eq!(first_bad(&report)?.0, 4);
    assert_eq!(report.records, 6);
    store.close().await;
    Ok(())
}

/// Two gateways (two `Store`s, two pools) append at once to one database: the advisory
/// lock hands out 1..=50 exactly once each, and the chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_appends_from_two_gateways() -> anyhow::Result<()> {
    let Some(pg) = PgServer::start_or_skip()? else {
        return Ok(());
    };
    pg.create_database("shared")?;
    let url = pg.url("shared");
    let (a, b) = tokio::try_join!(Store::open(&url), Store::open(&url))?;
    let (a, b) = (a.with_host("gw-a"), b.with_host("gw-b"));

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50_usize {
        let store = if i.is_multiple_of(2) {
            a.clone()
        } else {
            b.clone()
        };
        tasks.spawn(async move { store.append_audit(&entry(i)).await });
    }
    let mut seqs = Vec::new();
    for result in tasks.join_all().await {
        seqs.push(result?.seq);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>());

    for store in [&a, &b] {
        let report = store.verify_audit().await?;
        ensure!(report.is_intact(), "{report}");
        assert_eq!(report.records, 50);
    }
    let hosts = pg.psql(
        "shared",
        "SELECT host, count(*) FROM audit GROUP BY host ORDER BY host",
    )?;
    assert_eq!(hosts.trim(), "gw-a|25\ngw-b|25");
    Ok(())
}
