//! Why a text is `Unparsed`, and, when PostgreSQL's parser rejected it, what the server
//! would say: the parser's message and where it stopped.
//!
//! The `pg_query` crate gives only the message of a parser error. `libpg_query`'s own
//! error also carries `cursorpos`, PostgreSQL's error position (the `P` field of an
//! `ErrorResponse`: a 1-based index in characters, which psql turns into `LINE 1: …`
//! and a caret). So on the error path, which is rare and cached, the text is parsed
//! once more through `libpg_query`'s C API (`pg_query.h`, linked in by the `pg_query`
//! crate) to read it, along with the source file the error came from, which tells the
//! parser's rejections from failures after it (a walk too deep, say).

use pg_query::ParserOptions;
use std::{
    ffi::{CStr, CString, c_char, c_int},
    fmt,
    num::NonZeroU32,
};

/// The source files of PostgreSQL's lexer and grammar, as `libpg_query` names them in
/// an error: an error raised there is the server's own answer to the text.
const PARSER_FILES: [&str; 3] = ["scan.l", "gram.y", "parser.c"];

/// Why a text is `Unparsed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The parser's message (`syntax error at or near "SELEC"`), or what kept the
    /// proxy from reading or classifying the text.
    pub message: String,
    /// Whether PostgreSQL's lexer or grammar rejected the text, so that the server
    /// would refuse it with the same message; `false` when the proxy could not read or
    /// classify a text the server might well run.
    pub syntax: bool,
    /// Where the parser stopped, as the server reports it: a 1-based index in
    /// characters into the text. Only for a syntax error, and not for every one.
    pub position: Option<NonZeroU32>,
}

impl ParseError {
    /// What kept the proxy from reading or classifying a text (not a syntax error).
    pub fn unclassifiable(message: impl Into<String>) -> ParseError {
        ParseError {
            message: message.into(),
            syntax: false,
            position: None,
        }
    }

    /// The error `pg_query` gave for `sql` parsed with `options`: a syntax error, with
    /// its position, when `libpg_query`'s lexer or grammar raised it.
    pub(super) fn from_pg_query(
        sql: &str,
        options: ParserOptions,
        error: &pg_query::Error,
    ) -> ParseError {
        let message = match error {
            pg_query::Error::Parse(message) => message,
            pg_query::Error::Conversion(_) => {
                return ParseError::unclassifiable("the text contains a NUL byte");
            }
            other => return ParseError::unclassifiable(other.to_string()),
        };
        match raw_parse_error(sql, options) {
            // The same error, from the parser itself.
            Some(raw) if raw.message == *message && PARSER_FILES.contains(&&*raw.filename) => {
                ParseError {
                    message: raw.message,
                    syntax: true,
                    position: u32::try_from(raw.cursorpos).ok().and_then(NonZeroU32::new),
                }
            }
            _ => ParseError::unclassifiable(message.clone()),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<String> for ParseError {
    fn from(message: String) -> ParseError {
        ParseError::unclassifiable(message)
    }
}

impl From<&str> for ParseError {
    fn from(message: &str) -> ParseError {
        ParseError::unclassifiable(message)
    }
}

// ---- `libpg_query`'s C API --------------------------------------------------------------

/// `PgQueryError` in `pg_query.h`.
#[repr(C)]
struct PgQueryError {
    message: *mut c_char,
    funcname: *mut c_char,
    filename: *mut c_char,
    lineno: c_int,
    cursorpos: c_int,
    context: *mut c_char,
}

/// `PgQueryParseResult` in `pg_query.h`.
#[repr(C)]
struct PgQueryParseResult {
    parse_tree: *mut c_char,
    stderr_buffer: *mut c_char,
    error: *mut PgQueryError,
}

unsafe extern "C" {
    fn pg_query_parse_opts(input: *const c_char, parser_options: c_int) -> PgQueryParseResult;
    fn pg_query_free_parse_result(result: PgQueryParseResult);
}

/// What `libpg_query`'s error says, copied out of its result.
struct RawError {
    message: String,
    filename: String,
    cursorpos: c_int,
}

/// Parses `sql` with `libpg_query`'s raw parser (and, if it parses, its JSON output, which
/// is never read): the error, if any.
fn raw_parse_error(sql: &str, options: ParserOptions) -> Option<RawError> {
    let input = CString::new(sql).ok()?;
    // SAFETY: `input` is NUL-terminated and outlives the call, which only reads it.
    let result = unsafe { pg_query_parse_opts(input.as_ptr(), options.bits()) };
    // SAFETY: `error` is null or points to an error the result owns until it is freed
    // below; its strings are null or NUL-terminated, and are copied before that.
    let error = unsafe { result.error.as_ref() }.map(|error| RawError {
        // SAFETY: as above.
        message: unsafe { text(error.message) },
        // SAFETY: as above.
        filename: unsafe { text(error.filename) },
        cursorpos: error.cursorpos,
    });
    // SAFETY: the result came from `pg_query_parse_opts` and is freed once; nothing
    // borrowed from it outlives this.
    unsafe { pg_query_free_parse_result(result) };
    error
}

/// The C string at `ptr`, or `""` for null.
///
/// # Safety
/// `ptr` is null or points to a NUL-terminated string valid for the call.
unsafe fn text(ptr: *const c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: the caller's promise.
    unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    /// What `pg_query::summary` says about `sql`, as the classifier reads it.
    fn error_of(sql: &str, options: ParserOptions) -> ParseError {
        let error = pg_query::summary(sql, options, -1).err().unwrap();
        ParseError::from_pg_query(sql, options, &error)
    }

    fn syntax(message: &str, position: u32) -> ParseError {
        ParseError {
            message: message.into(),
            syntax: true,
            position: NonZeroU32::new(position),
        }
    }

    /// The positions PostgreSQL 15 sends for these texts (checked with psql
    /// `\set VERBOSITY verbose` against a real server).
    #[test]
    fn syntax_errors_carry_the_servers_position() {
        let cases = [
            ("SELEC 1", syntax("syntax error at or near \"SELEC\"", 1)),
            (
                "SELECT FROM WHERE",
                syntax("syntax error at or near \"WHERE\"", 13),
            ),
            ("SELECT 1 1", syntax("syntax error at or near \"1\"", 10)),
            ("SELECT (1", syntax("syntax error at end of input", 10)),
            (
                "SELECT 'unterminated",
                syntax("unterminated quoted string at or near \"'unterminated\"", 8),
            ),
            // Characters, not bytes: é is two bytes in UTF-8.
            (
                "SELECT 'é' FRM t",
                syntax("syntax error at or near \"t\"", 16),
            ),
        ];
        for (sql, expected) in cases {
            assert_eq!(error_of(sql, ParserOptions::DEFAULT), expected, "{sql}");
        }
    }

    /// With `standard_conforming_strings` off, the second parse reads the text the same
    /// way as the first: `\'` does not end the string.
    #[test]
    fn the_second_parse_uses_the_same_options() {
        let sql = r"SELECT 'a\' FRM t";
        let off = ParserOptions::DISABLE_STANDARD_CONFORMING_STRINGS;
        assert_eq!(
            error_of(sql, off),
            syntax(r#"unterminated quoted string at or near "'a\' FRM t""#, 8)
        );
        assert_eq!(
            error_of(sql, ParserOptions::DEFAULT),
            syntax("syntax error at or near \"t\"", 17)
        );
    }

    #[test]
    fn other_failures_are_not_syntax_errors() {
        let error = pg_query::summary("SELECT 1\0", ParserOptions::DEFAULT, -1)
            .err()
            .unwrap();
        assert_eq!(
            ParseError::from_pg_query("SELECT 1\0", ParserOptions::DEFAULT, &error),
            ParseError::unclassifiable("the text contains a NUL byte")
        );
        // A message the second parse does not repeat is not trusted as a syntax error.
        let error = pg_query::Error::Parse("stack depth limit exceeded".into());
        let unclassifiable = ParseError::from_pg_query("SELECT 1", ParserOptions::DEFAULT, &error);
        assert!(!unclassifiable.syntax && unclassifiable.position.is_none());
        assert_eq!(
            ParseError::from("x".to_owned()),
            ParseError::unclassifiable("x")
        );
        assert_eq!(unclassifiable.to_string(), "stack depth limit exceeded");
    }
}
