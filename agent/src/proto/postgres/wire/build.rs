//! Writing the messages the proxy speaks itself: a [`Builder`] for any tagged
//! message, and the few the proxy sends as a server (errors and notices in the
//! client's encoding, `ReadyForQuery`, parameters, the startup packet it logs in
//! with).

use super::Fields;
use crate::proto::postgres::encoding::ClientEncoding;
use bytes::{BufMut as _, Bytes, BytesMut};
use std::num::NonZeroU32;

/// Builds one tagged message, filling in the length at the end.
pub struct Builder {
    buf: BytesMut,
}

impl Builder {
    #[must_use]
    pub fn new(tag: u8) -> Self {
        let mut buf = BytesMut::with_capacity(64);
        buf.put_u8(tag);
        buf.put_u32(0);
        Self { buf }
    }

    #[must_use]
    pub fn cstr(mut self, s: &str) -> Self {
        // A NUL inside would end the field early; PostgreSQL strings cannot hold one.
        self.buf.extend(s.bytes().filter(|b| *b != 0));
        self.buf.put_u8(0);
        self
    }

    /// `s` as a string in the client's `encoding`.
    #[must_use]
    pub fn text(mut self, s: &str, encoding: ClientEncoding) -> Self {
        self.buf
            .extend(encoding.encode(s).iter().filter(|b| **b != 0));
        self.buf.put_u8(0);
        self
    }

    #[must_use]
    pub fn u8(mut self, v: u8) -> Self {
        self.buf.put_u8(v);
        self
    }

    #[must_use]
    pub fn i16(mut self, v: i16) -> Self {
        self.buf.put_i16(v);
        self
    }

    #[must_use]
    pub fn i32(mut self, v: i32) -> Self {
        self.buf.put_i32(v);
        self
    }

    #[must_use]
    pub fn bytes(mut self, v: &[u8]) -> Self {
        self.buf.extend_from_slice(v);
        self
    }

    #[must_use]
    pub fn finish(mut self) -> Bytes {
        let len = u32::try_from(self.buf.len() - 1).unwrap_or(u32::MAX);
        if let Some(field) = self.buf.get_mut(1..5) {
            field.copy_from_slice(&len.to_be_bytes());
        }
        self.buf.freeze()
    }
}

/// `Bind` of the unnamed statement to the unnamed portal, with text parameters
/// (`None`: NULL; never spliced into SQL) and text results.
#[must_use]
pub fn bind_text<'p>(params: impl ExactSizeIterator<Item = Option<&'p str>>) -> Bytes {
    let mut bind = Builder::new(b'B')
        .cstr("")
        .cstr("")
        .i16(0)
        .i16(i16::try_from(params.len()).unwrap_or(0));
    for p in params {
        bind = match p {
            Some(p) => bind
                .i32(i32::try_from(p.len()).unwrap_or(i32::MAX))
                .bytes(p.as_bytes()),
            None => bind.i32(-1),
        };
    }
    bind.i16(0).finish()
}

/// Severity and SQLSTATE of an error or notice the proxy writes.
#[derive(Debug, Clone, Copy)]
pub struct Severity(pub &'static str);

impl Severity {
    pub const ERROR: Self = Self("ERROR");
    pub const FATAL: Self = Self("FATAL");
    pub const NOTICE: Self = Self("NOTICE");
}

/// An `ErrorResponse` ('E') or, with [`Severity::NOTICE`], a `NoticeResponse` ('N'),
/// its texts in the client's `encoding` (as the server would send them).
#[must_use]
pub fn error_response(
    encoding: ClientEncoding,
    severity: Severity,
    code: &str,
    message: &str,
    detail: Option<&str>,
    hint: Option<&str>,
) -> Bytes {
    error_response_at(encoding, severity, code, message, detail, hint, None)
}

/// [`error_response`] with the `P` field when `position` is set: where in the query
/// text the error is, a 1-based index in characters, as the server sends it for a
/// syntax error. psql then shows the line with a caret under that character.
#[must_use]
pub fn error_response_at(
    encoding: ClientEncoding,
    severity: Severity,
    code: &str,
    message: &str,
    detail: Option<&str>,
    hint: Option<&str>,
    position: Option<NonZeroU32>,
) -> Bytes {
    let tag = if severity.0 == "NOTICE" { b'N' } else { b'E' };
    let mut b = Builder::new(tag)
        .u8(b'S')
        .cstr(severity.0)
        .u8(b'V')
        .cstr(severity.0)
        .u8(b'C')
        .cstr(code)
        .u8(b'M')
        .text(message, encoding);
    if let Some(detail) = detail {
        b = b.u8(b'D').text(detail, encoding);
    }
    if let Some(hint) = hint {
        b = b.u8(b'H').text(hint, encoding);
    }
    // In the server's order: after the hint.
    if let Some(position) = position {
        b = b.u8(b'P').cstr(&position.to_string());
    }
    b.u8(0).finish()
}

/// The fields of an `ErrorResponse`/`NoticeResponse` body, by field code.
#[must_use]
pub fn notice_fields(body: &[u8]) -> Vec<(u8, &str)> {
    let mut fields = Fields(body);
    let mut out = Vec::new();
    while let Ok(code) = fields.u8() {
        if code == 0 {
            break;
        }
        match fields.cstr() {
            Ok(value) => out.push((code, value)),
            Err(_) => break,
        }
    }
    out
}

#[must_use]
pub fn ready_for_query(status: u8) -> Bytes {
    Builder::new(b'Z').u8(status).finish()
}

#[must_use]
pub fn parameter_status(name: &str, value: &str) -> Bytes {
    Builder::new(b'S').cstr(name).cstr(value).finish()
}

#[must_use]
pub fn backend_key_data(pid: i32, secret: i32) -> Bytes {
    Builder::new(b'K').i32(pid).i32(secret).finish()
}

#[must_use]
pub fn authentication_ok() -> Bytes {
    Builder::new(b'R').i32(0).finish()
}

/// An untagged startup-phase packet (startup message, cancel request).
#[must_use]
pub fn startup_packet(code: u32, body: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(8 + body.len());
    buf.put_u32(u32::try_from(8 + body.len()).unwrap_or(u32::MAX));
    buf.put_u32(code);
    buf.extend_from_slice(body);
    buf.freeze()
}

/// The body of a startup message with these parameters.
#[must_use]
pub fn startup_body(params: &[(String, String)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in params {
        for s in [name, value] {
            body.extend(s.bytes().filter(|b| *b != 0));
            body.push(0);
        }
    }
    body.push(0);
    body
}
