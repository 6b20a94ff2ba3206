//! Entry points for the fuzz targets (`tests/fuzz`, built with the `fuzzing`
//! feature): the PostgreSQL decoders fed arbitrary bytes the way the proxy feeds them
//! what a client or a server sends. Each returns nothing; a panic is the finding.

use super::{
    encoding::ClientEncoding,
    masking,
    session::shown_value,
    wire::{self, Fields, Message, MessageReader, TextReading},
};
use crate::mask::{MaskSpec, Masker};
use bytes::BytesMut;
use std::{
    future::Future,
    pin::pin,
    sync::OnceLock,
    task::{Context, Poll, Waker},
};

/// The session's cap on one message, as in a session (1 MiB keeps runs fast).
const MAX_MESSAGE: usize = 1 << 20;

/// Messages a client sends, framed and decoded as the frontend session does.
pub fn frontend(data: &[u8]) {
    for m in messages(data) {
        let mut f = m.fields();
        let encoding = ClientEncoding::named("UTF8");
        match m.tag() {
            b'Q' => {
                if let Ok(text) = f.cstr_bytes() {
                    let _ = encoding.read(text);
                }
            }
            b'P' => {
                let _ = (f.cstr(), f.cstr_bytes());
                if let Ok(n) = f.count16() {
                    for _ in 0..n {
                        let _ = f.i32();
                    }
                }
            }
            b'B' => bind(&mut f, encoding),
            b'E' | b'D' | b'C' | b'H' | b'S' | b'X' | b'd' | b'c' | b'f' => {
                let _ = (f.u8(), f.cstr(), f.i32(), f.rest());
            }
            _ => {}
        }
    }
}

/// A `Bind`'s fields, as the frontend session reads them for the record.
fn bind(f: &mut Fields<'_>, encoding: ClientEncoding) {
    let (Ok(_portal), Ok(_statement)) = (f.cstr(), f.cstr()) else {
        return;
    };
    let Ok(formats) = f
        .count16()
        .and_then(|n| (0..n).map(|_| f.i16()).collect::<Result<Vec<i16>, _>>())
    else {
        return;
    };
    let Ok(count) = f.count16() else { return };
    for i in 0..count {
        let binary = match formats.as_slice() {
            [] => false,
            [one] => *one == 1,
            many => many.get(i).is_some_and(|x| *x == 1),
        };
        match f.value() {
            Ok(Some(v)) => drop(shown_value(v, binary, encoding)),
            Ok(None) => {}
            Err(_) => return,
        }
    }
}

/// Messages a server sends, framed and decoded (and masked) as the replies side
/// does.
pub fn backend(data: &[u8]) {
    let masker = masker();
    let mut reading = TextReading::unreported();
    for m in messages(data) {
        let body = m.body();
        match m.tag() {
            b'S' => reading.note(&m),
            b'D' => {
                let _ = masking::data_row(masker, &mut [], body, (true, "fuzz"));
                let _ = masking::data_row(masker, &mut [], body, (false, "fuzz"));
            }
            b'E' | b'N' => {
                for exposure in [
                    masking::Exposure::Values,
                    masking::Exposure::Rows,
                    masking::Exposure::Computed,
                ] {
                    let _ = masking::notice(masker, m.tag(), body, exposure);
                }
            }
            b'A' => drop(masking::notification(masker, body)),
            b'd' => drop(masking::copy_data(masker, body)),
            _ => {}
        }
    }
    let _ = reading.encoding().lossy(data);
}

/// A startup-phase packet (startup message, SSL/GSS/cancel request), read as the
/// proxy reads the first bytes of a connection.
pub fn startup(data: &[u8]) {
    let mut input = data;
    let Some(Ok((code, body))) = poll_once(wire::read_startup(&mut input)) else {
        return;
    };
    if code == wire::PROTOCOL_3_0
        && let Ok(params) = wire::startup_params(&body)
    {
        for (name, value) in &params {
            if name == "client_encoding" {
                let _ = ClientEncoding::named(value).read(data);
            }
        }
    }
}

/// Every whole message in `data`, until the first framing error.
fn messages(data: &[u8]) -> Vec<Message> {
    let mut reader =
        MessageReader::with_buffer(tokio::io::empty(), MAX_MESSAGE, BytesMut::from(data));
    let mut out = Vec::new();
    while let Ok(Some(m)) = reader.try_next() {
        out.push(m);
    }
    out
}

/// Masks every kind of value the recognizers know.
fn masker() -> &'static Masker {
    static MASKER: OnceLock<Masker> = OnceLock::new();
    MASKER.get_or_init(|| {
        let spec = MaskSpec {
            mask: vec!["all".into()],
            ..MaskSpec::default()
        };
        Masker::compile(&[spec], None).unwrap_or_default()
    })
}

/// Polls `future` once: reading from a byte slice never waits.
fn poll_once<F: Future>(future: F) -> Option<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).as_mut().poll(&mut cx) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}
