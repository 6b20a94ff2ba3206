//! One request head judged once httparse has read it: the framing rules hyper
//! applies (and the ones it applies silently, such as dropping `Content-Length`
//! beside `Transfer-Encoding`), turned into a refusal or what follows the head.

use super::{Refusal, State, chunked::Chunked};
use hyper::StatusCode;

/// Longest method or target kept for the record.
const LINE_CHARS: usize = 200;

/// What one request head means for the stream.
pub(super) enum Head {
    /// More bytes are needed.
    Partial,
    /// An HTTP/2 preface.
    H2,
    Refused(Refusal),
    /// A head of this many bytes, followed by this.
    Done(usize, State),
}

/// Decides a complete head of `len` bytes: refused, or what follows it.
pub(super) fn judge(req: &httparse::Request<'_, '_>, buf: &[u8], len: usize) -> Head {
    let http11 = req.version == Some(1);
    let (mut te, mut cl, mut cl_bad, mut upgrade) = (None, None, false, false);
    for header in req.headers.iter() {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            te = Some(header.value);
        } else if header.name.eq_ignore_ascii_case("content-length") {
            match digits(header.value) {
                Some(n) if cl.is_none_or(|c| c == n) => cl = Some(n),
                _ => cl_bad = true,
            }
        } else if header.name.eq_ignore_ascii_case("upgrade") {
            upgrade = http11;
        }
    }
    let bad = |reason: &str| Head::Refused(refusal(buf, StatusCode::BAD_REQUEST, reason.into()));
    if let Some(te) = te {
        if cl.is_some() || cl_bad {
            return bad(
                "the request has both Content-Length and Transfer-Encoding (request smuggling)",
            );
        }
        if !http11 {
            return bad("an HTTP/1.0 request cannot have Transfer-Encoding");
        }
        if !final_chunked(te) {
            return bad("the request's Transfer-Encoding does not end in chunked");
        }
    }
    if cl_bad {
        return bad(
            "the request's Content-Length is invalid, or given twice with different values",
        );
    }
    let next = if upgrade || req.method == Some("CONNECT") {
        State::Pass
    } else if te.is_some() {
        State::Chunked(Chunked::default())
    } else {
        match cl {
            Some(n) if n > 0 => State::Body(n),
            _ => State::Head,
        }
    };
    Head::Done(len, next)
}

/// A `Content-Length` value: digits only (no sign, no list), as hyper reads it.
fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))
            .flatten()
    })
}

/// Whether the last coding a `Transfer-Encoding` names is `chunked`.
fn final_chunked(value: &[u8]) -> bool {
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.rsplit(',').next())
        .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
}

/// Why a head that httparse refused is bad, in words a client can act on.
pub(super) fn malformed(buf: &[u8], error: httparse::Error) -> String {
    let end = memchr::memmem::find(buf, b"\r\n\r\n").map_or(buf.len(), |at| at + 2);
    let head = buf.get(..end).unwrap_or(buf);
    if head
        .windows(2)
        .any(|w| w.first() == Some(&b'\r') && w.get(1) != Some(&b'\n'))
    {
        "the request head has a bare CR".into()
    } else if head
        .windows(2)
        .any(|w| w.first() == Some(&b'\n') && matches!(w.get(1), Some(b' ' | b'\t')))
    {
        "the request head has an obs-folded (continued) header line".into()
    } else {
        format!("the request head is malformed ({error})")
    }
}

/// A refusal of the head at the start of `buf`, naming its method and target.
pub(super) fn refusal(buf: &[u8], status: StatusCode, reason: String) -> Refusal {
    let line = buf
        .split(|&b| b == b'\n')
        .find(|l| !l.is_empty() && *l != b"\r")
        .unwrap_or_default();
    let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
    Refusal {
        status,
        reason,
        method: bounded(words.next().unwrap_or_default()),
        target: bounded(words.next().unwrap_or_default()),
    }
}

/// Text for a record: lossy, control characters replaced, at most [`LINE_CHARS`].
pub(super) fn bounded(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .take(LINE_CHARS)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}
