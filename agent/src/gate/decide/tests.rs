//! Deciding held requests as local and identity-provider approvers, on an in-memory
//! store: membership, counting once per person, and no self-approval under any
//! linked identity.

#![expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

use super::*;
use crate::{
    identity::Principal,
    metrics::Metrics,
    policy::Policy,
    record::{NewRequest, Store, now_ms},
};
use std::sync::Arc;

const ISSUER: &str = "https://id.example.com";

/// Group `dba`: local user `alice`, unix group `dbadmins`, IdP group `database-admins`
/// and the email `Bob@Example.com`.
async fn gate() -> Gate {
    let dir = tempfile::tempdir().unwrap();
    let text = "[[group]]\nname = \"dba\"\nusers = [\"alice\"]\nunix_groups = [\"dbadmins\"]\n\
                idp_groups = [\"database-admins\"]\nemails = [\"Bob@Example.com\"]\n";
    std::fs::write(dir.path().join("g.toml"), text).unwrap();
    let policy = Policy::load_dir(dir.path()).unwrap();
    let store = Store::open("sqlite::memory:").await.unwrap();
    Gate::new(policy, store, Arc::new(Metrics::new()), None)
}

fn local(uid: u32, user: &str, groups: &[&str]) -> Approver {
    Approver::Local {
        uid,
        user: Some(user.into()),
        unix_groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        pid: 77,
    }
}

fn idp(subject: &str, email: Option<&str>, groups: &[&str]) -> Approver {
    Approver::idp(
        ISSUER,
        subject,
        email.map(str::to_owned),
        groups.iter().map(|g| (*g).to_owned()).collect(),
    )
    .unwrap()
}

/// A pending request by `uid` (user `carol`), needing `quorum` approvals from `dba`.
async fn request(gate: &Gate, uid: u32, quorum: u32) -> String {
    let principal = Principal {
        pid: 4242,
        ppid: None,
        uid,
        gid: uid,
        user: Some("carol".into()),
        unix_groups: vec!["dbadmins".into()],
        exe: Some("/usr/bin/psql".into()),
        cmdline: None,
        comm: "psql".into(),
        cgroup: None,
        idp: None,
    };
    let new = NewRequest {
        target: "db".into(),
        protocol: "postgres".into(),
        action: serde_json::json!({"kind": "connect"}),
        summary: "open a connection".into(),
        principal,
        session_id: None,
        rule: Some("review".into()),
        approvers: vec!["dba".into()],
        quorum,
        expires_at: now_ms() + 60_000,
        justification: None,
    };
    gate.store.create_request(&new).await.unwrap().id
}

/// The data of the last audit record of `kind`.
async fn audited(gate: &Gate, kind: &str) -> (Option<String>, serde_json::Value) {
    let records = gate.store.audit_since(None, 0, 100).await.unwrap();
    let record = records.iter().rev().find(|r| r.kind == kind).unwrap();
    let data = serde_json::from_str(record.data.get()).unwrap();
    (record.actor.clone(), data)
}

#[tokio::test]
async fn the_requester_cannot_approve_under_the_same_uid() {
    let gate = gate().await;
    let id = request(&gate, 1003, 1).await;
    // uid 1003 is in `dba` by its unix group, but it asked.
    let own = gate
        .approve(&id, &local(1003, "carol", &["dbadmins"]), None)
        .await;
    assert!(matches!(own, Err(DecideError::SelfApproval(_))), "{own:?}");
    let ok = gate
        .approve(&id, &local(1000, "alice", &[]), None)
        .await
        .unwrap();
    assert_eq!(ok.status, RequestStatus::Approved);
}

#[tokio::test]
async fn an_idp_identity_linked_to_the_requester_cannot_approve() {
    let gate = gate().await;
    let id = request(&gate, 1003, 1).await;
    let carol_online = idp("sub-carol", None, &["database-admins"]);
    // Not linked yet: as far as the gate knows, a different person.
    assert!(
        !gate
            .is_requester(
                &carol_online,
                &gate.store.request(&id).await.unwrap().unwrap()
            )
            .await
            .unwrap()
    );
    gate.store
        .link_identity(1003, Some("carol"), ISSUER, "sub-carol")
        .await
        .unwrap();
    let own = gate.approve(&id, &carol_online, None).await;
    assert!(matches!(own, Err(DecideError::SelfApproval(_))), "{own:?}");
    assert_eq!(
        own.unwrap_err().to_string(),
        format!("you asked for request {id} yourself; someone else must approve it")
    );
    // The same subject at another issuer is another person.
    let elsewhere = Approver::idp(
        "https://other.example.com",
        "sub-carol",
        None,
        vec!["database-admins".into()],
    )
    .unwrap();
    let ok = gate.approve(&id, &elsewhere, None).await.unwrap();
    assert_eq!(ok.status, RequestStatus::Approved);
}

#[tokio::test]
async fn a_second_local_account_of_the_requester_cannot_approve() {
    let gate = gate().await;
    let id = request(&gate, 1003, 1).await;
    // uid 1003 (the requester) and uid 1000 (`alice`) are linked to one IdP identity.
    for uid in [1003, 1000] {
        gate.store
            .link_identity(uid, None, ISSUER, "sub-carol")
            .await
            .unwrap();
    }
    let own = gate.approve(&id, &local(1000, "alice", &[]), None).await;
    assert!(matches!(own, Err(DecideError::SelfApproval(_))), "{own:?}");
    let bob = idp("sub-bob", Some("bob@example.com"), &[]);
    assert!(gate.approve(&id, &bob, None).await.is_ok());
}

#[tokio::test]
async fn idp_approvers_decide_by_group_or_email_and_count_once() {
    let gate = gate().await;
    let id = request(&gate, 1003, 2).await;
    let outsider = idp("sub-eve", Some("eve@example.com"), &["staff"]);
    let refused = gate.approve(&id, &outsider, None).await.unwrap_err();
    assert_eq!(
        refused.to_string(),
        format!(
            "eve@example.com (idp) is not in the approver groups of request {id} (dba); ask \
             one of them"
        )
    );
    let bob = idp("sub-bob", Some("BOB@example.com"), &[]);
    let one = gate.approve(&id, &bob, Some("looks fine")).await.unwrap();
    assert_eq!((one.status, one.approvals), (RequestStatus::Pending, 1));
    let bob_again = idp("sub-bob", Some("bob@example.com"), &["database-admins"]);
    let twice = gate.approve(&id, &bob_again, None).await;
    assert!(
        matches!(twice, Err(DecideError::AlreadyApproved(_))),
        "{twice:?}"
    );

    let (actor, data) = audited(&gate, "request_approval").await;
    assert_eq!(actor.as_deref(), Some("BOB@example.com (idp)"));
    assert_eq!(data["approver_key"], format!("idp:{ISSUER}#sub-bob"));
    assert_eq!(data["approver"]["kind"], "idp");
    assert_eq!(data["reason"], "looks fine");
    assert!(data.get("approver_uid").is_none(), "{data}");

    let two = gate
        .approve(&id, &local(1000, "alice", &[]), None)
        .await
        .unwrap();
    assert_eq!((two.status, two.approvals), (RequestStatus::Approved, 2));
    let done = gate.store.request(&id).await.unwrap().unwrap();
    assert_eq!(done.decided_by.as_deref(), Some("BOB@example.com, alice"));
    let (actor, data) = audited(&gate, "request_approval").await;
    assert_eq!(actor.as_deref(), Some("alice (uid 1000)"));
    assert_eq!(
        (data["approver_uid"].clone(), data["approver_pid"].clone()),
        (1000.into(), 77.into())
    );
    assert_eq!(data["approver_key"], "uid:1000");
    assert!(
        gate.metrics.encode().contains(
            r#"portcullis_approver_decisions_total{decision="approve",approver="idp"} 1"#
        )
    );
}

#[tokio::test]
async fn a_deny_names_the_approver_in_one_word() {
    let gate = gate().await;
    let id = request(&gate, 1003, 1).await;
    let bob = idp("sub-bob", Some("bob@example.com"), &[]);
    let denied = gate.deny(&id, &bob, "not during the freeze").await.unwrap();
    assert_eq!(denied.status, RequestStatus::Denied);
    let done = gate.store.request(&id).await.unwrap().unwrap();
    assert_eq!(done.decided_by.as_deref(), Some("bob@example.com"));
    let (actor, data) = audited(&gate, "request_denial").await;
    assert_eq!(actor.as_deref(), Some("bob@example.com (idp)"));
    assert_eq!(data["reason"], "not during the freeze");

    let id = request(&gate, 1003, 1).await;
    gate.deny(&id, &local(1000, "alice", &[]), "no")
        .await
        .unwrap();
    let done = gate.store.request(&id).await.unwrap().unwrap();
    assert_eq!(done.decided_by.as_deref(), Some("alice"));
    let (_, data) = audited(&gate, "request_denial").await;
    assert_eq!(data["approver_uid"], 1000);
}

#[tokio::test]
async fn who_may_see_a_request() {
    let gate = gate().await;
    let id = request(&gate, 1003, 1).await;
    let r = gate.store.request(&id).await.unwrap().unwrap();
    let stranger = local(2000, "eve", &["eve"]);
    assert!(
        gate.may_see(&r, &local(1003, "carol", &[]), false),
        "the requester"
    );
    assert!(
        gate.may_see(&r, &local(1000, "alice", &[]), false),
        "an approver"
    );
    assert!(gate.may_see(&r, &idp("s", None, &["database-admins"]), false));
    assert!(!gate.may_see(&r, &idp("s", Some("eve@example.com"), &[]), false));
    assert!(!gate.may_see(&r, &stranger, false));
    assert!(gate.may_see(&r, &stranger, true), "an admin");
}
