//! The map keys and values shared by the eBPF programs (`portcullis-ebpf`) and the
//! daemon (`portcullis`). Everything here is `#[repr(C)]`, padded explicitly, and
//! defined once: both sides read the same bytes.
//!
//! Addresses are kept as the 16 raw bytes of an IPv6 address (IPv4 as `::ffff:a.b.c.d`),
//! stored as four `u32` words in memory order, exactly as the kernel hands them to BPF
//! programs. Ports are in host byte order.
#![no_std]

/// Names of the maps and programs in the eBPF object; the daemon pins them under these.
pub mod names {
    pub const TARGETS: &str = "PORTCULLIS_TARGETS";
    pub const CONFIG: &str = "PORTCULLIS_CONFIG";
    pub const SOCKETS: &str = "PORTCULLIS_SOCKETS";
    pub const CONNECTIONS: &str = "PORTCULLIS_CONNECTIONS";
    pub const CONNECT4: &str = "portcullis_connect4";
    pub const CONNECT6: &str = "portcullis_connect6";
    pub const GETPEERNAME4: &str = "portcullis_getpeername4";
    pub const GETPEERNAME6: &str = "portcullis_getpeername6";
    pub const SOCKOPS: &str = "portcullis_sockops";
}

/// Capacity of the per-socket and per-connection LRU maps.
pub const MAX_TRACKED_SOCKETS: u32 = 65_536;
/// Capacity of the protected-target map.
pub const MAX_TARGETS: u32 = 4_096;

/// The `::ffff:0:0/96` prefix word that marks an IPv4-mapped address (memory order).
pub const V4_MAPPED_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// An IP address and port: a protected target, or a client's end of a connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Endpoint {
    /// IPv6 address bytes in memory order; IPv4 is mapped (`::ffff:a.b.c.d`).
    pub addr: [u32; 4],
    /// Port, host byte order.
    pub port: u16,
    /// Explicit padding, always zero.
    pub pad: u16,
}

impl Endpoint {
    /// An IPv4 endpoint from the raw (network order) address word and a host-order port.
    #[must_use]
    pub const fn v4(raw_addr: u32, port: u16) -> Self {
        Self {
            addr: [0, 0, V4_MAPPED_WORD, raw_addr],
            port,
            pad: 0,
        }
    }

    /// An IPv6 endpoint from raw address words and a host-order port.
    #[must_use]
    pub const fn v6(addr: [u32; 4], port: u16) -> Self {
        Self { addr, port, pad: 0 }
    }

    /// Whether the address is IPv4-mapped (`::ffff:a.b.c.d`).
    #[must_use]
    pub const fn is_v4_mapped(&self) -> bool {
        self.addr[0] == 0 && self.addr[1] == 0 && self.addr[2] == V4_MAPPED_WORD
    }
}

/// Where the proxy listens and how its own traffic is recognised; one entry, index 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ProxyConfig {
    /// The daemon's network namespace cookie; connects from other namespaces pass untouched.
    pub netns_cookie: u64,
    /// IPv4 listener address, network order (as in `bpf_sock_addr.user_ip4`).
    pub listen4: u32,
    /// IPv6 listener address words, memory order.
    pub listen6: [u32; 4],
    /// IPv4 listener port, host order. Zero means "not configured": nothing is redirected.
    pub port4: u16,
    /// IPv6 listener port, host order.
    pub port6: u16,
    /// `SO_MARK` carried by the daemon's upstream sockets; those connects are never redirected.
    pub mark: u32,
    /// Explicit padding, always zero.
    pub pad: u32,
}

/// What the kernel knew about a redirected connect: where it meant to go and who asked.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The destination the client asked for.
    pub dst: Endpoint,
    /// Thread-group id (the process id as userspace sees it).
    pub pid: u32,
    /// Thread id of the connecting thread.
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    /// `comm` of the connecting task, NUL padded.
    pub comm: [u8; 16],
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all four types are #[repr(C)], Copy, made only of integers, and padded
    // explicitly, so every bit pattern is valid and there are no implicit padding bytes.
    unsafe impl aya::Pod for super::Endpoint {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ProxyConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Origin {}
}
