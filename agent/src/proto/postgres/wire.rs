//! PostgreSQL protocol v3 framing: reading whole messages under a length cap, and
//! writing the few messages the proxy speaks itself.
//!
//! Messages are kept as their original bytes (`frame`: tag, length, body) so the
//! proxy forwards what it does not change without re-encoding it. Parsing the
//! fields of a message is done only for the messages the proxy looks into.

use super::encoding::ClientEncoding;
use bytes::{Buf as _, Bytes, BytesMut};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt as _};

mod build;

pub use build::*;

/// PostgreSQL's own limit for a startup packet.
pub const MAX_STARTUP: usize = 10_000;
/// Messages during authentication are small; a larger one is an attack or a bug.
pub const MAX_AUTH_MESSAGE: usize = 64 * 1024;

pub const SSL_REQUEST: u32 = 80_877_103;
pub const GSSENC_REQUEST: u32 = 80_877_104;
pub const CANCEL_REQUEST: u32 = 80_877_102;
pub const PROTOCOL_3_0: u32 = 196_608;

/// Why a byte stream is not a valid PostgreSQL conversation.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("message of {len} bytes is over the limit of {max} bytes")]
    TooLong { len: usize, max: usize },
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("connection closed in the middle of a message")]
    Truncated,
}

/// One message as it came off the wire.
#[derive(Debug, Clone)]
pub struct Message {
    /// Tag, length and body, exactly as received.
    pub frame: Bytes,
}

impl Message {
    #[must_use]
    pub fn tag(&self) -> u8 {
        self.frame.first().copied().unwrap_or(0)
    }

    /// The body after the tag and length.
    #[must_use]
    pub fn body(&self) -> &[u8] {
        self.frame.get(5..).unwrap_or_default()
    }

    /// A cursor over the body, for parsing fields.
    #[must_use]
    pub fn fields(&self) -> Fields<'_> {
        Fields(self.body())
    }
}

/// How the server reads the text a client sends, as its `ParameterStatus` reports
/// say; what classifying that text the server's way needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextReading {
    /// `standard_conforming_strings` is on: a backslash in `'…'` is an ordinary
    /// character.
    pub standard_conforming_strings: bool,
    client_encoding: ClientEncoding,
    /// The server's encoding is `SQL_ASCII`: it keeps the client's bytes unconverted
    /// and compares names byte by byte.
    server_sql_ascii: bool,
}

impl TextReading {
    /// Before the server has said: PostgreSQL's default for strings, and no encoding
    /// the proxy reads.
    #[must_use]
    pub fn unreported() -> TextReading {
        TextReading {
            standard_conforming_strings: true,
            client_encoding: ClientEncoding::Unsupported,
            server_sql_ascii: false,
        }
    }

    /// How to read the client's text. A `SQL_ASCII` server keeps other encodings'
    /// bytes as they are, so the same name could be two tables: only UTF-8 is read.
    #[must_use]
    pub fn encoding(&self) -> ClientEncoding {
        match self.client_encoding {
            ClientEncoding::Decoded(_) if self.server_sql_ascii => ClientEncoding::Unsupported,
            other => other,
        }
    }

    /// Takes in a `ParameterStatus` message.
    pub fn note(&mut self, m: &Message) {
        let mut f = m.fields();
        match (f.cstr(), f.cstr()) {
            (Ok("standard_conforming_strings"), Ok(value)) => {
                self.standard_conforming_strings = value == "on";
            }
            (Ok("client_encoding"), Ok(value)) => {
                self.client_encoding = ClientEncoding::named(value);
            }
            (Ok("server_encoding"), Ok(value)) => {
                self.server_sql_ascii = value.eq_ignore_ascii_case("SQL_ASCII");
            }
            _ => {}
        }
    }
}

/// Reads whole tagged messages from one side of a connection.
///
/// Cancel-safe: bytes are read into an internal buffer that survives a dropped
/// `next()`, so the reader can be raced against other events (a decision, a timer)
/// without losing a partial message. The buffer never grows past the cap plus one
/// read: a longer message is refused from its header, before it is read.
pub struct MessageReader<R> {
    inner: R,
    buf: BytesMut,
    max: usize,
}

/// What the reader asks the socket for at a time.
const READ_CHUNK: usize = 32 * 1024;

impl<R: AsyncRead + Unpin> MessageReader<R> {
    pub fn new(inner: R, max: usize) -> Self {
        Self::with_buffer(inner, max, BytesMut::new())
    }

    /// A reader that starts with bytes already read from `inner`.
    pub fn with_buffer(inner: R, max: usize, buf: BytesMut) -> Self {
        Self { inner, buf, max }
    }

    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The next whole message, or `None` at a clean end of stream.
    pub async fn next(&mut self) -> Result<Option<Message>, WireError> {
        loop {
            if let Some(message) = self.try_next()? {
                return Ok(Some(message));
            }
            self.buf.reserve(READ_CHUNK);
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(WireError::Truncated)
                };
            }
        }
    }

    /// A whole message if one is already buffered (no I/O).
    pub fn try_next(&mut self) -> Result<Option<Message>, WireError> {
        let Some(header) = self.buf.get(..5) else {
            return Ok(None);
        };
        let len = declared_len(header.get(1..5).unwrap_or_default())?;
        if len > self.max {
            return Err(WireError::TooLong { len, max: self.max });
        }
        if self.buf.len() < len + 1 {
            self.buf.reserve(len + 1 - self.buf.len());
            return Ok(None);
        }
        Ok(Some(Message {
            frame: self.buf.split_to(len + 1).freeze(),
        }))
    }

    /// Whether a whole message is waiting in the buffer.
    #[must_use]
    pub fn has_buffered_message(&self) -> bool {
        self.buf
            .get(1..5)
            .and_then(|len| declared_len(len).ok())
            .is_some_and(|len| self.buf.len() > len)
    }

    /// Bytes read past the last whole message (must be none before a TLS handshake).
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub fn into_parts(self) -> (R, BytesMut) {
        (self.inner, self.buf)
    }
}

/// The length field of a header (which counts itself), checked to be at least 4.
fn declared_len(field: &[u8]) -> Result<usize, WireError> {
    let bytes: [u8; 4] = field
        .try_into()
        .map_err(|_| WireError::Malformed("short header".into()))?;
    let len = u32::from_be_bytes(bytes);
    if len < 4 {
        return Err(WireError::Malformed(format!("length {len} is below 4")));
    }
    usize::try_from(len).map_err(|_| WireError::Malformed("length overflows".into()))
}

/// Reads one untagged startup-phase packet (startup, SSL/GSS/cancel request) of at
/// most [`MAX_STARTUP`] bytes, returning its code and the rest of its body.
pub async fn read_startup<R: AsyncRead + Unpin>(r: &mut R) -> Result<(u32, Bytes), WireError> {
    let mut header = [0u8; 8];
    r.read_exact(&mut header).await.map_err(eof_is_truncated)?;
    let (len, code) = header.split_at(4);
    let len = declared_len(len)?;
    if len > MAX_STARTUP {
        return Err(WireError::TooLong {
            len,
            max: MAX_STARTUP,
        });
    }
    let code = u32::from_be_bytes(code.try_into().unwrap_or_default());
    let rest = len
        .checked_sub(8)
        .ok_or_else(|| WireError::Malformed(format!("startup packet of {len} bytes")))?;
    let mut body = vec![0u8; rest];
    r.read_exact(&mut body).await.map_err(eof_is_truncated)?;
    Ok((code, Bytes::from(body)))
}

/// Reads exactly one tagged message of at most `max` bytes, nothing past it: for the
/// exchanges before a session (authentication), whose reader must not keep bytes the
/// session's reader would then miss.
pub async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Message, WireError> {
    let mut header = [0u8; 5];
    r.read_exact(&mut header).await.map_err(eof_is_truncated)?;
    let len = declared_len(header.get(1..5).unwrap_or_default())?;
    if len > max {
        return Err(WireError::TooLong { len, max });
    }
    let mut frame = BytesMut::with_capacity(len + 1);
    frame.extend_from_slice(&header);
    frame.resize(len + 1, 0);
    r.read_exact(frame.get_mut(5..).unwrap_or_default())
        .await
        .map_err(eof_is_truncated)?;
    Ok(Message {
        frame: frame.freeze(),
    })
}

fn eof_is_truncated(e: io::Error) -> WireError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => WireError::Truncated,
        _ => WireError::Io(e),
    }
}

/// Parses the `name\0value\0…\0` parameters of a startup message.
pub fn startup_params(body: &[u8]) -> Result<Vec<(String, String)>, WireError> {
    let mut fields = Fields(body);
    let mut params = Vec::new();
    loop {
        let name = fields.cstr()?;
        if name.is_empty() {
            return Ok(params);
        }
        let value = fields.cstr()?;
        params.push((name.to_owned(), value.to_owned()));
    }
}

/// A cursor over a message body.
pub struct Fields<'a>(pub &'a [u8]);

impl<'a> Fields<'a> {
    fn malformed(what: &str) -> WireError {
        WireError::Malformed(format!("truncated {what}"))
    }

    /// A NUL-terminated UTF-8 string.
    pub fn cstr(&mut self) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.cstr_bytes()?)
            .map_err(|_| WireError::Malformed("string is not UTF-8".into()))
    }

    /// A NUL-terminated string in any encoding, without its NUL.
    pub fn cstr_bytes(&mut self) -> Result<&'a [u8], WireError> {
        let end = self
            .0
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| Self::malformed("string"))?;
        let (s, rest) = self.0.split_at(end);
        self.0 = rest.get(1..).unwrap_or_default();
        Ok(s)
    }

    pub fn u8(&mut self) -> Result<u8, WireError> {
        let (first, rest) = self
            .0
            .split_first()
            .ok_or_else(|| Self::malformed("byte"))?;
        self.0 = rest;
        Ok(*first)
    }

    pub fn i16(&mut self) -> Result<i16, WireError> {
        let bytes = self.take(2)?;
        Ok(i16::from_be_bytes(bytes.try_into().unwrap_or_default()))
    }

    pub fn i32(&mut self) -> Result<i32, WireError> {
        let bytes = self.take(4)?;
        Ok(i32::from_be_bytes(bytes.try_into().unwrap_or_default()))
    }

    /// A count that must not be negative.
    pub fn count16(&mut self) -> Result<usize, WireError> {
        usize::try_from(self.i16()?).map_err(|_| WireError::Malformed("negative count".into()))
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(Self::malformed("field"));
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }

    /// A length-prefixed value (`-1` is NULL).
    pub fn value(&mut self) -> Result<Option<&'a [u8]>, WireError> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(None);
        }
        self.take(usize::try_from(len).unwrap_or(usize::MAX))
            .map(Some)
    }

    #[must_use]
    pub fn rest(&self) -> &'a [u8] {
        self.0
    }
}

/// Reads a big-endian i32 at the front of `bytes`.
#[must_use]
pub fn be_i32(bytes: &[u8]) -> Option<i32> {
    let mut b = bytes.get(..4)?;
    Some(b.get_i32())
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    #[test]
    fn text_reading_follows_the_servers_reports() {
        let status = |name: &str, value: &str| Message {
            frame: parameter_status(name, value),
        };
        let mut reading = TextReading::unreported();
        assert!(reading.standard_conforming_strings);
        assert_eq!(reading.encoding(), ClientEncoding::Unsupported);
        reading.note(&status("client_encoding", "UTF8"));
        reading.note(&status("standard_conforming_strings", "off"));
        assert!(!reading.standard_conforming_strings);
        assert_eq!(reading.encoding(), ClientEncoding::Utf8);
        reading.note(&status("application_name", "x"));
        assert_eq!(reading.encoding(), ClientEncoding::Utf8);
        reading.note(&status("client_encoding", "LATIN1"));
        assert_eq!(reading.encoding(), ClientEncoding::named("LATIN1"));
        // A SQL_ASCII server keeps LATIN1 bytes as they are: not read.
        reading.note(&status("server_encoding", "SQL_ASCII"));
        assert_eq!(reading.encoding(), ClientEncoding::Unsupported);
        reading.note(&status("client_encoding", "sql_ascii"));
        assert_eq!(reading.encoding(), ClientEncoding::Utf8);
        reading.note(&status("server_encoding", "UTF8"));
        for other in ["BIG5", "GB18030", "X"] {
            reading.note(&status("client_encoding", other));
            assert_eq!(reading.encoding(), ClientEncoding::Unsupported, "{other}");
        }
    }

    #[tokio::test]
    async fn reads_messages_across_reads_and_refuses_oversized_ones() {
        let q = Builder::new(b'Q').cstr("SELECT 1").finish();
        let mut wire = q.to_vec();
        wire.extend_from_slice(&q);
        let (a, b) = wire.split_at(7);
        let stream = tokio_test_stream(&[a, b]);
        let mut r = MessageReader::new(stream, 1024);
        let m = r.next().await.unwrap().unwrap();
        assert_eq!(m.tag(), b'Q');
        assert_eq!(m.fields().cstr().unwrap(), "SELECT 1");
        assert!(r.next().await.unwrap().is_some());
        assert!(r.next().await.unwrap().is_none());

        // A header announcing 1 GB is refused before anything is allocated for it.
        let huge = [b'Q', 0x40, 0, 0, 0];
        let mut r = MessageReader::new(tokio_test_stream(&[&huge]), 1024);
        assert!(matches!(r.next().await, Err(WireError::TooLong { .. })));
        let bad = [b'Q', 0, 0, 0, 2];
        let mut r = MessageReader::new(tokio_test_stream(&[&bad]), 1024);
        assert!(matches!(r.next().await, Err(WireError::Malformed(_))));
        let cut = [b'Q', 0, 0, 0, 9, b'S'];
        let mut r = MessageReader::new(tokio_test_stream(&[&cut]), 1024);
        assert!(matches!(r.next().await, Err(WireError::Truncated)));
    }

    #[tokio::test]
    async fn startup_packets_are_capped() {
        let body = startup_body(&[("user".into(), "alice".into())]);
        let packet = startup_packet(PROTOCOL_3_0, &body);
        let (code, rest) = read_startup(&mut &packet[..]).await.unwrap();
        assert_eq!(code, PROTOCOL_3_0);
        assert_eq!(
            startup_params(&rest).unwrap(),
            vec![("user".into(), "alice".into())]
        );
        let huge = [0u8, 1, 0, 0, 0, 3, 0, 0];
        assert!(matches!(
            read_startup(&mut &huge[..]).await,
            Err(WireError::TooLong { .. })
        ));
        assert!(startup_params(b"user\0alice").is_err());
    }

    #[test]
    fn error_response_round_trips() {
        let e = error_response(
            ClientEncoding::Utf8,
            Severity::ERROR,
            "42501",
            "no\0pe",
            Some("d"),
            None,
        );
        assert_eq!(e.first(), Some(&b'E'));
        let fields = notice_fields(e.get(5..).unwrap());
        assert!(fields.contains(&(b'C', "42501")));
        assert!(fields.contains(&(b'M', "nope")));
        assert!(fields.contains(&(b'D', "d")));
        assert_eq!(be_i32(e.get(1..5).unwrap()).unwrap() as usize, e.len() - 1);
    }

    /// The position comes last, after the hint, as the server orders the fields; none
    /// without one.
    #[test]
    fn error_response_carries_a_position() {
        let at = |position| {
            error_response_at(
                ClientEncoding::Utf8,
                Severity::ERROR,
                "42601",
                "syntax error at or near \"SELEC\"",
                Some("d"),
                Some("h"),
                NonZeroU32::new(position),
            )
        };
        let e = at(12);
        let fields = notice_fields(e.get(5..).unwrap());
        let codes: Vec<u8> = fields.iter().map(|(code, _)| *code).collect();
        assert_eq!(codes, b"SVCMDHP");
        assert_eq!(fields.last(), Some(&(b'P', "12")));
        let none = at(0);
        assert!(
            notice_fields(none.get(5..).unwrap())
                .iter()
                .all(|(c, _)| *c != b'P')
        );
    }

    /// A stream that yields `chunks` as separate reads, then ends.
    fn tokio_test_stream(chunks: &[&[u8]]) -> tokio::io::DuplexStream {
        use tokio::io::AsyncWriteExt as _;
        let (reader, mut writer) = tokio::io::duplex(1 << 16);
        let chunks: Vec<Vec<u8>> = chunks.iter().map(|c| c.to_vec()).collect();
        tokio::spawn(async move {
            for chunk in chunks {
                writer.write_all(&chunk).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        reader
    }
}
