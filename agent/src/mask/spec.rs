//! What a policy rule says about masking ([`MaskSpec`], mirroring the file), and what
//! can be wrong with it ([`MaskError`]).

use serde::Deserialize;
use std::{fmt, path::PathBuf};

/// The masking part of one policy rule, as written in the file:
///
/// ```toml
/// mask = ["email", "credit_card"]          # recognizers, or "all"
/// mask_columns = ["users.password_hash", "*.ssn", "*password*"]
/// mask_style = "hash"                      # redact (default) | last4 | hash | null
/// mask_key_env = "PORTCULLIS_MASK_KEY"     # or mask_key_file; for "hash"
/// mask_regex = [{ name = "order", pattern = "ORD-[0-9]{8}" }]
/// mask_words = ["Project Bluebird"]
/// mask_learn = "results"                   # off | results (default) | discover
/// mask_json = ["$.users[*].email", "$..ssn"]  # JSON response values, masked whole
/// ```
///
/// Several rules' specs compile into one [`Masker`](super::Masker) for a session.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaskSpec {
    /// Recognizers to run on every value ([`Recognizer::name`](super::Recognizer::name)s,
    /// or `"all"`).
    pub mask: Vec<String>,
    /// Columns masked whole, as `table.column` or `column` globs (`*`, `?`).
    pub mask_columns: Vec<String>,
    /// How this rule's findings and columns are rewritten.
    pub mask_style: MaskStyle,
    /// Patterns of the organization's own identifiers, masked wherever they match.
    pub mask_regex: Vec<RegexSpec>,
    /// Words masked wherever they stand alone (whole words, ASCII case-insensitive).
    pub mask_words: Vec<String>,
    /// The environment variable that holds the key of `hash` tokens.
    pub mask_key_env: Option<String>,
    /// The file that holds the key of `hash` tokens.
    pub mask_key_file: Option<PathBuf>,
    /// Whether this rule's recognizers teach which columns hold personal data.
    pub mask_learn: super::LearnMode,
    /// JSON paths (`$.users[*].email`, `$..ssn`) of values masked whole in JSON
    /// response bodies (HTTP targets).
    pub mask_json: Vec<String>,
}

/// A named pattern: `{ name = "order", pattern = "ORD-[0-9]{8}" }`. The name is what a
/// redacted match becomes (`[order]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegexSpec {
    pub name: String,
    pub pattern: String,
}

/// How a finding or a column value is rewritten. Ordered from least to most
/// restrictive: when rules disagree about one recognizer, column or word, the most
/// restrictive style wins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskStyle {
    /// Keep the last four characters, replace the others with `*` (at most all are
    /// replaced: a value of four characters or fewer is fully starred).
    Last4,
    /// A keyed HMAC-SHA256 token: the same input gives the same token (under one key),
    /// so joins and counts still work, but the value cannot be read back.
    Hash,
    /// Replace with `[name]` (a finding) or `****` (a column value).
    #[default]
    Redact,
    /// The column value becomes SQL NULL. Columns only.
    Null,
}

impl MaskStyle {
    /// The name used in policy files.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            MaskStyle::Last4 => "last4",
            MaskStyle::Hash => "hash",
            MaskStyle::Redact => "redact",
            MaskStyle::Null => "null",
        }
    }
}

impl fmt::Debug for MaskSpec {
    /// Like the derived one, except that `mask_words` shows how many there are: a
    /// deny-list may itself be sensitive (customer names, project code names).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaskSpec")
            .field("mask", &self.mask)
            .field("mask_columns", &self.mask_columns)
            .field("mask_style", &self.mask_style)
            .field("mask_regex", &self.mask_regex)
            .field(
                "mask_words",
                &format_args!("<{} words>", self.mask_words.len()),
            )
            .field("mask_key_env", &self.mask_key_env)
            .field("mask_key_file", &self.mask_key_file)
            .field("mask_learn", &self.mask_learn)
            .field("mask_json", &self.mask_json)
            .finish()
    }
}

/// Why masking specs cannot be compiled or their key loaded. Messages never include a
/// key or a deny-listed word, and say what to change.
#[derive(Debug, thiserror::Error)]
pub enum MaskError {
    #[error("unknown recognizer {name:?} in mask; use \"all\" or some of: {known}")]
    UnknownRecognizer { name: String, known: String },
    #[error(
        "mask_regex {name:?}: {source}; fix the pattern (regex crate syntax: no look-around or backreferences)"
    )]
    Regex {
        name: String,
        #[source]
        source: regex::Error,
    },
    #[error("mask_regex name {name:?} is not a plain name; use letters, digits, '_' or '-'")]
    RegexName { name: String },
    #[error("mask_columns pattern {pattern:?}: {reason}")]
    Column {
        pattern: String,
        reason: &'static str,
    },
    #[error("mask_words has an empty word; remove it")]
    EmptyWord,
    #[error(
        "mask_style = \"null\" applies to mask_columns only (part of a text cannot be NULL); put mask, mask_regex and mask_words in a rule with another style"
    )]
    NullOnValues,
    #[error("mask_style = \"hash\" needs a key: set mask_key_env or mask_key_file on the rule")]
    MissingKey,
    #[error("a rule sets both mask_key_env and mask_key_file; keep one")]
    KeyTwice,
    #[error(
        "rules name different mask keys ({first} and {second}); one session hashes with one key so tokens join, so name the same key in every rule"
    )]
    KeyConflict { first: String, second: String },
    #[error("mask key {from}: {reason}")]
    Key { from: String, reason: String },
    #[error("mask_json path `{path}`: {source}")]
    JsonPath {
        path: String,
        #[source]
        source: super::json_path::JsonPathError,
    },
    #[error("cannot build {what}: {reason}")]
    Internal { what: &'static str, reason: String },
}
