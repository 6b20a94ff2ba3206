//! `sessions replay ID --asciicast FILE`: the terminal recording of a session's
//! shell, checked against the digest its event holds in the session's hash chain,
//! copied to FILE for `asciinema play FILE`.

use super::client::Client;
use anyhow::{Context as _, bail};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::path::Path;

/// Events read per API call while looking for the shell.
const PAGE: usize = 500;

/// Writes the first shell recording of session `id` to `out`, after checking it.
pub async fn export(client: &Client, id: &str, out: &Path) -> anyhow::Result<()> {
    let session = client.get(&format!("/v1/sessions/{id}")).await?;
    let id = session
        .get("id")
        .and_then(Value::as_str)
        .context("the daemon answered without a session id")?
        .to_owned();
    let mut after = 0_i64;
    loop {
        let page = client
            .get(&format!(
                "/v1/sessions/{id}/events?after={after}&limit={PAGE}"
            ))
            .await?;
        let events = page.as_array().map_or(&[][..], Vec::as_slice);
        if let Some(shell) = events.iter().find(|e| recording(e).is_some()) {
            return copy(shell, out);
        }
        match events
            .last()
            .and_then(|e| e.get("seq"))
            .and_then(Value::as_i64)
        {
            Some(seq) if events.len() == PAGE && seq > after => after = seq,
            _ => bail!("session {id} has no recorded shell"),
        }
    }
}

fn recording(event: &Value) -> Option<(&str, &str)> {
    let path = event.pointer("/details/recording/path")?.as_str()?;
    let digest = event.get("payload")?.as_str()?;
    Some((path, digest))
}

fn copy(event: &Value, out: &Path) -> anyhow::Result<()> {
    let Some((path, digest)) = recording(event) else {
        bail!("the shell event names no recording");
    };
    let bytes = std::fs::read(path).with_context(|| {
        format!("cannot read the recording {path}; run this as root or on the gateway host")
    })?;
    let found = Sha256::digest(&bytes);
    let found = found.iter().fold(String::with_capacity(64), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
        s
    });
    if found != digest {
        bail!(
            "the recording {path} does not match the digest in the session's chain \
             ({found} ≠ {digest}): it was changed after it was recorded"
        );
    }
    std::fs::write(out, &bytes).with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!(
        "Wrote {} ({} bytes, sha256 {digest} as recorded); play it with: asciinema play {}",
        out.display(),
        bytes.len(),
        out.display()
    );
    Ok(())
}
