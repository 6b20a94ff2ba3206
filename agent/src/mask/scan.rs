//! Finding the built-in recognizers' matches in a value: a prefilter that rules most
//! values out, then recognizers only where a trigger is.
//!
//! 1. **Prefilter**: one pass over the bytes counts digits, `:` and `@` (a loop the
//!    compiler vectorizes), and one aho-corasick search (SIMD) looks for the literals
//!    that start secrets (`-----BEGIN `, `eyJ`, `AKIA`, `ghp_`, `Bearer `…). A value
//!    with none of them costs those two passes and nothing else.
//! 2. **Recognizers at triggers**: each `@` is tried as an email; if there are enough
//!    digits (or two colons), a walk visits each number (and each `:`) and tries the
//!    number recognizers there; each literal found is tried as the secret it starts.
//!
//! Matches may overlap; the caller masks their union.

use super::{
    MaskError,
    recognize::{
        Recognizer, RecognizerSet, addresses, before, byte, is_word, numbers,
        secrets::{self, Literal},
        starts_number,
    },
};
use aho_corasick::{AhoCorasick, MatchKind};
use std::ops::Range;

/// The built-in recognizers a [`Masker`](super::Masker) runs, compiled.
#[derive(Debug)]
pub(super) struct Scanner {
    enabled: RecognizerSet,
    /// Fewer digits than this in a value and no number recognizer can match.
    min_digits: usize,
    /// The literals that start secrets, and what each starts.
    literals: Option<(AhoCorasick, Vec<Literal>)>,
}

/// A recognizer of numbers: where the number starting at an index ends.
type RecognizeNumber = fn(&[u8], usize) -> Option<usize>;

/// The number recognizers, tried in turn wherever a number starts.
const NUMBERS: [(Recognizer, RecognizeNumber); 4] = [
    (Recognizer::CreditCard, numbers::credit_card),
    (Recognizer::Ssn, numbers::ssn),
    (Recognizer::Phone, numbers::phone),
    (Recognizer::IpAddress, numbers::ipv4),
];

impl Scanner {
    pub(super) fn new(enabled: RecognizerSet) -> Result<Self, MaskError> {
        let min_digits = enabled
            .iter()
            .filter_map(|r| match r {
                // "1.1.1.1"; an IBAN has at least its two check digits and, in every
                // registered format, a numeric account number.
                Recognizer::IpAddress => Some(4),
                Recognizer::Iban => Some(6),
                Recognizer::Phone => Some(8),
                Recognizer::Ssn => Some(9),
                Recognizer::CreditCard => Some(13),
                _ => None,
            })
            .min()
            .unwrap_or(usize::MAX);
        let (patterns, kinds): (Vec<_>, Vec<_>) = secrets::literals(enabled).into_iter().unzip();
        let literals = if patterns.is_empty() {
            None
        } else {
            let ac = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostFirst)
                .build(patterns)
                .map_err(|e| MaskError::Internal {
                    what: "the secret prefixes",
                    reason: e.to_string(),
                })?;
            Some((ac, kinds))
        };
        Ok(Self {
            enabled,
            min_digits,
            literals,
        })
    }

    /// A scanner that finds nothing.
    pub(super) fn empty() -> Self {
        Self {
            enabled: RecognizerSet::default(),
            min_digits: usize::MAX,
            literals: None,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.enabled.is_empty()
    }

    /// Calls `found` with each match in `v`, in no particular order.
    pub(super) fn scan(&self, v: &[u8], found: &mut impl FnMut(Recognizer, Range<usize>)) {
        let on = |r| self.enabled.contains(r);
        let t = Triggers::count(v);
        if t.ats > 0 && on(Recognizer::Email) {
            for (at, _) in v.iter().enumerate().filter(|(_, b)| **b == b'@') {
                if let Some(range) = addresses::email(v, at) {
                    found(Recognizer::Email, range);
                }
            }
        }
        let ipv6 = t.colons >= 2 && on(Recognizer::IpAddress);
        if t.digits >= self.min_digits || ipv6 {
            self.walk(v, ipv6, found);
        }
        if let Some((ac, kinds)) = &self.literals {
            for m in ac.find_iter(v) {
                let Some(&literal) = kinds.get(m.pattern().as_usize()) else {
                    continue;
                };
                if let Some(range) = literal.recognize(v, m.start(), m.len()) {
                    found(literal.recognizer(), range);
                }
            }
        }
    }

    /// Visits every place a number (or, with `ipv6`, an IPv6 address) may start.
    fn walk(&self, v: &[u8], ipv6: bool, found: &mut impl FnMut(Recognizer, Range<usize>)) {
        let is_anchor = |b: u8| b.is_ascii_digit() || b == b'+' || b == b'(' || (ipv6 && b == b':');
        let mut i = 0;
        while let Some(offset) = v
            .get(i..)
            .and_then(|rest| rest.iter().position(|&b| is_anchor(b)))
        {
            let at = i + offset;
            i = self.at_anchor(v, at, found).max(at + 1);
        }
    }

    /// Tries the recognizers that may start at `at`; returns where to look next.
    fn at_anchor(
        &self,
        v: &[u8],
        at: usize,
        found: &mut impl FnMut(Recognizer, Range<usize>),
    ) -> usize {
        let on = |r| self.enabled.contains(r);
        match byte(v, at) {
            b':' => {
                if let Some(range) = addresses::ipv6(v, at) {
                    let end = range.end;
                    found(Recognizer::IpAddress, range);
                    return end;
                }
                at + 1
            }
            b'+' | b'(' => {
                let number = on(Recognizer::Phone)
                    && !is_word(before(v, at))
                    && byte(v, at + 1).is_ascii_digit();
                match number.then(|| numbers::phone(v, at)).flatten() {
                    Some(end) => {
                        found(Recognizer::Phone, at..end);
                        end
                    }
                    None => at + 1,
                }
            }
            _ => {
                let run_end = at
                    + v.get(at..)
                        .unwrap_or_default()
                        .iter()
                        .take_while(|b| b.is_ascii_digit())
                        .count();
                if is_word(before(v, at)) {
                    return self.in_word(v, at, found);
                }
                if !starts_number(v, at) {
                    return run_end;
                }
                let mut next = run_end;
                for (recognizer, recognize) in NUMBERS {
                    if let Some(end) = on(recognizer).then(|| recognize(v, at)).flatten() {
                        found(recognizer, at..end);
                        next = next.max(end);
                    }
                }
                next
            }
        }
    }

    /// Digits at `at` inside a word: an IBAN if the word starts with a country code
    /// right before them ("DE89…"); otherwise nothing, up to the end of the word. An
    /// IBAN with a wrong checksum is skipped whole, not masked.
    fn in_word(
        &self,
        v: &[u8],
        at: usize,
        found: &mut impl FnMut(Recognizer, Range<usize>),
    ) -> usize {
        let country = at.wrapping_sub(2);
        let iban_start = self.enabled.contains(Recognizer::Iban)
            && before(v, at).is_ascii_uppercase()
            && byte(v, country).is_ascii_uppercase()
            && !is_word(before(v, country));
        if let Some((end, valid)) = iban_start.then(|| numbers::iban(v, country)).flatten() {
            if valid {
                found(Recognizer::Iban, country..end);
            }
            return end;
        }
        at + v
            .get(at..)
            .unwrap_or_default()
            .iter()
            .take_while(|&&b| is_word(b))
            .count()
    }
}

/// What the prefilter counts in a value.
struct Triggers {
    digits: usize,
    colons: usize,
    ats: usize,
}

impl Triggers {
    /// One pass, branch-free so that it vectorizes.
    fn count(v: &[u8]) -> Self {
        let mut t = Triggers {
            digits: 0,
            colons: 0,
            ats: 0,
        };
        for &b in v {
            t.digits += usize::from(b.is_ascii_digit());
            t.colons += usize::from(b == b':');
            t.ats += usize::from(b == b'@');
        }
        t
    }
}
