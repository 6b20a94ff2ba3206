//! The SQL classifier and its cache key. Property: a text classified through the
//! cache (whose key replaces literal values) is classified exactly as it is without
//! the cache — so two texts of different classification never share a cache entry.
//! Each input is classified, then a copy with its literal values changed, through one
//! long-lived cached classifier (entries from earlier inputs stay, so any two texts of
//! the whole run may collide) and through one that caches nothing.
#![no_main]

use portcullis::proto::postgres::classify::{Classified, Classifier};
use std::sync::{Arc, OnceLock};

fn classifiers() -> &'static (Classifier, Classifier) {
    static C: OnceLock<(Classifier, Classifier)> = OnceLock::new();
    C.get_or_init(|| (Classifier::new(4096), Classifier::new(0)))
}

/// `text` with its digits rotated by `by` and the letters inside single quotes
/// swapped in case: different literal values, the same shape.
fn vary_literals(text: &str, by: u8) -> String {
    let mut quoted = false;
    text.chars()
        .map(|c| match c {
            '\'' => {
                quoted = !quoted;
                c
            }
            '0'..='9' => char::from(b'0' + (c as u8 - b'0' + by % 10) % 10),
            c if quoted && c.is_ascii_lowercase() => c.to_ascii_uppercase(),
            c if quoted && c.is_ascii_uppercase() => c.to_ascii_lowercase(),
            c => c,
        })
        .collect()
}

fn same(a: &Arc<Classified>, b: &Arc<Classified>) -> bool {
    a.classes == b.classes && a.tables == b.tables && a.error.is_some() == b.error.is_some()
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&seed, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let scs = seed & 0x80 == 0;
    let (cached, uncached) = classifiers();
    for sql in [text.to_owned(), vary_literals(text, seed | 1)] {
        let through_cache = cached.classify_blocking(&sql, scs);
        let alone = uncached.classify_blocking(&sql, scs);
        assert!(
            same(&through_cache, &alone),
            "the cache answered {:?} for {sql:?} (standard_conforming_strings {scs}), \
             which classifies as {:?}: two texts of different classification share a key",
            (through_cache.classes, &through_cache.tables),
            (alone.classes, &alone.tables),
        );
    }
});
