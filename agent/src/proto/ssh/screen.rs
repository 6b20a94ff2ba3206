//! The terminal screen of an interactive shell as the user sees it, rebuilt from
//! the target's output with `vt100` (a maintained terminal-emulator parser: cursor
//! moves, erases, wrapping, the alternate screen — what readline, zsh's line
//! editor and tab completion draw), so that a typed command line is read the way
//! the user reads it, after backspaces, arrows, history recall and completion.
//!
//! A line is read from the cursor's logical line (its rows joined where the
//! terminal wrapped them), minus the prompt that was there before the user started
//! typing ([`Screen::mark_prompt`]), and minus a right-hand prompt (zsh's
//! `RPROMPT`) still shown where it was then.

/// Largest screen tracked (`vt100` keeps 32 bytes a cell: at most 1 MiB a shell;
/// 80×24 is 60 KiB); a bigger terminal is tracked at this size (a long line
/// then reads wrong, which makes it unparsed: the most restrictive).
pub const MAX_COLS: u16 = 320;
pub const MAX_ROWS: u16 = 100;
/// Longest command line read from the screen; a longer one is unparsed.
pub const MAX_LINE: usize = 4096;

/// What the screen shows at Enter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Typed {
    /// The command line the user sees after the prompt (trimmed).
    Line(String),
    /// Nothing after the prompt: an empty line, or typing that was not echoed
    /// (a password prompt).
    Nothing,
    /// A full-screen program (an editor, a pager) is on the alternate screen.
    FullScreen,
    /// The line cannot be told apart from its prompt (the prompt changed or
    /// scrolled away) or is over [`MAX_LINE`]: decided as unparsed.
    Unreadable(String),
}

/// The tracked screen of one shell.
pub struct Screen {
    parser: vt100::Parser,
    /// What was on the cursor's logical line before the first keystroke of the line
    /// being typed; `None` between lines.
    prompt: Option<String>,
    /// What stood right of the cursor on its row then (zsh's `RPROMPT`), and the
    /// column it started at.
    right: Option<(u16, String)>,
}

/// `dimension` within `1..=max`, with 0 (unknown, as `ssh -tt` from a pipe sends)
/// as `default`.
fn bounded(dimension: u32, default: u16, max: u16) -> u16 {
    match u16::try_from(dimension) {
        Ok(0) => default,
        Ok(d) => d.min(max),
        Err(_) => max,
    }
}

impl Screen {
    /// A blank `cols`×`rows` screen (bounded).
    #[must_use]
    pub fn new(cols: u32, rows: u32) -> Self {
        let parser =
            vt100::Parser::new(bounded(rows, 24, MAX_ROWS), bounded(cols, 80, MAX_COLS), 0);
        Self {
            parser,
            prompt: None,
            right: None,
        }
    }

    /// Applies the target's output.
    pub fn output(&mut self, data: &[u8]) {
        self.parser.process(data);
    }

    /// Follows a terminal resize.
    pub fn resize(&mut self, cols: u32, rows: u32) {
        self.parser
            .screen_mut()
            .set_size(bounded(rows, 24, MAX_ROWS), bounded(cols, 80, MAX_COLS));
    }

    /// Whether the shell has bracketed-paste mode on (pasted line breaks do not run).
    #[must_use]
    pub fn bracketed_paste(&self) -> bool {
        self.parser.screen().bracketed_paste()
    }

    /// Whether a line is being typed (its prompt is marked).
    #[must_use]
    pub fn typing(&self) -> bool {
        self.prompt.is_some()
    }

    /// Marks what is before the cursor now as the prompt of the line the user starts
    /// typing (called before the line's first keystroke goes to the target).
    pub fn mark_prompt(&mut self) {
        let screen = self.parser.screen();
        let (row, col) = screen.cursor_position();
        let start = logical_start(screen, row);
        self.prompt = Some(cells(screen, start, row, Some(col)));
        let (_, cols) = screen.size();
        self.right = (col..cols)
            .find(|&c| screen.cell(row, c).is_some_and(vt100::Cell::has_contents))
            .map(|from| (from, span(screen, row, from, cols).trim_end().to_owned()));
    }

    /// Whether the marked prompt was blank: typing began before a prompt showed
    /// (type-ahead at login or while a command ran), so the line may start with the
    /// prompt printed since.
    #[must_use]
    pub fn prompt_blank(&self) -> bool {
        self.prompt.as_deref().is_some_and(|p| p.trim().is_empty())
    }

    /// Reads the line being typed (at Enter) and ends it: the next keystroke starts
    /// a new one.
    pub fn take_line(&mut self) -> Typed {
        let typed = self.line();
        self.prompt = None;
        typed
    }

    /// What [`Screen::take_line`] would read now, leaving the line open.
    #[must_use]
    pub fn line(&self) -> Typed {
        let prompt = self.prompt.as_deref().unwrap_or_default();
        let screen = self.parser.screen();
        if screen.alternate_screen() {
            return Typed::FullScreen;
        }
        let (row, _) = screen.cursor_position();
        let start = logical_start(screen, row);
        let mut end = row;
        let (rows, _) = screen.size();
        while screen.row_wrapped(end) && end + 1 < rows {
            end += 1;
        }
        let mut shown = cells(screen, start, end, None);
        // A right-hand prompt still where it was: not part of the line.
        let (_, cols) = screen.size();
        if let Some((from, text)) = &self.right
            && span(screen, start, *from, cols).trim_end() == text
        {
            shown = span(screen, start, 0, *from)
                + &" ".repeat(usize::from(cols.saturating_sub(*from)))
                + &cells(screen, start + 1, end, None);
        }
        let line = match shown.strip_prefix(prompt) {
            Some(rest) => rest.trim().to_owned(),
            None => match searched(&shown) {
                Some(found) => found,
                None => return Typed::Unreadable(bounded_text(shown.trim())),
            },
        };
        if line.is_empty() {
            Typed::Nothing
        } else if line.len() > MAX_LINE {
            Typed::Unreadable(bounded_text(&line))
        } else {
            Typed::Line(line)
        }
    }
}

/// At most [`MAX_LINE`] bytes of `text`, cut at a character boundary.
fn bounded_text(text: &str) -> String {
    let mut end = text.len().min(MAX_LINE);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default().to_owned()
}

/// The line a readline incremental search shows (`(reverse-i-search)` then the
/// search text in quotes, `: ` and the found line) is the one Enter accepts: the
/// part after `': `.
fn searched(shown: &str) -> Option<String> {
    let rest = shown
        .strip_prefix("(reverse-i-search)`")
        .or_else(|| shown.strip_prefix("(i-search)`"))?;
    let (_, line) = rest.split_once("': ")?;
    Some(line.trim().to_owned())
}

/// The first row of the logical line that `row` belongs to.
fn logical_start(screen: &vt100::Screen, row: u16) -> u16 {
    let mut start = row;
    while start > 0 && screen.row_wrapped(start - 1) {
        start -= 1;
    }
    start
}

/// The text of columns `from..to` of `row` (blank cells as spaces).
fn span(screen: &vt100::Screen, row: u16, from: u16, to: u16) -> String {
    let mut text = String::new();
    for col in from..to {
        match screen.cell(row, col) {
            Some(cell) if cell.is_wide_continuation() => {}
            Some(cell) if cell.has_contents() => text.push_str(cell.contents()),
            _ => text.push(' '),
        }
    }
    text
}

/// The text of rows `from..=to`, each its full width (blank cells as spaces, so a
/// space at a wrap point is kept), the last one up to column `until` if given.
fn cells(screen: &vt100::Screen, from: u16, to: u16, until: Option<u16>) -> String {
    let (_, cols) = screen.size();
    let mut text = String::new();
    for row in from..=to {
        let width = if row == to {
            until.unwrap_or(cols)
        } else {
            cols
        };
        for col in 0..width.min(cols) {
            match screen.cell(row, col) {
                Some(cell) if cell.is_wide_continuation() => {}
                Some(cell) if cell.has_contents() => text.push_str(cell.contents()),
                _ => text.push(' '),
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(screen: &mut Screen, prompt: &[u8], echo: &[u8]) -> Typed {
        screen.output(prompt);
        screen.mark_prompt();
        screen.output(echo);
        screen.take_line()
    }

    #[test]
    fn the_line_is_what_the_screen_shows_after_editing() {
        let mut s = Screen::new(80, 24);
        // "rm -rf /tmpx", backspace, "/victim"; then Home and a word put in front.
        let echo = b"rm -rf /tmpx\x08\x1b[K/victim\r\x1b[12C\x1b[5@sudo ";
        let line = typed(&mut s, b"user@box:~$ ", echo);
        assert_eq!(
            line,
            Typed::Line("sudo rm -rf /tmp/victim".into()),
            "{line:?}"
        );
    }

    #[test]
    fn history_recall_and_completion_read_as_shown() {
        let mut s = Screen::new(80, 24);
        // Up arrow: readline redraws the recalled line; completion appends.
        let line = typed(&mut s, b"$ ", b"ls\x08\x08\x1b[Krm -rf /srv/da");
        assert_eq!(line, Typed::Line("rm -rf /srv/da".into()));
        let line = typed(&mut s, b"\r\n$ ", b"cat /etc/pass\x07wd");
        assert_eq!(line, Typed::Line("cat /etc/passwd".into()));
    }

    #[test]
    fn a_wrapped_line_is_joined_and_a_space_at_the_wrap_kept() {
        let mut s = Screen::new(20, 5);
        // "$ " + 17 characters ends the row with a space, the command goes on below.
        let line = typed(
            &mut s,
            b"\r\n\r\n\r\n\r\n$ ",
            b"echo aaaaaaaaaaaa rm -rf /x",
        );
        assert_eq!(line, Typed::Line("echo aaaaaaaaaaaa rm -rf /x".into()));
    }

    #[test]
    fn unechoed_typing_full_screen_programs_and_lost_prompts() {
        let mut s = Screen::new(80, 24);
        assert_eq!(typed(&mut s, b"Password: ", b""), Typed::Nothing);
        let line = typed(&mut s, b"\r\n\x1b[?1049h", b"dd");
        assert_eq!(line, Typed::FullScreen);
        s.output(b"\x1b[?1049l");
        // The prompt was redrawn differently (here: erased) while typing.
        let line = typed(&mut s, b"\r\n$ ", b"\r\x1b[Krm -rf /x");
        assert!(matches!(line, Typed::Unreadable(_)), "{line:?}");
        let line = typed(
            &mut s,
            b"\r\n$ ",
            b"\r\x1b[K(reverse-i-search)`rm': rm -rf /y",
        );
        assert_eq!(line, Typed::Line("rm -rf /y".into()));
    }

    #[test]
    fn a_zsh_right_prompt_is_not_part_of_the_line() {
        let mut s = Screen::new(40, 5);
        // zsh: the right prompt at the row's end, then the cursor back after `% `.
        s.output(b"\x1b[31C[main]\r% ");
        s.mark_prompt();
        s.output(b"rm -rf /x");
        assert_eq!(s.take_line(), Typed::Line("rm -rf /x".into()));
        // A line that reached it: zsh erased it, and the typed text is all read.
        s.output(b"\r\n\x1b[31C[main]\r% ");
        s.mark_prompt();
        s.output(b"echo aaaaaaaaaaaaaaaaaaaa\x1b[K bbbbbbbbbb");
        assert_eq!(
            s.take_line(),
            Typed::Line("echo aaaaaaaaaaaaaaaaaaaa bbbbbbbbbb".into())
        );
    }

    #[test]
    fn sizes_are_bounded() {
        let mut s = Screen::new(100_000, 0);
        assert_eq!(s.parser.screen().size(), (24, MAX_COLS));
        s.resize(0, u32::MAX);
        assert_eq!(s.parser.screen().size(), (MAX_ROWS, 80));
        let long = vec![b'x'; MAX_LINE + 10];
        let mut s = Screen::new(MAX_COLS.into(), MAX_ROWS.into());
        assert!(matches!(typed(&mut s, b"$ ", &long), Typed::Unreadable(_)));
    }
}
