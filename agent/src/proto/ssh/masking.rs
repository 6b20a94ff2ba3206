//! Masking a stream of terminal or command output, where a value (a card number, a
//! token) may arrive split across reads: output is masked up to its last line break
//! and the rest is held back until more arrives, the line grows past
//! [`MAX_HELD`], or the relay's flush timer fires: short on a terminal
//! ([`FLUSH_AFTER`]), so a prompt without a line break still shows at once to a
//! person; longer for a command's output ([`FLUSH_AFTER_EXEC`]), where nobody waits
//! on a half line and a value written in two pieces is likelier. Values broken up
//! by escape sequences, or inside OSC titles, are masked too (`escape_mask`).

use crate::mask::Masker;
use std::{sync::Arc, time::Duration};

/// Most bytes held back waiting for the end of a line.
pub const MAX_HELD: usize = 4096;
/// How long an unfinished line waits for the rest before it is masked and sent.
pub const FLUSH_AFTER: Duration = Duration::from_millis(15);
/// The same for output without a terminal (exec, subsystems).
pub const FLUSH_AFTER_EXEC: Duration = Duration::from_millis(250);

/// One output stream's masking state.
pub struct StreamMasker {
    masker: Arc<Masker>,
    held: Vec<u8>,
}

impl StreamMasker {
    #[must_use]
    pub fn new(masker: Arc<Masker>) -> Self {
        Self {
            masker,
            held: Vec::new(),
        }
    }

    /// Adds `data`; returns what can be sent now, masked (possibly empty).
    pub fn push(&mut self, data: &[u8]) -> Vec<u8> {
        self.held.extend_from_slice(data);
        let cut = match self.held.iter().rposition(|&b| b == b'\n') {
            Some(at) => at + 1,
            None if self.held.len() > MAX_HELD => self.held.len(),
            None => return Vec::new(),
        };
        let rest = self.held.split_off(cut);
        let ready = std::mem::replace(&mut self.held, rest);
        super::escape_mask::mask(&self.masker, &ready).into_owned()
    }

    /// Whether bytes wait for the end of their line.
    #[must_use]
    pub fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Masks and returns what is held (the timer fired or the stream ended).
    pub fn flush(&mut self) -> Vec<u8> {
        let held = std::mem::take(&mut self.held);
        if held.is_empty() {
            return held;
        }
        super::escape_mask::mask(&self.masker, &held).into_owned()
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::mask::MaskSpec;

    #[test]
    fn a_card_split_across_reads_is_masked() {
        let spec = MaskSpec {
            mask: vec!["credit_card".into()],
            ..MaskSpec::default()
        };
        let masker = Arc::new(Masker::compile(&[spec], None).unwrap());
        let mut s = StreamMasker::new(masker);
        let mut out = s.push(b"card: 4111 1111 ");
        assert!(out.is_empty() && s.holding());
        out.extend(s.push(b"1111 1111\nprompt$ "));
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("4111 1111 1111 1111"), "{text}");
        assert!(text.starts_with("card: "), "{text}");
        assert_eq!(s.flush(), b"prompt$ ");
    }
}
