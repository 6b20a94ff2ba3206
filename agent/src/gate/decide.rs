//! People deciding held actions: who may, and what their decision does.
//!
//! Rules: a deny is final; an approval counts once per approver (per
//! [`Approver::key`]); the requester can never approve their own request (admins
//! included), under any identity known to be theirs (their uid, or an identity-provider
//! identity linked to it); only members of the request's current approver groups may
//! decide. The decider's identity comes from the API socket's peer credentials (or,
//! later, a verified identity-provider login), never from what the caller says.

use super::Gate;
use crate::{
    identity::Approver,
    metrics::ApproverDecision,
    record::{RequestRecord, RequestStatus, StoreError},
};
use serde::Serialize;

/// Why a decision was refused; each message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error("no pending request {0}; list them with `portcullis approvals`")]
    NotFound(String),
    #[error("request {id} is already {status}{by}; nothing to do")]
    AlreadyDecided {
        id: String,
        status: RequestStatus,
        by: String,
    },
    #[error("you asked for request {0} yourself; someone else must approve it")]
    SelfApproval(String),
    #[error("{who} is not in the approver groups of request {id} ({groups}); ask one of them")]
    NotApprover {
        who: String,
        id: String,
        groups: String,
    },
    #[error("you already approved request {0}; it needs approvals from other people")]
    AlreadyApproved(String),
    #[error("a deny needs a reason: `portcullis deny ID --reason \"…\"`")]
    ReasonRequired,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a decision did.
#[derive(Debug, Clone, Serialize)]
pub struct Decided {
    pub request: String,
    /// The request's status after this decision.
    pub status: RequestStatus,
    pub approvals: u32,
    pub quorum: u32,
    pub message: String,
}

impl Gate {
    /// `approver` approves request `id` (or a unique prefix).
    pub async fn approve(
        &self,
        id: &str,
        approver: &Approver,
        reason: Option<&str>,
    ) -> Result<Decided, DecideError> {
        let request = self.decidable(id, approver).await?;
        if self.is_requester(approver, &request).await? {
            return Err(DecideError::SelfApproval(request.id));
        }
        if !self
            .store
            .add_approval(&request.id, approver, reason)
            .await?
        {
            return Err(DecideError::AlreadyApproved(request.id));
        }
        self.metrics
            .approver_decision(ApproverDecision::Approve, approver.kind());
        self.audit(
            "request_approval",
            &request.id,
            Some(&approver.label()),
            vote(approver, reason),
        )
        .await;
        let after = self
            .store
            .request(&request.id)
            .await?
            .ok_or_else(|| DecideError::NotFound(request.id.clone()))?;
        let count = u32::try_from(after.approvals.len()).unwrap_or(u32::MAX);
        let mut status = after.status;
        if status == RequestStatus::Pending && count >= after.quorum {
            let by: Vec<&str> = after
                .approvals
                .iter()
                .map(|a| a.approver.as_str())
                .collect();
            if self
                .store
                .finish_request(&request.id, RequestStatus::Approved, &by.join(", "), reason)
                .await?
            {
                status = RequestStatus::Approved;
            }
        }
        self.wake(&request.id);
        self.tell_other_gateways(&request.id).await;
        let message = if status == RequestStatus::Approved {
            format!("request {} approved; the held action proceeds", request.id)
        } else {
            format!(
                "approval {count} of {} recorded for request {}; it needs {} more",
                after.quorum,
                request.id,
                after.quorum.saturating_sub(count)
            )
        };
        Ok(Decided {
            request: request.id,
            status,
            approvals: count,
            quorum: after.quorum,
            message,
        })
    }

    /// `approver` denies request `id`: final.
    pub async fn deny(
        &self,
        id: &str,
        approver: &Approver,
        reason: &str,
    ) -> Result<Decided, DecideError> {
        if reason.trim().is_empty() {
            return Err(DecideError::ReasonRequired);
        }
        let request = self.decidable(id, approver).await?;
        self.audit(
            "request_denial",
            &request.id,
            Some(&approver.label()),
            vote(approver, Some(reason)),
        )
        .await;
        if !self
            .store
            .finish_request(
                &request.id,
                RequestStatus::Denied,
                &approver.name(),
                Some(reason),
            )
            .await?
        {
            let now = self
                .store
                .request(&request.id)
                .await?
                .ok_or_else(|| DecideError::NotFound(request.id.clone()))?;
            return Err(already(now));
        }
        self.metrics
            .approver_decision(ApproverDecision::Deny, approver.kind());
        self.wake(&request.id);
        self.tell_other_gateways(&request.id).await;
        let approvals = u32::try_from(request.approvals.len()).unwrap_or(u32::MAX);
        Ok(Decided {
            message: format!(
                "request {} denied; the client is told who denied it and why",
                request.id
            ),
            request: request.id,
            status: RequestStatus::Denied,
            approvals,
            quorum: request.quorum,
        })
    }

    /// Whether `approver` is the person who asked for `request`, under any identity
    /// the store knows: the same local uid; an identity-provider identity linked to
    /// the requester's uid; or, for a local approver, an identity-provider identity
    /// linked to both uids (one person with two accounts).
    async fn is_requester(
        &self,
        approver: &Approver,
        request: &RequestRecord,
    ) -> Result<bool, StoreError> {
        let requester = request.principal.uid;
        if approver.uid() == Some(requester) {
            return Ok(true);
        }
        let theirs = self.store.linked_identities(requester).await?;
        if theirs.is_empty() {
            return Ok(false);
        }
        Ok(match approver {
            Approver::Idp {
                issuer, subject, ..
            } => theirs.iter().any(|link| link.is_idp(issuer, subject)),
            Approver::Local { uid, .. } => {
                let mine = self.store.linked_identities(*uid).await?;
                mine.iter()
                    .any(|m| theirs.iter().any(|t| t.is_idp(&m.issuer, &m.subject)))
            }
        })
    }

    async fn tell_other_gateways(&self, id: &str) {
        if let Err(error) = self.store.announce_request(id).await {
            // The holding gateway still sees it at its next wake-up or timeout.
            tracing::warn!(%error, request = id, "Cannot announce the decision to other gateways");
        }
    }

    /// The pending request `id`, if `who` is among its current approvers.
    async fn decidable(&self, id: &str, who: &Approver) -> Result<RequestRecord, DecideError> {
        let request = self
            .store
            .request(id)
            .await?
            .ok_or_else(|| DecideError::NotFound(id.to_owned()))?;
        if request.status != RequestStatus::Pending {
            return Err(already(request));
        }
        let policy = self.policy();
        if !request.approvers.iter().any(|g| policy.is_member(g, who)) {
            return Err(DecideError::NotApprover {
                who: who.label(),
                id: request.id,
                groups: request.approvers.join(", "),
            });
        }
        Ok(request)
    }

    /// Whether `who` may see request `r`: its requester (by local uid), its approvers,
    /// or an admin. An identity-provider approver sees requests as an approver; seeing
    /// one's own requests through a linked identity waits for the console.
    #[must_use]
    pub fn may_see(&self, r: &RequestRecord, who: &Approver, admin: bool) -> bool {
        admin || who.uid() == Some(r.principal.uid) || {
            let policy = self.policy();
            r.approvers.iter().any(|g| policy.is_member(g, who))
        }
    }
}

/// The audit data of an approval or a denial: the reason and who, as their JSON
/// identity and key; a local approver's uid and pid also under the names records
/// had before identity-provider approvers (`approver_uid`, `approver_pid`).
fn vote(approver: &Approver, reason: Option<&str>) -> serde_json::Value {
    let mut data = serde_json::json!({
        "reason": reason,
        "approver": approver,
        "approver_key": approver.key(),
    });
    if let (Approver::Local { uid, pid, .. }, Some(fields)) = (approver, data.as_object_mut()) {
        fields.insert("approver_uid".into(), (*uid).into());
        fields.insert("approver_pid".into(), (*pid).into());
    }
    data
}

fn already(r: RequestRecord) -> DecideError {
    let by = r.decided_by.map_or(String::new(), |b| format!(" (by {b})"));
    DecideError::AlreadyDecided {
        id: r.id,
        status: r.status,
        by,
    }
}

#[cfg(test)]
mod tests;
