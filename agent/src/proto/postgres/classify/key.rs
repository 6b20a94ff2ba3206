//! The cache key: the SQL text with its literal values replaced by placeholders, so that
//! `… WHERE aid = 12345` and `… WHERE aid = 678` share one cache entry.
//!
//! # Why two texts with the same key have the same classification
//!
//! A tiny lexer replaces two kinds of tokens and leaves every other byte as it is:
//!
//! - a run of at most 9 ASCII digits whose neighbours are neither a letter, a digit,
//!   `_` nor `.` (so not part of an identifier, `1.5`, `1e5`, `0x1F` or `1_000`), by a
//!   placeholder for its value's bucket (below); and
//! - a single-quoted string (`''` inside is a quote) not preceded by a letter, digit,
//!   `_` or `&` (so not `E'…'`, `B'…'`, `X'…'`, `N'…'`, `U&'…'`), by one placeholder for
//!   the empty string and another for any other.
//!
//! It gives up, and the key is the text itself, when the text holds anything that could
//! change how PostgreSQL's lexer reads those tokens or their surroundings: a backslash
//! (escapes when `standard_conforming_strings` is off), `$` (dollar quotes, parameters),
//! `--` or `/*` (comments), non-ASCII bytes, control bytes other than tab, newline and
//! carriage return (so the placeholders, bytes 1–7, cannot occur in a text), and an
//! unterminated quote.
//!
//! So two texts with the same key differ only inside replaced spans, and:
//!
//! 1. **PostgreSQL reads the same tokens from both.** Each replaced span is exactly one
//!    token in both texts: an integer constant (9 digits always fit an `int4`, so never a
//!    `numeric`) or a string constant. Its neighbours cannot extend it into a longer
//!    token, and with no backslash a `'` ends a string whatever
//!    `standard_conforming_strings` says. Whitespace is kept, so adjacent strings join
//!    (or not) alike.
//! 2. **The grammar accepts both or neither.** PostgreSQL's grammar looks at a constant's
//!    value in two places only, both for integers: `float(p)` (error unless 1 ≤ p ≤ 53;
//!    ≤ 24 is `real`) and `ALTER … ALTER [COLUMN] n SET STATISTICS` (1 ≤ n ≤ 32767). The
//!    buckets are 0, 1–24, 25–53, 54–32767 and above, so values in one bucket are alike
//!    there. It never looks at a string's content.
//! 3. **The classifier reads no constant's value.** EXPLAIN's `ANALYZE` counts when
//!    present, whatever its argument; table and function names are identifiers, which
//!    the key keeps. The one exception is COPY's file name, empty or not (the decoded
//!    tree cannot tell `COPY … TO ''` from `TO STDOUT`), and the key keeps that apart.
//!
//! Parse errors quote the text ("syntax error at or near …"), so a failure is never
//! stored under a replaced key: the classifier stores it under the verbatim key instead.

/// A cache key (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Key {
    /// `text` has its literals replaced (else it is the SQL as sent).
    replaced: bool,
    /// The session's `standard_conforming_strings`: it changes how a backslash reads.
    standard_conforming_strings: bool,
    text: Box<str>,
}

impl Key {
    /// The key for `sql`: literals replaced when the lexer is sure of them.
    pub(super) fn new(sql: &str, standard_conforming_strings: bool) -> Key {
        match replace_literals(sql) {
            Some(text) => Key {
                replaced: true,
                standard_conforming_strings,
                text: text.into(),
            },
            None => Key::verbatim(sql, standard_conforming_strings),
        }
    }

    /// The key for `sql` as it is.
    pub(super) fn verbatim(sql: &str, standard_conforming_strings: bool) -> Key {
        Key {
            replaced: false,
            standard_conforming_strings,
            text: sql.into(),
        }
    }

    pub(super) fn is_replaced(&self) -> bool {
        self.replaced
    }

    /// Bytes of text: the cache weighs entries by it.
    pub(super) fn len(&self) -> usize {
        self.text.len()
    }
}

/// Placeholder for an empty string constant `''`.
const EMPTY_STRING: char = '\u{6}';
/// Placeholder for any other simple string constant.
const STRING: char = '\u{7}';

/// The placeholder for an integer constant of at most 9 digits, by the value ranges
/// PostgreSQL's grammar tells apart (see the module docs).
fn integer_placeholder(digits: &str) -> char {
    match digits.parse::<u32>() {
        Ok(0) => '\u{1}',
        Ok(1..=24) => '\u{2}',
        Ok(25..=53) => '\u{3}',
        Ok(54..=32767) => '\u{4}',
        _ => '\u{5}',
    }
}

/// `sql` with integer and simple string constants replaced, or `None` when the text
/// holds anything the lexer is not sure about.
fn replace_literals(sql: &str) -> Option<String> {
    let unsure = |b: u8| {
        matches!(b, b'\\' | b'$' | 0x7f..) || (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r'))
    };
    if sql.bytes().any(unsure) || sql.contains("--") || sql.contains("/*") {
        return None;
    }
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut start = 0; // bytes[start..i] are still to be copied as they are
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let before = i.checked_sub(1).and_then(|j| bytes.get(j)).copied();
        let (end, placeholder) = match b {
            b'"' => (quoted_end(bytes, i)?, None),
            b'\'' if before.is_some_and(|c| is_word(c) || c == b'&') => return None,
            b'\'' => {
                let end = quoted_end(bytes, i)?;
                (end, Some(if end == i + 2 { EMPTY_STRING } else { STRING }))
            }
            b'0'..=b'9' => {
                let end = i + bytes
                    .iter()
                    .skip(i)
                    .take_while(|c| c.is_ascii_digit())
                    .count();
                let standalone = |c: Option<&u8>| !c.is_some_and(|&c| is_word(c) || c == b'.');
                let replace =
                    end - i <= 9 && standalone(before.as_ref()) && standalone(bytes.get(end));
                (
                    end,
                    replace.then(|| integer_placeholder(sql.get(i..end).unwrap_or(""))),
                )
            }
            _ => (i + 1, None),
        };
        if let Some(placeholder) = placeholder {
            out.push_str(sql.get(start..i)?);
            out.push(placeholder);
            start = end;
        }
        i = end;
    }
    out.push_str(sql.get(start..)?);
    Some(out)
}

/// Where the quoted token starting at `bytes[start]` ends (one past its closing quote; a
/// doubled quote is part of the token), or `None` if it does not.
fn quoted_end(bytes: &[u8], start: usize) -> Option<usize> {
    let quote = *bytes.get(start)?;
    let mut i = start + 1;
    loop {
        match *bytes.get(i)? {
            c if c == quote && bytes.get(i + 1) == Some(&quote) => i += 2,
            c if c == quote => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// A byte that continues an identifier or a number.
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn key(sql: &str) -> Option<String> {
        replace_literals(sql)
    }

    #[test]
    fn replaces_numbers_and_simple_strings() {
        let pgbench =
            |aid: u32| format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid};");
        assert_eq!(key(&pgbench(40000)), key(&pgbench(67890)));
        assert_eq!(
            key("SELECT a FROM t WHERE b = 'x' AND c IN (1, 22)").unwrap(),
            "SELECT a FROM t WHERE b = \u{7} AND c IN (\u{2}, \u{2})"
        );
        assert_eq!(key("SELECT 'it''s', ''").unwrap(), "SELECT \u{7}, \u{6}");
    }

    #[test]
    fn keeps_what_is_not_a_standalone_literal() {
        for sql in [
            "SELECT t1.a2 FROM s3.t1",
            "SELECT 1.5, .5, 5., 1e5, 0x1F, 1_000, 1234567890",
            "SELECT \"a'1\" FROM \"t 2\"",
        ] {
            assert_eq!(key(sql).unwrap(), sql);
        }
    }

    #[test]
    fn value_buckets_follow_the_grammar_checks() {
        let float = |p: &str| key(&format!("SELECT 1::float({p})")).unwrap();
        assert_ne!(float("0"), float("1"));
        assert_eq!(float("1"), float("24"));
        assert_ne!(float("24"), float("25"));
        assert_eq!(float("25"), float("53"));
        assert_ne!(float("53"), float("54"));
        let column = |n: &str| key(&format!("ALTER TABLE t ALTER {n} SET STATISTICS 5")).unwrap();
        assert_eq!(column("54"), column("32767"));
        assert_ne!(column("32767"), column("32768"));
    }

    #[test]
    fn gives_up_when_unsure() {
        for sql in [
            "SELECT 'a\\'' ; DROP TABLE users; --'",
            "SELECT E'a', 1",
            "SELECT x'1F', 1",
            "SELECT U&'d\\0061t\\+000061', 1",
            "SELECT $1",
            "SELECT $$a$$",
            "SELECT 1 -- note",
            "SELECT /* note */ 1",
            "SELECT 'é'",
            "SELECT 'unterminated",
            "SELECT \"unterminated",
            "SELECT '\u{1}'",
        ] {
            assert_eq!(key(sql), None, "{sql}");
        }
    }

    #[test]
    fn keys_separate_settings_and_kinds() {
        let on = Key::new("SELECT 1", true);
        assert!(on.is_replaced());
        assert_ne!(on, Key::new("SELECT 1", false));
        assert_ne!(
            Key::new("SELECT 1", true),
            Key::verbatim("SELECT \u{2}", true)
        );
    }
}
