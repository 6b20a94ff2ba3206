//! The prefilter's one pass: nine counts of trigger characters per value (a table
//! lookup and an addition per byte, eight counts packed in one `u64`), and from
//! them which recognizers may match at all.

use super::{Possible, Scanner};
use crate::mask::recognize::{Recognizer, RecognizerSet, secrets::Group};

/// What the prefilter counts in a value.
#[derive(Debug, Default)]
pub(super) struct Triggers {
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
    #[inline]
    pub(super) fn possible(&self, scanner: &Scanner, v: &[u8]) -> Possible {
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
    #[inline]
    pub(super) fn rule_out_all(&self, len: usize) -> bool {
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
    pub(super) fn count(v: &[u8]) -> Self {
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
