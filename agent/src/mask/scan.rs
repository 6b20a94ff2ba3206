//! Finding the built-in recognizers' matches in a value: one prefilter pass that rules
//! most values out, then recognizers only where a trigger is.
//!
//! 1. **Prefilter**: one pass over the bytes counts a few classes of characters
//!    (digits, dots, colons, `@`, `+`, `-`, `_`, capitals, the lower-case letters
//!    g–z) in branch-free code the compiler vectorizes. Each recognizer needs some
//!    minimum of these (a card 13 digits, a JWT a capital and two dots, a private key
//!    ten dashes…), so the counts say which recognizers may match at all: for most
//!    values none, and the value costs that one pass.
//! 2. **Recognizers at triggers**, for those that may match: each `@` is tried as an
//!    email; a walk visits each number (and each `:`) and tries the number recognizers
//!    its first group of digits allows; one aho-corasick search (SIMD) finds the
//!    literals that start secrets (`-----BEGIN `, `eyJ`, `AKIA`, `ghp_`, `Bearer `…),
//!    each tried as the secret it starts.
//!
//! Matches may overlap; the caller masks their union.

use super::{
    MaskError,
    recognize::{
        Recognizer, RecognizerSet, addresses, before, byte, class, class_of, is_word, numbers,
        secrets::{self, Literal},
        starts_number, word_at, word_before,
    },
};
use aho_corasick::{AhoCorasick, MatchKind};
use std::ops::Range;

/// The built-in recognizers a [`Masker`](super::Masker) runs, compiled.
#[derive(Debug)]
pub(super) struct Scanner {
    enabled: RecognizerSet,
    /// The literals that start secrets, and what each starts.
    literals: Option<Literals>,
}

/// The literals that start secrets, in one automaton.
#[derive(Debug)]
struct Literals {
    ac: AhoCorasick,
    /// What each pattern starts, by pattern index.
    kinds: Vec<Literal>,
    /// The shortest secret any of them starts: shorter values (most column values)
    /// skip the search.
    min_len: usize,
}

/// A recognizer of numbers: where the number starting at an index ends, if one does.
type RecognizeNumber = fn(&[u8], usize) -> Option<usize>;

impl Scanner {
    pub(super) fn new(enabled: RecognizerSet) -> Result<Self, MaskError> {
        let (patterns, kinds): (Vec<_>, Vec<_>) = secrets::literals(enabled).into_iter().unzip();
        let literals = match kinds.iter().map(|k| k.min_len()).min() {
            None => None,
            Some(min_len) => {
                let ac = AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostFirst)
                    .build(patterns)
                    .map_err(|e| MaskError::Internal {
                        what: "the secret prefixes",
                        reason: e.to_string(),
                    })?;
                Some(Literals { ac, kinds, min_len })
            }
        };
        Ok(Self { enabled, literals })
    }

    /// A scanner that finds nothing.
    pub(super) fn empty() -> Self {
        Self {
            enabled: RecognizerSet::default(),
            literals: None,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.enabled.is_empty()
    }

    /// Calls `found` with each match in `v`, in no particular order.
    pub(super) fn scan(&self, v: &[u8], found: &mut impl FnMut(Recognizer, Range<usize>)) {
        let t = Triggers::count(v);
        let ipv6 = self.enabled.contains(Recognizer::IpAddress) && t.may_hold_ipv6(v);
        let possible = t.possible(self.enabled, v, ipv6);
        if possible.is_empty() {
            return;
        }
        if possible.contains(Recognizer::Email) {
            for (at, _) in v.iter().enumerate().filter(|(_, b)| **b == b'@') {
                if let Some(range) = addresses::email(v, at) {
                    found(Recognizer::Email, range);
                }
            }
        }
        if NUMBERS.iter().any(|r| possible.contains(*r)) {
            walk(v, possible, ipv6, found);
        }
        let literals = self.literals.as_ref().filter(|l| v.len() >= l.min_len);
        if let Some(lit) = literals.filter(|_| LITERALS.iter().any(|r| possible.contains(*r))) {
            for m in lit.ac.find_iter(v) {
                let Some(&literal) = lit.kinds.get(m.pattern().as_usize()) else {
                    continue;
                };
                if !possible.contains(literal.recognizer()) {
                    continue;
                }
                if let Some(range) = literal.recognize(v, m.start(), m.len()) {
                    found(literal.recognizer(), range);
                }
            }
        }
    }
}

/// The recognizers of numbers, found by [`walk`], and of secrets that start with a
/// literal.
const NUMBERS: [Recognizer; 5] = [
    Recognizer::CreditCard,
    Recognizer::Ssn,
    Recognizer::Phone,
    Recognizer::Iban,
    Recognizer::IpAddress,
];
const LITERALS: [Recognizer; 4] = [
    Recognizer::Jwt,
    Recognizer::PrivateKey,
    Recognizer::ApiKey,
    Recognizer::BearerToken,
];

/// Visits every place a number (or, with `ipv6`, an IPv6 address) may start and tries
/// there the recognizers of `possible` the place allows.
fn walk(
    v: &[u8],
    possible: RecognizerSet,
    ipv6: bool,
    found: &mut impl FnMut(Recognizer, Range<usize>),
) {
    let anchors = class::DIGIT | class::PHONE_START | if ipv6 { class::COLON } else { 0 };
    let mut i = 0;
    while let Some(offset) = v
        .get(i..)
        .and_then(|rest| rest.iter().position(|&b| class_of(b) & anchors != 0))
    {
        let at = i + offset;
        i = match byte(v, at) {
            b':' => match addresses::ipv6(v, at) {
                Some(range) => {
                    let end = range.end;
                    found(Recognizer::IpAddress, range);
                    end
                }
                None => at + 1,
            },
            b'+' | b'(' => {
                let phone = possible.contains(Recognizer::Phone)
                    && !word_before(v, at)
                    && byte(v, at + 1).is_ascii_digit();
                match phone.then(|| numbers::phone(v, at)).flatten() {
                    Some(end) => {
                        found(Recognizer::Phone, at..end);
                        end
                    }
                    None => at + 1,
                }
            }
            _ => at_digits(v, at, possible, found),
        }
        .max(at + 1);
    }
}

/// Tries the number recognizers at the digits at `at`; returns where to look next.
///
/// Digits inside a word ("x42", "550e8400") start no number, except the check digits
/// of an IBAN after its country code. Otherwise the first group of digits says which
/// numbers may start: a card 4 or 13–19 digits, an SSN or a North American phone 3
/// digits and a separator (or the trunk `1`), an IPv4 address 1–3 digits and a dot.
fn at_digits(
    v: &[u8],
    at: usize,
    possible: RecognizerSet,
    found: &mut impl FnMut(Recognizer, Range<usize>),
) -> usize {
    let run_end = at + numbers::run_len(v, at);
    let word_end = || {
        at + v
            .get(at..)
            .unwrap_or_default()
            .iter()
            .take_while(|&&b| is_word(b))
            .count()
    };
    if word_before(v, at) {
        let country = at.wrapping_sub(2);
        let iban_start = possible.contains(Recognizer::Iban)
            && before(v, at).is_ascii_uppercase()
            && byte(v, country).is_ascii_uppercase()
            && !word_before(v, country);
        return match iban_start.then(|| numbers::iban(v, country)).flatten() {
            // A mistyped IBAN is still skipped whole.
            Some((end, valid)) => {
                if valid {
                    found(Recognizer::Iban, country..end);
                }
                end
            }
            None => word_end(),
        };
    }
    let (run, next) = (run_end - at, byte(v, run_end));
    if word_at(v, run_end) {
        return word_end();
    }
    if !starts_number(v, at) {
        return run_end;
    }
    let separated = matches!(next, b'-' | b'.' | b' ');
    let candidates: [(Recognizer, bool, RecognizeNumber); 4] = [
        (
            Recognizer::CreditCard,
            run == 4 || (13..=19).contains(&run),
            numbers::credit_card,
        ),
        (
            Recognizer::Ssn,
            run == 3 && matches!(next, b'-' | b' '),
            numbers::ssn,
        ),
        (
            Recognizer::Phone,
            separated && (run == 3 || (run == 1 && byte(v, at) == b'1')),
            numbers::phone,
        ),
        (
            Recognizer::IpAddress,
            run <= 3 && next == b'.',
            numbers::ipv4,
        ),
    ];
    let mut resume = run_end;
    for (recognizer, plausible, recognize) in candidates {
        if let Some(end) = (plausible && possible.contains(recognizer))
            .then(|| recognize(v, at))
            .flatten()
        {
            found(recognizer, at..end);
            resume = resume.max(end);
        }
    }
    resume
}

/// What the prefilter counts in a value.
#[derive(Debug, Default)]
struct Triggers {
    digits: usize,
    dots: usize,
    colons: usize,
    ats: usize,
    pluses: usize,
    dashes: usize,
    underscores: usize,
    /// `A`–`Z`.
    capitals: usize,
    /// `g`–`z`: letters that are not hex digits.
    lowers: usize,
}

impl Triggers {
    /// The recognizers of `enabled` that may match `v`, which has these counts: each
    /// needs at least the characters of its shortest match.
    fn possible(&self, enabled: RecognizerSet, v: &[u8], ipv6: bool) -> RecognizerSet {
        let t = self;
        let needs = [
            (Recognizer::Email, t.ats >= 1),
            (Recognizer::CreditCard, t.digits >= 13),
            (Recognizer::Ssn, t.digits >= 9),
            // `+` and 8 digits, or 10 in North America.
            (
                Recognizer::Phone,
                (t.pluses >= 1 && t.digits >= 8) || t.digits >= 10,
            ),
            // A country code, check digits and, in every registered format, an account
            // number with digits.
            (Recognizer::Iban, t.capitals >= 2 && t.digits >= 6),
            (
                Recognizer::IpAddress,
                ipv6 || (t.digits >= 4 && t.dots >= 3),
            ),
            // `eyJ`, and the dots between the three parts.
            (Recognizer::Jwt, t.capitals >= 1 && t.dots >= 2),
            // `-----BEGIN … PRIVATE KEY-----`.
            (Recognizer::PrivateKey, t.dashes >= 10),
            // A key prefix has a `_`, or a `-` after three letters g–z (`xoxb-`,
            // `glpat-`…), or is AKIA/ASIA (with the body, 20 capitals and digits) or
            // AIza (39 characters).
            (
                Recognizer::ApiKey,
                t.underscores >= 1
                    || (t.dashes >= 1 && t.lowers >= 3)
                    || (t.capitals >= 4 && t.capitals + t.digits >= 20)
                    || (t.capitals >= 2 && v.len() >= 39),
            ),
            // `Bearer` (two `r`s) or `BEARER`, and a token with a digit.
            (
                Recognizer::BearerToken,
                t.digits >= 1 && (t.lowers >= 2 || t.capitals >= 6),
            ),
        ];
        RecognizerSet::of(&needs).and(enabled)
    }

    /// Whether `v`, with these counts, may hold an IPv6 address: it has `::` or
    /// seven colons (a time has two).
    fn may_hold_ipv6(&self, v: &[u8]) -> bool {
        self.colons >= 7 || (self.colons >= 2 && v.windows(2).any(|w| w == b"::"))
    }

    /// One pass over the value in blocks counted in bytes: branch-free code the
    /// compiler turns into a few SIMD instructions per block. A tail shorter than a
    /// block is counted as the last block of the value minus the bytes already counted
    /// (so a 20-byte value is two overlapping 16-byte blocks, not 20 steps); a value
    /// shorter than 16 bytes is one block padded with zeros.
    fn count(v: &[u8]) -> Self {
        let mut t = Triggers::default();
        if let Some(last) = v.last_chunk::<32>() {
            let (blocks, rest) = v.as_chunks::<32>();
            for block in blocks {
                t.add(block, 0);
            }
            if !rest.is_empty() {
                t.add(last, 32 - rest.len());
            }
        } else if let (Some(first), Some(last)) = (v.first_chunk::<16>(), v.last_chunk::<16>()) {
            t.add(first, 0);
            t.add(last, 32 - v.len());
        } else {
            // Zeros count as nothing.
            let block: [u8; 16] = std::array::from_fn(|i| byte(v, i));
            t.add(&block, 0);
        }
        t
    }

    /// Counts `block` from index `skip` on.
    fn add<const N: usize>(&mut self, block: &[u8; N], skip: usize) {
        let Some(keep) = KEEP.get(32 - skip..).and_then(<[u8]>::first_chunk::<N>) else {
            return;
        };
        let mut n = Counts::default();
        for (&b, &keep) in block.iter().zip(keep) {
            n.digits += u8::from(b.wrapping_sub(b'0') < 10) & keep;
            n.dots += u8::from(b == b'.') & keep;
            n.colons += u8::from(b == b':') & keep;
            n.ats += u8::from(b == b'@') & keep;
            n.pluses += u8::from(b == b'+') & keep;
            n.dashes += u8::from(b == b'-') & keep;
            n.underscores += u8::from(b == b'_') & keep;
            n.capitals += u8::from(b.wrapping_sub(b'A') < 26) & keep;
            n.lowers += u8::from(b.wrapping_sub(b'g') < 20) & keep;
        }
        self.digits += usize::from(n.digits);
        self.dots += usize::from(n.dots);
        self.colons += usize::from(n.colons);
        self.ats += usize::from(n.ats);
        self.pluses += usize::from(n.pluses);
        self.dashes += usize::from(n.dashes);
        self.underscores += usize::from(n.underscores);
        self.capitals += usize::from(n.capitals);
        self.lowers += usize::from(n.lowers);
    }
}

/// The counts of one block (at most 32 of each).
#[derive(Default)]
struct Counts {
    digits: u8,
    dots: u8,
    colons: u8,
    ats: u8,
    pluses: u8,
    dashes: u8,
    underscores: u8,
    capitals: u8,
    lowers: u8,
}

/// `KEEP[32 - skip..]` starts with `skip` zeros, then ones: which bytes of a block to
/// count.
#[expect(
    clippy::indexing_slicing,
    reason = "evaluated at compile time, where an index out of bounds fails the build"
)]
const KEEP: [u8; 64] = {
    let mut keep = [1; 64];
    let mut i = 0;
    while i < 32 {
        keep[i] = 0;
        i += 1;
    }
    keep
};
