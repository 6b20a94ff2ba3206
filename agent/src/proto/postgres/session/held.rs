//! A held statement's wait: the client is told by a notice and watched for leaving
//! (`Terminate`, a closed or broken stream), cancelling (`CancelRequest` on another
//! connection), or the target going; pipelined messages read meanwhile are kept.

use super::super::{
    cancel::CancelEntry,
    encoding::ClientEncoding,
    wire::{self, Message, MessageReader, Severity},
};
use super::{ClientRead, MAX_STASH, ToClient};
use crate::gate::{Gone, Waiting};
use std::collections::VecDeque;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A statement's client while the statement is held: told by a notice, watched for
/// leaving (`Terminate`, a closed or broken stream), cancelling, or the target going.
pub(super) struct HeldStatement<'a> {
    pub(super) to_client: &'a mpsc::Sender<ToClient>,
    pub(super) encoding: ClientEncoding,
    pub(super) reader: &'a mut MessageReader<ClientRead>,
    pub(super) stash: &'a mut VecDeque<Message>,
    pub(super) cancel: &'a CancelEntry,
    pub(super) server_gone: &'a CancellationToken,
}

impl Waiting for HeldStatement<'_> {
    fn reviewing(&mut self) {
        // Before anyone can see the request: a cancel sent as soon as the client or
        // the API shows it ends the hold, even if it beats the wait.
        self.cancel.set_holding(true);
    }

    async fn held(&mut self, request: &str, hint: &str) {
        let notice = wire::error_response(
            self.encoding,
            Severity::NOTICE,
            "01000",
            &format!("Portcullis: this statement is held for approval (request {request})"),
            Some(&format!("It runs when approved; approvers can run: {hint}")),
            Some("Cancel the query (Ctrl-C) to withdraw it."),
        );
        let _ = self.to_client.send(ToClient::Notice(notice)).await;
    }

    async fn gone(&mut self) -> Gone {
        tokio::select! {
            () = self.cancel.cancelled() => Gone::Cancelled,
            () = watch_client(self.reader, self.stash) => Gone::ClientLeft,
            () = self.server_gone.cancelled() => Gone::TargetLeft,
        }
    }
}

/// Reads the client while a statement is held: `Terminate`, a closed connection or a
/// broken stream end the wait (`left`); other messages (pipelined) are kept for later,
/// up to [`MAX_STASH`] bytes, after which reading pauses.
async fn watch_client(reader: &mut MessageReader<ClientRead>, stash: &mut VecDeque<Message>) {
    let mut kept: usize = stash.iter().map(|m| m.frame.len()).sum();
    loop {
        if kept >= MAX_STASH {
            return std::future::pending().await;
        }
        match reader.next().await {
            Ok(Some(m)) if m.tag() == b'X' => break,
            Ok(Some(m)) => {
                kept += m.frame.len();
                stash.push_back(m);
            }
            Ok(None) | Err(_) => break,
        }
    }
}
