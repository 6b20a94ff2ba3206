//! The custom patterns of `mask_regex` and `mask_words`, compiled: each regex
//! bounded in size, the words in one case-insensitive automaton that finds them
//! only where they stand alone.

use super::{
    MaskError, MaskStyle, RegexSpec,
    recognize::{is_word, word_at, word_before},
    style::{Finding, Findings, Label},
};
use aho_corasick::{AhoCorasick, MatchKind};
use regex::bytes::Regex;
use std::collections::BTreeMap;

/// A `mask_regex` entry, compiled.
pub(super) struct NamedRegex {
    pub(super) name: String,
    pub(super) regex: Regex,
    pub(super) style: MaskStyle,
}

/// The `mask_words`, compiled: one case-insensitive automaton, and per word its style
/// and whether its ends are word characters (then they must stand at word boundaries).
pub(super) struct Words {
    ac: AhoCorasick,
    pub(super) words: Vec<(MaskStyle, bool, bool)>,
}

/// The most memory a custom regex may compile to.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

impl NamedRegex {
    pub(super) fn new(spec: &RegexSpec, style: MaskStyle) -> Result<Self, MaskError> {
        let plain = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if spec.name.is_empty() || !spec.name.chars().all(plain) {
            return Err(MaskError::RegexName {
                name: spec.name.clone(),
            });
        }
        let regex = regex::bytes::RegexBuilder::new(&spec.pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|source| MaskError::Regex {
                name: spec.name.clone(),
                source,
            })?;
        Ok(Self {
            name: spec.name.clone(),
            regex,
            style,
        })
    }
}

impl Words {
    pub(super) fn new(words: &BTreeMap<String, MaskStyle>) -> Result<Option<Self>, MaskError> {
        if words.is_empty() {
            return Ok(None);
        }
        let ac = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(words.keys())
            .map_err(|e| MaskError::Internal {
                what: "the mask_words automaton",
                reason: e.to_string(),
            })?;
        let words = words
            .iter()
            .map(|(w, style)| {
                let (first, last) = (w.bytes().next().unwrap_or(0), w.bytes().last().unwrap_or(0));
                (*style, is_word(first), is_word(last))
            })
            .collect();
        Ok(Some(Words { ac, words }))
    }

    /// Pushes every occurrence that stands alone ("acme" in "Acme's", not in
    /// "acmes"). Overlapping occurrences are all considered, so a longer word that is
    /// not whole does not hide a shorter one that is.
    pub(super) fn find(&self, v: &[u8], found: &mut Findings) {
        for m in self.ac.find_overlapping_iter(v) {
            let Some(&(style, left, right)) = self.words.get(m.pattern().as_usize()) else {
                continue;
            };
            let glued = (left && word_before(v, m.start())) || (right && word_at(v, m.end()));
            if !glued {
                found.push(Finding {
                    range: m.range(),
                    label: Label::Word,
                    style,
                });
            }
        }
    }
}
