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
    /// Checked by hand, so an unknown protocol gets an error that lists the known ones.
    pub protocol: Spanned<String>,
    /// Exactly one of `address` and `addresses` must be present.
    pub address: Option<Spanned<String>>,
    pub addresses: Option<Spanned<Vec<Spanned<String>>>>,
    pub description: Option<String>,
    /// How the proxy logs in to the target (`postgres` only).
    pub credentials: Option<Spanned<CredentialsFile>>,
    /// TLS to the target: `disable`, `prefer` (default), `require`, `verify-ca`,
    /// `verify-full`.
    pub tls: Option<Spanned<String>>,
    /// CA bundle (PEM) for `tls = "verify-ca"` or `"verify-full"`; default: the web PKI
    /// roots.
    pub tls_ca: Option<Spanned<String>>,
    /// Name checked against the target's certificate; default: the address's host.
    pub tls_server_name: Option<String>,
    /// A password clients must give the proxy (`postgres` only), besides being allowed
    /// by the rules.
    pub client_auth: Option<Spanned<ClientAuthFile>>,
    /// The target's host keys, OpenSSH `known_hosts` format (`ssh`; required).
    pub known_hosts: Option<Spanned<String>>,
    /// The target's own host private key, presented to clients instead of a host
    /// certificate (`ssh`; for clients that do not check certificates).
    pub host_key_file: Option<Spanned<String>>,
    /// A CA private key the target's sshd trusts (`TrustedUserCAKeys`): the proxy
    /// logs in with a fresh key and a short-lived certificate signed by it (`ssh`).
    pub user_ca_key_file: Option<Spanned<String>>,
}

/// A target's `client_auth`: where the password clients must present is kept.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClientAuthFile {
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    /// Accepted only to refuse it with a clear message: secrets are never inline.
    pub password: Option<Spanned<toml::Value>>,
}

/// A target's `credentials`: the user to log in as and where its password is kept.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CredentialsFile {
    /// Default: the user name the client asked for.
    pub user: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    /// A private key file to log in with (`ssh`).
    pub key_file: Option<String>,
    /// Accepted only to refuse it with a clear message: secrets are never inline.
    pub password: Option<Spanned<toml::Value>>,
    /// `http`/`https`: the header set on every upstream request (`Authorization`).
    pub header: Option<String>,
    /// `http`/`https`: where the header's value is kept.
    pub value_env: Option<String>,
    pub value_file: Option<String>,
    /// `http`/`https`: written before the value (`"Bearer "`).
    pub prefix: Option<String>,
    /// Accepted only to refuse it with a clear message: secrets are never inline.
    pub value: Option<Spanned<toml::Value>>,
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
    /// Group claims of identity-provider approvers (web console sign-in).
    #[serde(default)]
    pub idp_groups: Vec<Spanned<String>>,
    /// Verified email addresses of identity-provider approvers, any case.
    #[serde(default)]
    pub emails: Vec<Spanned<String>>,
    /// Slack member ids (`U0123ABCD`) whose button clicks count as approvals.
    #[serde(default)]
    pub slack_users: Vec<String>,
    #[expect(
        dead_code,
        reason = "accepted for people reading the file; decisions do not use it"
    )]
    pub description: Option<String>,
}

/// A `[[rule]]` table.
///
/// The review keys (`approvers` … `grant`) belong to `action = "review"` and
/// `skip_review` to `action = "allow"`; `build` refuses them elsewhere, naming the key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleFile {
    pub name: Spanned<String>,
    /// Target names, or `"*"` for every target.
    pub targets: Spanned<Vec<Spanned<String>>>,
    /// Omitted means everyone.
    pub who: Option<Spanned<WhoFile>>,
    pub action: Spanned<ActionFile>,
    pub description: Option<String>,
    /// Trusted principals pass matching review rules (never deny rules).
    pub skip_review: Option<Spanned<bool>>,
    /// `[[group]]` names whose members may approve; required for `review`.
    pub approvers: Option<Spanned<Vec<Spanned<String>>>>,
    /// The quorum; signed so that `0` and `-1` get our error rather than serde's.
    pub approvals: Option<Spanned<i64>>,
    /// Humantime durations (`"5m"`), parsed and bounded by `build`.
    pub timeout: Option<Spanned<String>>,
    pub on_timeout: Option<Spanned<OnTimeoutFile>>,
    /// `[[group]]` names asked after `timeout`; required with `on_timeout = "escalate"`.
    pub escalate_to: Option<Spanned<Vec<Spanned<String>>>>,
    pub escalation_timeout: Option<Spanned<String>>,
    pub grant: Option<Spanned<String>>,
    /// Statement classes (`read`, `ddl`, …): makes this a rule on statements.
    pub sql: Option<Spanned<Vec<Spanned<String>>>>,
    /// Table patterns (`users`, `public.users`, `*.payments`): a rule on statements.
    pub tables: Option<Spanned<Vec<Spanned<String>>>>,
    /// SSH action kinds (`exec`, `shell`, `sftp`…): makes this a rule on SSH actions.
    pub ssh: Option<Spanned<Vec<Spanned<String>>>>,
    /// Command globs (`rm *`): a rule on SSH command lines.
    pub commands: Option<Spanned<Vec<Spanned<String>>>>,
    /// SFTP file operations (`read`, `remove`…): a rule on SSH file operations.
    pub file_ops: Option<Spanned<Vec<Spanned<String>>>>,
    /// SFTP path globs (`/srv/data/*`): a rule on SSH file operations.
    pub files: Option<Spanned<Vec<Spanned<String>>>>,
    /// HTTP methods (`DELETE`, `POST`): makes this a rule on HTTP requests.
    pub methods: Option<Spanned<Vec<Spanned<String>>>>,
    /// HTTP path globs (`/v1/users/*`, `/admin/**`): a rule on HTTP requests.
    pub paths: Option<Spanned<Vec<Spanned<String>>>>,
    /// Masking of the sessions this rule matches (see [`crate::mask::MaskSpec`]).
    pub mask: Option<Spanned<Vec<String>>>,
    pub mask_columns: Option<Vec<String>>,
    pub mask_style: Option<crate::mask::MaskStyle>,
    pub mask_regex: Option<Vec<crate::mask::RegexSpec>>,
    pub mask_words: Option<Vec<String>>,
    pub mask_key_env: Option<String>,
    pub mask_key_file: Option<std::path::PathBuf>,
    /// `off`, `results` (the default) or `discover`: see [`crate::mask::LearnMode`].
    pub mask_learn: Option<crate::mask::LearnMode>,
    /// JSON paths of response values masked whole (HTTP targets).
    pub mask_json: Option<Vec<Spanned<String>>>,
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
    /// Group claims of the identity the requester linked with `portcullis login`.
    #[serde(default)]
    pub idp_groups: Vec<Spanned<String>>,
    /// Exact paths or globs with `*`.
    #[serde(default)]
    pub exe: Vec<Spanned<String>>,
    /// Login name globs of SSH actions (makes the rule one on SSH actions).
    #[serde(default)]
    pub logins: Vec<String>,
}

/// A rule's `action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum ActionFile {
    Allow,
    Review,
    Deny,
}

impl ActionFile {
    /// The value as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionFile::Allow => "allow",
            ActionFile::Review => "review",
            ActionFile::Deny => "deny",
        }
    }
}

/// What happens when a review's `timeout` passes without a quorum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum OnTimeoutFile {
    Deny,
    Escalate,
}
