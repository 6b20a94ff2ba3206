//! What an SSH session leaves behind: one event per action in the session's chain
//! (`exec`, `shell`, `sftp`, `scp`, `forward`, `agent`, `x11`), and for a shell an
//! asciicast v2 file of its (masked) output under `state_dir/recordings`, whose
//! SHA-256 is the `payload` of the shell's event, so the chain vouches for it.

use crate::{
    gate::ActionOutcome,
    proto::Session,
    record::{EventRecord, now_ms},
};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use std::{
    io::Write as _,
    path::{Path, PathBuf},
    time::Instant,
};

/// Largest asciicast file written per shell; past it output is relayed, not recorded
/// (the event says so).
pub const MAX_RECORDING: u64 = 256 * 1024 * 1024;
/// Output kept as the sample of an exec's event.
pub const SAMPLE_BYTES: usize = 1024;

/// How an action went, for its event.
pub struct Finished {
    pub kind: &'static str,
    /// The masked one-line summary.
    pub summary: String,
    /// The kind's fields, masked.
    pub details: Value,
    pub started: Instant,
    pub at_ms: i64,
    pub error: Option<String>,
    pub payload: Option<String>,
}

/// Records `finished` as decided by `outcome`. A stalled recorder ends the session
/// (the caller sees `false`).
pub async fn record(session: &Session, outcome: &ActionOutcome, finished: Finished) -> bool {
    let duration = i64::try_from(finished.started.elapsed().as_micros()).unwrap_or(i64::MAX);
    let event = EventRecord {
        session_id: session.id.clone(),
        seq: 0,
        at_ms: finished.at_ms,
        kind: finished.kind.to_owned(),
        summary: finished.summary,
        details: Some(finished.details),
        verdict: outcome.verdict().to_owned(),
        decided_by: outcome.decided_by(),
        request_id: outcome.request().map(str::to_owned),
        reason: Some(outcome.message()).filter(|m| !m.is_empty()),
        duration_us: Some(duration),
        error: finished.error,
        payload: finished.payload,
        hash: String::new(),
    };
    session.recorder.record(event).await.is_ok()
}

/// Records `finished` and waits until the record is durable: what comes before the
/// client sees the end of an action (an exit status, a file operation's status, a
/// channel's close), so that a crash (`kill -9`) never loses the record of a result
/// a client saw. `false` when it could not be made durable: the caller withholds the
/// result and ends the session (`Conn::not_recorded`).
pub async fn record_synced(session: &Session, outcome: &ActionOutcome, finished: Finished) -> bool {
    record(session, outcome, finished).await && session.recorder.sync(&session.id).await
}

/// Why a session ends when an action's record could not be made durable.
pub const NOT_RECORDED: &str = "portcullis: the record of this action could not be written \
     (the store refused it); its result is withheld and the session ends, so that nothing \
     runs unrecorded";

/// A new [`Finished`] for an action starting now.
#[must_use]
pub fn starting(kind: &'static str, summary: String, details: Value) -> Finished {
    Finished {
        kind,
        summary,
        details,
        started: Instant::now(),
        at_ms: now_ms(),
        error: None,
        payload: None,
    }
}

/// The first [`SAMPLE_BYTES`] of an exec's (already masked) output.
#[derive(Default)]
pub struct Sample(Vec<u8>);

impl Sample {
    pub fn push(&mut self, data: &[u8]) {
        let room = SAMPLE_BYTES.saturating_sub(self.0.len());
        self.0
            .extend_from_slice(data.get(..room.min(data.len())).unwrap_or_default());
    }

    #[must_use]
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

/// A terminal dimension from a `pty-req`, where zero means unknown (RFC 4254 §6.2:
/// a client without a terminal of its own, as `ssh -tt` from a pipe, sends 0×0):
/// players get the conventional size rather than a one-cell terminal.
fn known_or(dimension: u32, default: u32) -> u32 {
    if dimension == 0 { default } else { dimension }
}

/// How much of `data` ends on a character boundary: all of it, but for the start
/// of a UTF-8 character cut off at its end (invalid bytes count as whole: the
/// lossy decoding shows them as they are).
fn whole_chars(data: &[u8]) -> usize {
    let len = data.len();
    for back in 1..=3.min(len) {
        let at = len - back;
        let byte = data.get(at).copied().unwrap_or_default();
        if byte & 0xc0 == 0x80 {
            continue;
        }
        let needs = match byte {
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => 1,
        };
        return if back < needs { at } else { len };
    }
    len
}

/// An asciicast v2 file being written: header, then `[seconds, "o"|"r", data]` lines.
pub struct Cast {
    file: std::io::BufWriter<std::fs::File>,
    path: PathBuf,
    hash: Sha256,
    written: u64,
    started: Instant,
    /// Past [`MAX_RECORDING`]: nothing more is written.
    pub truncated: bool,
    /// Where watchers follow the output live (`sessions watch`).
    tee: Option<tokio::sync::broadcast::Sender<bytes::Bytes>>,
    /// The start of a UTF-8 character whose rest has not arrived yet (at most 3
    /// bytes): output is recorded and passed to watchers in whole characters.
    carry: Vec<u8>,
}

impl Cast {
    /// Creates `dir/SESSION-CHANNEL.cast` with the header for a `width`×`height` terminal.
    pub fn create(
        dir: &Path,
        name: &str,
        width: u32,
        height: u32,
        term: &str,
    ) -> std::io::Result<Self> {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        let path = dir.join(format!("{name}.cast"));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let mut cast = Self {
            file: std::io::BufWriter::new(file),
            path,
            hash: Sha256::new(),
            written: 0,
            started: Instant::now(),
            truncated: false,
            tee: None,
            carry: Vec::new(),
        };
        let header = json!({
            "version": 2, "width": known_or(width, 80), "height": known_or(height, 24),
            "timestamp": now_ms() / 1000, "env": {"TERM": term}, "title": name,
        });
        cast.line(&header.to_string())?;
        Ok(cast)
    }

    /// Appends output (already masked), and passes it to live watchers.
    pub fn output(&mut self, data: &[u8]) -> std::io::Result<()> {
        let mut whole = std::mem::take(&mut self.carry);
        whole.extend_from_slice(data);
        self.carry = whole.split_off(whole_chars(&whole));
        if whole.is_empty() {
            return Ok(());
        }
        if let Some(tee) = &self.tee
            && tee.receiver_count() > 0
        {
            let _ = tee.send(bytes::Bytes::copy_from_slice(&whole));
        }
        self.event("o", &String::from_utf8_lossy(&whole))
    }

    /// Passes the output to `tee` too, for live watchers.
    pub fn watch(&mut self, tee: tokio::sync::broadcast::Sender<bytes::Bytes>) {
        self.tee = Some(tee);
    }

    /// Appends a terminal resize.
    pub fn resize(&mut self, width: u32, height: u32) -> std::io::Result<()> {
        self.event("r", &format!("{width}x{height}"))
    }

    fn event(&mut self, code: &str, data: &str) -> std::io::Result<()> {
        if self.truncated {
            return Ok(());
        }
        let at = self.started.elapsed().as_secs_f64();
        let line = json!([(at * 1e6).round() / 1e6, code, data]).to_string();
        if self.written + line.len() as u64 > MAX_RECORDING {
            self.truncated = true;
            return Ok(());
        }
        self.line(&line)
    }

    fn line(&mut self, line: &str) -> std::io::Result<()> {
        self.file.write_all(line.as_bytes())?;
        self.file.write_all(b"\n")?;
        self.hash.update(line.as_bytes());
        self.hash.update(b"\n");
        self.written += line.len() as u64 + 1;
        Ok(())
    }

    /// Flushes and closes the file: its path, size and lowercase hex SHA-256.
    pub fn finish(mut self) -> std::io::Result<(PathBuf, u64, String)> {
        let carry = std::mem::take(&mut self.carry);
        if !carry.is_empty() {
            self.event("o", &String::from_utf8_lossy(&carry))?;
        }
        self.file.flush()?;
        self.file.get_ref().sync_data()?;
        let digest = self.hash.finalize();
        let hex = digest.iter().fold(String::with_capacity(64), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        });
        Ok((self.path, self.written, hex))
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn cast_is_asciicast_v2_and_its_digest_is_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut cast = Cast::create(dir.path(), "s-1", 80, 24, "xterm").unwrap();
        cast.output(b"hello\r\n").unwrap();
        cast.resize(100, 30).unwrap();
        let (path, size, digest) = cast.finish().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["version"], 2);
        assert_eq!(lines[0]["width"], 80);
        assert_eq!(lines[1][1], "o");
        assert_eq!(lines[1][2], "hello\r\n");
        assert_eq!(lines[2][2], "100x30");
        assert_eq!(size, text.len() as u64);
        let expect = Sha256::digest(text.as_bytes());
        let hex: String = expect.iter().fold(String::new(), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        });
        assert_eq!(digest, hex);
    }

    #[test]
    fn an_unknown_terminal_size_is_recorded_as_80_by_24() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _, _) = Cast::create(dir.path(), "s-2", 0, 0, "xterm")
            .unwrap()
            .finish()
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let header: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(
            (header["width"].as_u64(), header["height"].as_u64()),
            (Some(80), Some(24))
        );
    }

    #[test]
    fn a_character_split_across_chunks_is_recorded_and_watched_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut cast = Cast::create(dir.path(), "s-3", 80, 24, "xterm").unwrap();
        let (tee, mut watcher) = tokio::sync::broadcast::channel(8);
        cast.watch(tee);
        let text = "é€😀 ok".as_bytes();
        for chunk in text.chunks(1) {
            cast.output(chunk).unwrap();
        }
        cast.output(&[0xe2, 0x82]).unwrap();
        let (path, _, _) = cast.finish().unwrap();
        let mut followed = Vec::new();
        while let Ok(chunk) = watcher.try_recv() {
            assert!(std::str::from_utf8(&chunk).is_ok(), "{chunk:?}");
            followed.extend_from_slice(&chunk);
        }
        assert_eq!(followed, text);
        let recorded: String = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()[2]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(recorded, "é€😀 ok\u{fffd}");
        assert_eq!(whole_chars(b"ab\xff"), 3);
    }

    #[test]
    fn sample_keeps_the_first_bytes() {
        let mut s = Sample::default();
        s.push(&[b'a'; 1000]);
        s.push(&[b'b'; 1000]);
        assert_eq!(s.text().len(), SAMPLE_BYTES);
    }
}
