//! Portcullis: a host daemon that puts a human in the loop between the programs on a
//! host and the systems they reach.
//!
//! Layout, following one connection inward:
//! - [`intercept`] loads and pins the eBPF programs and maps, and finds the original
//!   destination and the kernel's view of the client for an accepted connection;
//! - [`identity`] turns that into a [`identity::Principal`] (user, groups, process);
//! - [`proto`] holds one module per wire protocol, each a translator between its bytes
//!   and the actions the gate decides (only `tcp` for now: the action is "connect");
//! - [`gate`] decides (allow or deny today), using [`policy`];
//! - [`record`] is the store (`SQLite` or `PostgreSQL`) where every session is recorded;
//! - [`api`] is the local socket API, [`cli`] its client, [`daemon`] wires it all up.
//!
//! Dependencies point inward: protocols use the gate; the gate uses policy and the
//! store; nothing in `gate` or `policy` knows about a wire protocol.

pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod gate;
pub mod identity;
pub mod intercept;
pub mod mask;
pub mod metrics;
pub mod policy;
pub mod proto;
pub mod record;
pub mod secret;
