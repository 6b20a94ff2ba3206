//! Delivery: one worker per webhook POSTs its queue's events in order, retrying
//! with exponential backoff what may succeed later, and counts what it delivered,
//! dropped or gave up on.

use super::{Event, NotifierOptions, NotifyError, Webhook, payload};
use crate::metrics::Metrics;
use reqwest::{
    StatusCode,
    header::{AUTHORIZATION, CONTENT_TYPE},
    redirect,
};
use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Delivers one webhook's events, in order.
pub(super) struct Worker {
    pub(super) webhook: Webhook,
    pub(super) client: reqwest::Client,
    pub(super) metrics: Arc<Metrics>,
    pub(super) options: Arc<NotifierOptions>,
}

/// How the delivery of one event ended.
pub(super) struct Delivery {
    /// POSTs sent.
    pub(super) attempts: u32,
    pub(super) result: Result<(), Failure>,
}

/// Why an event did not get through.
pub(super) enum Failure {
    /// The receiver answered something else than 2xx.
    Status(StatusCode),
    /// The request failed (connect, TLS, timeout…), described without the URL.
    Request(String),
    /// The event could not be rendered (not expected to happen).
    Encode(serde_json::Error),
}

impl Failure {
    /// Whether trying again may help: network trouble, 5xx, 408 and 429. Other
    /// answers (a bad token, a wrong path, a redirect) will not change by retrying.
    fn is_retryable(&self) -> bool {
        match self {
            Self::Request(_) => true,
            Self::Encode(_) => false,
            Self::Status(status) => {
                status.is_server_error()
                    || *status == StatusCode::REQUEST_TIMEOUT
                    || *status == StatusCode::TOO_MANY_REQUESTS
            }
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(status) => write!(f, "answered {status}"),
            Self::Request(error) => f.write_str(error),
            Self::Encode(error) => write!(f, "cannot encode the event: {error}"),
        }
    }
}

impl Worker {
    /// Delivers events until the queue is closed and empty, or until the drain
    /// deadline after shutdown; what is left then is counted failed.
    pub(super) async fn run(self, mut rx: mpsc::Receiver<Arc<Event>>, closing: CancellationToken) {
        let in_flight = AtomicBool::new(false);
        let drained = {
            let work = async {
                while let Some(event) = rx.recv().await {
                    in_flight.store(true, Ordering::Relaxed);
                    self.deliver(&event).await;
                    in_flight.store(false, Ordering::Relaxed);
                }
            };
            let deadline = async {
                closing.cancelled().await;
                tokio::time::sleep(self.options.drain_grace).await;
            };
            tokio::select! {
                () = work => true,
                () = deadline => false,
            }
        };
        if drained {
            return;
        }
        rx.close();
        let mut abandoned = u64::from(in_flight.load(Ordering::Relaxed));
        while rx.try_recv().is_ok() {
            abandoned += 1;
        }
        warn!(abandoned, "Notifications abandoned at shutdown");
        for _ in 0..abandoned {
            self.metrics.webhook(&self.webhook.name, false);
        }
    }

    /// POSTs `event`, retrying with backoff; counts and logs the outcome.
    pub(super) async fn deliver(&self, event: &Event) -> Delivery {
        let delivery = self.try_deliver(event).await;
        match &delivery.result {
            Ok(()) => debug!(
                request_id = %event.request_id,
                attempts = delivery.attempts,
                "Notification delivered"
            ),
            Err(failure) => warn!(
                request_id = %event.request_id,
                attempts = delivery.attempts,
                error = %failure,
                "Notification not delivered"
            ),
        }
        self.metrics
            .webhook(&self.webhook.name, delivery.result.is_ok());
        delivery
    }

    async fn try_deliver(&self, event: &Event) -> Delivery {
        let body = match payload::render(self.webhook.format, event) {
            Ok(body) => body,
            Err(error) => {
                return Delivery {
                    attempts: 0,
                    result: Err(Failure::Encode(error)),
                };
            }
        };
        let attempts = self.options.attempts.max(1);
        let mut backoff = self.options.initial_backoff;
        let mut attempt = 1;
        loop {
            match self.post(body.clone()).await {
                Err(failure) if attempt < attempts && failure.is_retryable() => {
                    debug!(
                        request_id = %event.request_id,
                        attempt,
                        error = %failure,
                        "Notification attempt failed; retrying"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2).min(self.options.max_backoff);
                    attempt += 1;
                }
                result => {
                    return Delivery {
                        attempts: attempt,
                        result,
                    };
                }
            }
        }
    }

    /// One POST; any 2xx answer is a success.
    async fn post(&self, body: Vec<u8>) -> Result<(), Failure> {
        let mut request = self
            .client
            .post(self.webhook.url.clone())
            .timeout(self.webhook.timeout)
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(authorization) = &self.webhook.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(Failure::Status(response.status())),
            Err(error) => Err(Failure::Request(describe(&error.without_url()))),
        }
    }
}

/// The client every webhook shares (one connection pool).
pub(super) fn http_client() -> Result<reqwest::Client, NotifyError> {
    reqwest::Client::builder()
        .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
        // The token goes only where the config says, and a POST is not replayed
        // elsewhere: a redirect is a failure.
        .redirect(redirect::Policy::none())
        .build()
        .map_err(|source| NotifyError::Client { source })
}

/// `error` and its causes on one line ("error sending request: …: Connection
/// refused"); the caller has stripped the URL.
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
