//! Validated rules and the question "does this rule apply to this principal and target".

use super::{Review, Subject, Verdict, filter::Filter};
use crate::identity::{Approver, Principal};

/// A validated `[[rule]]`.
#[derive(Debug, Clone)]
pub(super) struct Rule {
    pub name: String,
    pub targets: RuleTargets,
    /// `None` means everyone.
    pub who: Option<Who>,
    pub action: RuleAction,
    /// What kind of action inside a session the rule decides (`sql`/`tables` for
    /// statements); `None` for a rule on connections.
    pub filter: Option<Filter>,
    /// Masking for the sessions this rule matches.
    pub mask: Option<crate::mask::MaskSpec>,
    /// Shown in the decision's reason, so people see why a rule exists.
    pub description: Option<String>,
}

/// Which targets a rule covers.
#[derive(Debug, Clone)]
pub(super) enum RuleTargets {
    /// `targets = ["*"]`.
    All,
    /// Names checked against the policy's targets at load time.
    Named(Vec<String>),
}

/// What a rule does when it applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RuleAction {
    /// Let the principal through; with `skip_review`, also past matching review rules
    /// (never past a deny).
    Allow {
        skip_review: bool,
    },
    /// Hold the action until approvers decide.
    Review(Review),
    Deny,
}

/// A validated `who`.
#[derive(Debug, Clone, Default)]
pub(super) struct Who {
    pub users: Vec<String>,
    /// Policy groups, copied in at load time so matching needs no lookups.
    pub groups: Vec<Group>,
    pub unix_groups: Vec<String>,
    pub uids: Vec<u32>,
    /// Group claims of the requester's linked identity (`portcullis login`).
    pub idp_groups: Vec<String>,
    /// Empty means any executable.
    pub exe: Vec<String>,
}

/// A validated `[[group]]`.
#[derive(Debug, Clone)]
pub(super) struct Group {
    pub users: Vec<String>,
    pub unix_groups: Vec<String>,
    /// Admit identity-provider approvers by their group claims.
    pub idp_groups: Vec<String>,
    /// Admit identity-provider approvers by email; lowercase.
    pub emails: Vec<String>,
    /// Admit Slack users (by member id) clicking the approval buttons.
    pub slack_users: Vec<String>,
}

impl Rule {
    /// The verdict this rule gives when it applies.
    pub fn verdict(&self) -> Verdict {
        match self.action {
            RuleAction::Allow { .. } => Verdict::Allow,
            RuleAction::Review(_) => Verdict::Review,
            RuleAction::Deny => Verdict::Deny,
        }
    }

    /// The hold this rule asks for, if it is a `review` rule.
    pub fn review(&self) -> Option<&Review> {
        match &self.action {
            RuleAction::Review(review) => Some(review),
            RuleAction::Allow { .. } | RuleAction::Deny => None,
        }
    }

    /// Whether this is an `allow` rule with `skip_review = true`.
    pub fn skips_review(&self) -> bool {
        self.action == RuleAction::Allow { skip_review: true }
    }

    /// Whether the rule covers the target called `target`.
    pub fn applies_to(&self, target: &str) -> bool {
        match &self.targets {
            RuleTargets::All => true,
            RuleTargets::Named(names) => names.iter().any(|n| n == target),
        }
    }

    /// Whether the rule decides `subject`.
    ///
    /// Connection rules decide connections, statement rules statements, SSH rules SSH
    /// actions, request rules HTTP requests. An unparsed statement could be anything, so every statement rule
    /// covers it.
    pub fn covers(&self, subject: Subject<'_>) -> bool {
        match (&self.filter, subject) {
            (None, Subject::Connection) => true,
            (Some(Filter::Sql(sql)), Subject::Statement(statement)) => {
                sql.covers(statement, self.verdict())
            }
            (Some(Filter::Ssh(ssh)), Subject::Ssh(request)) => ssh.covers(request, self.verdict()),
            (Some(Filter::Http(http)), Subject::Http(request)) => http.covers(request),
            _ => false,
        }
    }

    /// Whether the rule's `who` matches `principal`.
    ///
    /// Unknown facts resolve toward restriction: a missing executable fails an `exe`
    /// restriction on an allow rule and satisfies it on a deny rule.
    pub fn matches(&self, principal: &Principal) -> bool {
        let Some(who) = &self.who else { return true };
        who.identity_matches(principal) && who.exe_matches(principal, self.verdict())
    }
}

impl Who {
    /// Any identity field matching is enough; none at all means anyone.
    fn identity_matches(&self, p: &Principal) -> bool {
        if self.users.is_empty()
            && self.groups.is_empty()
            && self.unix_groups.is_empty()
            && self.uids.is_empty()
            && self.idp_groups.is_empty()
        {
            return true;
        }
        p.user
            .as_deref()
            .is_some_and(|u| self.users.iter().any(|x| x == u))
            || self.uids.contains(&p.uid)
            || shares_unix_group(&self.unix_groups, p)
            || p.idp.as_ref().is_some_and(|i| i.in_any(&self.idp_groups))
            || self.groups.iter().any(|g| g.contains(p))
    }

    fn exe_matches(&self, p: &Principal, verdict: Verdict) -> bool {
        if self.exe.is_empty() {
            return true;
        }
        let Some(exe) = p.exe.as_deref() else {
            return verdict > Verdict::Allow;
        };
        // A binary replaced while running reads as "/usr/bin/x (deleted)": deny
        // rules still see it as /usr/bin/x; allow rules do not.
        let restricting = verdict > Verdict::Allow;
        let stripped = exe.strip_suffix(" (deleted)").filter(|_| restricting);
        self.exe.iter().any(|pattern| {
            glob_match(pattern, exe) || stripped.is_some_and(|s| glob_match(pattern, s))
        })
    }
}

impl Group {
    /// Whether `p`'s user is listed, `p` shares one of the listed unix groups, or
    /// the identity `p` linked with `portcullis login` is admitted by its group
    /// claims or email.
    pub fn contains(&self, p: &Principal) -> bool {
        self.admits_local(p.user.as_deref(), &p.unix_groups)
            || p.idp.as_ref().is_some_and(|i| {
                i.in_any(&self.idp_groups)
                    || i.email
                        .as_deref()
                        .is_some_and(|e| self.emails.contains(&e.to_lowercase()))
            })
    }

    /// Whether `who` may act for this group: a local approver by user name or unix
    /// group (as [`Group::contains`]), an identity-provider approver by one of its
    /// group claims or its email (without regard to case). Neither kind is admitted
    /// by the other kind's keys.
    pub fn admits(&self, who: &Approver) -> bool {
        match who {
            Approver::Local {
                user, unix_groups, ..
            } => self.admits_local(user.as_deref(), unix_groups),
            Approver::Idp { email, groups, .. } => {
                who.slack_user()
                    .is_some_and(|u| self.slack_users.iter().any(|s| s == u))
                    || groups.iter().any(|g| self.idp_groups.contains(g))
                    || email
                        .as_deref()
                        .is_some_and(|e| self.emails.contains(&e.to_lowercase()))
            }
        }
    }

    fn admits_local(&self, user: Option<&str>, unix_groups: &[String]) -> bool {
        user.is_some_and(|u| self.users.iter().any(|x| x == u))
            || self.unix_groups.iter().any(|g| unix_groups.contains(g))
    }
}

fn shares_unix_group(groups: &[String], p: &Principal) -> bool {
    groups.iter().any(|g| p.unix_groups.contains(g))
}

/// Whether `text` matches `pattern`: `*` matches any run of characters.
pub(super) fn glob_match(pattern: &str, text: &str) -> bool {
    crate::glob::matches(pattern, text, crate::glob::Syntax::PLAIN)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
pub(super) mod tests {
    use super::*;
    use crate::policy::{Policy, SqlClass, SqlClasses, Statement, Verdict};

    /// A principal with every field set.
    pub fn principal(user: &str, uid: u32, groups: &[&str], exe: &str) -> Principal {
        Principal {
            pid: 4242,
            ppid: Some(1),
            uid,
            gid: uid,
            user: Some(user.to_owned()),
            unix_groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            exe: Some(exe.to_owned()),
            cmdline: Some(format!("{exe} --flag")),
            comm: "test".to_owned(),
            cgroup: Some("/user.slice".to_owned()),
            idp: None,
        }
    }

    fn policy(rules: &str) -> Policy {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[[target]]\nname = \"db\"\nprotocol = \"tcp\"\naddress = \"127.0.0.2:5432\"\n\
             [[target]]\nname = \"web\"\nprotocol = \"tcp\"\naddress = \"127.0.0.2:80\"\n\
             [[group]]\nname = \"dba\"\nusers = [\"bob\"]\nunix_groups = [\"dbadmins\"]\n{rules}"
        );
        std::fs::write(dir.path().join("p.toml"), text).unwrap();
        Policy::load_dir(dir.path()).unwrap()
    }

    fn verdict(policy: &Policy, p: &Principal, target: &str) -> Verdict {
        policy.decide(p, target).verdict
    }

    const ALICE: (&str, u32) = ("alice", 1000);

    #[test]
    fn allows_by_user_uid_and_unix_group() {
        let alice = principal(ALICE.0, ALICE.1, &["alice", "ops"], "/usr/bin/psql");
        let eve = principal("eve", 1001, &["eve"], "/usr/bin/psql");
        for who in [
            r#"users = ["alice"]"#,
            "uids = [1000]",
            r#"unix_groups = ["ops"]"#,
        ] {
            let p = policy(&format!(
                "[[rule]]\nname = \"r\"\ntargets = [\"db\"]\nwho = {{ {who} }}\naction = \"allow\"\n"
            ));
            assert_eq!(verdict(&p, &alice, "db"), Verdict::Allow, "{who}");
            assert_eq!(verdict(&p, &eve, "db"), Verdict::Deny, "{who}");
            assert_eq!(
                verdict(&p, &alice, "web"),
                Verdict::Deny,
                "{who}: other target"
            );
        }
    }

    #[test]
    fn allows_by_policy_group_users_and_unix_groups() {
        let p = policy(
            "[[rule]]\nname = \"dbas\"\ntargets = [\"db\"]\nwho = { groups = [\"dba\"] }\naction = \"allow\"\n",
        );
        let bob = principal("bob", 1002, &["bob"], "/usr/bin/psql");
        let carol = principal("carol", 1003, &["carol", "dbadmins"], "/usr/bin/psql");
        let eve = principal("eve", 1001, &["eve"], "/usr/bin/psql");
        assert_eq!(verdict(&p, &bob, "db"), Verdict::Allow);
        assert_eq!(verdict(&p, &carol, "db"), Verdict::Allow);
        assert_eq!(verdict(&p, &eve, "db"), Verdict::Deny);
    }

    #[test]
    fn exe_restricts_identity() {
        let p = policy(
            "[[rule]]\nname = \"psql-only\"\ntargets = [\"db\"]\n\
             who = { users = [\"alice\"], exe = [\"/usr/bin/psql\", \"/opt/*/bin/psql\"] }\naction = \"allow\"\n",
        );
        let ok = principal(ALICE.0, ALICE.1, &[], "/usr/bin/psql");
        let opt = principal(ALICE.0, ALICE.1, &[], "/opt/pg/16/bin/psql");
        let curl = principal(ALICE.0, ALICE.1, &[], "/usr/bin/curl");
        let eve = principal("eve", 1001, &[], "/usr/bin/psql");
        let mut gone = ok.clone();
        gone.exe = None;
        assert_eq!(verdict(&p, &ok, "db"), Verdict::Allow);
        assert_eq!(verdict(&p, &opt, "db"), Verdict::Allow);
        assert_eq!(verdict(&p, &curl, "db"), Verdict::Deny);
        assert_eq!(verdict(&p, &eve, "db"), Verdict::Deny);
        assert_eq!(
            verdict(&p, &gone, "db"),
            Verdict::Deny,
            "unknown exe fails an allow"
        );
    }

    #[test]
    fn exe_only_who_and_unknown_exe_on_deny() {
        let p = policy(
            "[[rule]]\nname = \"all\"\ntargets = [\"*\"]\naction = \"allow\"\n\
             [[rule]]\nname = \"no-curl\"\ntargets = [\"*\"]\nwho = { exe = [\"/usr/bin/curl\"] }\naction = \"deny\"\n",
        );
        let curl = principal("eve", 1001, &[], "/usr/bin/curl");
        let deleted = principal("eve", 1001, &[], "/usr/bin/curl (deleted)");
        let psql = principal("eve", 1001, &[], "/usr/bin/psql");
        let mut gone = psql.clone();
        gone.exe = None;
        assert_eq!(verdict(&p, &curl, "web"), Verdict::Deny);
        assert_eq!(verdict(&p, &deleted, "web"), Verdict::Deny);
        assert_eq!(verdict(&p, &psql, "web"), Verdict::Allow);
        assert_eq!(
            verdict(&p, &gone, "web"),
            Verdict::Deny,
            "unknown exe meets a deny"
        );
    }

    #[test]
    fn deny_beats_allow_and_names_the_rule() {
        let p = policy(
            "[[rule]]\nname = \"everyone\"\ntargets = [\"*\"]\naction = \"allow\"\n\
             [[rule]]\nname = \"not-eve\"\ntargets = [\"db\"]\nwho = { users = [\"eve\"] }\n\
             action = \"deny\"\ndescription = \"eve left\"\n\
             [[rule]]\nname = \"eve-again\"\ntargets = [\"db\"]\nwho = { uids = [1001] }\naction = \"allow\"\n",
        );
        let eve = principal("eve", 1001, &[], "/usr/bin/psql");
        let d = p.decide(&eve, "db");
        assert_eq!(d.verdict, Verdict::Deny);
        assert_eq!(d.rule.as_deref(), Some("not-eve"));
        assert!(
            d.reason.contains("rule `not-eve` denies eve (uid 1001)"),
            "{}",
            d.reason
        );
        assert!(d.reason.ends_with("(eve left)"), "{}", d.reason);
        let d = p.decide(&eve, "web");
        assert_eq!(
            (d.verdict, d.rule.as_deref()),
            (Verdict::Allow, Some("everyone"))
        );
    }

    #[test]
    fn wildcard_covers_every_target() {
        let p = policy(
            "[[rule]]\nname = \"alice-all\"\ntargets = [\"*\"]\nwho = { users = [\"alice\"] }\naction = \"allow\"\n",
        );
        let alice = principal(ALICE.0, ALICE.1, &[], "/bin/sh");
        assert_eq!(verdict(&p, &alice, "db"), Verdict::Allow);
        assert_eq!(verdict(&p, &alice, "web"), Verdict::Allow);
        assert_eq!(
            verdict(&p, &alice, "nope"),
            Verdict::Deny,
            "undefined target"
        );
    }

    #[test]
    fn no_match_is_deny_with_reason() {
        let p = policy(
            "[[rule]]\nname = \"bob\"\ntargets = [\"db\"]\nwho = { users = [\"bob\"] }\naction = \"allow\"\n",
        );
        let alice = principal(ALICE.0, ALICE.1, &[], "/usr/bin/psql");
        let d = p.decide(&alice, "db");
        assert_eq!((d.verdict, d.rule), (Verdict::Deny, None));
        assert_eq!(
            d.reason,
            format!("no rule allows {} to reach target db", alice.label())
        );
    }

    #[test]
    fn statement_rules_decide_statements_by_class_and_table() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[[target]]\nname = \"pg\"\nprotocol = \"postgres\"\naddress = \"127.0.0.2:5432\"\n\
             [[group]]\nname = \"dba\"\nusers = [\"bob\"]\n\
             [[rule]]\nname = \"connect\"\ntargets = [\"pg\"]\naction = \"allow\"\n\
             [[rule]]\nname = \"ddl\"\ntargets = [\"pg\"]\nsql = [\"ddl\"]\naction = \"review\"\napprovers = [\"dba\"]\n\
             [[rule]]\nname = \"payments\"\ntargets = [\"pg\"]\nsql = [\"write\"]\ntables = [\"billing.payments\"]\naction = \"deny\"\n\
             [[rule]]\nname = \"scratch\"\ntargets = [\"pg\"]\ntables = [\"scratch.*\"]\naction = \"allow\"\nskip_review = true\n";
        std::fs::write(dir.path().join("p.toml"), text).unwrap();
        let policy = Policy::load_dir(dir.path()).unwrap();
        let alice = principal("alice", 1000, &[], "/usr/bin/psql");
        let decide = |classes: &[SqlClass], tables: &[&str]| {
            let tables: Vec<String> = tables.iter().map(|t| (*t).to_owned()).collect();
            let statement = Statement {
                classes: classes.iter().copied().collect(),
                tables: &tables,
            };
            policy.decide_statement(&alice, "pg", &statement).verdict
        };
        // Connection rules decide the connection; statement rules are not consulted.
        assert_eq!(policy.decide(&alice, "pg").verdict, Verdict::Allow);
        assert_eq!(decide(&[SqlClass::Read], &["users"]), Verdict::Allow);
        assert_eq!(decide(&[SqlClass::Ddl], &["users"]), Verdict::Review);
        assert_eq!(decide(&[SqlClass::Ddl], &["scratch.t"]), Verdict::Allow);
        assert_eq!(
            decide(&[SqlClass::Write], &["billing.payments"]),
            Verdict::Deny
        );
        // Unqualified: the schema is unknown, so a deny on billing.payments covers it.
        assert_eq!(decide(&[SqlClass::Write], &["payments"]), Verdict::Deny);
        assert_eq!(
            decide(&[SqlClass::Write], &["public.payments"]),
            Verdict::Allow
        );
        // ...but an allow on scratch.* does not cover an unqualified name.
        assert_eq!(decide(&[SqlClass::Ddl], &["t"]), Verdict::Review);
        // Unparsed matches every statement rule: the most restrictive one wins.
        assert_eq!(decide(&[SqlClass::Unparsed], &[]), Verdict::Deny);
    }

    #[test]
    fn unparsed_without_rules_is_denied() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[[target]]\nname = \"pg\"\nprotocol = \"postgres\"\naddress = \"127.0.0.2:5432\"\n\
             [[rule]]\nname = \"connect\"\ntargets = [\"pg\"]\naction = \"allow\"\n";
        std::fs::write(dir.path().join("p.toml"), text).unwrap();
        let policy = Policy::load_dir(dir.path()).unwrap();
        let alice = principal("alice", 1000, &[], "/usr/bin/psql");
        let st = |c: SqlClass| Statement {
            classes: SqlClasses::empty().with(c),
            tables: &[],
        };
        assert_eq!(
            policy
                .decide_statement(&alice, "pg", &st(SqlClass::Drop))
                .verdict,
            Verdict::Allow
        );
        let d = policy.decide_statement(&alice, "pg", &st(SqlClass::Unparsed));
        assert_eq!(d.verdict, Verdict::Deny);
        assert!(d.reason.contains("could not be parsed"), "{}", d.reason);
    }
}

#[cfg(test)]
#[path = "matching_idp_tests.rs"]
mod idp_tests;
