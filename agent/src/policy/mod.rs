//! Policy: which principals may reach which protected targets, and on what terms.
//!
//! A policy is a directory of TOML files (`*.toml`, read in file-name order; other
//! files and hidden files are ignored) merged into one [`Policy`]. Each file may hold
//! three kinds of tables:
//!
//! - `[[target]]`: a protected system: a unique `name`, a `protocol` (`tcp`, `postgres`, `http`, `https`),
//!   and exactly one of `address` / `addresses` (`ip:port`, `[v6]:port` or
//!   `host:port`).
//! - `[[group]]`: a named set of people: `users` (user names) and `unix_groups`. A
//!   principal (or a local approver) is in the group if its user is listed or it
//!   shares a unix group. Approvers who sign in through an identity provider (the web
//!   console) are in the group if one of their IdP groups is in `idp_groups` or their
//!   verified email is in `emails` (compared without regard to case); a connecting
//!   principal is, by the same keys, when its uid is linked to an identity by
//!   `portcullis login` (`Principal::idp`). Every entry of
//!   `idp_groups` and `emails` must be a non-empty string (an email: `name@domain`).
//! - `[[rule]]`: `targets` (names, or `["*"]` for every target), an optional `who`,
//!   and an `action`: `allow` (optionally `skip_review`), `deny`, or `review` with
//!   `approvers` (group names), `approvals`, `timeout`, `on_timeout` (`deny` or
//!   `escalate` to `escalate_to` groups for `escalation_timeout`) and `grant`.
//!
//! `who` semantics: the identity fields `users`, `groups` (policy groups),
//! `unix_groups`, `uids` and `idp_groups` (the linked identity's group claims) are
//! alternatives, any one matching is enough ("is this one
//! of these people"); `exe` (exact paths or globs where `*` matches any run of
//! characters, `/` included) further restricts them: it must match as well. A `who`
//! with only `exe` means anyone running that program; an omitted `who` means
//! everyone. When the executable is unknown (the process exited before we looked) an
//! `exe` restriction fails closed: it never satisfies an `allow` rule and always
//! satisfies a `review` or `deny` rule.
//!
//! Decisions: every rule that names the target and matches the principal is
//! collected; the most restrictive wins (deny > review > allow), the earliest rule
//! breaking ties. The one exception: a matching `allow` rule with `skip_review = true`
//! lets a trusted principal past review rules (never past a deny). No matching rule
//! is a deny.
//!
//! A policy with any error is refused as a whole: [`Policy::load_dir`] returns the
//! first error as `path/to/file.toml:LINE: reason`.
//!
//! Layout: `file` mirrors the TOML (serde, unknown keys are errors); `load` reads
//! the directory and parses every file; `build` validates and builds the domain
//! types defined here and in `review` (the parameters of a review hold); `address`
//! parses target addresses; `matching` holds the validated rules and answers "does
//! this rule apply to this principal".

mod address;
mod build;
mod file;
mod filter;
mod load;
mod matching;
mod review;
mod sql;
mod target;

use std::{collections::HashMap, fmt, io, path::Path, path::PathBuf};

use serde::Serialize;

use crate::identity::{Approver, Principal};
pub use address::TargetAddress;
pub use filter::http::{HttpRequest, path_matches};
pub use filter::ssh::{FileOp, FileRequest, SshKind, SshRequest, normalize_path};
use matching::{Group, Rule};
pub use review::{Escalation, Review};
pub use sql::{SqlClass, SqlClasses};
pub use target::{
    BackendTls, Credentials, HttpCredentials, Protocol, SshTarget, Target, TargetTls,
};

/// A validated, merged policy; the default is the empty policy that denies everything.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Targets in load order (files by name, then order within the file).
    targets: Vec<Target>,
    /// Groups by name, so the gate can check who may approve a review.
    groups: HashMap<String, Group>,
    /// Rules in load order; the order breaks ties between equally restrictive rules.
    rules: Vec<Rule>,
}

impl Policy {
    /// Reads every `*.toml` file in `dir` and validates the result as a whole.
    ///
    /// A directory without policy files gives the empty policy (everything denied).
    pub fn load_dir(dir: &Path) -> Result<Policy, PolicyError> {
        load::load_dir(dir)
    }

    /// All protected targets, in load order.
    #[must_use]
    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// The target called `name`, if the policy defines one.
    #[must_use]
    pub fn target(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.name == name)
    }

    /// The review of the rule called `rule`, if it is a review rule: what the console
    /// shows about a held request's timeout.
    #[must_use]
    pub fn review_of(&self, rule: &str) -> Option<&Review> {
        self.rules
            .iter()
            .find(|r| r.name == rule)
            .and_then(Rule::review)
    }

    /// How many rules the policy holds.
    #[must_use]
    pub fn rules_len(&self) -> usize {
        self.rules.len()
    }

    /// Whether the approver `who` belongs to the policy group called `group`: a local
    /// approver if its user is listed or it shares a listed unix group (as `who.groups`
    /// in a rule would match it), an identity-provider approver if one of its groups is
    /// in `idp_groups` or its email in `emails`.
    ///
    /// An undefined group has no members. The gate uses this to check that a person
    /// deciding a review is one of its approvers.
    #[must_use]
    pub fn is_member(&self, group: &str, who: &Approver) -> bool {
        self.groups.get(group).is_some_and(|g| g.admits(who))
    }

    /// Decides whether `principal` may reach the target called `target`.
    ///
    /// The most restrictive matching rule wins (deny, then review, then allow; the
    /// earliest rule among equals), except that a matching `allow` rule with
    /// `skip_review` turns a review into an allow. Without a matching rule, and for
    /// targets the policy does not define, the answer is a deny.
    #[must_use]
    pub fn decide(&self, principal: &Principal, target: &str) -> Decision {
        self.decide_on(principal, target, Subject::Connection)
    }

    /// The masking specs of every rule that covers `target` and matches `principal`
    /// (deny rules excepted: their sessions never open). They apply to the whole
    /// session: results, messages and recordings.
    #[must_use]
    pub fn masks_for(&self, principal: &Principal, target: &str) -> Vec<crate::mask::MaskSpec> {
        self.rules
            .iter()
            .filter(|rule| rule.verdict() != Verdict::Deny)
            .filter(|rule| rule.applies_to(target) && rule.matches(principal))
            .filter_map(|rule| rule.mask.clone())
            .collect()
    }

    /// The masking specs of every rule that covers `target` (deny rules excepted), for
    /// whoever connects: what `discover` samples the target with (issue 22).
    #[must_use]
    pub fn masks_of_target(&self, target: &str) -> Vec<crate::mask::MaskSpec> {
        self.rules
            .iter()
            .filter(|rule| rule.verdict() != Verdict::Deny && rule.applies_to(target))
            .filter_map(|rule| rule.mask.clone())
            .collect()
    }

    /// Decides one statement on a connection the policy already allowed, with the
    /// rules that have `sql` or `tables`. The most restrictive matching rule wins, as
    /// for connections; no matching rule allows it (the connection was allowed),
    /// except an unparsed statement, which is denied.
    #[must_use]
    pub fn decide_statement(
        &self,
        principal: &Principal,
        target: &str,
        statement: &Statement<'_>,
    ) -> Decision {
        self.decide_on(principal, target, Subject::Statement(statement))
    }

    /// Decides one SSH action on a connection the policy already allowed, with the
    /// rules that have `ssh`, `commands` or `who.logins`. The most restrictive
    /// matching rule wins; no matching rule allows it, except agent forwarding, X11
    /// and an unparsed command line, which are denied.
    #[must_use]
    pub fn decide_ssh(
        &self,
        principal: &Principal,
        target: &str,
        request: &SshRequest<'_>,
    ) -> Decision {
        self.decide_on(principal, target, Subject::Ssh(request))
    }

    /// Decides one HTTP request on a connection the policy already allowed, with the
    /// rules that have `methods` or `paths`. The most restrictive matching rule wins,
    /// as for connections; no matching rule allows it (the connection was allowed).
    #[must_use]
    pub fn decide_request(
        &self,
        principal: &Principal,
        target: &str,
        request: &HttpRequest<'_>,
    ) -> Decision {
        self.decide_on(principal, target, Subject::Http(request))
    }

    fn decide_on(&self, principal: &Principal, target: &str, subject: Subject<'_>) -> Decision {
        let Some(target) = self.target(target) else {
            return Decision::deny_unmatched(format!(
                "target {target} is not defined in the policy"
            ));
        };
        let name = &target.name;
        // Reasons are formatted only when they are kept: an allowed statement's reason
        // is shown nowhere (its record names the rule), and this runs per statement.
        let label = || principal.label();
        let what = || match subject {
            Subject::Connection => format!("to reach target {name}"),
            Subject::Statement(s) => format!("to run {} on target {name}", s.classes.names()),
            Subject::Ssh(r) if r.is_typed_line() => {
                format!(
                    "to run a typed command line as {} on target {name}",
                    r.login
                )
            }
            Subject::Ssh(r) => format!("{} as {} on target {name}", r.kind.verb(), r.login),
            Subject::Http(r) => format!("to {} {} on target {name}", r.method, r.path),
        };
        let matching = || {
            self.rules.iter().filter(|rule| {
                rule.applies_to(name) && rule.covers(subject) && rule.matches(principal)
            })
        };
        let first = |verdict| matching().find(|rule| rule.verdict() == verdict);
        if let Some(rule) = first(Verdict::Deny) {
            let reason = format!("rule `{}` denies {} {}", rule.name, label(), what());
            return Decision::by(rule, reason);
        }
        if let Some((rule, review)) = matching().find_map(|rule| Some((rule, rule.review()?))) {
            if let Some(trusted) = matching().find(|rule| rule.skips_review()) {
                let reason = format!(
                    "rule `{}` allows {} {} without review (skips rule `{}`, which \
                     requires review by {})",
                    trusted.name,
                    label(),
                    what(),
                    rule.name,
                    review.summary()
                );
                return Decision::by(trusted, reason);
            }
            let reason = format!(
                "rule `{}` requires review by {} for {} {}",
                rule.name,
                review.summary(),
                label(),
                what()
            );
            return Decision::by(rule, reason);
        }
        if let Some(rule) = first(Verdict::Allow) {
            let reason = match subject {
                Subject::Connection => {
                    format!("rule `{}` allows {} {}", rule.name, label(), what())
                }
                Subject::Statement(_) | Subject::Ssh(_) | Subject::Http(_) => String::new(),
            };
            return Decision::by(rule, reason);
        }
        match subject {
            Subject::Connection => {
                Decision::deny_unmatched(format!("no rule allows {} {}", label(), what()))
            }
            Subject::Statement(s) => filter::sql::unmatched(s, name),
            Subject::Ssh(r) => filter::ssh::unmatched(r, name),
            Subject::Http(_) => filter::http::unmatched(),
        }
    }
}

/// What a decision is about: the connection, or an action inside it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Subject<'a> {
    Connection,
    Statement(&'a Statement<'a>),
    Ssh(&'a SshRequest<'a>),
    Http(&'a HttpRequest<'a>),
}

/// What a statement does, as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Statement<'a> {
    pub classes: SqlClasses,
    /// Tables as written: `name` or `schema.name`.
    pub tables: &'a [String],
}

/// The answer to "may this principal reach this target", with who decided and why.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// What happens to the connection.
    pub verdict: Verdict,
    /// The rule that decided; `None` when no rule matched.
    pub rule: Option<String>,
    /// One sentence for the client, the log and the audit record; empty for an
    /// allowed statement, whose reason nothing shows.
    pub reason: String,
    /// What the hold asks for: `Some` exactly when `verdict` is [`Verdict::Review`].
    pub review: Option<Review>,
}

impl Decision {
    /// The deny given when no rule decides.
    pub(super) fn deny_unmatched(reason: String) -> Decision {
        Decision {
            verdict: Verdict::Deny,
            rule: None,
            reason,
            review: None,
        }
    }

    /// The decision of `rule`, with its description (if any) appended to `reason`
    /// (unless that is empty: an allowed statement).
    fn by(rule: &Rule, reason: String) -> Decision {
        let reason = match &rule.description {
            Some(description) if !reason.is_empty() => format!("{reason} ({description})"),
            _ => reason,
        };
        Decision {
            verdict: rule.verdict(),
            rule: Some(rule.name.clone()),
            reason,
            review: rule.review().cloned(),
        }
    }
}

/// What a decision says.
///
/// Variants are declared from least to most restrictive and `Ord` is derived, so
/// `max()` over verdicts is "most restrictive wins".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Let the action through now.
    Allow,
    /// Hold the action until approvers decide ([`Decision::review`] says who and how).
    Review,
    /// Refuse the action.
    Deny,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Allow => "allow",
            Verdict::Review => "review",
            Verdict::Deny => "deny",
        })
    }
}

/// Why a policy directory was refused.
///
/// The I/O error is part of the message (so the hint can come last), not a `source`.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The directory is missing or unreadable.
    #[error("cannot read policy directory {path}: {error}; check that it exists and is readable")]
    ReadDir { path: PathBuf, error: io::Error },
    /// A policy file could not be read.
    #[error(
        "cannot read policy file {path}: {error}; check its permissions and that it is UTF-8 text"
    )]
    ReadFile { path: PathBuf, error: io::Error },
    /// A syntax or validation error at a place in a file.
    #[error("{path}:{line}: {reason}")]
    Invalid {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

impl PolicyError {
    /// The directory or file the error is about.
    #[must_use]
    pub fn path(&self) -> &Path {
        match self {
            PolicyError::ReadDir { path, .. }
            | PolicyError::ReadFile { path, .. }
            | PolicyError::Invalid { path, .. } => path,
        }
    }

    /// The 1-based line the error points at, for errors inside a file.
    #[must_use]
    pub fn line(&self) -> Option<usize> {
        match self {
            PolicyError::Invalid { line, .. } => Some(*line),
            PolicyError::ReadDir { .. } | PolicyError::ReadFile { .. } => None,
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies");

    #[test]
    fn shipped_policies_load() {
        let policy = Policy::load_dir(Path::new(SHIPPED)).unwrap();
        let names: Vec<_> = policy.targets().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "orders-api-demo",
                "files-demo",
                "echo-demo",
                "echo-review-demo",
                "app-db-demo"
            ]
        );
        let echo = policy.target("echo-demo").unwrap();
        assert_eq!(echo.protocol, Protocol::Tcp);
        assert_eq!(echo.addresses.len(), 1);
        assert_eq!(echo.addresses[0].to_string(), "127.0.0.2:7000");
        let review = policy.target("echo-review-demo").unwrap();
        assert_eq!(review.addresses[0].to_string(), "127.0.0.2:7001");
        let db = policy.target("app-db-demo").unwrap();
        assert_eq!(db.protocol, Protocol::Postgres);
        assert!(db.credentials.as_ref().unwrap().password.is_some());
        assert_eq!(policy.rules_len(), 12);
        let api = policy.target("orders-api-demo").unwrap();
        assert_eq!(api.protocol, Protocol::Http);
        let curl = matching::tests::principal("root", 0, &[], "/usr/bin/curl");
        let api_masks = policy.masks_for(&curl, "orders-api-demo");
        assert_eq!(api_masks[0].mask_json, ["$.users[*].phone", "$..ssn"]);
        let root = matching::tests::principal("root", 0, &[], "/usr/bin/psql");
        let ddl = Statement {
            classes: SqlClasses::empty().with(SqlClass::Ddl),
            tables: &[],
        };
        let d = policy.decide_statement(&root, "app-db-demo", &ddl);
        assert_eq!(d.verdict, Verdict::Review, "{d:?}");
        assert_eq!(policy.masks_for(&root, "app-db-demo").len(), 1);
    }

    #[test]
    fn shipped_policies_decide() {
        let policy = Policy::load_dir(Path::new(SHIPPED)).unwrap();
        let mut root = matching::tests::principal("root", 0, &["root"], "/usr/bin/nc");
        let d = policy.decide(&root, "echo-demo");
        assert_eq!(d.verdict, Verdict::Allow, "{d:?}");
        root.user = Some("nobody".into());
        root.uid = 65534;
        root.unix_groups = vec!["nogroup".into()];
        let d = policy.decide(&root, "echo-demo");
        assert_eq!(d.verdict, Verdict::Deny, "{d:?}");
        let demo = matching::tests::principal("dev", 1000, &["portcullis-demo"], "/usr/bin/nc");
        assert_eq!(policy.decide(&demo, "echo-demo").verdict, Verdict::Allow);
        let other = matching::tests::principal("eve", 1001, &["eve"], "/usr/bin/nc");
        assert_eq!(policy.decide(&other, "echo-demo").verdict, Verdict::Deny);
    }

    #[test]
    fn shipped_policies_review_demo() {
        let policy = Policy::load_dir(Path::new(SHIPPED)).unwrap();
        let root = matching::tests::principal("root", 0, &["root"], "/usr/bin/nc");
        let d = policy.decide(&root, "echo-review-demo");
        assert_eq!(d.verdict, Verdict::Review, "{d:?}");
        assert_eq!(d.rule.as_deref(), Some("review-demo-needs-approval"));
        let review = d.review.unwrap();
        assert_eq!(review.approvers, ["portcullis-approvers"]);
        assert_eq!(review.quorum, 1);
        assert_eq!(review.timeout, std::time::Duration::from_mins(2));
        assert_eq!(review.escalation, None);
        assert_eq!(review.grant, Some(std::time::Duration::from_mins(10)));
        let nobody = matching::tests::principal("nobody", 65534, &["nogroup"], "/usr/bin/nc");
        let d = policy.decide(&nobody, "echo-review-demo");
        assert_eq!((d.verdict, d.review), (Verdict::Deny, None));
        let approver =
            matching::tests::principal("ann", 1002, &["ann", "portcullis-approvers"], "/bin/sh");
        assert!(policy.is_member("portcullis-approvers", &Approver::from(&approver)));
        assert!(!policy.is_member("portcullis-approvers", &Approver::from(&root)));
    }

    #[test]
    fn is_member_by_user_or_unix_group() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[[group]]\nname = \"dba\"\nusers = [\"bob\"]\nunix_groups = [\"dbadmins\"]\n\
                    [[group]]\nname = \"empty\"\n";
        std::fs::write(dir.path().join("g.toml"), text).unwrap();
        let policy = Policy::load_dir(dir.path()).unwrap();
        let bob = matching::tests::principal("bob", 1002, &["bob"], "/bin/sh");
        let carol = matching::tests::principal("carol", 1003, &["dbadmins"], "/bin/sh");
        let eve = matching::tests::principal("eve", 1001, &["eve"], "/bin/sh");
        let mut unnamed = bob.clone();
        unnamed.user = None;
        let [bob, carol, eve, unnamed] = [bob, carol, eve, unnamed].map(|p| Approver::from(&p));
        assert!(policy.is_member("dba", &bob));
        assert!(policy.is_member("dba", &carol));
        assert!(!policy.is_member("dba", &eve));
        assert!(
            !policy.is_member("dba", &unnamed),
            "no user name, no unix group"
        );
        assert!(!policy.is_member("empty", &bob));
        assert!(!policy.is_member("dbas", &bob), "undefined group");
        assert!(!policy.is_member("bob", &bob), "a user name is not a group");
        assert!(!Policy::default().is_member("dba", &bob));
    }

    #[test]
    fn empty_policy_denies() {
        let policy = Policy::default();
        let p = matching::tests::principal("alice", 1000, &[], "/bin/sh");
        let d = policy.decide(&p, "echo");
        assert_eq!((d.verdict, d.rule), (Verdict::Deny, None));
    }

    #[test]
    fn verdicts_order_by_restrictiveness() {
        assert!(Verdict::Allow < Verdict::Review && Verdict::Review < Verdict::Deny);
        assert_eq!(Verdict::Deny.to_string(), "deny");
        assert_eq!(Verdict::Review.to_string(), "review");
        assert_eq!(
            serde_json::to_string(&Verdict::Review).unwrap(),
            "\"review\""
        );
        assert_eq!(serde_json::to_string(&Verdict::Allow).unwrap(), "\"allow\"");
        assert_eq!(serde_json::to_string(&Protocol::Tcp).unwrap(), "\"tcp\"");
    }
}
