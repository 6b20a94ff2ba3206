//! Rewriting: findings merged into spans and replaced per style, and whole column
//! values.
//!
//! | style    | a finding in a value     | a column value     |
//! |----------|--------------------------|--------------------|
//! | `redact` | `[email]`                | `****`             |
//! | `last4`  | `************1111`       | `*******6789`      |
//! | `hash`   | `[email:Vb3L0x9Q_zW1k2aB]` | `Vb3L0x9Q_zW1k2aB` |
//! | `null`   | (not allowed)            | SQL NULL           |
//!
//! A hash token is the same for the same bytes wherever they are found (in a column or
//! inside a text), so a token in one result joins with the same token in another.

use super::{Masker, Recognizer, key::Hasher, spec::MaskStyle};
use std::ops::Range;

/// What a finding is, for the name in its replacement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Label {
    Builtin(Recognizer),
    /// The `mask_regex` at this index.
    Regex(usize),
    /// A `mask_words` entry (which one is not said).
    Word,
}

/// A span of a value to mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Finding {
    pub(super) range: Range<usize>,
    pub(super) label: Label,
    pub(super) style: MaskStyle,
}

/// The findings in one value. A value holds none or a few, so the first
/// [`Findings::INLINE`] are kept on the stack, and a value with PII costs no
/// allocation but that of its masked copy; more spill to the heap.
pub(super) struct Findings {
    /// Created with the first finding: most values have none, and are spared filling
    /// the array.
    inline: Option<[Finding; Findings::INLINE]>,
    /// How many of `inline` are findings.
    len: usize,
    /// All the findings, once there are more than `INLINE`.
    spilled: Vec<Finding>,
}

impl Findings {
    const INLINE: usize = 4;
    /// What the unused slots of `inline` hold.
    const NONE: Finding = Finding {
        range: 0..0,
        label: Label::Word,
        style: MaskStyle::Redact,
    };

    pub(super) fn new() -> Self {
        Self {
            inline: None,
            len: 0,
            spilled: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, finding: Finding) {
        if self.spilled.is_empty() {
            let inline = self
                .inline
                .get_or_insert([const { Self::NONE }; Self::INLINE]);
            if let Some(slot) = inline.get_mut(self.len) {
                *slot = finding;
                self.len += 1;
                return;
            }
            self.spilled.extend(inline.iter().cloned());
        }
        self.spilled.push(finding);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(super) fn as_mut_slice(&mut self) -> &mut [Finding] {
        match &mut self.inline {
            _ if !self.spilled.is_empty() => &mut self.spilled,
            Some(inline) => inline.get_mut(..self.len).unwrap_or_default(),
            None => &mut [],
        }
    }
}

/// What a redacted column value becomes.
pub(super) const REDACTED: &[u8] = b"****";

impl Masker {
    /// `value` with each finding replaced. Overlapping findings are merged into their
    /// union, masked in the most restrictive of their styles and named after the
    /// longest of them (the first found, of equals).
    pub(super) fn rewrite(&self, value: &[u8], findings: &mut [Finding]) -> Vec<u8> {
        findings.sort_by_key(|f| f.range.start); // stable: ties keep the scan's order
        // Room for the longest replacement of each finding (a hash token), so the copy
        // is allocated once.
        let room: usize = findings
            .iter()
            .map(|f| self.name(f.label).len() + 3 + Hasher::TOKEN_LEN)
            .sum();
        let mut out = Vec::with_capacity(value.len() + room);
        let mut copied = 0;
        let mut findings = findings.iter().peekable();
        while let Some(first) = findings.next() {
            let (mut span, mut style, mut label) = (first.range.clone(), first.style, first.label);
            let mut longest = first.range.len();
            while let Some(next) = findings.next_if(|f| f.range.start < span.end) {
                span.end = span.end.max(next.range.end);
                style = style.max(next.style);
                if next.range.len() > longest {
                    longest = next.range.len();
                    label = next.label;
                }
            }
            out.extend_from_slice(value.get(copied..span.start).unwrap_or_default());
            self.replace(
                &mut out,
                value.get(span.clone()).unwrap_or_default(),
                label,
                style,
            );
            copied = span.end;
        }
        out.extend_from_slice(value.get(copied..).unwrap_or_default());
        out
    }

    /// The name a finding is replaced with.
    fn name(&self, label: Label) -> &str {
        match label {
            Label::Builtin(r) => r.name(),
            Label::Regex(i) => self.regexes.get(i).map_or("masked", |r| r.name.as_str()),
            Label::Word => "masked",
        }
    }

    /// Appends the replacement of one finding.
    fn replace(&self, out: &mut Vec<u8>, found: &[u8], label: Label, style: MaskStyle) {
        let name = self.name(label);
        match (style, &self.hasher) {
            (MaskStyle::Last4, _) => last4(found, out),
            (MaskStyle::Hash, Some(hasher)) => {
                out.push(b'[');
                out.extend_from_slice(name.as_bytes());
                out.push(b':');
                hasher.token(found, out);
                out.push(b']');
            }
            // Hash without a key cannot be compiled; redact rather than leak anyway.
            (MaskStyle::Redact | MaskStyle::Null | MaskStyle::Hash, _) => {
                out.push(b'[');
                out.extend_from_slice(name.as_bytes());
                out.push(b']');
            }
        }
    }

    /// A whole column value in `style` (`None` for [`MaskStyle::Null`]).
    pub(super) fn column_value(&self, style: MaskStyle, value: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(value.len().max(16));
        match (style, &self.hasher) {
            (MaskStyle::Null, _) => return None,
            (MaskStyle::Last4, _) => last4(value, &mut out),
            (MaskStyle::Hash, Some(hasher)) => hasher.token(value, &mut out),
            (MaskStyle::Redact | MaskStyle::Hash, _) => out.extend_from_slice(REDACTED),
        }
        Some(out)
    }
}

/// Appends `text` with every character but the last four replaced by `*`, one `*` per
/// character. Four characters or fewer are all replaced (last4 never shows a whole
/// value), and so is text that is not UTF-8 (its characters are not known). The kept
/// tail starts after its last `:`, if it has one: the last four of `2001:db8::1` are
/// `8::1`, itself an IPv6 address, so masking would not be idempotent and its output
/// would hold a value it detects (found by the `mask` fuzz target, issue 21).
fn last4(text: &[u8], out: &mut Vec<u8>) {
    let Ok(text) = std::str::from_utf8(text) else {
        let chars = String::from_utf8_lossy(text).chars().count();
        out.resize(out.len() + chars, b'*');
        return;
    };
    let kept = match text.char_indices().nth_back(3) {
        Some((i, _)) if i > 0 => text.get(i..).unwrap_or_default(),
        _ => "",
    };
    let kept = kept.rsplit(':').next().unwrap_or_default();
    let starred = text.chars().count() - kept.chars().count();
    out.resize(out.len() + starred, b'*');
    out.extend_from_slice(kept.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::last4;

    fn l4(text: &[u8]) -> String {
        let mut out = Vec::new();
        last4(text, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn last_four() {
        assert_eq!(l4(b"4111 1111 1111 1111"), "***************1111");
        assert_eq!(l4("ça coûte".as_bytes()), "****oûte");
        assert_eq!(l4(b"1234"), "****");
        assert_eq!(l4(b"12345"), "*2345");
        assert_eq!(l4(b""), "");
        assert_eq!(l4(b"ab\xffcdef"), "*******");
        // Issue 21 (fuzzing): the tail of an IPv6 address is no address.
        assert_eq!(l4(b"2001:db8::1"), "**********1");
        assert_eq!(l4(b"fe80::1:abcd"), "********abcd");
    }
}
