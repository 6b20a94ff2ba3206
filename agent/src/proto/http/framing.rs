//! Request framing checked before hyper reads it, on HTTP/1 client connections.
//!
//! hyper reads a request with both `Content-Length` and `Transfer-Encoding` by the
//! latter and drops the former without telling the service, so such a smuggling
//! attempt could not be answered as one. [`Scanned`] sits between the client's stream
//! and hyper and reads each request head first (httparse, as hyper does). A head with
//! both framing headers, an obs-folded line, a bare CR, a `Transfer-Encoding` other
//! than a final `chunked` (or in HTTP/1.0), an invalid `Content-Length`, or one that
//! is malformed or too large is never handed to hyper: in its place hyper reads a
//! marker request carrying this connection's random token, then nothing more. The
//! service ([`Framing::refused`]) answers the marker `400` (`431` for size) with a
//! record and closes the connection; what the client sent after the bad head is
//! read and dropped, never parsed, never forwarded.
//!
//! To find each head on a keep-alive connection the scanner follows the body framing
//! as hyper does: `Content-Length` bytes, or chunked framing (sizes, extensions,
//! trailers, strict CRLF, as hyper's decoder). Where it stops following (an HTTP/2
//! preface, an upgrade or `CONNECT`, whose bytes may be another protocol, or chunked
//! framing hyper refuses itself) it passes the rest through untouched: hyper still
//! re-frames whatever it forwards and closes a connection whose framing it refused.

mod chunked;
mod head;
#[cfg(test)]
mod tests;

use chunked::Chunked;
use head::{Head, bounded, judge, malformed, refusal};
use hyper::{Request, StatusCode};
use std::{
    fmt::Write as _,
    io,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Sleep,
};

/// The header the marker request carries the connection's token in; a client's own
/// use of it is refused.
pub(super) const MARKER: &str = "portcullis-refused";
/// Header slots a head is parsed into without allocating (`max_headers` is 100 by
/// default).
const STACK_HEADERS: usize = 128;
/// The HTTP/2 prior-knowledge preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A request head refused before hyper read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refusal {
    pub status: StatusCode,
    pub reason: String,
    /// As the client wrote them (bounded, control characters replaced); empty when
    /// the request line could not be read.
    pub method: String,
    pub target: String,
}

/// What a connection's scanner and its requests share.
pub(super) struct Framing {
    token: String,
    refusal: Mutex<Option<Refusal>>,
}

impl Framing {
    pub(super) fn new() -> Arc<Self> {
        let mut bytes = [0u8; 16];
        // Without randomness the token is all zeros: a client that forges it is
        // refused all the same (any use of the marker header is), only its record
        // would name the wrong reason.
        let _ = getrandom::fill(&mut bytes);
        let token = bytes.iter().fold(String::new(), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        });
        Arc::new(Self {
            token,
            refusal: Mutex::new(None),
        })
    }

    /// The refusal `req` stands for: the scanner's when it is the marker, or one for
    /// a client that sent the marker header itself. `None` for every other request.
    pub(super) fn refused<B>(&self, req: &Request<B>) -> Option<Refusal> {
        let marker = req.headers().get(MARKER)?;
        if marker.as_bytes() == self.token.as_bytes()
            && let Some(refusal) = self.slot().take()
        {
            return Some(refusal);
        }
        Some(Refusal {
            status: StatusCode::BAD_REQUEST,
            reason: format!("the request carries `{MARKER}`, a header reserved for Portcullis"),
            method: bounded(req.method().as_str().as_bytes()),
            target: bounded(req.uri().to_string().as_bytes()),
        })
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Refusal>> {
        self.refusal.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The request hyper reads in place of a refused head.
    fn marker(&self) -> Vec<u8> {
        format!(
            "GET / HTTP/1.1\r\nhost: portcullis.invalid\r\n{MARKER}: {}\r\n\
             connection: close\r\ncontent-length: 0\r\n\r\n",
            self.token
        )
        .into_bytes()
    }
}

/// Where the scanner is in the client's byte stream.
#[derive(Debug)]
enum State {
    /// The connection's first bytes: an HTTP/2 preface or a request head.
    Start,
    Head,
    /// Body bytes still to come (`Content-Length`).
    Body(u64),
    Chunked(Chunked),
    /// No more scanning: everything passes.
    Pass,
    /// A head was refused: the marker goes to hyper, then nothing more.
    Refused,
}

/// The client's stream as hyper reads it: request heads checked first.
pub(super) struct Scanned<S> {
    inner: S,
    framing: Arc<Framing>,
    state: State,
    /// A head begun but not complete, not yet handed to hyper.
    held: Vec<u8>,
    /// Bytes handed to hyper before anything newly read: an accepted held head (and
    /// what followed it), or the marker.
    out: Vec<u8>,
    out_at: usize,
    max_head: usize,
    max_headers: usize,
    /// Time a client gets to finish a head it began (hyper's own timer starts only
    /// once it reads the head's first bytes).
    head_timeout: Duration,
    /// When the held head must be complete.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<S> Scanned<S> {
    /// Scans `inner` (an HTTP/1 connection) unless `scan` is false (HTTP/2 by ALPN).
    pub(super) fn new(
        inner: S,
        framing: Arc<Framing>,
        scan: bool,
        max_head: usize,
        max_headers: usize,
        head_timeout: Duration,
    ) -> Self {
        Self {
            inner,
            framing,
            state: if scan { State::Start } else { State::Pass },
            held: Vec::new(),
            out: Vec::new(),
            out_at: 0,
            max_head,
            max_headers,
            head_timeout,
            deadline: None,
        }
    }

    /// Follows `data` from the current state. Returns how many of its bytes may go
    /// to hyper now, and whether the rest is a head begun (to hold). A refused head
    /// leaves the marker in `out`.
    fn scan(&mut self, data: &[u8]) -> (usize, bool) {
        let mut at = 0;
        while let Some(rest) = data.get(at..).filter(|r| !r.is_empty()) {
            match &mut self.state {
                State::Pass => return (data.len(), false),
                State::Refused => return (at, false),
                State::Body(left) => {
                    let take = (*left).min(rest.len() as u64);
                    at += usize::try_from(take).unwrap_or(rest.len());
                    *left -= take;
                    if *left == 0 {
                        self.state = State::Head;
                    }
                }
                State::Chunked(chunked) => match chunked.step(rest) {
                    Some((used, done)) => {
                        at += used;
                        if done {
                            self.state = State::Head;
                        }
                    }
                    None => self.state = State::Pass,
                },
                State::Start | State::Head => {
                    let start = matches!(self.state, State::Start);
                    match self.head(rest, start) {
                        Head::Partial => return (at, true),
                        Head::H2 => self.state = State::Pass,
                        Head::Refused(refusal) => {
                            *self.framing.slot() = Some(refusal);
                            self.out = self.framing.marker();
                            self.out_at = 0;
                            self.state = State::Refused;
                        }
                        Head::Done(len, next) => {
                            at += len;
                            self.state = next;
                        }
                    }
                }
            }
        }
        (at, false)
    }

    /// Reads the head at the start of `buf`.
    fn head(&self, buf: &[u8], start: bool) -> Head {
        if start {
            let n = buf.len().min(H2_PREFACE.len());
            if buf.get(..n) == H2_PREFACE.get(..n) {
                return if n == H2_PREFACE.len() {
                    Head::H2
                } else {
                    Head::Partial
                };
            }
        }
        // Most heads fit the stack's slots; a configured maximum above them gets a
        // vector (a head per request: no allocation on the common path).
        let mut stack = [httparse::EMPTY_HEADER; STACK_HEADERS];
        let mut heap = Vec::new();
        let headers = if let Some(slots) = stack.get_mut(..self.max_headers) {
            slots
        } else {
            heap.resize(self.max_headers, httparse::EMPTY_HEADER);
            heap.as_mut_slice()
        };
        let mut req = httparse::Request::new(headers);
        let parsed = req.parse(buf);
        let too_large = |len: usize| {
            (len > self.max_head).then(|| {
                let reason = format!("the request head is over {} bytes", self.max_head);
                Head::Refused(refusal(
                    buf,
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    reason,
                ))
            })
        };
        match parsed {
            Ok(httparse::Status::Partial) => too_large(buf.len()).unwrap_or(Head::Partial),
            Ok(httparse::Status::Complete(len)) => {
                too_large(len).unwrap_or_else(|| judge(&req, buf, len))
            }
            Err(httparse::Error::TooManyHeaders) => Head::Refused(refusal(
                buf,
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("the request has more than {} headers", self.max_headers),
            )),
            Err(error) => {
                Head::Refused(refusal(buf, StatusCode::BAD_REQUEST, malformed(buf, error)))
            }
        }
    }
}

impl<S: AsyncRead + Unpin> Scanned<S> {
    /// Hands out `out`, if it holds anything.
    fn drain_out(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        let pending = self.out.get(self.out_at..).unwrap_or_default();
        if pending.is_empty() {
            return false;
        }
        let n = pending.len().min(buf.remaining());
        buf.put_slice(pending.get(..n).unwrap_or_default());
        self.out_at += n;
        if self.out_at >= self.out.len() {
            self.out.clear();
            self.out_at = 0;
        }
        true
    }

    /// The deadline of the held head, armed at its first bytes.
    fn head_deadline(&mut self) -> Pin<&mut Sleep> {
        let timeout = self.head_timeout;
        self.deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)))
            .as_mut()
    }

    /// After a refusal: reads and drops what the client sends (so that closing does
    /// not reset the connection under the answer), and gives hyper nothing, not even
    /// an end, so it writes the answer and closes.
    fn swallow(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut scratch = [0u8; 4096];
        loop {
            let mut sink = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut sink) {
                Poll::Ready(Ok(())) if !sink.filled().is_empty() => {}
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Ready(Ok(())) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Scanned<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if buf.remaining() == 0 || this.drain_out(buf) {
                return Poll::Ready(Ok(()));
            }
            match this.state {
                State::Pass if this.held.is_empty() => {
                    return Pin::new(&mut this.inner).poll_read(cx, buf);
                }
                State::Refused => return this.swallow(cx),
                _ => {}
            }
            let start = buf.filled().len();
            if this.held.is_empty() {
                this.deadline = None;
            } else if let Poll::Ready(()) = this.head_deadline().poll(cx) {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the request head was not finished in time",
                )));
            }
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            let end = buf.filled().len();
            if end == start {
                // The client closed; a head it left unfinished is never parsed.
                return Poll::Ready(Ok(()));
            }
            let new = buf.filled().get(start..end).unwrap_or_default();
            if this.held.is_empty() {
                let (released, hold) = this.scan(new);
                if hold {
                    this.held
                        .extend_from_slice(new.get(released..).unwrap_or_default());
                }
                buf.set_filled(start + released);
                if released > 0 {
                    return Poll::Ready(Ok(()));
                }
            } else {
                // A head can only end at a newline: no need to parse it again before.
                let more_later = !new.contains(&b'\n');
                this.held.extend_from_slice(new);
                buf.set_filled(start);
                if more_later && this.held.len() <= this.max_head {
                    continue;
                }
                let held = std::mem::take(&mut this.held);
                let (released, hold) = this.scan(&held);
                let marker = std::mem::take(&mut this.out);
                this.out = held.get(..released).unwrap_or_default().to_vec();
                this.out.extend_from_slice(&marker);
                this.out_at = 0;
                if hold {
                    this.held = held.get(released..).unwrap_or_default().to_vec();
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Scanned<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
