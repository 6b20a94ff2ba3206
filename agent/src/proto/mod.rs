//! Wire protocols. Each module translates between its protocol's bytes and the
//! [`gate::Action`](crate::gate::Action)s the gate decides; the daemon attributes the
//! connection and picks the module by the target's protocol.

pub mod tcp;

/// Bytes moved by a session, as the client sees them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Client → target.
    pub up: u64,
    /// Target → client.
    pub down: u64,
}
