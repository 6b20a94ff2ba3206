//! A requester's reason, stated in SQL so that psql, scripts and agents need no other
//! tool: a leading comment `/* reason: … */` gives the reason for that statement;
//! `SET portcullis.reason = '…'` gives it for every later statement of the session
//! (PostgreSQL accepts the dotted name as a custom setting, so the server sees a
//! harmless `SET`), and `RESET portcullis.reason` takes it back.

use crate::gate::bounded_justification;

/// What a statement says about the requester's reason.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Stated {
    /// Nothing.
    Nothing,
    /// A reason for this statement only (a leading comment).
    ForStatement(String),
    /// A reason for this and every later statement (`SET`); `None` for `RESET`.
    ForSession(Option<String>),
}

/// The setting that carries a session's reason.
const SETTING: &str = "portcullis.reason";

/// Reads `text` (the statement as recorded, already masked).
pub(super) fn stated(text: &str) -> Stated {
    let text = text.trim_start();
    if let Some(reason) = leading_comment(text) {
        return Stated::ForStatement(reason);
    }
    match setting(text) {
        Some(value) => Stated::ForSession(value),
        None => Stated::Nothing,
    }
}

/// `/* reason: … */` at the very start.
fn leading_comment(text: &str) -> Option<String> {
    let body = text.strip_prefix("/*")?;
    let (inside, _) = body.split_once("*/")?;
    let inside = inside.trim_start();
    let (key, rest) = inside.split_at_checked("reason:".len())?;
    if !key.eq_ignore_ascii_case("reason:") {
        return None;
    }
    let reason = bounded_justification(rest);
    (!reason.is_empty()).then_some(reason)
}

/// `SET [SESSION] portcullis.reason {=|TO} '…'` → `Some(Some(value))`;
/// `RESET portcullis.reason` → `Some(None)`; anything else → `None`.
fn setting(text: &str) -> Option<Option<String>> {
    let mut words = text.split_ascii_whitespace();
    let verb = words.next()?;
    if verb.eq_ignore_ascii_case("reset") {
        let name = words.next()?.trim_end_matches(';');
        return name.eq_ignore_ascii_case(SETTING).then_some(None);
    }
    if !verb.eq_ignore_ascii_case("set") {
        return None;
    }
    let rest = text.trim_start().get(3..)?.trim_start();
    let rest = strip_word(rest, "session").unwrap_or(rest);
    let rest = strip_word(rest, SETTING)?;
    let rest = rest
        .strip_prefix('=')
        .or_else(|| strip_word(rest, "to"))?
        .trim_start();
    let value = quoted(rest)?;
    let reason = bounded_justification(&value);
    Some((!reason.is_empty()).then_some(reason))
}

/// `text` without a leading `word` (ASCII case-insensitive) and the blanks after it.
fn strip_word<'a>(text: &'a str, word: &str) -> Option<&'a str> {
    let (head, tail) = text.split_at_checked(word.len())?;
    let ends = tail.is_empty() || tail.starts_with(|c: char| c.is_ascii_whitespace() || c == '=');
    (head.eq_ignore_ascii_case(word) && ends).then(|| tail.trim_start())
}

/// The value of a single-quoted SQL literal at the start of `text` (`''` is a quote).
fn quoted(text: &str) -> Option<String> {
    let mut chars = text.strip_prefix('\'')?.chars().peekable();
    let mut value = String::new();
    while let Some(c) = chars.next() {
        if c == '\'' {
            if chars.peek() == Some(&'\'') {
                chars.next();
            } else {
                return Some(value);
            }
        }
        value.push(c);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{Stated, stated};

    #[test]
    fn a_leading_comment_is_the_statements_reason() {
        assert_eq!(
            stated("  /* reason: INC-42,\n restore the row */ DELETE FROM t"),
            Stated::ForStatement("INC-42, restore the row".into())
        );
        assert_eq!(
            stated("/* REASON:fix */ select 1"),
            Stated::ForStatement("fix".into())
        );
        assert_eq!(stated("/* why: nope */ select 1"), Stated::Nothing);
        assert_eq!(stated("/* reason: */ select 1"), Stated::Nothing);
        assert_eq!(stated("select 1 /* reason: late */"), Stated::Nothing);
        assert_eq!(stated("/* reason: unterminated select 1"), Stated::Nothing);
    }

    #[test]
    fn set_and_reset_give_the_sessions_reason() {
        let set = |r: &str| Stated::ForSession(Some(r.into()));
        assert_eq!(stated("SET portcullis.reason = 'INC-42'"), set("INC-42"));
        assert_eq!(
            stated("set session PORTCULLIS.REASON to 'it''s urgent';"),
            set("it's urgent")
        );
        assert_eq!(stated("SET portcullis.reason='x'"), set("x"));
        assert_eq!(stated("RESET portcullis.reason;"), Stated::ForSession(None));
        assert_eq!(
            stated("SET portcullis.reason = ''"),
            Stated::ForSession(None)
        );
        assert_eq!(stated("SET portcullis.reasonable = 'x'"), Stated::Nothing);
        assert_eq!(stated("SET search_path = 'x'"), Stated::Nothing);
        assert_eq!(stated("SET portcullis.reason = 'open"), Stated::Nothing);
        assert_eq!(stated("RESET ALL"), Stated::Nothing);
    }
}
