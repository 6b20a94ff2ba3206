//! Command lines typed in an interactive shell, decided at Enter: a second line of
//! defence beside exec rules, not a boundary (a pasted script, a REPL, an editor,
//! an alias or a script file run by name all get past it).
//!
//! The client's keystrokes pass through at once, except Enter (CR or LF): then the
//! line is read from the terminal screen as the user sees it ([`Screen`]), split
//! with [`command::split`] and decided by the gate as a `shell` action with those
//! commands (so `commands = [...]` rules whose `ssh` includes `shell`, or that have
//! no `ssh`, decide it; rules without `commands` decided the shell when it opened).
//! Allowed: the Enter goes on and the line is recorded. Denied: the Enter is
//! dropped, the target gets Ctrl-C (which throws the half-typed line away), and the
//! terminal shows why. Held: the terminal shows the request; keystrokes meanwhile
//! are dropped, except Ctrl-C, which withdraws it; approval sends the Enter.
//!
//! Lines are not decided (nor recorded) while nothing shows after the prompt —
//! typing the terminal did not echo, as at a password prompt — nor while a
//! full-screen program (an editor, a pager) has the alternate screen. Input that
//! follows an Enter in the same read (a paste) waits until that line is decided,
//! up to [`MAX_PENDING`]; after a refusal it is dropped. A line break inside a
//! bracketed paste is not an Enter (the shell does not run it either, [`Paste`]);
//! a line holding one is decided at the Enter after it, line by line from the
//! bytes pasted and typed (a multi-line block shows on several rows and cannot be
//! read back from the screen), or as unparsed when editing keys were typed on it.

use super::{
    paste::{Block, Paste},
    screen::{Screen, Typed},
    server::Conn,
    typed_ask::{LineWait, Notes, commands_of, commands_of_lines, record, typed_ask},
};
use crate::gate::{ActionOutcome, Ruling};
use bytes::Bytes;
use russh::{Channel, client};
use std::{future::Future, pin::Pin, sync::Arc, time::Duration};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Client input kept while a line is decided; past it the client is not read.
pub const MAX_PENDING: usize = 64 * 1024;
/// After Enter, how long the target's output must be quiet before the screen is
/// read (the echo of what was typed just before Enter may still be on its way).
const QUIET: Duration = Duration::from_millis(25);
/// The longest wait for that echo; then the screen is read as it is.
const MAX_SETTLE: Duration = Duration::from_secs(1);
/// The event kind of a typed line.
pub const KIND: &str = "shell-line";

const CTRL_C: u8 = 3;

type Decision = Pin<Box<dyn Future<Output = ActionOutcome> + Send>>;

/// Where the line being typed stands.
enum State {
    /// Keystrokes pass through.
    Typing,
    /// Input waits for the target to echo what was sent before (the last Enter, or
    /// nothing yet at the start) and go quiet, so that the next line's prompt is
    /// marked where the user sees it (type-ahead, a pasted or piped script).
    Quieting { since: Instant },
    /// Enter was pressed at `since`; the screen is read once the echo settles
    /// (`patient`: not before [`MAX_SETTLE`], the line typed so far not showing yet).
    Settling { since: Instant, patient: bool },
    /// The line waits for approvers.
    Held {
        decision: Decision,
        line: String,
        withdraw: CancellationToken,
    },
}

/// The typed-line gate of one shell channel with a terminal.
pub struct TypedLines<'c> {
    conn: &'c Conn,
    /// What the terminal is told about held and refused lines, for the relay.
    notes: Arc<Notes>,
    screen: Screen,
    /// Client input not yet passed on: it starts with an Enter while one is decided.
    pending: Vec<u8>,
    /// Bracketed paste in the input passed on.
    paste: Paste,
    state: State,
    /// Input went to the target since its last output (its echo is awaited).
    unechoed: bool,
    /// Printable characters were typed on the line being decided.
    printable: bool,
    /// The client sent EOF: passed on once the input before it is (no data may
    /// follow an EOF on a channel).
    eof: bool,
    last_output: Instant,
    /// Cancelled when the relay ends: a held line is withdrawn.
    left: CancellationToken,
}

impl<'c> TypedLines<'c> {
    /// The gate for `channel`, whose terminal is `cols`×`rows`.
    #[must_use]
    pub fn new(conn: &'c Conn, cols: u32, rows: u32) -> Self {
        Self {
            conn,
            notes: Arc::default(),
            screen: Screen::new(cols, rows),
            pending: Vec::new(),
            paste: Paste::default(),
            state: State::Typing,
            // Nothing has shown yet: the first line waits for the prompt.
            unechoed: true,
            printable: false,
            eof: false,
            last_output: Instant::now(),
            left: conn.closed.child_token(),
        }
    }

    /// What the terminal is to be told about held and refused lines.
    #[must_use]
    pub fn notes(&self) -> Arc<Notes> {
        Arc::clone(&self.notes)
    }

    /// Input the client sent before the shell started (it goes through
    /// [`TypedLines::input`] with the first call), up to [`MAX_PENDING`].
    pub fn preload(&mut self, data: &[u8]) {
        let room = MAX_PENDING.saturating_sub(self.pending.len());
        self.pending
            .extend_from_slice(data.get(..room.min(data.len())).unwrap_or_default());
    }

    /// The client sent EOF before the shell started: passed on after its input.
    pub fn preload_eof(&mut self) {
        self.eof = true;
    }

    /// The client's EOF: passed on at once when no input waits, else after it.
    pub async fn eof(&mut self, up: &Channel<client::Msg>) {
        self.eof = true;
        self.pump(up).await;
    }

    /// The target's output, as the terminal shows it.
    pub fn output(&mut self, data: &[u8]) {
        self.screen.output(data);
        self.unechoed = false;
        self.last_output = Instant::now();
    }

    /// Follows a terminal resize.
    pub fn resize(&mut self, cols: u32, rows: u32) {
        self.screen.resize(cols, rows);
    }

    /// Whether the client should not be read now (too much input waits).
    #[must_use]
    pub fn full(&self) -> bool {
        self.pending.len() >= MAX_PENDING
    }

    /// When the screen should be read for the Enter being decided, if one is.
    #[must_use]
    pub fn settle_at(&self) -> Option<Instant> {
        let (since, patient) = match self.state {
            State::Settling { since, patient } => (since, patient),
            State::Quieting { since } => (since, false),
            State::Typing | State::Held { .. } => return None,
        };
        let latest = since + MAX_SETTLE;
        Some(if self.unechoed || patient {
            latest
        } else {
            latest.min(self.last_output + QUIET)
        })
    }

    /// Whether a line waits for approvers.
    #[must_use]
    pub fn held(&self) -> bool {
        matches!(self.state, State::Held { .. })
    }

    /// The client's input: passed on up to the next Enter (a held line's keystrokes
    /// are dropped; its Ctrl-C withdraws it).
    pub async fn input(&mut self, data: &[u8], up: &Channel<client::Msg>) {
        if let State::Held { withdraw, .. } = &self.state {
            if data.contains(&CTRL_C) {
                withdraw.cancel();
            }
            return;
        }
        self.pending.extend_from_slice(data);
        self.pump(up).await;
    }

    /// Passes on pending input up to the next Enter, and decides lines whose echo
    /// has settled.
    async fn pump(&mut self, up: &Channel<client::Msg>) {
        loop {
            match self.state {
                State::Typing => {}
                State::Quieting { .. } => {
                    if self.settle_at().is_some_and(|at| at > Instant::now()) {
                        return;
                    }
                    self.state = State::Typing;
                    self.screen.mark_prompt();
                }
                State::Settling { .. } => {
                    if self.settle_at().is_some_and(|at| at <= Instant::now()) && self.settled_now()
                    {
                        self.decide(up).await;
                        continue;
                    }
                    return;
                }
                State::Held { .. } => return,
            }
            if self.pending.is_empty() {
                if std::mem::take(&mut self.eof) {
                    let _ = up.eof().await;
                }
                return;
            }
            if !self.screen.typing() {
                if self.unechoed {
                    self.state = State::Quieting {
                        since: Instant::now(),
                    };
                    continue;
                }
                self.screen.mark_prompt();
            }
            let (enter, scanned) = (self.paste).scan(&self.pending, self.screen.bracketed_paste());
            let upto = enter.unwrap_or(self.pending.len());
            if upto > 0 {
                let typed: Vec<u8> = self.pending.drain(..upto).collect();
                self.unechoed = true;
                self.printable |= typed.iter().any(|&b| b >= 0x20 && b != 0x7f);
                let _ = up.data_bytes(Bytes::from(typed)).await;
            }
            self.paste.commit(scanned);
            if enter.is_none() {
                return;
            }
            self.state = State::Settling {
                since: Instant::now(),
                patient: false,
            };
        }
    }

    /// The settle timer fired: decide the line, then go on with pending input.
    pub async fn settled(&mut self, up: &Channel<client::Msg>) {
        if matches!(self.state, State::Settling { .. }) && self.settled_now() {
            self.decide(up).await;
        }
        self.pump(up).await;
    }

    /// Whether the screen can be read now that the output is quiet: not while
    /// characters were typed but nothing shows after the prompt and [`MAX_SETTLE`]
    /// has not passed (a shell still starting, a slow link; a password prompt waits
    /// it out too). Otherwise the wait becomes patient and this says no.
    fn settled_now(&mut self) -> bool {
        let State::Settling { since, patient } = &mut self.state else {
            return false;
        };
        if *patient || since.elapsed() >= MAX_SETTLE || !self.printable {
            return true;
        }
        if self.screen.line() == Typed::Nothing {
            *patient = true;
            return false;
        }
        true
    }

    /// Reads the line at Enter and decides it (a review becomes [`State::Held`]).
    async fn decide(&mut self, up: &Channel<client::Msg>) {
        self.state = State::Typing;
        self.printable = false;
        let block = self.paste.block();
        self.paste.line_done();
        let blank = self.screen.prompt_blank();
        let (line, commands) = match (block, self.screen.take_line()) {
            (_, Typed::FullScreen) | (None, Typed::Nothing) => return self.enter(up).await,
            (Some(Block::Lines(lines)), _) => (lines.join("\n"), commands_of_lines(&lines).await),
            (Some(Block::Unreadable(text)), _) | (None, Typed::Unreadable(text)) => (text, None),
            (None, Typed::Line(line)) => (line.clone(), commands_of(&line, blank).await),
        };
        // Only comments or blanks: nothing runs.
        if commands.as_ref().is_some_and(Vec::is_empty) {
            return self.enter(up).await;
        }
        let ask = typed_ask(self.conn, line.clone(), commands);
        let gate = Arc::clone(&self.conn.session.gate);
        let ruling = gate.rule(&ask);
        let withdraw = CancellationToken::new();
        let mut waiting = LineWait {
            notes: Arc::clone(&self.notes),
            withdraw: withdraw.clone(),
            left: self.left.clone(),
        };
        let session = self.conn.session.id.clone();
        if let Ruling::Review { .. } = ruling {
            let decision = Box::pin(async move {
                gate.decide_ruled(&ask, ruling, Some(&session), &mut waiting)
                    .await
            });
            self.state = State::Held {
                decision,
                line,
                withdraw,
            };
            return;
        }
        let outcome = gate
            .decide_ruled(&ask, ruling, Some(&session), &mut waiting)
            .await;
        self.decided(&line, &outcome, up).await;
    }

    /// Waits for the held line's decision (never completes when none is held).
    pub async fn decision(&mut self) -> ActionOutcome {
        match &mut self.state {
            State::Held { decision, .. } => decision.await,
            _ => std::future::pending().await,
        }
    }

    /// The held line was decided: on with it, or refused.
    pub async fn resolved(&mut self, outcome: ActionOutcome, up: &Channel<client::Msg>) {
        let state = std::mem::replace(&mut self.state, State::Typing);
        if let State::Held { line, .. } = state {
            self.decided(&line, &outcome, up).await;
        }
        self.pump(up).await;
    }

    /// Records the line, then sends the Enter on (allowed) or refuses it.
    async fn decided(&mut self, line: &str, outcome: &ActionOutcome, up: &Channel<client::Msg>) {
        if !record(self.conn, line, outcome).await {
            self.pending.clear();
            self.paste.reset();
            return;
        }
        if outcome.allowed() {
            self.enter(up).await;
        } else {
            self.pending.clear();
            self.paste.reset();
            let message = format!(
                "\r\nportcullis: command line refused: {}\r\n",
                outcome.message()
            );
            self.notes.push(&self.conn.mask(&message));
            let _ = up.data_bytes(Bytes::from_static(&[CTRL_C])).await;
            // The next line's prompt is the one the shell prints after the Ctrl-C.
            self.unechoed = true;
        }
    }

    /// Passes the pending Enter on.
    async fn enter(&mut self, up: &Channel<client::Msg>) {
        if self.pending.is_empty() {
            return;
        }
        let enter: Vec<u8> = self.pending.drain(..1).collect();
        self.unechoed = true;
        let _ = up.data_bytes(Bytes::from(enter)).await;
    }

    /// The shell ended: a held line is withdrawn (the client left) and recorded.
    pub async fn finish(mut self) {
        self.left.cancel();
        if let State::Held { decision, line, .. } =
            std::mem::replace(&mut self.state, State::Typing)
        {
            let outcome = decision.await;
            let _ = record(self.conn, &line, &outcome).await;
        }
    }
}
