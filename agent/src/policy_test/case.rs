//! One policy test file as written (`DIR/tests/*.toml`): `[[case]]` tables, each a
//! principal, a target, an optional action inside the session, and what the policy
//! must answer.
//!
//! ```toml
//! [[case]]
//! name = "the demo group may drop nothing without review"
//! principal = { user = "dev", uid = 1000, groups = ["portcullis-demo"], exe = "/usr/bin/psql" }
//! target = "app-db-demo"
//! sql = "DROP TABLE users"            # omit every action key to test the connection
//! expect = "review"                   # allow | deny | review
//! approvers = ["portcullis-approvers"] # review only: exactly these groups decide
//! rule = "demo-db-ddl-needs-review"   # optional: the rule that decides
//!
//! # Optional: someone who may (or, with `may_decide = false`, may not) decide it.
//! [case.approver]
//! idp_groups = ["database-admins"]
//! ```
//!
//! Action keys: `sql` (a PostgreSQL query text), `command` (an SSH exec command
//! line, split as the SSH proxy splits it, logging in as the principal's user),
//! `file_ops` + `files` (one SFTP file operation: what it does, e.g. `["remove"]`,
//! `["read", "write"]` for an open of both, and the paths it touches, both for a
//! `rename`) or `method` + `path` (an HTTP request, its path normalized as the HTTP
//! proxy does).

use serde::Deserialize;
use toml::Spanned;

/// The top level of a test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CaseFile {
    #[serde(default)]
    pub case: Vec<Spanned<CaseSpec>>,
}

/// A `[[case]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CaseSpec {
    /// Shown with a failure; defaults to the target and action.
    pub name: Option<String>,
    pub principal: PrincipalSpec,
    pub target: String,
    /// A query text: the case is about that statement on an allowed connection.
    pub sql: Option<String>,
    /// An SSH command line (reserved for the SSH protocol).
    pub command: Option<String>,
    /// An SFTP file operation's kinds (reserved for the SSH protocol), with `files`.
    pub file_ops: Option<Vec<String>>,
    /// The paths that operation touches.
    pub files: Option<Vec<String>>,
    /// An HTTP request method (reserved for the HTTP protocol), with `path`.
    pub method: Option<String>,
    pub path: Option<String>,
    /// The verdict the policy must give.
    pub expect: Expected,
    /// For `expect = "review"`: the approver groups, in any order.
    pub approvers: Option<Vec<String>>,
    /// The rule that must decide (`""` for "no rule": the default deny).
    pub rule: Option<String>,
    /// Someone whose membership in the review's approver groups is checked.
    pub approver: Option<ApproverSpec>,
}

/// Who connects. Unset fields are unknown, as they would be for a process that
/// exited before the daemon looked (an unknown `exe` fails closed).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PrincipalSpec {
    pub user: Option<String>,
    /// Defaults to 4294967294, which no `uids` list names.
    pub uid: Option<u32>,
    /// Unix groups (primary and supplementary), by name.
    #[serde(default)]
    pub groups: Vec<String>,
    pub exe: Option<String>,
    /// With `idp_groups` or `email`: the identity linked by `portcullis login`.
    #[serde(default)]
    pub idp_groups: Vec<String>,
    pub email: Option<String>,
}

/// An approver: a local user (`user`, `groups`) or, with `idp_groups` or `email`,
/// someone signed in through the identity provider.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ApproverSpec {
    pub user: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub idp_groups: Vec<String>,
    pub email: Option<String>,
    /// Whether they may decide the held action (default: they may).
    #[serde(default = "yes")]
    pub may_decide: bool,
}

fn yes() -> bool {
    true
}

/// An expected verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Expected {
    Allow,
    Deny,
    Review,
}

/// What the case asks about, once its action keys are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CaseAction {
    /// The connection itself.
    Connect,
    Sql(String),
    Command(String),
    /// An SFTP file operation: its kinds (as in a rule's `file_ops`) and paths.
    File {
        ops: Vec<String>,
        paths: Vec<String>,
    },
    Http {
        method: String,
        path: String,
    },
}

impl CaseSpec {
    /// The one action the case names; an error says which keys clash.
    pub fn action(&self) -> Result<CaseAction, String> {
        let http = match (&self.method, &self.path) {
            (Some(method), Some(path)) => Some(CaseAction::Http {
                method: method.clone(),
                path: path.clone(),
            }),
            (None, None) => None,
            _ => return Err("`method` and `path` go together (an HTTP request)".into()),
        };
        let file = match (&self.file_ops, &self.files) {
            (Some(ops), Some(paths)) if !ops.is_empty() && !paths.is_empty() => {
                Some(CaseAction::File {
                    ops: ops.clone(),
                    paths: paths.clone(),
                })
            }
            (None, None) => None,
            _ => {
                return Err(
                    "`file_ops` and `files` go together, neither empty (an SFTP file operation)"
                        .into(),
                );
            }
        };
        let given: Vec<CaseAction> = [
            self.sql.clone().map(CaseAction::Sql),
            self.command.clone().map(CaseAction::Command),
            file,
            http,
        ]
        .into_iter()
        .flatten()
        .collect();
        match given.as_slice() {
            [] => Ok(CaseAction::Connect),
            [one] => Ok(one.clone()),
            _ => Err(
                "name at most one action: `sql`, `command`, `file_ops` + `files`, or `method` + `path`"
                    .into(),
            ),
        }
    }

    /// The name shown with a failure.
    pub fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| match self.action() {
            Ok(CaseAction::Sql(sql)) => format!("{}: {sql}", self.target),
            Ok(CaseAction::Command(c)) => format!("{}: {c}", self.target),
            Ok(CaseAction::File { ops, paths }) => {
                format!("{}: {} {}", self.target, ops.join("+"), paths.join(" "))
            }
            Ok(CaseAction::Http { method, path }) => format!("{}: {method} {path}", self.target),
            Ok(CaseAction::Connect) | Err(_) => format!("connect to {}", self.target),
        })
    }
}
