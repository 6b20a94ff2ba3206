//! Notifier tests against real HTTP receivers on 127.0.0.1 (ephemeral ports).
//!
//! Tests run on the current-thread runtime: spawned workers only run when the test
//! awaits, so "nothing was delivered yet right after `notify`" is deterministic.

use super::*;
use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    sync::{Arc, Mutex},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tracing_subscriber::fmt::MakeWriter;

// ---------------------------------------------------------------------------------
// Fixtures

/// One request as the receiver saw it.
struct Received {
    /// Header names lowercased.
    headers: HashMap<String, String>,
    body: serde_json::Value,
}

/// An HTTP/1.1 receiver answering each request with the next status of `script`
/// (200 once the script is used up), one connection per request.
async fn receiver(script: Vec<u16>) -> (SocketAddr, mpsc::UnboundedReceiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut script = script.into_iter();
        while let Ok((mut stream, _)) = listener.accept().await {
            let status = script.next().unwrap_or(200);
            let Ok(request) = read_request(&mut stream).await else {
                continue;
            };
            let _ = tx.send(request);
            let answer = format!(
                "HTTP/1.1 {status} Scripted\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            let _ = stream.write_all(answer.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    });
    (addr, rx)
}

async fn read_request(stream: &mut TcpStream) -> io::Result<Received> {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let headers: HashMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers["content-length"].parse().unwrap();
    while buf.len() < head_end + length {
        let mut chunk = [0; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::from_slice(&buf[head_end..head_end + length]).unwrap();
    Ok(Received { headers, body })
}

/// Log lines written while the guard lives (this thread only, which is every task
/// on the current-thread runtime).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

/// A dispatcher that stays registered for the whole test run. While only one
/// dispatcher is registered, tracing caches a callsite's interest from whichever
/// thread hits it first, so a test thread without a subscriber could switch our
/// log lines off for the capturing test; with two, interest is computed from all.
static SECOND_DISPATCH: std::sync::LazyLock<tracing::Dispatch> = std::sync::LazyLock::new(|| {
    tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default())
});

impl Logs {
    fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        std::sync::LazyLock::force(&SECOND_DISPATCH);
        let logs = Self::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl io::Write for Logs {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl MakeWriter<'_> for Logs {
    type Writer = Self;

    fn make_writer(&self) -> Self {
        self.clone()
    }
}

fn webhook(name: &str, url: String) -> WebhookConfig {
    WebhookConfig {
        name: name.into(),
        url,
        format: WebhookFormat::Json,
        token_env: None,
        timeout: None,
    }
}

/// Fast retries; a drain long enough for every test's deliveries to finish.
fn quick() -> NotifierOptions {
    NotifierOptions {
        queue_capacity: 16,
        attempts: 3,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        drain_grace: Duration::from_secs(20),
    }
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn event() -> Event {
    Event {
        kind: EventKind::RequestCreated,
        request_id: "0190-abc".into(),
        target: "prod-db".into(),
        action: "DELETE FROM users WHERE id = 7".into(),
        requester: "alice (uid 1000)".into(),
        status: "pending".into(),
        decided_by: None,
        reason: None,
        host: "gw1".into(),
        at_ms: 1_700_000_000_000,
        approve_hint: "portcullis approve 0190-abc".into(),
        justification: None,
    }
}

/// The `portcullis_webhook_deliveries_total` value for `webhook` and `result`.
fn deliveries(metrics: &Metrics, webhook: &str, result: &str) -> u64 {
    let prefix = format!(
        "portcullis_webhook_deliveries_total{{webhook=\"{webhook}\",result=\"{result}\"}} "
    );
    metrics
        .encode()
        .lines()
        .find_map(|line| line.strip_prefix(&prefix).map(|n| n.parse().unwrap()))
        .unwrap_or(0)
}

/// A worker for `config` alone, to look at one delivery's outcome.
fn worker(config: WebhookConfig, env: &dyn Fn(&str) -> Option<String>) -> Worker {
    Worker {
        webhook: Webhook::from_config(config, env).unwrap(),
        client: http_client().unwrap(),
        metrics: Arc::new(Metrics::new()),
        options: Arc::new(quick()),
    }
}

/// An address nothing listens on (connections are refused).
async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// Shuts `notifier` down and waits for its workers to drain.
async fn drain(notifier: Notifier, handle: JoinHandle<()>) {
    notifier.shutdown();
    handle.await.unwrap();
}

// ---------------------------------------------------------------------------------
// Delivery

#[tokio::test]
async fn json_webhook_receives_the_event() {
    let (addr, mut received) = receiver(vec![]).await;
    let metrics = Arc::new(Metrics::new());
    let (notifier, handle) = Notifier::start_inner(
        vec![webhook("audit", format!("http://{addr}/hook"))],
        Arc::clone(&metrics),
        quick(),
        &no_env,
    )
    .unwrap();

    notifier.notify(&event());
    drain(notifier, handle).await;

    let request = received.recv().await.unwrap();
    assert_eq!(request.headers["content-type"], "application/json");
    assert!(!request.headers.contains_key("authorization"));
    let body = request.body;
    assert_eq!(body["kind"], "request_created");
    assert_eq!(body["request_id"], "0190-abc");
    assert_eq!(body["target"], "prod-db");
    assert_eq!(body["action"], "DELETE FROM users WHERE id = 7");
    assert_eq!(body["requester"], "alice (uid 1000)");
    assert_eq!(body["status"], "pending");
    assert_eq!(body["decided_by"], serde_json::Value::Null);
    assert_eq!(body["host"], "gw1");
    assert_eq!(body["at_ms"], 1_700_000_000_000_i64);
    assert_eq!(body["approve_hint"], "portcullis approve 0190-abc");
    assert_eq!(deliveries(&metrics, "audit", "ok"), 1);
    assert_eq!(deliveries(&metrics, "audit", "failed"), 0);
}

#[tokio::test]
async fn slack_webhook_receives_text_and_blocks() {
    let (addr, mut received) = receiver(vec![]).await;
    let metrics = Arc::new(Metrics::new());
    let mut config = webhook("slack", format!("http://{addr}/services/T0/B0/x"));
    config.format = WebhookFormat::Slack;
    let (notifier, handle) =
        Notifier::start_inner(vec![config], Arc::clone(&metrics), quick(), &no_env).unwrap();

    let mut decided = event();
    decided.kind = EventKind::RequestDecided;
    decided.status = "approved".into();
    decided.decided_by = Some("bob".into());
    notifier.notify(&decided);
    drain(notifier, handle).await;

    let body = received.recv().await.unwrap().body;
    let text = body["text"].as_str().unwrap();
    assert!(
        text.contains("0190-abc") && text.contains("approved by bob"),
        "{text}"
    );
    assert_eq!(body["blocks"][0]["type"], "section");
    assert_eq!(body["blocks"][0]["text"]["type"], "mrkdwn");
    assert_eq!(deliveries(&metrics, "slack", "ok"), 1);
}

#[tokio::test]
async fn server_errors_are_retried_until_success() {
    let (addr, mut received) = receiver(vec![500, 500, 200]).await;
    let metrics = Arc::new(Metrics::new());
    let (notifier, handle) = Notifier::start_inner(
        vec![webhook("flaky", format!("http://{addr}/"))],
        Arc::clone(&metrics),
        quick(),
        &no_env,
    )
    .unwrap();

    notifier.notify(&event());
    drain(notifier, handle).await;

    let mut attempts = 0;
    while received.try_recv().is_ok() {
        attempts += 1;
    }
    assert_eq!(attempts, 3);
    assert_eq!(deliveries(&metrics, "flaky", "ok"), 1);
    assert_eq!(deliveries(&metrics, "flaky", "failed"), 0);
}

#[tokio::test]
async fn dead_receiver_is_counted_failed_without_blocking() {
    let addr = dead_addr().await;
    let metrics = Arc::new(Metrics::new());
    let (notifier, handle) = Notifier::start_inner(
        vec![webhook("dead", format!("http://{addr}/"))],
        Arc::clone(&metrics),
        quick(),
        &no_env,
    )
    .unwrap();

    notifier.notify(&event());
    // notify returned before the worker even ran.
    assert_eq!(deliveries(&metrics, "dead", "failed"), 0);
    drain(notifier, handle).await;

    assert_eq!(deliveries(&metrics, "dead", "failed"), 1);
    assert_eq!(deliveries(&metrics, "dead", "ok"), 0);
}

#[tokio::test]
async fn refused_connections_are_retried() {
    let addr = dead_addr().await;
    let worker = worker(webhook("dead", format!("http://{addr}/")), &no_env);

    let delivery = worker.deliver(&event()).await;

    assert_eq!(delivery.attempts, 3);
    let error = delivery.result.err().unwrap().to_string();
    assert!(error.contains("Connection refused"), "{error}");
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let (addr, mut received) = receiver(vec![404, 200]).await;
    let metrics = Arc::new(Metrics::new());
    let (notifier, handle) = Notifier::start_inner(
        vec![webhook("wrong-path", format!("http://{addr}/nope"))],
        Arc::clone(&metrics),
        quick(),
        &no_env,
    )
    .unwrap();

    notifier.notify(&event());
    drain(notifier, handle).await;

    assert!(received.try_recv().is_ok());
    assert!(received.try_recv().is_err(), "a 404 was retried");
    assert_eq!(deliveries(&metrics, "wrong-path", "failed"), 1);
}

#[tokio::test]
async fn full_queue_drops_and_counts_without_blocking() {
    // Accepts connections (the kernel does) but never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let metrics = Arc::new(Metrics::new());
    let mut config = webhook("slow", format!("http://{addr}/"));
    config.timeout = Some("60s".into());
    let options = NotifierOptions {
        queue_capacity: 1,
        drain_grace: Duration::from_millis(50),
        ..quick()
    };
    let (notifier, handle) =
        Notifier::start_inner(vec![config], Arc::clone(&metrics), options, &no_env).unwrap();

    for _ in 0..10 {
        notifier.notify(&event());
    }
    // One queued, nine dropped, and the worker has not run yet.
    assert_eq!(deliveries(&metrics, "slow", "failed"), 9);

    // The held delivery is abandoned at the drain deadline, and counted.
    drain(notifier, handle).await;
    assert_eq!(deliveries(&metrics, "slow", "failed"), 10);
    drop(silent);
}

#[tokio::test]
async fn one_webhook_down_does_not_hold_up_another() {
    let dead = dead_addr().await;
    let (addr, mut received) = receiver(vec![]).await;
    let metrics = Arc::new(Metrics::new());
    let (notifier, handle) = Notifier::start_inner(
        vec![
            webhook("dead", format!("http://{dead}/")),
            webhook("live", format!("http://{addr}/")),
        ],
        Arc::clone(&metrics),
        quick(),
        &no_env,
    )
    .unwrap();

    notifier.notify(&event());
    notifier.notify(&event());
    let first = received.recv().await.unwrap();
    assert_eq!(first.body["request_id"], "0190-abc");
    drain(notifier, handle).await;
    assert_eq!(deliveries(&metrics, "live", "ok"), 2);
    assert_eq!(deliveries(&metrics, "dead", "failed"), 2);
}

#[tokio::test]
async fn no_webhooks_is_a_quiet_notifier() {
    let metrics = Arc::new(Metrics::new());
    let (notifier, handle) =
        Notifier::start_inner(vec![], Arc::clone(&metrics), quick(), &no_env).unwrap();
    notifier.notify(&event());
    drain(notifier, handle).await;
    assert!(!metrics.encode().contains("webhook_deliveries_total"));
}

// ---------------------------------------------------------------------------------
// Secrets

#[tokio::test]
async fn token_is_sent_as_bearer_and_never_shown() {
    const TOKEN: &str = "s3cr3t-t0ken";
    let (logs, _guard) = Logs::capture();
    let (addr, mut received) = receiver(vec![401]).await;
    let metrics = Arc::new(Metrics::new());
    let mut config = webhook(
        "ops",
        format!("http://{addr}/services/PATHSECRET?sig=QUERYSECRET"),
    );
    config.token_env = Some("OPS_HOOK_TOKEN".into());
    let env = |var: &str| (var == "OPS_HOOK_TOKEN").then(|| TOKEN.to_owned());
    assert!(!format!("{config:?}").contains("PATHSECRET"));
    let (notifier, handle) =
        Notifier::start_inner(vec![config], Arc::clone(&metrics), quick(), &env).unwrap();

    notifier.notify(&event());
    drain(notifier, handle).await;

    let request = received.recv().await.unwrap();
    assert_eq!(request.headers["authorization"], format!("Bearer {TOKEN}"));
    assert_eq!(deliveries(&metrics, "ops", "failed"), 1);
    let logs = logs.text();
    let failure = logs
        .lines()
        .find(|l| l.contains("Notification not delivered"))
        .unwrap();
    assert!(failure.contains("webhook=ops"), "{failure}");
    assert!(failure.contains("401"), "{failure}");
    assert!(
        failure.contains(&format!("origin=http://{addr}")),
        "{failure}"
    );
    for secret in [TOKEN, "PATHSECRET", "QUERYSECRET"] {
        assert!(!logs.contains(secret), "{secret} logged:\n{logs}");
    }
}

#[tokio::test]
async fn request_errors_do_not_show_the_url_or_token() {
    const TOKEN: &str = "s3cr3t-t0ken";
    let (logs, _guard) = Logs::capture();
    let addr = dead_addr().await;
    let mut config = webhook(
        "ops",
        format!("http://{addr}/hooks/PATHSECRET?k=QUERYSECRET"),
    );
    config.token_env = Some("T".into());
    let worker = worker(config, &|_| Some(TOKEN.to_owned()));

    let delivery = worker.deliver(&event()).await;

    let error = delivery.result.err().unwrap().to_string();
    let logs = logs.text();
    assert!(logs.contains("Notification not delivered"), "{logs}");
    for secret in [TOKEN, "PATHSECRET", "QUERYSECRET"] {
        assert!(!error.contains(secret), "{secret} in {error}");
        assert!(!logs.contains(secret), "{secret} logged:\n{logs}");
    }
}

#[tokio::test]
async fn config_errors_do_not_show_the_token_or_url() {
    let mut config = webhook("ops", "https://hooks.example/services/PATHSECRET".into());
    config.token_env = Some("T".into());
    let env = |_: &str| Some("s3cr3t\nwith-newline".to_owned());
    let error = Notifier::start_inner(vec![config], Arc::new(Metrics::new()), quick(), &env)
        .err()
        .unwrap();
    assert!(matches!(error, NotifyError::TokenInvalid { .. }), "{error}");
    let text = format!("{error} {error:?}");
    assert!(
        !text.contains("s3cr3t") && !text.contains("PATHSECRET"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------
// Configuration

fn start_error(webhooks: Vec<WebhookConfig>) -> NotifyError {
    Notifier::start_inner(webhooks, Arc::new(Metrics::new()), quick(), &no_env)
        .err()
        .unwrap()
}

#[tokio::test]
async fn bad_configs_are_refused_with_the_webhook_name() {
    let error = start_error(vec![webhook("a", "ftp://127.0.0.1/x".into())]);
    assert!(
        matches!(error, NotifyError::UnsupportedScheme { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("http:// or https://"), "{error}");

    let error = start_error(vec![webhook("a", "not a url".into())]);
    assert!(matches!(error, NotifyError::InvalidUrl { .. }), "{error}");

    let mut config = webhook("a", "http://127.0.0.1/".into());
    config.timeout = Some("soon".into());
    let error = start_error(vec![config.clone()]);
    assert!(
        matches!(error, NotifyError::InvalidTimeout { .. }),
        "{error}"
    );
    config.timeout = Some("0s".into());
    assert!(matches!(
        start_error(vec![config]),
        NotifyError::ZeroTimeout { .. }
    ));

    let mut config = webhook("a", "http://127.0.0.1/".into());
    config.token_env = Some("PORTCULLIS_TEST_UNSET_TOKEN".into());
    let error = start_error(vec![config]);
    assert!(matches!(error, NotifyError::TokenMissing { .. }), "{error}");
    assert!(
        error.to_string().contains("PORTCULLIS_TEST_UNSET_TOKEN"),
        "{error}"
    );

    let error = start_error(vec![
        webhook("a", "http://127.0.0.1/".into()),
        webhook("a", "http://127.0.0.1/".into()),
    ]);
    assert!(
        matches!(error, NotifyError::DuplicateName { .. }),
        "{error}"
    );

    let error = start_error(vec![webhook(" ", "http://127.0.0.1/".into())]);
    assert!(matches!(error, NotifyError::EmptyName), "{error}");
}

#[test]
fn config_parses_from_toml_and_rejects_unknown_fields() {
    let config: WebhookConfig = toml::from_str(
        r#"
        name = "slack"
        url = "https://hooks.slack.com/services/T/B/X"
        format = "slack"
        token_env = "SLACK_TOKEN"
        timeout = "3s"
        "#,
    )
    .unwrap();
    assert_eq!(config.format, WebhookFormat::Slack);
    assert_eq!(config.timeout.as_deref(), Some("3s"));

    let config: WebhookConfig =
        toml::from_str("name = \"a\"\nurl = \"http://127.0.0.1/\"").unwrap();
    assert_eq!(config.format, WebhookFormat::Json);

    let error = toml::from_str::<WebhookConfig>("name = \"a\"\nurl = \"http://x/\"\ntoken = \"t\"")
        .err()
        .unwrap();
    assert!(error.to_string().contains("unknown field"), "{error}");
}

#[test]
fn notifier_is_shareable() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Notifier>();
}
