//! Finding the built-in recognizers' matches in a value: one prefilter pass that rules
//! most values out, then recognizers only where a trigger is.
//!
//! 1. **Prefilter** ([`Scanner::prefilter`]): one pass over the bytes counts a few
//!    classes of characters (digits, dots, colons, `@`, `+`, `-`, `_`, capitals, the
//!    lower-case letters g–z) with a table lookup and an addition per byte. Each
//!    recognizer needs some minimum of these (a card 13 digits, a JWT a capital and two
//!    dots, a private key ten dashes…), so the counts say which recognizers may match
//!    at all: for most values none, and the value costs that one pass.
//! 2. **Recognizers at triggers** ([`Scanner::scan`]), for those that may match: each
//!    `@` is tried as an email; a walk visits the places a number (or a `:`) may start
//!    and tries there the number recognizers its first group of digits allows; one
//!    aho-corasick search (SIMD) finds the literals that start secrets (`-----BEGIN `,
//!    `eyJ`, `AKIA`, `ghp_`, `Bearer `…), each tried as the secret it starts.
//!
//! Matches may overlap; the caller masks their union.

use super::{
    MaskError,
    recognize::{
        Recognizer, RecognizerSet, addresses, before, byte, class, class_of, is_word, numbers,
        secrets::{self, Group, Literal},
        starts_number, word_at, word_before,
    },
    shapes,
};
use aho_corasick::{AhoCorasick, MatchKind, packed};
use std::{ops::Range, sync::OnceLock};

/// The built-in recognizers a [`Masker`](super::Masker) runs, compiled.
#[derive(Debug)]
pub(super) struct Scanner {
    enabled: RecognizerSet,
    /// The groups of literals of the enabled recognizers ([`Group::bit`]s).
    groups: usize,
    /// The literals that start secrets, in one automaton per set of [`Group`]s (indexed
    /// by the set's bits): a value is searched only for the literals its counts allow.
    /// A sentence with a digit may hold a bearer token, and one with two capitals a
    /// Google API key, but neither an AWS key nor a GitHub token, and a few patterns
    /// cost far less to look for in prose than thirty. Shared by every scanner (see
    /// [`automata`]); empty when no recognizer is enabled.
    literals: &'static [Option<Literals>],
}

/// The literals that start the secrets of some groups, in one automaton.
#[derive(Debug)]
struct Literals {
    ac: AhoCorasick,
    /// The same search by SIMD alone (Teddy), where the CPU has it: for the few
    /// literals of a set, it costs half of what the automaton costs, which confirms
    /// each candidate of the same SIMD prefilter. It needs a value of some length.
    packed: Option<packed::Searcher>,
    /// What each pattern starts, by pattern index.
    kinds: Vec<Literal>,
    /// The shortest secret any of them starts: shorter values (most column values)
    /// skip the search.
    min_len: usize,
}

/// What the prefilter says a value may hold.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Possible {
    /// The recognizers that may match.
    set: RecognizerSet,
    /// The groups of literals that may start a secret ([`Group::bit`]s).
    groups: usize,
    /// Whether an IPv6 address may be there.
    ipv6: bool,
}

impl Possible {
    /// Whether nothing may match: the value needs no scan.
    pub(super) fn is_empty(self) -> bool {
        self.set.is_empty()
    }
}

/// A recognizer of numbers: where the number starting at an index ends, if one does.
type RecognizeNumber = fn(&[u8], usize) -> Option<usize>;

impl Scanner {
    pub(super) fn new(enabled: RecognizerSet) -> Result<Self, MaskError> {
        let groups = Group::ALL
            .iter()
            .filter(|g| enabled.contains(g.recognizer()))
            .fold(0, |bits, g| bits | g.bit());
        Ok(Self {
            enabled,
            groups,
            literals: automata()?,
        })
    }

    /// A scanner that finds nothing.
    pub(super) fn empty() -> Self {
        Self {
            enabled: RecognizerSet::default(),
            groups: 0,
            literals: &[],
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.enabled.is_empty()
    }

    /// The recognizers that may match `v`, from one pass over it.
    #[inline]
    pub(super) fn prefilter(&self, v: &[u8]) -> Possible {
        if self.enabled.is_empty() {
            return Possible::default();
        }
        let t = Triggers::count(v);
        if t.rule_out_all(v.len()) {
            return Possible::default();
        }
        t.possible(self, v)
    }

    /// Calls `found` with each match in `v` of the recognizers the prefilter said are
    /// `possible` there, in no particular order.
    pub(super) fn scan(
        &self,
        v: &[u8],
        possible: Possible,
        found: &mut impl FnMut(Recognizer, Range<usize>),
    ) {
        let set = possible.set;
        if set.contains(Recognizer::Email) {
            for (at, _) in v.iter().enumerate().filter(|(_, b)| **b == b'@') {
                if let Some(range) = addresses::email(v, at) {
                    found(Recognizer::Email, range);
                }
            }
        }
        if !set.and(NUMBERS).is_empty() {
            if possible.ipv6 {
                walk(v, set, true, found);
            } else {
                match shapes::number_starts(v, set) {
                    None => walk(v, set, false, found),
                    Some(starts) => walk_starts(v, starts, set, found),
                }
            }
        }
        let literals = self.literals.get(possible.groups).and_then(Option::as_ref);
        if let Some(lit) = literals.filter(|l| v.len() >= l.min_len) {
            lit.each(v, |pattern, start, len| {
                let Some(&literal) = lit.kinds.get(pattern) else {
                    return;
                };
                if let Some(range) = literal.recognize(v, start, len) {
                    found(literal.recognizer(), range);
                }
            });
        }
    }
}

/// The automaton of the literals of each set of groups, by the set's bits ([`Group::bit`]s;
/// `None` for the empty set).
///
/// They depend on nothing but the set, so they are built once per process, when the
/// first scanner is, and shared by all.
fn automata() -> Result<&'static [Option<Literals>], MaskError> {
    static AUTOMATA: OnceLock<Result<Vec<Option<Literals>>, String>> = OnceLock::new();
    AUTOMATA
        .get_or_init(|| (0..1 << Group::ALL.len()).map(Literals::new).collect())
        .as_deref()
        .map_err(|reason| MaskError::Internal {
            what: "the secret prefixes",
            reason: reason.clone(),
        })
}

impl Literals {
    /// The automaton of the literals of the groups in `set` (`None` if it has none).
    ///
    /// Searching for the literals of some groups finds what searching for them all and
    /// dropping the others would: no literal can hide one of another group (start
    /// inside it), except the `-` that ends some API key prefixes, and their group is
    /// always possible where such a prefix is.
    fn new(set: usize) -> Result<Option<Self>, String> {
        let (patterns, kinds): (Vec<_>, Vec<_>) = Group::ALL
            .into_iter()
            .filter(|g| set & g.bit() != 0)
            .flat_map(secrets::literals)
            .unzip();
        let Some(min_len) = kinds.iter().map(|k| k.min_len()).min() else {
            return Ok(None);
        };
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostFirst)
            .build(&patterns)
            .map_err(|e| format!("set {set}: {e}"))?;
        let packed = packed::Config::new()
            .match_kind(packed::MatchKind::LeftmostFirst)
            .builder()
            .extend(&patterns)
            .build();
        Ok(Some(Literals {
            ac,
            packed,
            kinds,
            min_len,
        }))
    }

    /// Calls `f` with the pattern index, start and length of each literal in `v`, from
    /// left to right, leftmost first (where several start at one place, the first
    /// listed), without overlaps.
    fn each(&self, v: &[u8], mut f: impl FnMut(usize, usize, usize)) {
        match &self.packed {
            Some(packed) if v.len() >= packed.minimum_len() => {
                for m in packed.find_iter(v) {
                    f(m.pattern().as_usize(), m.start(), m.len());
                }
            }
            _ => {
                for m in self.ac.find_iter(v) {
                    f(m.pattern().as_usize(), m.start(), m.len());
                }
            }
        }
    }
}

/// The recognizers of numbers, found by [`walk`].
const NUMBERS: RecognizerSet = RecognizerSet::new(&[
    Recognizer::CreditCard,
    Recognizer::Ssn,
    Recognizer::Phone,
    Recognizer::Iban,
    Recognizer::IpAddress,
]);

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
        i = visit(v, at, possible, found);
    }
}

/// [`walk`] where the places a number may start are known (bit `i` of `starts` for
/// byte `i`; see [`shapes::number_starts`]): visits those only.
fn walk_starts(
    v: &[u8],
    mut starts: u64,
    possible: RecognizerSet,
    found: &mut impl FnMut(Recognizer, Range<usize>),
) {
    while starts != 0 {
        let at = starts.trailing_zeros() as usize;
        let next = visit(v, at, possible, found);
        // The places before `next` are passed over, as the walk would.
        starts &= u64::MAX
            .checked_shl(next.try_into().unwrap_or(u32::MAX))
            .unwrap_or(0);
    }
}

/// Tries the recognizers of `possible` at `at` (a digit, `+`, `(`, or `:` when an IPv6
/// address may be there); returns where to look next, past `at`.
fn visit(
    v: &[u8],
    at: usize,
    possible: RecognizerSet,
    found: &mut impl FnMut(Recognizer, Range<usize>),
) -> usize {
    match byte(v, at) {
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
    .max(at + 1)
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
    /// What of `scanner`'s recognizers may match `v`, which has these counts: each
    /// needs at least the characters of its shortest match (for secrets, those of the
    /// [`Group`]s of literals that start them).
    fn possible(&self, scanner: &Scanner, v: &[u8]) -> Possible {
        let t = self;
        let ipv6 = scanner.enabled.contains(Recognizer::IpAddress) && t.may_hold_ipv6(v);
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
        ];
        let groups = [
            (Group::PemBegin, t.dashes >= 10),
            (Group::Jwt, t.capitals >= 1 && t.dots >= 2),
            (
                Group::Bearer,
                t.digits >= 1 && (t.lowers >= 2 || t.capitals >= 6),
            ),
            (Group::KeyWithUnderscore, t.underscores >= 1),
            (Group::KeyWithDash, t.dashes >= 1 && t.lowers >= 3),
            (
                Group::AwsKey,
                t.capitals >= 4 && t.capitals + t.digits >= 20,
            ),
            (Group::GoogleKey, t.capitals >= 2 && v.len() >= 39),
        ];
        let groups = groups
            .iter()
            .fold(0, |bits, &(g, may)| bits | if may { g.bit() } else { 0 })
            & scanner.groups;
        let secrets = Group::ALL.map(|g| (g.recognizer(), groups & g.bit() != 0));
        Possible {
            set: RecognizerSet::of(&needs)
                .and(scanner.enabled)
                .or(RecognizerSet::of(&secrets)),
            groups,
            ipv6,
        }
    }

    /// Whether these counts rule out every recognizer at a glance, as they do for most
    /// prose, names, statuses, ids and amounts, in a value `len` bytes long. Cheaper
    /// than weighing each recognizer's needs in [`Triggers::possible`], which agrees
    /// (a test checks it).
    ///
    /// - No digit (which IP addresses need too), `@`, `_` nor `-`: only a JWT (a
    ///   capital and two dots), an AWS key id (20 capitals) or a Google API key (two
    ///   capitals in 39 bytes) may be there.
    /// - Digits, dots and colons alone: fewer than 8 digits make no number but an IPv4
    ///   address (three dots) or an IPv6 one (two colons), and without two letters g–z
    ///   nor a capital, no secret.
    fn rule_out_all(&self, len: usize) -> bool {
        let t = self;
        let no_digit = t.digits + t.ats + t.underscores + t.dashes == 0
            && (t.capitals == 0 || (t.dots < 2 && t.capitals < 20 && (t.capitals < 2 || len < 39)));
        let few_digits = t.ats + t.underscores + t.dashes + t.capitals == 0
            && t.digits < 8
            && t.dots < 3
            && t.colons < 2
            && t.lowers < 2;
        no_digit || few_digits
    }

    /// Whether `v`, with these counts, may hold an IPv6 address: it has `::` or
    /// seven colons (a time has two).
    fn may_hold_ipv6(&self, v: &[u8]) -> bool {
        self.colons >= 7 || (self.colons >= 2 && has_double_colon(v))
    }

    /// One pass over the value, a table lookup and an addition per byte: each byte's
    /// entry in [`WEIGHTS`] holds a 1 in the field of each class it belongs to, so the
    /// sum holds all nine counts at once (see [`Packed`]). Values are short (most
    /// column values are under 64 bytes), so this beats SIMD counting, whose cost is in
    /// summing its lanes at the end.
    ///
    /// Inlined into the prefilter, so that the counts stay in registers; a value
    /// longer than one word can count is counted out of line.
    #[expect(
        clippy::inline_always,
        reason = "measured: left to itself, the compiler returns the counts through memory"
    )]
    #[inline(always)]
    fn count(v: &[u8]) -> Self {
        if v.len() <= Packed::MAX_BYTES {
            let mut t = Triggers::default();
            t.add(Packed::sum(v));
            t
        } else {
            Self::count_long(v)
        }
    }

    /// [`Triggers::count`] of a value longer than [`Packed::MAX_BYTES`].
    #[inline(never)]
    fn count_long(v: &[u8]) -> Self {
        let mut t = Triggers::default();
        for chunk in v.chunks(Packed::MAX_BYTES) {
            t.add(Packed::sum(chunk));
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

/// Whether `v` holds `::`. Eight bytes at a time, without a branch per byte: a value
/// with colons is most often a time, whose two colons are apart.
fn has_double_colon(v: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // The high bit of each byte of `word` that is a colon: the bytes that XOR to zero
    // (the low seven bits added to 0x7F carry into the high bit unless all zero).
    let colons = |word: [u8; 8]| {
        let x = u64::from_le_bytes(word) ^ (ONES * u64::from(b':'));
        !(((x & !HIGHS) + !HIGHS) | x) & HIGHS
    };
    let (words, tail) = v.as_chunks::<8>();
    let mut last = [0; 8];
    for (slot, &b) in last.iter_mut().zip(tail) {
        *slot = b;
    }
    // The high bit of the byte before the word's first, if that was a colon.
    let mut before = 0;
    for &word in words.iter().chain([&last]) {
        let c = colons(word);
        if c & ((c >> 8) | before) != 0 {
            return true;
        }
        before = c >> 56;
    }
    false
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

    /// The counts of `chunk`, at most [`Packed::MAX_BYTES`] long.
    #[expect(clippy::inline_always, reason = "the loop of `Triggers::count`")]
    #[inline(always)]
    fn sum(chunk: &[u8]) -> Packed {
        // Two sums, so the additions of neighbouring bytes do not wait on each other.
        let (pairs, rest) = chunk.as_chunks::<2>();
        let (a, b) = pairs
            .iter()
            .fold((0, 0), |(a, b), &[x, y]| (a + weight(x), b + weight(y)));
        Packed(rest.iter().fold(a + b, |sum, &x| sum + weight(x)))
    }

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

#[cfg(test)]
#[expect(clippy::indexing_slicing, clippy::panic, reason = "tests")]
mod tests {
    use super::*;

    /// Whatever the counts, what [`Triggers::rule_out_all`] rules out,
    /// [`Triggers::possible`] finds impossible too.
    #[test]
    fn ruling_out_at_a_glance_agrees_with_each_recognizers_needs() {
        let all = RecognizerSet::new(&Recognizer::ALL);
        let scanner = Scanner::new(all).unwrap_or_else(|e| panic!("{e}"));
        let (mut x, mut ruled_out) = (0x9E37_79B9_7F4A_7C15_u64, 0);
        for _ in 0..1_000_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Each count 0 (a quarter of the time), in 0..=3, or in 0..=31 (past every
            // threshold).
            let mut bits = x;
            let mut next = || {
                let n = usize::try_from((bits >> 2) & 31).unwrap_or(0);
                let n = match bits & 3 {
                    0 => 0,
                    1 => n & 3,
                    _ => n,
                };
                bits = bits.rotate_right(7);
                n
            };
            let t = Triggers {
                digits: next(),
                dots: next(),
                colons: next(),
                ats: next(),
                pluses: next(),
                dashes: next(),
                underscores: next(),
                capitals: next(),
                lowers: next(),
            };
            let v = vec![b' '; next() * 2];
            if t.rule_out_all(v.len()) {
                ruled_out += 1;
                // `::` is not counted: pretend it is there when it may be. Without a
                // digit, colons do not matter: the IPv6 recognizer wants one.
                let colons = match t.colons {
                    _ if t.digits == 0 => 0,
                    0 | 1 => t.colons,
                    _ => 7,
                };
                let possible = Triggers { colons, ..t };
                assert!(possible.possible(&scanner, &v).is_empty(), "{t:?}");
            }
        }
        assert!(ruled_out > 1_000, "{ruled_out}");
    }

    #[test]
    fn double_colons_anywhere_in_a_word() {
        for at in 1..20 {
            let mut v = vec![b'a'; 20];
            v[at - 1] = b':';
            v[at] = b':';
            assert!(has_double_colon(&v), "{at}");
            v[at - 1] = b'1';
            assert!(!has_double_colon(&v), "{at}");
        }
        assert!(!has_double_colon(b"2024-04-05 15:13:12.953+00"));
        assert!(!has_double_colon(b":"));
        assert!(has_double_colon(b"fe80::1"));
        assert!(!has_double_colon("é:é:é:".as_bytes()));
    }
}
