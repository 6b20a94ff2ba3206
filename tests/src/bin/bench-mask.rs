//! `cargo xtask bench mask`: what masking costs one core, measured in one run.
//!
//! A generated corpus of column values like those of a real database (names,
//! addresses, amounts, dates, ids, statuses, free text), a share of which carry
//! personal data or secrets (an email, a phone or card number, a token…), is masked
//! value by value with `mask = ["all"]`, on one thread:
//! 1. throughput in MB/s at 1% and 10% of values carrying PII, next to copying the same
//!    values (what relaying them costs anyway) for scale;
//! 2. the cost of a 10-column row with no PII, in ns per row.
//!
//! Each figure is the fastest of repeated runs. With `BENCH_MASK_EACH=1`, it also
//! prints the throughput of each recognizer alone (at 10%), to see what costs what.
//! With `BENCH_MASK_KINDS=1`, the cost of each kind of value of the corpus alone.
//! With `BENCH_MASK_ONLY=<text>`, it measures only the corpora whose label contains
//! the text ("1% PII", "hash"…), without the copy baseline nor the rows: a profile
//! (`perf record`) then shows masking alone.
//!
//! Prints absolute numbers and ratios; asserts nothing. Goals: ≥ 500 MB/s per core,
//! ≤ 2 µs per clean 10-column row.

use portcullis::mask::{MaskKey, MaskSpec, MaskStyle, Masker, Recognizer};
use std::{
    borrow::Cow,
    hint::black_box,
    time::{Duration, Instant},
};

/// How long each measurement runs (after a warm-up of the same length / 4).
const RUN: Duration = Duration::from_secs(2);
const VALUES: usize = 200_000;
const ROWS: usize = 20_000;

fn main() -> anyhow::Result<()> {
    let redact = Masker::compile(&[spec(MaskStyle::Redact)], None)?;
    let key = MaskKey::new(b"bench-mask-key-0123456789abcdef".to_vec())?;
    let hash = Masker::compile(&[spec(MaskStyle::Hash)], Some(&key))?;

    println!("Masking on one core, mask = [\"all\"], {VALUES} values per corpus:");
    println!(
        "{:<30} {:>8} {:>10} {:>8} {:>9} {:>8}",
        "corpus", "B/value", "copy MB/s", "MB/s", "ns/value", "vs copy"
    );
    let only = std::env::var("BENCH_MASK_ONLY").ok();
    for (density, masker, style) in [
        (1, &redact, "redact"),
        (10, &redact, "redact"),
        (10, &hash, "hash"),
    ] {
        let label = format!("{density}% PII, {style}");
        if only
            .as_ref()
            .is_some_and(|only| !label.contains(only.as_str()))
        {
            continue;
        }
        let values = corpus(density, VALUES, 42);
        let bytes: usize = values.iter().map(Vec::len).sum();
        let copy = if only.is_some() {
            Duration::ZERO
        } else {
            measure(|| {
                let mut out = Vec::with_capacity(256);
                for v in &values {
                    out.clear();
                    out.extend_from_slice(black_box(v));
                    black_box(&out);
                }
            })
        };
        let masked = measure(|| {
            for v in &values {
                black_box(masker.mask_value(black_box(v)));
            }
        });
        let changed = values
            .iter()
            .filter(|v| masker.mask_value(v).as_ref() != v.as_slice())
            .count();
        println!(
            "{:<30} {:>8} {:>10.0} {:>8.0} {:>9.1} {:>7.2}x",
            format!("{label} ({changed} masked)"),
            bytes / values.len(),
            mb_per_s(bytes, copy),
            mb_per_s(bytes, masked),
            ns_per(masked, values.len()),
            copy.as_secs_f64() / masked.as_secs_f64(),
        );
    }

    if std::env::var_os("BENCH_MASK_KINDS").is_some() {
        kinds(&redact, &hash, only.as_deref());
    }
    if only.is_some() {
        return Ok(());
    }
    if std::env::var_os("BENCH_MASK_EACH").is_some() {
        let values = corpus(10, VALUES, 42);
        let bytes: usize = values.iter().map(Vec::len).sum();
        for name in Recognizer::ALL.map(Recognizer::name) {
            let one = MaskSpec {
                mask: vec![name.into()],
                ..MaskSpec::default()
            };
            let masker = Masker::compile(&[one], None)?;
            let t = measure(|| {
                for v in &values {
                    black_box(masker.mask_value(black_box(v)));
                }
            });
            println!(
                "  only {name:<14} {:>8.0} MB/s {:>8.1} ns/value",
                mb_per_s(bytes, t),
                ns_per(t, values.len())
            );
        }
    }

    let rows: Vec<Vec<Vec<u8>>> = {
        let mut rng = Rng(7);
        (0..ROWS).map(|_| clean_row(&mut rng)).collect()
    };
    let row_bytes: usize = rows.iter().flatten().map(Vec::len).sum();
    let per_row = measure(|| {
        for row in &rows {
            for v in row {
                black_box(redact.mask_value(black_box(v)));
            }
        }
    });
    let dirty = rows
        .iter()
        .flatten()
        .filter(|v| !matches!(redact.mask_value(v), Cow::Borrowed(_)))
        .count();
    println!(
        "\nClean 10-column row ({} bytes on average; {dirty} of {} values masked): {:.0} ns/row",
        row_bytes / ROWS,
        ROWS * 10,
        ns_per(per_row, ROWS)
    );
    println!("Goals: >= 500 MB/s per core; <= 2000 ns per clean 10-column row.");
    Ok(())
}

/// The cost of each kind of value of the corpus alone, in ns per value, redacted and
/// hashed: which kinds the corpus figures come from. With `only`, the kinds whose
/// label contains it.
fn kinds(redact: &Masker, hash: &Masker, only: Option<&str>) {
    const EACH: usize = 20_000;
    let mut rng = Rng(42);
    let mut groups: Vec<(String, Vec<Vec<u8>>)> = (0..CLEAN_KINDS)
        .map(|kind| {
            let values = (0..EACH).map(|_| clean_of(kind, &mut rng).into_bytes());
            let name = CLEAN_NAMES.get(kind as usize).copied().unwrap_or_default();
            (format!("clean {name}"), values.collect())
        })
        .collect();
    for kind in 0..PII_KINDS {
        for in_text in [false, true] {
            let values = (0..EACH).map(|_| {
                let pii = pii_of(kind, &mut rng);
                if in_text {
                    in_sentence(&pii, &mut rng)
                } else {
                    pii
                }
            });
            let name = PII_NAMES.get(kind as usize).copied().unwrap_or_default();
            let label = format!("{name}{}", if in_text { " in text" } else { "" });
            groups.push((label, values.map(String::into_bytes).collect()));
        }
    }
    println!(
        "\n{:<16} {:>8} {:>12} {:>12}",
        "kind", "B/value", "redact ns", "hash ns"
    );
    for (label, values) in &groups {
        if only.is_some_and(|only| !label.contains(only)) {
            continue;
        }
        let bytes: usize = values.iter().map(Vec::len).sum();
        let [r, h] = [redact, hash].map(|masker| {
            let t = measure_for(RUN / 4, || {
                for v in values {
                    black_box(masker.mask_value(black_box(v)));
                }
            });
            ns_per(t, values.len())
        });
        println!(
            "{label:<16} {:>8} {r:>12.1} {h:>12.1}",
            bytes / values.len()
        );
    }
}

fn spec(style: MaskStyle) -> MaskSpec {
    MaskSpec {
        mask: vec!["all".into()],
        mask_style: style,
        ..MaskSpec::default()
    }
}

/// The time one call of `f` takes: the fastest of repeated runs, the one other work on
/// the machine disturbed least (medians on a shared machine measure the neighbours).
fn measure(f: impl FnMut()) -> Duration {
    measure_for(RUN, f)
}

/// [`measure`], running for `run`.
fn measure_for(run: Duration, mut f: impl FnMut()) -> Duration {
    let warm = Instant::now();
    while warm.elapsed() < run / 4 {
        f();
    }
    let mut best = Duration::MAX;
    let start = Instant::now();
    while start.elapsed() < run {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
    }
    best
}

#[expect(clippy::cast_precision_loss, reason = "throughput figures")]
fn mb_per_s(bytes: usize, time: Duration) -> f64 {
    bytes as f64 / 1e6 / time.as_secs_f64()
}

#[expect(clippy::cast_precision_loss, reason = "per-item figures")]
fn ns_per(time: Duration, items: usize) -> f64 {
    time.as_nanos() as f64 / items as f64
}

// ---- The corpus ----------------------------------------------------------------------

/// A xorshift64* generator: deterministic corpora, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        let i = usize::try_from(self.below(items.len() as u64)).unwrap_or(0);
        items.get(i).copied().unwrap_or_default()
    }
}

const FIRST: &[&str] = &[
    "Alice", "Bob", "Carol", "David", "Emma", "Farid", "Grace", "Hiro", "Ines", "José", "Kwame",
    "Lena",
];
const LAST: &[&str] = &[
    "Smith", "Johnson", "Nguyen", "García", "Müller", "O'Brien", "Kowalski", "Okafor", "Tanaka",
    "Rossi",
];
const STREETS: &[&str] = &[
    "Main St",
    "Oak Avenue",
    "Baker Street",
    "Rue de Rivoli",
    "Hauptstraße",
    "Elm Drive",
    "Harbour Rd",
];
const CITIES: &[&str] = &[
    "Springfield",
    "London",
    "Paris",
    "Berlin",
    "Lagos",
    "Osaka",
    "São Paulo",
    "Toronto",
];
const STATUS: &[&str] = &[
    "pending",
    "shipped",
    "delivered",
    "cancelled",
    "refunded",
    "active",
    "t",
    "f",
];
const WORDS: &[&str] = &[
    "the", "order", "was", "delayed", "because", "of", "weather", "customer", "asked", "for", "a",
    "refund", "please", "call", "back", "tomorrow", "package", "left", "at", "front", "door",
    "invoice", "attached", "thanks", "team", "meeting", "notes", "follow", "up", "on", "Monday",
    "with", "updated", "pricing",
];

/// How many kinds of clean values [`clean_of`] makes, and of PII [`pii_of`].
const CLEAN_KINDS: u64 = 10;
const PII_KINDS: u64 = 9;
/// What each kind is, for [`kinds`].
const CLEAN_NAMES: [&str; CLEAN_KINDS as usize] = [
    "name",
    "address",
    "id",
    "amount",
    "timestamp",
    "status",
    "uuid",
    "city",
    "note",
    "note",
];
const PII_NAMES: [&str; PII_KINDS as usize] = [
    "email",
    "nanp phone",
    "card",
    "ssn",
    "ipv4",
    "iban",
    "intl phone",
    "aws key",
    "jwt",
];

/// One clean value of a random column type.
fn clean_value(rng: &mut Rng) -> String {
    let kind = rng.below(CLEAN_KINDS);
    clean_of(kind, rng)
}

/// One clean value of column type `kind` (below [`CLEAN_KINDS`]).
fn clean_of(kind: u64, rng: &mut Rng) -> String {
    match kind {
        0 => format!("{} {}", rng.pick(FIRST), rng.pick(LAST)),
        1 => format!(
            "{} {}, {}",
            rng.below(9999) + 1,
            rng.pick(STREETS),
            rng.pick(CITIES)
        ),
        2 => rng.below(10_000_000).to_string(),
        3 => format!("{}.{:02}", rng.below(2000), rng.below(100)),
        4 => format!(
            "2024-{:02}-{:02} {:02}:{:02}:{:02}.{:03}+00",
            rng.below(12) + 1,
            rng.below(28) + 1,
            rng.below(24),
            rng.below(60),
            rng.below(60),
            rng.below(1000)
        ),
        5 => rng.pick(STATUS).to_owned(),
        6 => format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            rng.next() >> 32,
            rng.next() >> 48,
            rng.below(4096),
            rng.below(4096),
            rng.next() >> 16
        ),
        7 => rng.pick(CITIES).to_owned(),
        _ => sentence(rng),
    }
}

fn sentence(rng: &mut Rng) -> String {
    let n = 6 + rng.below(30);
    let mut s = String::new();
    for i in 0..n {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(rng.pick(WORDS));
    }
    s.push('.');
    s
}

/// One value carrying personal data or a secret: alone (a column of emails) or in text.
fn pii_value(rng: &mut Rng) -> String {
    let kind = rng.below(PII_KINDS);
    let pii = pii_of(kind, rng);
    let in_text = rng.below(2) != 0;
    if in_text { in_sentence(&pii, rng) } else { pii }
}

/// `pii` in the middle of some text.
fn in_sentence(pii: &str, rng: &mut Rng) -> String {
    format!("{} {pii} {}", sentence(rng), rng.pick(WORDS))
}

/// One piece of PII of kind `kind` (below [`PII_KINDS`]).
fn pii_of(kind: u64, rng: &mut Rng) -> String {
    match kind {
        0 => format!(
            "{}.{}@example.com",
            rng.pick(FIRST).to_lowercase(),
            rng.below(1000)
        ),
        1 => format!(
            "({}) {:03}-{:04}",
            200 + rng.below(800),
            rng.below(1000),
            rng.below(10_000)
        ),
        2 => "4111 1111 1111 1111".to_owned(),
        3 => format!(
            "{:03}-{:02}-{:04}",
            100 + rng.below(500),
            1 + rng.below(98),
            1 + rng.below(9998)
        ),
        4 => format!(
            "10.{}.{}.{}",
            rng.below(256),
            rng.below(256),
            rng.below(256)
        ),
        5 => "DE89 3704 0044 0532 0130 00".to_owned(),
        6 => "+44 20 7946 0958".to_owned(),
        7 => "AKIAIOSFODNN7EXAMPLE".to_owned(),
        _ => "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlMTIzNDU2".to_owned(),
    }
}

/// `count` values, `density` percent of them carrying PII.
fn corpus(density: u64, count: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng(seed);
    (0..count)
        .map(|_| {
            if rng.below(100) < density {
                pii_value(&mut rng)
            } else {
                clean_value(&mut rng)
            }
            .into_bytes()
        })
        .collect()
}

/// A row of a typical table: id, name, email-less contact fields, address, city,
/// amount, status, `created_at`, uuid, note.
fn clean_row(rng: &mut Rng) -> Vec<Vec<u8>> {
    vec![
        rng.below(10_000_000).to_string(),
        format!("{} {}", rng.pick(FIRST), rng.pick(LAST)),
        rng.pick(FIRST).to_lowercase(),
        format!("{} {}", rng.below(9999) + 1, rng.pick(STREETS)),
        rng.pick(CITIES).to_owned(),
        format!("{}.{:02}", rng.below(2000), rng.below(100)),
        rng.pick(STATUS).to_owned(),
        format!(
            "2024-{:02}-{:02} {:02}:{:02}:{:02}+00",
            rng.below(12) + 1,
            rng.below(28) + 1,
            rng.below(24),
            rng.below(60),
            rng.below(60)
        ),
        format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            rng.next() >> 32,
            rng.next() >> 48,
            rng.below(4096),
            rng.below(4096),
            rng.next() >> 16
        ),
        sentence(rng),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect()
}
