//! The masking engine on arbitrary values, in each style. Properties: it never
//! panics; masking is idempotent; its output holds nothing it would detect (masking
//! the output again changes nothing).
#![no_main]

use portcullis::mask::{MaskKey, MaskSpec, MaskStyle, Masker, RegexSpec};
use std::sync::OnceLock;

fn maskers() -> &'static [Masker] {
    static M: OnceLock<Vec<Masker>> = OnceLock::new();
    M.get_or_init(|| {
        let key = MaskKey::new(vec![7; 32]).unwrap_or_else(|e| panic!("key: {e}"));
        [MaskStyle::Redact, MaskStyle::Last4, MaskStyle::Hash]
            .into_iter()
            .map(|style| {
                let spec = MaskSpec {
                    mask: vec!["all".into()],
                    mask_style: style,
                    mask_regex: vec![RegexSpec {
                        name: "order".into(),
                        pattern: "ORD-[0-9]{6}".into(),
                    }],
                    mask_words: vec!["Bluebird".into()],
                    ..MaskSpec::default()
                };
                Masker::compile(&[spec], Some(&key)).unwrap_or_else(|e| panic!("{e}"))
            })
            .collect()
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&pick, value)) = data.split_first() else {
        return;
    };
    let masker = &maskers()[usize::from(pick) % 3];
    let text = String::from_utf8_lossy(value);
    let once = masker.mask_str(&text);
    let twice = masker.mask_str(&once);
    assert_eq!(
        twice.as_ref(),
        once.as_ref(),
        "masking is not idempotent, or its output holds a value it detects: {text:?}"
    );
    let bytes = masker.mask_value(value);
    let bytes_twice = masker.mask_value(&bytes);
    assert_eq!(bytes_twice.as_ref(), bytes.as_ref(), "bytes: {value:?}");
});
