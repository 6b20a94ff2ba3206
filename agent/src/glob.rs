//! The one wildcard matcher of policies and masking: `*` matches any run of
//! characters (`/` and `.` included), and, where a caller asks for it, `?` matches one
//! character and letters match ASCII case-insensitively.
//!
//! Policy `exe` patterns are case-sensitive with `*` only (a path with a `?` in it is
//! matched literally); table patterns are lowercase against lowercased names; masking's
//! column patterns use both options, as PostgreSQL folds unquoted names.

/// How a pattern reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Syntax {
    /// `?` matches exactly one character (else it is literal).
    pub question_mark: bool,
    /// ASCII letters match either case.
    pub fold_ascii_case: bool,
}

impl Syntax {
    /// `*` only, case-sensitive: policy paths and names.
    pub const PLAIN: Self = Self {
        question_mark: false,
        fold_ascii_case: false,
    };
    /// `*` and `?`, ASCII case-insensitive: SQL identifiers.
    pub const IDENTIFIER: Self = Self {
        question_mark: true,
        fold_ascii_case: true,
    };
}

/// Whether `text` matches `pattern` whole. Backtracks only to the last `*`, so it is
/// linear in practice and never allocates.
#[must_use]
pub fn matches(pattern: &str, text: &str, syntax: Syntax) -> bool {
    let next = |s: &str, at: usize| s.get(at..).and_then(|rest| rest.chars().next());
    let (mut p, mut t) = (0, 0);
    // Where the last `*` is in the pattern, and where in the text it stopped.
    let mut star: Option<(usize, usize)> = None;
    while let Some(tc) = next(text, t) {
        match next(pattern, p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(pc) if same(pc, tc, syntax) => {
                p += pc.len_utf8();
                t += tc.len_utf8();
            }
            _ => match star {
                Some((sp, st)) => {
                    // The `*` takes one more character of the text, and we retry.
                    let st = st + next(text, st).map_or(1, char::len_utf8);
                    (p, t) = (sp + 1, st);
                    star = Some((sp, st));
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .unwrap_or_default()
        .chars()
        .all(|c| c == '*')
}

fn same(pc: char, tc: char, syntax: Syntax) -> bool {
    pc == tc
        || (syntax.question_mark && pc == '?')
        || (syntax.fold_ascii_case && pc.eq_ignore_ascii_case(&tc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(p: &str, t: &str) -> bool {
        matches(p, t, Syntax::PLAIN)
    }

    fn ident(p: &str, t: &str) -> bool {
        matches(p, t, Syntax::IDENTIFIER)
    }

    #[test]
    fn plain_patterns() {
        assert!(plain("/usr/bin/psql", "/usr/bin/psql"));
        assert!(!plain("/usr/bin/psql", "/usr/bin/psql2"));
        assert!(!plain("/usr/bin/psql", "/usr/bin/psq"));
        assert!(plain("/usr/bin/*", "/usr/bin/psql"));
        assert!(plain("*/psql", "/opt/pg/bin/psql"));
        assert!(plain("*", ""));
        assert!(plain("a*b*c", "aXbYbZc"));
        assert!(!plain("a*b*c", "aXbYbZ"));
        assert!(!plain("/usr/bin/ps?l", "/usr/bin/psql"), "? is literal");
        assert!(plain("/usr/bin/ps?l", "/usr/bin/ps?l"));
        assert!(!plain("/USR/bin/*", "/usr/bin/psql"), "case-sensitive");
        assert!(plain("/tmp/é*", "/tmp/étude"));
        assert!(plain("/usr/*", "/usr/local/bin/psql"), "* crosses /");
        assert!(plain("/opt/*/bin/*", "/opt/pg/bin/psql"));
        assert!(!plain("/opt/*/bin/*", "/opt/pg/sbin"));
        assert!(plain("/a*a", "/aa"));
        assert!(!plain("/a*a*a", "/aa"));
        assert!(plain("/a*b*c", "/abbbc"));
        assert!(plain("**", "x"));
        assert!(!plain("", "x"));
    }

    #[test]
    fn identifier_patterns() {
        assert!(ident("users", "USERS"));
        assert!(ident("card_?", "card_1"));
        assert!(!ident("card_?", "card_12"));
        assert!(ident("*a*b*c", "xxaxxbxxbxc"));
        assert!(!ident("*a*b*c", "xxaxxbxxbx"));
        assert!(ident("*password*", "old_PASSWORD"));
        assert!(ident("?é", "xé"));
    }
}
