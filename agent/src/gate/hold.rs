//! A held action: created as a pending request, then waited on until it is decided.

use super::{Ask, Gate, now_ms};
use crate::{
    metrics::{ApprovalOutcome, TimeoutFallback},
    policy::Review,
    record::{NewRequest, RequestRecord, RequestStatus, StoreError},
};
use notify::EventKind;
use std::{future::Future, sync::Arc, time::Duration};
use tokio::{sync::Notify, time::Instant};

use super::notify;

/// How a held action ended. Only `Approved` lets it proceed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldOutcome {
    Approved {
        request: String,
        by: String,
    },
    Denied {
        request: String,
        by: String,
        reason: String,
    },
    TimedOut {
        request: String,
        after: Duration,
    },
    Abandoned {
        request: String,
        /// Who ended it: `client`, or `target` when the server side went away.
        by: String,
        reason: String,
        /// How this gateway saw it end, when it was this gateway's watch that ended it.
        gone: Option<Gone>,
    },
    /// The daemon is stopping: denied, never released.
    ShutDown {
        request: String,
    },
}

/// Why a held action can no longer run, as the future given to [`Hold::wait`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    /// The client closed its connection.
    ClientLeft,
    /// The client withdrew the action (PostgreSQL's cancel request) and stays.
    Cancelled,
    /// The target's side of the connection ended.
    TargetLeft,
    /// The action cannot be kept while held: its payload is larger than a hold may
    /// buffer (an HTTP request body over the cap).
    TooLarge,
}

impl Gone {
    /// Who ended it, as the request's record says.
    #[must_use]
    pub fn by(self) -> &'static str {
        match self {
            Self::ClientLeft | Self::Cancelled | Self::TooLarge => "client",
            Self::TargetLeft => "target",
        }
    }

    /// One sentence for the request's record.
    #[must_use]
    pub fn reason(self) -> &'static str {
        match self {
            Self::ClientLeft => "the client left while it was held",
            Self::Cancelled => "the client cancelled the statement while it was held",
            Self::TargetLeft => "the target closed the connection while it was held",
            Self::TooLarge => "its body is larger than a held request may buffer",
        }
    }
}

impl HoldOutcome {
    /// One sentence for the client and the record: what happened and who decided.
    #[must_use]
    pub fn message(&self) -> String {
        match self {
            Self::Approved { request, by } => format!("request {request} approved by {by}"),
            Self::Denied {
                request,
                by,
                reason,
            } => format!("request {request} denied by {by}: {reason}"),
            Self::TimedOut { request, after } => {
                format!(
                    "request {request} denied by timeout: no decision within {}",
                    humantime::format_duration(*after)
                )
            }
            Self::Abandoned {
                request, reason, ..
            } => {
                format!("request {request} abandoned: {reason}")
            }
            Self::ShutDown { request } => {
                format!("request {request} denied by portcullis: {SHUTDOWN_REASON}")
            }
        }
    }
}

/// Why a held action is denied when the daemon stops.
const SHUTDOWN_REASON: &str =
    "the daemon is shutting down; held actions are denied, never released";

/// An action waiting for approvers. Dropping it without [`Hold::wait`] leaves the
/// request pending until the daemon's next start marks it abandoned; always wait.
///
/// It owns its share of the gate, so a protocol may wait in a task of its own.
pub struct Hold {
    gate: Arc<Gate>,
    ask: Ask,
    review: Review,
    record: RequestRecord,
    wake: Arc<Notify>,
    started: Instant,
}

impl Gate {
    /// Records a pending request for `ask` and returns the hold to wait on.
    pub async fn hold(
        self: &Arc<Self>,
        ask: &Ask,
        rule: Option<String>,
        review: Review,
        session_id: Option<String>,
    ) -> Result<Hold, StoreError> {
        let new = NewRequest {
            target: ask.target.clone(),
            protocol: ask.protocol.clone(),
            action: serde_json::to_value(&ask.action).unwrap_or_default(),
            summary: ask.action.summary(),
            principal: ask.principal.clone(),
            session_id,
            rule,
            approvers: review.approvers.clone(),
            quorum: review.quorum,
            expires_at: now_ms().saturating_add(millis(review.timeout)),
            justification: ask
                .justification
                .as_deref()
                .map(super::bounded_justification),
        };
        let record = self.store.create_request(&new).await?;
        let wake = Arc::new(Notify::new());
        self.waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(record.id.clone(), Arc::clone(&wake));
        tracing::info!(request = %record.id, target = %ask.target, who = %ask.principal.label(), "Action held for review");
        self.announce(EventKind::RequestCreated, &record, "pending");
        // Who the requester is at the identity provider, if `portcullis login` linked it.
        let linked: Vec<String> = self
            .store
            .linked_identities(record.principal.uid)
            .await
            .unwrap_or_default()
            .iter()
            .map(|l| format!("{}#{}", l.issuer, l.subject))
            .collect();
        let data = serde_json::json!({
            "requester_identities": linked,
            "target": record.target, "action": record.action, "principal": record.principal,
            "rule": record.rule, "approvers": record.approvers, "quorum": record.quorum, "host": record.host,
            "justification": record.justification,
        });
        self.audit(
            "request_created",
            &record.id,
            Some(&record.principal.label()),
            data,
        )
        .await;
        Ok(Hold {
            gate: Arc::clone(self),
            ask: ask.clone(),
            review,
            record,
            wake,
            started: Instant::now(),
        })
    }
}

impl Hold {
    /// The request id approvers use.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// What a person runs to approve it.
    #[must_use]
    pub fn approve_hint(&self) -> String {
        format!("portcullis approve {}", self.record.id)
    }

    /// Waits until the request is decided, times out, the action can no longer run
    /// (`gone` completes, saying why: the client left, or the target) or the daemon
    /// shuts down.
    pub async fn wait(self, gone: impl Future<Output = Gone>) -> HoldOutcome {
        let outcome = self.wait_inner(gone).await;
        let gate = &self.gate;
        let target = &self.ask.target;
        let metric = match &outcome {
            HoldOutcome::Approved { .. } => ApprovalOutcome::Approved,
            HoldOutcome::ShutDown { .. } => ApprovalOutcome::Shutdown,
            HoldOutcome::Denied { by, .. } if by == "portcullis" => ApprovalOutcome::Shutdown,
            HoldOutcome::Denied { .. } => ApprovalOutcome::Denied,
            HoldOutcome::TimedOut { .. } => ApprovalOutcome::Timeout,
            HoldOutcome::Abandoned { .. } => ApprovalOutcome::Abandoned,
        };
        gate.metrics.approval_request(target, metric);
        if matches!(
            outcome,
            HoldOutcome::Approved { .. } | HoldOutcome::Denied { .. }
        ) {
            gate.metrics
                .decision_latency(target, self.started.elapsed());
        }
        if let (HoldOutcome::Approved { request, .. }, Some(grant)) = (&outcome, self.review.grant)
        {
            gate.add_grant(&self.ask, std::time::Instant::now() + grant, request);
        }
        tracing::info!(request = %self.record.id, outcome = %outcome.message(), "Held action decided");
        let actor = match &outcome {
            HoldOutcome::Approved { by, .. }
            | HoldOutcome::Denied { by, .. }
            | HoldOutcome::Abandoned { by, .. } => by.clone(),
            HoldOutcome::TimedOut { .. } => "timeout".into(),
            HoldOutcome::ShutDown { .. } => "portcullis".into(),
        };
        let data = serde_json::json!({ "target": target, "outcome": outcome.message(), "waited_ms": millis(self.started.elapsed()) });
        gate.audit("request_decided", &self.record.id, Some(&actor), data)
            .await;
        outcome
    }

    async fn wait_inner(&self, gone: impl Future<Output = Gone>) -> HoldOutcome {
        let gate = &self.gate;
        let id = self.record.id.clone();
        tokio::pin!(gone);
        let mut has_gone: Option<Gone> = None;
        let mut shut_down = false;
        loop {
            // Register for a wake-up before reading, so no change is missed.
            let woken = self.wake.notified();
            let Ok(Some(record)) = gate.store.request(&id).await else {
                return self
                    .fail_closed("the request could not be read back from the store")
                    .await;
            };
            if let Some(done) = self.outcome_of(&record, has_gone, shut_down) {
                if record.status != RequestStatus::Pending {
                    gate.announce(EventKind::RequestDecided, &record, record.status.as_str());
                }
                return done;
            }
            let left = Duration::from_millis(
                u64::try_from(record.expires_at.saturating_sub(now_ms())).unwrap_or(0),
            );
            // Each branch either changes the stored request (the next read sees a final
            // status) or gives up closed: no branch can spin.
            let stored = tokio::select! {
                () = woken => Ok(()),
                () = tokio::time::sleep(left) => self.expire(&record).await,
                why = &mut gone, if has_gone.is_none() => {
                    has_gone = Some(why);
                    gate.store.finish_request(&id, RequestStatus::Abandoned, why.by(), Some(why.reason())).await.map(drop)
                }
                () = gate.shutdown.cancelled(), if !shut_down => {
                    shut_down = true;
                    gate.store.finish_request(&id, RequestStatus::Denied, "portcullis", Some(SHUTDOWN_REASON)).await.map(drop)
                }
            };
            if stored.is_err() {
                return self
                    .fail_closed("the store could not record the request's state")
                    .await;
            }
        }
    }

    /// The clock ran out for the current stage: escalate once if the rule says so,
    /// else deny by timeout.
    async fn expire(&self, record: &RequestRecord) -> Result<(), StoreError> {
        let gate = &self.gate;
        let target = &self.ask.target;
        if record.stage == "review"
            && let Some(esc) = &self.review.escalation
        {
            let expires = now_ms().saturating_add(millis(esc.timeout));
            if gate
                .store
                .escalate_request(&record.id, &esc.approvers, expires)
                .await?
            {
                gate.metrics.timeout(target, TimeoutFallback::Escalate);
                gate.metrics.escalation(target);
                tracing::info!(request = %record.id, to = %esc.approvers.join(", "), "Review timed out; escalated");
                if let Ok(Some(r)) = gate.store.request(&record.id).await {
                    gate.announce(EventKind::RequestDecided, &r, "escalated");
                }
            }
            return Ok(());
        }
        let reason = "no decision before the timeout";
        if gate
            .store
            .finish_request(&record.id, RequestStatus::Timeout, "timeout", Some(reason))
            .await?
        {
            gate.metrics.timeout(target, TimeoutFallback::Deny);
        }
        Ok(())
    }

    /// The final outcome a stored record stands for; `None` while pending. `gone` and
    /// `shut_down` say what this gateway saw end it, if anything.
    fn outcome_of(
        &self,
        r: &RequestRecord,
        gone: Option<Gone>,
        shut_down: bool,
    ) -> Option<HoldOutcome> {
        let request = r.id.clone();
        let by = r.decided_by.clone().unwrap_or_else(|| "?".into());
        match r.status {
            RequestStatus::Pending => None,
            RequestStatus::Approved => Some(HoldOutcome::Approved { request, by }),
            RequestStatus::Denied if shut_down && by == "portcullis" => {
                Some(HoldOutcome::ShutDown { request })
            }
            RequestStatus::Denied => Some(HoldOutcome::Denied {
                request,
                by,
                reason: r.reason.clone().unwrap_or_default(),
            }),
            RequestStatus::Timeout => {
                let total = self.review.timeout
                    + self
                        .review
                        .escalation
                        .as_ref()
                        .map_or(Duration::ZERO, |e| e.timeout);
                Some(HoldOutcome::TimedOut {
                    request,
                    after: total,
                })
            }
            RequestStatus::Abandoned => Some(HoldOutcome::Abandoned {
                request,
                by,
                reason: r.reason.clone().unwrap_or_default(),
                gone,
            }),
        }
    }

    /// The store failed us mid-hold: deny (fail closed) and say why.
    async fn fail_closed(&self, why: &str) -> HoldOutcome {
        let _ = self
            .gate
            .store
            .finish_request(
                &self.record.id,
                RequestStatus::Denied,
                "portcullis",
                Some(why),
            )
            .await;
        HoldOutcome::Denied {
            request: self.record.id.clone(),
            by: "portcullis".into(),
            reason: why.into(),
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.gate
            .waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.record.id);
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
