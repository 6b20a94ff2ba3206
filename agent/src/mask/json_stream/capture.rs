//! A selected scalar of the JSON rewriter, read up to [`MAX_VALUE`] bytes and
//! written back masked, and the lexing helpers the rewriter scans strings and
//! literals with.

use super::MAX_VALUE;
use crate::mask::{MaskStyle, Masker, style::REDACTED};

/// A selected scalar being read.
pub(super) struct Capture {
    pub(super) style: MaskStyle,
    /// Its bytes (a string's without the quotes), up to [`MAX_VALUE`].
    pub(super) raw: Vec<u8>,
    pub(super) string: bool,
    pub(super) overflow: bool,
}

impl Capture {
    pub(super) fn push(&mut self, bytes: &[u8]) {
        if self.overflow {
            return;
        }
        if self.raw.len() + bytes.len() > MAX_VALUE {
            self.overflow = true;
            self.raw = Vec::new();
        } else {
            self.raw.extend_from_slice(bytes);
        }
    }

    /// Writes the value masked in its style.
    pub(super) fn write(self, masker: &Masker, out: &mut Vec<u8>) {
        if self.style == MaskStyle::Null || (!self.string && self.raw == b"null") {
            out.extend_from_slice(b"null");
            return;
        }
        let replacement = if self.overflow {
            Some(REDACTED.to_vec())
        } else if self.string && self.raw.contains(&b'\\') {
            let value = unescape(&self.raw).unwrap_or_default();
            masker.column_value(self.style, &value)
        } else {
            masker.column_value(self.style, &self.raw)
        };
        match replacement {
            Some(text) => {
                // Writing to a `Vec` cannot fail.
                let _ = serde_json::to_writer(&mut *out, &String::from_utf8_lossy(&text));
            }
            None => out.extend_from_slice(b"null"),
        }
    }
}

/// The text of a JSON string's body (between its quotes), or `None` if it is not
/// valid.
pub(super) fn unescape(body: &[u8]) -> Option<Vec<u8>> {
    let mut quoted = Vec::with_capacity(body.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(body);
    quoted.push(b'"');
    serde_json::from_slice::<String>(&quoted)
        .ok()
        .map(String::into_bytes)
}

/// Where the string that `piece` continues at `at` ends: the index of its closing
/// quote and `true`, or the piece's length and `false`. `escaped` when the byte at
/// `at` is escaped (the previous piece ended in a backslash).
pub(super) fn string_end(piece: &[u8], mut at: usize, mut escaped: bool) -> (usize, bool, bool) {
    loop {
        if escaped {
            if at >= piece.len() {
                return (piece.len(), false, true);
            }
            at += 1;
        }
        match memchr::memchr2(b'"', b'\\', piece.get(at..).unwrap_or_default()) {
            None => return (piece.len(), false, false),
            Some(n) if piece.get(at + n) == Some(&b'"') => return (at + n, true, false),
            Some(n) => {
                escaped = true;
                at += n + 1;
            }
        }
    }
}

/// Whether `b` continues a number, `true`, `false` or `null`.
pub(super) fn is_literal(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.')
}
