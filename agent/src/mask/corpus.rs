//! A generated, labelled corpus for measuring the recognizers: positives (valid
//! instances of each kind, in varied formats and contexts, with their spans) and near
//! misses (things that look alike but are not: Luhn-invalid numbers, never-issued
//! SSNs, dates, order numbers, bad IBAN checksums, JWT look-alikes…).
//!
//! Deterministic: a xorshift generator with a fixed seed.

#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    clippy::too_many_lines,
    reason = "test corpus: small numbers, known-good slices, one long table of near misses"
)]

use super::Recognizer;
use std::{
    fmt::Write as _,
    net::{Ipv4Addr, Ipv6Addr},
    ops::Range,
};

/// A xorshift64* generator.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(super) fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }

    pub(super) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    pub(super) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub(super) fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    pub(super) fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + (self.next() % 10) as u8))
            .collect()
    }

    pub(super) fn string_of(&mut self, set: &[u8], n: usize) -> String {
        (0..n).map(|_| char::from(*self.pick(set))).collect()
    }
}

const UPPER_ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const BASE64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A text and the spans in it that must be masked.
pub(super) struct Sample {
    pub(super) text: String,
    pub(super) spans: Vec<(Recognizer, Range<usize>)>,
}

/// Where generated values are put: a `{}` is replaced by the value.
const CONTEXTS: &[&str] = &[
    "{}",
    "Contact: {} — thanks",
    "id={};",
    "\"{}\"",
    "see ({}) above",
    "{}.",
    "a, {}, b",
    "line one\n{}\nline two",
    "\t{}\t",
    "Ünïcödé ✓ {} ✓",
];

fn in_context(rng: &mut Rng, kind: Recognizer, value: &str) -> Sample {
    let context = *rng.pick(CONTEXTS);
    let (before, after) = context.split_once("{}").unwrap_or(("", ""));
    let start = before.len();
    Sample {
        text: format!("{before}{value}{after}"),
        spans: vec![(kind, start..start + value.len())],
    }
}

/// `count` positives of each recognizer.
pub(super) fn positives(rng: &mut Rng, count: usize) -> Vec<Sample> {
    let mut out = Vec::new();
    for kind in Recognizer::ALL {
        for _ in 0..count {
            // The recognizer masks the token after "Bearer ", not the word.
            let sample = if kind == Recognizer::BearerToken {
                let token = bearer_token(rng);
                let text = format!("Authorization: Bearer {token}");
                let start = text.len() - token.len();
                Sample {
                    spans: vec![(kind, start..text.len())],
                    text,
                }
            } else {
                let value = positive(rng, kind);
                in_context(rng, kind, &value)
            };
            out.push(sample);
        }
    }
    out
}

fn positive(rng: &mut Rng, kind: Recognizer) -> String {
    match kind {
        Recognizer::Email => email(rng),
        Recognizer::CreditCard => card(rng, true),
        Recognizer::Ssn => ssn(rng),
        Recognizer::Phone => phone(rng),
        Recognizer::Iban => iban(rng, true),
        Recognizer::IpAddress => ip(rng),
        Recognizer::Jwt => jwt(rng, r#"{"alg":"HS256","typ":"JWT"}"#),
        Recognizer::PrivateKey => private_key(rng, "PRIVATE KEY"),
        Recognizer::ApiKey => api_key(rng),
        Recognizer::BearerToken => bearer_token(rng),
    }
}

const FIRST: &[&str] = &[
    "alice", "bob", "carol", "dave", "Eve", "frank", "grace", "heidi", "ivan", "judy", "zoë",
];
const LAST: &[&str] = &[
    "smith", "jones", "Nguyen", "garcia", "müller", "o-brien", "li", "kowalski",
];
const DOMAINS: &[&str] = &[
    "example.com",
    "mail.example.org",
    "corp.example.co.uk",
    "exämple.de",
    "x.io",
    "sub.domain.example.net",
];

fn email(rng: &mut Rng) -> String {
    let (first, last) = (*rng.pick(FIRST), *rng.pick(LAST));
    let local = match rng.below(5) {
        0 => format!("{first}.{last}"),
        1 => format!("{first}{}", rng.digits(2)),
        2 => format!("{first}_{last}+{}", rng.pick(&["news", "tag", "x1"])),
        3 => first[..1].to_owned(),
        _ => format!("{first}.{last}-{}", rng.digits(4)),
    };
    let address = format!("{local}@{}", rng.pick(DOMAINS));
    match rng.below(4) {
        0 => address.to_uppercase(),
        _ => address,
    }
}

/// A card number of a real issuer range, Luhn-valid (or, with `valid = false`, with
/// a wrong check digit), printed in one of the usual layouts.
pub(super) fn card(rng: &mut Rng, valid: bool) -> String {
    let (prefix, len): (String, usize) = match rng.below(8) {
        0 => ("4".into(), *rng.pick(&[13, 16, 16, 19])),
        1 => (rng.range(51, 55).to_string(), 16),
        2 => (rng.range(2221, 2720).to_string(), 16),
        3 => (rng.pick(&["34", "37"]).to_string(), 15),
        4 => (rng.pick(&["6011", "65"]).to_string(), 16),
        5 => ("36".into(), 14),
        6 => (rng.range(3528, 3589).to_string(), 16),
        _ => ("62".into(), *rng.pick(&[16, 17, 18, 19])),
    };
    let mut digits: Vec<u8> = prefix.bytes().map(|b| b - b'0').collect();
    while digits.len() < len - 1 {
        digits.push(u8::try_from(rng.below(10)).unwrap());
    }
    let check = (0..10)
        .find(|&d| super::recognize::numbers::luhn(&[digits.as_slice(), &[d]].concat()))
        .unwrap();
    digits.push(if valid {
        check
    } else {
        (check + 1 + u8::try_from(rng.below(9)).unwrap()) % 10
    });
    let plain: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
    let groups: &[usize] = match len {
        15 => &[4, 6, 5],
        14 => &[4, 6, 4],
        _ => &[4, 4, 4, 4, 4],
    };
    let sep = *rng.pick(&["", "", " ", "-"]);
    let mut out = String::new();
    let mut at = 0;
    for &g in groups {
        if at >= len {
            break;
        }
        if at > 0 {
            out.push_str(sep);
        }
        let end = (at + g).min(len);
        out.push_str(&plain[at..end]);
        at = end;
    }
    out
}

fn ssn(rng: &mut Rng) -> String {
    let area = loop {
        let a = rng.range(1, 899);
        if a != 666 {
            break a;
        }
    };
    let sep = rng.pick(&["-", "-", " "]);
    format!(
        "{area:03}{sep}{:02}{sep}{:04}",
        rng.range(1, 99),
        rng.range(1, 9999)
    )
}

fn phone(rng: &mut Rng) -> String {
    let (area, exchange, line) = (rng.range(200, 999), rng.digits(3), rng.digits(4));
    match rng.below(9) {
        0 => format!("({area}) {exchange}-{line}"),
        1 => format!("{area}-{exchange}-{line}"),
        2 => format!("{area}.{exchange}.{line}"),
        3 => format!("{area} {exchange} {line}"),
        4 => format!("1-{area}-{exchange}-{line}"),
        5 => format!("+1{area}{exchange}{line}"),
        6 => format!("+1 ({area}) {exchange}-{line}"),
        7 => {
            let (country, len) = (rng.range(30, 49), rng.range(7, 11) as usize);
            format!("+{country} {}", spaced(rng, len, "- "))
        }
        _ => {
            let (country, len) = (rng.range(1, 99), rng.range(7, 11) as usize);
            format!("+{country}{}", rng.digits(len))
        }
    }
}

/// `n` digits in groups of 2–4 separated by one of `seps`.
fn spaced(rng: &mut Rng, n: usize, seps: &str) -> String {
    let sep = char::from(*rng.pick(seps.as_bytes()));
    let mut out = String::new();
    let mut left = n;
    while left > 0 {
        let g = (rng.range(2, 4) as usize).min(left);
        if !out.is_empty() {
            out.push(sep);
        }
        out.push_str(&rng.digits(g));
        left -= g;
    }
    out
}

const IBAN_COUNTRIES: &[(&str, usize)] = &[
    ("DE", 22),
    ("GB", 22),
    ("FR", 27),
    ("NL", 18),
    ("ES", 24),
    ("IT", 27),
    ("BE", 16),
    ("NO", 15),
    ("CH", 21),
    ("PL", 28),
    ("IE", 22),
    ("SE", 24),
    ("PT", 25),
    ("MT", 31),
    ("SA", 24),
    ("BR", 29),
    ("LC", 32),
    ("RU", 33),
];

/// An IBAN with a correct (or, with `valid = false`, wrong) checksum.
pub(super) fn iban(rng: &mut Rng, valid: bool) -> String {
    let &(country, len) = rng.pick(IBAN_COUNTRIES);
    let letters = matches!(country, "GB" | "NL" | "IE" | "MT");
    let mut bban = if letters {
        rng.string_of(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", 4)
    } else {
        String::new()
    };
    bban.push_str(&rng.digits(len - 4 - bban.len()));
    let rearranged = format!("{bban}{country}00");
    let rem = rearranged.bytes().fold(0u32, |rem, b| {
        if b.is_ascii_digit() {
            (rem * 10 + u32::from(b - b'0')) % 97
        } else {
            (rem * 100 + u32::from(b - b'A') + 10) % 97
        }
    });
    let right = 98 - rem; // 2..=98
    let check = if valid {
        right
    } else {
        2 + (right - 2 + 1 + rng.range(0, 95) as u32) % 97
    };
    let plain = format!("{country}{check:02}{bban}");
    if rng.chance(50) {
        plain
    } else {
        let chunks: Vec<&str> = plain
            .as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        chunks.join(" ")
    }
}

fn ip(rng: &mut Rng) -> String {
    if rng.chance(50) {
        Ipv4Addr::from(u32::try_from(rng.next() >> 32).unwrap()).to_string()
    } else {
        loop {
            let mut groups = [0u16; 8];
            for g in &mut groups {
                *g = u16::try_from(rng.next() >> 48).unwrap();
            }
            // Compressed forms: some zero groups.
            let zeros = rng.below(6);
            let from = rng.below(8 - zeros);
            groups[from..from + zeros].fill(0);
            let text = Ipv6Addr::from(groups).to_string();
            if text.bytes().any(|b| b.is_ascii_digit()) {
                break text;
            }
        }
    }
}

fn b64url(bytes: &[u8]) -> String {
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
    URL_SAFE_NO_PAD.encode(bytes)
}

fn jwt(rng: &mut Rng, header: &str) -> String {
    let payload = format!(
        r#"{{"sub":"{}","iat":{},"name":"{}"}}"#,
        rng.digits(8),
        rng.range(1_600_000_000, 1_800_000_000),
        rng.pick(FIRST)
    );
    let signature: Vec<u8> = (0..32).map(|_| rng.next() as u8).collect();
    format!(
        "{}.{}.{}",
        b64url(header.as_bytes()),
        b64url(payload.as_bytes()),
        b64url(&signature)
    )
}

fn private_key(rng: &mut Rng, kind: &str) -> String {
    let label = if kind == "PRIVATE KEY" {
        *rng.pick(&[
            "PRIVATE KEY",
            "RSA PRIVATE KEY",
            "EC PRIVATE KEY",
            "OPENSSH PRIVATE KEY",
            "ENCRYPTED PRIVATE KEY",
        ])
    } else {
        kind
    };
    let mut out = format!("-----BEGIN {label}-----\n");
    for _ in 0..rng.range(2, 6) {
        let _ = writeln!(
            out,
            "{}",
            rng.string_of(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
                64
            )
        );
    }
    let _ = write!(out, "-----END {label}-----");
    out
}

fn api_key(rng: &mut Rng) -> String {
    match rng.below(11) {
        0 => format!("AKIA{}", rng.string_of(UPPER_ALNUM, 16)),
        1 => format!("ASIA{}", rng.string_of(UPPER_ALNUM, 16)),
        2 => format!(
            "{}{}",
            rng.pick(&["sk_live_", "sk_test_", "rk_live_"]),
            rng.string_of(ALNUM, 24)
        ),
        3 => format!(
            "{}{}",
            rng.pick(&["ghp_", "gho_", "ghs_"]),
            rng.string_of(ALNUM, 36)
        ),
        4 => format!(
            "github_pat_{}_{}",
            rng.string_of(ALNUM, 22),
            rng.string_of(ALNUM, 59)
        ),
        5 => format!(
            "{}{}-{}-{}",
            rng.pick(&["xoxb-", "xoxp-"]),
            rng.digits(12),
            rng.digits(13),
            rng.string_of(ALNUM, 24)
        ),
        6 => format!(
            "xapp-1-{}-{}-{}",
            rng.string_of(UPPER_ALNUM, 11),
            rng.digits(13),
            rng.string_of(ALNUM, 64)
        ),
        7 => format!("AIza{}", rng.string_of(BASE64URL, 35)),
        8 => format!("glpat-{}", rng.string_of(BASE64URL, 20)),
        9 => format!("sk-proj-{}", rng.string_of(BASE64URL, 48)),
        _ => format!("npm_{}", rng.string_of(ALNUM, 36)),
    }
}

fn bearer_token(rng: &mut Rng) -> String {
    loop {
        let len = rng.range(20, 60) as usize;
        let token = rng.string_of(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/",
            len,
        );
        if token.bytes().any(|b| b.is_ascii_digit()) && !token.ends_with('.') {
            break token;
        }
    }
}

/// Near misses: none of these must be masked.
pub(super) fn near_misses(rng: &mut Rng, count: usize) -> Vec<Sample> {
    (0..count)
        .map(|_| {
            let value = near_miss(rng);
            let context = *rng.pick(CONTEXTS);
            Sample {
                text: context.replacen("{}", &value, 1),
                spans: Vec::new(),
            }
        })
        .collect()
}

fn near_miss(rng: &mut Rng) -> String {
    let d = |rng: &mut Rng, n| rng.digits(n);
    match rng.below(40) {
        // Numbers that are not cards: Luhn-invalid, no issuer, odd layouts.
        0 | 1 => card(rng, false),
        2 => format!("{}{}", rng.pick(&["0", "1", "7", "8", "9"]), d(rng, 15)),
        3 => format!("{} {} {} {}", d(rng, 2), d(rng, 6), d(rng, 4), d(rng, 4)),
        // SSNs the SSA never issues.
        4 => format!("000-{}-{}", d(rng, 2), d(rng, 4)),
        5 => format!("666-{}-{}", d(rng, 2), d(rng, 4)),
        6 => format!("9{}-{}-{}", d(rng, 2), d(rng, 2), d(rng, 4)),
        7 => format!("{}-00-{}", rng.range(100, 599), d(rng, 4)),
        8 => format!("{}-{}-0000", rng.range(100, 599), rng.range(10, 99)),
        // Order numbers, dates, times, versions, ids, amounts.
        9 => d(rng, 9),
        10 => format!("{}{}", rng.range(1, 9), d(rng, 9)),
        11 => format!("ORD-{}-{}", rng.range(2000, 2030), d(rng, 6)),
        12 => format!(
            "{}-{:02}-{:02}",
            rng.range(1970, 2030),
            rng.range(1, 12),
            rng.range(1, 28)
        ),
        13 => format!(
            "{}-{:02}-{:02}T{:02}:{:02}:{:02}.{}Z",
            rng.range(1970, 2030),
            rng.range(1, 12),
            rng.range(1, 28),
            rng.range(0, 23),
            rng.range(0, 59),
            rng.range(0, 59),
            d(rng, 3)
        ),
        14 => format!(
            "{}-{:02}-{:02} {:02}:{:02}:{:02}+00",
            rng.range(1970, 2030),
            rng.range(1, 12),
            rng.range(1, 28),
            rng.range(0, 23),
            rng.range(0, 59),
            rng.range(0, 59)
        ),
        15 => format!(
            "{:02}/{:02}/{}",
            rng.range(1, 12),
            rng.range(1, 28),
            rng.range(1970, 2030)
        ),
        16 => {
            let len = rng.range(9, 12) as usize;
            format!("1{}", d(rng, len)) // epoch seconds or milliseconds
        }
        17 => format!("{}-{}-{}", rng.range(0, 199), d(rng, 3), d(rng, 4)), // area 0xx/1xx
        18 => format!(
            "v{}.{}.{}",
            rng.range(0, 20),
            rng.range(0, 20),
            rng.range(0, 99)
        ),
        19 => format!(
            "${},{}.{:02}",
            rng.range(1, 999),
            d(rng, 3),
            rng.range(0, 99)
        ),
        20 => format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            rng.next() as u32,
            rng.next() as u16,
            rng.next() % 4096,
            rng.next() % 4096,
            rng.next() % (1 << 48)
        ),
        21 => format!("+{}", d(rng, 6)),
        22 => format!("INV-{}", d(rng, 16)),
        // Emails that are not: URL userinfo without a dotted host, mentions, bare hosts.
        23 => format!(
            "http://{}@{}/path",
            rng.pick(FIRST),
            rng.pick(&["host", "db1", "localhost"])
        ),
        24 => format!("@{}", rng.pick(FIRST)),
        25 => format!(
            "{}@{}",
            rng.pick(FIRST),
            rng.pick(&["localhost", "server", "example.c", "-bad.com"])
        ),
        // IBANs with a wrong checksum or length.
        26 => iban(rng, false),
        27 => format!("DE{}", d(rng, 18)),
        // JWT look-alikes: no alg, not JSON, two segments, not base64.
        28 => jwt(rng, r#"{"typ":"JWT"}"#),
        29 => jwt(rng, r#"{"alg":"HS256""#),
        30 => {
            let token = jwt(rng, r#"{"alg":"HS256"}"#);
            token
                .rsplit_once('.')
                .map(|(head, _)| head.to_owned())
                .unwrap_or_default()
        }
        31 => format!("eyJhbGciOi.{}!.x", rng.string_of(ALNUM, 12)),
        // Not IP addresses.
        32 => format!(
            "{}.{}.{}.{}",
            rng.range(256, 999),
            rng.range(0, 255),
            rng.range(0, 255),
            rng.range(0, 255)
        ),
        33 => format!(
            "{}.{}.{}.{}.{}",
            rng.range(0, 255),
            rng.range(0, 255),
            rng.range(0, 255),
            rng.range(0, 255),
            rng.range(0, 255)
        ),
        34 => format!(
            "{:02}:{:02}:{:02}",
            rng.range(0, 23),
            rng.range(0, 59),
            rng.range(0, 59)
        ),
        35 => (0..6)
            .map(|_| format!("{:02x}", rng.next() as u8))
            .collect::<Vec<_>>()
            .join(":"),
        36 => rng
            .pick(&[
                "std::collections::HashMap",
                "Foo::bar()",
                "a::b::c",
                "ratio 1:2:3",
            ])
            .to_string(),
        // Secret look-alikes: too short, public material, prose.
        37 => format!(
            "{}{}",
            rng.pick(&["AKIA", "sk_live_", "ghp_", "xoxb-", "AIza"]),
            rng.string_of(UPPER_ALNUM, 8)
        ),
        38 => {
            let label = *rng.pick(&["PUBLIC KEY", "CERTIFICATE"]);
            private_key(rng, label)
        }
        _ => rng
            .pick(&[
                "the Bearer of bad news",
                "Bearer token expired",
                "bearer short123",
                "1600 Pennsylvania Ave NW, Washington, DC 20500",
                "Apt 4B, 221B Baker Street",
                "Order #4521 shipped 3 items",
            ])
            .to_string(),
    }
}
