//! Approvals keyed by approver, identity links, and a store created before migration
//! 0005 (approvals keyed by uid) opened by this version.

#![expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

use super::*;
use crate::identity::{Approver, Principal};
use sqlx::migrate::Migrator;
use std::{borrow::Cow, path::Path};

fn principal(uid: u32) -> Principal {
    Principal {
        pid: 4242,
        ppid: Some(1),
        uid,
        gid: uid,
        user: Some(format!("user{uid}")),
        unix_groups: vec![format!("user{uid}")],
        exe: Some("/usr/bin/psql".into()),
        cmdline: None,
        comm: "psql".into(),
        cgroup: None,
        idp: None,
    }
}

fn new_request(uid: u32) -> NewRequest {
    NewRequest {
        target: "db1".into(),
        protocol: "postgres".into(),
        action: serde_json::json!({"kind": "connect"}),
        summary: "open a connection".into(),
        principal: principal(uid),
        session_id: None,
        rule: Some("review".into()),
        approvers: vec!["dba".into()],
        quorum: 2,
        expires_at: now_ms() + 60_000,
        justification: None,
    }
}

fn alice(pid: u32) -> Approver {
    Approver::Local {
        uid: 1000,
        user: Some("alice".into()),
        unix_groups: vec!["dba".into()],
        pid,
    }
}

fn bob_idp() -> Approver {
    Approver::idp(
        "https://id.example.com",
        "sub-bob",
        Some("bob@example.com".into()),
        vec!["dba".into()],
    )
    .unwrap()
}

fn url_in(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("p.db").display())
}

/// A store at the schema of migrations 0001–0004 only, as an older Portcullis left it.
async fn open_before_0005(dir: &Path) -> Store {
    let url = url_in(dir);
    let parsed = url::parse(&url).unwrap();
    let (pool, writer) = connect(&parsed).await.unwrap();
    let old = Migrator {
        migrations: Cow::Owned(
            SQLITE_MIGRATIONS
                .iter()
                .filter(|m| m.version <= 4)
                .cloned()
                .collect(),
        ),
        ..Migrator::DEFAULT
    };
    old.run(&pool).await.unwrap();
    Store {
        pool,
        writer,
        backend: Backend::Sqlite,
        url: url.into(),
        host: "old-gw".into(),
        listen_url: None,
    }
}

#[tokio::test]
async fn an_approval_counts_once_per_approver_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&url_in(dir.path())).await.unwrap();
    let id = store.create_request(&new_request(2000)).await.unwrap().id;

    assert!(
        store
            .add_approval(&id, &alice(1), Some("ok"))
            .await
            .unwrap()
    );
    assert!(
        !store.add_approval(&id, &alice(2), None).await.unwrap(),
        "the same uid from another process is the same person"
    );
    assert!(store.add_approval(&id, &bob_idp(), None).await.unwrap());
    assert!(!store.add_approval(&id, &bob_idp(), None).await.unwrap());

    // In time order; approvals within one millisecond by key (here: idp, then uid).
    let mut approvals = store.request(&id).await.unwrap().unwrap().approvals;
    approvals.sort_by(|a, b| a.approver_key.cmp(&b.approver_key));
    let got: Vec<_> = approvals
        .iter()
        .map(|a| {
            (
                a.approver_key.as_str(),
                a.approver_label.as_str(),
                a.approver.as_str(),
                a.approver_uid,
                a.reason.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "idp:https://id.example.com#sub-bob",
                "bob@example.com (idp)",
                "bob@example.com",
                None,
                None
            ),
            (
                "uid:1000",
                "alice (uid 1000)",
                "alice",
                Some(1000),
                Some("ok")
            ),
        ]
    );

    // The identity is kept whole, as JSON, beside the key.
    let identity: String = sqlx::query_scalar(
        "SELECT identity FROM approvals WHERE request_id = $1 AND approver_key = $2",
    )
    .bind(&id)
    .bind("uid:1000")
    .fetch_one(&store.pool)
    .await
    .unwrap();
    let identity: Approver = serde_json::from_str(&identity).unwrap();
    assert_eq!(identity, alice(1));

    // The API serves approvals as JSON: local ones keep `approver` and `approver_uid`.
    let json = serde_json::to_value(&approvals).unwrap();
    assert_eq!(json[1]["approver"], "alice");
    assert_eq!(json[1]["approver_uid"], 1000);
    assert_eq!(json[0]["approver_uid"], serde_json::Value::Null);
    store.close().await;
}

#[tokio::test]
async fn identity_links_are_kept_per_uid() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&url_in(dir.path())).await.unwrap();
    assert!(store.linked_identities(1000).await.unwrap().is_empty());
    let issuer = "https://id.example.com";
    assert!(
        store
            .link_identity(1000, Some("alice"), issuer, "sub-alice")
            .await
            .unwrap()
    );
    assert!(
        !store
            .link_identity(1000, Some("alice"), issuer, "sub-alice")
            .await
            .unwrap(),
        "linking twice is one link"
    );
    assert!(
        store
            .link_identity(1000, None, "https://other.example", "a")
            .await
            .unwrap()
    );
    assert!(
        store
            .link_identity(1001, None, issuer, "sub-alice")
            .await
            .unwrap()
    );
    let links = store.linked_identities(1000).await.unwrap();
    assert_eq!(links.len(), 2);
    assert_eq!(
        (links[0].uid, links[0].user.as_deref()),
        (1000, Some("alice"))
    );
    assert!(links[0].is_idp(issuer, "sub-alice"));
    assert!(!links[0].is_idp(issuer, "sub-bob"));
    assert!(links[1].is_idp("https://other.example", "a"));
    assert!(links[0].created_at > 0);
    assert_eq!(store.linked_identities(1001).await.unwrap().len(), 1);
    store.close().await;
}

#[tokio::test]
async fn a_store_from_before_approver_keys_keeps_its_approvals_and_audit_chain() {
    let dir = tempfile::tempdir().unwrap();
    let old = open_before_0005(dir.path()).await;
    let has_links: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE name = 'identity_links'")
            .fetch_one(&old.pool)
            .await
            .unwrap();
    assert_eq!(has_links, 0, "the old schema");
    // What the old `create_request` wrote (reading it back needs the new schema).
    let id = "0190a0b0-0000-7000-8000-000000000001".to_owned();
    let principal = serde_json::to_string(&principal(2000)).unwrap();
    sqlx::query(
        "INSERT INTO requests (id, host, created_at, expires_at, target, protocol, action, \
         summary, principal, requester_uid, approvers, quorum, stage, status) \
         VALUES ($1, 'old-gw', 1, $2, 'db1', 'tcp', '{\"kind\":\"connect\"}', \
         'open a connection', $3, 2000, '[\"dba\"]', 3, 'review', 'pending')",
    )
    .bind(&id)
    .bind(now_ms() + 60_000)
    .bind(principal)
    .execute(&old.pool)
    .await
    .unwrap();
    // What the old `add_approval` wrote: a named and an unnamed approver.
    for (uid, name, at) in [(1000_i64, "alice", 10_i64), (5, "uid 5", 20)] {
        sqlx::query(
            "INSERT INTO approvals (request_id, approver_uid, approver, at, reason) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&id)
        .bind(uid)
        .bind(name)
        .bind(at)
        .bind("fine")
        .execute(&old.pool)
        .await
        .unwrap();
    }
    // And what the old gate audited for it.
    let entry = AuditEntry {
        kind: "request_approval".into(),
        subject: id.clone(),
        actor: Some("alice (uid 1000) pid 7 /usr/bin/portcullis".into()),
        data: serde_json::json!({"reason": "fine", "approver_uid": 1000, "approver_pid": 7}),
    };
    old.append_audit(&entry).await.unwrap();
    let before = old.verify_audit().await.unwrap();
    assert!(before.is_intact(), "{before:?}");
    old.close().await;

    let store = Store::open(&url_in(dir.path())).await.unwrap();
    let approvals = store.request(&id).await.unwrap().unwrap().approvals;
    let got: Vec<_> = approvals
        .iter()
        .map(|a| {
            (
                a.approver_key.as_str(),
                a.approver_label.as_str(),
                a.approver.as_str(),
                a.approver_uid,
                a.at,
                a.reason.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "uid:1000",
                "alice (uid 1000)",
                "alice",
                Some(1000),
                10,
                Some("fine")
            ),
            ("uid:5", "uid 5", "uid 5", Some(5), 20, Some("fine")),
        ]
    );
    // An old approval still counts for its person: alice cannot approve again.
    assert!(!store.add_approval(&id, &alice(99), None).await.unwrap());
    assert!(store.add_approval(&id, &bob_idp(), None).await.unwrap());
    assert!(
        store
            .link_identity(2000, None, "https://id.example.com", "s")
            .await
            .unwrap()
    );
    // The audit log was not rewritten: the same chain verifies, and new records
    // extend it.
    let after = store.verify_audit().await.unwrap();
    assert!(after.is_intact(), "{after:?}");
    assert_eq!(
        (after.last_seq, after.last_hash.as_deref()),
        (before.last_seq, before.last_hash.as_deref())
    );
    let mut entry = entry;
    entry.data = serde_json::json!({"approver_key": "uid:1000"});
    store.append_audit(&entry).await.unwrap();
    assert!(store.verify_audit().await.unwrap().is_intact());
    store.close().await;
    // Opening again applies nothing more.
    let again = Store::open(&url_in(dir.path())).await.unwrap();
    assert_eq!(
        again.request(&id).await.unwrap().unwrap().approvals.len(),
        3
    );
    again.close().await;
}
