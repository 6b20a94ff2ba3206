//! Relaying a started session channel: client input to the target's channel, the
//! target's output masked (values split across reads included) to the client,
//! sampled for an exec's event and written to a shell's recording. Ends when the
//! target has ended the action (its EOF and exit status, or its close), the client
//! closes the channel, or the client's connection ends. The target's end (exit
//! status or signal, EOF) is kept in [`Ends`] and passed on only once the action's
//! record is durable, so a crash never loses the record of a result a client saw.

use super::{
    masking::{FLUSH_AFTER, FLUSH_AFTER_EXEC, StreamMasker},
    recording::{Cast, Finished, Sample},
    server::Conn,
    typed_ask::Notes,
    typed_line::TypedLines,
};
use bytes::Bytes;
use russh::{Channel, ChannelMsg, Sig, client, server};
use serde_json::json;

/// How the target ended a channel, passed on to the client after the action's
/// record is durable ([`Ends::send`]).
#[derive(Default)]
pub struct Ends {
    exit_status: Option<u32>,
    exit_signal: Option<ExitSignal>,
    eof: bool,
}

/// An `exit-signal` as the target sent it.
struct ExitSignal {
    name: Sig,
    core_dumped: bool,
    message: String,
    lang: String,
}

impl Ends {
    /// Whether the target has said all it will: its EOF and how the command ended.
    fn complete(&self) -> bool {
        self.eof && (self.exit_status.is_some() || self.exit_signal.is_some())
    }

    /// Passes the target's end on to the client, in OpenSSH's order (exit status or
    /// signal, then EOF); the caller closes the channel after.
    pub async fn send(self, client: &Channel<server::Msg>, conn: &Conn) {
        if let Some(status) = self.exit_status {
            let _ = client.exit_status(status).await;
        }
        if let Some(s) = self.exit_signal {
            let _ = (conn.handle)
                .exit_signal_request(client.id(), s.name, s.core_dumped, s.message, s.lang)
                .await;
        }
        if self.eof {
            let _ = client.eof().await;
        }
    }
}

/// What a relayed channel did, for its event.
#[derive(Default)]
pub struct Relayed {
    up_bytes: u64,
    down_bytes: u64,
    exit_status: Option<u32>,
    exit_signal: Option<String>,
    sample: Sample,
    cast: Option<Result<(std::path::PathBuf, u64, String), String>>,
    cast_truncated: bool,
    /// Why the relay stopped early (a malformed stream).
    error: Option<String>,
    /// The target's end, withheld until the record is durable.
    ends: Ends,
}

impl Relayed {
    /// What a relay that counts bytes itself (sftp) did, and how the target ended
    /// it (`eof`: the target sent its EOF).
    #[must_use]
    pub fn counted(up_bytes: u64, down_bytes: u64, exit_status: Option<u32>, eof: bool) -> Self {
        Self {
            up_bytes,
            down_bytes,
            exit_status,
            ends: Ends {
                exit_status,
                exit_signal: None,
                eof,
            },
            ..Self::default()
        }
    }

    /// Marks the relay as stopped by `why`.
    pub fn failed(&mut self, why: String) {
        self.error = Some(why);
    }

    /// Adds what happened to the action's event; the target's end, to pass on once
    /// that event is durable.
    pub fn finish(self, finished: &mut Finished) -> Ends {
        if let Some(details) = finished.details.as_object_mut() {
            details.insert("exit_status".into(), json!(self.exit_status));
            details.insert("exit_signal".into(), json!(self.exit_signal));
            details.insert("bytes_in".into(), json!(self.up_bytes));
            details.insert("bytes_out".into(), json!(self.down_bytes));
            if self.cast.is_none() {
                details.insert("output_sample".into(), json!(self.sample.text()));
            }
            if let Some(Ok((path, size, _))) = &self.cast {
                details.insert(
                    "recording".into(),
                    json!({"path": path, "bytes": size, "truncated": self.cast_truncated}),
                );
            }
        }
        if let Some(why) = self.error {
            finished.error = Some(why);
        }
        match self.cast {
            Some(Ok((_, _, digest))) => finished.payload = Some(digest),
            Some(Err(why)) => finished.error = Some(why),
            None => {}
        }
        if let Some(status) = self.exit_status.filter(|s| *s != 0) {
            finished
                .error
                .get_or_insert(format!("exit status {status}"));
        }
        self.ends
    }
}

/// Output of one stream on its way to the client: masked, sampled, recorded.
struct Output {
    masker: Option<StreamMasker>,
}

impl Output {
    fn new(conn: &Conn) -> Self {
        Self {
            masker: conn.masker.clone().map(StreamMasker::new),
        }
    }

    fn push(&mut self, data: &[u8]) -> Vec<u8> {
        match &mut self.masker {
            Some(m) => m.push(data),
            None => data.to_vec(),
        }
    }

    fn flush(&mut self) -> Vec<u8> {
        self.masker
            .as_mut()
            .map(StreamMasker::flush)
            .unwrap_or_default()
    }

    fn holding(&self) -> bool {
        self.masker.as_ref().is_some_and(StreamMasker::holding)
    }
}

/// Relays until the target has ended the channel (or the client has closed it).
pub async fn relay(
    client: &mut Channel<server::Msg>,
    mut up: Channel<client::Msg>,
    conn: &Conn,
    mut cast: Option<Cast>,
    pty: bool,
    mut lines: Option<TypedLines<'_>>,
) -> Relayed {
    let flush_after = if pty { FLUSH_AFTER } else { FLUSH_AFTER_EXEC };
    let mut out = Output::new(conn);
    let mut err = Output::new(conn);
    let mut r = Relayed::default();
    if let Some(l) = lines.as_mut() {
        l.input(&[], &up).await;
    }
    let notes = lines.as_ref().map(TypedLines::notes);
    // Past the target's EOF and exit nothing more comes: the action is over, even
    // if the target waits for the client's EOF before it closes.
    while !r.ends.complete() {
        tell(client, notes.as_deref(), &mut r, cast.as_mut()).await;
        let holding = out.holding() || err.holding();
        let full = lines.as_ref().is_some_and(TypedLines::full);
        let settle = lines.as_ref().and_then(TypedLines::settle_at);
        let held = lines.as_ref().is_some_and(TypedLines::held);
        tokio::select! {
            msg = up.wait() => match msg {
                Some(ChannelMsg::Data { data }) => {
                    if let Some(l) = lines.as_mut() {
                        l.output(&data);
                    }
                    let masked = out.push(&data);
                    send(client, None, masked, &mut r, cast.as_mut()).await;
                }
                Some(ChannelMsg::ExtendedData { data, ext }) => {
                    let masked = err.push(&data);
                    send(client, Some(ext), masked, &mut r, cast.as_mut()).await;
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => {
                    flush(client, &mut out, &mut err, &mut r, cast.as_mut()).await;
                    r.exit_status = Some(exit_status);
                    r.ends.exit_status = Some(exit_status);
                }
                Some(ChannelMsg::ExitSignal { signal_name, core_dumped, error_message, lang_tag }) => {
                    flush(client, &mut out, &mut err, &mut r, cast.as_mut()).await;
                    r.exit_signal = Some(format!("{signal_name:?}"));
                    r.ends.exit_signal = Some(ExitSignal { name: signal_name, core_dumped, message: error_message, lang: lang_tag });
                }
                Some(ChannelMsg::Eof) => {
                    flush(client, &mut out, &mut err, &mut r, cast.as_mut()).await;
                    r.ends.eof = true;
                }
                Some(ChannelMsg::Close) | None => break,
                Some(_) => {}
            },
            msg = client.wait(), if !full => match msg {
                Some(ChannelMsg::Data { data }) => {
                    r.up_bytes += data.len() as u64;
                    if !input(&up, &mut lines, data).await {
                        break;
                    }
                }
                Some(ChannelMsg::Eof) => eof(&up, &mut lines).await,
                Some(ChannelMsg::WindowChange { col_width, row_height, pix_width, pix_height }) => {
                    let _ = up.window_change(col_width, row_height, pix_width, pix_height).await;
                    resize(col_width, row_height, &mut lines, cast.as_mut());
                }
                Some(ChannelMsg::Signal { signal }) => {
                    let _ = up.signal(signal).await;
                }
                // A client that closed takes no more output: done.
                Some(ChannelMsg::Close) | None => {
                    let _ = up.close().await;
                    break;
                }
                Some(_) => {}
            },
            () = conn.closed.cancelled() => {
                let _ = up.close().await;
                break;
            }
            () = tokio::time::sleep(flush_after), if holding => {
                flush(client, &mut out, &mut err, &mut r, cast.as_mut()).await;
            }
            () = sleep_until(settle), if settle.is_some() => {
                if let Some(l) = lines.as_mut() {
                    l.settled(&up).await;
                }
            }
            () = notes_ready(notes.as_deref()), if notes.is_some() => {}
            outcome = decision(&mut lines), if held => {
                if let Some(l) = lines.as_mut() {
                    l.resolved(outcome, &up).await;
                }
            }
        }
    }
    if r.ends.complete() {
        // The target may wait for the client's EOF before it closes: it need not.
        let _ = up.close().await;
    }
    if let Some(l) = lines {
        l.finish().await;
    }
    tell(client, notes.as_deref(), &mut r, cast.as_mut()).await;
    flush(client, &mut out, &mut err, &mut r, cast.as_mut()).await;
    if let Some(c) = cast {
        finish_cast(c, &mut r);
    }
    r
}

/// Closes the shell's recording into `r`.
fn finish_cast(cast: Cast, r: &mut Relayed) {
    r.cast_truncated = cast.truncated;
    r.cast = Some(
        cast.finish()
            .map_err(|e| format!("the recording could not be written: {e}")),
    );
}

/// Sends what the typed-line gate told the terminal, recorded as the user saw it.
async fn tell(
    client: &Channel<server::Msg>,
    notes: Option<&Notes>,
    r: &mut Relayed,
    cast: Option<&mut Cast>,
) {
    if let Some(n) = notes {
        send(client, None, n.take(), r, cast).await;
    }
}

/// Completes when the typed-line gate has a message for the terminal.
async fn notes_ready(notes: Option<&Notes>) {
    match notes {
        Some(n) => n.ready().await,
        None => std::future::pending().await,
    }
}

async fn flush(
    client: &Channel<server::Msg>,
    out: &mut Output,
    err: &mut Output,
    r: &mut Relayed,
    mut cast: Option<&mut Cast>,
) {
    let o = out.flush();
    send(client, None, o, r, cast.as_deref_mut()).await;
    let e = err.flush();
    send(client, Some(1), e, r, cast).await;
}

/// Sends (masked) output to the client, counting, sampling and recording it.
async fn send(
    client: &Channel<server::Msg>,
    ext: Option<u32>,
    data: Vec<u8>,
    r: &mut Relayed,
    cast: Option<&mut Cast>,
) {
    if data.is_empty() {
        return;
    }
    r.down_bytes += data.len() as u64;
    r.sample.push(&data);
    if let Some(c) = cast
        && let Err(error) = c.output(&data)
    {
        tracing::error!(%error, "Cannot write the shell recording");
    }
    let bytes = Bytes::from(data);
    let _ = match ext {
        None => client.data_bytes(bytes).await,
        Some(ext) => client.extended_data_bytes(ext, bytes).await,
    };
}

/// Sleeps until `at` (forever without one).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The decision on a held typed line (never, without one).
async fn decision(lines: &mut Option<TypedLines<'_>>) -> crate::gate::ActionOutcome {
    match lines {
        Some(l) => l.decision().await,
        None => std::future::pending().await,
    }
}

/// Client input on its way to the target (through a shell's typed-line gate);
/// `false` when the target's channel is gone.
async fn input(up: &Channel<client::Msg>, lines: &mut Option<TypedLines<'_>>, data: Bytes) -> bool {
    match lines {
        Some(l) => {
            l.input(&data, up).await;
            true
        }
        None => up.data_bytes(data).await.is_ok(),
    }
}

/// The client's EOF, passed on after the input a shell's gate still holds.
async fn eof(up: &Channel<client::Msg>, lines: &mut Option<TypedLines<'_>>) {
    match lines {
        Some(l) => l.eof(up).await,
        None => {
            let _ = up.eof().await;
        }
    }
}

/// A terminal resize, for the tracked screen and the recording.
fn resize(cols: u32, rows: u32, lines: &mut Option<TypedLines<'_>>, cast: Option<&mut Cast>) {
    if let Some(l) = lines.as_mut() {
        l.resize(cols, rows);
    }
    if let Some(c) = cast {
        let _ = c.resize(cols, rows);
    }
}
