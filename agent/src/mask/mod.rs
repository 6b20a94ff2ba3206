//! Masking: personal data and secrets rewritten in values before they reach a client
//! or a recording, at memory speed.
//!
//! Protocol-agnostic: a protocol module compiles the masking specs of the rules that
//! apply to a session into one [`Masker`] (shared through an `Arc`) and calls it on
//! every value it relays; the recorder calls it on everything it stores.
//!
//! - By value: [`Masker::mask_value`] finds what the enabled [`Recognizer`]s, custom
//!   regexes and deny-listed words match anywhere in a value (a `DataRow` field, a COPY
//!   field, an error message, a notification payload) and rewrites only those spans.
//!   A value with nothing to mask comes back borrowed, untouched and unallocated.
//! - By column: [`Masker::column_rule`] says, once per result description, whether a
//!   column is masked whole; [`Masker::mask_column_value`] then rewrites its values, or
//!   says to send SQL NULL.
//!
//! Styles are described in [`MaskStyle`]; what each produces is tabulated in `style`.
//!
//! What the recognizers match, in short (each one's doc has the details): emails with
//! a dotted domain (in a URL, `user@host.tld` is masked, `user@host` is not); cards
//! that pass Luhn, written whole or in printed groups; SSNs with dashes or spaces
//! outside the never-issued ranges (nine bare digits are too often order numbers:
//! mask such columns by name); phones after `+` (E.164) or in North American layouts;
//! IBANs of registered countries with their length and mod-97; IPv4/IPv6 addresses as
//! `std` parses them; JWTs whose header is JSON with `alg`; private-key PEM blocks
//! (cut short, to the end of the value); API keys by documented prefix; the token after
//! `Bearer `. Custom regexes run on every value (the regex crate's literal search makes
//! a pattern that starts with a literal cheap); deny-listed words are one
//! aho-corasick search, matched as whole words.
//!
//! Layout: [`spec`] is what a policy says ([`MaskSpec`]) and the errors; [`key`] the
//! HMAC key of `hash` tokens; `scan` the prefilter and the walk that run recognizers
//! only where a trigger is, and `shapes` the test that spares short values the walk;
//! `recognize` the recognizers themselves; `style` the rewriting; `glob` the column
//! patterns.

#![forbid(unsafe_code)]

mod compile;
mod glob;
pub mod json_path;
pub mod json_stream;
pub mod key;
pub mod learned;
mod recognize;
mod scan;
mod shapes;
pub mod spec;
mod style;
mod words;

#[cfg(test)]
mod corpus;
#[cfg(test)]
mod tests;

pub use key::{KeySource, MaskKey};
pub use learned::{LearnMode, LearnedSet};
pub use recognize::Recognizer;
pub use spec::{MaskError, MaskSpec, MaskStyle, RegexSpec};

use glob::ColumnGlob;
use key::Hasher;
use scan::{Possible, Scanner};
use std::{borrow::Cow, fmt, sync::Arc};
use style::{Finding, Findings, Label};
use words::{NamedRegex, Words};

/// Scans of one value: the first, and rescans of its masked form (see
/// `Masker::mask_possible`).
const MAX_PASSES: usize = 4;

/// The compiled masking of a session: cheap to share (`Arc<Masker>`), `Send + Sync`.
pub struct Masker {
    /// The style of each enabled built-in recognizer, by `Recognizer as usize`.
    styles: [Option<MaskStyle>; Recognizer::ALL.len()],
    scanner: Scanner,
    regexes: Vec<NamedRegex>,
    words: Option<Words>,
    columns: Vec<(ColumnGlob, MaskStyle)>,
    /// Present when some rule hashes.
    hasher: Option<Hasher>,
    /// Some rule that masks by value learns columns (`mask_learn` not `off`).
    learns: bool,
    /// The most restrictive style of the rules that mask by value: a learned column's.
    learned_style: MaskStyle,
    /// The target's learned columns, masked whole like `mask_columns`, when `learns`.
    learned: Option<Arc<LearnedSet>>,
    /// The `mask_json` paths of the rules, when some rule has them.
    json: Option<json_path::JsonPaths>,
}

/// How a column is masked, as [`Masker::column_rule`] resolved it. Ordered from the
/// least to the most restrictive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ColumnMask {
    style: MaskStyle,
}

impl ColumnMask {
    /// Values become SQL NULL.
    pub const NULL: ColumnMask = ColumnMask {
        style: MaskStyle::Null,
    };

    #[must_use]
    pub fn style(self) -> MaskStyle {
        self.style
    }

    /// Whether the column's values become SQL NULL.
    #[must_use]
    pub fn is_null(self) -> bool {
        self.style == MaskStyle::Null
    }
}

/// A masked column value: bytes to send, or SQL NULL.
///
/// The bytes are text, whatever the column's type: a proxy that masks a non-text column
/// other than to NULL must describe it as text to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Masked<'a> {
    Value(Cow<'a, [u8]>),
    Null,
}

impl Masker {
    /// Compiles the masking specs of the rules that apply to a session into one masker.
    /// Where rules disagree about a recognizer, column or word, the most restrictive
    /// style wins. `key` is needed if a rule uses `mask_style = "hash"` (see
    /// [`MaskKey::for_specs`]).
    pub fn compile(specs: &[MaskSpec], key: Option<&MaskKey>) -> Result<Masker, MaskError> {
        let mut compiling = compile::Compiling::default();
        for spec in specs {
            compiling.add(spec)?;
        }
        compiling.finish(key)
    }

    /// This masker with the target's learned columns, when a rule learns (otherwise
    /// unchanged).
    #[must_use]
    pub fn with_learned(mut self, set: Arc<LearnedSet>) -> Masker {
        if self.learns {
            self.learned = Some(set);
        }
        self
    }

    /// Whether a rule learns columns (then [`Masker::learning`] is set once attached).
    #[must_use]
    pub fn learns(&self) -> bool {
        self.learns
    }

    /// The learned columns this masker applies and adds to, when a rule learns.
    #[must_use]
    pub fn learning(&self) -> Option<&LearnedSet> {
        self.learned.as_deref()
    }

    /// The recognizer (or `regex:NAME`) that finds something in `value`, which teaches
    /// a column; deny-listed words do not (they are free text's, not a column's).
    #[must_use]
    pub fn recognized(&self, value: &[u8]) -> Option<String> {
        let mut found = Findings::new();
        self.find(value, self.scanner.prefilter(value), &mut found);
        found.as_mut_slice().iter().find_map(|f| match f.label {
            Label::Builtin(r) => Some(r.name().to_owned()),
            Label::Regex(i) => self.regexes.get(i).map(|r| format!("regex:{}", r.name)),
            Label::Word => None,
        })
    }

    /// Whether nothing is configured: callers may skip masking entirely.
    #[must_use]
    pub fn is_noop(&self) -> bool {
        !self.scans_values() && self.columns.is_empty() && self.json.is_none()
    }

    /// A rewriter of one JSON body by the `mask_json` paths, when some rule has them.
    #[must_use]
    pub fn json_rewriter(&self) -> Option<json_stream::JsonRewriter> {
        self.json.as_ref().map(json_stream::JsonRewriter::new)
    }

    /// Whether some rule masks columns whole (then data whose columns cannot be told
    /// apart, like a COPY OUT, cannot be let through).
    #[must_use]
    pub fn has_column_rules(&self) -> bool {
        !self.columns.is_empty() || self.learned.as_ref().is_some_and(|l| !l.is_empty())
    }

    /// How the column `column` of `table` is masked, if it is masked whole. Call it
    /// once per result description; `table` is empty when the column has none (a
    /// computed column), which `*.column` patterns still match.
    #[must_use]
    pub fn column_rule(&self, table: &str, column: &str) -> Option<ColumnMask> {
        let learned = self
            .learned
            .as_ref()
            .filter(|l| !table.is_empty() && l.contains(table, column))
            .map(|_| self.learned_style);
        self.columns
            .iter()
            .filter(|(glob, _)| glob.matches(table, column))
            .map(|(_, style)| *style)
            .chain(learned)
            .max()
            .map(|style| ColumnMask { style })
    }

    /// Whether a statement that names these relations and columns (anywhere in it) may
    /// compute a result from a masked column: some column rule's table is among
    /// `relations` and its column among `columns`, or the statement uses whole rows
    /// of it (`whole_rows`); with `unknown` (the statement's rows come from SQL not
    /// seen), whenever there is a column rule at all. A result column computed by
    /// such a statement carries no table in the protocol, so the caller masks it
    /// whole.
    #[must_use]
    pub fn may_derive(
        &self,
        relations: &[String],
        columns: &[String],
        whole_rows: bool,
        unknown: bool,
    ) -> bool {
        let learned = self.learned.as_ref().is_some_and(|l| {
            !l.is_empty() && (unknown || l.any_of(relations, columns, whole_rows))
        });
        learned
            || self.columns.iter().any(|(glob, _)| {
                unknown
                    || (relations.iter().any(|t| glob.matches_table(t))
                        && (whole_rows || columns.iter().any(|c| glob.matches_column(c))))
            })
    }

    /// `value` (text, ideally UTF-8 but any bytes are safe) with every finding masked;
    /// borrowed when there is none.
    #[must_use]
    pub fn mask_value<'a>(&self, value: &'a [u8]) -> Cow<'a, [u8]> {
        // Most values are ruled out by the prefilter: then nothing else is set up.
        let possible = self.scanner.prefilter(value);
        if possible.is_empty() && self.regexes.is_empty() && self.words.is_none() {
            return Cow::Borrowed(value);
        }
        self.mask_possible(value, possible)
    }

    /// [`Masker::mask_value`] past the prefilter.
    ///
    /// A masked value is scanned again until nothing in it is found: a replacement
    /// can end a word that hid a finding next to it (`+155 3554(51222ORD-85222…`: once
    /// the order id is `[order]`, the phone before it stands alone), and a kept tail
    /// could be one (issue 21, found by the `mask` fuzz target). A value still
    /// changing after [`MAX_PASSES`] is redacted whole.
    #[inline(never)]
    fn mask_possible<'a>(&self, value: &'a [u8], possible: Possible) -> Cow<'a, [u8]> {
        let mut findings = Findings::new();
        self.find(value, possible, &mut findings);
        if findings.is_empty() {
            return Cow::Borrowed(value);
        }
        let mut out = self.rewrite(value, findings.as_mut_slice());
        for _ in 1..MAX_PASSES {
            let mut again = Findings::new();
            self.find(&out, self.scanner.prefilter(&out), &mut again);
            if again.is_empty() {
                return Cow::Owned(out);
            }
            out = self.rewrite(&out, again.as_mut_slice());
        }
        Cow::Owned(style::REDACTED.to_vec())
    }

    /// A value of a column that [`Masker::column_rule`] says is masked.
    #[must_use]
    pub fn mask_column_value<'a>(&self, rule: &ColumnMask, value: &'a [u8]) -> Masked<'a> {
        match rule.style {
            MaskStyle::Redact => Masked::Value(Cow::Borrowed(style::REDACTED)),
            style => self
                .column_value(style, value)
                .map_or(Masked::Null, |v| Masked::Value(Cow::Owned(v))),
        }
    }

    /// [`Masker::mask_value`] for text (messages, recordings).
    #[must_use]
    pub fn mask_str<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match self.mask_value(text.as_bytes()) {
            Cow::Borrowed(_) => Cow::Borrowed(text),
            // Replacements are ASCII at character boundaries; a custom regex could cut
            // a character in two, which becomes U+FFFD rather than a panic.
            Cow::Owned(bytes) => Cow::Owned(
                String::from_utf8(bytes)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            ),
        }
    }

    fn scans_values(&self) -> bool {
        !self.scanner.is_empty() || !self.regexes.is_empty() || self.words.is_some()
    }

    /// Everything to mask in `value`, possibly overlapping, in no particular order.
    #[cfg(test)]
    fn findings(&self, value: &[u8]) -> Vec<Finding> {
        let mut found = Findings::new();
        self.find(value, self.scanner.prefilter(value), &mut found);
        found.as_mut_slice().to_vec()
    }

    /// Adds everything to mask in `value` to `found`, given what the prefilter said is
    /// `possible` there.
    fn find(&self, value: &[u8], possible: Possible, found: &mut Findings) {
        self.scanner.scan(value, possible, &mut |r, range| {
            let style = self
                .styles
                .get(r as usize)
                .copied()
                .flatten()
                .unwrap_or_default();
            found.push(Finding {
                range,
                label: Label::Builtin(r),
                style,
            });
        });
        for (i, r) in self.regexes.iter().enumerate() {
            for m in r.regex.find_iter(value).filter(|m| !m.is_empty()) {
                found.push(Finding {
                    range: m.range(),
                    label: Label::Regex(i),
                    style: r.style,
                });
            }
        }
        if let Some(words) = &self.words {
            words.find(value, found);
        }
    }
}

impl Default for Masker {
    /// A masker that masks nothing.
    fn default() -> Self {
        Masker {
            styles: [None; Recognizer::ALL.len()],
            scanner: Scanner::empty(),
            regexes: Vec::new(),
            words: None,
            columns: Vec::new(),
            hasher: None,
            learns: false,
            learned_style: MaskStyle::default(),
            learned: None,
            json: None,
        }
    }
}

impl fmt::Debug for Masker {
    /// What is configured, without the key or the deny-listed words.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let recognizers: Vec<String> = Recognizer::ALL
            .into_iter()
            .filter_map(|r| {
                Some(format!(
                    "{}={}",
                    r.name(),
                    self.styles.get(r as usize).copied().flatten()?.name()
                ))
            })
            .collect();
        let regexes: Vec<&str> = self.regexes.iter().map(|r| r.name.as_str()).collect();
        f.debug_struct("Masker")
            .field("recognizers", &recognizers)
            .field("regexes", &regexes)
            .field("words", &self.words.as_ref().map_or(0, |w| w.words.len()))
            .field("columns", &self.columns.len())
            .field("learned", &self.learned.as_ref().map(|l| l.len()))
            .field("hash_key", &self.hasher.as_ref().map(|_| "<secret>"))
            .finish_non_exhaustive()
    }
}
