//! One session channel, in a task of its own: its terminal and environment
//! settings, then the request that starts it (exec, shell, subsystem) decided by
//! the gate, held if a rule says so (stdin that arrives meanwhile is kept, up to
//! [`MAX_EARLY_STDIN`]), then relayed to a channel of the target with its output
//! masked, and recorded.

use super::{
    actions::{self, REFUSED_STATUS, Start},
    recording::{self, Cast},
    relay,
    server::Conn,
    sftp_relay,
    typed_line::TypedLines,
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
    /// Agent and X11 forwarding asked for on this channel.
    forwarding: super::agent::Requested,
}

/// The variable a client states its reason in (`ssh -o SetEnv=PORTCULLIS_REASON=…`),
/// for the approvers; never sent to the target.
const REASON_VARIABLE: &str = "PORTCULLIS_REASON";

impl Setup {
    /// The requester's reason, from [`REASON_VARIABLE`] (bounded, one line).
    fn reason(&self) -> Option<String> {
        let (_, value) = self.env.iter().find(|(name, _)| name == REASON_VARIABLE)?;
        let reason = crate::gate::bounded_justification(value);
        (!reason.is_empty()).then_some(reason)
    }

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
        let msg = tokio::select! {
            msg = client.wait() => msg,
            () = conn.closed.cancelled() => return,
        };
        match msg {
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
            Some(msg) => setup.forwarding.note(&msg),
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
                Some(ChannelMsg::Data { data })
                    if self.setup.pty.is_some() && data.contains(&3) =>
                {
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
    let mut ask = actions::start_ask(&conn.session, &start, &conn.login).await;
    ask.justification = setup.reason();
    let mut held = Held {
        client: &mut client,
        setup: &mut setup,
        kind,
        full: false,
        closed: conn.closed.clone(),
    };
    let outcome = conn
        .session
        .gate
        .decide(&ask, Some(&conn.session.id), &mut held)
        .await;
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
        // The refusal is the action's result: it leaves once its record is durable.
        if recording::record_synced(&conn.session, &outcome, finished).await {
            refuse(&client, conn, &start, setup.pty.is_some(), &outcome).await;
        } else {
            conn.not_recorded().await;
        }
        return;
    }
    let up = match open_upstream(conn, &setup, &start).await {
        Ok(up) => up,
        Err(why) => {
            tracing::warn!(error = %why, "The target refused the channel");
            finished.error = Some(why);
            if !recording::record_synced(&conn.session, &outcome, finished).await {
                conn.not_recorded().await;
                return;
            }
            let _ = conn.handle.channel_failure(id).await;
            let _ = client.close().await;
            return;
        }
    };
    let _ = conn.handle.channel_success(id).await;
    // A shell's typed lines are decided at Enter, those typed while it was held too.
    let mut lines = match (&start, &setup.pty) {
        (Start::Shell, Some(p)) => Some(TypedLines::new(conn, p.cols, p.rows)),
        _ => None,
    };
    for data in std::mem::take(&mut setup.stdin) {
        match lines.as_mut() {
            Some(l) => l.preload(&data),
            None => {
                let _ = up.data_bytes(data).await;
            }
        }
    }
    if setup.eof {
        match lines.as_mut() {
            Some(l) => l.preload_eof(),
            None => {
                let _ = up.eof().await;
            }
        }
    }
    let cast = match (&start, &setup.pty) {
        (Start::Shell, Some(p)) => open_cast(conn, id, p),
        _ => None,
    };
    let relayed = match &start {
        Start::Subsystem(name) if name == "sftp" => sftp_relay::relay(&mut client, up, conn).await,
        _ => relay::relay(&mut client, up, conn, cast, setup.pty.is_some(), lines).await,
    };
    let ends = relayed.finish(&mut finished);
    // The exit status, EOF and close leave once the action's record is durable.
    if recording::record_synced(&conn.session, &outcome, finished).await {
        ends.send(&client, conn).await;
        let _ = client.close().await;
    } else {
        conn.not_recorded().await;
    }
}

/// Tells the client no, in SSH's words: a subsystem fails; an exec or shell starts,
/// prints why, and exits with [`REFUSED_STATUS`].
async fn refuse(
    client: &Channel<server::Msg>,
    conn: &Conn,
    start: &Start,
    pty: bool,
    outcome: &ActionOutcome,
) {
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
        up.request_pty(
            false,
            &p.term,
            p.cols,
            p.rows,
            p.pix_width,
            p.pix_height,
            &p.modes,
        )
        .await
        .map_err(|e| e.to_string())?;
    }
    for (name, value) in setup.env.iter().filter(|(name, _)| name != REASON_VARIABLE) {
        up.set_env(false, name.as_str(), value.as_str())
            .await
            .map_err(|e| e.to_string())?;
    }
    super::agent::request_upstream(&up, conn, &setup.forwarding).await?;
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
        Ok(mut cast) => {
            cast.watch(conn.feeds.sender(conn.session.id.as_str()));
            Some(cast)
        }
        Err(error) => {
            tracing::error!(%error, "Cannot create the shell recording; the shell is not recorded");
            None
        }
    }
}

fn mask(conn: &Conn, text: &str) -> String {
    conn.mask(text)
}
