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
    shapes,
};
use aho_corasick::{AhoCorasick, MatchKind};
use std::ops::Range;

/// The built-in recognizers a [`Masker`](super::Masker) runs, compiled.
#[derive(Debug)]
pub(super) struct Scanner {
    enabled: RecognizerSet,
    /// The literals that start secrets, in one automaton per set of [`LITERALS`]
    /// (indexed by [`literal_index`]): a value is searched only for the literals of
    /// the recognizers its counts allow. A sentence with a digit may hold a bearer
    /// token, but not an API key, and three patterns cost far less to look for in
    /// prose than thirty. `None` where the set is empty or not enabled.
    literals: [Option<Literals>; 1 << LITERALS.len()],
}

/// The literals that start the secrets of some recognizers, in one automaton.
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
        let mut literals = [const { None }; 1 << LITERALS.len()];
        for (index, slot) in literals.iter_mut().enumerate() {
            let mut set = RecognizerSet::default();
            for (k, r) in LITERALS.into_iter().enumerate() {
                if enabled.contains(r) && index & 1 << k != 0 {
                    set.insert(r);
                }
            }
            *slot = Literals::new(set, index)?;
        }
        Ok(Self { enabled, literals })
    }

    /// A scanner that finds nothing.
    pub(super) fn empty() -> Self {
        Self {
            enabled: RecognizerSet::default(),
            literals: [const { None }; 1 << LITERALS.len()],
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.enabled.is_empty()
    }

    /// Calls `found` with each match in `v`, in no particular order.
    pub(super) fn scan(&self, v: &[u8], found: &mut impl FnMut(Recognizer, Range<usize>)) {
        let t = Triggers::count(v);
        if t.rule_out_all() {
            return;
        }
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
        if NUMBERS.iter().any(|r| possible.contains(*r))
            && (ipv6 || shapes::numbers_may_start(v, possible))
        {
            walk(v, possible, ipv6, found);
        }
        let literals = self
            .literals
            .get(literal_index(possible))
            .and_then(Option::as_ref);
        if let Some(lit) = literals.filter(|l| v.len() >= l.min_len) {
            for m in lit.ac.find_iter(v) {
                let Some(&literal) = lit.kinds.get(m.pattern().as_usize()) else {
                    continue;
                };
                if let Some(range) = literal.recognize(v, m.start(), m.len()) {
                    found(literal.recognizer(), range);
                }
            }
        }
    }
}

impl Literals {
    /// The automaton of the literals of `set` (`None` if it has none). `index` is the
    /// set's, for the error.
    ///
    /// Searching for a subset of the literals finds what searching for them all and
    /// dropping the others would: no literal can hide one of another recognizer
    /// (start inside it), except the `-` that ends some API key prefixes, and an API
    /// key is always possible where such a prefix is.
    fn new(set: RecognizerSet, index: usize) -> Result<Option<Self>, MaskError> {
        let (patterns, kinds): (Vec<_>, Vec<_>) = secrets::literals(set).into_iter().unzip();
        let Some(min_len) = kinds.iter().map(|k| k.min_len()).min() else {
            return Ok(None);
        };
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostFirst)
            .build(patterns)
            .map_err(|e| MaskError::Internal {
                what: "the secret prefixes",
                reason: format!("set {index}: {e}"),
            })?;
        Ok(Some(Literals { ac, kinds, min_len }))
    }
}

/// The index of the literal recognizers of `set` among the subsets of [`LITERALS`]:
/// bit `k` for `LITERALS[k]`.
fn literal_index(set: RecognizerSet) -> usize {
    LITERALS.iter().enumerate().fold(0, |index, (k, r)| {
        index | usize::from(set.contains(*r)) << k
    })
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
    // Most groups of digits (in dates, times, ids) allow no number; then whether one
    // may start here (which looks at the characters before) need not be asked.
    let plausible = RecognizerSet::of(&candidates.map(|(r, plausible, _)| (r, plausible)));
    let tried = plausible.and(possible);
    if tried.is_empty() || !starts_number(v, at) {
        return run_end;
    }
    let mut resume = run_end;
    for (recognizer, _, recognize) in candidates {
        if let Some(end) = tried
            .contains(recognizer)
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

    /// Whether these counts rule out every recognizer at a glance, as they do for most
    /// prose, names and statuses: no digit (which IP addresses need too), `@`, `_` nor
    /// `-`, and at most one capital, without two dots (the least a JWT needs). Cheaper
    /// than weighing each recognizer's needs in [`Triggers::possible`], which agrees.
    fn rule_out_all(&self) -> bool {
        self.digits + self.ats + self.underscores + self.dashes == 0
            && (self.capitals == 0 || (self.capitals == 1 && self.dots < 2))
    }

    /// Whether `v`, with these counts, may hold an IPv6 address: it has `::` or
    /// seven colons (a time has two).
    fn may_hold_ipv6(&self, v: &[u8]) -> bool {
        self.colons >= 7 || (self.colons >= 2 && v.windows(2).any(|w| w == b"::"))
    }

    /// One pass over the value, a table lookup and an addition per byte: each byte's
    /// entry in [`WEIGHTS`] holds a 1 in the field of each class it belongs to, so the
    /// sum holds all nine counts at once (see [`Packed`]). Values are short (most
    /// column values are under 64 bytes), so this beats SIMD counting, whose cost is in
    /// summing its lanes at the end.
    fn count(v: &[u8]) -> Self {
        let mut t = Triggers::default();
        for chunk in v.chunks(Packed::MAX_BYTES) {
            // Two sums, so the additions of neighbouring bytes do not wait on each other.
            let (pairs, rest) = chunk.as_chunks::<2>();
            let (a, b) = pairs
                .iter()
                .fold((0, 0), |(a, b), &[x, y]| (a + weight(x), b + weight(y)));
            let sum = rest.iter().fold(a + b, |sum, &x| sum + weight(x));
            t.add(Packed(sum));
        }
        t
    }

    /// Adds the counts of one chunk.
    fn add(&mut self, p: Packed) {
        self.digits += p.field(field::DIGITS);
        self.dots += p.field(field::DOTS);
        self.colons += p.field(field::COLONS);
        self.ats += p.field(field::ATS);
        self.pluses += p.field(field::PLUSES);
        self.dashes += p.field(field::DASHES);
        self.underscores += p.field(field::UNDERSCORES);
        self.capitals += p.field(field::CAPITALS);
        self.lowers += p.field(field::LOWERS);
    }
}

/// Nine counts of at most [`Packed::MAX_BYTES`] in one `u64`, [`Packed::BITS`] bits
/// each: field `k` at bit `k * BITS`. Adding two such words adds every count at once,
/// as long as none overflows its field.
#[derive(Clone, Copy)]
struct Packed(u64);

impl Packed {
    const BITS: u32 = 7;
    /// The most bytes summed into one word: no field can exceed this.
    const MAX_BYTES: usize = (1 << Self::BITS) - 1;

    fn field(self, k: u32) -> usize {
        let mask = (1u64 << Self::BITS) - 1;
        // At most 127: the cast never truncates.
        usize::try_from((self.0 >> (k * Self::BITS)) & mask).unwrap_or(0)
    }
}

/// The fields of [`Packed`]: which class of bytes each counts.
mod field {
    pub(super) const DIGITS: u32 = 0;
    pub(super) const DOTS: u32 = 1;
    pub(super) const COLONS: u32 = 2;
    pub(super) const ATS: u32 = 3;
    pub(super) const PLUSES: u32 = 4;
    pub(super) const DASHES: u32 = 5;
    pub(super) const UNDERSCORES: u32 = 6;
    /// `A`–`Z`.
    pub(super) const CAPITALS: u32 = 7;
    /// `g`–`z`.
    pub(super) const LOWERS: u32 = 8;
}

/// The packed classes of a byte: a 1 in the field of the class it belongs to (each
/// byte is in at most one).
#[expect(
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    reason = "evaluated at compile time, where an index out of bounds fails the build"
)]
static WEIGHTS: [u64; 256] = {
    let mut table = [0; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let k = match c {
            b'0'..=b'9' => Some(field::DIGITS),
            b'.' => Some(field::DOTS),
            b':' => Some(field::COLONS),
            b'@' => Some(field::ATS),
            b'+' => Some(field::PLUSES),
            b'-' => Some(field::DASHES),
            b'_' => Some(field::UNDERSCORES),
            b'A'..=b'Z' => Some(field::CAPITALS),
            b'g'..=b'z' => Some(field::LOWERS),
            _ => None,
        };
        if let Some(k) = k {
            table[b] = 1 << (k * Packed::BITS);
        }
        b += 1;
    }
    table
};

/// The packed classes of `b`.
fn weight(b: u8) -> u64 {
    WEIGHTS.get(usize::from(b)).copied().unwrap_or(0)
}
