//! The built-in recognizers, and the byte-level helpers they share.
//!
//! Each recognizer is a small parser that starts where the [scanner](super::scan) saw a
//! trigger and returns the end (or span) of what it recognized, after checking what can
//! be checked: Luhn for cards, mod-97 for IBANs, the SSA's never-issued ranges for SSNs,
//! `std`'s parsers for IP addresses, the JSON header of a JWT ([`jwt_header`]). None
//! allocates, except the JWT check for a header with nested arrays or objects.
//!
//! - [`numbers`]: cards, SSNs, phone numbers, IPv4 addresses, IBANs;
//! - [`addresses`]: email addresses and IPv6 addresses;
//! - [`secrets`]: private-key PEM blocks, JWTs, API keys, bearer tokens.

pub(super) mod addresses;
mod jwt_header;
pub(super) mod numbers;
pub(super) mod secrets;

/// A built-in recognizer, named in policies by [`Recognizer::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Recognizer {
    /// `name@example.com`, including the userinfo of a URL when it has a dotted host.
    Email,
    /// Payment card numbers (Luhn-checked).
    CreditCard,
    /// US Social Security numbers written `123-45-6789` or `123 45 6789`.
    Ssn,
    /// Phone numbers: `+` and 8–15 digits (E.164, grouped or not), and North American.
    Phone,
    /// International bank account numbers (mod-97 and length checked).
    Iban,
    /// IPv4 and IPv6 addresses.
    IpAddress,
    /// JSON Web Tokens (their header must decode to JSON with `alg`).
    Jwt,
    /// `-----BEGIN … PRIVATE KEY-----` blocks, whole.
    PrivateKey,
    /// API keys of well-known services, by their documented prefixes.
    ApiKey,
    /// The token after `Bearer `.
    BearerToken,
}

impl Recognizer {
    /// Every recognizer, in the order `mask = ["all"]` enables them.
    pub const ALL: [Recognizer; 10] = [
        Recognizer::Email,
        Recognizer::CreditCard,
        Recognizer::Ssn,
        Recognizer::Phone,
        Recognizer::Iban,
        Recognizer::IpAddress,
        Recognizer::Jwt,
        Recognizer::PrivateKey,
        Recognizer::ApiKey,
        Recognizer::BearerToken,
    ];

    /// The name used in policy files, and in the `[name]` a redacted finding becomes.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Recognizer::Email => "email",
            Recognizer::CreditCard => "credit_card",
            Recognizer::Ssn => "ssn",
            Recognizer::Phone => "phone",
            Recognizer::Iban => "iban",
            Recognizer::IpAddress => "ip_address",
            Recognizer::Jwt => "jwt",
            Recognizer::PrivateKey => "private_key",
            Recognizer::ApiKey => "api_key",
            Recognizer::BearerToken => "bearer_token",
        }
    }

    /// The recognizer called `name` in a policy file.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Recognizer> {
        Recognizer::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// A set of recognizers (a bit per [`Recognizer`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct RecognizerSet(u16);

impl RecognizerSet {
    /// The set of `recognizers`.
    pub(super) const fn new(recognizers: &[Recognizer]) -> Self {
        let (mut bits, mut rest) = (0, recognizers);
        while let [r, tail @ ..] = rest {
            bits |= 1 << *r as u8;
            rest = tail;
        }
        RecognizerSet(bits)
    }

    pub(super) fn insert(&mut self, r: Recognizer) {
        self.0 |= 1 << r as u8;
    }

    /// The recognizers paired with `true`, without branches.
    pub(super) fn of(pairs: &[(Recognizer, bool)]) -> RecognizerSet {
        RecognizerSet(
            pairs
                .iter()
                .fold(0, |set, &(r, yes)| set | u16::from(yes) << r as u8),
        )
    }

    /// The recognizers in both sets.
    pub(super) fn and(self, other: RecognizerSet) -> RecognizerSet {
        RecognizerSet(self.0 & other.0)
    }

    /// The recognizers in either set.
    pub(super) fn or(self, other: RecognizerSet) -> RecognizerSet {
        RecognizerSet(self.0 | other.0)
    }

    pub(super) fn contains(self, r: Recognizer) -> bool {
        self.0 & (1 << r as u8) != 0
    }

    pub(super) fn is_empty(self) -> bool {
        self.0 == 0
    }
}

// ---- Byte helpers --------------------------------------------------------------------

/// Byte classes, for loops over bytes: one table lookup per byte rather than a chain
/// of comparisons whose branches a CPU mispredicts on mixed text.
pub(super) mod class {
    /// ASCII letters and digits, `_`, and every byte of a non-ASCII UTF-8 character.
    pub(in super::super) const WORD: u8 = 1;
    pub(in super::super) const DIGIT: u8 = 2;
    /// `+` and `(`, which may start a phone number.
    pub(in super::super) const PHONE_START: u8 = 4;
    pub(in super::super) const COLON: u8 = 8;
}

#[expect(
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    reason = "evaluated at compile time, where an index out of bounds fails the build"
)]
const CLASSES: [u8; 256] = {
    let mut table = [0; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80 {
            table[b] |= class::WORD;
        }
        if c.is_ascii_digit() {
            table[b] |= class::DIGIT;
        }
        if c == b'+' || c == b'(' {
            table[b] |= class::PHONE_START;
        }
        if c == b':' {
            table[b] |= class::COLON;
        }
        b += 1;
    }
    table
};

/// The classes of `b` (a set of [`class`] bits).
pub(super) fn class_of(b: u8) -> u8 {
    CLASSES.get(usize::from(b)).copied().unwrap_or(0)
}

/// Whether `b` may belong to a word: ASCII letters and digits, `_`, and every byte of
/// a non-ASCII character (for loops that skip words; at a boundary, [`word_before`]
/// and [`word_at`] look at the whole character).
pub(super) fn is_word(b: u8) -> bool {
    class_of(b) & class::WORD != 0
}

/// Whether the character that ends at `i` is part of a word: a letter or digit of any
/// script, or `_` ("café1234" holds no number, "€1234" and "№ 1234" do). Bytes that
/// are not UTF-8 are not: a match next to them is masked rather than missed.
#[inline]
pub(super) fn word_before(v: &[u8], i: usize) -> bool {
    let b = before(v, i);
    if b < 0x80 {
        return is_word(b);
    }
    letter_or_digit_before(v, i)
}

/// [`word_before`] at a non-ASCII byte: kept out of line, so the ASCII test inlines
/// into the walks that call it at every number.
#[inline(never)]
fn letter_or_digit_before(v: &[u8], i: usize) -> bool {
    let tail = v.get(i.saturating_sub(4)..i).unwrap_or_default();
    tail.utf8_chunks()
        .last()
        .filter(|chunk| chunk.invalid().is_empty())
        .and_then(|chunk| chunk.valid().chars().next_back())
        .is_some_and(char::is_alphanumeric)
}

/// Whether the character that starts at `i` is part of a word (see [`word_before`]).
#[inline]
pub(super) fn word_at(v: &[u8], i: usize) -> bool {
    let b = byte(v, i);
    if b < 0x80 {
        return is_word(b);
    }
    letter_or_digit_at(v, i)
}

/// [`word_at`] at a non-ASCII byte (see [`letter_or_digit_before`]).
#[inline(never)]
fn letter_or_digit_at(v: &[u8], i: usize) -> bool {
    let head = v.get(i..v.len().min(i + 4)).unwrap_or_default();
    head.utf8_chunks()
        .next()
        .and_then(|chunk| chunk.valid().chars().next())
        .is_some_and(char::is_alphanumeric)
}

/// The byte at `i`, or 0 outside the value (0 is neither a word, a digit nor a
/// separator, so the edges of a value behave like a space).
pub(super) fn byte(v: &[u8], i: usize) -> u8 {
    v.get(i).copied().unwrap_or(0)
}

/// The byte before `i` (0 at the start).
pub(super) fn before(v: &[u8], i: usize) -> u8 {
    byte(v, i.wrapping_sub(1))
}

/// Whether a number may start at `i`: it is not glued to a word ("x4111…", "ORD-2024",
/// "v1.2") nor the continuation of a number ("2024-01-15" has no number at "01").
pub(super) fn starts_number(v: &[u8], i: usize) -> bool {
    let p = before(v, i);
    !(word_before(v, i) || (matches!(p, b'.' | b'-') && word_before(v, i.wrapping_sub(1))))
}

/// Whether a number may end at `end` (exclusive): what follows is not a word nor the
/// rest of the number (`.5`, `-89`). Unlike the start, punctuation then a letter is
/// fine: that is how sentences go on ("call 555-123-4567.Thanks").
pub(super) fn ends_number(v: &[u8], end: usize) -> bool {
    let n = byte(v, end);
    !(word_at(v, end) || (matches!(n, b'.' | b'-') && byte(v, end + 1).is_ascii_digit()))
}

/// A read position in a value, for the recognizers' little parsers.
pub(super) struct Cursor<'a> {
    v: &'a [u8],
    pub(super) pos: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(v: &'a [u8], pos: usize) -> Self {
        Self { v, pos }
    }

    pub(super) fn peek(&self) -> u8 {
        byte(self.v, self.pos)
    }

    pub(super) fn peek_at(&self, ahead: usize) -> u8 {
        byte(self.v, self.pos + ahead)
    }

    /// Consumes `b` if it is next.
    pub(super) fn eat(&mut self, b: u8) -> bool {
        let next = self.peek() == b && b != 0;
        self.pos += usize::from(next);
        next
    }

    /// Consumes and returns the next byte if it is one of `set`.
    pub(super) fn eat_one_of(&mut self, set: &[u8]) -> Option<u8> {
        let b = self.peek();
        (b != 0 && set.contains(&b)).then(|| {
            self.pos += 1;
            b
        })
    }

    /// Consumes the longest run of bytes that satisfy `f`.
    pub(super) fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.pos;
        let rest = self.v.get(start..).unwrap_or_default();
        self.pos += rest.iter().take_while(|&&b| f(b)).count();
        self.v.get(start..self.pos).unwrap_or_default()
    }

    /// Consumes a run of ASCII digits (possibly empty).
    pub(super) fn digits(&mut self) -> &'a [u8] {
        self.take_while(|b| b.is_ascii_digit())
    }

    /// Consumes a run of exactly `len` digits (not followed by another digit) and
    /// returns its value.
    pub(super) fn number(&mut self, len: usize) -> Option<u32> {
        let run = self.digits();
        (run.len() == len).then(|| {
            run.iter()
                .fold(0, |n, d| n * 10 + u32::from(d.wrapping_sub(b'0')))
        })
    }
}
