//! The proxy's own login to the target: TLS as the target's policy says, the startup
//! message with the client's parameters (and the injected user), and authentication
//! with the stored credentials.
//!
//! Refused on principle: a cleartext password over an unencrypted connection, and a
//! server that says `AuthenticationOk` before SCRAM finished (it would skip proving it
//! knows the password, which is how a man in the middle gets in).

use super::{
    tls::{self, BackendStream, ChannelBinding},
    wire::{self, MAX_AUTH_MESSAGE, Message, MessageReader, PROTOCOL_3_0, TextReading},
};
use crate::{
    policy::{BackendTls, Target, TargetTls},
    proto::Session,
    secret::Secret,
};
use bytes::{Bytes, BytesMut};
use postgres_protocol::{
    authentication::{
        md5_hash,
        sasl::{self, ScramSha256},
    },
    message::frontend,
};
use tokio::io::AsyncWriteExt as _;

/// A logged-in server connection, ready for queries.
pub struct Backend {
    pub stream: BackendStream,
    /// Bytes read past `ReadyForQuery` (normally none).
    pub leftover: BytesMut,
    /// `ParameterStatus` and `NoticeResponse` messages to relay to the client.
    pub relay: Vec<Bytes>,
    /// The server's `BackendKeyData`, for passing cancel requests on.
    pub key: Option<(i32, i32)>,
    /// The transaction status of the first `ReadyForQuery`.
    pub status: u8,
    /// How the server reads the client's text, as it reported at login.
    pub reading: TextReading,
}

/// Why the login failed.
#[derive(Debug)]
pub enum LoginError {
    /// The server refused: its `ErrorResponse`, to relay as it is, and its message.
    Server { frame: Bytes, message: String },
    /// The proxy refused or could not go on.
    Proxy(String),
}

impl LoginError {
    fn proxy(message: impl Into<String>) -> Self {
        Self::Proxy(message.into())
    }
}

/// Connects to the target and logs in with the client's startup parameters.
///
/// With the target's `tls = "prefer"`, a login that fails over TLS (the handshake, or
/// an error from the server, such as a `pg_hba.conf` that takes only plaintext for
/// this user) is tried once more without TLS, as libpq's `sslmode=prefer` does.
pub async fn login(
    session: &Session,
    client_params: &[(String, String)],
) -> Result<Backend, LoginError> {
    let target = &*session.target;
    let (user, password) = credentials(target, client_params)?;
    let params: Vec<(String, String)> = client_params
        .iter()
        .map(|(name, value)| match name.as_str() {
            "user" => (name.clone(), user.clone()),
            _ => (name.clone(), value.clone()),
        })
        .collect();
    let login = Login {
        session,
        params: &params,
        user: &user,
        password: password.as_ref(),
    };
    let tls = &target.tls;
    let mut over_tls = false;
    match login.attempt(tls, &mut over_tls).await {
        Err(error) if over_tls && tls.mode == BackendTls::Prefer => {
            let reason = match &error {
                LoginError::Server { message, .. } | LoginError::Proxy(message) => message,
            };
            tracing::info!(
                target = %target.name,
                %reason,
                "Login to the target over TLS failed; trying without TLS (tls = \"prefer\")"
            );
            let plain = TargetTls {
                mode: BackendTls::Disable,
                ..tls.clone()
            };
            login.attempt(&plain, &mut over_tls).await
        }
        other => other,
    }
}

/// What one login attempt needs.
struct Login<'a> {
    session: &'a Session,
    params: &'a [(String, String)],
    user: &'a str,
    password: Option<&'a Secret>,
}

impl Login<'_> {
    /// Connects with TLS as `tls` says, sends the startup message and authenticates.
    /// `over_tls` is set once TLS has been tried (negotiated, or failed to be).
    async fn attempt(&self, tls: &TargetTls, over_tls: &mut bool) -> Result<Backend, LoginError> {
        let tcp = crate::proto::tcp::connect_upstream(self.session.upstream, self.session.mark)
            .await
            .map_err(|e| {
                LoginError::proxy(format!("cannot connect to {}: {e}", self.session.upstream))
            })?;
        let host = self.session.upstream.ip().to_string();
        let (stream, binding) = match tls::connect_backend(tcp, tls, &host).await {
            Ok(connected) => connected,
            Err(e) => {
                *over_tls = true;
                let target = &self.session.target.name;
                return Err(LoginError::proxy(format!("TLS to target {target}: {e}")));
            }
        };
        *over_tls = stream.is_tls();
        let mut reader = MessageReader::new(stream, MAX_AUTH_MESSAGE);
        let startup = wire::startup_packet(PROTOCOL_3_0, &wire::startup_body(self.params));
        send(&mut reader, &startup).await?;
        authenticate(
            &mut reader,
            self.user,
            self.password,
            binding.as_ref(),
            &self.session.target.name,
        )
        .await?;
        ready(reader).await
    }
}

/// The user to log in as and its password (resolved now, so rotation needs no reload).
fn credentials(
    target: &Target,
    client_params: &[(String, String)],
) -> Result<(String, Option<Secret>), LoginError> {
    let client_user = client_params
        .iter()
        .find(|(n, _)| n == "user")
        .map(|(_, v)| v.clone());
    let Some(creds) = &target.credentials else {
        let user = client_user.ok_or_else(|| LoginError::proxy("no user name given"))?;
        return Ok((user, None));
    };
    let user = creds
        .user
        .clone()
        .or(client_user)
        .ok_or_else(|| LoginError::proxy("no user name given"))?;
    let password = match &creds.password {
        Some(reference) => Some(reference.resolve().map_err(|reason| {
            LoginError::proxy(format!(
                "the credentials of target {} are unavailable: {reason}",
                target.name
            ))
        })?),
        None => None,
    };
    Ok((user, password))
}

async fn send(reader: &mut MessageReader<BackendStream>, bytes: &[u8]) -> Result<(), LoginError> {
    let stream = reader.get_mut();
    stream
        .write_all(bytes)
        .await
        .map_err(|e| LoginError::proxy(format!("lost the target during login: {e}")))?;
    stream
        .flush()
        .await
        .map_err(|e| LoginError::proxy(format!("lost the target during login: {e}")))
}

async fn next(reader: &mut MessageReader<BackendStream>) -> Result<Message, LoginError> {
    match reader.next().await {
        Ok(Some(m)) if m.tag() == b'E' => {
            let message = wire::notice_fields(m.body())
                .into_iter()
                .find(|(code, _)| *code == b'M')
                .map_or_else(String::new, |(_, m)| m.to_owned());
            Err(LoginError::Server {
                frame: m.frame,
                message,
            })
        }
        Ok(Some(m)) => Ok(m),
        Ok(None) => Err(LoginError::proxy(
            "the target closed the connection during login",
        )),
        Err(e) => Err(LoginError::proxy(format!(
            "bad message from the target during login: {e}"
        ))),
    }
}

/// Answers the server's authentication requests until `AuthenticationOk`.
async fn authenticate(
    reader: &mut MessageReader<BackendStream>,
    user: &str,
    password: Option<&Secret>,
    binding: Option<&ChannelBinding>,
    target: &str,
) -> Result<(), LoginError> {
    let mut scram: Option<ScramSha256> = None;
    let mut scram_done = false;
    let need = |what: &str| {
        LoginError::proxy(format!(
            "target {target} asks for a {what}, but its policy has no credentials; add \
             `credentials = {{ user = …, password_env = … }}` to the target"
        ))
    };
    loop {
        let m = auth_request(reader).await?;
        let mut fields = m.fields();
        let code = fields.i32().map_err(|e| LoginError::proxy(e.to_string()))?;
        let mut out = BytesMut::new();
        match code {
            0 if scram.is_some() && !scram_done => {
                return Err(LoginError::proxy(format!(
                    "target {target} accepted the login before SCRAM authentication finished; \
                     refusing (the server did not prove it knows the password)"
                )));
            }
            0 => return Ok(()),
            3 => {
                let password = password.ok_or_else(|| need("password"))?;
                let tls = reader.get_mut().is_tls();
                cleartext_response(tls, password, target, &mut out)?;
            }
            5 => {
                let password = password.ok_or_else(|| need("password"))?;
                md5_response(&mut fields, user, password, &mut out)?;
            }
            10 => {
                let password = password.ok_or_else(|| need("password"))?;
                scram = Some(sasl_start(
                    &mut fields,
                    password,
                    binding,
                    target,
                    &mut out,
                )?);
            }
            11 => {
                let s = scram
                    .as_mut()
                    .ok_or_else(|| LoginError::proxy("SASL continue without SASL"))?;
                s.update(fields.rest()).map_err(|e| {
                    LoginError::proxy(format!("SCRAM with target {target} failed: {e}"))
                })?;
                frontend::sasl_response(s.message(), &mut out)
                    .map_err(|e| LoginError::proxy(e.to_string()))?;
            }
            12 => {
                let s = scram
                    .as_mut()
                    .ok_or_else(|| LoginError::proxy("SASL final without SASL"))?;
                s.finish(fields.rest()).map_err(|e| {
                    LoginError::proxy(format!(
                        "target {target} failed to prove it knows the password (SCRAM server \
                         signature): {e}"
                    ))
                })?;
                scram_done = true;
                continue;
            }
            other => {
                return Err(LoginError::proxy(format!(
                    "target {target} asks for authentication method {other}, which Portcullis \
                     does not speak (use scram-sha-256, md5, or password over TLS)"
                )));
            }
        }
        send(reader, &out).await?;
    }
}

/// The server's next authentication request (`R`); notices are relayed later with
/// the parameters.
async fn auth_request(reader: &mut MessageReader<BackendStream>) -> Result<Message, LoginError> {
    loop {
        let m = next(reader).await?;
        match m.tag() {
            b'R' => return Ok(m),
            b'N' | b'v' => {}
            other => {
                return Err(LoginError::proxy(format!(
                    "the target sent message {:?} during login",
                    char::from(other)
                )));
            }
        }
    }
}

/// Answers `AuthenticationCleartextPassword`, only over TLS.
fn cleartext_response(
    tls: bool,
    password: &Secret,
    target: &str,
    out: &mut BytesMut,
) -> Result<(), LoginError> {
    if !tls {
        return Err(LoginError::proxy(format!(
            "target {target} asks for a cleartext password over an unencrypted connection; \
             refusing (set tls = \"require\" or \"verify-full\" on the target, or use \
             scram-sha-256 on the server)"
        )));
    }
    frontend::password_message(password.expose().as_bytes(), out)
        .map_err(|e| LoginError::proxy(e.to_string()))
}

/// Answers `AuthenticationMD5Password`: the salted hash of the password.
fn md5_response(
    fields: &mut super::wire::Fields<'_>,
    user: &str,
    password: &Secret,
    out: &mut BytesMut,
) -> Result<(), LoginError> {
    let salt: [u8; 4] = fields
        .take(4)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| LoginError::proxy("malformed MD5 request from the target"))?;
    let hash = md5_hash(user.as_bytes(), password.expose().as_bytes(), salt);
    frontend::password_message(hash.as_bytes(), out).map_err(|e| LoginError::proxy(e.to_string()))
}

/// Answers `AuthenticationSASL`: SCRAM-SHA-256, with channel binding (`-PLUS`) when
/// the connection is TLS and the server offers it.
fn sasl_start(
    fields: &mut super::wire::Fields<'_>,
    password: &Secret,
    binding: Option<&ChannelBinding>,
    target: &str,
    out: &mut BytesMut,
) -> Result<ScramSha256, LoginError> {
    let mut mechanisms = Vec::new();
    while let Ok(name) = fields.cstr() {
        if name.is_empty() {
            break;
        }
        mechanisms.push(name);
    }
    let plus = mechanisms.contains(&sasl::SCRAM_SHA_256_PLUS);
    let (mechanism, channel) = match binding {
        Some(b) if plus => (
            sasl::SCRAM_SHA_256_PLUS,
            sasl::ChannelBinding::tls_server_end_point(b.as_bytes().to_vec()),
        ),
        Some(_) => (sasl::SCRAM_SHA_256, sasl::ChannelBinding::unrequested()),
        None => (sasl::SCRAM_SHA_256, sasl::ChannelBinding::unsupported()),
    };
    if !mechanisms.contains(&mechanism) {
        return Err(LoginError::proxy(format!(
            "target {target} offers SASL mechanisms {mechanisms:?}; Portcullis speaks \
             SCRAM-SHA-256"
        )));
    }
    let scram = ScramSha256::new(password.expose().as_bytes(), channel);
    frontend::sasl_initial_response(mechanism, scram.message(), out)
        .map_err(|e| LoginError::proxy(e.to_string()))?;
    Ok(scram)
}

/// After `AuthenticationOk`: parameters, key data, then `ReadyForQuery`.
async fn ready(mut reader: MessageReader<BackendStream>) -> Result<Backend, LoginError> {
    let mut relay = Vec::new();
    let mut key = None;
    let mut reading = TextReading::unreported();
    loop {
        let m = next(&mut reader).await?;
        match m.tag() {
            b'S' => {
                reading.note(&m);
                relay.push(m.frame);
            }
            b'N' => relay.push(m.frame),
            b'K' => {
                let mut f = m.fields();
                key = f.i32().ok().zip(f.i32().ok());
            }
            b'Z' => {
                let status = m.body().first().copied().unwrap_or(b'I');
                let (stream, leftover) = reader.into_parts();
                return Ok(Backend {
                    stream,
                    leftover,
                    relay,
                    key,
                    status,
                    reading,
                });
            }
            other => {
                return Err(LoginError::proxy(format!(
                    "the target sent message {:?} before it was ready",
                    char::from(other)
                )));
            }
        }
    }
}
