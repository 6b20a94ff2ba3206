//! A target's `client_auth`: the client proves it knows a password before its
//! connection is decided, by SCRAM-SHA-256 (RFC 5802 and 7677) as PostgreSQL's own
//! server asks for it, so psql, libpq and drivers need nothing new (`PGPASSWORD`,
//! `.pgpass`, a password prompt).
//!
//! The password never crosses the wire, and the proxy keeps only what SCRAM's server
//! side needs (a salted verifier, computed once per password and cached). Channel
//! binding (`SCRAM-SHA-256-PLUS`) is not offered: the client leg is local.
//!
//! The exchange is split into pure steps ([`Exchange::start`], [`Exchange::finish`])
//! and the I/O around them ([`authenticate`]), so the steps are tested against the
//! client of `postgres-protocol`.

use super::{
    tls::ClientStream,
    wire::{self, Builder, MAX_AUTH_MESSAGE, WireError},
};
use crate::secret::Secret;
use base64::{Engine as _, engine::general_purpose::STANDARD as B64};
use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};
use tokio::io::AsyncWriteExt as _;

const MECHANISM: &str = "SCRAM-SHA-256";
/// PostgreSQL's default (`scram_iterations`).
const ITERATIONS: u32 = 4096;

/// What the server side of SCRAM keeps of a password.
pub(super) struct Verifier {
    salt: [u8; 16],
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl Verifier {
    /// The verifier of `password` (SASLprep-ed as clients do), with a fresh salt.
    pub(super) fn new(password: &Secret) -> Self {
        let mut salt = [0u8; 16];
        // A failed read leaves the salt zero: still a correct verifier, only one
        // whose salt is guessable, so the error is logged.
        if getrandom::fill(&mut salt).is_err() {
            tracing::error!("No randomness for a SCRAM salt; using a fixed one");
        }
        let prepared = stringprep::saslprep(password.expose());
        let text = prepared.as_deref().unwrap_or(password.expose());
        let salted = hi(text.as_bytes(), &salt, ITERATIONS);
        let client_key = hmac(&salted, b"Client Key");
        Self {
            salt,
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }
}

/// Verifiers by target, each with the password it was made from: a changed password
/// (the secret is read per connection) makes a new one.
#[derive(Default)]
pub(super) struct Verifiers(Mutex<HashMap<String, (Secret, Arc<Verifier>)>>);

impl Verifiers {
    pub(super) fn get(&self, target: &str, password: Secret) -> Arc<Verifier> {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((known, verifier)) = map.get(target)
            && *known == password
        {
            return Arc::clone(verifier);
        }
        let verifier = Arc::new(Verifier::new(&password));
        map.insert(target.to_owned(), (password, Arc::clone(&verifier)));
        verifier
    }
}

/// Why a client was not let in.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum AuthError {
    /// Wrong password (or none): 28P01, as PostgreSQL says it.
    Failed,
    /// The client broke the exchange: 08P01, with what was wrong.
    Protocol(String),
}

/// The server's state between its first message and the client's proof.
pub(super) struct Exchange {
    /// `c=` the client must send back: its GS2 header, base64.
    channel: String,
    nonce: String,
    /// `client-first-message-bare,server-first-message`: the start of `AuthMessage`.
    transcript: String,
}

impl Exchange {
    /// Reads the client-first-message; returns the state and the server-first-message.
    pub(super) fn start(
        verifier: &Verifier,
        client_first: &[u8],
    ) -> Result<(Self, String), AuthError> {
        let text = std::str::from_utf8(client_first)
            .map_err(|_| protocol("the SCRAM client-first-message is not UTF-8"))?;
        let (gs2, bare) = match text.split_once(',').and_then(|(flag, rest)| {
            let (authzid, bare) = rest.split_once(',')?;
            Some((flag, authzid, bare))
        }) {
            Some((flag @ ("n" | "y"), "", bare)) => (format!("{flag},,"), bare),
            Some((flag, _, _)) if flag.starts_with("p=") => {
                return Err(protocol(
                    "channel binding was not offered (SCRAM-SHA-256-PLUS); use \
                     channel_binding=prefer or disable",
                ));
            }
            Some((_, authzid, _)) if !authzid.is_empty() => {
                return Err(protocol("a SCRAM authorization identity is not supported"));
            }
            _ => return Err(protocol("malformed SCRAM client-first-message")),
        };
        let mut attributes = bare.split(',');
        let user = attributes.next().unwrap_or_default();
        let client_nonce = attributes.next().and_then(|a| a.strip_prefix("r="));
        let (true, Some(client_nonce)) = (user.starts_with("n="), client_nonce) else {
            return Err(protocol("malformed SCRAM client-first-message"));
        };
        if client_nonce.is_empty()
            || !client_nonce
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b',')
        {
            return Err(protocol("malformed SCRAM client nonce"));
        }
        let mut ours = [0u8; 18];
        getrandom::fill(&mut ours).map_err(|_| protocol("no randomness for a SCRAM nonce"))?;
        let nonce = format!("{client_nonce}{}", B64.encode(ours));
        let server_first = format!("r={nonce},s={},i={ITERATIONS}", B64.encode(verifier.salt));
        let exchange = Self {
            channel: B64.encode(gs2),
            nonce,
            transcript: format!("{bare},{server_first}"),
        };
        Ok((exchange, server_first))
    }

    /// Checks the client-final-message's proof; returns the server-final-message.
    pub(super) fn finish(
        self,
        verifier: &Verifier,
        client_final: &[u8],
    ) -> Result<String, AuthError> {
        let text = std::str::from_utf8(client_final)
            .map_err(|_| protocol("the SCRAM client-final-message is not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or_else(|| protocol("the SCRAM client-final-message has no proof"))?;
        let mut attributes = without_proof.split(',');
        if attributes.next() != Some(&format!("c={}", self.channel)) {
            return Err(protocol("SCRAM channel binding data does not match"));
        }
        if attributes.next() != Some(&format!("r={}", self.nonce)) {
            return Err(protocol("SCRAM nonce does not match"));
        }
        let proof: [u8; 32] = B64
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| protocol("malformed SCRAM proof"))?;
        let auth_message = format!("{},{without_proof}", self.transcript);
        let signature = hmac(&verifier.stored_key, auth_message.as_bytes());
        let mut client_key = proof;
        for (k, s) in client_key.iter_mut().zip(signature) {
            *k ^= s;
        }
        let stored: [u8; 32] = Sha256::digest(client_key).into();
        // Constant time: how many bytes matched must not show in the timing.
        let differ = stored
            .iter()
            .zip(verifier.stored_key)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if differ != 0 {
            return Err(AuthError::Failed);
        }
        let server_signature = hmac(&verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

fn protocol(what: &str) -> AuthError {
    AuthError::Protocol(what.to_owned())
}

/// Runs the exchange with the client on `stream`. On failure the client has been
/// sent its FATAL error, and the reason (never the password) is returned.
pub(super) async fn authenticate(
    stream: &mut ClientStream,
    user: &str,
    verifier: &Verifier,
) -> Result<(), String> {
    let result = exchange(stream, verifier).await;
    let (code, message) = match result {
        Ok(()) => return Ok(()),
        Err(Step::Auth(AuthError::Failed)) => (
            "28P01",
            format!("password authentication failed for user \"{user}\""),
        ),
        Err(Step::Auth(AuthError::Protocol(what))) => ("08P01", what),
        Err(Step::Wire(WireError::Truncated)) => {
            return Err("the client left during password authentication".into());
        }
        Err(Step::Wire(WireError::Io(e))) => {
            return Err(format!("password authentication failed: {e}"));
        }
        Err(Step::Wire(other)) => ("08P01", other.to_string()),
    };
    super::startup::fatal(stream, code, &format!("Portcullis: {message}")).await;
    Err(format!("client authentication failed: {message}"))
}

enum Step {
    Auth(AuthError),
    Wire(WireError),
}

impl From<AuthError> for Step {
    fn from(e: AuthError) -> Self {
        Self::Auth(e)
    }
}

impl From<WireError> for Step {
    fn from(e: WireError) -> Self {
        Self::Wire(e)
    }
}

impl From<std::io::Error> for Step {
    fn from(e: std::io::Error) -> Self {
        Self::Wire(WireError::Io(e))
    }
}

async fn exchange(stream: &mut ClientStream, verifier: &Verifier) -> Result<(), Step> {
    let offer = Builder::new(b'R').i32(10).cstr(MECHANISM).u8(0).finish();
    send(stream, &offer).await?;
    let initial = password_message(stream).await?;
    let mut f = initial.fields();
    let mechanism = f.cstr()?;
    if mechanism != MECHANISM {
        return Err(protocol(&format!("SASL mechanism {mechanism:?} was not offered")).into());
    }
    let len = usize::try_from(f.i32()?)
        .map_err(|_| protocol("the SCRAM client-first-message is missing"))?;
    let (state, server_first) = Exchange::start(verifier, f.take(len)?)?;
    let cont = Builder::new(b'R')
        .i32(11)
        .bytes(server_first.as_bytes())
        .finish();
    send(stream, &cont).await?;
    let response = password_message(stream).await?;
    let server_final = state.finish(verifier, response.body())?;
    let done = Builder::new(b'R')
        .i32(12)
        .bytes(server_final.as_bytes())
        .finish();
    send(stream, &done).await?;
    Ok(())
}

/// The client's next message, which must be a password message (`p`).
async fn password_message(stream: &mut ClientStream) -> Result<wire::Message, Step> {
    let m = wire::read_message(stream, MAX_AUTH_MESSAGE).await?;
    if m.tag() != b'p' {
        return Err(protocol(&format!(
            "expected a password message, got message type {:?}",
            char::from(m.tag())
        ))
        .into());
    }
    Ok(m)
}

async fn send(stream: &mut ClientStream, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        unreachable!("HMAC takes a key of any length")
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA-256 with one block: SCRAM's `Hi`.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let Ok(prf) = Hmac::<Sha256>::new_from_slice(password) else {
        unreachable!("HMAC takes a key of any length")
    };
    let mut u: [u8; 32] = {
        let mut mac = prf.clone();
        mac.update(salt);
        mac.update(&1u32.to_be_bytes());
        mac.finalize().into_bytes().into()
    };
    let mut out = u;
    for _ in 1..iterations {
        let mut mac = prf.clone();
        mac.update(&u);
        u = mac.finalize().into_bytes().into();
        for (o, x) in out.iter_mut().zip(u) {
            *o ^= x;
        }
    }
    out
}

#[cfg(test)]
#[expect(clippy::unwrap_used, clippy::panic, reason = "tests")]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    /// One exchange with `postgres-protocol`'s client (what tokio-postgres uses).
    fn run(server_password: &str, client_password: &str) -> Result<(), AuthError> {
        let verifier = Verifier::new(&Secret::new(server_password.into()));
        let mut client =
            ScramSha256::new(client_password.as_bytes(), ChannelBinding::unsupported());
        let (state, server_first) = Exchange::start(&verifier, client.message())?;
        client.update(server_first.as_bytes()).unwrap();
        let server_final = state.finish(&verifier, client.message())?;
        client
            .finish(server_final.as_bytes())
            .map_err(|e| AuthError::Protocol(e.to_string()))
    }

    #[test]
    fn the_right_password_passes_and_the_server_proves_itself() {
        assert_eq!(run("s3cret-token", "s3cret-token"), Ok(()));
        // SASLprep: a non-ASCII space is a space, on both sides alike.
        assert_eq!(run("pass\u{00A0}word", "pass\u{00A0}word"), Ok(()));
    }

    #[test]
    fn a_wrong_or_empty_password_fails() {
        assert_eq!(run("s3cret-token", "s3cret-tokeN"), Err(AuthError::Failed));
        assert_eq!(run("s3cret-token", ""), Err(AuthError::Failed));
    }

    #[test]
    fn tampered_messages_are_protocol_errors() {
        let verifier = Verifier::new(&Secret::new("pw".into()));
        for first in [
            &b"p=tls-server-end-point,,n=,r=abc"[..],
            b"n,a=admin,n=,r=abc",
            b"x,,n=,r=abc",
            b"n,,r=abc",
            b"n,,n=,r=",
            b"\xff",
        ] {
            assert!(
                matches!(
                    Exchange::start(&verifier, first),
                    Err(AuthError::Protocol(_))
                ),
                "{first:?}"
            );
        }
        let mut client = ScramSha256::new(b"pw", ChannelBinding::unsupported());
        let (state, server_first) = Exchange::start(&verifier, client.message()).unwrap();
        client.update(server_first.as_bytes()).unwrap();
        let honest = String::from_utf8(client.message().to_vec()).unwrap();
        // Another nonce (a replayed proof) is refused before the proof is checked.
        let replayed = honest.replacen(",r=", ",r=x", 1);
        let Err(AuthError::Protocol(why)) = state.finish(&verifier, replayed.as_bytes()) else {
            panic!("a changed nonce was accepted");
        };
        assert!(why.contains("nonce"), "{why}");
    }

    #[test]
    fn verifiers_are_cached_until_the_password_changes() {
        let cache = Verifiers::default();
        let a = cache.get("db", Secret::new("one".into()));
        let again = cache.get("db", Secret::new("one".into()));
        assert!(Arc::ptr_eq(&a, &again));
        let changed = cache.get("db", Secret::new("two".into()));
        assert!(!Arc::ptr_eq(&a, &changed));
    }

    #[test]
    fn hi_is_pbkdf2_hmac_sha256() {
        // RFC 7914 §11, PBKDF2-HMAC-SHA256 ("passwd", "salt", 1 iteration), first block.
        let expected = "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc";
        let got = hi(b"passwd", b"salt", 1)
            .iter()
            .fold(String::new(), |mut hex, b| {
                use std::fmt::Write as _;
                let _ = write!(hex, "{b:02x}");
                hex
            });
        assert_eq!(got, expected);
    }
}
