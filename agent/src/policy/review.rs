//! Review holds: what a `review` rule asks of the gate.
//!
//! A review rule does not decide by itself: it names who may approve, how many must,
//! how long to wait and what happens when nobody answers. The gate parks the action
//! and applies these parameters; the policy only says which ones apply.

use std::time::Duration;

use serde::{Serialize, Serializer};

/// How long a review waits when the rule has no `timeout`.
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_mins(5);

/// The longest `timeout`, `escalation_timeout` or `grant` a rule may set.
pub(super) const MAX_DURATION: Duration = Duration::from_hours(7 * 24);

/// The parameters of a review hold, from the `review` rule that decided.
///
/// Durations serialize as human-readable strings (`"5m"`, `"1h 30m"`), as written in
/// policy files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Review {
    /// Policy `[[group]]` names whose members may approve or deny; check a person
    /// with [`Policy::is_member`](super::Policy::is_member).
    pub approvers: Vec<String>,
    /// How many distinct approvers must say yes (`approvals`, at least 1).
    pub quorum: u32,
    /// How long the action waits for the quorum before `escalation` (or a deny).
    #[serde(serialize_with = "human_duration")]
    pub timeout: Duration,
    /// Who decides once `timeout` passes; `None` means the action is denied then.
    pub escalation: Option<Escalation>,
    /// After an approval, how long the same principal's same action on the same target
    /// passes without a new review; `None` means every action is reviewed.
    #[serde(serialize_with = "optional_human_duration")]
    pub grant: Option<Duration>,
}

/// The second stage of a review whose `on_timeout` is `"escalate"`.
///
/// Once the review's own timeout passes, the groups in `approvers` decide instead,
/// with the same quorum; when `timeout` passes as well, the action is denied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Escalation {
    /// Policy `[[group]]` names that decide once the review's own timeout has passed.
    pub approvers: Vec<String>,
    /// How long the escalated review waits before the action is denied.
    #[serde(serialize_with = "human_duration")]
    pub timeout: Duration,
}

impl Review {
    /// A short description for reasons: `dba, sre (2 approvals)`.
    pub(super) fn summary(&self) -> String {
        let plural = if self.quorum == 1 { "" } else { "s" };
        format!(
            "{} ({} approval{plural})",
            self.approvers.join(", "),
            self.quorum
        )
    }
}

fn human_duration<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_duration(*duration))
}

#[expect(
    clippy::ref_option,
    reason = "the signature serde's `serialize_with` calls"
)]
fn optional_human_duration<S: Serializer>(
    duration: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match duration {
        Some(duration) => human_duration(duration, serializer),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::policy::{Policy, Verdict, matching::tests::principal};

    /// A policy with targets `db` and `web`, groups `dba`, `sre` and `trusted`, and `rules`.
    fn policy(rules: &str) -> Policy {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[[target]]\nname = \"db\"\nprotocol = \"tcp\"\naddress = \"127.0.0.2:5432\"\n\
             [[target]]\nname = \"web\"\nprotocol = \"tcp\"\naddress = \"127.0.0.2:80\"\n\
             [[group]]\nname = \"dba\"\nusers = [\"bob\"]\n\
             [[group]]\nname = \"sre\"\nunix_groups = [\"oncall\"]\n\
             [[group]]\nname = \"trusted\"\nusers = [\"batch\"]\n{rules}"
        );
        std::fs::write(dir.path().join("p.toml"), text).unwrap();
        Policy::load_dir(dir.path()).unwrap()
    }

    const EVERYONE: &str = "[[rule]]\nname = \"everyone\"\ntargets = [\"*\"]\naction = \"allow\"\n";

    fn review_rule(name: &str, extra: &str) -> String {
        format!(
            "[[rule]]\nname = \"{name}\"\ntargets = [\"db\"]\naction = \"review\"\n\
             approvers = [\"dba\"]\n{extra}\n"
        )
    }

    #[test]
    fn review_with_defaults() {
        let p = policy(&format!("{EVERYONE}{}", review_rule("db-review", "")));
        let alice = principal("alice", 1000, &[], "/usr/bin/psql");
        let d = p.decide(&alice, "db");
        assert_eq!(d.verdict, Verdict::Review, "{d:?}");
        assert_eq!(d.rule.as_deref(), Some("db-review"));
        let review = d.review.unwrap();
        assert_eq!(
            review,
            Review {
                approvers: vec!["dba".into()],
                quorum: 1,
                timeout: Duration::from_mins(5),
                escalation: None,
                grant: None,
            }
        );
        assert_eq!(
            d.reason,
            format!(
                "rule `db-review` requires review by dba (1 approval) for {} to reach target db",
                alice.label()
            )
        );
        let d = p.decide(&alice, "web");
        assert_eq!((d.verdict, d.review), (Verdict::Allow, None));
    }

    #[test]
    fn review_with_every_parameter() {
        let extra = "approvals = 2\ntimeout = \"90s\"\non_timeout = \"escalate\"\n\
                     escalate_to = [\"sre\"]\nescalation_timeout = \"1h\"\ngrant = \"30m\"\n\
                     description = \"production data\"";
        let p = policy(&review_rule("db-review", extra));
        let alice = principal("alice", 1000, &[], "/usr/bin/psql");
        let d = p.decide(&alice, "db");
        assert_eq!(d.verdict, Verdict::Review);
        assert!(
            d.reason
                .starts_with("rule `db-review` requires review by dba (2 approvals) for "),
            "{}",
            d.reason
        );
        assert!(d.reason.ends_with("(production data)"), "{}", d.reason);
        let review = d.review.unwrap();
        assert_eq!(review.quorum, 2);
        assert_eq!(review.timeout, Duration::from_secs(90));
        assert_eq!(
            review.escalation,
            Some(Escalation {
                approvers: vec!["sre".into()],
                timeout: Duration::from_hours(1),
            })
        );
        assert_eq!(review.grant, Some(Duration::from_mins(30)));
        let json = serde_json::to_value(&review).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "approvers": ["dba"],
                "quorum": 2,
                "timeout": "1m 30s",
                "escalation": { "approvers": ["sre"], "timeout": "1h" },
                "grant": "30m",
            })
        );
    }

    #[test]
    fn escalation_timeout_defaults_to_timeout() {
        let extra = "timeout = \"2m\"\non_timeout = \"escalate\"\nescalate_to = [\"sre\", \"dba\"]";
        let p = policy(&review_rule("r", extra));
        let d = p.decide(&principal("alice", 1000, &[], "/bin/sh"), "db");
        let escalation = d.review.unwrap().escalation.unwrap();
        assert_eq!(escalation.approvers, ["sre", "dba"]);
        assert_eq!(escalation.timeout, Duration::from_mins(2));
    }

    #[test]
    fn deny_beats_review_and_review_beats_allow() {
        let deny_eve = "[[rule]]\nname = \"not-eve\"\ntargets = [\"*\"]\nwho = { users = [\"eve\"] }\naction = \"deny\"\n";
        let p = policy(&format!("{EVERYONE}{}{deny_eve}", review_rule("r", "")));
        let eve = principal("eve", 1001, &[], "/usr/bin/psql");
        let d = p.decide(&eve, "db");
        assert_eq!(
            (d.verdict, d.rule.as_deref()),
            (Verdict::Deny, Some("not-eve"))
        );
        assert_eq!(d.review, None);
        let alice = principal("alice", 1000, &[], "/usr/bin/psql");
        assert_eq!(p.decide(&alice, "db").verdict, Verdict::Review);
    }

    #[test]
    fn earliest_review_rule_decides() {
        let second = "[[rule]]\nname = \"second\"\ntargets = [\"*\"]\naction = \"review\"\n\
                      approvers = [\"sre\"]\napprovals = 3\n";
        let p = policy(&format!("{}{second}", review_rule("first", "")));
        let alice = principal("alice", 1000, &[], "/bin/sh");
        let d = p.decide(&alice, "db");
        assert_eq!(d.rule.as_deref(), Some("first"));
        assert_eq!(d.review.unwrap().approvers, ["dba"]);
        let d = p.decide(&alice, "web");
        assert_eq!(d.rule.as_deref(), Some("second"));
        assert_eq!(d.review.unwrap().quorum, 3);
    }

    #[test]
    fn skip_review_beats_review_but_not_deny() {
        let skip = "[[rule]]\nname = \"batch-skips\"\ntargets = [\"db\"]\n\
                    who = { groups = [\"trusted\"], exe = [\"/opt/batch/*\"] }\n\
                    action = \"allow\"\nskip_review = true\n";
        let no_deleted = "[[rule]]\nname = \"no-tmp\"\ntargets = [\"*\"]\n\
                          who = { exe = [\"/tmp/*\"] }\naction = \"deny\"\n";
        let p = policy(&format!("{}{skip}{no_deleted}", review_rule("r", "")));
        let batch = principal("batch", 900, &[], "/opt/batch/run");
        let d = p.decide(&batch, "db");
        assert_eq!(d.verdict, Verdict::Allow, "{d:?}");
        assert_eq!(d.rule.as_deref(), Some("batch-skips"));
        assert_eq!(d.review, None);
        assert!(
            d.reason
                .contains("without review (skips rule `r`, which requires review by dba"),
            "{}",
            d.reason
        );

        let other_exe = principal("batch", 900, &[], "/usr/bin/psql");
        assert_eq!(p.decide(&other_exe, "db").verdict, Verdict::Review);
        let mut unknown_exe = batch.clone();
        unknown_exe.exe = None;
        assert_eq!(
            p.decide(&unknown_exe, "db").verdict,
            Verdict::Deny,
            "an unknown exe meets the deny and cannot skip"
        );
        let tmp = principal("batch", 900, &[], "/tmp/x");
        assert_eq!(p.decide(&tmp, "db").verdict, Verdict::Deny);
        let deny_batch = "[[rule]]\nname = \"no-batch\"\ntargets = [\"db\"]\n\
                          who = { users = [\"batch\"] }\naction = \"deny\"\n";
        let p = policy(&format!("{}{skip}{deny_batch}", review_rule("r", "")));
        let d = p.decide(&batch, "db");
        assert_eq!(
            (d.verdict, d.rule.as_deref()),
            (Verdict::Deny, Some("no-batch"))
        );
    }

    #[test]
    fn plain_allow_does_not_skip_review() {
        let allow = "[[rule]]\nname = \"batch\"\ntargets = [\"db\"]\nwho = { users = [\"batch\"] }\n\
                     action = \"allow\"\nskip_review = false\n";
        let p = policy(&format!("{allow}{}", review_rule("r", "")));
        let batch = principal("batch", 900, &[], "/opt/batch/run");
        assert_eq!(p.decide(&batch, "db").verdict, Verdict::Review);
    }

    #[test]
    fn skip_review_without_a_review_rule_is_a_plain_allow() {
        let skip =
            "[[rule]]\nname = \"s\"\ntargets = [\"web\"]\naction = \"allow\"\nskip_review = true\n";
        let p = policy(skip);
        let d = p.decide(&principal("alice", 1000, &[], "/bin/sh"), "web");
        assert_eq!((d.verdict, d.rule.as_deref()), (Verdict::Allow, Some("s")));
        assert!(!d.reason.contains("review"), "{}", d.reason);
    }
}
