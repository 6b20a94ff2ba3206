//! The gate: the one place where an action is allowed, denied or held for review,
//! for every protocol. Nothing here knows a wire protocol.
//!
//! A protocol describes what its client asks for as an [`Action`] and calls
//! [`Gate::decide`] with a [`Waiting`] for its client. The policy allows or denies at
//! once, or holds the action: the pipeline records a request, tells the client (if
//! the protocol can) that the action waits for approval and how to give it, then
//! waits until approvers decide, the clock does (deny, or escalate then deny), the
//! client leaves (abandoned) or the daemon stops (denied — a held action is never
//! released by a shutdown). The [`ActionOutcome`] says which; the protocol maps it
//! into its own words and records it.
//!
//! Requests live in the store, so any gateway sharing it can decide them; the gateway
//! holding the connection owns the clock.
//!
//! Layout: `pipeline` (the decide call), `hold` (a held action's lifecycle),
//! `decide` (people approving and denying), `notify` (webhooks).

mod decide;
mod hold;
mod justify;
pub mod notify;
mod pipeline;

pub use decide::{DecideError, Decided};
pub use hold::{Gone, Hold, HoldOutcome};
pub use justify::{JustifyError, MAX_JUSTIFICATION, bounded_justification};
pub use pipeline::{ActionOutcome, Approval, Waiting};

use crate::{
    identity::Principal,
    metrics::{self, Metrics},
    policy::{
        Decision, FileOp, FileRequest, Policy, Review, SqlClasses, SshKind, SshRequest, Statement,
        Verdict,
    },
    record::{Store, now_ms},
};
use arc_swap::ArcSwap;
use notify::{Event, EventKind, Notifier};
use serde::Serialize;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

/// What a client asks a target to do.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Open a connection (the whole action for `tcp` targets).
    Connect,
    /// Run SQL (one query string, possibly several statements).
    Sql {
        text: String,
        classes: SqlClasses,
        tables: Vec<String>,
    },
    /// An SSH action inside a session: a command line, a shell, a file transfer, a
    /// forward.
    Ssh {
        /// What kind of SSH action (`exec`, `shell`…).
        ssh: SshKind,
        /// The user name the client asked to log in as.
        login: String,
        /// What it is about: the command line, the subsystem, `host:port`.
        subject: String,
        /// The simple commands of a command line; `None`: unparsed.
        commands: Option<Vec<String>>,
        /// An SFTP file operation: what it does and the paths it touches.
        #[serde(skip_serializing_if = "Option::is_none")]
        file: Option<(Vec<FileOp>, Vec<String>)>,
    },
    /// Send one HTTP request (`http`, `https` targets).
    Http {
        method: String,
        /// The `Host` (or `:authority`) the client named.
        host: String,
        /// Normalized: percent-decoded once, dot segments removed.
        path: String,
        /// The raw query string, without `?`.
        query: Option<String>,
        /// Headers a rule or an approver may need (`content-type`), lowercase names.
        headers: Vec<(String, String)>,
    },
}

/// Longest SQL text an action summary shows.
const SUMMARY_SQL_CHARS: usize = 400;

impl Action {
    /// One line for a person deciding.
    #[must_use]
    pub fn summary(&self) -> String {
        match self {
            Self::Connect => "open a connection".to_owned(),
            Self::Sql { text, classes, .. } => {
                let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
                let shown: String = flat.chars().take(SUMMARY_SQL_CHARS).collect();
                let more = if shown.len() < flat.len() { "…" } else { "" };
                format!("run SQL ({}): {shown}{more}", classes.names())
            }
            Self::Ssh {
                ssh: kind,
                login,
                subject,
                ..
            } => {
                let shown: String = subject.chars().take(SUMMARY_SQL_CHARS).collect();
                let more = if shown.len() < subject.len() {
                    "…"
                } else {
                    ""
                };
                format!("ssh {kind} as {login}: {shown}{more}")
            }
            Self::Http {
                method,
                host,
                path,
                query,
                ..
            } => {
                let query = query
                    .as_deref()
                    .map(|q| format!("?{}", masked_query(q)))
                    .unwrap_or_default();
                let line = format!("HTTP {method} {host}{path}{query}");
                let shown: String = line.chars().take(SUMMARY_SQL_CHARS).collect();
                let more = if shown.len() < line.len() { "…" } else { "" };
                format!("{shown}{more}")
            }
        }
    }
}

/// A query string with its values replaced by `…` (names kept): values can be tokens.
#[must_use]
pub fn masked_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) if !value.is_empty() => format!("{name}=…"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The gate's first answer for an action.
#[derive(Debug, Clone)]
pub enum Ruling {
    Allow {
        rule: Option<String>,
        reason: String,
    },
    Deny {
        rule: Option<String>,
        reason: String,
    },
    /// Hold it: pass this to [`Gate::hold`].
    Review {
        rule: Option<String>,
        reason: String,
        review: Review,
    },
}

/// Who asks what of which target.
#[derive(Debug, Clone)]
pub struct Ask {
    pub principal: Principal,
    pub target: String,
    pub protocol: String,
    pub action: Action,
    /// Why the requester says they need it (a SQL comment, a header, an SSH
    /// variable), shown to approvers; `None` if they said nothing.
    pub justification: Option<String>,
}

/// Key of a time-limited grant: the same principal's same action on a target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct GrantKey {
    uid: u32,
    exe: Option<String>,
    target: String,
    action: Action,
}

/// Decides actions against the policy in force and keeps the held ones.
pub struct Gate {
    policy: ArcSwap<Policy>,
    store: Store,
    metrics: Arc<Metrics>,
    notifier: Option<Notifier>,
    /// Wakes the hold waiting on a request when its row may have changed.
    waiters: Mutex<HashMap<String, Arc<Notify>>>,
    grants: Mutex<HashMap<GrantKey, (Instant, String)>>,
    /// New requests and decisions, for `approvals watch`.
    events: broadcast::Sender<Event>,
    /// Cancelled at shutdown: every held action is denied.
    shutdown: CancellationToken,
}

impl Gate {
    #[must_use]
    pub fn new(
        policy: Policy,
        store: Store,
        metrics: Arc<Metrics>,
        notifier: Option<Notifier>,
    ) -> Self {
        Self {
            policy: ArcSwap::from_pointee(policy),
            store,
            metrics,
            notifier,
            waiters: Mutex::new(HashMap::new()),
            grants: Mutex::new(HashMap::new()),
            events: broadcast::channel(1024).0,
            shutdown: CancellationToken::new(),
        }
    }

    /// The policy in force.
    #[must_use]
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Puts `policy` in force for every decision from now on.
    pub fn replace_policy(&self, policy: Policy) {
        self.policy.store(Arc::new(policy));
    }

    #[must_use]
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// New requests and decisions as they happen.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Denies every held action (the daemon is stopping) and refuses new holds.
    pub fn shut_down(&self) {
        self.shutdown.cancel();
    }

    /// The first answer for `ask`: allow, deny, or review (then [`Gate::hold`]).
    #[must_use]
    pub fn rule(&self, ask: &Ask) -> Ruling {
        let Decision {
            verdict,
            rule,
            reason,
            review,
        } = match &ask.action {
            Action::Connect => self.policy.load().decide(&ask.principal, &ask.target),
            Action::Sql {
                classes, tables, ..
            } => {
                let statement = Statement {
                    classes: *classes,
                    tables,
                };
                (self.policy.load()).decide_statement(&ask.principal, &ask.target, &statement)
            }
            Action::Ssh {
                ssh: kind,
                login,
                commands,
                file,
                ..
            } => {
                let request = SshRequest {
                    kind: *kind,
                    login,
                    commands: commands.as_deref(),
                    file: file.as_ref().map(|(ops, paths)| FileRequest { ops, paths }),
                };
                (self.policy.load()).decide_ssh(&ask.principal, &ask.target, &request)
            }
            Action::Http { method, path, .. } => {
                let request = crate::policy::HttpRequest { method, path };
                (self.policy.load()).decide_request(&ask.principal, &ask.target, &request)
            }
        };
        let ruling = match (verdict, review) {
            (Verdict::Allow, _) => Ruling::Allow { rule, reason },
            (Verdict::Review, Some(review)) => match self.granted(ask) {
                Some(grant) => Ruling::Allow {
                    rule,
                    reason: grant,
                },
                None => Ruling::Review {
                    rule,
                    reason,
                    review,
                },
            },
            // A review without its parameters cannot be held: fail closed.
            (Verdict::Review | Verdict::Deny, _) => Ruling::Deny { rule, reason },
        };
        let verdict = match ruling {
            Ruling::Allow { .. } => metrics::Verdict::Allowed,
            Ruling::Deny { .. } => metrics::Verdict::Denied,
            Ruling::Review { .. } => metrics::Verdict::Held,
        };
        self.metrics.action(&ask.target, &ask.protocol, verdict);
        ruling
    }

    /// A live grant for this ask, as the reason to allow it.
    fn granted(&self, ask: &Ask) -> Option<String> {
        let key = GrantKey::of(ask);
        let mut grants = self.grants.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        grants.retain(|_, (until, _)| *until > now);
        grants.get(&key).map(|(until, request)| {
            format!(
                "granted by approved request {request} for {}s more",
                until.saturating_duration_since(now).as_secs()
            )
        })
    }

    fn add_grant(&self, ask: &Ask, until: Instant, request: &str) {
        self.grants
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(GrantKey::of(ask), (until, request.to_owned()));
    }

    /// Appends an event to the hash-chained audit log. A failure is logged loudly;
    /// the event itself is also in the requests/sessions tables.
    pub async fn audit(
        &self,
        kind: &str,
        subject: &str,
        actor: Option<&str>,
        data: serde_json::Value,
    ) {
        let entry = crate::record::AuditEntry {
            kind: kind.to_owned(),
            subject: subject.to_owned(),
            actor: actor.map(str::to_owned),
            data,
        };
        if let Err(error) = self.store.append_audit(&entry).await {
            tracing::error!(%error, kind, subject, "Cannot append to the audit log");
        }
    }

    /// Wakes the hold of request `id`, if this gateway holds it (another gateway's
    /// change arrives through [`Store::request_changes`]).
    pub fn wake(&self, id: &str) {
        if let Some(n) = self
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
        {
            n.notify_one();
        }
    }

    pub(crate) fn announce(&self, kind: EventKind, r: &crate::record::RequestRecord, status: &str) {
        let event = Event {
            kind,
            request_id: r.id.clone(),
            target: r.target.clone(),
            action: r.summary.clone(),
            requester: r.principal.label(),
            status: status.to_owned(),
            decided_by: r.decided_by.clone(),
            reason: r.reason.clone(),
            host: r.host.clone(),
            at_ms: now_ms(),
            approve_hint: format!("portcullis approve {}", r.id),
            justification: r.justification.clone(),
        };
        if let Some(n) = &self.notifier {
            n.notify(&event);
        }
        let _ = self.events.send(event);
    }
}

impl GrantKey {
    fn of(ask: &Ask) -> Self {
        Self {
            uid: ask.principal.uid,
            exe: ask.principal.exe.clone(),
            target: ask.target.clone(),
            action: ask.action.clone(),
        }
    }
}
