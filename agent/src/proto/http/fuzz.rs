//! Entry points for the HTTP fuzz targets (`tests/fuzz`, built with the `fuzzing`
//! feature), and unit tests that run them on a few inputs so they stay in step with
//! the code. Each panics on a finding.
//!
//! - [`path`]: a request path normalized as the proxy does and matched as the
//!   policy does: the result is a clean absolute path (no empty, `.` or `..`
//!   segment, nothing a second pass would remove), and `/admin/**` matches exactly
//!   the paths under `/admin`, however the input was encoded or dotted.
//! - [`json_mask`]: a body through the `mask_json` rewriter in pieces of any size:
//!   the output does not depend on where the pieces are cut, and for a body that is
//!   JSON the output is JSON of the same shape in which every value the paths select
//!   is masked and every other value is unchanged.
#![expect(
    clippy::panic,
    reason = "a fuzz finding is a panic that says what broke"
)]

use super::request::normalize;
use crate::{
    mask::{MaskSpec, Masker},
    policy::path_matches,
};
use serde_json::Value;
use std::sync::OnceLock;

/// One path: the bytes as the path of a request line.
pub fn path(data: &[u8]) {
    let raw = format!("/{}", String::from_utf8_lossy(data));
    let Ok(clean) = normalize(&raw) else {
        return;
    };
    assert!(clean.starts_with('/'), "{raw:?} -> {clean:?}");
    let inner = clean.strip_prefix('/').unwrap_or_default();
    let segments: Vec<&str> = inner
        .strip_suffix('/')
        .unwrap_or(inner)
        .split('/')
        .collect();
    assert!(
        inner.is_empty() || segments.iter().all(|s| !matches!(*s, "" | "." | "..")),
        "{raw:?} -> {clean:?}"
    );
    assert!(path_matches("/**", &clean), "{clean:?}");
    let under_admin = clean == "/admin" || clean.starts_with("/admin/");
    assert_eq!(
        path_matches("/admin/**", &clean),
        under_admin,
        "{raw:?} -> {clean:?}"
    );
    for glob in ["/v1/users/*", "/v1/*/keys/**", "/*/*.json"] {
        let _ = path_matches(glob, &clean);
    }
}

/// The member names the fuzz masker selects: `$.users[*].email` and `$..ssn`.
fn masker() -> &'static Masker {
    static M: OnceLock<Masker> = OnceLock::new();
    M.get_or_init(|| {
        let spec = MaskSpec {
            mask_json: vec!["$.users[*].email".into(), "$..ssn".into()],
            ..MaskSpec::default()
        };
        Masker::compile(&[spec], None).unwrap_or_default()
    })
}

/// One body: the first byte picks the piece size, the rest is the body.
pub fn json_mask(data: &[u8]) {
    let Some((&size, body)) = data.split_first() else {
        return;
    };
    let masker = masker();
    let whole = rewrite(masker, body, body.len().max(1));
    let pieces = rewrite(masker, body, usize::from(size % 16) + 1);
    assert_eq!(whole, pieces, "the output depends on where pieces are cut");
    let (Ok(input), Ok(output)) = (serde_json::from_slice::<Value>(body), whole) else {
        return;
    };
    let output: Value = serde_json::from_slice(&output)
        .unwrap_or_else(|e| panic!("the rewritten JSON is not JSON: {e}"));
    check(&input, &output, Where::Root, false);
}

/// `body` rewritten in pieces of `size` bytes.
fn rewrite(masker: &Masker, body: &[u8], size: usize) -> Result<Vec<u8>, String> {
    let Some(mut json) = masker.json_rewriter() else {
        return Err("no paths".into());
    };
    let mut out = Vec::new();
    for piece in body.chunks(size) {
        json.feed(masker, piece, &mut out)
            .map_err(|e| e.to_string())?;
    }
    json.finish(masker, &mut out);
    Ok(out)
}

/// Where a value stands, for the fuzz paths.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Where {
    Root,
    /// The `users` member of the root.
    Users,
    /// An element of that.
    User,
    Other,
}

/// `output` is `input` with the selected values masked (`masked`: inside one).
fn check(input: &Value, output: &Value, at: Where, masked: bool) {
    match (input, output) {
        (Value::Object(a), Value::Object(b)) => {
            assert_eq!(a.len(), b.len(), "an object changed shape");
            for (key, value) in a {
                let next = match (at, key.as_str()) {
                    (Where::Root, "users") => Where::Users,
                    // `[*]` selects an object's members too.
                    (Where::Users, _) => Where::User,
                    _ => Where::Other,
                };
                let selected = key == "ssn" || (at == Where::User && key == "email");
                let other = b.get(key).unwrap_or_else(|| panic!("member {key:?} lost"));
                check(value, other, next, masked || selected);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "an array changed length");
            let next = if at == Where::Users {
                Where::User
            } else {
                Where::Other
            };
            for (x, y) in a.iter().zip(b) {
                check(x, y, next, masked);
            }
        }
        (Value::Null, Value::Null) => {}
        (_, Value::String(s)) if masked => assert_eq!(s, "****", "a selected value left"),
        (a, b) => {
            assert!(!masked, "a selected value left: {a}");
            assert_eq!(a, b, "a value not selected changed");
        }
    }
}

#[cfg(test)]
#[expect(clippy::indexing_slicing, reason = "tests")]
mod tests {
    #[test]
    fn fuzz_entry_points_hold_on_samples() {
        for p in [
            "v1/%75sers/../users/42",
            "admin/../admin//x",
            "%2e%2e/admin",
            "./admin",
            "admin%2f..%2fx",
            "a/./b/../../..",
            "",
        ] {
            super::path(p.as_bytes());
        }
        for body in [
            r#"{"users": [{"email": "a@b.c", "ssn": {"x": [1, "2"]}}], "ssn": 5, "n": [1.5e3, true]}"#,
            r#"{"us\u0065rs": [{"email": null}]} {"ssn": "x"}"#,
            r#"[{"users": [{"email": "kept"}]}]"#,
            r#"{"users": {"a": {"email": "x"}, "email": "y"}}"#,
            r#"{"users": [{"email": "cut"#,
            "not json",
        ] {
            for size in [0u8, 1, 2, 7, 15] {
                let mut data = vec![size];
                data.extend_from_slice(body.as_bytes());
                super::json_mask(&data);
            }
        }
    }

    /// A few thousand mutations of a seed (bytes flipped, inserted, dropped), as a
    /// short fuzz run inside the unit tests.
    #[test]
    fn fuzz_entry_points_hold_on_mutations() {
        let seed: &[u8] =
            br#"{"users": [{"email": "a@b.c", "ssn": ["1", {"x": 2}]}], "ssn": null, "k": "\"x"}"#;
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = br#"{}[]":,\ ssnemailusers0-9.etrufalsn*"#;
        for _ in 0..3000 {
            let mut data = seed.to_vec();
            for _ in 0..=(next() % 4) {
                let at = usize::try_from(next() % (data.len() as u64 + 1)).unwrap_or(0);
                let byte = alphabet[usize::try_from(next()).unwrap_or(0) % alphabet.len()];
                match next() % 3 {
                    0 if at < data.len() => data[at] = byte,
                    1 if at < data.len() => {
                        data.remove(at);
                    }
                    _ => data.insert(at, byte),
                }
            }
            data.insert(0, u8::try_from(next() % 256).unwrap_or(0));
            super::json_mask(&data);
            super::path(&data[1..]);
        }
    }
}
