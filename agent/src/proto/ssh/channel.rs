//! One session channel, in a task of its own: its terminal and environment
//! settings, then the request that starts it (exec, shell, subsystem) decided by
//! the gate, held if a rule says so (stdin that arrives meanwhile is kept, up to
//! [`MAX_EARLY_STDIN`]), then relayed to a channel of the target with its output
//! masked, and recorded.

use super::{
    actions::{self, REFUSED_STATUS, Start},
    masking::{FLUSH_AFTER, StreamMasker},
    recording::{self, Cast, Finished, Sample},
    server::Conn,
};
use crate::{
    gate::{ActionOutcome, Gone, Waiting},
    policy::SshKind,
};
use bytes::Bytes;
use russh::{Channel, ChannelMsg, Pty, client, server};
use serde_json::json;
use std::sync::Arc;

/// Stdin kept while the channel's action is decided; past it the client waits.
pub const MAX_EARLY_STDIN: usize = 1024 * 1024;
/// Environment variables passed on per channel, and their largest size.
const MAX_ENV: usize = 64;
const MAX_ENV_BYTES: usize = 4096;

/// A terminal the client asked for.
#[derive(Debug, Clone)]
struct PtyRequest {
    term: String,
    cols: u32,
    rows: u32,
    pix_width: u32,
    pix_height: u32,
    modes: Vec<(Pty, u32)>,
}

/// What a channel collected before its start request.
#[derive(Default)]
struct Setup {
    pty: Option<PtyRequest>,
    env: Vec<(String, String)>,
    stdin: Vec<Bytes>,
    stdin_len: usize,
    eof: bool,
}

impl Setup {
    fn keep(&mut self, data: Bytes) -> bool {
        if self.stdin_len + data.len() > MAX_EARLY_STDIN {
            return false;
        }
        self.stdin_len += data.len();
        self.stdin.push(data);
        true
    }
}

/// Serves one session channel until it closes.
pub async fn run(mut client: Channel<server::Msg>, conn: Arc<Conn>) {
    let mut setup = Setup::default();
    let start = loop {
        match client.wait().await {
            Some(ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                pix_width,
                pix_height,
                terminal_modes,
                ..
            }) => {
                setup.pty = Some(PtyRequest {
                    term,
                    cols: col_width,
                    rows: row_height,
                    pix_width,
                    pix_height,
                    modes: terminal_modes,
                });
            }
            Some(ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            }) if setup.env.len() < MAX_ENV
                && variable_name.len() + variable_value.len() <= MAX_ENV_BYTES =>
            {
                setup.env.push((variable_name, variable_value));
            }
            Some(ChannelMsg::Exec { command, .. }) => {
                break Start::Exec(String::from_utf8_lossy(&command).into_owned());
            }
            Some(ChannelMsg::RequestShell { .. }) => break Start::Shell,
            Some(ChannelMsg::RequestSubsystem { name, .. }) => break Start::Subsystem(name),
            Some(ChannelMsg::Data { data }) => {
                let _ = setup.keep(data);
            }
            Some(ChannelMsg::Eof) => setup.eof = true,
            Some(ChannelMsg::Close) | None => return,
            Some(_) => {}
        }
    };
    serve(client, &conn, setup, start).await;
}

/// The client of a held channel, as the gate waits with it.
struct Held<'a> {
    client: &'a mut Channel<server::Msg>,
    setup: &'a mut Setup,
    kind: SshKind,
    /// Stop reading (early stdin full): the client waits for the decision.
    full: bool,
    /// The client's whole connection ended.
    closed: tokio_util::sync::CancellationToken,
}

impl Waiting for Held<'_> {
    async fn held(&mut self, request: &str, hint: &str) {
        let line = actions::held_line(self.kind, request, hint);
        tell(self.client, self.setup.pty.is_some(), &line).await;
    }

    async fn gone(&mut self) -> Gone {
        let closed = self.closed.clone();
        tokio::select! {
            gone = self.read_until_gone() => gone,
            () = closed.cancelled() => Gone::ClientLeft,
        }
    }
}

impl Held<'_> {
    /// Reads the client while its action waits: stdin is kept, Ctrl-C, a signal or
    /// the channel closing end the wait.
    async fn read_until_gone(&mut self) -> Gone {
        loop {
            if self.full {
                return std::future::pending().await;
            }
            match self.client.wait().await {
                // Ctrl-C on a terminal withdraws the request.
                Some(ChannelMsg::Data { data }) if self.setup.pty.is_some() && data.contains(&3) => {
                    return Gone::Cancelled;
                }
                Some(ChannelMsg::Data { data }) => self.full = !self.setup.keep(data),
                Some(ChannelMsg::Signal { .. }) => return Gone::Cancelled,
                Some(ChannelMsg::Eof) => self.setup.eof = true,
                Some(ChannelMsg::Close) | None => return Gone::ClientLeft,
                Some(_) => {}
            }
        }
    }
}

/// Writes `line` where the client's user sees it: the terminal, or stderr.
async fn tell(client: &Channel<server::Msg>, pty: bool, line: &str) {
    let bytes = Bytes::copy_from_slice(line.as_bytes());
    let _ = if pty {
        client.data_bytes(bytes).await
    } else {
        client.extended_data_bytes(1, bytes).await
    };
}

async fn serve(mut client: Channel<server::Msg>, conn: &Conn, mut setup: Setup, start: Start) {
    let kind = start.kind();
    let subject = start.subject();
    let ask = actions::ask(&conn.session, kind, &conn.login, subject.clone());
    let mut held = Held {
        client: &mut client,
        setup: &mut setup,
        kind,
        full: false,
        closed: conn.closed.clone(),
    };
    let outcome = conn.session.gate.decide(&ask, Some(&conn.session.id), &mut held).await;
    let summary = mask(conn, &format!("{kind}: {subject}"));
    let details = json!({
        "login": conn.login,
        "command": (kind == SshKind::Exec || kind == SshKind::Scp).then(|| mask(conn, &subject)),
        "subsystem": matches!(start, Start::Subsystem(_)).then(|| subject.clone()),
        "pty": setup.pty.as_ref().map(|p| json!({"term": p.term, "cols": p.cols, "rows": p.rows})),
    });
    let mut finished = recording::starting(kind.name(), summary, details);
    let id = client.id();
    if !outcome.allowed() {
        refuse(&client, conn, &start, setup.pty.is_some(), &outcome).await;
        recording::record(&conn.session, &outcome, finished).await;
        return;
    }
    let up = match open_upstream(conn, &setup, &start).await {
        Ok(up) => up,
        Err(why) => {
            tracing::warn!(error = %why, "The target refused the channel");
            let _ = conn.handle.channel_failure(id).await;
            let _ = client.close().await;
            finished.error = Some(why);
            recording::record(&conn.session, &outcome, finished).await;
            return;
        }
    };
    let _ = conn.handle.channel_success(id).await;
    for data in std::mem::take(&mut setup.stdin) {
        let _ = up.data_bytes(data).await;
    }
    if setup.eof {
        let _ = up.eof().await;
    }
    let cast = match (&start, &setup.pty) {
        (Start::Shell, Some(p)) => open_cast(conn, id, p),
        _ => None,
    };
    let relayed = relay(client, up, conn, cast).await;
    relayed.finish(&mut finished);
    recording::record(&conn.session, &outcome, finished).await;
}

/// Tells the client no, in SSH's words: a subsystem fails; an exec or shell starts,
/// prints why, and exits with [`REFUSED_STATUS`].
async fn refuse(client: &Channel<server::Msg>, conn: &Conn, start: &Start, pty: bool, outcome: &ActionOutcome) {
    let id = client.id();
    let line = mask(conn, &actions::refused_line(start.kind(), outcome));
    if let Start::Subsystem(_) = start {
        tell(client, false, &line).await;
        let _ = conn.handle.channel_failure(id).await;
    } else {
        let _ = conn.handle.channel_success(id).await;
        tell(client, pty, &line).await;
        let _ = client.exit_status(REFUSED_STATUS).await;
        let _ = client.eof().await;
    }
    let _ = client.close().await;
}

/// Opens the target's channel with the same terminal and environment, and starts it.
async fn open_upstream(
    conn: &Conn,
    setup: &Setup,
    start: &Start,
) -> Result<Channel<client::Msg>, String> {
    let mut up = conn
        .upstream
        .channel_open_session()
        .await
        .map_err(|e| format!("the target refused a session channel: {e}"))?;
    if let Some(p) = &setup.pty {
        up.request_pty(false, &p.term, p.cols, p.rows, p.pix_width, p.pix_height, &p.modes)
            .await
            .map_err(|e| e.to_string())?;
    }
    for (name, value) in &setup.env {
        up.set_env(false, name.as_str(), value.as_str())
            .await
            .map_err(|e| e.to_string())?;
    }
    let sent = match start {
        Start::Exec(line) => up.exec(true, line.as_bytes()).await,
        Start::Shell => up.request_shell(true).await,
        Start::Subsystem(name) => up.request_subsystem(true, name.as_str()).await,
    };
    sent.map_err(|e| e.to_string())?;
    loop {
        match up.wait().await {
            Some(ChannelMsg::Success) => return Ok(up),
            Some(ChannelMsg::Failure) => {
                return Err(format!("the target refused to start {}", start.subject()));
            }
            Some(ChannelMsg::Close | ChannelMsg::Eof) | None => {
                return Err("the target closed the channel before it started".into());
            }
            Some(_) => {}
        }
    }
}

fn open_cast(conn: &Conn, id: russh::ChannelId, p: &PtyRequest) -> Option<Cast> {
    let name = format!("{}-{id}", conn.session.id.as_str());
    match Cast::create(&conn.recordings, &name, p.cols, p.rows, &p.term) {
        Ok(cast) => Some(cast),
        Err(error) => {
            tracing::error!(%error, "Cannot create the shell recording; the shell is not recorded");
            None
        }
    }
}

fn mask(conn: &Conn, text: &str) -> String {
    match &conn.masker {
        Some(m) => m.mask_str(text).into_owned(),
        None => text.to_owned(),
    }
}

/// What a relayed channel did, for its event.
#[derive(Default)]
struct Relayed {
    up_bytes: u64,
    down_bytes: u64,
    exit_status: Option<u32>,
    exit_signal: Option<String>,
    sample: Sample,
    cast: Option<Result<(std::path::PathBuf, u64, String), String>>,
    cast_truncated: bool,
}

impl Relayed {
    fn finish(self, finished: &mut Finished) {
        if let Some(details) = finished.details.as_object_mut() {
            details.insert("exit_status".into(), json!(self.exit_status));
            details.insert("exit_signal".into(), json!(self.exit_signal));
            details.insert("bytes_in".into(), json!(self.up_bytes));
            details.insert("bytes_out".into(), json!(self.down_bytes));
            if self.cast.is_none() {
                details.insert("output_sample".into(), json!(self.sample.text()));
            }
            if let Some(Ok((path, size, _))) = &self.cast {
                details.insert("recording".into(), json!({"path": path, "bytes": size, "truncated": self.cast_truncated}));
            }
        }
        match self.cast {
            Some(Ok((_, _, digest))) => finished.payload = Some(digest),
            Some(Err(why)) => finished.error = Some(why),
            None => {}
        }
        if let Some(status) = self.exit_status.filter(|s| *s != 0) {
            finished.error.get_or_insert(format!("exit status {status}"));
        }
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
        self.masker.as_mut().map(StreamMasker::flush).unwrap_or_default()
    }

    fn holding(&self) -> bool {
        self.masker.as_ref().is_some_and(StreamMasker::holding)
    }
}

/// Relays until the target closes the channel.
async fn relay(
    mut client: Channel<server::Msg>,
    mut up: Channel<client::Msg>,
    conn: &Conn,
    mut cast: Option<Cast>,
) -> Relayed {
    let mut out = Output::new(conn);
    let mut err = Output::new(conn);
    let mut r = Relayed::default();
    loop {
        let holding = out.holding() || err.holding();
        tokio::select! {
            msg = up.wait() => match msg {
                Some(ChannelMsg::Data { data }) => {
                    let masked = out.push(&data);
                    send(&client, None, masked, &mut r, cast.as_mut()).await;
                }
                Some(ChannelMsg::ExtendedData { data, ext }) => {
                    let masked = err.push(&data);
                    send(&client, Some(ext), masked, &mut r, cast.as_mut()).await;
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => {
                    flush(&client, &mut out, &mut err, &mut r, cast.as_mut()).await;
                    r.exit_status = Some(exit_status);
                    let _ = client.exit_status(exit_status).await;
                }
                Some(ChannelMsg::ExitSignal { signal_name, core_dumped, error_message, lang_tag }) => {
                    flush(&client, &mut out, &mut err, &mut r, cast.as_mut()).await;
                    r.exit_signal = Some(format!("{signal_name:?}"));
                    let _ = conn.handle.exit_signal_request(client.id(), signal_name, core_dumped, error_message, lang_tag).await;
                }
                Some(ChannelMsg::Eof) => {
                    flush(&client, &mut out, &mut err, &mut r, cast.as_mut()).await;
                    let _ = client.eof().await;
                }
                Some(ChannelMsg::Close) | None => break,
                Some(_) => {}
            },
            msg = client.wait() => match msg {
                Some(ChannelMsg::Data { data }) => {
                    r.up_bytes += data.len() as u64;
                    if up.data_bytes(data).await.is_err() {
                        break;
                    }
                }
                Some(ChannelMsg::Eof) => {
                    let _ = up.eof().await;
                }
                Some(ChannelMsg::WindowChange { col_width, row_height, pix_width, pix_height }) => {
                    let _ = up.window_change(col_width, row_height, pix_width, pix_height).await;
                    if let Some(c) = cast.as_mut() {
                        let _ = c.resize(col_width, row_height);
                    }
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
            () = tokio::time::sleep(FLUSH_AFTER), if holding => {
                flush(&client, &mut out, &mut err, &mut r, cast.as_mut()).await;
            }
        }
    }
    flush(&client, &mut out, &mut err, &mut r, cast.as_mut()).await;
    let _ = client.close().await;
    if let Some(c) = cast {
        r.cast_truncated = c.truncated;
        r.cast = Some(c.finish().map_err(|e| format!("the recording could not be written: {e}")));
    }
    r
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
async fn send(client: &Channel<server::Msg>, ext: Option<u32>, data: Vec<u8>, r: &mut Relayed, cast: Option<&mut Cast>) {
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
