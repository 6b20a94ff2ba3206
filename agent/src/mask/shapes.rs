//! Where in a short value the number walk could find anything, asked of all its bytes
//! at once.
//!
//! The walk (in `scan`) stops at every group of digits and decides, from the group's
//! length, what surrounds it and what follows, which number recognizers to try there.
//! On a timestamp or a UUID it stops a dozen times and tries nothing, and each stop
//! costs a few mispredicted branches. Here the same conditions, stripped down to what
//! can be read off the neighbouring bytes, are computed for every position at once
//! with bit masks (bit `i` for byte `i`): when no position meets them, the walk is
//! skipped, and when some do, the walk stops only there and decides.
//!
//! The conditions here are implied by the walk's own (they leave out its finer
//! checks: a card's first digit and checksum, whether the number ends at a word), so
//! a position left out is one where the walk finds nothing. Nor does leaving out a
//! position change where the walk stops next: past a group of digits, or past the rest
//! of a word, no position meets the conditions. Values longer than 64 bytes, and
//! values with non-ASCII bytes (whose word boundaries depend on characters), are
//! walked at every group of digits.

use super::recognize::{Recognizer, RecognizerSet};

/// The classes of bytes the conditions read, one bit each in [`CODES`].
mod class {
    pub(super) const DIGIT: u8 = 1;
    /// What [`is_word`](crate::mask::recognize::is_word) accepts, for ASCII bytes.
    pub(super) const WORD: u8 = 1 << 1;
    pub(super) const UPPER: u8 = 1 << 2;
    /// `+` and `(`, which may start a phone number.
    pub(super) const PHONE_START: u8 = 1 << 3;
    pub(super) const DASH: u8 = 1 << 4;
    pub(super) const SPACE: u8 = 1 << 5;
    pub(super) const DOT: u8 = 1 << 6;
    /// `1`, the North American trunk prefix.
    pub(super) const ONE: u8 = 1 << 7;
}

#[expect(
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    reason = "evaluated at compile time, where an index out of bounds fails the build"
)]
static CODES: [u8; 256] = {
    let mut table = [0; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let mut code = 0;
        if c.is_ascii_digit() {
            code |= class::DIGIT;
        }
        if c.is_ascii_alphanumeric() || c == b'_' {
            code |= class::WORD;
        }
        if c.is_ascii_uppercase() {
            code |= class::UPPER;
        }
        if c == b'+' || c == b'(' {
            code |= class::PHONE_START;
        }
        if c == b'-' {
            code |= class::DASH;
        }
        if c == b' ' {
            code |= class::SPACE;
        }
        if c == b'.' {
            code |= class::DOT;
        }
        if c == b'1' {
            code |= class::ONE;
        }
        table[b] = code;
        b += 1;
    }
    table
};

/// Where in `v` the walk could find a number of the `possible` recognizers (an IPv6
/// address aside: the caller walks everywhere when one may be there): bit `i` for a
/// number that may start at byte `i`. `None` when `v` is too long or not ASCII.
pub(super) fn number_starts(v: &[u8], possible: RecognizerSet) -> Option<u64> {
    let m = Masks::of(v)?;
    // Bit i of `next(x, k)` is bit i + k of `x`; of `prev(x, k)`, bit i - k.
    let next = |x: u64, k: u32| x >> k;
    let prev = |x: u64, k: u32| x << k;
    // Runs of at least `k` digits start at the bits of `at_k`, built by doubling (a
    // run of 8 is a run of 4 and another 4 further on); `exactly(at_k, k)` also ends
    // them there (the digits from bit i on are exactly k).
    let at1 = m.digit;
    let at2 = at1 & next(at1, 1);
    let at3 = at2 & next(at1, 2);
    let at4 = at2 & next(at2, 2);
    let at6 = at4 & next(at2, 4);
    let at8 = at4 & next(at4, 4);
    let exactly = |at_k: u64, k: u32| at_k & !next(m.digit, k);
    let (one, two, three, four) = (
        exactly(at1, 1),
        exactly(at2, 2),
        exactly(at3, 3),
        exactly(at4, 4),
    );
    // `starts_number`: not after a word, nor after `.` or `-` after a word.
    let start = !prev(m.word, 1) & !(prev(m.dash | m.dot, 1) & prev(m.word, 2));
    let dash_or_space = m.dash | m.space;
    let separator = dash_or_space | m.dot;

    let mut may = 0;
    if possible.contains(Recognizer::CreditCard) {
        // 13–19 digits in a row (8 + 4 + 1, not 8 + 8 + 4), or 4 and a separator and
        // 4 or 6 more.
        let long = (at8 & next(at4, 8) & next(at1, 12)) & !(at8 & next(at8, 8) & next(at4, 16));
        let grouped = four & next(dash_or_space, 4) & next(four | exactly(at6, 6), 5);
        may |= start & (long | grouped);
    }
    if possible.contains(Recognizer::Ssn) {
        may |= start & three & next(dash_or_space, 3);
    }
    if possible.contains(Recognizer::Phone) {
        let trunk = one & m.one & next(separator, 1);
        may |= start & ((three & next(separator, 3)) | trunk);
        // `+` or `(` not after a word, and a digit.
        may |= m.phone_start & !prev(m.word, 1) & next(m.digit, 1);
    }
    if possible.contains(Recognizer::IpAddress) {
        let octet = (one & next(m.dot, 1)) | (two & next(m.dot, 2)) | (three & next(m.dot, 3));
        may |= start & octet;
    }
    if possible.contains(Recognizer::Iban) {
        // Check digits after a two-capital country code that is not after a word.
        may |= m.digit & prev(m.upper, 1) & prev(m.upper, 2) & !prev(m.word, 3);
    }
    Some(may)
}

/// The class masks of a value of at most 64 ASCII bytes: bit `i` of each for byte `i`.
struct Masks {
    digit: u64,
    word: u64,
    upper: u64,
    phone_start: u64,
    dash: u64,
    space: u64,
    dot: u64,
    one: u64,
}

impl Masks {
    /// `None` if `v` is longer than 64 bytes or not ASCII.
    fn of(v: &[u8]) -> Option<Masks> {
        if v.len() > 64 || !v.is_ascii() {
            return None;
        }
        // Per class, its mask; built eight bytes at a time: the eight bytes' codes in
        // one word, transposed so that byte `c` holds the bits of class `c` (a row
        // per eight bytes); then the rows' bytes transposed, so that word `c` holds
        // the whole mask of class `c`.
        let mut rows = [0u64; 8];
        let (words, tail) = v.as_chunks::<8>();
        let mut tail_word = [0; 8];
        for (slot, &b) in tail_word.iter_mut().zip(tail) {
            *slot = b;
        }
        for (row, word) in rows.iter_mut().zip(words.iter().chain([&tail_word])) {
            // A loop rather than `word.map(…)`, which the compiler leaves out of line.
            let mut codes = 0;
            for (k, &b) in word.iter().enumerate() {
                codes |= u64::from(CODES.get(usize::from(b)).copied().unwrap_or(0)) << (8 * k);
            }
            *row = transpose(codes);
        }
        let masks = transpose_bytes(rows);
        let [digit, word, upper, phone_start, dash, space, dot, one] = masks;
        Some(Masks {
            digit,
            word,
            upper,
            phone_start,
            dash,
            space,
            dot,
            one,
        })
    }
}

/// Transposes the 8×8 bit matrix in `x` whose row `r` is byte `r` (bit `c` of the
/// byte is column `c`): afterwards bit `c` of byte `r` is what bit `r` of byte `c`
/// was. Three rounds swap 1×1, then 2×2, then 4×4 blocks across the diagonal.
fn transpose(mut x: u64) -> u64 {
    let t = (x ^ (x >> 7)) & 0x00AA_00AA_00AA_00AA;
    x ^= t ^ (t << 7);
    let t = (x ^ (x >> 14)) & 0x0000_CCCC_0000_CCCC;
    x ^= t ^ (t << 14);
    let t = (x ^ (x >> 28)) & 0x0000_0000_F0F0_F0F0;
    x ^ t ^ (t << 28)
}

/// Transposes the 8×8 byte matrix whose row `r` is word `r` (byte `c` of the word is
/// column `c`): afterwards byte `c` of word `r` is what byte `r` of word `c` was.
/// Three rounds swap 1×1, then 2×2, then 4×4 blocks of bytes across the diagonal.
fn transpose_bytes(mut m: [u64; 8]) -> [u64; 8] {
    for (shift, mask, pairs) in [
        (8, 0x00FF_00FF_00FF_00FF, [(0, 1), (2, 3), (4, 5), (6, 7)]),
        (16, 0x0000_FFFF_0000_FFFF, [(0, 2), (1, 3), (4, 6), (5, 7)]),
        (32, 0x0000_0000_FFFF_FFFF, [(0, 4), (1, 5), (2, 6), (3, 7)]),
    ] {
        for (a, b) in pairs {
            let (Some(&x), Some(&y)) = (m.get(a), m.get(b)) else {
                continue;
            };
            // Row `a` keeps its low columns and takes `b`'s low columns as its high
            // ones; row `b` takes `a`'s high columns as its low ones.
            let t = ((x >> shift) ^ y) & mask;
            if let Some(slot) = m.get_mut(a) {
                *slot = x ^ (t << shift);
            }
            if let Some(slot) = m.get_mut(b) {
                *slot = y ^ t;
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bit(x: u64, i: usize) -> bool {
        x >> i & 1 == 1
    }

    #[test]
    fn transposes() {
        let mut x = 0x0123_4567_89AB_CDEFu64;
        for _ in 0..50 {
            let t = transpose(x);
            for r in 0..8 {
                for c in 0..8 {
                    assert_eq!(bit(t, 8 * r + c), bit(x, 8 * c + r), "{x:#x} {r} {c}");
                }
            }
            x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
        }
    }

    #[test]
    fn transposes_bytes() {
        // Byte `c` of row `r` is 16 r + c.
        let m: [u64; 8] =
            std::array::from_fn(|r| 0x0706_0504_0302_0100 + 0x1010_1010_1010_1010 * r as u64);
        let byte = |x: u64, i: usize| x.to_le_bytes().get(i).copied();
        let t = transpose_bytes(m);
        for (r, &row) in t.iter().enumerate() {
            for (c, &column) in m.iter().enumerate() {
                assert_eq!(byte(row, c), byte(column, r), "{r} {c}");
            }
        }
    }

    #[test]
    fn masks_hold_each_byte_class() {
        let v = b"+1 (555) 123-4567.x_Y";
        let m = Masks::of(v).unwrap_or_else(|| unreachable!());
        for (i, &b) in v.iter().enumerate() {
            assert_eq!(bit(m.digit, i), b.is_ascii_digit(), "{i}");
            assert_eq!(bit(m.word, i), super::super::recognize::is_word(b), "{i}");
            assert_eq!(bit(m.upper, i), b.is_ascii_uppercase(), "{i}");
            assert_eq!(bit(m.phone_start, i), b == b'+' || b == b'(', "{i}");
            assert_eq!(bit(m.dash, i), b == b'-', "{i}");
            assert_eq!(bit(m.space, i), b == b' ', "{i}");
            assert_eq!(bit(m.dot, i), b == b'.', "{i}");
            assert_eq!(bit(m.one, i), b == b'1', "{i}");
        }
        assert_eq!(m.digit >> v.len(), 0);
        assert!(Masks::of(&[b'1'; 65]).is_none());
        assert!(Masks::of("café 1234".as_bytes()).is_none());
        assert!(Masks::of(&[b'7'; 64]).is_some_and(|m| m.digit == u64::MAX));
    }

    #[test]
    fn dates_times_and_ids_need_no_walk() {
        // All but IP addresses, which the counts rule out first (an IPv4 address
        // needs three dots): "12.953" would pass for the start of one.
        let all = RecognizerSet::of(&Recognizer::ALL.map(|r| (r, r != Recognizer::IpAddress)));
        for clean in [
            "2024-04-05 15:13:12.953+00",
            "86f1be4f-2346-4aac-a3a4-a30dd47303f1",
            "2024-01-15",
            "12:34:56",
            "ORD-2024-0042",
            "v1.2.3",
        ] {
            assert_eq!(number_starts(clean.as_bytes(), all), Some(0), "{clean}");
        }
        for (pii, start) in [
            ("4111 1111 1111 1111", 0),
            ("(555) 123-4567", 0),
            ("+44 20 7946 0958", 0),
            ("call 555-123-4567", 5),
            ("DE89 3704", 2),
        ] {
            let starts = number_starts(pii.as_bytes(), all);
            assert!(starts.is_some_and(|s| bit(s, start)), "{pii}: {starts:?}");
        }
    }
}
