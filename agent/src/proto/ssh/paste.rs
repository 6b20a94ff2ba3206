//! Bracketed paste in a shell's input: where a typed line really ends.
//!
//! A shell that turned bracketed-paste mode on (`ESC [ ? 2004 h`, as bash ≥ 5.1
//! and zsh do at their prompt) gets pasted text between `ESC [ 200 ~` and
//! `ESC [ 201 ~` from the terminal, and a line break inside it does not run
//! anything: the whole block becomes one multi-line command, run at the next Enter.
//! [`Paste::scan`] finds that Enter (a CR or LF outside a paste) the way the shell
//! will, and keeps the line's bytes: a line holding pasted line breaks shows on
//! several rows, which the screen cannot read back as one command, so it is read
//! from those bytes instead ([`Paste::block`]) and decided line by line — unless
//! an editing key (an arrow, a backspace, Tab, any other control) was typed on it:
//! then what the shell holds cannot be told, and the line is unparsed (the most
//! restrictive). With the mode off, the markers mean nothing to the shell and every
//! CR or LF is an Enter.

/// `ESC [ 200 ~`: a paste starts.
const START: &[u8] = b"\x1b[200~";
/// `ESC [ 201 ~`: a paste ends.
const END: &[u8] = b"\x1b[201~";
/// Both markers are this long.
const MARKER: usize = 6;
/// Longest line kept; a longer pasted block is unparsed.
const MAX_LINE: usize = super::screen::MAX_LINE;

/// A pasted multi-line block, as the shell will run it.
#[derive(Debug, PartialEq, Eq)]
pub enum Block {
    /// Its lines (blank ones left out).
    Lines(Vec<String>),
    /// Editing keys or controls were typed on it, or it is too long: unreadable.
    Unreadable(String),
}

/// Where the client's input stands with respect to bracketed paste. Markers may be
/// split across reads: the last bytes scanned are kept.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Paste {
    /// Inside a paste (its start seen, not its end).
    inside: bool,
    /// A line break was pasted into the line being typed.
    pasted_lines: bool,
    /// The last bytes scanned (at most one marker's length).
    recent: Vec<u8>,
    /// The bytes of the line being typed, markers left out (up to [`MAX_LINE`]).
    line: Vec<u8>,
    /// The line went past [`MAX_LINE`].
    long: bool,
    /// Controls typed on the line (editing keys), but for pasted line breaks and tabs.
    controls: usize,
}

impl Paste {
    /// The index of the first Enter in `data` (a CR or LF that ends the line), given
    /// whether the shell has bracketed-paste mode on; the state after the bytes
    /// before it comes with it, to [`Paste::commit`] once they are passed on.
    #[must_use]
    pub fn scan(&self, data: &[u8], bracketed: bool) -> (Option<usize>, Paste) {
        let mut next = self.clone();
        for (i, &byte) in data.iter().enumerate() {
            let line_break = byte == b'\r' || byte == b'\n';
            if line_break && !(bracketed && next.inside) {
                return (Some(i), next);
            }
            if line_break {
                next.pasted_lines = true;
            }
            next.push(byte);
        }
        (None, next)
    }

    /// Takes `state` (from [`Paste::scan`]) as the state now.
    pub fn commit(&mut self, state: Paste) {
        *self = state;
    }

    /// Whether the line being typed holds pasted line breaks.
    #[cfg(test)]
    #[must_use]
    pub fn pasted_lines(&self) -> bool {
        self.pasted_lines
    }

    /// The line being typed, when it holds pasted line breaks (`None` otherwise: the
    /// screen reads it).
    #[must_use]
    pub fn block(&self) -> Option<Block> {
        if !self.pasted_lines {
            return None;
        }
        let text = String::from_utf8_lossy(&self.line).into_owned();
        if self.long || self.controls > 0 {
            return Some(Block::Unreadable(text));
        }
        let lines = text
            .split(['\r', '\n'])
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        Some(Block::Lines(lines))
    }

    /// The line was decided (or dropped): the next one starts clean. A paste still
    /// open stays open (its end has not come yet).
    pub fn line_done(&mut self) {
        self.pasted_lines = false;
        self.line.clear();
        self.long = false;
        self.controls = 0;
    }

    /// The input was thrown away (a refused line): nothing is pending any more.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    fn push(&mut self, byte: u8) {
        if self.recent.len() == MARKER {
            self.recent.remove(0);
        }
        self.recent.push(byte);
        // Ctrl-C throws the line away: the next one starts clean.
        if byte == 3 && !self.inside {
            self.line_done();
            return;
        }
        let pasted_text = self.inside && matches!(byte, b'\r' | b'\n' | b'\t');
        if (byte < 0x20 || byte == 0x7f) && !pasted_text {
            self.controls += 1;
        }
        if self.line.len() < MAX_LINE {
            self.line.push(byte);
        } else {
            self.long = true;
        }
        let marker = self.recent == START || self.recent == END;
        if marker {
            self.inside = self.recent == START;
            // The marker's ESC was counted as a control, its bytes kept: undone.
            self.controls = self.controls.saturating_sub(1);
            let kept = self.line.len().saturating_sub(MARKER);
            self.line.truncate(kept);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scans and commits `data` up to its Enter; returns where the Enter was.
    fn feed(paste: &mut Paste, data: &[u8], bracketed: bool) -> Option<usize> {
        let (enter, state) = paste.scan(data, bracketed);
        paste.commit(state);
        enter
    }

    #[test]
    fn a_pasted_block_runs_at_the_enter_after_it() {
        let mut p = Paste::default();
        let input = b"\x1b[200~ls\rrm -rf /data\r\x1b[201~\r";
        let enter = feed(&mut p, input, true);
        assert_eq!(enter, Some(input.len() - 1));
        assert!(p.pasted_lines());
        let lines = vec!["ls".to_owned(), "rm -rf /data".to_owned()];
        assert_eq!(p.block(), Some(Block::Lines(lines)));
        p.line_done();
        assert!(!p.pasted_lines());
        assert_eq!(p.block(), None);
    }

    #[test]
    fn text_typed_around_a_paste_is_part_of_its_lines_but_editing_keys_unread_it() {
        let mut p = Paste::default();
        let input = b"sudo \x1b[200~rm -rf /x\n\tls\x1b[201~ -l\r";
        assert_eq!(feed(&mut p, input, true), Some(input.len() - 1));
        let lines = vec!["sudo rm -rf /x".to_owned(), "ls -l".to_owned()];
        assert_eq!(p.block(), Some(Block::Lines(lines)));
        p.line_done();
        // An arrow key after the paste: what the shell holds is not known.
        let input = b"\x1b[200~echo a\nrm -rf /y\x1b[201~\x1b[A\r";
        assert_eq!(feed(&mut p, input, true), Some(input.len() - 1));
        assert!(matches!(p.block(), Some(Block::Unreadable(_))));
    }

    #[test]
    fn without_the_mode_every_line_break_is_an_enter() {
        let mut p = Paste::default();
        let input = b"\x1b[200~ls\rrm -rf /data\r\x1b[201~";
        assert_eq!(feed(&mut p, input, false), Some(8));
        assert!(!p.pasted_lines());
    }

    #[test]
    fn markers_split_across_reads_are_seen() {
        let mut p = Paste::default();
        assert_eq!(feed(&mut p, b"echo \x1b[2", true), None);
        assert_eq!(feed(&mut p, b"00~a\nb", true), None);
        assert!(p.pasted_lines());
        assert_eq!(feed(&mut p, b"\x1b[20", true), None);
        assert_eq!(feed(&mut p, b"1~\r", true), Some(2));
    }

    #[test]
    fn a_line_typed_after_a_paste_on_one_line_is_a_plain_line() {
        let mut p = Paste::default();
        assert_eq!(
            feed(&mut p, b"\x1b[200~git status\x1b[201~\r", true),
            Some(22)
        );
        assert!(!p.pasted_lines());
        p.reset();
        assert_eq!(p, Paste::default());
    }
}
