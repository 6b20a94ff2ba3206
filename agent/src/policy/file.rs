//! One policy file as written: serde structs mirroring the TOML.
//!
//! Unknown keys are errors. Values that validation must point at are
//! [`Spanned`] so errors can name their line; `build` turns these into the
//! domain types.

use serde::Deserialize;
use toml::Spanned;

/// The top level of a policy file; every table kind is optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PolicyFile {
    #[serde(default)]
    pub target: Vec<TargetFile>,
    #[serde(default)]
    pub group: Vec<GroupFile>,
    #[serde(default)]
    pub rule: Vec<RuleFile>,
}

/// A `[[target]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TargetFile {
    pub name: Spanned<String>,
    /// Checked by hand, so reserved protocols get a "not supported yet" error.
    pub protocol: Spanned<String>,
    /// Exactly one of `address` and `addresses` must be present.
    pub address: Option<Spanned<String>>,
    pub addresses: Option<Spanned<Vec<Spanned<String>>>>,
    pub description: Option<String>,
}

/// A `[[group]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GroupFile {
    pub name: Spanned<String>,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub unix_groups: Vec<String>,
    #[expect(
        dead_code,
        reason = "accepted for people reading the file; decisions do not use it"
    )]
    pub description: Option<String>,
}

/// A `[[rule]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleFile {
    pub name: Spanned<String>,
    /// Target names, or `"*"` for every target.
    pub targets: Spanned<Vec<Spanned<String>>>,
    /// Omitted means everyone.
    pub who: Option<Spanned<WhoFile>>,
    pub action: ActionFile,
    pub description: Option<String>,
}

/// A rule's `who`: identity fields (any one matches) and `exe` patterns (must also match).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WhoFile {
    #[serde(default)]
    pub users: Vec<String>,
    /// Names of `[[group]]` tables.
    #[serde(default)]
    pub groups: Vec<Spanned<String>>,
    #[serde(default)]
    pub unix_groups: Vec<String>,
    #[serde(default)]
    pub uids: Vec<u32>,
    /// Exact paths or globs with `*`.
    #[serde(default)]
    pub exe: Vec<Spanned<String>>,
}

/// A rule's `action`. `review` (with approvers, quorum, timeout) will be added here.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum ActionFile {
    Allow,
    Deny,
}
