//! A small query client on a connection the proxy logs in with the target's
//! credentials, for `discover`: extended-protocol queries with text parameters (never
//! spliced into SQL), bounded answers, and the server's errors as values.

use super::super::{
    backend,
    tls::BackendStream,
    wire::{self, Builder, Fields, MessageReader},
};
use crate::proto::Session;
use tokio::io::AsyncWriteExt as _;

/// Largest server message read (a sampled row of cut values is far smaller).
const MAX_MESSAGE: usize = 8 << 20;

/// A value as the server sent it in text, or NULL.
pub type Value = Option<Vec<u8>>;

/// What a query answered.
#[derive(Debug, Default)]
pub struct Rows {
    /// Each result column's type OID.
    pub types: Vec<i64>,
    pub rows: Vec<Vec<Value>>,
}

/// Why a query gave no rows.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The server refused the statement (the connection is still usable).
    #[error("{code}: {message}")]
    Server { code: String, message: String },
    /// The connection failed or the server went away.
    #[error("{0}")]
    Lost(String),
}

/// A logged-in connection to the target.
pub struct Conn {
    reader: MessageReader<BackendStream>,
}

impl Conn {
    /// Logs in to `database` with the target's credentials (as `session` names them).
    pub async fn open(session: &Session, database: &str) -> Result<Conn, ConnError> {
        let mut params = vec![
            ("user".to_owned(), String::new()),
            (
                "application_name".to_owned(),
                "portcullis-discover".to_owned(),
            ),
            ("client_encoding".to_owned(), "UTF8".to_owned()),
        ];
        if !database.is_empty() {
            params.push(("database".to_owned(), database.to_owned()));
        }
        let b = backend::login(session, &params)
            .await
            .map_err(|e| match e {
                backend::LoginError::Server { message, .. }
                | backend::LoginError::Proxy(message) => {
                    ConnError::Lost(format!("cannot log in to {database}: {message}"))
                }
            })?;
        Ok(Conn {
            reader: MessageReader::with_buffer(b.stream, MAX_MESSAGE, b.leftover),
        })
    }

    /// Runs `sql` with text `params` and returns at most `max_rows` rows (the rest are
    /// read and dropped).
    pub async fn query(
        &mut self,
        sql: &str,
        params: &[&str],
        max_rows: usize,
    ) -> Result<Rows, ConnError> {
        let mut batch = Builder::new(b'P')
            .cstr("")
            .cstr(sql)
            .i16(0)
            .finish()
            .to_vec();
        batch.extend_from_slice(&wire::bind_text(params.iter().map(|p| Some(*p))));
        batch.extend_from_slice(&Builder::new(b'D').u8(b'P').cstr("").finish());
        batch.extend_from_slice(&Builder::new(b'E').cstr("").i32(0).finish());
        batch.extend_from_slice(&Builder::new(b'S').finish());
        let lost =
            |e: std::io::Error| ConnError::Lost(format!("the target connection failed: {e}"));
        self.reader
            .get_mut()
            .write_all(&batch)
            .await
            .map_err(lost)?;
        self.reader.get_mut().flush().await.map_err(lost)?;
        let mut out = Rows::default();
        let mut error = None;
        loop {
            let m = match self.reader.next().await {
                Ok(Some(m)) => m,
                Ok(None) => return Err(ConnError::Lost("the target closed the connection".into())),
                Err(e) => return Err(ConnError::Lost(format!("bad message from the target: {e}"))),
            };
            match m.tag() {
                b'T' => out.types = types(m.body()),
                b'D' if out.rows.len() < max_rows => {
                    out.rows.push(row(m.body()).ok_or_else(|| {
                        ConnError::Lost("the target sent a malformed row".into())
                    })?);
                }
                b'E' => {
                    let fields = wire::notice_fields(m.body());
                    let said = |c: u8| {
                        fields
                            .iter()
                            .find(|(f, _)| *f == c)
                            .map_or(String::new(), |(_, v)| (*v).to_owned())
                    };
                    error = Some(ConnError::Server {
                        code: said(b'C'),
                        message: said(b'M'),
                    });
                }
                b'Z' => break,
                _ => {}
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

/// The type OID of each column of a `RowDescription`.
fn types(body: &[u8]) -> Vec<i64> {
    let mut f = Fields(body);
    let Ok(count) = f.count16() else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        if f.cstr_bytes().is_err() || f.take(6).is_err() {
            break;
        }
        let Ok(oid) = f.i32() else { break };
        out.push(i64::from(u32::from_ne_bytes(oid.to_ne_bytes())));
        if f.take(8).is_err() {
            break;
        }
    }
    out
}

/// The values of a `DataRow`.
fn row(body: &[u8]) -> Option<Vec<Value>> {
    let mut f = Fields(body);
    let count = f.count16().ok()?;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        out.push(f.value().ok()?.map(<[u8]>::to_vec));
    }
    Some(out)
}

/// `name` as a quoted SQL identifier.
#[must_use]
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
