//! The one decide call every protocol makes for an action: policy, then (for a
//! review) hold, tell the client, wait while watching it leave, and end with an
//! [`ActionOutcome`] the protocol maps into its own words.
//!
//! A protocol implements [`Waiting`] for the client of the action: how to tell it the
//! action is held, and a future that completes when the action can no longer run.
//! Everything else (the request, the clock, escalation, shutdown, grants, metrics and
//! the audit records) happens here and in [`super::hold`], the same for every protocol.

use super::{Ask, Gate, Gone, HoldOutcome, Ruling};
use crate::record::SessionId;
use std::{future::Future, sync::Arc, time::Duration};

/// A held action's client, as the pipeline needs it while the action waits.
pub trait Waiting: Send {
    /// Called when the policy asks for review, before the request is visible to
    /// approvers or the API: a protocol that can withdraw by a side channel (a
    /// PostgreSQL cancel) starts listening here, so a withdrawal sent as soon as the
    /// request shows cannot be lost.
    fn reviewing(&mut self) {}

    /// Tells the client that its action waits for approval as request `request`,
    /// which approvers decide with `hint` (if the protocol has a way to say so).
    fn held(&mut self, request: &str, hint: &str) -> impl Future<Output = ()> + Send;

    /// Completes when the action can no longer run, saying why (the client left or
    /// withdrew it, or the target went away). Never completes if nothing can end it.
    fn gone(&mut self) -> impl Future<Output = Gone> + Send;
}

/// How an action was decided: only [`ActionOutcome::Allowed`] lets it proceed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionOutcome {
    /// By a rule (or a live grant), or by approvers (`approval`).
    Allowed {
        rule: Option<String>,
        /// Why, for the session's record of a connection; empty for a statement.
        reason: String,
        approval: Option<Approval>,
    },
    /// By a rule (`request` is `None`) or by an approver of `request`.
    Denied {
        rule: Option<String>,
        request: Option<String>,
        /// The approver who denied; `None` when a rule did.
        by: Option<String>,
        reason: String,
    },
    /// No decision in time.
    Expired {
        rule: Option<String>,
        request: String,
        after: Duration,
    },
    /// The action could no longer run while held.
    Abandoned {
        rule: Option<String>,
        request: String,
        /// Who ended it, as recorded (`client`, `target`).
        by: String,
        reason: String,
        /// How this gateway saw it end: `None` when it learned it from the store.
        gone: Option<Gone>,
    },
    /// The daemon is stopping: a held action is denied, never released.
    ShutDown {
        rule: Option<String>,
        request: String,
    },
    /// The store failed, so the action could not be held: refused (fail closed).
    Failed {
        rule: Option<String>,
        reason: String,
    },
}

/// The approval that let a held action proceed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub request: String,
    /// Who approved (names joined by `, `).
    pub by: String,
}

impl ActionOutcome {
    /// Whether the action may proceed.
    #[must_use]
    pub fn allowed(&self) -> bool {
        matches!(self, Self::Allowed { .. })
    }

    /// The rule that decided (or held) the action.
    #[must_use]
    pub fn rule(&self) -> Option<&str> {
        match self {
            Self::Allowed { rule, .. }
            | Self::Denied { rule, .. }
            | Self::Expired { rule, .. }
            | Self::Abandoned { rule, .. }
            | Self::ShutDown { rule, .. }
            | Self::Failed { rule, .. } => rule.as_deref(),
        }
    }

    /// The approval request, when the action was held.
    #[must_use]
    pub fn request(&self) -> Option<&str> {
        match self {
            Self::Allowed { approval, .. } => approval.as_ref().map(|a| a.request.as_str()),
            Self::Denied { request, .. } => request.as_deref(),
            Self::Expired { request, .. }
            | Self::Abandoned { request, .. }
            | Self::ShutDown { request, .. } => Some(request),
            Self::Failed { .. } => None,
        }
    }

    /// The verdict word of an event record: `allowed`, `approved`, `denied`,
    /// `timed_out`, `abandoned` or `error`.
    #[must_use]
    pub fn verdict(&self) -> &'static str {
        match self {
            Self::Allowed { approval: None, .. } => "allowed",
            Self::Allowed { .. } => "approved",
            Self::Denied { .. } | Self::ShutDown { .. } => "denied",
            Self::Expired { .. } => "timed_out",
            Self::Abandoned { .. } => "abandoned",
            Self::Failed { .. } => "error",
        }
    }

    /// Who decided, as an event record names it: the approvers, or the rule.
    #[must_use]
    pub fn decided_by(&self) -> Option<String> {
        match self {
            Self::Allowed {
                approval: Some(a), ..
            } => Some(a.by.clone()),
            Self::Denied { by: Some(by), .. } => Some(by.clone()),
            other => other.rule().map(str::to_owned),
        }
    }

    /// One sentence for the client and the record: what happened and who decided.
    #[must_use]
    pub fn message(&self) -> String {
        match self {
            Self::Allowed {
                approval: Some(a), ..
            } => format!("request {} approved by {}", a.request, a.by),
            Self::Allowed { reason, .. }
            | Self::Failed { reason, .. }
            | Self::Denied {
                request: None,
                reason,
                ..
            } => reason.clone(),
            Self::Denied {
                request: Some(request),
                by,
                reason,
                ..
            } => {
                let by = by.as_deref().unwrap_or("?");
                format!("request {request} denied by {by}: {reason}")
            }
            Self::Expired { request, after, .. } => format!(
                "request {request} denied by timeout: no decision within {}",
                humantime::format_duration(*after)
            ),
            Self::Abandoned {
                request, reason, ..
            } => format!("request {request} abandoned: {reason}"),
            Self::ShutDown { request, .. } => HoldOutcome::ShutDown {
                request: request.clone(),
            }
            .message(),
        }
    }

    fn of_hold(rule: Option<String>, held: HoldOutcome) -> Self {
        match held {
            HoldOutcome::Approved { request, by } => Self::Allowed {
                rule,
                reason: String::new(),
                approval: Some(Approval { request, by }),
            },
            HoldOutcome::Denied {
                request,
                by,
                reason,
            } => Self::Denied {
                rule,
                request: Some(request),
                by: Some(by),
                reason,
            },
            HoldOutcome::TimedOut { request, after } => Self::Expired {
                rule,
                request,
                after,
            },
            HoldOutcome::Abandoned {
                request,
                by,
                reason,
                gone,
            } => Self::Abandoned {
                rule,
                request,
                by,
                reason,
                gone,
            },
            HoldOutcome::ShutDown { request } => Self::ShutDown { rule, request },
        }
    }
}

impl Gate {
    /// Decides `ask` for `client`: the policy's answer, or (for a review) a hold that
    /// tells the client, waits, and ends as approvers, the clock, the client or a
    /// shutdown say. `session` links a held action's request to its session.
    pub async fn decide(
        self: &Arc<Self>,
        ask: &Ask,
        session: Option<&SessionId>,
        client: &mut impl Waiting,
    ) -> ActionOutcome {
        let ruling = self.rule(ask);
        self.decide_ruled(ask, ruling, session, client).await
    }

    /// [`Gate::decide`] once [`Gate::rule`] has answered `ask` with `ruling`: an allow
    /// or a deny returns at once, a review holds. A protocol that settles most actions
    /// inline asks the rule first and only sets up waiting for a review.
    pub async fn decide_ruled(
        self: &Arc<Self>,
        ask: &Ask,
        ruling: Ruling,
        session: Option<&SessionId>,
        client: &mut impl Waiting,
    ) -> ActionOutcome {
        let (rule, review) = match ruling {
            Ruling::Allow { rule, reason } => {
                return ActionOutcome::Allowed {
                    rule,
                    reason,
                    approval: None,
                };
            }
            Ruling::Deny { rule, reason } => {
                return ActionOutcome::Denied {
                    rule,
                    request: None,
                    by: None,
                    reason,
                };
            }
            Ruling::Review { rule, review, .. } => (rule, review),
        };
        client.reviewing();
        let session = session.map(|s| s.as_str().to_owned());
        let hold = match self.hold(ask, rule.clone(), review, session).await {
            Ok(hold) => hold,
            Err(error) => {
                tracing::error!(%error, "Cannot record the approval request; refusing the action");
                return ActionOutcome::Failed {
                    rule,
                    reason: "its approval request could not be recorded".into(),
                };
            }
        };
        client.held(hold.id(), &hold.approve_hint()).await;
        let ended = hold.wait(client.gone()).await;
        ActionOutcome::of_hold(rule, ended)
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn rule() -> Option<String> {
        Some("r".into())
    }

    /// What each outcome records and tells, as the PostgreSQL statements and the
    /// connections before the pipeline recorded and told it.
    #[test]
    fn outcomes_map_to_event_fields_and_messages() {
        let allowed = ActionOutcome::Allowed {
            rule: rule(),
            reason: "rule `r` allows it".into(),
            approval: None,
        };
        assert!(allowed.allowed());
        assert_eq!(allowed.verdict(), "allowed");
        assert_eq!(allowed.decided_by().as_deref(), Some("r"));
        assert_eq!(allowed.request(), None);
        assert_eq!(allowed.message(), "rule `r` allows it");

        let approved = ActionOutcome::of_hold(
            rule(),
            HoldOutcome::Approved {
                request: "q1".into(),
                by: "ann, bob".into(),
            },
        );
        assert!(approved.allowed());
        assert_eq!(approved.verdict(), "approved");
        assert_eq!(approved.decided_by().as_deref(), Some("ann, bob"));
        assert_eq!(approved.request(), Some("q1"));
        assert_eq!(approved.message(), "request q1 approved by ann, bob");

        let by_rule = ActionOutcome::Denied {
            rule: rule(),
            request: None,
            by: None,
            reason: "rule `r` denies it".into(),
        };
        assert_eq!(
            (by_rule.verdict(), by_rule.decided_by().as_deref()),
            ("denied", Some("r"))
        );
        assert_eq!(by_rule.message(), "rule `r` denies it");

        let by_person = ActionOutcome::of_hold(
            rule(),
            HoldOutcome::Denied {
                request: "q2".into(),
                by: "ann".into(),
                reason: "not now".into(),
            },
        );
        assert!(!by_person.allowed());
        assert_eq!(by_person.decided_by().as_deref(), Some("ann"));
        assert_eq!(by_person.message(), "request q2 denied by ann: not now");

        let expired = ActionOutcome::of_hold(
            rule(),
            HoldOutcome::TimedOut {
                request: "q3".into(),
                after: Duration::from_secs(90),
            },
        );
        assert_eq!(expired.verdict(), "timed_out");
        assert_eq!(
            expired.message(),
            "request q3 denied by timeout: no decision within 1m 30s"
        );

        let shut = ActionOutcome::of_hold(
            rule(),
            HoldOutcome::ShutDown {
                request: "q4".into(),
            },
        );
        assert_eq!(shut.verdict(), "denied", "a shutdown never releases");
        assert!(
            shut.message()
                .starts_with("request q4 denied by portcullis: ")
        );

        let left = ActionOutcome::of_hold(
            rule(),
            HoldOutcome::Abandoned {
                request: "q5".into(),
                by: "client".into(),
                reason: Gone::Cancelled.reason().into(),
                gone: Some(Gone::Cancelled),
            },
        );
        assert_eq!(left.verdict(), "abandoned");
        assert!(matches!(
            left,
            ActionOutcome::Abandoned {
                gone: Some(Gone::Cancelled),
                ..
            }
        ));

        let failed = ActionOutcome::Failed {
            rule: rule(),
            reason: "its approval request could not be recorded".into(),
        };
        assert_eq!((failed.verdict(), failed.request()), ("error", None));
        assert!(!failed.allowed());
    }

    /// Records the order of the pipeline's calls and whether the request had been
    /// announced (visible to approvers and the API) when `reviewing` ran.
    struct Watcher {
        events: tokio::sync::broadcast::Receiver<super::super::notify::Event>,
        calls: Vec<&'static str>,
        announced_before_reviewing: bool,
    }

    impl Waiting for Watcher {
        fn reviewing(&mut self) {
            self.announced_before_reviewing = !self.events.is_empty();
            self.calls.push("reviewing");
        }
        async fn held(&mut self, _: &str, _: &str) {
            self.calls.push("held");
        }
        async fn gone(&mut self) -> Gone {
            Gone::Cancelled
        }
    }

    /// A PostgreSQL cancel sent the moment a request shows must end it, so the
    /// protocol hears of the review before anyone can see the request.
    #[tokio::test]
    async fn reviewing_is_called_before_the_request_is_visible() {
        let dir = tempfile::tempdir().unwrap();
        let rules = "[[target]]\nname = \"db\"\nprotocol = \"tcp\"\naddress = \"127.0.0.1:9\"\n\n\
                     [[group]]\nname = \"ops\"\nusers = [\"alice\"]\n\n\
                     [[rule]]\nname = \"r\"\ntargets = [\"db\"]\naction = \"review\"\n\
                     approvers = [\"ops\"]\n";
        std::fs::write(dir.path().join("p.toml"), rules).unwrap();
        let policy = crate::policy::Policy::load_dir(dir.path()).unwrap();
        let store = crate::record::Store::open("sqlite::memory:").await.unwrap();
        let gate = Arc::new(Gate::new(
            policy,
            store,
            Arc::new(crate::metrics::Metrics::new()),
            None,
        ));
        let mut watcher = Watcher {
            events: gate.subscribe(),
            calls: Vec::new(),
            announced_before_reviewing: true,
        };
        let ask = Ask {
            principal: crate::identity::Principal {
                pid: 4242,
                ppid: None,
                uid: 1003,
                gid: 1003,
                user: Some("carol".into()),
                unix_groups: Vec::new(),
                exe: Some("/usr/bin/psql".into()),
                cmdline: None,
                comm: "psql".into(),
                cgroup: None,
                idp: None,
            },
            target: "db".into(),
            protocol: "tcp".into(),
            action: super::super::Action::Connect,
            justification: None,
        };
        let outcome = gate.decide(&ask, None, &mut watcher).await;
        assert_eq!(watcher.calls, ["reviewing", "held"]);
        assert!(!watcher.announced_before_reviewing);
        assert_eq!(outcome.verdict(), "abandoned", "{outcome:?}");
    }
}
