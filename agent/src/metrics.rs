//! Prometheus metrics: what the daemon counts, and their text exposition.
//!
//! One [`Metrics`] is built at start-up, shared as an `Arc`, and handed to every part
//! that records something (the gate, the protocols, the notifier). Recording is a few
//! atomic operations and never fails; [`Metrics::encode`] renders everything for a
//! scrape (the API serves it, `portcullis metrics` prints it).
//!
//! Every family is named `portcullis_*`. Labels that take a fixed set of values are
//! enums here ([`ApprovalOutcome`], [`Verdict`], …) so a typo cannot invent a new
//! series; free-form labels are only names that come from the policy or the config
//! (targets, protocols, webhooks), which keeps cardinality bounded by configuration.
//! People are never labels: approver decisions are counted by the kind of approver
//! (local or identity provider); who decided is in the audit log.

use crate::identity::ApproverKind;
use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder, text},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};
use std::{fmt, time::Duration};

/// The `Content-Type` of [`Metrics::encode`]'s output, for an HTTP scrape answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the decision-latency buckets: a human answers in
/// seconds to an hour, so the buckets follow the steps people think in.
const DECISION_LATENCY_BUCKETS: [f64; 14] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 2700.0, 3600.0,
];

// ---------------------------------------------------------------------------------
// Label values

/// How an approval request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApprovalOutcome {
    Approved,
    Denied,
    /// The review timed out and the fallback denied it.
    Timeout,
    /// The review timed out and went to the escalation approvers.
    Escalated,
    /// The client went away before anyone decided.
    Abandoned,
    /// The daemon shut down while the request was held (it is denied).
    Shutdown,
}

impl ApprovalOutcome {
    /// The label value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Timeout => "timeout",
            Self::Escalated => "escalated",
            Self::Abandoned => "abandoned",
            Self::Shutdown => "shutdown",
        }
    }
}

/// What the gate answered to one action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Allowed,
    Denied,
    /// Parked until approvers decide.
    Held,
}

impl Verdict {
    /// The label value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::Held => "held",
        }
    }
}

/// What an approver decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApproverDecision {
    Approve,
    Deny,
}

impl ApproverDecision {
    /// The label value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Deny => "deny",
        }
    }
}

/// Which way bytes flowed: `up` is client to target, `down` target to client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Up,
    Down,
}

impl Direction {
    /// The label value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
        }
    }
}

/// What a rule does when its review times out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeoutFallback {
    Deny,
    Escalate,
}

impl TimeoutFallback {
    /// The label value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deny => "deny",
            Self::Escalate => "escalate",
        }
    }
}

/// Whether a webhook delivery (after its retries) got through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum DeliveryResult {
    Ok,
    Failed,
}

impl DeliveryResult {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
        }
    }
}

/// Encodes the enums above by their `as_str` names.
macro_rules! label_value_by_name {
    ($($ty:ty),*) => {$(
        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
                EncodeLabelValue::encode(&self.as_str(), encoder)
            }
        }
    )*};
}
label_value_by_name!(
    ApprovalOutcome,
    ApproverDecision,
    ApproverKind,
    Verdict,
    Direction,
    TimeoutFallback,
    DeliveryResult
);

// ---------------------------------------------------------------------------------
// Label sets

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TargetLabels {
    target: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ApprovalLabels {
    target: String,
    outcome: ApprovalOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ApproverLabels {
    decision: ApproverDecision,
    approver: ApproverKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ActionLabels {
    target: String,
    protocol: String,
    verdict: Verdict,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BytesLabels {
    target: String,
    direction: Direction,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TimeoutLabels {
    target: String,
    fallback: TimeoutFallback,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WebhookLabels {
    webhook: String,
    result: DeliveryResult,
}

// ---------------------------------------------------------------------------------
// Metrics

/// The daemon's metrics. Share it as `Arc<Metrics>`; every method takes `&self`.
#[derive(Debug)]
pub struct Metrics {
    /// Owns the descriptions of every family below, for [`Metrics::encode`].
    registry: Registry,
    approval_requests: Family<ApprovalLabels, Counter>,
    decision_latency: Family<TargetLabels, Histogram, fn() -> Histogram>,
    approver_decisions: Family<ApproverLabels, Counter>,
    actions: Family<ActionLabels, Counter>,
    active_sessions: Gauge,
    bytes: Family<BytesLabels, Counter>,
    escalations: Family<TargetLabels, Counter>,
    timeouts: Family<TimeoutLabels, Counter>,
    webhook_deliveries: Family<WebhookLabels, Counter>,
}

fn decision_latency_histogram() -> Histogram {
    Histogram::new(DECISION_LATENCY_BUCKETS)
}

impl Metrics {
    /// Registers every family, all empty.
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("portcullis");

        let approval_requests = Family::default();
        registry.register(
            "approval_requests",
            "Approval requests, by how they ended",
            approval_requests.clone(),
        );
        let decision_latency: Family<TargetLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(decision_latency_histogram);
        registry.register_with_unit(
            "decision_latency",
            "Time from an approval request to the human decision",
            Unit::Seconds,
            decision_latency.clone(),
        );
        let approver_decisions = Family::default();
        registry.register(
            "approver_decisions",
            "Approvals and denials given, by the kind of approver (local or idp)",
            approver_decisions.clone(),
        );
        let actions = Family::default();
        registry.register(
            "actions",
            "Actions the gate decided, by verdict",
            actions.clone(),
        );
        let active_sessions = Gauge::default();
        registry.register(
            "active_sessions",
            "Client sessions open now",
            active_sessions.clone(),
        );
        let bytes = Family::default();
        registry.register(
            "bytes",
            "Bytes relayed between clients (up) and targets (down)",
            bytes.clone(),
        );
        let escalations = Family::default();
        registry.register(
            "escalations",
            "Approval requests escalated to the next approvers",
            escalations.clone(),
        );
        let timeouts = Family::default();
        registry.register(
            "timeouts",
            "Approval requests that timed out, by the fallback applied",
            timeouts.clone(),
        );
        let webhook_deliveries = Family::default();
        registry.register(
            "webhook_deliveries",
            "Webhook notifications, delivered (ok) or given up or dropped (failed)",
            webhook_deliveries.clone(),
        );

        Self {
            registry,
            approval_requests,
            decision_latency,
            approver_decisions,
            actions,
            active_sessions,
            bytes,
            escalations,
            timeouts,
            webhook_deliveries,
        }
    }

    /// Counts an approval request on `target` that ended with `outcome`.
    pub fn approval_request(&self, target: &str, outcome: ApprovalOutcome) {
        self.approval_requests
            .get_or_create(&ApprovalLabels {
                target: target.to_owned(),
                outcome,
            })
            .inc();
    }

    /// Records how long a human took to decide a request on `target`.
    pub fn decision_latency(&self, target: &str, latency: Duration) {
        self.decision_latency
            .get_or_create(&TargetLabels {
                target: target.to_owned(),
            })
            .observe(latency.as_secs_f64());
    }

    /// Counts one approval or denial given by an approver of kind `approver`.
    pub fn approver_decision(&self, decision: ApproverDecision, approver: ApproverKind) {
        self.approver_decisions
            .get_or_create(&ApproverLabels { decision, approver })
            .inc();
    }

    /// Counts one action on `target` over `protocol` and the gate's verdict.
    pub fn action(&self, target: &str, protocol: &str, verdict: Verdict) {
        self.actions
            .get_or_create(&ActionLabels {
                target: target.to_owned(),
                protocol: protocol.to_owned(),
                verdict,
            })
            .inc();
    }

    /// A client session began.
    pub fn session_opened(&self) {
        self.active_sessions.inc();
    }

    /// A client session ended (pair every call with one [`Metrics::session_opened`]).
    pub fn session_closed(&self) {
        self.active_sessions.dec();
    }

    /// Adds relayed bytes for `target`: `up` from the client, `down` from the target.
    pub fn bytes(&self, target: &str, up: u64, down: u64) {
        for (direction, n) in [(Direction::Up, up), (Direction::Down, down)] {
            if n > 0 {
                self.bytes
                    .get_or_create(&BytesLabels {
                        target: target.to_owned(),
                        direction,
                    })
                    .inc_by(n);
            }
        }
    }

    /// Counts a request on `target` escalated to the next approvers.
    pub fn escalation(&self, target: &str) {
        self.escalations
            .get_or_create(&TargetLabels {
                target: target.to_owned(),
            })
            .inc();
    }

    /// Counts a request on `target` that timed out, and the fallback applied.
    pub fn timeout(&self, target: &str, fallback: TimeoutFallback) {
        self.timeouts
            .get_or_create(&TimeoutLabels {
                target: target.to_owned(),
                fallback,
            })
            .inc();
    }

    /// Counts one notification to the webhook called `name`: delivered, or not.
    pub fn webhook(&self, name: &str, ok: bool) {
        let result = if ok {
            DeliveryResult::Ok
        } else {
            DeliveryResult::Failed
        };
        self.webhook_deliveries
            .get_or_create(&WebhookLabels {
                webhook: name.to_owned(),
                result,
            })
            .inc();
    }

    /// Renders every family in the OpenMetrics text format (served as
    /// [`CONTENT_TYPE`]; Prometheus scrapes it as is).
    #[must_use]
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(error) = text::encode(&mut out, &self.registry) {
            // Writing to a String cannot fail; an encoder error would be a bug in the
            // label types, and a partial scrape is better than none.
            tracing::warn!(%error, "Metrics encoding failed");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn assert_has(text: &str, line: &str) {
        assert!(
            text.lines().any(|l| l == line),
            "missing line {line:?} in:\n{text}"
        );
    }

    #[test]
    fn metrics_is_shareable() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Metrics>();
        send_sync::<Arc<Metrics>>();
    }

    #[test]
    fn fresh_metrics_encode_a_complete_exposition() {
        // Families without series are left out until something is recorded.
        let text = Metrics::new().encode();
        assert_has(&text, "portcullis_active_sessions 0");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn recorded_values_appear_with_their_labels() {
        let m = Metrics::new();
        m.approval_request("prod-db", ApprovalOutcome::Approved);
        m.approval_request("prod-db", ApprovalOutcome::Approved);
        m.approval_request("prod-db", ApprovalOutcome::Shutdown);
        m.decision_latency("prod-db", Duration::from_millis(1500));
        m.action("prod-db", "postgres", Verdict::Held);
        m.action("web", "http", Verdict::Allowed);
        m.session_opened();
        m.session_opened();
        m.session_closed();
        m.bytes("prod-db", 10, 2048);
        m.bytes("prod-db", 5, 0);
        m.escalation("prod-db");
        m.timeout("prod-db", TimeoutFallback::Escalate);
        m.timeout("prod-db", TimeoutFallback::Deny);
        m.webhook("slack", true);
        m.webhook("slack", false);
        m.webhook("slack", false);

        let text = m.encode();
        for (family, kind) in [
            ("portcullis_approval_requests", "counter"),
            ("portcullis_decision_latency_seconds", "histogram"),
            ("portcullis_actions", "counter"),
            ("portcullis_active_sessions", "gauge"),
            ("portcullis_bytes", "counter"),
            ("portcullis_escalations", "counter"),
            ("portcullis_timeouts", "counter"),
            ("portcullis_webhook_deliveries", "counter"),
        ] {
            assert_has(&text, &format!("# TYPE {family} {kind}"));
        }
        assert_has(
            &text,
            r#"portcullis_approval_requests_total{target="prod-db",outcome="approved"} 2"#,
        );
        assert_has(
            &text,
            r#"portcullis_approval_requests_total{target="prod-db",outcome="shutdown"} 1"#,
        );
        assert_has(
            &text,
            r#"portcullis_decision_latency_seconds_count{target="prod-db"} 1"#,
        );
        assert_has(
            &text,
            r#"portcullis_decision_latency_seconds_bucket{le="1.0",target="prod-db"} 0"#,
        );
        assert_has(
            &text,
            r#"portcullis_decision_latency_seconds_bucket{le="2.0",target="prod-db"} 1"#,
        );
        assert_has(
            &text,
            r#"portcullis_decision_latency_seconds_bucket{le="3600.0",target="prod-db"} 1"#,
        );
        assert_has(
            &text,
            r#"portcullis_actions_total{target="prod-db",protocol="postgres",verdict="held"} 1"#,
        );
        assert_has(
            &text,
            r#"portcullis_actions_total{target="web",protocol="http",verdict="allowed"} 1"#,
        );
        assert_has(&text, "portcullis_active_sessions 1");
        assert_has(
            &text,
            r#"portcullis_bytes_total{target="prod-db",direction="up"} 15"#,
        );
        assert_has(
            &text,
            r#"portcullis_bytes_total{target="prod-db",direction="down"} 2048"#,
        );
        assert_has(&text, r#"portcullis_escalations_total{target="prod-db"} 1"#);
        assert_has(
            &text,
            r#"portcullis_timeouts_total{target="prod-db",fallback="escalate"} 1"#,
        );
        assert_has(
            &text,
            r#"portcullis_timeouts_total{target="prod-db",fallback="deny"} 1"#,
        );
        assert_has(
            &text,
            r#"portcullis_webhook_deliveries_total{webhook="slack",result="ok"} 1"#,
        );
        assert_has(
            &text,
            r#"portcullis_webhook_deliveries_total{webhook="slack",result="failed"} 2"#,
        );
    }

    #[test]
    fn approver_decisions_count_by_kind_never_by_person() {
        let m = Metrics::new();
        m.approver_decision(ApproverDecision::Approve, ApproverKind::Local);
        m.approver_decision(ApproverDecision::Approve, ApproverKind::Local);
        m.approver_decision(ApproverDecision::Deny, ApproverKind::Idp);
        let text = m.encode();
        assert_has(&text, "# TYPE portcullis_approver_decisions counter");
        assert_has(
            &text,
            r#"portcullis_approver_decisions_total{decision="approve",approver="local"} 2"#,
        );
        assert_has(
            &text,
            r#"portcullis_approver_decisions_total{decision="deny",approver="idp"} 1"#,
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        m.escalation("we\"ird\\name");
        assert_has(
            &m.encode(),
            r#"portcullis_escalations_total{target="we\"ird\\name"} 1"#,
        );
    }
}
