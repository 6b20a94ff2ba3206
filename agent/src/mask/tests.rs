//! The masker as its callers see it, and the recognizers measured on the generated
//! corpus.

#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use super::{
    corpus::{self, Rng},
    style::Label,
    *,
};
use std::{collections::BTreeMap, ops::Range};

fn spec(mask: &[&str], style: MaskStyle) -> MaskSpec {
    MaskSpec {
        mask: mask.iter().map(ToString::to_string).collect(),
        mask_style: style,
        ..MaskSpec::default()
    }
}

fn key(byte: u8) -> MaskKey {
    MaskKey::new(vec![byte; 32]).unwrap()
}

fn masked(masker: &Masker, text: &str) -> String {
    masker.mask_str(text).into_owned()
}

// ---- Precision and recall ------------------------------------------------------------

#[derive(Default)]
struct Score {
    /// Findings that overlap a true span of their kind, and those that do not.
    true_findings: usize,
    false_findings: usize,
    /// True spans, and those wholly covered by findings of their kind.
    spans: usize,
    covered: usize,
    examples: Vec<String>,
}

fn overlaps(a: &Range<usize>, b: &Range<usize>) -> bool {
    a.start < b.end && b.start < a.end
}

#[test]
fn precision_and_recall_on_the_generated_corpus() {
    let masker = Masker::compile(&[spec(&["all"], MaskStyle::Redact)], None).unwrap();
    let mut rng = Rng::new(0x5EED_CAFE);
    let mut samples = corpus::positives(&mut rng, 2_000);
    samples.extend(corpus::near_misses(&mut rng, 40_000));

    let mut scores: BTreeMap<&str, Score> =
        Recognizer::ALL.map(|r| (r.name(), Score::default())).into();
    for sample in &samples {
        let findings: Vec<(Recognizer, Range<usize>)> = masker
            .findings(sample.text.as_bytes())
            .into_iter()
            .filter_map(|f| match f.label {
                Label::Builtin(r) => Some((r, f.range)),
                _ => None,
            })
            .collect();
        for (r, range) in &findings {
            let score = scores.get_mut(r.name()).unwrap();
            if sample
                .spans
                .iter()
                .any(|(k, span)| k == r && overlaps(span, range))
            {
                score.true_findings += 1;
            } else {
                score.false_findings += 1;
                if score.examples.len() < 5 {
                    score.examples.push(format!(
                        "{:?} in {:?}",
                        &sample.text[range.clone()],
                        sample.text
                    ));
                }
            }
        }
        for (kind, span) in &sample.spans {
            let score = scores.get_mut(kind.name()).unwrap();
            score.spans += 1;
            let covered = span
                .clone()
                .all(|i| findings.iter().any(|(r, f)| r == kind && f.contains(&i)));
            if covered {
                score.covered += 1;
            } else if score.examples.len() < 5 {
                score
                    .examples
                    .push(format!("missed {:?}", &sample.text[span.clone()]));
            }
        }
    }

    #[expect(clippy::cast_precision_loss, reason = "ratios of small counts")]
    let ratio = |a: usize, b: usize| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    println!(
        "{} positives, {} near misses",
        Recognizer::ALL.len() * 2_000,
        40_000
    );
    println!(
        "{:<14} {:>9} {:>9} {:>9} {:>7}",
        "recognizer", "precision", "recall", "findings", "false"
    );
    for (name, s) in &scores {
        let precision = ratio(s.true_findings, s.true_findings + s.false_findings);
        let recall = ratio(s.covered, s.spans);
        println!(
            "{name:<14} {precision:>9.4} {recall:>9.4} {:>9} {:>7}",
            s.true_findings + s.false_findings,
            s.false_findings
        );
        for example in &s.examples {
            println!("    {example}");
        }
    }
    for (name, s) in &scores {
        let precision = ratio(s.true_findings, s.true_findings + s.false_findings);
        assert!(
            (ratio(s.covered, s.spans) - 1.0).abs() < f64::EPSILON,
            "{name}: recall below 1.0: {:?}",
            s.examples
        );
        assert!(
            precision >= 0.99,
            "{name}: precision {precision} below 0.99: {:?}",
            s.examples
        );
    }
}

#[test]
fn near_misses_are_left_alone() {
    let masker = Masker::compile(&[spec(&["all"], MaskStyle::Redact)], None).unwrap();
    let mut rng = Rng::new(7);
    let misses = corpus::near_misses(&mut rng, 5_000);
    let touched: Vec<&str> = misses
        .iter()
        .map(|s| s.text.as_str())
        .filter(|t| masker.mask_str(t) != *t)
        .take(10)
        .collect();
    // A few may be masked by chance (a random number that happens to be a valid card);
    // the precision test bounds that. Here: nothing systematic.
    assert!(touched.len() < 10, "{touched:#?}");
}

// ---- Styles --------------------------------------------------------------------------

#[test]
fn redact_names_what_was_found() {
    let masker = Masker::compile(&[spec(&["all"], MaskStyle::Redact)], None).unwrap();
    assert_eq!(
        masked(
            &masker,
            "mail alice@example.com or call (555) 123-4567; card 4111 1111 1111 1111."
        ),
        "mail [email] or call [phone]; card [credit_card]."
    );
    assert_eq!(
        masked(&masker, "ssn 123-45-6789 from 10.0.0.1"),
        "ssn [ssn] from [ip_address]"
    );
    assert_eq!(
        masked(&masker, "Authorization: Bearer abcDEF0123456789xyz"),
        "Authorization: Bearer [bearer_token]"
    );
    assert_eq!(masked(&masker, "AKIAIOSFODNN7EXAMPLE"), "[api_key]");
}

#[test]
fn non_ascii_neighbours_are_judged_by_character() {
    let masker = Masker::compile(&[spec(&["all"], MaskStyle::Redact)], None).unwrap();
    // A symbol is a boundary, a letter of any script is not.
    assert_eq!(masked(&masker, "€4111 1111 1111 1111"), "€[credit_card]");
    assert_eq!(masked(&masker, "☎555-123-4567☎"), "☎[phone]☎");
    assert_eq!(masked(&masker, "é4111111111111111"), "é4111111111111111");
    assert_eq!(masked(&masker, "4111111111111111ж"), "4111111111111111ж");
}

#[test]
fn clean_values_are_borrowed() {
    let masker = Masker::compile(&[spec(&["all"], MaskStyle::Redact)], None).unwrap();
    for clean in [
        "",
        "Alice Smith",
        "1600 Pennsylvania Ave NW",
        "2024-01-15 12:34:56",
        "total: 1,299.00",
    ] {
        assert!(
            matches!(masker.mask_value(clean.as_bytes()), Cow::Borrowed(_)),
            "{clean}"
        );
        assert!(
            matches!(masker.mask_str(clean), Cow::Borrowed(_)),
            "{clean}"
        );
    }
}

#[test]
fn overlapping_findings_are_masked_as_their_union() {
    let mut custom = spec(&["email"], MaskStyle::Redact);
    custom.mask_regex = vec![RegexSpec {
        name: "handle".into(),
        pattern: "[a-z]+@ex".into(),
    }];
    custom.mask_words = vec!["example.com or".into()];
    let masker = Masker::compile(&[custom], None).unwrap();
    // The regex covers "alice@ex", the email "alice@example.com", the word
    // "example.com or": one span, named after the longest.
    assert_eq!(
        masked(&masker, "to alice@example.com or bob"),
        "to [email] bob"
    );
    // A JWT after Bearer: both recognizers, same span, one replacement.
    let masker =
        Masker::compile(&[spec(&["jwt", "bearer_token"], MaskStyle::Redact)], None).unwrap();
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlMTIzNDU2";
    assert_eq!(
        masked(&masker, &format!("Bearer {jwt}")),
        "Bearer [bearer_token]"
    );
}

#[test]
fn last4_keeps_the_last_four_characters() {
    let masker = Masker::compile(&[spec(&["credit_card", "ssn"], MaskStyle::Last4)], None).unwrap();
    assert_eq!(
        masked(&masker, "card 4111-1111-1111-1111 ssn 123-45-6789"),
        "card ***************1111 ssn *******6789"
    );
}

#[test]
fn hash_tokens_are_deterministic_and_keyed() {
    let (k1, k2) = (key(1), key(2));
    let hashing = [spec(&["email"], MaskStyle::Hash)];
    let a = Masker::compile(&hashing, Some(&k1)).unwrap();
    let b = Masker::compile(&hashing, Some(&k1)).unwrap();
    let c = Masker::compile(&hashing, Some(&k2)).unwrap();
    let text = "from alice@example.com to alice@example.com and bob@example.com";
    let out = masked(&a, text);
    let tokens: Vec<&str> = out
        .split_whitespace()
        .filter(|w| w.starts_with("[email:"))
        .collect();
    assert_eq!(tokens.len(), 3);
    assert_eq!(tokens[0], tokens[1], "same input, same token");
    assert_ne!(tokens[0], tokens[2], "different input, different token");
    assert_eq!(tokens[0].len(), "[email:]".len() + 16);
    assert_eq!(out, masked(&b, text), "same key, same tokens");
    assert_ne!(out, masked(&c, text), "another key, other tokens");

    // A hashed column value carries the same token as the value found in a text, so
    // the two join.
    let mut columns = MaskSpec {
        mask_columns: vec!["users.email".into()],
        mask_style: MaskStyle::Hash,
        ..MaskSpec::default()
    };
    columns.mask_key_env = Some("UNUSED".into());
    let d = Masker::compile(&[columns, hashing[0].clone()], Some(&k1)).unwrap();
    let rule = d.column_rule("users", "email").unwrap();
    let Masked::Value(column) = d.mask_column_value(&rule, b"alice@example.com") else {
        panic!("not a value")
    };
    assert_eq!(
        format!("[email:{}]", std::str::from_utf8(&column).unwrap()),
        tokens[0]
    );
}

#[test]
fn columns_are_masked_whole_in_the_most_restrictive_style() {
    let rules = [
        MaskSpec {
            mask_columns: vec!["*password*".into(), "*.ssn".into()],
            mask_style: MaskStyle::Redact,
            ..MaskSpec::default()
        },
        MaskSpec {
            mask_columns: vec!["users.ssn".into()],
            mask_style: MaskStyle::Null,
            ..MaskSpec::default()
        },
        MaskSpec {
            mask_columns: vec!["*.card".into()],
            mask_style: MaskStyle::Last4,
            ..MaskSpec::default()
        },
    ];
    let masker = Masker::compile(&rules, None).unwrap();
    assert!(!masker.is_noop());
    assert_eq!(masker.column_rule("users", "name"), None);
    let ssn = masker.column_rule("users", "ssn").unwrap();
    assert!(ssn.is_null());
    assert_eq!(masker.mask_column_value(&ssn, b"123-45-6789"), Masked::Null);
    let other_ssn = masker.column_rule("people", "ssn").unwrap();
    assert_eq!(other_ssn.style(), MaskStyle::Redact);
    assert_eq!(
        masker.mask_column_value(&other_ssn, b"123-45-6789"),
        Masked::Value(Cow::Borrowed(b"****"))
    );
    let password = masker.column_rule("users", "password_hash").unwrap();
    assert_eq!(password.style(), MaskStyle::Redact);
    let card = masker.column_rule("", "card").unwrap();
    assert_eq!(
        masker.mask_column_value(&card, b"4111111111111111"),
        Masked::Value(Cow::Owned(b"************1111".to_vec()))
    );
    // Column rules alone do not scan values.
    assert!(matches!(
        masker.mask_value(b"alice@example.com"),
        Cow::Borrowed(_)
    ));
}

#[test]
fn custom_regexes_and_words() {
    let rule = MaskSpec {
        mask_regex: vec![RegexSpec {
            name: "order".into(),
            pattern: r"\bORD-[0-9]{8}\b".into(),
        }],
        mask_words: vec!["Project Bluebird".into(), "acme".into()],
        ..MaskSpec::default()
    };
    let masker = Masker::compile(&[rule], None).unwrap();
    assert_eq!(
        masked(&masker, "ORD-20240115 for ACME's project bluebird"),
        "[order] for [masked]'s [masked]"
    );
    assert_eq!(
        masked(&masker, "acmes and ORD-2024011"),
        "acmes and ORD-2024011"
    );
}

// ---- Secrecy and robustness ----------------------------------------------------------

#[test]
fn the_key_is_never_shown() {
    // A test key made at run time (no key-looking literal in the source).
    let secret: String = (0..32).map(|i| char::from(b'a' + (i * 7 % 26))).collect();
    let secret = secret.as_str();
    let k = MaskKey::new(secret.as_bytes().to_vec()).unwrap();
    let masker = Masker::compile(&[spec(&["email"], MaskStyle::Hash)], Some(&k)).unwrap();
    let shown = format!("{k:?} {masker:?} {masker:#?}");
    assert!(
        !shown.contains(secret) && !shown.contains(&secret[..8]),
        "{shown}"
    );
    assert!(shown.contains("<secret>"));

    let short = MaskKey::new(b"hunter2".to_vec()).unwrap_err().to_string();
    assert!(
        !short.contains("hunter2") && short.contains("too short"),
        "{short}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mask.key");
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    let rule = MaskSpec {
        mask_key_file: Some(path),
        ..spec(&["email"], MaskStyle::Hash)
    };
    let loaded = MaskKey::for_specs(&[rule]).unwrap().unwrap();
    let from_file = Masker::compile(&[spec(&["email"], MaskStyle::Hash)], Some(&loaded)).unwrap();
    assert_eq!(
        masked(&from_file, "a@example.com"),
        masked(&masker, "a@example.com")
    );

    let missing = MaskSpec {
        mask_key_env: Some("PORTCULLIS_TEST_SURELY_UNSET".into()),
        ..MaskSpec::default()
    };
    let error = MaskKey::for_specs(&[missing]).unwrap_err().to_string();
    assert!(
        error.contains("PORTCULLIS_TEST_SURELY_UNSET is not set"),
        "{error}"
    );
}

#[test]
fn words_are_not_shown_either() {
    let rule = MaskSpec {
        mask_words: vec!["Bluebird".into()],
        ..MaskSpec::default()
    };
    let shown = format!(
        "{rule:?} {:?}",
        Masker::compile(std::slice::from_ref(&rule), None).unwrap()
    );
    assert!(!shown.contains("Bluebird"), "{shown}");
}

#[test]
fn any_bytes_are_safe() {
    let masker = Masker::compile(&[spec(&["all"], MaskStyle::Last4)], None).unwrap();
    let mut rng = Rng::new(99);
    let alphabet = b"0123456789 -.()+@:_abcDEF\xff\xc3\xa9\x00eyJAKIA-----BEGIN Bearer \n";
    for _ in 0..20_000 {
        let len = rng.below(80);
        let value: Vec<u8> = (0..len).map(|_| *rng.pick(alphabet)).collect();
        let _ = masker.mask_value(&value);
        let text = String::from_utf8_lossy(&value);
        let _ = masker.mask_str(&text);
    }
    // A finding in a value that is not UTF-8 is masked; the rest is passed as it came.
    assert_eq!(
        masker.mask_value(b"\xff alice@example.com \xfe").as_ref(),
        b"\xff *************.com \xfe"
    );
}

#[test]
fn masker_is_shareable() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Masker>();
    let masker = Masker::default();
    assert!(masker.is_noop());
    assert!(Masker::compile(&[], None).unwrap().is_noop());
    assert!(matches!(
        masker.mask_value(b"alice@example.com"),
        Cow::Borrowed(_)
    ));
}

// ---- Specs and errors ----------------------------------------------------------------

#[test]
fn specs_read_from_toml() {
    let rule: MaskSpec = toml::from_str(
        r#"
        mask = ["email", "credit_card"]
        mask_columns = ["users.password_hash", "*.ssn", "*password*"]
        mask_style = "last4"
        mask_regex = [{ name = "order", pattern = "ORD-[0-9]{8}" }]
        mask_words = ["Bluebird"]
        "#,
    )
    .unwrap();
    assert_eq!(rule.mask_style, MaskStyle::Last4);
    assert_eq!(rule.mask_regex[0].name, "order");
    let unknown = toml::from_str::<MaskSpec>("mask_stlye = \"hash\"")
        .unwrap_err()
        .to_string();
    assert!(unknown.contains("unknown field"), "{unknown}");
    assert!(toml::from_str::<MaskSpec>("mask_style = \"blur\"").is_err());
}

#[test]
fn errors_say_what_to_change() {
    let error = |specs: &[MaskSpec]| Masker::compile(specs, None).unwrap_err().to_string();
    let e = error(&[spec(&["emial"], MaskStyle::Redact)]);
    assert!(e.contains("\"emial\"") && e.contains("credit_card"), "{e}");
    let e = error(&[MaskSpec {
        mask_regex: vec![RegexSpec {
            name: "x".into(),
            pattern: "(".into(),
        }],
        ..MaskSpec::default()
    }]);
    assert!(e.starts_with("mask_regex \"x\""), "{e}");
    let e = error(&[MaskSpec {
        mask_regex: vec![RegexSpec {
            name: "a b".into(),
            pattern: "x".into(),
        }],
        ..MaskSpec::default()
    }]);
    assert!(e.contains("not a plain name"), "{e}");
    let e = error(&[MaskSpec {
        mask_columns: vec!["public.users.ssn".into()],
        ..MaskSpec::default()
    }]);
    assert!(e.contains("schema-qualified"), "{e}");
    let e = error(&[spec(&["email"], MaskStyle::Null)]);
    assert!(e.contains("mask_columns only"), "{e}");
    let e = error(&[spec(&["email"], MaskStyle::Hash)]);
    assert!(e.contains("mask_key_env or mask_key_file"), "{e}");
    let e = error(&[MaskSpec {
        mask_words: vec![" ".into()],
        ..MaskSpec::default()
    }]);
    assert!(e.contains("empty word"), "{e}");

    let two_keys = [
        MaskSpec {
            mask_key_env: Some("A".into()),
            ..MaskSpec::default()
        },
        MaskSpec {
            mask_key_env: Some("B".into()),
            ..MaskSpec::default()
        },
    ];
    let e = MaskKey::for_specs(&two_keys).unwrap_err().to_string();
    assert!(e.contains("env:A and env:B"), "{e}");
    let both = MaskSpec {
        mask_key_env: Some("A".into()),
        mask_key_file: Some("/k".into()),
        ..MaskSpec::default()
    };
    assert!(matches!(
        MaskKey::for_specs(&[both]),
        Err(MaskError::KeyTwice)
    ));
}

/// Issue 21 (the `mask` fuzz target): in every style, masking is idempotent and its
/// output holds nothing it detects — last4 once left `8::1` of `2001:db8::1`.
#[test]
fn masked_output_holds_nothing_to_mask_again() {
    let texts = [
        "alice@example.com wrote from 192.168.1.10 and 2001:db8::1",
        "fe80::1:abcd and ::ffff:192.0.2.1",
        // The order id hid the phone before it until it was replaced.
        "+155  3554(51222ORD-852222222hhhhh222222222225) 55\u{fffd}-2671",
    ];
    for style in [MaskStyle::Redact, MaskStyle::Last4, MaskStyle::Hash] {
        let mut rule = spec(&["all"], style);
        rule.mask_regex = vec![RegexSpec {
            name: "order".into(),
            pattern: "ORD-[0-9]{6}".into(),
        }];
        let masker = Masker::compile(&[rule], Some(&key(7))).unwrap();
        for text in texts {
            let once = masked(&masker, text);
            assert_eq!(masked(&masker, &once), once, "{style:?}: {text}");
        }
    }
}
