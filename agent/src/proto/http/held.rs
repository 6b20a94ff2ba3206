//! A request while the gate decides it: for a hold, its body is read into memory up
//! to a cap (so the client is not left mid-upload and the body that goes upstream is
//! the one approved), and the hold ends early when the client leaves or the body is
//! over the cap (`413`): such a request is never forwarded undecided.

use crate::gate::{Gone, Waiting};
use bytes::Bytes;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use hyper::body::{Body as _, Incoming};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The client side of one request's decision.
pub(super) struct HeldRequest {
    /// The body as it arrives; taken when a hold buffers it.
    pub(super) body: Option<Incoming>,
    /// The whole body, read during a hold.
    pub(super) buffered: Option<Bytes>,
    cap: usize,
    /// How long the client gets to send the body of a held request.
    body_time: Duration,
    /// Cancelled when the request's service future is dropped (the client left or
    /// reset the stream).
    left: CancellationToken,
    ended: Option<Gone>,
}

impl HeldRequest {
    pub(super) fn new(
        body: Incoming,
        cap: usize,
        body_time: Duration,
        left: CancellationToken,
    ) -> Self {
        Self {
            body: Some(body),
            buffered: None,
            cap,
            body_time,
            left,
            ended: None,
        }
    }
}

impl Waiting for HeldRequest {
    async fn held(&mut self, request: &str, hint: &str) {
        tracing::info!(request, hint, "HTTP request held for approval");
        let Some(body) = self.body.take() else {
            return;
        };
        if body.is_end_stream() {
            self.buffered = Some(Bytes::new());
            return;
        }
        let read = tokio::time::timeout(self.body_time, Limited::new(body, self.cap).collect());
        tokio::select! {
            read = read => match read {
                Ok(Ok(collected)) => self.buffered = Some(collected.to_bytes()),
                Ok(Err(error)) if error.is::<LengthLimitError>() => {
                    self.ended = Some(Gone::TooLarge);
                }
                Ok(Err(_)) | Err(_) => self.ended = Some(Gone::ClientLeft),
            },
            () = self.left.cancelled() => self.ended = Some(Gone::ClientLeft),
        }
    }

    async fn gone(&mut self) -> Gone {
        if let Some(gone) = self.ended {
            return gone;
        }
        self.left.cancelled().await;
        Gone::ClientLeft
    }
}
