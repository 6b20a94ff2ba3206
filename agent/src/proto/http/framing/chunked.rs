//! Chunked request framing followed byte by byte, as hyper's decoder reads it (hex
//! size, optional whitespace and extensions, strict CRLF after the size line and
//! after each chunk's data, then trailer lines up to an empty line), only to find
//! where the body ends. Limits (extension and trailer sizes) are hyper's to enforce;
//! a byte hyper's decoder refuses ends the following (`None`).

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum At {
    /// The first hex digit of a size.
    #[default]
    Start,
    Size,
    /// Whitespace after the size.
    SizeLws,
    Extension,
    /// The LF ending a size line.
    SizeLf,
    Data,
    DataCr,
    DataLf,
    Trailer,
    TrailerLf,
    /// The CR of the empty line ending the body (or a trailer line's first byte).
    EndCr,
    EndLf,
}

/// The state of one chunked body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Chunked {
    at: At,
    /// The chunk size being read, then the data bytes left in the chunk.
    size: u64,
}

impl Chunked {
    /// Follows `data`: how many of its bytes belong to this body and whether the body
    /// ended there; `None` at a byte hyper's decoder refuses.
    pub(super) fn step(&mut self, data: &[u8]) -> Option<(usize, bool)> {
        let mut used = 0;
        while let Some(rest) = data.get(used..).filter(|r| !r.is_empty()) {
            if self.at == At::Data {
                let take = self.size.min(rest.len() as u64);
                used += usize::try_from(take).ok()?;
                self.size -= take;
                if self.size == 0 {
                    self.at = At::DataCr;
                }
                continue;
            }
            let byte = *rest.first()?;
            used += 1;
            self.at = match (self.at, byte) {
                (At::Start, b) => {
                    self.size = hex(b)?;
                    At::Size
                }
                (At::Size, b) if hex(b).is_some() => {
                    self.size = self.size.checked_mul(16)?.checked_add(hex(b)?)?;
                    At::Size
                }
                (At::Size | At::SizeLws, b' ' | b'\t') => At::SizeLws,
                (At::Size | At::SizeLws, b';') => At::Extension,
                (At::Size | At::SizeLws | At::Extension, b'\r') => At::SizeLf,
                (At::Extension, b'\n') => return None,
                (At::Extension, _) => At::Extension,
                (At::SizeLf, b'\n') if self.size == 0 => At::EndCr,
                (At::SizeLf, b'\n') => At::Data,
                (At::DataCr, b'\r') => At::DataLf,
                (At::DataLf, b'\n') => At::Start,
                (At::Trailer, b'\r') => At::TrailerLf,
                (At::EndCr, b'\r') => At::EndLf,
                (At::Trailer | At::EndCr, _) => At::Trailer,
                (At::TrailerLf, b'\n') => At::EndCr,
                (At::EndLf, b'\n') => return Some((used, true)),
                _ => return None,
            };
        }
        Some((used, false))
    }
}

fn hex(b: u8) -> Option<u64> {
    char::from(b).to_digit(16).map(u64::from)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    /// Feeds `body` split at every position (and byte by byte): the end is found
    /// at the same place each time.
    fn end_of(body: &[u8]) -> Option<usize> {
        let whole = Chunked::default()
            .step(body)
            .map(|(n, done)| done.then_some(n));
        for cut in 0..=body.len() {
            let mut c = Chunked::default();
            let (a, b) = body.split_at(cut);
            let first = c.step(a);
            let got = match first {
                None => None,
                Some((n, true)) => Some(Some(n)),
                Some((n, false)) => c.step(b).map(|(m, done)| done.then_some(n + m)),
            };
            assert_eq!(got, whole, "cut at {cut}");
        }
        let mut c = Chunked::default();
        let mut bytewise = Some(None);
        for (i, byte) in body.iter().enumerate() {
            match c.step(std::slice::from_ref(byte)) {
                None => {
                    bytewise = None;
                    break;
                }
                Some((_, true)) => {
                    bytewise = Some(Some(i + 1));
                    break;
                }
                Some(_) => {}
            }
        }
        assert_eq!(bytewise, whole);
        whole.flatten()
    }

    #[test]
    fn finds_the_end_as_hyper_reads_it() {
        let plain = b"5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        assert_eq!(end_of(plain), Some(15));
        let ext = b"A ; name=value\r\n0123456789\r\n0;x\r\n\r\nNEXT";
        assert_eq!(end_of(ext), Some(ext.len() - 4));
        let trailers = b"1\r\nx\r\n0\r\nExpires: never\r\nX-A: b\r\n\r\nNEXT";
        assert_eq!(end_of(trailers), Some(trailers.len() - 4));
        // An unfinished body is not ended.
        assert_eq!(end_of(b"5\r\nhel"), None);
        assert!(Chunked::default().step(b"5\r\nhel").unwrap() == (6, false));
    }

    #[test]
    fn refuses_what_hyper_refuses() {
        for bad in [
            &b"x\r\n"[..],
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n",
            b"1;a\nb\r\n",
            b"fffffffffffffffff\r\n",
            b"0\r\n\r\r",
        ] {
            assert_eq!(Chunked::default().step(bad), None, "{bad:?}");
        }
    }
}
