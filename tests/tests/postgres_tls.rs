//! TLS toward real PostgreSQL servers: `connect_backend` in every mode against a server
//! with `ssl = on` (test CA) and one without, each connection proven by a login and a
//! `pg_stat_ssl` query; and SCRAM-SHA-256-PLUS with our channel binding, which only
//! succeeds if PostgreSQL computed the same `tls-server-end-point` hash.
//!
//! Needs root and PostgreSQL; otherwise each test says why and passes.

use anyhow::{Context, bail, ensure};
use portcullis::{
    policy::{BackendTls, TargetTls},
    proto::{
        postgres::tls::{BackendStream, NegotiationError, connect_backend},
        tls::{ChannelBinding, TlsError},
    },
};
use portcullis_tests::postgres::PgServer;
use postgres_protocol::authentication::sasl;
use std::path::PathBuf;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Authentication request codes (the first Int32 of an `R` message).
const AUTH_OK: i32 = 0;
const AUTH_SASL: i32 = 10;
const AUTH_SASL_CONTINUE: i32 = 11;
const AUTH_SASL_FINAL: i32 = 12;
/// Larger server messages mean a broken stream, not a test server.
const MAX_MESSAGE: usize = 64 * 1024;

fn config(mode: BackendTls, ca_file: Option<PathBuf>, server_name: Option<&str>) -> TargetTls {
    TargetTls {
        mode,
        ca_file,
        server_name: server_name.map(String::from),
    }
}

/// Connects to `pg` over TCP and negotiates TLS; the name defaults to the IP, as the
/// proxy does for a target given by address.
async fn connect(
    pg: &PgServer,
    cfg: &TargetTls,
) -> anyhow::Result<Result<(BackendStream, Option<ChannelBinding>), NegotiationError>> {
    let tcp = TcpStream::connect((pg.host(), pg.port()))
        .await
        .context("cannot connect to the test server")?;
    Ok(connect_backend(tcp, cfg, &pg.host().to_string()).await)
}

/// Logs in as the trusted superuser and asks the server whether it sees TLS, which
/// proves the stream carries the protocol both ways.
async fn server_sees_tls(stream: &mut BackendStream) -> anyhow::Result<bool> {
    startup(stream, PgServer::USER).await?;
    let (kind, body) = read_message(stream).await?;
    ensure!(
        kind == b'R',
        "expected an Authentication message, got {:?}",
        char::from(kind)
    );
    ensure!(
        auth_code(&body)? == AUTH_OK,
        "trust login was not accepted: {body:?}"
    );
    let rows = simple_query(
        stream,
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .await?;
    match rows.as_slice() {
        [ssl] if ssl == "t" => Ok(true),
        [ssl] if ssl == "f" => Ok(false),
        _ => bail!("unexpected pg_stat_ssl rows: {rows:?}"),
    }
}

#[tokio::test]
async fn every_mode_against_a_tls_server() -> anyhow::Result<()> {
    let Some(pg) = PgServer::start_tls_or_skip()? else {
        return Ok(());
    };
    let ca = pg.ca_file().context("a TLS server has a CA")?;
    let cases = [
        (config(BackendTls::Disable, None, None), false),
        (config(BackendTls::Prefer, None, None), true),
        (config(BackendTls::Require, None, None), true),
        (config(BackendTls::VerifyFull, Some(ca.clone()), None), true),
        (
            config(BackendTls::VerifyFull, Some(ca.clone()), Some("localhost")),
            true,
        ),
        // verify-ca: the chain must lead to the CA, whatever name is expected.
        (
            config(
                BackendTls::VerifyCa,
                Some(ca.clone()),
                Some("db.example.com"),
            ),
            true,
        ),
    ];
    for (cfg, tls) in cases {
        let (mut stream, binding) = connect(&pg, &cfg)
            .await?
            .with_context(|| format!("{cfg:?}; server log:\n{}", pg.log()))?;
        ensure!(
            stream.is_tls() == tls,
            "{cfg:?}: is_tls() = {}",
            stream.is_tls()
        );
        // The test CA's certificates are ECDSA P-256 with SHA-256.
        ensure!(
            binding.as_ref().map(|b| b.as_bytes().len()) == tls.then_some(32),
            "{cfg:?}: binding {binding:?}"
        );
        ensure!(
            server_sees_tls(&mut stream).await? == tls,
            "{cfg:?}: pg_stat_ssl disagrees"
        );
    }
    Ok(())
}

#[tokio::test]
async fn verify_rejects_a_wrong_ca_and_verify_full_a_wrong_name() -> anyhow::Result<()> {
    let Some(pg) = PgServer::start_tls_or_skip()? else {
        return Ok(());
    };
    let ca = pg.ca_file().context("a TLS server has a CA")?;
    let dir = tempfile::tempdir()?;
    let other_ca = dir.path().join("other-ca.crt");
    std::fs::write(&other_ca, unrelated_ca_pem()?)?;

    let cases = [
        (
            "wrong name",
            config(BackendTls::VerifyFull, Some(ca), Some("db.example.com")),
        ),
        (
            "wrong CA",
            config(BackendTls::VerifyFull, Some(other_ca.clone()), None),
        ),
        ("webpki roots", config(BackendTls::VerifyFull, None, None)),
        (
            "verify-ca, wrong CA",
            config(BackendTls::VerifyCa, Some(other_ca.clone()), None),
        ),
        (
            "verify-ca, webpki roots",
            config(BackendTls::VerifyCa, None, None),
        ),
    ];
    for (what, cfg) in cases {
        match connect(&pg, &cfg).await? {
            Err(NegotiationError::Tls(error @ TlsError::Verification { .. })) => {
                let message = error.to_string();
                ensure!(
                    message.starts_with("certificate verification failed"),
                    "{message}"
                );
            }
            Err(other) => bail!("{what}: expected a verification error, got: {other}"),
            Ok(_) => bail!("{what}: connected"),
        }
    }
    Ok(())
}

#[tokio::test]
async fn modes_against_a_server_without_tls() -> anyhow::Result<()> {
    let Some(pg) = PgServer::start_or_skip()? else {
        return Ok(());
    };
    for mode in [BackendTls::Disable, BackendTls::Prefer] {
        let (mut stream, binding) = connect(&pg, &config(mode, None, None)).await??;
        ensure!(!stream.is_tls() && binding.is_none(), "{mode:?}");
        ensure!(
            !server_sees_tls(&mut stream).await?,
            "{mode:?}: pg_stat_ssl says TLS"
        );
    }
    for mode in [
        BackendTls::Require,
        BackendTls::VerifyCa,
        BackendTls::VerifyFull,
    ] {
        match connect(&pg, &config(mode, None, None)).await? {
            Err(error @ NegotiationError::Refused) => {
                let message = error.to_string();
                ensure!(message.contains("server does not support TLS"), "{message}");
            }
            Err(other) => bail!("{mode:?}: expected a refusal, got: {other}"),
            Ok(_) => bail!("{mode:?}: connected without TLS"),
        }
    }
    Ok(())
}

/// PostgreSQL offers SCRAM-SHA-256-PLUS over TLS and accepts our binding data; the same
/// role is rejected in plaintext (`hostssl` only).
#[tokio::test]
async fn scram_plus_login_with_our_channel_binding() -> anyhow::Result<()> {
    let Some(pg) = PgServer::start_tls_or_skip()? else {
        return Ok(());
    };
    let ca = pg.ca_file();
    let (mut stream, binding) = connect(&pg, &config(BackendTls::VerifyFull, ca, None)).await??;
    let binding = binding.context("no channel binding for an ECDSA certificate")?;

    startup(&mut stream, PgServer::TLS_USER).await?;
    let body = expect_auth(&mut stream, AUTH_SASL).await?;
    let mechanisms: Vec<&[u8]> = body
        .get(4..)
        .unwrap_or_default()
        .split(|&b| b == 0)
        .collect();
    ensure!(
        mechanisms.contains(&sasl::SCRAM_SHA_256_PLUS.as_bytes()),
        "SCRAM-SHA-256-PLUS not offered: {body:?}"
    );

    let mut scram = sasl::ScramSha256::new(
        PgServer::TLS_PASSWORD.as_bytes(),
        sasl::ChannelBinding::tls_server_end_point(binding.as_bytes().to_vec()),
    );
    let mut initial = sasl::SCRAM_SHA_256_PLUS.as_bytes().to_vec();
    initial.push(0);
    initial.extend(i32::try_from(scram.message().len())?.to_be_bytes());
    initial.extend(scram.message());
    send(&mut stream, b'p', &initial).await?;
    let server_first = expect_auth(&mut stream, AUTH_SASL_CONTINUE).await?;
    scram.update(server_first.get(4..).unwrap_or_default())?;
    send(&mut stream, b'p', scram.message()).await?;
    // A binding that differs from PostgreSQL's fails here with an ErrorResponse.
    let server_final = expect_auth(&mut stream, AUTH_SASL_FINAL)
        .await
        .with_context(|| format!("server log:\n{}", pg.log()))?;
    scram.finish(server_final.get(4..).unwrap_or_default())?;
    expect_auth(&mut stream, AUTH_OK).await?;

    // In plaintext the same role is refused before any authentication.
    let (mut plain, _) = connect(&pg, &config(BackendTls::Disable, None, None)).await??;
    startup(&mut plain, PgServer::TLS_USER).await?;
    let (kind, body) = read_message(&mut plain).await?;
    ensure!(
        kind == b'E',
        "plaintext login was not refused: {kind} {body:?}"
    );
    Ok(())
}

// --- A minimal frontend: just enough protocol to prove the streams work ---------------

/// A CA certificate that signed nothing the test server holds.
fn unrelated_ca_pem() -> anyhow::Result<String> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Unrelated test CA");
    Ok(params.self_signed(&key)?.pem())
}

/// Sends a protocol 3.0 `StartupMessage` for `user` and database `postgres`.
async fn startup(stream: &mut BackendStream, user: &str) -> anyhow::Result<()> {
    let mut body = 196_608_i32.to_be_bytes().to_vec(); // protocol 3.0
    for part in ["user", user, "database", "postgres"] {
        body.extend(part.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut message = i32::try_from(body.len() + 4)?.to_be_bytes().to_vec();
    message.extend(body);
    stream.write_all(&message).await?;
    Ok(())
}

/// Sends one typed message.
async fn send(stream: &mut BackendStream, kind: u8, body: &[u8]) -> anyhow::Result<()> {
    let mut message = vec![kind];
    message.extend(i32::try_from(body.len() + 4)?.to_be_bytes());
    message.extend(body);
    stream.write_all(&message).await?;
    Ok(())
}

/// Reads one typed message: its type byte and body.
async fn read_message(stream: &mut BackendStream) -> anyhow::Result<(u8, Vec<u8>)> {
    let kind = stream.read_u8().await.context("reading a message type")?;
    let len = usize::try_from(stream.read_i32().await?)?;
    ensure!(
        (4..=MAX_MESSAGE).contains(&len),
        "message {kind} of length {len}"
    );
    let mut body = vec![0; len - 4];
    stream.read_exact(&mut body).await?;
    Ok((kind, body))
}

/// The request code of an Authentication message body.
fn auth_code(body: &[u8]) -> anyhow::Result<i32> {
    let code = body
        .first_chunk::<4>()
        .context("short Authentication message")?;
    Ok(i32::from_be_bytes(*code))
}

/// Reads an Authentication message with `code`; anything else is an error.
async fn expect_auth(stream: &mut BackendStream, code: i32) -> anyhow::Result<Vec<u8>> {
    let (kind, body) = read_message(stream).await?;
    if kind == b'E' {
        bail!("server error: {}", String::from_utf8_lossy(&body));
    }
    ensure!(
        kind == b'R' && auth_code(&body)? == code,
        "expected auth {code}, got {kind} {body:?}"
    );
    Ok(body)
}

/// Runs `sql` with the simple query protocol after login; returns the first column of
/// each row as text.
async fn simple_query(stream: &mut BackendStream, sql: &str) -> anyhow::Result<Vec<String>> {
    let mut query = sql.as_bytes().to_vec();
    query.push(0);
    send(stream, b'Q', &query).await?;
    let mut rows = Vec::new();
    let mut ready = 0;
    // One ReadyForQuery ends the login, the next one the query.
    while ready < 2 {
        let (kind, body) = read_message(stream).await?;
        match kind {
            b'Z' => ready += 1,
            b'E' => bail!("server error: {}", String::from_utf8_lossy(&body)),
            b'D' => rows.push(first_column(&body)?),
            _ => {}
        }
    }
    Ok(rows)
}

/// The first column of a `DataRow`, as text.
fn first_column(body: &[u8]) -> anyhow::Result<String> {
    let (_count, rest) = body.split_at_checked(2).context("short DataRow")?;
    let (len, rest) = rest.split_first_chunk::<4>().context("short DataRow")?;
    let len = usize::try_from(i32::from_be_bytes(*len)).context("NULL column")?;
    let value = rest.get(..len).context("short DataRow")?;
    Ok(String::from_utf8_lossy(value).into_owned())
}
