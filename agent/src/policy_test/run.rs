//! Deciding one case with the daemon's own code, and saying how it differs from what
//! the case expects.

use super::case::{ApproverSpec, CaseAction, CaseSpec, Expected, PrincipalSpec};
use crate::{
    identity::{Approver, LinkedIdentity, Principal},
    policy::{
        Decision, FileOp, FileRequest, HttpRequest, Policy, SshKind, SshRequest, Statement, Verdict,
    },
    proto::postgres::classify::Classifier,
};

/// The uid of a case principal that names none: no `uids` rule matches it.
const UNKNOWN_UID: u32 = u32::MAX - 1;
/// Query texts kept by the classifier's cache during a run.
const CLASSIFIER_CACHE: usize = 256;

/// Decides cases against one policy; the SQL classifier starts on the first `sql`.
pub(super) struct Runner<'a> {
    policy: &'a Policy,
    classifier: Option<Classifier>,
}

impl<'a> Runner<'a> {
    pub fn new(policy: &'a Policy) -> Self {
        Runner {
            policy,
            classifier: None,
        }
    }

    /// `Ok(None)` if the policy decides `case` as expected, `Ok(Some(why not))` if
    /// not, `Err` if the case cannot be run as written.
    pub fn check(&mut self, case: &CaseSpec) -> Result<Option<String>, String> {
        validate(case)?;
        let action = case.action()?;
        if self.policy.target(&case.target).is_none() {
            return Err(format!(
                "target `{}` is not defined in the policy",
                case.target
            ));
        }
        let principal = principal(&case.principal);
        let decision = self.decide(&principal, &case.target, &action)?;
        Ok(self.compare(case, &decision))
    }

    /// What the gate would answer: the connection's decision, then, for an action
    /// inside the session, the statement's. A denied connection is the answer; an
    /// action the statement rules hold or deny is decided by them; an allowed action
    /// on a connection that needs review still needs that review.
    fn decide(
        &mut self,
        principal: &Principal,
        target: &str,
        action: &CaseAction,
    ) -> Result<Decision, String> {
        let connect = self.policy.decide(principal, target);
        let inner = match action {
            CaseAction::Connect => return Ok(connect),
            CaseAction::Sql(sql) => {
                let classifier = self
                    .classifier
                    .get_or_insert_with(|| Classifier::new(CLASSIFIER_CACHE));
                let parsed = classifier.classify_blocking(sql, true);
                let statement = Statement {
                    classes: parsed.classes,
                    tables: &parsed.tables,
                };
                self.policy.decide_statement(principal, target, &statement)
            }
            CaseAction::Command(line) => {
                // As the SSH proxy asks: an exec, split into its simple commands, as the
                // login named like the local user (what `ssh host cmd` does).
                // Split in the bounded parse workers, as the daemon does.
                let commands = match crate::proto::ssh::command::pool::split(line) {
                    crate::proto::ssh::command::Split::Commands(c) => Some(c),
                    crate::proto::ssh::command::Split::Unparsed => None,
                };
                let request = SshRequest {
                    kind: SshKind::Exec,
                    login: principal.user.as_deref().unwrap_or_default(),
                    commands: commands.as_deref(),
                    file: None,
                };
                self.policy.decide_ssh(principal, target, &request)
            }
            CaseAction::File { ops, paths } => {
                // As the SFTP relay asks: one file operation in an `sftp` subsystem.
                let ops = ops
                    .iter()
                    .map(|op| {
                        FileOp::from_name(op).ok_or_else(|| {
                            let known: Vec<_> = FileOp::ALL.iter().map(|k| k.name()).collect();
                            format!(
                                "unknown file operation `{op}`; use one of {}",
                                known.join(", ")
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let request = SshRequest {
                    kind: SshKind::Sftp,
                    login: principal.user.as_deref().unwrap_or_default(),
                    commands: Some(&[]),
                    file: Some(FileRequest { ops: &ops, paths }),
                };
                self.policy.decide_ssh(principal, target, &request)
            }
            CaseAction::Http { method, path } => {
                let path = path
                    .starts_with('/')
                    .then(|| crate::proto::http::normalize_path(path).ok())
                    .flatten()
                    .ok_or_else(|| format!("the proxy refuses path `{path}` (400)"))?;
                let request = HttpRequest {
                    method,
                    path: &path,
                };
                self.policy.decide_request(principal, target, &request)
            }
        };
        Ok(match (connect.verdict, inner.verdict) {
            (Verdict::Deny, _) | (_, Verdict::Allow) => connect,
            _ => inner,
        })
    }

    fn compare(&self, case: &CaseSpec, got: &Decision) -> Option<String> {
        let expected = match case.expect {
            Expected::Allow => Verdict::Allow,
            Expected::Deny => Verdict::Deny,
            Expected::Review => Verdict::Review,
        };
        let rule = got.rule.as_deref().unwrap_or("");
        let got_text = || {
            let by = got
                .rule
                .as_ref()
                .map_or_else(|| "no rule".to_owned(), |r| format!("rule `{r}`"));
            format!("got {} by {by}: {}", got.verdict, got.reason)
        };
        if got.verdict != expected {
            return Some(format!("expected {expected}, {}", got_text()));
        }
        if let Some(want) = &case.rule
            && want != rule
        {
            return Some(format!("expected rule `{want}`, {}", got_text()));
        }
        let groups = got.review.as_ref().map_or(&[][..], |r| &r.approvers[..]);
        if let Some(want) = &case.approvers {
            let (mut a, mut b) = (want.clone(), groups.to_vec());
            a.sort();
            b.sort();
            if a != b {
                return Some(format!(
                    "expected approvers [{}], got [{}] ({})",
                    want.join(", "),
                    groups.join(", "),
                    got_text()
                ));
            }
        }
        let who = case.approver.as_ref()?;
        let approver = approver(who);
        let may = groups.iter().any(|g| self.policy.is_member(g, &approver));
        (may != who.may_decide).then(|| {
            format!(
                "expected {} {} decide it, but the approver groups [{}] {}",
                describe(who),
                if who.may_decide { "to" } else { "not to" },
                groups.join(", "),
                if may {
                    "admit them"
                } else {
                    "do not admit them"
                }
            )
        })
    }
}

/// Keys that only make sense with some verdicts.
fn validate(case: &CaseSpec) -> Result<(), String> {
    let review = case.expect == Expected::Review;
    if !review && (case.approvers.is_some() || case.approver.is_some()) {
        return Err("`approvers` and `[case.approver]` only go with `expect = \"review\"`".into());
    }
    Ok(())
}

fn principal(p: &PrincipalSpec) -> Principal {
    let comm = p
        .exe
        .as_deref()
        .and_then(|e| e.rsplit('/').next())
        .unwrap_or("?")
        .chars()
        .take(15)
        .collect();
    Principal {
        pid: 0,
        ppid: None,
        uid: p.uid.unwrap_or(UNKNOWN_UID),
        gid: UNKNOWN_UID,
        user: p.user.clone(),
        unix_groups: p.groups.clone(),
        exe: p.exe.clone(),
        cmdline: None,
        comm,
        cgroup: None,
        idp: (!p.idp_groups.is_empty() || p.email.is_some()).then(|| LinkedIdentity {
            issuer: "policy-test".into(),
            subject: p.email.clone().unwrap_or_else(|| "linked".into()),
            email: p.email.clone(),
            groups: p.idp_groups.clone(),
            expires_at: None,
        }),
    }
}

/// The case's approver as written, for a failure message.
fn describe(a: &ApproverSpec) -> String {
    let mut parts = Vec::new();
    if let Some(user) = &a.user {
        parts.push(format!("user {user}"));
    }
    for (key, list) in [("groups", &a.groups), ("idp_groups", &a.idp_groups)] {
        if !list.is_empty() {
            parts.push(format!("{key} [{}]", list.join(", ")));
        }
    }
    if let Some(email) = &a.email {
        parts.push(format!("email {email}"));
    }
    format!("the approver ({})", parts.join(", "))
}

fn approver(a: &ApproverSpec) -> Approver {
    if a.idp_groups.is_empty() && a.email.is_none() {
        Approver::Local {
            uid: UNKNOWN_UID,
            user: a.user.clone(),
            unix_groups: a.groups.clone(),
            pid: 0,
        }
    } else {
        Approver::Idp {
            issuer: "https://policy-test.invalid".into(),
            subject: a.user.clone().unwrap_or_else(|| "policy-test".into()),
            email: a.email.clone(),
            groups: a.idp_groups.clone(),
        }
    }
}
