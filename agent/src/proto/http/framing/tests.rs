//! The scanner on byte streams cut at every position: good requests pass unchanged
//! whatever the cuts, a bad head is replaced by the marker, bodies are skipped
//! exactly (a head inside a body is no head).

#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use super::*;
use std::collections::VecDeque;

/// A stream that yields its pieces one read at a time, then ends.
struct Pieces(VecDeque<Vec<u8>>);

impl AsyncRead for Pieces {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(mut piece) = self.0.pop_front() {
            let n = piece.len().min(buf.remaining());
            buf.put_slice(&piece[..n]);
            if n < piece.len() {
                self.0.push_front(piece.split_off(n));
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// What hyper would read from `pieces`, and the refusal recorded.
fn through(pieces: Vec<Vec<u8>>) -> (Vec<u8>, Option<Refusal>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _in_runtime = runtime.enter();
    let framing = Framing::new();
    let mut scanned = Scanned::new(
        Pieces(pieces.into_iter().filter(|p| !p.is_empty()).collect()),
        Arc::clone(&framing),
        true,
        4096,
        32,
        std::time::Duration::from_secs(10),
    );
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut out = Vec::new();
    let mut space = [0u8; 1024];
    loop {
        let mut buf = ReadBuf::new(&mut space);
        match Pin::new(&mut scanned).poll_read(&mut cx, &mut buf) {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => break,
            Poll::Ready(Ok(())) => out.extend_from_slice(buf.filled()),
            Poll::Ready(Err(e)) => panic!("{e}"),
            Poll::Pending => break,
        }
    }
    let marker = framing.marker();
    let refusal = framing.slot().take();
    if refusal.is_some() {
        assert!(out.ends_with(&marker), "the marker ends what hyper reads");
        out.truncate(out.len() - marker.len());
    }
    (out, refusal)
}

/// Runs `stream` whole, cut in two at every position, and byte by byte: the result
/// is the same each time.
fn every_cut(stream: &[u8]) -> (Vec<u8>, Option<Refusal>) {
    let whole = through(vec![stream.to_vec()]);
    for cut in 0..=stream.len() {
        let (a, b) = stream.split_at(cut);
        assert_eq!(through(vec![a.to_vec(), b.to_vec()]), whole, "cut at {cut}");
    }
    let bytes = stream.iter().map(|b| vec![*b]).collect();
    assert_eq!(through(bytes), whole, "byte by byte");
    whole
}

const GOOD: &[&[u8]] = &[
    b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 41\r\n\r\nGET /c HTTP/1.1\r\nTransfer-Encoding: x\r\n\r\n",
    b"POST /d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4;e=1\r\nabcd\r\n0\r\nT: v\r\n\r\n",
    b"\r\nGET /e HTTP/1.0\n\n",
];

#[test]
fn good_requests_pass_unchanged() {
    let stream = GOOD.concat();
    let (out, refusal) = every_cut(&stream);
    assert_eq!(refusal, None);
    assert_eq!(out, stream);
}

#[test]
fn a_bad_head_after_good_ones_is_replaced_by_the_marker() {
    let bad: [(&[u8], &str, &str); 6] = [
        (
            b"POST /smuggle HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "Content-Length and Transfer-Encoding",
            "/smuggle",
        ),
        (
            b"POST /t HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
            "Content-Length and Transfer-Encoding",
            "/t",
        ),
        (b"GET /f HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n", "obs-folded", "/f"),
        (b"GET /cr HTTP/1.1\r\nHost: x\rX: 1\r\n\r\n", "bare CR", "/cr"),
        (b"POST /g HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", "does not end in chunked", "/g"),
        (b"POST /l HTTP/1.1\r\nContent-Length: +4\r\n\r\n", "Content-Length is invalid", "/l"),
    ];
    for (head, why, target) in bad {
        let good = GOOD[..2].concat();
        let stream = [&good[..], head, b"GET /after HTTP/1.1\r\n\r\n"].concat();
        let (out, refusal) = every_cut(&stream);
        assert_eq!(out, good, "{why}: only the good requests reach hyper");
        let refusal = refusal.unwrap();
        assert_eq!(refusal.status, StatusCode::BAD_REQUEST);
        assert!(refusal.reason.contains(why), "{}", refusal.reason);
        assert_eq!(refusal.target, target);
    }
}

#[test]
fn oversized_heads_and_too_many_headers_get_431() {
    let long = format!("GET /big HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(5000));
    let (out, refusal) = through(vec![long.into_bytes()]);
    assert!(out.is_empty());
    let refusal = refusal.unwrap();
    assert_eq!(refusal.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(refusal.method, "GET");
    let many = format!("GET /m HTTP/1.1\r\n{}\r\n", "X: 1\r\n".repeat(40));
    let (_, refusal) = through(vec![many.into_bytes()]);
    assert!(refusal.unwrap().reason.contains("more than 32 headers"));
}

#[test]
fn http2_and_upgrades_pass_through() {
    let h2 = [H2_PREFACE, b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"].concat();
    assert_eq!(every_cut(&h2), (h2.clone(), None));
    let upgrade = [
        &b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    ]
    .concat();
    assert_eq!(every_cut(&upgrade), (upgrade.clone(), None));
}

#[test]
fn the_marker_header_is_refused_unless_it_is_the_scanners() {
    let framing = Framing::new();
    let plain = Request::get("/x").body(()).unwrap();
    assert_eq!(framing.refused(&plain), None);
    let forged = Request::get("/x").header(MARKER, "00").body(()).unwrap();
    let refusal = framing.refused(&forged).unwrap();
    assert!(refusal.reason.contains("reserved"));
    *framing.slot() = Some(Refusal {
        status: StatusCode::BAD_REQUEST,
        reason: "smuggling".into(),
        method: "POST".into(),
        target: "/s".into(),
    });
    let marker = Request::get("/")
        .header(MARKER, framing.token.as_str())
        .body(())
        .unwrap();
    assert_eq!(framing.refused(&marker).unwrap().reason, "smuggling");
}
