//! `mask_json` paths (`$.users[*].email`, `$..ssn`): parsed once, at policy load, and
//! matched against the location of each value of a JSON document as it streams by.
//!
//! The paths are the part of `JSONPath` (RFC 9535) that can be decided from a value's
//! location alone, which is all a streaming masker knows: the root `$`, member names
//! (`.name`, `['name']`, `["name"]`), array indices (`[0]`), wildcards (`.*`, `[*]`)
//! and descendants (`..name`, `..*`, `..[0]`). Filters, slices, negative indices and
//! unions need the whole document (or its length) and are refused with a reason.
//!
//! Matching walks the path like an automaton: each open object or array keeps, per
//! path, the set of path positions reached at its location (a bit set: a path has at
//! most [`MAX_SEGMENTS`] segments), and a member or element steps that set once.
//! A value whose location reaches the end of some path is masked, and with it every
//! value inside it.

use super::MaskStyle;

/// Most segments in one path (positions fit a `u64` bit set).
pub const MAX_SEGMENTS: usize = 32;
/// Longest member name in a path; a longer key in a document matches only wildcards.
pub const MAX_NAME: usize = 256;

/// Why a `mask_json` path cannot be used; the text says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonPathError {
    #[error("a JSON path starts with `$` (the document), e.g. `$.users[*].email`")]
    NoRoot,
    #[error("at byte {at}: {what}")]
    Syntax { at: usize, what: String },
    #[error(
        "at byte {at}: {what} cannot be decided while the response streams; use member names, \
         [index], [*] or `..` (e.g. `$.users[*].email`, `$..ssn`)"
    )]
    Unsupported { at: usize, what: &'static str },
    #[error("more than {MAX_SEGMENTS} segments; shorten the path or use `..`")]
    TooLong,
    #[error("the path `$` alone would mask the whole document; name what to mask")]
    WholeDocument,
}

/// What one segment selects among the children of a value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Selector {
    Name(Vec<u8>),
    Index(u64),
    Any,
}

/// One step of a path: the children of the current values (`.x`), or all their
/// descendants (`..x`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    descendants: bool,
    selector: Selector,
}

/// One parsed path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    segments: Vec<Segment>,
}

/// Where a value stands in its parent: the key it has (`None` when it is longer than
/// [`MAX_NAME`]: then only wildcards match it), or its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'a> {
    Key(Option<&'a [u8]>),
    Index(u64),
}

impl Selector {
    fn matches(&self, step: Step<'_>) -> bool {
        match (self, step) {
            (Selector::Any, _) => true,
            (Selector::Name(name), Step::Key(Some(key))) => name == key,
            (Selector::Index(i), Step::Index(j)) => *i == j,
            _ => false,
        }
    }
}

impl JsonPath {
    /// Parses `text`, refusing what cannot be matched while streaming.
    pub fn parse(text: &str) -> Result<JsonPath, JsonPathError> {
        let bytes = text.as_bytes();
        if bytes.first() != Some(&b'$') {
            return Err(JsonPathError::NoRoot);
        }
        let mut at = 1;
        let mut segments = Vec::new();
        while at < bytes.len() {
            let (segment, next) = segment(bytes, at)?;
            segments.push(segment);
            at = next;
        }
        if segments.is_empty() {
            return Err(JsonPathError::WholeDocument);
        }
        if segments.len() > MAX_SEGMENTS {
            return Err(JsonPathError::TooLong);
        }
        Ok(JsonPath { segments })
    }
}

/// The segment at `at` and where the next one starts.
fn segment(b: &[u8], at: usize) -> Result<(Segment, usize), JsonPathError> {
    let syntax = |at: usize, what: &str| JsonPathError::Syntax {
        at,
        what: what.to_owned(),
    };
    match (b.get(at), b.get(at + 1)) {
        (Some(b'.'), Some(b'.')) => {
            let (selector, next) = match b.get(at + 2) {
                Some(b'[') => bracket(b, at + 2)?,
                _ => dotted(b, at + 2)?,
            };
            Ok((
                Segment {
                    descendants: true,
                    selector,
                },
                next,
            ))
        }
        (Some(b'.'), _) => {
            let (selector, next) = dotted(b, at + 1)?;
            Ok((
                Segment {
                    descendants: false,
                    selector,
                },
                next,
            ))
        }
        (Some(b'['), _) => {
            let (selector, next) = bracket(b, at)?;
            Ok((
                Segment {
                    descendants: false,
                    selector,
                },
                next,
            ))
        }
        _ => Err(syntax(at, "expected `.name`, `..name` or `[…]`")),
    }
}

/// A name or `*` after a dot.
fn dotted(b: &[u8], at: usize) -> Result<(Selector, usize), JsonPathError> {
    if b.get(at) == Some(&b'*') {
        return Ok((Selector::Any, at + 1));
    }
    let first = |c: u8| c.is_ascii_alphabetic() || c == b'_' || c >= 0x80;
    let rest = |c: u8| first(c) || c.is_ascii_digit() || c == b'-';
    match b.get(at) {
        Some(&c) if first(c) => {}
        _ => {
            return Err(JsonPathError::Syntax {
                at,
                what: "expected a member name or `*` (quote other names: `['my key']`)".into(),
            });
        }
    }
    let end = b
        .get(at..)
        .unwrap_or_default()
        .iter()
        .position(|&c| !rest(c))
        .map_or(b.len(), |n| at + n);
    name(b.get(at..end).unwrap_or_default().to_vec(), at).map(|s| (s, end))
}

/// A member name, checked for length.
fn name(name: Vec<u8>, at: usize) -> Result<Selector, JsonPathError> {
    if name.len() > MAX_NAME {
        return Err(JsonPathError::Syntax {
            at,
            what: format!("a member name longer than {MAX_NAME} bytes"),
        });
    }
    Ok(Selector::Name(name))
}

/// `[*]`, `[N]`, `['name']` or `["name"]` at `at` (the `[`).
fn bracket(b: &[u8], at: usize) -> Result<(Selector, usize), JsonPathError> {
    let inner = at + 1;
    let close = |end: usize| -> Result<usize, JsonPathError> {
        match b.get(end) {
            Some(b']') => Ok(end + 1),
            Some(b',') => Err(JsonPathError::Unsupported {
                at: end,
                what: "a union (`[a,b]`)",
            }),
            Some(b':') => Err(JsonPathError::Unsupported {
                at: end,
                what: "a slice (`[a:b]`)",
            }),
            _ => Err(JsonPathError::Syntax {
                at: end,
                what: "expected `]`".into(),
            }),
        }
    };
    match b.get(inner) {
        Some(b'*') => Ok((Selector::Any, close(inner + 1)?)),
        Some(&q @ (b'\'' | b'"')) => {
            let (text, end) = quoted(b, inner + 1, q)?;
            Ok((name(text, inner)?, close(end)?))
        }
        Some(c) if c.is_ascii_digit() => {
            let len = b
                .get(inner..)
                .unwrap_or_default()
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            let digits = std::str::from_utf8(b.get(inner..inner + len).unwrap_or_default())
                .unwrap_or_default();
            if len > 1 && digits.starts_with('0') {
                return Err(JsonPathError::Syntax {
                    at: inner,
                    what: "an index with a leading zero".into(),
                });
            }
            let index = digits.parse().map_err(|_| JsonPathError::Syntax {
                at: inner,
                what: "an index too large".into(),
            })?;
            Ok((Selector::Index(index), close(inner + len)?))
        }
        Some(b'-') => Err(JsonPathError::Unsupported {
            at: inner,
            what: "a negative index (counted from the end)",
        }),
        Some(b'?') => Err(JsonPathError::Unsupported {
            at: inner,
            what: "a filter (`[?…]`)",
        }),
        Some(b':') => Err(JsonPathError::Unsupported {
            at: inner,
            what: "a slice (`[a:b]`)",
        }),
        _ => Err(JsonPathError::Syntax {
            at: inner,
            what: "expected `*`, an index or a quoted name".into(),
        }),
    }
}

/// The text of a quoted name starting at `at` (after the quote `q`), with `\\` and
/// `\q` unescaped, and where it ends (after the closing quote).
fn quoted(b: &[u8], mut at: usize, q: u8) -> Result<(Vec<u8>, usize), JsonPathError> {
    let mut text = Vec::new();
    loop {
        match (b.get(at), b.get(at + 1)) {
            (Some(&c), _) if c == q => return Ok((text, at + 1)),
            (Some(b'\\'), Some(&c)) if c == q || c == b'\\' => {
                text.push(c);
                at += 2;
            }
            (Some(b'\\'), _) => {
                return Err(JsonPathError::Syntax {
                    at,
                    what: "only `\\\\` and an escaped quote are escapes in a name".into(),
                });
            }
            (Some(&c), _) => {
                text.push(c);
                at += 1;
            }
            (None, _) => {
                return Err(JsonPathError::Syntax {
                    at,
                    what: "a quoted name is not closed".into(),
                });
            }
        }
    }
}

/// The `mask_json` paths of a session, each with its rule's style.
#[derive(Debug, Clone, Default)]
pub struct JsonPaths {
    paths: Vec<(JsonPath, MaskStyle)>,
}

/// The positions reached in each path at one location: one bit set per path.
pub type States = [u64];

impl JsonPaths {
    pub fn push(&mut self, path: JsonPath, style: MaskStyle) {
        self.paths.push((path, style));
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// How many bit sets a location's [`States`] has.
    #[must_use]
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// The states of the document's root: every path at its start.
    pub fn root(&self, out: &mut [u64]) {
        out.fill(1);
    }

    /// The states of the child `step` of a value whose states are `parent`, into
    /// `child`; returns the most restrictive style of the paths it completes, if any.
    pub fn step(&self, parent: &States, step: Step<'_>, child: &mut [u64]) -> Option<MaskStyle> {
        let mut matched: Option<MaskStyle> = None;
        for (((path, style), &from), to) in self.paths.iter().zip(parent).zip(child.iter_mut()) {
            let mut next = 0u64;
            let mut bits = from;
            while bits != 0 {
                let at = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let Some(segment) = path.segments.get(at) else {
                    continue;
                };
                if segment.descendants {
                    next |= 1 << at;
                }
                if segment.selector.matches(step) {
                    next |= 1 << (at + 1);
                }
            }
            if next & (1 << path.segments.len()) != 0 {
                matched = Some(matched.map_or(*style, |s| s.max(*style)));
            }
            *to = next;
        }
        matched
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    /// Whether `path` selects the value at `location`.
    fn selects(path: &str, location: &[Step<'_>]) -> bool {
        let mut paths = JsonPaths::default();
        paths.push(JsonPath::parse(path).unwrap(), MaskStyle::Redact);
        let mut states = vec![0];
        paths.root(&mut states);
        let mut matched = None;
        for step in location {
            let mut next = vec![0];
            matched = paths.step(&states, *step, &mut next);
            states = next;
        }
        matched.is_some()
    }

    fn key(k: &str) -> Step<'_> {
        Step::Key(Some(k.as_bytes()))
    }

    #[test]
    fn paths_select_what_rfc_9535_says() {
        let email = [key("users"), Step::Index(3), key("email")];
        assert!(selects("$.users[*].email", &email));
        assert!(selects("$['users'][3][\"email\"]", &email));
        assert!(selects("$..email", &email));
        assert!(selects("$.users..email", &email));
        assert!(selects("$..[3].email", &email));
        assert!(selects("$.*.*.*", &email));
        assert!(!selects("$.users[2].email", &email));
        assert!(!selects("$.email", &email));
        assert!(!selects("$.users[*]", &email), "only the element itself");
        assert!(selects("$.users[*]", &email[..2]));
        assert!(selects(
            "$..ssn",
            &[key("a"), Step::Index(0), key("b"), key("ssn")]
        ));
        assert!(selects("$..ssn", &[key("ssn")]));
        assert!(!selects("$..ssn", &[key("ssn2")]));
        assert!(!selects("$..ssn", &[Step::Key(None)]));
        assert!(selects("$..*", &[Step::Key(None)]));
    }

    #[test]
    fn unsupported_and_malformed_paths_say_why() {
        for (path, want) in [
            ("users", "starts with `$`"),
            ("$", "whole document"),
            ("$.users[?@.admin]", "filter"),
            ("$.users[-1]", "negative index"),
            ("$.users[0:2]", "slice"),
            ("$.users[0,2]", "union"),
            ("$.users[", "expected `*`"),
            ("$.users[01]", "leading zero"),
            ("$['a", "not closed"),
            ("$.", "member name"),
            ("$ .a", "expected `.name`"),
        ] {
            let error = JsonPath::parse(path).unwrap_err().to_string();
            assert!(error.contains(want), "{path}: {error}");
        }
        let long = format!("${}", ".a".repeat(MAX_SEGMENTS + 1));
        assert_eq!(JsonPath::parse(&long), Err(JsonPathError::TooLong));
    }
}
