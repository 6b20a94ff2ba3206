//! Canonical JSON: compact, object keys sorted by code point. What the audit log's
//! `data` and every event's hashed fields are written as, so that a hash computed
//! now matches one computed later from the stored text (or offline, from an export).

use serde_json::Value;

/// Writes `value` as compact JSON with object keys sorted, whatever order the map
/// keeps (`serde_json`'s `preserve_order` feature may be on somewhere in the build).
/// Strings and numbers are written by `serde_json` itself, so the bytes (and every
/// hash over them) match `serde_json::to_string` of a sorted value.
pub(super) fn write_canonical(value: &Value, out: &mut String) {
    let mut bytes = std::mem::take(out).into_bytes();
    canonical_bytes(value, &mut bytes);
    *out = String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
}

/// Appends `value` as canonical JSON (see [`write_canonical`]).
pub(super) fn canonical_bytes(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            // serde_json's map keeps keys sorted, unless some crate in the build turns
            // on its `preserve_order`: sort only then.
            out.push(b'{');
            if map.keys().is_sorted() {
                write_entries(map.iter(), out);
            } else {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_unstable_by_key(|(key, _)| *key);
                write_entries(entries.into_iter(), out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_bytes(item, out);
            }
            out.push(b']');
        }
        scalar => scalar_bytes(scalar, out),
    }
}

/// An object's entries, in the order given, comma-separated.
fn write_entries<'a>(entries: impl Iterator<Item = (&'a String, &'a Value)>, out: &mut Vec<u8>) {
    for (i, (key, value)) in entries.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        scalar_bytes(key, out);
        out.push(b':');
        canonical_bytes(value, out);
    }
}

/// Writes `"name":` as the next key of a canonical JSON object that begins at `start`
/// in `out`, opening the object at its first key. Callers write keys in code-point
/// order, as canonical JSON sorts them.
pub(super) fn object_key(out: &mut Vec<u8>, start: usize, name: &str) {
    out.push(if out.len() == start { b'{' } else { b',' });
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

/// Writes `items` as a canonical JSON array of strings.
pub(super) fn string_array(out: &mut Vec<u8>, items: &[String]) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        scalar_bytes(item, out);
    }
    out.push(b']');
}

/// A string, number, boolean or null, appended without an intermediate `String`.
pub(super) fn scalar_bytes<T: serde::Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail, and these values always serialize.
    let _ = serde_json::to_writer(out, value);
}
