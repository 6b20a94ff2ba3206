//! A small response read whole before it leaves: a body of known length up to
//! [`WHOLE_MAX`] is collected from the target, its record written (and, with
//! `wait_for_record`, made durable), and only then is the response handed to hyper,
//! which writes head and body in one go. Streaming such a body through a
//! [`Tap`](super::tap::Tap) cost a write for the head, another for the body, and the
//! wake-ups between them, on every small API answer; a client still never holds a
//! response whose record a crash could lose.

use super::{
    exchange::Conn,
    record::{self, Facts, Sample},
    reply::{self, ProxyBody},
};
use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::{Response, body::Body as _, http::response::Parts};
use std::{
    sync::{Mutex, PoisonError},
    time::Instant,
};

/// The largest body read whole (bytes): a few packets, so holding it costs no
/// latency a client could notice, and memory per request stays small.
pub(super) const WHOLE_MAX: u64 = 16 * 1024;

/// Whether `body` is small enough (its exact length known) to be read whole.
pub(super) fn fits(body: &ProxyBody) -> bool {
    body.size_hint().exact().is_some_and(|len| len <= WHOLE_MAX)
}

/// What the record of a response read whole needs.
pub(super) struct Whole<'a> {
    pub conn: &'a Conn,
    pub facts: Facts,
    pub request: &'a Mutex<Sample>,
    pub started: Instant,
    /// Whether the body is sampled as text.
    pub text: bool,
}

impl Whole<'_> {
    /// Reads `body` whole, records the exchange, and returns the response to send:
    /// `502` when the target's body fails, `503` when the record cannot be written.
    pub(super) async fn respond(mut self, parts: Parts, body: ProxyBody) -> Response<ProxyBody> {
        let bytes: Bytes = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) => {
                let why = format!("the target's response body failed: {error}");
                self.facts.error = Some(why.clone());
                self.facts.status = Some(hyper::StatusCode::BAD_GATEWAY.as_u16());
                self.record(Sample::new(0, false), false).await;
                return reply::bad_gateway(&why);
            }
        };
        let mut sample = Sample::new(self.conn.record_body, self.text);
        sample.add(&bytes);
        if !self.record(sample, true).await {
            return reply::not_recorded();
        }
        Response::from_parts(parts, reply::full(bytes))
    }

    /// Records the exchange; waits for it to be durable when `wait` and the
    /// connection waits for records. `false` when that wait failed.
    async fn record(self, response: Sample, wait: bool) -> bool {
        let request = self
            .request
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let event = record::event(
            &self.conn.session,
            self.conn.masker(),
            self.facts,
            &request,
            &response,
            self.started,
        );
        if !wait || !self.conn.wait_for_record {
            self.conn.record(event);
            return true;
        }
        let recorder = &self.conn.session.recorder;
        recorder.record(event).await.is_ok() && recorder.sync(&self.conn.session.id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    #[test]
    fn only_bodies_of_known_small_length_are_read_whole() {
        let small = usize::try_from(WHOLE_MAX).unwrap_or(usize::MAX);
        assert!(fits(&reply::full(vec![b'x'; small])));
        assert!(!fits(&reply::full(vec![b'x'; small + 1])));
        // A body whose length is not known up front (chunked, masked) streams.
        let frames = futures_util::stream::iter([Ok::<_, reply::BoxError>(
            hyper::body::Frame::data(Bytes::from_static(b"x")),
        )]);
        assert!(!fits(&StreamBody::new(frames).boxed_unsync()));
    }
}
