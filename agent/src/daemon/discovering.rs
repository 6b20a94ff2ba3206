//! Runs `discover` ([`crate::proto::postgres::discover`]) for a target: on request
//! (`portcullis masking discover TARGET`), and for the targets whose rules say
//! `mask_learn = "discover"` after the daemon starts and after each policy reload.
//! Each run is a recorded session under the daemon's own identity.

use super::Daemon;
use crate::{
    identity::Principal,
    mask::{LearnMode, MaskSpec, MaskStyle, Masker},
    policy::{Protocol, Target, TargetAddress},
    proto::postgres::discover::{self, Limits, Report},
    record::{NewSession, Outcome, SessionEnd},
};
use std::{net::SocketAddr, sync::Arc};

/// Samples `target`'s tables and learns where recognizers fire; `asked_by` is who
/// asked (recorded). Errs, with what to do, when the target cannot be discovered.
pub async fn discover(d: &Daemon, target: &str, asked_by: &str) -> Result<Report, String> {
    let policy = d.gate.policy();
    let found = policy
        .target(target)
        .ok_or_else(|| format!("no target {target} in the policy; see `portcullis status`"))?;
    if found.protocol != Protocol::Postgres {
        return Err(format!(
            "discover reads PostgreSQL tables; {target} is not a postgres target"
        ));
    }
    if found
        .credentials
        .as_ref()
        .and_then(|c| c.user.as_ref())
        .is_none()
    {
        return Err(format!(
            "target {target} has no credentials with a user; discover logs in as the target's \
             own login, so give the target `credentials`"
        ));
    }
    let masker = detection_masker(&policy.masks_of_target(target))?.ok_or_else(|| {
        format!(
            "no rule of target {target} learns columns: discover needs a rule with `mask` \
                 (recognizers) and mask_learn other than \"off\""
        )
    })?;
    let upstream = address(found).await?;
    let target = Arc::new(found.clone());
    drop(policy);
    let principal = own_principal();
    let new = NewSession {
        protocol: "postgres".into(),
        target: Some(target.name.clone()),
        client_addr: "portcullis (masking discover)".into(),
        orig_dst: Some(upstream.to_string()),
        principal: Some(principal.clone()),
        outcome: Outcome::Open,
        rule: None,
        reason: Some(format!("masking discover, asked by {asked_by}")),
    };
    let id = d
        .store
        .open_session(&new)
        .await
        .map_err(|e| format!("cannot record the discover session: {e}"))?;
    let data = serde_json::json!({
        "target": new.target, "protocol": new.protocol, "client": new.client_addr,
        "orig_dst": new.orig_dst, "principal": new.principal, "reason": new.reason,
    });
    d.gate
        .audit("session_opened", id.as_str(), Some(asked_by), data)
        .await;
    let session = crate::proto::Session {
        id: id.clone(),
        gate: Arc::clone(&d.gate),
        recorder: d.recorder.clone(),
        principal,
        target: Arc::clone(&target),
        upstream,
        mark: d.config.mark,
        stop: d.hard_stop.clone(),
    };
    let set = d.postgres.learned.target(&target.name);
    let report = discover::scan(&session, &masker, &set, Limits::default()).await;
    let digest = d.recorder.finish_session(&id).await;
    tracing::info!(
        target = %target.name,
        learned = report.learned.len(),
        tables = report.tables_sampled,
        notes = report.notes.len(),
        ms = report.duration_ms,
        "Discover done"
    );
    let end = SessionEnd {
        outcome: Outcome::Closed,
        reason: Some(format!(
            "discover sampled {} tables and learned {} columns in {} ms",
            report.tables_sampled,
            report.learned.len(),
            report.duration_ms
        )),
        bytes_up: 0,
        bytes_down: 0,
    };
    let data = serde_json::json!({
        "outcome": end.outcome.as_str(), "reason": end.reason, "events": digest,
        "learned": report.learned, "notes": report.notes.len(),
    });
    d.gate
        .audit("session_closed", id.as_str(), None, data)
        .await;
    if let Err(error) = d.store.close_session(&id, &end).await {
        tracing::error!(%error, session = %id, "Cannot record the end of the discover session");
    }
    Ok(report)
}

/// Runs discover for every target whose rules say `mask_learn = "discover"`, one
/// after the other; failures are logged, never fatal.
pub async fn discover_configured(d: Arc<Daemon>) {
    let policy = d.gate.policy();
    let targets: Vec<String> = policy
        .targets()
        .iter()
        .filter(|t| {
            policy
                .masks_of_target(&t.name)
                .iter()
                .any(|s| s.mask_learn == LearnMode::Discover)
        })
        .map(|t| t.name.clone())
        .collect();
    drop(policy);
    for target in targets {
        if let Err(error) = discover(&d, &target, "the daemon (mask_learn = \"discover\")").await {
            tracing::warn!(%target, %error, "Discover could not run");
        }
    }
}

/// The recognizers of the rules that learn, compiled to find (styles do not matter
/// here, so no key is read); `None` when no rule learns.
fn detection_masker(specs: &[MaskSpec]) -> Result<Option<Masker>, String> {
    let learning: Vec<MaskSpec> = specs
        .iter()
        .filter(|s| {
            s.mask_learn != LearnMode::Off && !(s.mask.is_empty() && s.mask_regex.is_empty())
        })
        .map(|s| MaskSpec {
            mask: s.mask.clone(),
            mask_regex: s.mask_regex.clone(),
            mask_style: MaskStyle::Redact,
            ..MaskSpec::default()
        })
        .collect();
    if learning.is_empty() {
        return Ok(None);
    }
    Masker::compile(&learning, None)
        .map(Some)
        .map_err(|e| format!("masking cannot be set up: {e}"))
}

/// The first of the target's addresses, resolved.
async fn address(target: &Target) -> Result<SocketAddr, String> {
    match target.addresses.first() {
        Some(TargetAddress::Socket(addr)) => Ok(*addr),
        Some(TargetAddress::Host { host, port }) => tokio::net::lookup_host((host.as_str(), *port))
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| format!("cannot resolve {host}:{port}")),
        None => Err(format!("target {} has no address", target.name)),
    }
}

/// The daemon itself, as the principal of its discover sessions.
fn own_principal() -> Principal {
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    Principal {
        pid: std::process::id(),
        ppid: None,
        uid,
        gid,
        user: Some("portcullis".into()),
        unix_groups: Vec::new(),
        exe: std::env::current_exe()
            .ok()
            .map(|p| p.display().to_string()),
        cmdline: Some("portcullis daemon (masking discover)".into()),
        comm: "portcullis".into(),
        cgroup: None,
        idp: None,
    }
}
