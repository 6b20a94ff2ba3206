//! What a relayed channel did, for its action's event (bytes, exit, a sample of
//! the output, the shell's recording), and how the target ended it ([`Ends`]),
//! passed on to the client only once that event is durable.

use super::{
    recording::{Finished, Sample},
    server::Conn,
};
use russh::{Channel, Sig, server};
use serde_json::json;

/// How the target ended a channel, passed on to the client after the action's
/// record is durable ([`Ends::send`]).
#[derive(Default)]
pub struct Ends {
    pub(super) exit_status: Option<u32>,
    pub(super) exit_signal: Option<ExitSignal>,
    pub(super) eof: bool,
}

/// An `exit-signal` as the target sent it.
pub(super) struct ExitSignal {
    pub(super) name: Sig,
    pub(super) core_dumped: bool,
    pub(super) message: String,
    pub(super) lang: String,
}

impl Ends {
    /// Whether the target has said all it will: its EOF and how the command ended.
    pub(super) fn complete(&self) -> bool {
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
    pub(super) up_bytes: u64,
    pub(super) down_bytes: u64,
    pub(super) exit_status: Option<u32>,
    pub(super) exit_signal: Option<String>,
    pub(super) sample: Sample,
    pub(super) cast: Option<Result<(std::path::PathBuf, u64, String), String>>,
    pub(super) cast_truncated: bool,
    /// Why the relay stopped early (a malformed stream).
    pub(super) error: Option<String>,
    /// The target's end, withheld until the record is durable.
    pub(super) ends: Ends,
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
