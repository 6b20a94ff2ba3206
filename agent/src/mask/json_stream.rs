//! The `mask_json` rewriter: a JSON document (or a stream of them, as in NDJSON) fed
//! in pieces of any size, written back with the values that the session's
//! [`JsonPaths`](super::json_path::JsonPaths) select masked in their rule's style.
//!
//! Memory is bounded whatever the document: the rewriter keeps one small frame per
//! open object or array (at most [`MAX_DEPTH`]), the current key (up to
//! [`MAX_NAME`] bytes) and a selected value being read (up to [`MAX_VALUE`] bytes;
//! a longer one is redacted whole, as `hash` and `last4` need all of it). Everything
//! else is copied through as it comes.
//!
//! A selected string or number becomes a JSON string in the rule's style (`"****"`,
//! `"*******6789"`, a hash token) or `null` (`mask_style = "null"`); `null` stays
//! `null`. A selected object or array keeps its shape and every value inside it is
//! masked. A document that is not JSON stops the rewriting with an error: the caller
//! must end the response there (fail closed), since what follows could not be
//! located.

use super::{
    MaskStyle, Masker,
    json_path::{JsonPaths, MAX_NAME, Step},
};

mod capture;
use capture::{Capture, is_literal, string_end, unescape};

/// Deepest nesting of objects and arrays followed.
pub const MAX_DEPTH: usize = 512;
/// Longest selected value masked by its content; past it, it is redacted whole.
pub const MAX_VALUE: usize = 64 * 1024;

/// Why a body could not be rewritten (it is not JSON as far as it went).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonStreamError {
    #[error("the JSON body is malformed at byte {at}: {what}")]
    Syntax { at: u64, what: &'static str },
    #[error("the JSON body nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// What the next structural byte may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A value (at the top, after `:` or after `,` in an array).
    Value,
    /// A value or `]`, just after `[`.
    ValueOrClose,
    /// A key or `}`, just after `{`.
    KeyOrClose,
    /// A key, after `,` in an object.
    Key,
    Colon,
    /// `,` or the container's end, after a value.
    CommaOrClose,
}

/// The token being read across pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    Structure,
    /// Inside a string; `escaped` after a backslash. `key` for a member name.
    Str {
        escaped: bool,
        key: bool,
    },
    /// Inside a number, `true`, `false` or `null`.
    Literal,
}

/// An open object or array.
#[derive(Debug, Clone, Copy)]
struct Frame {
    object: bool,
    /// The index of the current element (arrays).
    index: u64,
    /// The style everything inside is masked in, when the container was selected.
    masked: Option<MaskStyle>,
}

/// The rewriting of one response body.
pub struct JsonRewriter {
    expect: Expect,
    lex: Lex,
    frames: Vec<Frame>,
    /// The path states of the root and of each open container, `stride` apiece.
    states: Vec<u64>,
    stride: usize,
    /// Scratch states of a scalar's location.
    scratch: Vec<u64>,
    /// The current member name, as read (unescaped at its end).
    key: Vec<u8>,
    /// The current name is longer than [`MAX_NAME`]: only wildcards match it.
    key_long: bool,
    capture: Option<Capture>,
    /// Bytes consumed before the current piece (for error offsets).
    offset: u64,
}

impl JsonRewriter {
    /// A rewriter for `paths` (not empty).
    pub(super) fn new(paths: &JsonPaths) -> JsonRewriter {
        let stride = paths.len();
        let mut states = vec![0; stride];
        paths.root(&mut states);
        JsonRewriter {
            expect: Expect::Value,
            lex: Lex::Structure,
            frames: Vec::new(),
            states,
            stride,
            scratch: vec![0; stride],
            key: Vec::new(),
            key_long: false,
            capture: None,
            offset: 0,
        }
    }

    /// Rewrites the next `piece` of the body onto `out`.
    pub fn feed(
        &mut self,
        masker: &Masker,
        piece: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), JsonStreamError> {
        let mut at = 0;
        // Input from `copied` up to `at` has not been written yet (it passes as it is).
        let mut copied = 0;
        while at < piece.len() {
            match self.lex {
                Lex::Str { escaped, key } => {
                    let start = at;
                    let (end, closed, escaped) = string_end(piece, at, escaped);
                    self.lex = Lex::Str { escaped, key };
                    let body = piece.get(start..end).unwrap_or_default();
                    if key {
                        self.key_bytes(body);
                    } else if let Some(c) = &mut self.capture {
                        c.push(body);
                    }
                    at = if closed { end + 1 } else { end };
                    if closed {
                        self.lex = Lex::Structure;
                        if key {
                            self.expect = Expect::Colon;
                        } else {
                            self.value_ended(masker, out, &mut copied, at);
                        }
                    }
                }
                Lex::Literal => {
                    let start = at;
                    let end = piece
                        .get(at..)
                        .unwrap_or_default()
                        .iter()
                        .position(|&b| !is_literal(b))
                        .map_or(piece.len(), |n| at + n);
                    if let Some(c) = &mut self.capture {
                        c.push(piece.get(start..end).unwrap_or_default());
                    }
                    at = end;
                    if end < piece.len() {
                        self.lex = Lex::Structure;
                        self.value_ended(masker, out, &mut copied, at);
                    }
                }
                Lex::Structure => {
                    let byte = piece.get(at).copied().unwrap_or_default();
                    if !matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
                        self.structure(masker, piece, at, byte, out, &mut copied)?;
                    }
                    at += 1;
                }
            }
        }
        if self.capture.is_none() {
            out.extend_from_slice(piece.get(copied..).unwrap_or_default());
        }
        self.offset += piece.len() as u64;
        Ok(())
    }

    /// The end of the body: a selected number at the very end is written; a selected
    /// value cut off is not.
    pub fn finish(&mut self, masker: &Masker, out: &mut Vec<u8>) {
        if self.lex == Lex::Literal {
            self.lex = Lex::Structure;
            let mut copied = 0;
            self.value_ended(masker, out, &mut copied, 0);
        }
    }

    /// One structural byte (not whitespace) at `at`.
    fn structure(
        &mut self,
        masker: &Masker,
        piece: &[u8],
        at: usize,
        byte: u8,
        out: &mut Vec<u8>,
        copied: &mut usize,
    ) -> Result<(), JsonStreamError> {
        let error = |what| JsonStreamError::Syntax {
            at: self.offset + at as u64,
            what,
        };
        match (self.expect, byte) {
            (Expect::ValueOrClose, b']')
            | (Expect::CommaOrClose, b']' | b'}')
            | (Expect::KeyOrClose, b'}') => {
                let object = byte == b'}';
                match self.frames.pop() {
                    Some(frame) if frame.object == object => {}
                    _ => return Err(error("a bracket closes what was not opened")),
                }
                self.states.truncate(self.states.len() - self.stride);
                self.after_value();
            }
            (Expect::CommaOrClose, b',') => match self.frames.last_mut() {
                Some(frame) if frame.object => self.expect = Expect::Key,
                Some(frame) => {
                    frame.index += 1;
                    self.expect = Expect::Value;
                }
                None => return Err(error("a comma outside any object or array")),
            },
            (Expect::KeyOrClose | Expect::Key, b'"') => {
                self.key.clear();
                self.key_long = false;
                self.lex = Lex::Str {
                    escaped: false,
                    key: true,
                };
            }
            (Expect::Colon, b':') => {
                self.unescape_key();
                self.expect = Expect::Value;
            }
            (Expect::Value | Expect::ValueOrClose, _) => {
                self.value_starts(masker, piece, at, byte, out, copied)?;
            }
            _ => return Err(error("unexpected character")),
        }
        Ok(())
    }

    /// A value starting with `byte` at `at`.
    fn value_starts(
        &mut self,
        masker: &Masker,
        piece: &[u8],
        at: usize,
        byte: u8,
        out: &mut Vec<u8>,
        copied: &mut usize,
    ) -> Result<(), JsonStreamError> {
        let style = self.locate(masker.json.as_ref());
        match byte {
            b'{' | b'[' => {
                if self.frames.len() >= MAX_DEPTH {
                    return Err(JsonStreamError::TooDeep);
                }
                let inherited = self.frames.last().and_then(|f| f.masked);
                self.frames.push(Frame {
                    object: byte == b'{',
                    index: 0,
                    masked: style.or(inherited),
                });
                self.states.extend_from_slice(&self.scratch);
                self.expect = if byte == b'{' {
                    Expect::KeyOrClose
                } else {
                    Expect::ValueOrClose
                };
            }
            b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                let string = byte == b'"';
                self.lex = if string {
                    Lex::Str {
                        escaped: false,
                        key: false,
                    }
                } else {
                    Lex::Literal
                };
                let inherited = self.frames.last().and_then(|f| f.masked);
                if let Some(style) = style.or(inherited) {
                    out.extend_from_slice(piece.get(*copied..at).unwrap_or_default());
                    let mut raw = Vec::new();
                    if !string {
                        raw.push(byte);
                    }
                    self.capture = Some(Capture {
                        style,
                        raw,
                        string,
                        overflow: false,
                    });
                }
            }
            _ => {
                return Err(JsonStreamError::Syntax {
                    at: self.offset + at as u64,
                    what: "expected a value",
                });
            }
        }
        Ok(())
    }

    /// Steps the paths to the value about to start (into `scratch`): the style it is
    /// selected in, if any.
    fn locate(&mut self, paths: Option<&JsonPaths>) -> Option<MaskStyle> {
        let depth = self.frames.len();
        let parent = self
            .states
            .get(depth * self.stride..(depth + 1) * self.stride)
            .unwrap_or_default();
        let step = match self.frames.last() {
            // A top-level value is the root itself: selected by no path.
            None => None,
            Some(f) if f.object => Some(Step::Key((!self.key_long).then_some(self.key.as_slice()))),
            Some(f) => Some(Step::Index(f.index)),
        };
        if let (Some(paths), Some(step)) = (paths, step) {
            paths.step(parent, step, &mut self.scratch)
        } else {
            self.scratch.copy_from_slice(parent);
            None
        }
    }

    /// A value ended at `at` (just after it): a captured one is written masked, and
    /// the input after it passes again.
    fn value_ended(&mut self, masker: &Masker, out: &mut Vec<u8>, copied: &mut usize, at: usize) {
        if let Some(capture) = self.capture.take() {
            capture.write(masker, out);
            *copied = at;
        }
        self.after_value();
    }

    fn after_value(&mut self) {
        self.expect = if self.frames.is_empty() {
            Expect::Value
        } else {
            Expect::CommaOrClose
        };
    }

    /// More of the current member name, as written.
    fn key_bytes(&mut self, body: &[u8]) {
        // An escaped name is up to six bytes a character until unescaped.
        if self.key_long || self.key.len() + body.len() > MAX_NAME * 6 {
            self.key_long = true;
            self.key.clear();
        } else {
            self.key.extend_from_slice(body);
        }
    }

    /// The member name, unescaped; one that cannot be is matched by wildcards only.
    fn unescape_key(&mut self) {
        if !self.key_long && self.key.contains(&b'\\') {
            match unescape(&self.key) {
                Some(name) => self.key = name,
                None => self.key_long = true,
            }
        }
        if self.key.len() > MAX_NAME {
            self.key_long = true;
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
mod tests;
