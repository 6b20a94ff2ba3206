//! Webhook notifications: tell people that a request waits for them, and how it ended.
//!
//! [`Notifier::notify`] is called from the gate's hot path, so it only puts the
//! [`Event`] on one bounded queue per webhook and returns; it never blocks and never
//! fails its caller. One worker task per webhook POSTs the events in order, retrying
//! with exponential backoff. A webhook that is down, slow or answering errors only
//! costs its own queue: when that queue is full, new events for it are dropped and
//! counted. Nothing here decides anything: a notification that never arrives leaves
//! the request held until approvers act or its timeout fires.
//!
//! Layout: this file holds the configuration, the event and the queueing;
//! [`worker`] delivers a webhook's queue; [`payload`] renders an event as the body a
//! webhook expects (plain JSON or Slack).
//!
//! Secrets: the bearer token (read from the environment at start) is only ever put
//! in the `Authorization` header, marked sensitive. Logs and errors name a webhook by
//! its configured name and its origin (`https://host:port`), never the full URL: a
//! Slack incoming-webhook URL is itself a credential.

mod payload;
mod worker;

use worker::{Worker, http_client};

use crate::metrics::Metrics;
use reqwest::{Url, header::HeaderValue};
use serde::{Deserialize, Serialize};
use std::{collections::HashSet, fmt, sync::Arc, time::Duration};
use thiserror::Error;
use tokio::{
    sync::mpsc::{self, error::TrySendError},
    task::{JoinHandle, JoinSet},
};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{Instrument, info_span, warn};

/// How long one POST may take when the config does not say.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------
// Configuration

/// One `[[webhook]]` table of the config file, as written.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Names the webhook in logs and metrics; unique.
    pub name: String,
    /// Where events are sent (HTTP POST): `http://` or `https://`. A secret (Slack
    /// puts its key in the path), so it is never logged whole.
    pub url: String,
    /// The body's shape.
    #[serde(default)]
    pub format: WebhookFormat,
    /// Name of an environment variable holding a bearer token, sent as
    /// `Authorization: Bearer …`.
    pub token_env: Option<String>,
    /// How long one POST may take, like `"5s"` (the default).
    pub timeout: Option<String>,
}

/// Prints the URL's origin only: the rest may be a credential.
impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("name", &self.name)
            .field("url", &redacted_url(&self.url))
            .field("format", &self.format)
            .field("token_env", &self.token_env)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The body a webhook expects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// The [`Event`] itself, as JSON.
    #[default]
    Json,
    /// A Slack incoming-webhook message (`text` plus `blocks`).
    Slack,
}

/// Tuning that is not in the config file: fixed in production, shortened in tests.
#[derive(Debug, Clone)]
pub struct NotifierOptions {
    /// Events waiting per webhook before new ones are dropped.
    pub queue_capacity: usize,
    /// POSTs per event, the first included.
    pub attempts: u32,
    /// Wait before the first retry; doubled before each next one.
    pub initial_backoff: Duration,
    /// Longest wait between two attempts.
    pub max_backoff: Duration,
    /// How long workers may go on delivering after the notifier is shut down.
    pub drain_grace: Duration,
}

impl Default for NotifierOptions {
    fn default() -> Self {
        Self {
            queue_capacity: 1024,
            attempts: 3,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(2),
            drain_grace: Duration::from_secs(5),
        }
    }
}

/// Why the notifier could not start; each names the webhook and what to change.
#[derive(Debug, Error)]
pub enum NotifyError {
    #[error("webhook {webhook:?}: the url is not a valid URL ({reason}); fix `url`")]
    InvalidUrl { webhook: String, reason: String },
    #[error(
        "webhook {webhook:?}: the url scheme {scheme:?} is not supported; use http:// or https://"
    )]
    UnsupportedScheme { webhook: String, scheme: String },
    #[error("webhook {webhook:?}: timeout {value:?} is not a duration; write it like \"5s\"")]
    InvalidTimeout {
        webhook: String,
        value: String,
        #[source]
        source: humantime::DurationError,
    },
    #[error("webhook {webhook:?}: timeout must be more than zero")]
    ZeroTimeout { webhook: String },
    #[error(
        "webhook {webhook:?}: token_env names {var:?}, which is not set; set it in the daemon's environment or remove token_env"
    )]
    TokenMissing { webhook: String, var: String },
    #[error(
        "webhook {webhook:?}: the token in {var:?} cannot be sent in an HTTP header (control characters or non-ASCII?); fix its value"
    )]
    TokenInvalid { webhook: String, var: String },
    #[error("webhook name {webhook:?} is used twice; give each [[webhook]] its own name")]
    DuplicateName { webhook: String },
    #[error("a webhook name is empty; give each [[webhook]] a name")]
    EmptyName,
    #[error("cannot build the HTTP client for webhooks")]
    Client {
        #[source]
        source: reqwest::Error,
    },
}

/// A validated webhook.
struct Webhook {
    name: Arc<str>,
    url: Url,
    /// `scheme://host:port`, what logs show of the URL.
    origin: String,
    format: WebhookFormat,
    /// The whole `Authorization` header value, marked sensitive.
    authorization: Option<HeaderValue>,
    timeout: Duration,
}

impl Webhook {
    fn from_config(
        config: WebhookConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, NotifyError> {
        let WebhookConfig {
            name,
            url,
            format,
            token_env,
            timeout,
        } = config;
        if name.trim().is_empty() {
            return Err(NotifyError::EmptyName);
        }
        let url = Url::parse(&url).map_err(|error| NotifyError::InvalidUrl {
            webhook: name.clone(),
            reason: error.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(NotifyError::UnsupportedScheme {
                webhook: name,
                scheme: url.scheme().to_owned(),
            });
        }
        if url.host_str().is_none() {
            return Err(NotifyError::InvalidUrl {
                webhook: name,
                reason: "it has no host".to_owned(),
            });
        }
        let timeout = match timeout {
            None => DEFAULT_TIMEOUT,
            Some(value) => match humantime::parse_duration(&value) {
                Ok(d) if d.is_zero() => return Err(NotifyError::ZeroTimeout { webhook: name }),
                Ok(d) => d,
                Err(source) => {
                    return Err(NotifyError::InvalidTimeout {
                        webhook: name,
                        value,
                        source,
                    });
                }
            },
        };
        let authorization = match token_env {
            None => None,
            Some(var) => {
                let Some(token) = env(&var) else {
                    return Err(NotifyError::TokenMissing { webhook: name, var });
                };
                let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
                else {
                    return Err(NotifyError::TokenInvalid { webhook: name, var });
                };
                value.set_sensitive(true);
                if url.scheme() == "http" {
                    warn!(webhook = %name, "Webhook token is sent over plain http; use https");
                }
                Some(value)
            }
        };
        Ok(Self {
            name: name.into(),
            origin: url.origin().ascii_serialization(),
            url,
            format,
            authorization,
            timeout,
        })
    }
}

/// What logs may show of a configured URL: its origin, or nothing if it does not
/// parse.
fn redacted_url(url: &str) -> String {
    Url::parse(url).map_or_else(
        |_| "<invalid url>".to_owned(),
        |u| format!("{}/…", u.origin().ascii_serialization()),
    )
}

// ---------------------------------------------------------------------------------
// Events

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// An action was held and waits for approvers.
    RequestCreated,
    /// A held action was decided (by a person, a timeout, an escalation…).
    RequestDecided,
    /// The requester said why they need a held action (`portcullis justify`).
    RequestJustified,
}

/// One notification, sent as is by `json` webhooks.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub kind: EventKind,
    pub request_id: String,
    /// The target's name in the policy.
    pub target: String,
    /// What is asked, for a human (a SQL statement, a command, "connect").
    pub action: String,
    /// Who asks (the principal's label).
    pub requester: String,
    /// `pending`, `approved`, `denied`, `timeout`, `escalated` or `abandoned`.
    pub status: String,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    /// The gateway host that holds the request.
    pub host: String,
    /// When it happened, Unix milliseconds.
    pub at_ms: i64,
    /// The command that approves it, like `portcullis approve <id>`.
    pub approve_hint: String,
    /// Why the requester says they need it, if they said.
    pub justification: Option<String>,
}

// ---------------------------------------------------------------------------------
// Notifier

/// The sending end of one webhook's queue.
struct Queue {
    name: Arc<str>,
    tx: mpsc::Sender<Arc<Event>>,
}

/// Hands events to the webhook workers. Dropping it (or [`Notifier::shutdown`])
/// closes the queues; the workers deliver what is queued for at most
/// [`NotifierOptions::drain_grace`], then the task returned by `start` ends.
pub struct Notifier {
    queues: Vec<Queue>,
    metrics: Arc<Metrics>,
    /// Tells the workers, when dropped, that their drain deadline runs.
    _closing: DropGuard,
}

impl Notifier {
    /// Validates `webhooks` and starts one worker per webhook with the default
    /// options. Must run inside a Tokio runtime. The handle ends once every worker
    /// has stopped (after shutdown).
    pub fn start(
        webhooks: Vec<WebhookConfig>,
        metrics: Arc<Metrics>,
    ) -> Result<(Self, JoinHandle<()>), NotifyError> {
        Self::start_with(webhooks, metrics, NotifierOptions::default())
    }

    /// [`Notifier::start`] with explicit tuning.
    pub fn start_with(
        webhooks: Vec<WebhookConfig>,
        metrics: Arc<Metrics>,
        options: NotifierOptions,
    ) -> Result<(Self, JoinHandle<()>), NotifyError> {
        Self::start_inner(webhooks, metrics, options, &|var| std::env::var(var).ok())
    }

    /// [`Notifier::start_with`], reading tokens through `env` (tests pass their own).
    fn start_inner(
        webhooks: Vec<WebhookConfig>,
        metrics: Arc<Metrics>,
        options: NotifierOptions,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(Self, JoinHandle<()>), NotifyError> {
        let mut names = HashSet::new();
        let mut validated = Vec::with_capacity(webhooks.len());
        for config in webhooks {
            if !names.insert(config.name.clone()) {
                return Err(NotifyError::DuplicateName {
                    webhook: config.name,
                });
            }
            validated.push(Webhook::from_config(config, env)?);
        }
        let client = http_client()?;

        let closing = CancellationToken::new();
        let options = Arc::new(options);
        let mut workers = JoinSet::new();
        let mut queues = Vec::with_capacity(validated.len());
        for webhook in validated {
            let (tx, rx) = mpsc::channel(options.queue_capacity.max(1));
            queues.push(Queue {
                name: Arc::clone(&webhook.name),
                tx,
            });
            let span = info_span!("webhook", webhook = %webhook.name, origin = %webhook.origin);
            let worker = Worker {
                webhook,
                client: client.clone(),
                metrics: Arc::clone(&metrics),
                options: Arc::clone(&options),
            };
            workers.spawn(worker.run(rx, closing.clone()).instrument(span));
        }
        let handle = tokio::spawn(async move {
            while let Some(result) = workers.join_next().await {
                if let Err(error) = result {
                    warn!(%error, "Webhook worker failed");
                }
            }
        });
        Ok((
            Self {
                queues,
                metrics,
                _closing: closing.drop_guard(),
            },
            handle,
        ))
    }

    /// Queues `event` for every webhook and returns at once. An event a webhook's
    /// full queue cannot take is dropped for that webhook, logged and counted failed.
    pub fn notify(&self, event: &Event) {
        if self.queues.is_empty() {
            return;
        }
        let event = Arc::new(event.clone());
        for queue in &self.queues {
            let why = match queue.tx.try_send(Arc::clone(&event)) {
                Ok(()) => continue,
                Err(TrySendError::Full(_)) => "queue full",
                Err(TrySendError::Closed(_)) => "worker stopped",
            };
            warn!(
                webhook = %queue.name,
                request_id = %event.request_id,
                reason = why,
                "Notification dropped"
            );
            self.metrics.webhook(&queue.name, false);
        }
    }

    /// Closes the queues; await the handle from `start` to wait for the drain.
    pub fn shutdown(self) {
        drop(self);
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
mod tests;
