//! Policy: which principals may reach which protected targets.
//!
//! A policy is a directory of TOML files (`*.toml`, read in file-name order; other
//! files and hidden files are ignored) merged into one [`Policy`]. Each file may hold
//! three kinds of tables:
//!
//! - `[[target]]`: a protected system: a unique `name`, a `protocol` (`tcp` today),
//!   and exactly one of `address` / `addresses` (`ip:port`, `[v6]:port` or
//!   `host:port`).
//! - `[[group]]`: a named set of people: `users` (user names) and `unix_groups`. A
//!   principal is in the group if its user is listed or it shares a unix group.
//! - `[[rule]]`: `targets` (names, or `["*"]` for every target), an optional `who`,
//!   and an `action` (`allow` or `deny`).
//!
//! `who` semantics: the identity fields `users`, `groups` (policy groups),
//! `unix_groups` and `uids` are alternatives, any one matching is enough ("is this one
//! of these people"); `exe` (exact paths or globs where `*` matches any run of
//! characters, `/` included) further restricts them: it must match as well. A `who` with only `exe` means anyone running that program;
//! an omitted `who` means everyone. When the executable is unknown (the process exited
//! before we looked) an `exe` restriction fails closed: it never satisfies an `allow`
//! rule and always satisfies a `deny` rule.
//!
//! Decisions: every rule that names the target and matches the principal is
//! collected; the most restrictive wins (deny > allow; `review` will sit between), the
//! earliest rule breaking ties. No matching rule is a deny.
//!
//! A policy with any error is refused as a whole: [`Policy::load_dir`] returns the
//! first error as `path/to/file.toml:LINE: reason`.
//!
//! Layout: `file` mirrors the TOML (serde, unknown keys are errors); `load` reads
//! the directory and parses every file; `build` validates and builds the domain
//! types defined here; `address` parses target addresses; `matching` holds the
//! validated rules and answers "does this rule apply to this principal".

mod address;
mod build;
mod file;
mod load;
mod matching;

use std::{fmt, io, path::Path, path::PathBuf};

use serde::Serialize;

use crate::identity::Principal;
pub use address::TargetAddress;
use matching::Rule;

/// A validated, merged policy; the default is the empty policy that denies everything.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Targets in load order (files by name, then order within the file).
    targets: Vec<Target>,
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

    /// How many rules the policy holds.
    #[must_use]
    pub fn rules_len(&self) -> usize {
        self.rules.len()
    }

    /// Decides whether `principal` may reach the target called `target`.
    ///
    /// The most restrictive matching rule wins; without one, and for targets the
    /// policy does not define, the answer is a deny.
    #[must_use]
    pub fn decide(&self, principal: &Principal, target: &str) -> Decision {
        let label = principal.label();
        let Some(target) = self.target(target) else {
            return Decision {
                verdict: Verdict::Deny,
                rule: None,
                reason: format!("target {target} is not defined in the policy"),
            };
        };
        let winner = self
            .rules
            .iter()
            .filter(|rule| rule.applies_to(&target.name) && rule.matches(principal))
            .fold(None::<&Rule>, |best, rule| match best {
                Some(best) if best.verdict() >= rule.verdict() => Some(best),
                _ => Some(rule),
            });
        let Some(rule) = winner else {
            return Decision {
                verdict: Verdict::Deny,
                rule: None,
                reason: format!("no rule allows {label} to reach target {}", target.name),
            };
        };
        let verb = match rule.verdict() {
            Verdict::Allow => "allows",
            Verdict::Deny => "denies",
        };
        let mut reason = format!(
            "rule `{}` {verb} {label} to reach target {}",
            rule.name, target.name
        );
        if let Some(description) = &rule.description {
            reason = format!("{reason} ({description})");
        }
        Decision {
            verdict: rule.verdict(),
            rule: Some(rule.name.clone()),
            reason,
        }
    }
}

/// A protected system that connections are redirected away from and gated.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// Unique name, used by rules, logs and the CLI.
    pub name: String,
    /// The wire protocol the proxy speaks to it.
    pub protocol: Protocol,
    /// Where it listens; a connection to any of these is a connection to the target.
    pub addresses: Vec<TargetAddress>,
    /// Free text for people reading `status` or the audit log.
    pub description: Option<String>,
}

/// The wire protocols the proxy can speak to a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Opaque TCP: the only action is "connect".
    Tcp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
        })
    }
}

/// The answer to "may this principal reach this target", with who decided and why.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// What happens to the connection.
    pub verdict: Verdict,
    /// The rule that decided; `None` when no rule matched.
    pub rule: Option<String>,
    /// One sentence for the client, the log and the audit record.
    pub reason: String,
}

/// What a decision says.
///
/// Variants are declared from least to most restrictive and `Ord` is derived, so
/// `max()` over verdicts is "most restrictive wins". A future `Review` goes between
/// `Allow` and `Deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Deny,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Allow => "allow",
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
        assert_eq!(names, ["echo-demo"]);
        let echo = policy.target("echo-demo").unwrap();
        assert_eq!(echo.protocol, Protocol::Tcp);
        assert_eq!(echo.addresses.len(), 1);
        assert_eq!(echo.addresses[0].to_string(), "127.0.0.2:7000");
        assert_eq!(policy.rules_len(), 2);
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
    fn empty_policy_denies() {
        let policy = Policy::default();
        let p = matching::tests::principal("alice", 1000, &[], "/bin/sh");
        let d = policy.decide(&p, "echo");
        assert_eq!((d.verdict, d.rule), (Verdict::Deny, None));
    }

    #[test]
    fn verdicts_order_by_restrictiveness() {
        assert!(Verdict::Deny > Verdict::Allow);
        assert_eq!(Verdict::Deny.to_string(), "deny");
        assert_eq!(serde_json::to_string(&Verdict::Allow).unwrap(), "\"allow\"");
        assert_eq!(serde_json::to_string(&Protocol::Tcp).unwrap(), "\"tcp\"");
    }
}
