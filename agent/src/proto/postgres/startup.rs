//! The client's opening: SSL and GSS encryption requests, cancel requests, and the
//! startup message, before the gate decides the connection.

use super::{
    Postgres,
    encoding::ClientEncoding,
    tls::{ClientStream, MaybeTls, accept_client},
    wire::{
        self, Builder, CANCEL_REQUEST, GSSENC_REQUEST, PROTOCOL_3_0, SSL_REQUEST, Severity,
        WireError,
    },
};
use std::time::Duration;
use tokio::{io::AsyncWriteExt as _, net::TcpStream};

/// How long a client may take to send its startup message.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A client that sent its startup message and waits for authentication.
pub struct Opened {
    pub stream: ClientStream,
    /// Startup parameters as the client sent them (`user`, `database`, `options`…).
    pub params: Vec<(String, String)>,
}

impl Opened {
    /// The value of startup parameter `name`.
    #[must_use]
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sends `bytes` to the client; a client that left is noticed by the next read.
    pub async fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
        let _ = self.stream.flush().await;
    }
}

/// Runs the opening exchange; `Ok(None)` when the connection was a cancel request.
pub async fn open(pg: &Postgres, stream: TcpStream) -> Result<Option<Opened>, String> {
    match tokio::time::timeout(STARTUP_TIMEOUT, negotiate(pg, stream)).await {
        Ok(result) => result,
        Err(_) => Err("the client sent no startup message in time".into()),
    }
}

async fn negotiate(pg: &Postgres, stream: TcpStream) -> Result<Option<Opened>, String> {
    let mut stream = MaybeTls::Plain(stream);
    loop {
        let (code, body) = match wire::read_startup(&mut stream).await {
            Ok(packet) => packet,
            Err(error) => return Err(startup_error(&mut stream, &error).await),
        };
        match code {
            SSL_REQUEST => {
                let MaybeTls::Plain(tcp) = stream else {
                    return Err("SSLRequest inside TLS".into());
                };
                stream = if let Some(config) = &pg.tls_server {
                    let mut tcp = tcp;
                    tcp.write_all(b"S").await.map_err(|e| e.to_string())?;
                    accept_client(tcp, std::sync::Arc::clone(config))
                        .await
                        .map_err(|e| format!("TLS handshake with the client failed: {e}"))?
                } else {
                    let mut tcp = tcp;
                    tcp.write_all(b"N").await.map_err(|e| e.to_string())?;
                    MaybeTls::Plain(tcp)
                };
            }
            // GSSAPI encryption is not offered; libpq then tries TLS or plaintext.
            GSSENC_REQUEST => stream.write_all(b"N").await.map_err(|e| e.to_string())?,
            CANCEL_REQUEST => {
                pg.cancels.cancel(&body, pg.mark).await;
                return Ok(None);
            }
            code if code >> 16 == 3 => return startup(stream, code, &body).await.map(Some),
            other => {
                let message = format!(
                    "unsupported frontend protocol {}.{}: Portcullis speaks 3.0",
                    other >> 16,
                    other & 0xffff
                );
                fatal(&mut stream, "0A000", &message).await;
                return Err(message);
            }
        }
    }
}

/// A v3 startup message. A newer minor version gets `NegotiateProtocolVersion` (3.0,
/// and the `_pq_.` options we do not know), as PostgreSQL itself answers.
async fn startup(mut stream: ClientStream, code: u32, body: &[u8]) -> Result<Opened, String> {
    let params = match wire::startup_params(body) {
        Ok(params) => params,
        Err(error) => {
            let message = format!("invalid startup packet: {error}");
            fatal(&mut stream, "08P01", &message).await;
            return Err(message);
        }
    };
    let unknown: Vec<&str> = params
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| n.starts_with("_pq_."))
        .collect();
    if code != PROTOCOL_3_0 || !unknown.is_empty() {
        let mut b = Builder::new(b'v')
            .i32(i32::try_from(PROTOCOL_3_0).unwrap_or(0))
            .i32(i32::try_from(unknown.len()).unwrap_or(0));
        for name in &unknown {
            b = b.cstr(name);
        }
        stream
            .write_all(&b.finish())
            .await
            .map_err(|e| e.to_string())?;
    }
    if params
        .iter()
        .any(|(n, v)| n == "replication" && v != "false" && v != "0")
    {
        let message = "replication connections are not supported by Portcullis";
        fatal(&mut stream, "0A000", message).await;
        return Err(message.into());
    }
    let params = params
        .into_iter()
        .filter(|(n, _)| !n.starts_with("_pq_."))
        .collect();
    Ok(Opened { stream, params })
}

/// Answers a broken startup with a protocol error (when the client can still read it)
/// and returns the reason to record.
async fn startup_error(stream: &mut ClientStream, error: &WireError) -> String {
    match error {
        WireError::Truncated => "the client closed the connection during startup".into(),
        WireError::Io(e) => format!("startup failed: {e}"),
        WireError::TooLong { .. } | WireError::Malformed(_) => {
            let message = format!("invalid startup packet: {error}");
            fatal(stream, "08P01", &message).await;
            message
        }
    }
}

/// Sends a FATAL `ErrorResponse`.
pub async fn fatal(stream: &mut ClientStream, code: &str, message: &str) {
    let e = wire::error_response(
        ClientEncoding::Utf8,
        Severity::FATAL,
        code,
        message,
        None,
        None,
    );
    let _ = stream.write_all(&e).await;
    let _ = stream.flush().await;
}
