//! Relaying an `sftp` subsystem packet by packet, so that each file operation is an
//! action of its own: an open (read, write), remove, rename, mkdir, rmdir, setstat
//! or link goes through the gate before it reaches the server (a held one waits; the
//! client is told on stderr); a refused one gets a "permission denied" status reply
//! from the proxy with who decided and why. Each operation is one `sftp_file` event
//! with its paths, the server's answer and, for an opened file, the bytes read and
//! written until it is closed. A status reply whose operation was recorded (and a
//! refusal) reaches the client only once that record is durable, so a crash never
//! loses the record of a file operation a client saw succeed.
//!
//! Bounded: packets are at most [`sftp::MAX_PACKET`]; replies are awaited for at
//! most [`MAX_PENDING`] requests and bytes counted for at most [`MAX_OPEN`] files
//! (past that an operation is recorded without its answer, and a request on an
//! untracked handle that the gate would decide is refused).

use super::{
    actions,
    recording::{self, Finished},
    relayed::Relayed,
    server::Conn,
    sftp::{self, Framer, Reply, Request},
};
use crate::{
    gate::{ActionOutcome, Gone, Waiting},
    policy::{FileOp, SshKind},
};
use bytes::Bytes;
use russh::{Channel, ChannelMsg, client, server};
use serde_json::json;
use std::collections::HashMap;

/// Requests whose replies are awaited at once (OpenSSH pipelines 64).
const MAX_PENDING: usize = 4096;
/// Open files whose bytes are counted at once.
const MAX_OPEN: usize = 1024;

/// A decided operation, waiting to be recorded.
struct Done {
    outcome: ActionOutcome,
    finished: Finished,
}

/// An opened file: its open's event, and what moved through it.
struct OpenFile {
    done: Done,
    paths: Vec<String>,
    read: u64,
    written: u64,
}

/// What a request awaits from the server.
enum Pending {
    /// An operation's status.
    Op(Done),
    /// An open's handle (or failure).
    Open(Done, Vec<String>),
    /// Data of a read of this handle.
    Read(Bytes),
    /// The status of closing this handle.
    Close(Bytes),
}

/// The file operations of one sftp channel.
struct Files<'a> {
    conn: &'a Conn,
    pending: HashMap<u32, Pending>,
    open: HashMap<Bytes, OpenFile>,
    /// Records were queued since the recorder last confirmed them durable.
    unsynced: bool,
    /// A record could not be queued (the recorder stalled): nothing more may pass.
    lost: bool,
}

/// Relays an sftp subsystem until either side closes it.
pub async fn relay(
    client: &mut Channel<server::Msg>,
    mut up: Channel<client::Msg>,
    conn: &Conn,
) -> Relayed {
    let mut files = Files {
        conn,
        pending: HashMap::new(),
        open: HashMap::new(),
        unsynced: false,
        lost: false,
    };
    let (mut from_client, mut from_server) = (Framer::default(), Framer::default());
    let (mut up_bytes, mut down_bytes, mut exit_status, mut eof) = (0u64, 0u64, None, false);
    let failure = loop {
        tokio::select! {
            msg = up.wait() => match msg {
                Some(ChannelMsg::Data { data }) => {
                    down_bytes += data.len() as u64;
                    from_server.push(&data);
                    if let Err(why) = files.replies(&mut from_server, client).await {
                        break Some(why);
                    }
                }
                Some(ChannelMsg::ExtendedData { data, ext }) => {
                    let _ = client.extended_data_bytes(ext, data).await;
                }
                // Passed on after the channel's record (`Relayed::finish`).
                Some(ChannelMsg::ExitStatus { exit_status: status }) => exit_status = Some(status),
                Some(ChannelMsg::Eof) => eof = true,
                Some(ChannelMsg::Close) | None => break None,
                Some(_) => {}
            },
            msg = client.wait() => match msg {
                Some(ChannelMsg::Data { data }) => {
                    up_bytes += data.len() as u64;
                    from_client.push(&data);
                    if let Err(why) = files.requests(&mut from_client, client, &up).await {
                        break Some(why);
                    }
                }
                Some(ChannelMsg::Eof) => {
                    let _ = up.eof().await;
                }
                Some(ChannelMsg::Close) | None => break None,
                Some(_) => {}
            },
            () = conn.closed.cancelled() => break None,
        }
    };
    if let Some(why) = &failure {
        tracing::warn!(error = %why, "Ending an sftp channel");
    }
    let _ = up.close().await;
    files.finish().await;
    let mut relayed = Relayed::counted(up_bytes, down_bytes, exit_status, eof);
    if let Some(why) = failure {
        relayed.failed(why);
    }
    relayed
}

impl Files<'_> {
    /// Decides and passes on each whole request the client sent.
    async fn requests(
        &mut self,
        framer: &mut Framer,
        client: &Channel<server::Msg>,
        up: &Channel<client::Msg>,
    ) -> Result<(), String> {
        while let Some(packet) = framer
            .next_packet()
            .map_err(|e| format!("the client sent {e}"))?
        {
            let request = sftp::request(&packet).map_err(|e| format!("the client sent {e}"))?;
            if self.pass(request, client).await {
                up.data_bytes(packet)
                    .await
                    .map_err(|_| "the target closed the sftp channel".to_owned())?;
            }
        }
        Ok(())
    }

    /// Whether `request` may reach the server; a refused one is answered here.
    async fn pass(&mut self, request: Request, client: &Channel<server::Msg>) -> bool {
        match request {
            Request::Open { id, path, ops } => {
                let paths = vec![path];
                let Some(done) = self.decide(id, "open", ops, paths.clone(), client).await else {
                    return false;
                };
                self.await_reply(id, Pending::Open(done, paths)).await;
            }
            Request::Op {
                id,
                ops,
                paths,
                name,
            } => {
                let Some(done) = self.decide(id, name, ops, paths, client).await else {
                    return false;
                };
                self.await_reply(id, Pending::Op(done)).await;
            }
            Request::Fsetstat { id, handle } => {
                let paths = self.open.get(&handle).map(|f| f.paths.clone());
                let Some(paths) = paths else {
                    let why = "portcullis: this file's path is not known, so it cannot be decided";
                    let _ = client
                        .data_bytes(sftp::status(id, sftp::FX_PERMISSION_DENIED, why))
                        .await;
                    return false;
                };
                let ops = vec![FileOp::Setstat];
                let Some(done) = self.decide(id, "setstat", ops, paths, client).await else {
                    return false;
                };
                self.await_reply(id, Pending::Op(done)).await;
            }
            Request::Read { id, handle } => {
                if self.open.contains_key(&handle) && self.pending.len() < MAX_PENDING {
                    self.pending.insert(id, Pending::Read(handle));
                }
            }
            Request::Write { handle, len, .. } => {
                if let Some(file) = self.open.get_mut(&handle) {
                    file.written += len;
                }
            }
            Request::Close { id, handle } => {
                if self.open.contains_key(&handle) && self.pending.len() < MAX_PENDING {
                    self.pending.insert(id, Pending::Close(handle));
                }
            }
            Request::Unknown { id, name } => {
                tracing::warn!(extension = %name, "Refused an unknown sftp extension");
                let why = "portcullis: this sftp extension is not known, so it is refused";
                let _ = client
                    .data_bytes(sftp::status(id, sftp::FX_OP_UNSUPPORTED, why))
                    .await;
                return false;
            }
            Request::Other => {}
        }
        true
    }

    /// Asks the gate about one operation: its event-to-be if allowed; else the
    /// client is answered and the event recorded.
    async fn decide(
        &mut self,
        id: u32,
        name: &'static str,
        ops: Vec<FileOp>,
        paths: Vec<String>,
        client: &Channel<server::Msg>,
    ) -> Option<Done> {
        let conn = self.conn;
        let shown: Vec<String> = paths.iter().map(|p| conn.mask(p)).collect();
        let summary = format!("sftp {name} {}", shown.join(" "));
        let details = json!({
            "login": conn.login, "op": name, "ops": ops, "paths": shown,
            "subject": format!("{name} {}", shown.join(" ")),
        });
        let ask = actions::file_ask(&conn.session, &conn.login, name, ops, paths);
        let mut waiting = FileWait {
            client,
            closed: conn.closed.clone(),
        };
        let outcome = (conn.session.gate)
            .decide(&ask, Some(&conn.session.id), &mut waiting)
            .await;
        let done = Done {
            outcome,
            finished: recording::starting("sftp_file", summary, details),
        };
        if done.outcome.allowed() {
            return Some(done);
        }
        let line = actions::refused_line(SshKind::Sftp, &done.outcome);
        let message = conn.mask(line.trim_end());
        self.record(done, None, None).await;
        // The refusal is the operation's result: it leaves once its record is durable.
        if !self.durable().await {
            return None;
        }
        let status = sftp::status(id, sftp::FX_PERMISSION_DENIED, &message);
        let _ = client.data_bytes(status).await;
        // Clients show only "Permission denied" for a status: say why on stderr too.
        let _ = client
            .extended_data_bytes(1, Bytes::from(format!("{message}\n").into_bytes()))
            .await;
        None
    }

    /// Waits until the records queued so far are durable; `false` (and the session
    /// is ended) when they cannot be: the replies waiting for them are withheld.
    async fn durable(&mut self) -> bool {
        let synced = !self.lost
            && (!self.unsynced
                || (self.conn.session.recorder)
                    .sync(&self.conn.session.id)
                    .await);
        self.unsynced = false;
        if !synced {
            self.lost = true;
            self.conn.not_recorded().await;
        }
        synced
    }

    /// Records one file operation, with the target's failure and the bytes read and
    /// written through an opened file; [`Files::durable`] waits for it.
    async fn record(&mut self, mut done: Done, failed: Option<String>, bytes: Option<(u64, u64)>) {
        if let (Some((read, written)), Some(details)) =
            (bytes, done.finished.details.as_object_mut())
        {
            details.insert("bytes_read".into(), json!(read));
            details.insert("bytes_written".into(), json!(written));
        }
        done.finished.error = failed;
        self.unsynced = true;
        if !recording::record(&self.conn.session, &done.outcome, done.finished).await {
            self.lost = true;
        }
    }

    /// Keeps `pending` until the server answers request `id` (recorded now, without
    /// the answer, when too many wait).
    async fn await_reply(&mut self, id: u32, pending: Pending) {
        if self.pending.len() < MAX_PENDING {
            self.pending.insert(id, pending);
        } else if let Pending::Op(done) | Pending::Open(done, _) = pending {
            self.record(done, None, None).await;
        }
    }

    /// Reads the server's whole replies (those of one read of the channel), noting
    /// those awaited, and passes them on once the operations they end are durably
    /// recorded (one wait for them all).
    async fn replies(
        &mut self,
        framer: &mut Framer,
        client: &Channel<server::Msg>,
    ) -> Result<(), String> {
        let mut ready = Vec::new();
        while let Some(packet) = framer
            .next_packet()
            .map_err(|e| format!("the target sent {e}"))?
        {
            match sftp::reply(&packet) {
                Ok(reply) => self.replied(reply).await,
                Err(error) => tracing::warn!(%error, "An sftp reply could not be read"),
            }
            ready.push(packet);
        }
        if !self.durable().await {
            return Err(recording::NOT_RECORDED.to_owned());
        }
        for packet in ready {
            client
                .data_bytes(packet)
                .await
                .map_err(|_| "the client closed the sftp channel".to_owned())?;
        }
        Ok(())
    }

    async fn replied(&mut self, reply: Reply) {
        match reply {
            Reply::Status { id, code, message } => {
                let failed = (code != sftp::FX_OK).then(|| {
                    format!(
                        "the target answered status {code}: {}",
                        self.conn.mask(&message)
                    )
                });
                match self.pending.remove(&id) {
                    Some(Pending::Op(done) | Pending::Open(done, _)) => {
                        self.record(done, failed, None).await;
                    }
                    Some(Pending::Close(handle)) => {
                        if let Some(file) = self.open.remove(&handle) {
                            let bytes = (file.read, file.written);
                            self.record(file.done, failed, Some(bytes)).await;
                        }
                    }
                    Some(Pending::Read(_)) | None => {}
                }
            }
            Reply::Handle { id, handle } => {
                if let Some(Pending::Open(done, paths)) = self.pending.remove(&id) {
                    if self.open.len() < MAX_OPEN {
                        let file = OpenFile {
                            done,
                            paths,
                            read: 0,
                            written: 0,
                        };
                        self.open.insert(handle, file);
                    } else {
                        self.record(done, None, None).await;
                    }
                }
            }
            Reply::Data { id, len } => {
                if let Some(Pending::Read(handle)) = self.pending.remove(&id)
                    && let Some(file) = self.open.get_mut(&handle)
                {
                    file.read += len;
                }
            }
            Reply::Other => {}
        }
    }

    /// Records what was still open or unanswered when the channel ended.
    async fn finish(mut self) {
        let pending: Vec<Pending> = self.pending.drain().map(|(_, p)| p).collect();
        for p in pending {
            if let Pending::Op(done) | Pending::Open(done, _) = p {
                let why = "the channel ended before the target answered".to_owned();
                self.record(done, Some(why), None).await;
            }
        }
        let open: Vec<OpenFile> = self.open.drain().map(|(_, f)| f).collect();
        for file in open {
            let bytes = Some((file.read, file.written));
            self.record(file.done, None, bytes).await;
        }
    }
}

/// The sftp client while one of its operations is held: told on stderr; gone when
/// its connection ends.
struct FileWait<'a> {
    client: &'a Channel<server::Msg>,
    closed: tokio_util::sync::CancellationToken,
}

impl Waiting for FileWait<'_> {
    async fn held(&mut self, request: &str, hint: &str) {
        let line = actions::held_line(SshKind::Sftp, request, hint).replace('\r', "");
        let _ = self
            .client
            .extended_data_bytes(1, Bytes::from(line.into_bytes()))
            .await;
    }

    async fn gone(&mut self) -> Gone {
        self.closed.cancelled().await;
        Gone::ClientLeft
    }
}
