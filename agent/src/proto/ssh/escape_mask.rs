//! Masking terminal output whose values are interrupted by escape sequences:
//! `grep --color` and `ls --color` put SGR codes inside a match
//! (`sec\x1b[1mret`), editors and prompts move the cursor between pieces, and a
//! title can carry a value in an OSC string (`\x1b]0;…\x07`).
//!
//! The text the terminal shows is masked with the escapes taken out, and the
//! escapes are put back so the terminal still renders: where the masking left the
//! text as it was, at their places; inside a masked run, right after its
//! replacement (in their order, so colours and modes end as they would have). OSC
//! and DCS strings are masked on their own, keeping their framing.

use crate::mask::Masker;
use std::borrow::Cow;

const ESC: u8 = 0x1b;
const BEL: u8 = 0x07;

/// One escape sequence, at a place in the shown text.
struct Escape {
    /// Bytes of shown text before it.
    at: usize,
    /// The sequence (an OSC or DCS string with its payload masked).
    bytes: Vec<u8>,
}

/// `data` (terminal output, whole lines where possible) with the masking applied
/// across escape sequences.
#[must_use]
pub fn mask<'a>(masker: &Masker, data: &'a [u8]) -> Cow<'a, [u8]> {
    if !data.contains(&ESC) {
        return masker.mask_value(data);
    }
    let (text, escapes, strings_changed) = split(masker, data);
    let shown = masker.mask_value(&text);
    if !strings_changed && matches!(shown, Cow::Borrowed(_)) {
        return Cow::Borrowed(data);
    }
    Cow::Owned(merge(&text, &shown, &escapes))
}

/// The shown text of `data`, its escape sequences, and whether an OSC/DCS payload
/// was masked.
fn split(masker: &Masker, data: &[u8]) -> (Vec<u8>, Vec<Escape>, bool) {
    let mut text = Vec::with_capacity(data.len());
    let mut escapes = Vec::new();
    let mut changed = false;
    let mut i = 0;
    while let Some(&b) = data.get(i) {
        if b != ESC {
            text.push(b);
            i += 1;
            continue;
        }
        let end = sequence_end(data, i);
        let seq = data.get(i..end).unwrap_or_default();
        let bytes = match seq.get(1) {
            Some(b']' | b'P') => {
                let (framed, this) = mask_string(masker, seq);
                changed |= this;
                framed
            }
            _ => seq.to_vec(),
        };
        escapes.push(Escape {
            at: text.len(),
            bytes,
        });
        i = end;
    }
    (text, escapes, changed)
}

/// Where the escape sequence starting at `start` (an ESC) ends (exclusive): CSI up
/// to its final byte, OSC/DCS up to BEL or ST (or the end of the data), others two
/// bytes (three for a charset designation).
fn sequence_end(data: &[u8], start: usize) -> usize {
    let rest = data.get(start + 1..).unwrap_or_default();
    let len = match rest.first() {
        Some(b'[') => rest
            .iter()
            .skip(1)
            .position(|b| (0x40..=0x7e).contains(b))
            .map_or(rest.len(), |p| p + 2),
        Some(b']' | b'P' | b'_' | b'^') => {
            let mut end = rest.len();
            for (j, w) in rest.windows(2).enumerate() {
                if w.first() == Some(&BEL) {
                    end = j + 1;
                    break;
                }
                if w == [ESC, b'\\'] {
                    end = j + 2;
                    break;
                }
            }
            if rest.last() == Some(&BEL) && end == rest.len() {
                end = rest.len();
            }
            end
        }
        Some(b'(' | b')' | b'*' | b'+' | b'#' | b'%') => 2.min(rest.len()),
        Some(_) => 1,
        None => 0,
    };
    (start + 1 + len).min(data.len())
}

/// An OSC/DCS string with its payload masked (framing kept), and whether it changed.
fn mask_string(masker: &Masker, seq: &[u8]) -> (Vec<u8>, bool) {
    let body_end = if seq.ends_with(&[ESC, b'\\']) {
        seq.len() - 2
    } else if seq.ends_with(&[BEL]) {
        seq.len() - 1
    } else {
        seq.len()
    };
    let (head, payload, tail) = (
        seq.get(..2).unwrap_or_default(),
        seq.get(2..body_end).unwrap_or_default(),
        seq.get(body_end..).unwrap_or_default(),
    );
    match masker.mask_value(payload) {
        Cow::Borrowed(_) => (seq.to_vec(), false),
        Cow::Owned(replaced) => ([head, &replaced, tail].concat(), true),
    }
}

/// The masked text with the escapes put back. Lines are matched one to one when the
/// masking kept their number (a replacement then only moves escapes within its own
/// line); otherwise the whole is one run.
fn merge(text: &[u8], masked: &[u8], escapes: &[Escape]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(masked.len() + escapes.iter().map(|e| e.bytes.len()).sum::<usize>());
    let lines = |t: &[u8]| memchr::memchr_iter(b'\n', t).count();
    let spans: Vec<((usize, usize), (usize, usize))> = if lines(text) == lines(masked) {
        line_spans(text)
            .into_iter()
            .zip(line_spans(masked))
            .collect()
    } else {
        vec![((0, text.len()), (0, masked.len()))]
    };
    let mut next = escapes.iter().peekable();
    let mut written = 0;
    for ((a, b), (c, d)) in spans {
        let (t, m) = (
            text.get(a..b).unwrap_or_default(),
            masked.get(c..d).unwrap_or_default(),
        );
        let prefix = t.iter().zip(m).take_while(|(x, y)| x == y).count();
        let room = t.len().min(m.len()) - prefix;
        let suffix = t
            .iter()
            .rev()
            .zip(m.iter().rev())
            .take(room)
            .take_while(|(x, y)| x == y)
            .count();
        // Where an escape at shown position `at` (within this line) goes in `masked`.
        let place = |at: usize| -> usize {
            let at = at - a;
            if at <= prefix {
                c + at
            } else if at >= t.len() - suffix {
                d - (t.len() - at)
            } else {
                d - suffix
            }
        };
        while let Some(e) = next.next_if(|e| e.at <= b) {
            let to = place(e.at.max(a));
            out.extend_from_slice(masked.get(written..to.max(written)).unwrap_or_default());
            written = written.max(to);
            out.extend_from_slice(&e.bytes);
        }
    }
    out.extend_from_slice(masked.get(written..).unwrap_or_default());
    for e in next {
        out.extend_from_slice(&e.bytes);
    }
    out
}

/// The byte ranges of the lines of `text` (each with its `\n`).
fn line_spans(text: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = 0;
    for (i, &b) in text.iter().enumerate() {
        if b == b'\n' {
            spans.push((start, i + 1));
            start = i + 1;
        }
    }
    spans.push((start, text.len()));
    spans
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::mask::MaskSpec;

    fn masker(words: &[&str]) -> Masker {
        let spec = MaskSpec {
            mask: vec!["credit_card".into()],
            mask_words: words.iter().map(|w| (*w).to_owned()).collect(),
            ..MaskSpec::default()
        };
        Masker::compile(&[spec], None).unwrap()
    }

    fn masked(m: &Masker, data: &[u8]) -> String {
        String::from_utf8(mask(m, data).into_owned()).unwrap()
    }

    #[test]
    fn a_value_split_by_sgr_codes_is_masked_and_the_codes_kept() {
        let m = masker(&["hunter2secret"]);
        // What `grep --color=always secret` prints around its match.
        let out = masked(
            &m,
            b"pw=hunter2\x1b[01;31m\x1b[Ksecret\x1b[m\x1b[K done\r\n",
        );
        assert!(
            !out.contains("secret") && !out.contains("hunter2"),
            "{out:?}"
        );
        assert!(out.starts_with("pw="), "{out:?}");
        assert!(out.ends_with(" done\r\n"), "{out:?}");
        for code in ["\x1b[01;31m", "\x1b[K", "\x1b[m"] {
            assert!(out.contains(code), "{code:?} kept: {out:?}");
        }
        let out = masked(&m, b"sec: hunter\x1b[1m2sec\x1b[0mret\n");
        assert!(!out.contains("hunter"), "{out:?}");
        assert!(
            out.contains("\x1b[1m") && out.contains("\x1b[0m"),
            "{out:?}"
        );
    }

    #[test]
    fn a_card_split_by_cursor_moves_and_colour_is_masked() {
        let m = masker(&[]);
        let out = masked(
            &m,
            b"\x1b[32m4111 1111\x1b[0m \x1b[1;1H1111 1111\x1b[?25h\n",
        );
        assert!(!out.contains("1111 1111"), "{out:?}");
        assert!(
            out.contains("\x1b[1;1H") && out.contains("\x1b[?25h"),
            "{out:?}"
        );
    }

    #[test]
    fn values_in_osc_titles_are_masked_with_their_framing() {
        let m = masker(&["topsecret"]);
        let out = masked(&m, b"\x1b]0;user@db: cat topsecret\x07$ ");
        assert!(!out.contains("topsecret"), "{out:?}");
        assert!(
            out.starts_with("\x1b]0;user@db: cat ") && out.ends_with("\x07$ "),
            "{out:?}"
        );
        let out = masked(&m, b"\x1b]2;topsecret\x1b\\ok\n");
        assert!(
            !out.contains("topsecret") && out.ends_with("\x1b\\ok\n"),
            "{out:?}"
        );
    }

    #[test]
    fn output_without_values_is_unchanged_and_other_lines_keep_their_colours() {
        let m = masker(&["topsecret"]);
        let plain = b"\x1b[01;34mdir\x1b[0m  file\r\n\x1b]0;title\x07";
        assert!(matches!(mask(&m, plain), Cow::Borrowed(_)));
        let out = masked(
            &m,
            b"\x1b[1ma\x1b[0m\ntop\x1b[7msecret\x1b[0m\n\x1b[2mb\x1b[0m\n",
        );
        assert!(
            !out.contains("topsecret") && !out.contains("top\x1b[7msecret"),
            "{out:?}"
        );
        assert!(out.starts_with("\x1b[1ma\x1b[0m\n"), "{out:?}");
        assert!(out.ends_with("\n\x1b[2mb\x1b[0m\n"), "{out:?}");
    }

    #[test]
    fn unfinished_sequences_do_not_panic() {
        let m = masker(&["topsecret"]);
        for data in [
            &b"\x1b"[..],
            b"\x1b[",
            b"\x1b]0;topsecret",
            b"x\x1b(",
            b"\x1b]\x07",
        ] {
            let out = mask(&m, data);
            assert!(!String::from_utf8_lossy(&out).contains("topsecret"));
        }
    }
}
