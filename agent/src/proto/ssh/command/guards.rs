//! Cheap checks on a script before `brush-parser` sees it: shapes that fuzzing found
//! to make the parser panic, spin or allocate without bound are `unparsed` at once.
//! They are not what keeps the daemon safe (the parse runs in a bounded worker
//! process, `pool`); they keep the worker from being killed and respawned for the
//! inputs already known, and keep those answers immediate.

/// Whether `text` is refused before parsing.
pub(super) fn refuses(text: &str) -> bool {
    #[cfg(test)]
    if UNGUARDED.load(std::sync::atomic::Ordering::Relaxed) {
        return false;
    }
    paren_depth(text) > MAX_PARENS || huge_fd_redirect(text) || heredoc_with_substitution(text)
}

/// Tests turn the guards off to hand the raw parser a known blowup and check that
/// the worker pool contains it.
#[cfg(test)]
pub(super) static UNGUARDED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Deepest nesting of `(` a script may have to be parsed. The parser tries both
/// readings of each `(` (subshell, or the start of `((` arithmetic), so its time
/// doubles with each level: 16 levels took 25 ms in a debug build, 66 ran for more
/// than 20 s (found by the `ssh_command` fuzz target). No command line a person
/// writes nests this deep; deeper ones are `unparsed`, the most restrictive.
const MAX_PARENS: usize = 12;

/// Whether `text` has a redirect from a file descriptor number too large for the
/// parser (ten digits or more before `<` or `>`), which makes it panic: kept from it
/// altogether, since a panic is also a line in the daemon's log (and an abort under
/// the fuzzer); [`guarded`] is the second line of defence.
fn huge_fd_redirect(text: &str) -> bool {
    let mut digits = 0;
    for b in text.bytes() {
        match b {
            b'0'..=b'9' => digits += 1,
            b'<' | b'>' if digits >= 10 => return true,
            _ => digits = 0,
        }
    }
    false
}

/// Whether `text` has a here-document and a command substitution: the parser's
/// memory grows without bound on some of these (`echo $(cat <<  x ` took over 2 GiB,
/// found by the `ssh_command` fuzz target, and balanced variants did too).
fn heredoc_with_substitution(text: &str) -> bool {
    text.contains("<<") && (text.contains("$(") || text.contains('`') || !plain_heredocs(text))
}

/// Whether every `<<` (or `<<-`) in `text` is followed by a plain delimiter: a
/// word of letters, digits and `_`, quoted or not, after blanks. The parser's memory also ran away on
/// `h;<<` followed by a form feed (six bytes, found by fuzzing).
fn plain_heredocs(text: &str) -> bool {
    text.match_indices("<<").all(|(at, _)| {
        let rest = text.get(at + 2..).unwrap_or_default();
        if rest.starts_with('<') || text.get(..at).is_some_and(|b| b.ends_with('<')) {
            return true; // `<<<`, a here-string
        }
        let rest = rest.strip_prefix('-').unwrap_or(rest);
        let rest = rest.trim_start_matches([' ', '\t']);
        let quote = rest.chars().next().filter(|c| matches!(c, '\'' | '"'));
        let word = quote.map_or(rest, |_| rest.get(1..).unwrap_or_default());
        let len = word
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(word.len());
        len > 0 && quote.is_none_or(|q| word.get(len..).is_some_and(|r| r.starts_with(q)))
    })
}

/// The deepest nesting of `(` in `text`, quotes and escapes not considered (so it is
/// never less than what the parser sees).
fn paren_depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0_usize, 0);
    for b in text.bytes() {
        match b {
            b'(' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}
