//! End-to-end test support: real daemons, real servers and clients, real eBPF.
//!
//! Root tests each create their own cgroup ([`cgroup::TestCgroup`]) and daemon
//! ([`daemon::TestDaemon`]) with its own ports and pins, so they run in parallel
//! without redirecting each other or the test harness.

pub mod cgroup;
pub mod console;
pub mod crashkit;
pub mod daemon;
pub mod http;
pub mod net;
pub mod pgproxy;
pub mod postgres;
pub mod sshd;
pub mod sshidle;
pub mod sshproxy;
pub mod web;
