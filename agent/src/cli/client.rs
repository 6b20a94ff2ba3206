//! A small HTTP/1.1 client for the daemon's Unix socket.

use anyhow::{Context as _, bail};
use http_body_util::{BodyExt as _, Empty};
use hyper::{Method, Request, body::Bytes};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::path::PathBuf;
use tokio::net::UnixStream;

/// Largest API answer we read.
const MAX_ANSWER: usize = 64 * 1024 * 1024;

pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: PathBuf) -> Self {
        Self { socket }
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::GET, path).await
    }

    pub async fn post(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::POST, path).await
    }

    async fn call(&self, method: Method, path: &str) -> anyhow::Result<Value> {
        let stream = UnixStream::connect(&self.socket).await.with_context(|| {
            format!(
                "cannot reach the Portcullis daemon at {}; is it running (`portcullis daemon`)? \
                 Set PORTCULLIS_SOCKET or --socket if it listens elsewhere",
                self.socket.display()
            )
        })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "portcullis")
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("cannot read the daemon's answer: {e}"))?
            .to_bytes();
        let value: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
        if !status.is_success() {
            let message = value
                .get("error")
                .and_then(Value::as_str)
                .map_or_else(|| value.to_string(), str::to_owned);
            bail!("{message} (HTTP {status})");
        }
        Ok(value)
    }
}
