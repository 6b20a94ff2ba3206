//! Relaying a started session channel: client input to the target's channel, the
//! target's output masked (values split across reads included) to the client,
//! sampled for an exec's event and written to a shell's recording. Ends when the
//! target has ended the action (its EOF and exit status, or its close), the client
//! closes the channel, or the client's connection ends. The target's end (exit
//! status or signal, EOF) is kept in `Ends` (relayed.rs) and passed on only once
//! the action's record is durable, so a crash never loses the record of a result a
//! client saw.

use super::{
    masking::{FLUSH_AFTER, FLUSH_AFTER_EXEC, StreamMasker},
    recording::Cast,
    relayed::{ExitSignal, Relayed},
    server::Conn,
    typed_ask::Notes,
    typed_line::TypedLines,
};
use bytes::Bytes;
use russh::{Channel, ChannelMsg, client, server};

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
    cast: Option<Cast>,
    pty: bool,
    mut lines: Option<TypedLines<'_>>,
) -> Relayed {
    let flush_after = if pty { FLUSH_AFTER } else { FLUSH_AFTER_EXEC };
    let mut down = Down {
        client,
        out: Output::new(conn),
        err: Output::new(conn),
        r: Relayed::default(),
        cast,
    };
    if let Some(l) = lines.as_mut() {
        l.input(&[], &up).await;
    }
    let notes = lines.as_ref().map(TypedLines::notes);
    // Past the target's EOF and exit nothing more comes: the action is over, even
    // if the target waits for the client's EOF before it closes.
    while !down.r.ends.complete() {
        down.tell(notes.as_deref()).await;
        let holding = down.out.holding() || down.err.holding();
        let full = lines.as_ref().is_some_and(TypedLines::full);
        let settle = lines.as_ref().and_then(TypedLines::settle_at);
        let held = lines.as_ref().is_some_and(TypedLines::held);
        tokio::select! {
            msg = up.wait() => {
                if !down.target_said(msg, &mut lines).await {
                    break;
                }
            }
            msg = down.client.wait(), if !full => {
                if !client_said(msg, &up, &mut lines, &mut down).await {
                    break;
                }
            }
            () = conn.closed.cancelled() => {
                let _ = up.close().await;
                break;
            }
            () = tokio::time::sleep(flush_after), if holding => down.flush().await,
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
    if down.r.ends.complete() {
        // The target may wait for the client's EOF before it closes: it need not.
        let _ = up.close().await;
    }
    if let Some(l) = lines {
        l.finish().await;
    }
    down.tell(notes.as_deref()).await;
    down.flush().await;
    down.finish()
}

/// A message from the client, passed to the target (input through a shell's
/// typed-line gate); `false` when the relay ends.
async fn client_said(
    msg: Option<ChannelMsg>,
    up: &Channel<client::Msg>,
    lines: &mut Option<TypedLines<'_>>,
    down: &mut Down<'_>,
) -> bool {
    match msg {
        Some(ChannelMsg::Data { data }) => {
            down.r.up_bytes += data.len() as u64;
            return input(up, lines, data).await;
        }
        Some(ChannelMsg::Eof) => eof(up, lines).await,
        Some(ChannelMsg::WindowChange {
            col_width,
            row_height,
            pix_width,
            pix_height,
        }) => {
            let _ = up
                .window_change(col_width, row_height, pix_width, pix_height)
                .await;
            resize(col_width, row_height, lines, down.cast.as_mut());
        }
        Some(ChannelMsg::Signal { signal }) => {
            let _ = up.signal(signal).await;
        }
        // A client that closed takes no more output: done.
        Some(ChannelMsg::Close) | None => {
            let _ = up.close().await;
            return false;
        }
        Some(_) => {}
    }
    true
}

/// The client's side of the relay: the target's output on its way, masked,
/// counted, sampled and recorded, and what the relay saw of the target's end.
struct Down<'c> {
    client: &'c mut Channel<server::Msg>,
    out: Output,
    err: Output,
    r: Relayed,
    cast: Option<Cast>,
}

impl Down<'_> {
    /// A message from the target; `false` when it closed the channel.
    async fn target_said(
        &mut self,
        msg: Option<ChannelMsg>,
        lines: &mut Option<TypedLines<'_>>,
    ) -> bool {
        match msg {
            Some(ChannelMsg::Data { data }) => {
                if let Some(l) = lines.as_mut() {
                    l.output(&data);
                }
                let masked = self.out.push(&data);
                self.send(None, masked).await;
            }
            Some(ChannelMsg::ExtendedData { data, ext }) => {
                let masked = self.err.push(&data);
                self.send(Some(ext), masked).await;
            }
            Some(ChannelMsg::ExitStatus { exit_status }) => {
                self.flush().await;
                self.r.exit_status = Some(exit_status);
                self.r.ends.exit_status = Some(exit_status);
            }
            Some(ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                error_message,
                lang_tag,
            }) => {
                self.flush().await;
                self.r.exit_signal = Some(format!("{signal_name:?}"));
                self.r.ends.exit_signal = Some(ExitSignal {
                    name: signal_name,
                    core_dumped,
                    message: error_message,
                    lang: lang_tag,
                });
            }
            Some(ChannelMsg::Eof) => {
                self.flush().await;
                self.r.ends.eof = true;
            }
            Some(ChannelMsg::Close) | None => return false,
            Some(_) => {}
        }
        true
    }

    /// Sends what the typed-line gate told the terminal, recorded as the user saw it.
    async fn tell(&mut self, notes: Option<&Notes>) {
        if let Some(n) = notes {
            self.send(None, n.take()).await;
        }
    }

    /// Sends what the maskers still hold.
    async fn flush(&mut self) {
        let o = self.out.flush();
        self.send(None, o).await;
        let e = self.err.flush();
        self.send(Some(1), e).await;
    }

    /// Sends (masked) output to the client, counting, sampling and recording it.
    async fn send(&mut self, ext: Option<u32>, data: Vec<u8>) {
        if data.is_empty() {
            return;
        }
        self.r.down_bytes += data.len() as u64;
        self.r.sample.push(&data);
        if let Some(c) = self.cast.as_mut()
            && let Err(error) = c.output(&data)
        {
            tracing::error!(%error, "Cannot write the shell recording");
        }
        let bytes = Bytes::from(data);
        let _ = match ext {
            None => self.client.data_bytes(bytes).await,
            Some(ext) => self.client.extended_data_bytes(ext, bytes).await,
        };
    }

    /// What the relay did, with the shell's recording closed.
    fn finish(self) -> Relayed {
        let mut r = self.r;
        if let Some(cast) = self.cast {
            r.cast_truncated = cast.truncated;
            r.cast = Some(
                cast.finish()
                    .map_err(|e| format!("the recording could not be written: {e}")),
            );
        }
        r
    }
}

/// Completes when the typed-line gate has a message for the terminal.
async fn notes_ready(notes: Option<&Notes>) {
    match notes {
        Some(n) => n.ready().await,
        None => std::future::pending().await,
    }
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
