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
use prefilter::Triggers;
use std::{ops::Range, sync::OnceLock};

mod prefilter;

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
