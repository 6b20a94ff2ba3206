//! Portcullis: a host daemon that puts a human in the loop between the programs on a
//! host and the systems they reach.
//!
//! Layout, following one connection inward:
//! - [`intercept`] loads and pins the eBPF programs and maps, and finds the original
//!   destination and the kernel's view of the client for an accepted connection;
//! - [`identity`] turns that into a [`identity::Principal`] (user, groups, process);
//! - [`proto`] holds one module per wire protocol (`tcp`, `postgres`), each a
//!   translator between its bytes and the actions the gate decides;
//! - [`gate`] decides every action with one call (allow, deny, or hold for
//!   approvers), using [`policy`]; [`mask`] rewrites what is shown and recorded;
//! - [`record`] is the store (`SQLite` or `PostgreSQL`): sessions, their event log, the
//!   approval requests and the hash-chained audit log;
//! - [`api`] is the local socket API, [`cli`] its client, [`daemon`] wires it all up;
//!   [`glob`] is the one wildcard matcher of policies and masking.
//!
//! Dependencies point inward: protocols use the gate; the gate uses policy and the
//! store; nothing in `gate` or `policy` knows about a wire protocol.

pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod gate;
pub mod glob;
pub mod identity;
pub mod install;
pub mod intercept;
pub mod mask;
pub mod metrics;
pub mod policy;
pub mod policy_test;
pub mod proto;
pub mod record;
pub mod secret;
pub mod web;
