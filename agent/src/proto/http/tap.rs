//! A body that counts and samples what passes through it, and settles its request's
//! record when it ends.
//!
//! A response body's end is held until its record is written (`Recorder::sync`):
//! the last data frame of a sized body, or the end of a chunked one, leaves only
//! then, so a client never holds a complete response whose record a crash could
//! lose. Waiting at the end rather than before the head keeps one event per request
//! with the response's size and sample in it; a response cut off by a crash is
//! incomplete to its client (its length or final chunk missing). When the record
//! cannot be written the body ends in an error, and the client sees the response
//! fail.

use super::{
    record::Sample,
    reply::{BoxError, ProxyBody},
};
use bytes::Bytes;
use hyper::body::{Body, Frame};
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

/// A record being written; `false` when it could not be.
pub(super) type Written = Pin<Box<dyn Future<Output = bool> + Send>>;

/// What a [`Tap`] calls once, when its body ends or is dropped: the sample, why it
/// ended early (if it did), and whether the caller can wait for the record (`true`
/// at a normal end). It returns the write to wait for, if any.
pub(super) type OnEnd = Box<dyn FnOnce(Sample, Option<String>, bool) -> Option<Written> + Send>;

/// A body that counts and samples what passes through it.
pub(super) struct Tap {
    inner: ProxyBody,
    sample: Sample,
    on_end: Option<OnEnd>,
    /// The record being written, before the end leaves.
    writing: Option<Written>,
    /// The last data frame, held while the record is written.
    last: Option<Frame<Bytes>>,
    /// The end has been handed out (or is next, with nothing held).
    ended: bool,
    /// Whether the end waits for the record (a response body).
    hold: bool,
}

impl Tap {
    /// A tap whose end waits for the write `on_end` returns when `hold`.
    pub(super) fn new(inner: ProxyBody, sample: Sample, on_end: OnEnd, hold: bool) -> Self {
        Self {
            inner,
            sample,
            on_end: Some(on_end),
            writing: None,
            last: None,
            ended: false,
            hold,
        }
    }

    /// Settles the record without waiting (an error, or the body dropped).
    fn end_now(&mut self, error: Option<String>) {
        if let Some(on_end) = self.on_end.take() {
            // Not waiting: the callback queues the record itself.
            let _ = on_end(std::mem::take(&mut self.sample), error, false);
        }
    }

    /// The body is complete: its record is written before the end leaves.
    fn seal(&mut self) {
        if let Some(on_end) = self.on_end.take() {
            self.writing = on_end(std::mem::take(&mut self.sample), None, true);
        }
    }
}

impl Body for Tap {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if let Some(writing) = self.writing.as_mut() {
                let written = ready!(writing.as_mut().poll(cx));
                self.writing = None;
                if !written {
                    self.ended = true;
                    let why = "the response's record could not be written; the response is cut off";
                    return Poll::Ready(Some(Err(why.into())));
                }
            }
            if self.ended || self.on_end.is_none() {
                self.ended = true;
                return Poll::Ready(self.last.take().map(Ok));
            }
            match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        self.sample.add(data);
                    }
                    if !self.hold || !self.inner.is_end_stream() {
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    self.last = Some(frame);
                    self.seal();
                }
                Some(Err(error)) => {
                    self.end_now(Some(error.to_string()));
                    self.ended = true;
                    return Poll::Ready(Some(Err(error)));
                }
                None => self.seal(),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.hold {
            self.ended && self.last.is_none() && self.writing.is_none()
        } else {
            self.inner.is_end_stream()
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        if self.on_end.is_some() {
            let cut = !self.inner.is_end_stream();
            self.end_now(cut.then(|| "the body was cut off before its end".into()));
        }
    }
}
