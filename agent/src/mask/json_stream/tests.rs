//! Tests of the streaming JSON rewriter (`json_stream`): output independent of
//! where the body is cut, selected values masked, the rest unchanged.

use super::*;
use crate::mask::{MaskKey, MaskSpec};

fn masker(paths: &[&str], style: MaskStyle) -> Masker {
    let spec = MaskSpec {
        mask_json: paths.iter().map(|p| (*p).to_owned()).collect(),
        mask_style: style,
        mask_key_env: (style == MaskStyle::Hash).then(|| "UNUSED".into()),
        ..MaskSpec::default()
    };
    let key = MaskKey::new(vec![7; MaskKey::MIN_LEN]).unwrap();
    Masker::compile(&[spec], Some(&key)).unwrap()
}

/// `doc` rewritten in pieces of `size` bytes.
fn rewrite(m: &Masker, doc: &str, size: usize) -> Result<String, JsonStreamError> {
    let mut json = m.json_rewriter().unwrap();
    let mut out = Vec::new();
    for piece in doc.as_bytes().chunks(size.max(1)) {
        json.feed(m, piece, &mut out)?;
    }
    json.finish(m, &mut out);
    Ok(String::from_utf8(out).unwrap())
}

const DOC: &str = r#"{"users": [{"id": 1, "email": "ann@example.com", "ssn": "078-05-1120"},
    {"id": 2, "email": "b\"ob@example.org", "profile": {"ssn": 123456789, "note": "x"}}],
    "ssn": {"raw": ["1", 2, null, true]}, "email": "top@example.com"}"#;

#[test]
fn selected_values_are_masked_whatever_the_piece_size() {
    let m = masker(&["$.users[*].email", "$..ssn"], MaskStyle::Redact);
    let whole = rewrite(&m, DOC, DOC.len()).unwrap();
    let want = serde_json::json!({
        "users": [
            {"id": 1, "email": "****", "ssn": "****"},
            {"id": 2, "email": "****", "profile": {"ssn": "****", "note": "x"}}
        ],
        "ssn": {"raw": ["****", "****", null, "****"]},
        "email": "top@example.com"
    });
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&whole).unwrap(),
        want
    );
    for size in 1..40 {
        assert_eq!(rewrite(&m, DOC, size).unwrap(), whole, "pieces of {size}");
    }
    // What is not selected passes byte for byte, whitespace included.
    assert!(whole.starts_with("{\"users\": [{\"id\": 1, \"email\": \"****\""));
}

#[test]
fn styles_names_and_streams_of_documents() {
    let m = masker(&["$..card", "$['odd key'][0]"], MaskStyle::Last4);
    let doc =
        "{\"c\\u0061rd\": \"4111111111111111\", \"odd key\": [\"secret\", 2]}\n{\"card\": 4242}\n";
    let out = rewrite(&m, doc, 3).unwrap();
    assert_eq!(
        out,
        "{\"c\\u0061rd\": \"************1111\", \"odd key\": [\"**cret\", 2]}\n{\"card\": \"****\"}\n"
    );
    let m = masker(&["$.a"], MaskStyle::Null);
    assert_eq!(
        rewrite(&m, r#"{"a": {"b": "x"}}"#, 2).unwrap(),
        r#"{"a": {"b": null}}"#
    );
    let m = masker(&["$.a"], MaskStyle::Hash);
    let out = rewrite(&m, r#"{"a": "same", "b": {"a": "same"}}"#, 1).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_ne!(v["a"], "same");
    assert_eq!(v["b"]["a"], "same", "only the root's member");
    assert_eq!(
        rewrite(&m, r#"{"a": 12}"#, 5).unwrap(),
        rewrite(&m, r#"{"a":"12"}"#, 5).unwrap().replace(':', ": ")
    );
}

#[test]
fn bounds_and_malformed_bodies() {
    let m = masker(&["$..v"], MaskStyle::Last4);
    let long = format!(r#"{{"v": "{}1234"}}"#, "x".repeat(MAX_VALUE + 10));
    assert_eq!(rewrite(&m, &long, 4096).unwrap(), r#"{"v": "****"}"#);
    let deep = "[".repeat(MAX_DEPTH + 1);
    assert_eq!(rewrite(&m, &deep, 100), Err(JsonStreamError::TooDeep));
    for bad in [
        r#"{"v" "x"}"#,
        r#"{"v": "x"]"#,
        "]",
        r#"{"v": "x",}"#,
        "{v: 1}",
        "[1 2]",
    ] {
        assert!(rewrite(&m, bad, 1).is_err(), "{bad}");
    }
    // A selected value cut off at the end is not written.
    assert_eq!(rewrite(&m, r#"{"v": "ann@exam"#, 3).unwrap(), r#"{"v": "#);
}
